//! The operator kit of deploy/ against a real node: every metric the
//! Grafana dashboard and the Prometheus alert rules use is one the node
//! exports, the example config file starts a node, and the files parse
//! with the fields their tools need (docs/OPERATIONS.md, "Deploying").

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail, ensure};
use quorumkv_tests::http::Api;
use quorumkv_tests::{NodeProc, NodeSpec};
use serde_json::Value;

fn deploy(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(rel)
}

fn read(rel: &str) -> Result<String> {
    std::fs::read_to_string(deploy(rel)).with_context(|| format!("reading deploy/{rel}"))
}

/// YAML as JSON, with `<<` merge keys applied (compose uses them).
fn yaml(text: &str) -> Result<Value> {
    let mut v: serde_yaml_ng::Value = serde_yaml_ng::from_str(text)?;
    v.apply_merge()?;
    Ok(serde_json::to_value(v)?)
}

/// The `qkv_…` names a PromQL expression uses, crudely: identifiers
/// starting with `qkv_`, with a histogram's `_bucket`/`_sum`/`_count`
/// suffix stripped as Prometheus adds it.
fn promql_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = expr.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    let mut i = 0;
    while let Some(off) = expr[i..].find("qkv_") {
        let start = i + off;
        let mut end = start;
        while end < bytes.len() && ident(bytes[end]) {
            end += 1;
        }
        if start == 0 || !ident(bytes[start - 1]) {
            out.insert(strip_histogram(&expr[start..end]).to_string());
        }
        i = end.max(start + 4);
    }
    out
}

fn strip_histogram(name: &str) -> &str {
    ["_bucket", "_sum", "_count"]
        .iter()
        .find_map(|s| name.strip_suffix(s))
        .unwrap_or(name)
}

/// Every name `/metrics` exports: each family its `# TYPE` line declares
/// (a counter as `<name>_total`, as Prometheus sees it), so a labelled
/// family with no sample yet counts, plus every sample's name.
fn exported_names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                match kind {
                    "counter" => out.insert(format!("{name}_total")),
                    _ => out.insert(name.to_string()),
                };
            }
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap_or("");
            if !name.is_empty() {
                out.insert(strip_histogram(name).to_string());
            }
        }
    }
    out
}

/// The PromQL expressions of the dashboard's panels.
fn dashboard_exprs(dash: &Value) -> Vec<String> {
    let panels = dash["panels"].as_array().cloned().unwrap_or_default();
    panels
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(String::from))
        .collect()
}

/// The expressions of the alert rules.
fn alert_exprs(rules: &Value) -> Vec<String> {
    let groups = rules["groups"].as_array().cloned().unwrap_or_default();
    groups
        .iter()
        .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
        .filter_map(|r| r["expr"].as_str().map(String::from))
        .collect()
}

/// A node started from deploy/systemd/qkvd.toml, its addresses and files
/// overridden by flags (a flag beats the file) so that it runs here on
/// loopback; the file's seeds are emptied in a copy (an empty list is not
/// a flag), so it starts a cluster of its own and sends nothing elsewhere.
/// Returns it and its client token.
fn node_from_example_config(dir: &Path) -> Result<(NodeProc, String)> {
    let secret = dir.join("cluster-secret");
    std::fs::write(&secret, "a shared secret for this test\n")?;
    let (client, admin) = quorumkv_tests::token_files(dir)?;
    let example = read("systemd/qkvd.toml")?;
    let seeds = example
        .lines()
        .find(|l| l.starts_with("seeds = "))
        .context("the example config has no seeds line")?;
    let config = dir.join("qkvd.toml");
    std::fs::write(&config, example.replace(seeds, "seeds = []"))?;
    let spec = NodeSpec::new("n1").args([
        "--config".to_string(),
        config.display().to_string(),
        "--cluster-secret-file".into(),
        secret.display().to_string(),
        "--client-tokens-file".into(),
        client,
        "--admin-token-file".into(),
        admin,
        // One node: the file's default_n of 3 would make every write 503.
        "--default-n".into(),
        "1".into(),
    ]);
    let node = NodeProc::start(dir, spec, Vec::new())?;
    Ok((node, "c-token".to_string()))
}

#[tokio::test(flavor = "multi_thread")]
async fn every_metric_the_dashboard_and_alerts_use_is_exported() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (node, token) = node_from_example_config(dir.path())?;
    let api = Api::new(&node.url());
    let auth = format!("Bearer {token}");
    // One key request, so the request families have samples too.
    let put = api
        .send(
            "PUT",
            "/kv/k",
            &[("authorization", &auth)],
            Some(b"v".to_vec()),
        )
        .await?;
    ensure!(
        put.status == 204,
        "PUT answered {}: {}",
        put.status,
        String::from_utf8_lossy(&put.body)
    );
    let scraped = api
        .send("GET", "/metrics", &[("authorization", &auth)], None)
        .await?;
    ensure!(
        scraped.status == 200,
        "/metrics answered {}",
        scraped.status
    );
    let exported = exported_names(&String::from_utf8_lossy(&scraped.body));

    let dash: Value = serde_json::from_str(&read("grafana/quorumkv.json")?)?;
    let rules = yaml(&read("prometheus/alerts.yml")?)?;
    let mut missing = Vec::new();
    let mut used = BTreeSet::new();
    for (source, exprs) in [
        ("grafana/quorumkv.json", dashboard_exprs(&dash)),
        ("prometheus/alerts.yml", alert_exprs(&rules)),
    ] {
        ensure!(!exprs.is_empty(), "{source} has no expressions");
        for expr in exprs {
            for name in promql_names(&expr) {
                if !exported.contains(&name) {
                    missing.push(format!("{source}: {name} (in `{expr}`)"));
                }
                used.insert(name);
            }
        }
    }
    println!(
        "deploy: {} metric names used by the dashboard and alerts, all checked against /metrics",
        used.len()
    );
    if !missing.is_empty() {
        bail!("metrics the node does not export:\n{}", missing.join("\n"));
    }
    Ok(())
}

#[test]
fn the_promql_scan_finds_names_and_strips_histogram_suffixes() {
    let names = promql_names(
        "histogram_quantile(0.99, sum by (le) (rate(qkv_http_request_duration_seconds_bucket{route=\"keys\"}[5m]))) / qkv_x_count + up",
    );
    let want: BTreeSet<String> = ["qkv_http_request_duration_seconds", "qkv_x"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    assert_eq!(names, want);
    let exported = exported_names(
        "# TYPE qkv_hints_written counter\nqkv_hints_written_total 0\n# TYPE qkv_peer_phi gauge\n",
    );
    assert!(exported.contains("qkv_hints_written_total"));
    assert!(exported.contains("qkv_peer_phi"));
}

#[test]
fn the_dashboard_has_what_grafana_needs() -> Result<()> {
    let dash: Value = serde_json::from_str(&read("grafana/quorumkv.json")?)?;
    for field in ["uid", "title"] {
        ensure!(dash[field].is_string(), "dashboard.{field} missing");
    }
    ensure!(dash["schemaVersion"].is_u64(), "schemaVersion missing");
    let vars = dash["templating"]["list"]
        .as_array()
        .context("templating.list")?;
    ensure!(
        vars.iter()
            .any(|v| v["type"] == "datasource" && v["query"] == "prometheus"),
        "no Prometheus datasource variable"
    );
    let panels = dash["panels"].as_array().context("panels")?;
    let mut ids = BTreeSet::new();
    for p in panels {
        let title = p["title"].as_str().context("a panel without a title")?;
        ensure!(
            ids.insert(p["id"].as_u64().context("panel id")?),
            "duplicate id"
        );
        let pos = &p["gridPos"];
        for k in ["h", "w", "x", "y"] {
            ensure!(pos[k].is_u64(), "{title}: gridPos.{k}");
        }
        ensure!(
            pos["x"].as_u64().unwrap_or(99) + pos["w"].as_u64().unwrap_or(99) <= 24,
            "{title}: wider than the grid"
        );
        if p["type"] == "row" {
            continue;
        }
        let targets = p["targets"].as_array().context("targets")?;
        ensure!(!targets.is_empty(), "{title}: no targets");
        let mut refs = BTreeSet::new();
        for t in targets {
            ensure!(
                t["expr"].as_str().is_some_and(|e| !e.is_empty()),
                "{title}: empty expr"
            );
            ensure!(
                refs.insert(t["refId"].to_string()),
                "{title}: duplicate refId"
            );
            ensure!(
                t["datasource"]["type"] == "prometheus",
                "{title}: datasource"
            );
        }
    }
    Ok(())
}

#[test]
fn alert_rules_have_what_prometheus_needs() -> Result<()> {
    let rules = yaml(&read("prometheus/alerts.yml")?)?;
    let groups = rules["groups"].as_array().context("groups")?;
    let mut names = BTreeSet::new();
    for g in groups {
        ensure!(g["name"].is_string(), "a group without a name");
        for r in g["rules"].as_array().context("rules")? {
            let name = r["alert"].as_str().context("a rule without alert")?;
            ensure!(names.insert(name.to_string()), "{name} twice");
            ensure!(r["expr"].is_string(), "{name}: expr");
            ensure!(r["labels"]["severity"].is_string(), "{name}: severity");
            ensure!(r["annotations"]["summary"].is_string(), "{name}: summary");
        }
    }
    for wanted in [
        "QkvNodeDown",
        "QkvHintsGrowing",
        "QkvRepairOverdue",
        "QkvDiskNearlyFull",
        "QkvTimeouts",
    ] {
        ensure!(names.contains(wanted), "no {wanted} alert");
    }
    let prom = yaml(&read("prometheus/prometheus.yml")?)?;
    ensure!(
        prom["rule_files"][0] == "alerts.yml",
        "prometheus.yml rule_files"
    );
    Ok(())
}

#[test]
fn compose_and_kubernetes_files_parse_with_their_parts() -> Result<()> {
    let compose = yaml(&read("docker/compose.yaml")?)?;
    let services = compose["services"].as_object().context("services")?;
    ensure!(services.len() == 3, "{} services", services.len());
    for (name, s) in services {
        let env = &s["environment"];
        for k in [
            "QKV_ID",
            "QKV_LISTEN",
            "QKV_HTTP",
            "QKV_SEEDS",
            "QKV_CLUSTER_SECRET_FILE",
        ] {
            ensure!(env[k].is_string(), "{name}: {k}");
        }
    }
    let text = read("k8s/qkvd.yaml")?;
    let mut kinds = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v: Value = serde::Deserialize::deserialize(doc)?;
        kinds.push(v["kind"].as_str().unwrap_or("").to_string());
        if v["kind"] == "StatefulSet" {
            let spec = &v["spec"];
            ensure!(spec["serviceName"] == "qkvd", "serviceName");
            let c = &spec["template"]["spec"]["containers"][0];
            let script = c["args"][0].as_str().context("the start script")?;
            for flag in ["--listen", "--http", "--seeds", "--id"] {
                ensure!(script.contains(flag), "the start script lacks {flag}");
            }
            ensure!(c["readinessProbe"]["httpGet"]["path"] == "/health", "probe");
        }
        if v["kind"] == "Service" && v["metadata"]["name"] == "qkvd" {
            ensure!(
                v["spec"]["clusterIP"] == "None",
                "the peer Service is not headless"
            );
        }
    }
    ensure!(kinds.iter().any(|k| k == "StatefulSet"), "{kinds:?}");
    ensure!(
        kinds.iter().filter(|k| *k == "Service").count() == 2,
        "{kinds:?}"
    );
    let docker = read("docker/Dockerfile")?;
    ensure!(docker.matches("\nFROM ").count() + usize::from(docker.starts_with("FROM ")) >= 2);
    ensure!(docker.contains("\nUSER 10001"), "the image runs as root");
    ensure!(
        docker.contains("ENTRYPOINT [\"/usr/local/bin/qkvd\"]"),
        "entrypoint"
    );
    Ok(())
}

/// `systemd-analyze verify` on the unit (Debian's `systemd`); the unit
/// is checked with ExecStart pointing at the qkvd just built (the unit's
/// /usr/local/bin/qkvd is not installed here).
#[test]
fn the_systemd_unit_verifies() -> Result<()> {
    let unit = read("systemd/qkvd.service")?;
    for hardening in [
        "DynamicUser=yes",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "ReadWritePaths=/var/lib/qkvd",
    ] {
        ensure!(unit.contains(hardening), "the unit lacks {hardening}");
    }
    let tool = which("systemd-analyze", "systemd")?;
    let dir = tempfile::tempdir()?;
    let qkvd = quorumkv_tests::qkvd_bin()?;
    let local = unit.replace("/usr/local/bin/qkvd", &qkvd.display().to_string());
    let path = dir.path().join("qkvd.service");
    std::fs::write(&path, local)?;
    let out = std::process::Command::new(tool)
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    // Without systemd running as PID 1 some checks cannot run; what the
    // unit itself gets wrong is reported against its file name.
    let own: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("qkvd.service"))
        .collect();
    println!("deploy: systemd-analyze verify: {}", stderr.trim());
    ensure!(own.is_empty(), "systemd-analyze verify: {}", own.join("\n"));
    Ok(())
}

/// The path of `tool`, or an error naming the Debian package that has it
/// (.ci/run installs each when missing, as it does Chromium).
fn which(tool: &str, package: &str) -> Result<PathBuf> {
    let path = std::env::var_os("PATH").context("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
        .with_context(|| {
            format!("{tool} is not installed: apt-get install {package} (.ci/run installs it)")
        })
}

/// `promtool check rules` on the alert rules (Debian's `prometheus`
/// package has promtool).
#[test]
fn promtool_accepts_the_alert_rules() -> Result<()> {
    let tool = which("promtool", "prometheus")?;
    let out = std::process::Command::new(tool)
        .args(["check", "rules"])
        .arg(deploy("prometheus/alerts.yml"))
        .output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("deploy: promtool check rules: {}", text.trim());
    ensure!(out.status.success(), "promtool check rules failed: {text}");
    Ok(())
}

/// `docker-compose config -q` on the compose file (Debian's package is
/// Compose v1, which reads the file without a Docker daemon).
#[test]
fn docker_compose_accepts_the_compose_file() -> Result<()> {
    let tool = which("docker-compose", "docker-compose")?;
    let out = std::process::Command::new(tool)
        .arg("-f")
        .arg(deploy("docker/compose.yaml"))
        .args(["config", "-q"])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!(
        "deploy: docker-compose config: exit {:?} {}",
        out.status.code(),
        stderr.trim()
    );
    ensure!(
        out.status.success(),
        "docker-compose config failed: {stderr}"
    );
    Ok(())
}
