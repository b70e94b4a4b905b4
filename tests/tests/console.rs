//! The web console (`/ui`, docs/OPERATIONS.md "Console") in a real
//! headless Chromium driven over WebDriver, against a real 3-node cluster
//! that uses bearer tokens: log in, the ring's three owners, a node killed
//! and shown down, a write through the key inspector read back with
//! `qkv get`, a traced read drawn as a timeline of its replicas, the
//! reports of `qkv exp`, and a synthetic ring of 100 members and 1,600
//! vnodes drawn by the page.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`.ci/run` installs
//! them); the test fails, never skips, when they are missing. Screenshots
//! of each view go to `$QKV_CONSOLE_SCREENSHOTS` (the committed ones in
//! docs/img were made with it set to that folder), else to a temporary
//! folder of the target directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use fantoccini::{Client, ClientBuilder, Locator};
use quorumkv_tests::cluster_ops::key_path;
use quorumkv_tests::http::Api;
use quorumkv_tests::{NodeSpec, free_port, qkv_bin, token_files};
use serde_json::{Value, json};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const ADMIN: &str = "a-token";
/// Gossip interval of the test's nodes: failure detection scales with it.
const GOSSIP_MS: u64 = 200;

/// chromedriver, stopped when dropped.
struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Prints each step with the time since the test began — to the process's
/// stderr itself, past the test harness's capture, so that a plain
/// `cargo test` (as CI runs it) shows the steps and their timings too.
struct Steps(Instant);

impl Steps {
    fn say(&self, what: &str) {
        use std::io::Write as _;
        let line = format!(
            "console: [{:>6.2} s] {what}\n",
            self.0.elapsed().as_secs_f64()
        );
        let _ = std::io::stderr().lock().write_all(line.as_bytes());
    }
}

fn screenshots_dir() -> PathBuf {
    std::env::var_os("QKV_CONSOLE_SCREENSHOTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_TARGET_TMPDIR")).join("console"))
}

async fn start_browser(dir: &Path) -> Result<(Driver, Client)> {
    for bin in [CHROMIUM, CHROMEDRIVER] {
        ensure!(
            Path::new(bin).is_file(),
            "{bin} is missing: the console test needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver; .ci/run does)"
        );
    }
    let port = free_port()?;
    let driver = Driver(
        Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting chromedriver")?,
    );
    let url = format!("http://127.0.0.1:{port}");
    // Plain reqwest: chromedriver is no qkvd, so not checked against
    // docs/openapi.yaml as every response through `Api` is.
    let status = format!("{url}/status");
    let http = reqwest::Client::new();
    quorumkv_tests::eventually(Duration::from_secs(30), "chromedriver answers", || {
        let (http, status) = (http.clone(), status.clone());
        async move {
            http.get(&status)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        }
    })
    .await?;
    let profile = dir.join("chromium-profile");
    let caps = json!({"goog:chromeOptions": {"binary": CHROMIUM, "args": [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--window-size=1360,960", format!("--user-data-dir={}", profile.display()),
    ]}});
    let Value::Object(caps) = caps else {
        bail!("capabilities are an object");
    };
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    let client = ClientBuilder::new(connector)
        .capabilities(caps)
        .connect(&url)
        .await
        .context("opening a chromium session")?;
    Ok((driver, client))
}

/// Evaluates `expr` (a JavaScript expression) in the page.
async fn js(b: &Client, expr: &str) -> Result<Value> {
    Ok(b.execute(&format!("return ({expr});"), vec![]).await?)
}

/// Polls `expr` in the page until it is true; fails after `within`.
async fn until(b: &Client, within: Duration, what: &str, expr: &str) -> Result<Duration> {
    let began = Instant::now();
    loop {
        if js(b, expr).await? == Value::Bool(true) {
            return Ok(began.elapsed());
        }
        if began.elapsed() > within {
            bail!("timed out after {within:?} waiting until {what} ({expr})");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn click(b: &Client, css: &str) -> Result<()> {
    b.find(Locator::Css(css)).await?.click().await?;
    Ok(())
}

async fn type_into(b: &Client, css: &str, text: &str) -> Result<()> {
    let e = b.find(Locator::Css(css)).await?;
    e.clear().await?;
    e.send_keys(text).await?;
    Ok(())
}

async fn shot(b: &Client, name: &str) -> Result<PathBuf> {
    let dir = screenshots_dir();
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("console-{name}.png"));
    std::fs::write(&path, b.screenshot().await?)?;
    Ok(path)
}

/// The page's view of where a key lives, from the API (admin token).
async fn replicas_of(api: &Api, key: &str) -> Result<Vec<String>> {
    let r = api
        .get_with(
            &format!("/cluster/locate/{key}"),
            &[("Authorization", "Bearer a-token")],
        )
        .await?;
    ensure!(r.status == 200, "locate: {}", r.status);
    Ok(r.json()["replicas"]
        .as_array()
        .context("replicas")?
        .iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_the_cluster_and_drives_a_key_in_chromium() -> Result<()> {
    let s = Steps(Instant::now());
    let work = tempfile::tempdir()?;
    let (clients, admin) = token_files(work.path())?;
    let reports = work.path().join("reports");
    let out = Command::new(qkv_bin()?)
        .args([
            "exp", "predict", "--delays", "lnkd-ssd", "--trials", "20000", "--seed", "7", "--out",
        ])
        .arg(reports.join("predict-lnkd-ssd"))
        .output()
        .context("running qkv exp predict")?;
    ensure!(
        out.status.success(),
        "qkv exp predict: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    s.say("qkv exp predict wrote a report");

    let gossip = GOSSIP_MS.to_string();
    let args = [
        "--client-tokens-file",
        &clients,
        "--admin-token-file",
        &admin,
        "--gossip-interval-ms",
        &gossip,
        "--vnodes",
        "16",
        "--ui-reports-dir",
        reports.to_str().context("utf-8 path")?,
    ];
    let specs = (1..=3)
        .map(|i| NodeSpec::new(&format!("n{i}")).args(args))
        .collect();
    // Cluster::start has waited for every node's /health.
    let mut c = quorumkv_tests::Cluster::start(specs)?;
    let n1 = Api::new(&c.nodes[0].url());
    s.say("3 nodes started (bearer tokens on, gossip every 200 ms)");

    // Traversal is refused by the running node too, token or not.
    for path in [
        "/ui/reports/..%2f..%2fadmin",
        "/ui/reports/%2e%2e/admin",
        "/ui/reports/../admin",
    ] {
        let r = n1
            .get_with(path, &[("Authorization", "Bearer a-token")])
            .await?;
        ensure!(
            r.status != 200 && !String::from_utf8_lossy(&r.body).contains(ADMIN),
            "{path}: {}",
            r.status
        );
    }

    let (_driver, b) = start_browser(work.path()).await?;
    s.say("chromium and chromedriver up");
    let ui = format!("{}/ui", c.nodes[0].url());
    b.goto(&ui).await?;
    let t = until(&b, Duration::from_secs(20), "the page asks for a token", "!document.getElementById('banner').hidden && document.getElementById('banner').textContent.includes('token')").await?;
    s.say(&format!(
        "opened /ui: it asks for a token ({} ms)",
        t.as_millis()
    ));
    type_into(&b, "#token", ADMIN).await?;
    click(&b, "#login-btn").await?;
    let t = until(&b, Duration::from_secs(60), "the ring shows 3 owners", "document.getElementById('ring').dataset.owners === '3' && document.querySelectorAll('#owners tbody tr').length === 3 && document.getElementById('banner').hidden").await?;
    s.say(&format!(
        "logged in; the ring shows 3 owners ({} ms)",
        t.as_millis()
    ));
    ensure!(js(&b, "sessionStorage.getItem('qkv.token')").await? == json!(ADMIN));
    ensure!(
        !b.current_url().await?.as_str().contains(ADMIN),
        "the token is never in the URL"
    );
    let arcs = js(&b, "document.querySelectorAll('#ring-arcs path').length").await?;
    s.say(&format!(
        "  {arcs} arcs drawn for 48 vnodes; screenshot {}",
        shot(&b, "ring").await?.display()
    ));

    click(&b, "#tabs button[data-view=members]").await?;
    let t = until(&b, Duration::from_secs(30), "3 members up with their figures", "[...document.querySelectorAll('#members tbody tr')].filter(r => r.dataset.status === 'up' && r.cells[11].textContent !== 'n/a').length === 3").await?;
    s.say(&format!(
        "members: 3 up, each with keys, bytes and version ({} ms)",
        t.as_millis()
    ));

    c.nodes[2].kill9()?;
    let killed = Instant::now();
    s.say("killed n3 (SIGKILL)");
    // Conviction takes 18-37 gossip rounds at threshold 8 (docs/API.md);
    // the page polls every 1.5 s, and this machine is shared.
    let bound = Duration::from_millis(37 * GOSSIP_MS + 2 * 1500) + Duration::from_secs(10);
    until(
        &b,
        bound,
        "n3 is shown down",
        "document.querySelector('#members tr[data-node=n3]').dataset.status === 'down'",
    )
    .await?;
    s.say(&format!(
        "n3 shown down in the members view {} ms after the kill (bound {} ms)",
        killed.elapsed().as_millis(),
        bound.as_millis()
    ));
    until(
        &b,
        Duration::from_secs(10),
        "n3's figures are n/a",
        "document.querySelector('#members tr[data-node=n3]').cells[11].textContent === 'n/a'",
    )
    .await?;
    s.say(&format!(
        "  screenshot {}",
        shot(&b, "members").await?.display()
    ));

    click(&b, "#tabs button[data-view=inspector]").await?;
    type_into(&b, "#in-key", "console-key").await?;
    type_into(&b, "#in-value", "written-from-chromium").await?;
    js(
        &b,
        "(document.getElementById('in-w').value = 'quorum') && true",
    )
    .await?;
    click(&b, "#put-btn").await?;
    let t = until(
        &b,
        Duration::from_secs(20),
        "the PUT is stored",
        "!!document.getElementById('put-ok')",
    )
    .await?;
    s.say(&format!(
        "PUT w=quorum through the inspector: 204 ({} ms)",
        t.as_millis()
    ));
    let got = Command::new(qkv_bin()?)
        .args([
            "--node",
            &c.nodes[0].url(),
            "--token",
            "c-token",
            "get",
            "console-key",
            "--r",
            "quorum",
        ])
        .output()
        .context("running qkv get")?;
    let text = String::from_utf8_lossy(&got.stdout);
    ensure!(
        got.status.success() && text.contains("written-from-chromium"),
        "qkv get: {text} {}",
        String::from_utf8_lossy(&got.stderr)
    );
    let api = n1
        .get_with(
            &key_path("default", b"console-key", "r=quorum"),
            &[("Authorization", "Bearer c-token")],
        )
        .await?;
    ensure!(
        api.status == 200 && api.body == b"written-from-chromium",
        "HTTP GET: {}",
        api.status
    );
    s.say("qkv get (and the HTTP API) read it back: written-from-chromium");

    js(
        &b,
        "(document.getElementById('in-r').value = 'quorum') && true",
    )
    .await?;
    click(&b, "#get-btn").await?;
    let live: Vec<String> = replicas_of(&n1, "console-key")
        .await?
        .into_iter()
        .filter(|r| r != "n3")
        .collect();
    let lanes_have = live
        .iter()
        .map(|r| format!("!!document.querySelector('#timeline g.lane[data-node={r}]')"))
        .collect::<Vec<_>>()
        .join(" && ");
    let t = until(&b, Duration::from_secs(20), "the trace shows the live replicas", &format!("document.getElementById('kv-result').textContent.includes('GET r=quorum: 200') && {lanes_have}")).await?;
    let lanes = js(
        &b,
        "[...document.querySelectorAll('#timeline g.lane')].map(g => g.dataset.node)",
    )
    .await?;
    let events = js(&b, "document.querySelectorAll('#trace tbody tr').length").await?;
    s.say(&format!("traced GET r=quorum: timeline lanes {lanes}, {events} events; live replicas {live:?} ({} ms)", t.as_millis()));
    until(
        &b,
        Duration::from_secs(20),
        "each replica's copy is listed",
        "document.querySelectorAll('#copies-table tr[data-node]').length === 3",
    )
    .await?;
    let copies = js(&b, "[...document.querySelectorAll('#copies-table tr[data-node]')].map(r => r.dataset.node + ': ' + r.cells[2].textContent)").await?;
    s.say(&format!(
        "  copies per replica {copies}; screenshot {}",
        shot(&b, "inspector").await?.display()
    ));

    let repair = n1
        .send(
            "POST",
            "/internal/repair",
            &[("Authorization", "Bearer a-token")],
            None,
        )
        .await?;
    ensure!(repair.status == 200, "repair: {}", repair.status);
    click(&b, "#tabs button[data-view=changes]").await?;
    until(&b, Duration::from_secs(20), "the repair pass is shown", "document.getElementById('repair').textContent.includes('range comparisons') && document.getElementById('repair-totals').textContent.includes('1 passes')").await?;
    s.say(&format!(
        "changes & repair view shows the last pass; screenshot {}",
        shot(&b, "changes").await?.display()
    ));

    click(&b, "#tabs button[data-view=reports]").await?;
    let t = until(&b, Duration::from_secs(20), "the report's plot is shown", "[...document.querySelectorAll('#reports img')].some(i => i.complete && i.naturalWidth > 0)").await?;
    let files = js(&b, "document.querySelectorAll('#reports li').length").await?;
    s.say(&format!("reports: the SVG plot of qkv exp predict is drawn, {files} other files listed ({} ms); screenshot {}", t.as_millis(), shot(&b, "reports").await?.display()));

    click(&b, "#tabs button[data-view=ring]").await?;
    until(
        &b,
        Duration::from_secs(10),
        "the ring view is back",
        "document.querySelectorAll('#ring-arcs path').length > 0",
    )
    .await?;
    let drawn = js(&b, SYNTHETIC_RING).await?;
    s.say(&format!(
        "synthetic ring of 100 members, 1,600 vnodes, one joining: {drawn}; screenshot {}",
        shot(&b, "ring-100").await?.display()
    ));
    let paths = drawn["paths"].as_u64().unwrap_or(0);
    ensure!(paths > 0 && paths <= 1600, "{drawn}");
    ensure!(drawn["pending"].as_u64().unwrap_or(0) > 0, "{drawn}");
    b.close().await?;
    s.say("done");
    Ok(())
}

/// Draws a ring of 100 members with 16 random tokens each and a 101st
/// joining (its ranges pending) through the page's own drawing function,
/// and answers how long that took and how many paths it made.
const SYNTHETIC_RING: &str = r#"(() => {
  let seed = 7; const rnd = () => (seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648;
  const toks = [];
  for (let n = 0; n < 100; n++) for (let v = 0; v < 16; v++) toks.push([rnd(), 'm' + String(n).padStart(3, '0')]);
  toks.sort((a, b) => a[0] - b[0]);
  const arcs = []; let prev = toks[toks.length - 1][0] - 1;
  for (const [f, owner] of toks) {
    const last = arcs[arcs.length - 1];
    const pending = rnd() < 0.05 ? ['m100'] : [];
    if (last && last.owner === owner && last.pending.length === pending.length) last.to = f;
    else arcs.push({ from: prev, to: f, start: '0', end: '0', owner, pending });
    prev = f;
  }
  const owners = [...new Set(toks.map(t => t[1]))].sort().map(id => ({ id, rack: 'r' + (Number(id.slice(1)) % 4), vnodes: 16, primary: 0.01, replicated: 0.03 }));
  const racks = Object.fromEntries(owners.map(o => [o.id, o.rack]));
  const ring = { node: 'synthetic', rf: 3, vnodes: 1600, owners, racks, changing: true,
    in_flight: [{ node: 'm100', kind: 'join', by: 'm100' }], arcs };
  const t0 = performance.now();
  window.qkvConsole.drawRing(ring);
  const ms = performance.now() - t0;
  return { arcs: arcs.length, ms: Math.round(ms), paths: document.querySelectorAll('#ring-arcs path').length,
    pending: document.querySelectorAll('#ring-pending path').length };
})()"#;
