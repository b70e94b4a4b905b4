//! Tests of the console's routes: its files, its data routes on a
//! simulated cluster, the ring's arcs, and the reports directory.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use warp::http::{HeaderMap, HeaderValue, Method, header};

use super::*;
use crate::buckets::Consistency;
use crate::sim::Sim;
use crate::version::Context;

/// Serves one request through the whole HTTP stack (admission, tokens,
/// dispatch), as a client would be served.
async fn get(
    api: &Arc<Api>,
    path: &str,
    query: &str,
    token: Option<&str>,
) -> (u16, HeaderMap, Bytes) {
    let mut headers = HeaderMap::new();
    if let Some(t) = token {
        let v = HeaderValue::from_str(&format!("Bearer {t}")).expect("header");
        headers.insert(header::AUTHORIZATION, v);
    }
    let body = super::super::request::Body::new(
        futures::stream::empty::<Result<Bytes, warp::Error>>(),
        Duration::from_secs(1),
    );
    let resp = super::super::serve(api.clone(), Method::GET, path, query, headers, body).await;
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let bytes = http_body_util::BodyExt::collect(resp.into_body())
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    (status, headers, bytes)
}

fn body_json(b: &Bytes) -> serde_json::Value {
    serde_json::from_slice(b).expect("a JSON body")
}

#[test]
fn the_page_loads_only_its_own_files() {
    for (name, text) in [
        ("index.html", INDEX),
        ("app.js", APP_JS),
        ("app.css", APP_CSS),
    ] {
        // No CDN, no external font or script: the console works offline.
        // (The SVG namespace is a name, not a place anything is loaded from.)
        let text = text.replace("http://www.w3.org/2000/svg", "");
        for external in ["http://", "https://", "//cdn", "@import"] {
            assert!(!text.contains(external), "{name} mentions {external}");
        }
    }
    assert!(INDEX.contains("src=\"/ui/app.js\""));
    assert!(INDEX.contains("href=\"/ui/app.css\""));
    // The token is sent as a header and kept for the tab only.
    assert!(APP_JS.contains("sessionStorage"));
    assert!(APP_JS.contains("'Authorization'"));
    assert!(!APP_JS.contains("localStorage"));
    // Each file stays small.
    assert!(INDEX.len() + APP_JS.len() + APP_CSS.len() < 64 * 1024);
}

#[tokio::test(start_paused = true)]
async fn files_are_open_and_data_routes_take_the_api_tokens() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clients = dir.path().join("clients");
    let admin = dir.path().join("admin");
    std::fs::write(&clients, "client-1\n").expect("write");
    std::fs::write(&admin, "admin-1\n").expect("write");
    let flags = [
        "--client-tokens-file",
        clients.to_str().expect("utf-8"),
        "--admin-token-file",
        admin.to_str().expect("utf-8"),
    ];
    let sim = Sim::start(3, 7, &flags).await;
    let api = sim.api(0);
    for (path, kind) in [
        ("/ui", "text/html"),
        ("/ui/", "text/html"),
        ("/ui/app.js", "text/javascript"),
        ("/ui/app.css", "text/css"),
    ] {
        let (status, headers, body) = get(api, path, "", None).await;
        assert_eq!(status, 200, "{path}");
        let ct = headers[header::CONTENT_TYPE].to_str().expect("ascii");
        assert!(ct.starts_with(kind), "{path}: {ct}");
        assert!(
            headers.contains_key(header::CONTENT_SECURITY_POLICY),
            "{path}"
        );
        assert!(!body.is_empty());
    }
    assert_eq!(get(api, "/ui/nothing", "", None).await.0, 404);
    // Data needs a token, as the routes they stand beside.
    assert_eq!(get(api, "/ui/api/ring", "", None).await.0, 401);
    assert_eq!(get(api, "/ui/api/ring", "", Some("wrong")).await.0, 401);
    assert_eq!(get(api, "/ui/api/ring", "", Some("client-1")).await.0, 200);
    assert_eq!(get(api, "/ui/api/nodes", "", None).await.0, 401);
    let local = "/ui/api/local/buckets/default/keys/k";
    assert_eq!(get(api, local, "", Some("client-1")).await.0, 401);
    assert_eq!(get(api, local, "", Some("admin-1")).await.0, 404);
    assert_eq!(get(api, "/ui/reports", "", None).await.0, 401);
    // No directory configured: said so, to a client with a token.
    let (status, _, body) = get(api, "/ui/reports", "", Some("client-1")).await;
    assert_eq!(status, 404);
    assert!(String::from_utf8_lossy(&body).contains("--ui-reports-dir"));
}

#[tokio::test(start_paused = true)]
async fn ring_figures_and_every_replicas_copy_are_shown() {
    let sim = Sim::start(3, 11, &[]).await;
    let api = sim.api(0);
    let (status, _, body) = get(api, "/ui/api/ring", "", None).await;
    assert_eq!(status, 200);
    let ring = body_json(&body);
    assert_eq!(ring["owners"].as_array().map(Vec::len), Some(3));
    assert_eq!(ring["changing"], false);
    let arcs = ring["arcs"].as_array().expect("arcs");
    let span: f64 = arcs
        .iter()
        .map(|a| a["to"].as_f64().unwrap_or(0.0) - a["from"].as_f64().unwrap_or(0.0))
        .sum();
    assert!(
        (span - 1.0).abs() < 1e-9,
        "the arcs cover the circle once: {span}"
    );

    sim.put(
        0,
        "default",
        "k",
        "v",
        Consistency::All,
        &Context::default(),
    )
    .await
    .expect("written");
    let (status, _, body) = get(api, "/ui/api/nodes", "", None).await;
    assert_eq!(status, 200);
    let figures = &body_json(&body)["figures"];
    for id in ["n1", "n2", "n3"] {
        assert_eq!(figures[id]["keys"], 1, "{id}: {figures}");
        assert_eq!(figures[id]["version"], env!("CARGO_PKG_VERSION"));
    }
    for id in ["n1", "n2", "n3"] {
        let (status, _, body) = get(
            api,
            "/ui/api/local/buckets/default/keys/k",
            &format!("node={id}"),
            None,
        )
        .await;
        assert_eq!(status, 200, "{id}");
        let copy = body_json(&body);
        assert_eq!(copy["node"], id);
        assert_eq!(copy["values"][0]["value_base64"], "dg==");
    }
    let (status, _, _) = get(
        api,
        "/ui/api/local/buckets/default/keys/absent",
        "node=n2",
        None,
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, _) = get(api, "/ui/api/local/buckets/default/keys/k", "node=n9", None).await;
    assert_eq!(status, 404);

    // A member that is down answers nothing: its figures say why.
    sim.net.crash("n3");
    sim.until("n3 is down on n1", |s| !s.api(0).cluster.is_alive("n3"))
        .await;
    let (_, _, body) = get(api, "/ui/api/nodes", "", None).await;
    let figures = &body_json(&body)["figures"];
    assert_eq!(figures["n3"]["error"], "down");
    assert_eq!(figures["n2"]["keys"], 1);
}

/// A ring of `nodes` nodes with `vnodes` random tokens each.
fn random_ring(nodes: usize, vnodes: usize, seed: u64) -> Ring {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut ring = Ring::new();
    for i in 0..nodes {
        let tokens: Vec<Token> = (0..vnodes).map(|_| rng.random()).collect();
        ring.insert_node(&format!("n{i}"), &tokens);
    }
    ring
}

#[test]
fn ring_arcs_are_at_most_one_per_token_and_cover_the_circle() {
    let current = random_ring(100, 16, 1);
    let arcs = ring_arcs(&current, None, 3);
    assert!(!arcs.is_empty() && arcs.len() <= 1600, "{}", arcs.len());
    let span: f64 = arcs.iter().map(|a| a.to - a.from).sum();
    assert!((span - 1.0).abs() < 1e-9, "{span}");
    assert!(arcs.iter().all(|a| a.pending.is_empty()));
    // Neighbours differ: a run of one owner is one arc.
    assert!(arcs.windows(2).all(|w| w[0].owner != w[1].owner));

    // A 101st node joining: its ranges are drawn with it as pending.
    let mut future = current.clone();
    future.insert_node("joiner", &random_ring(1, 16, 2).node_tokens("n0"));
    let arcs = ring_arcs(&current, Some(&future), 3);
    assert!(arcs.len() <= 1616, "{}", arcs.len());
    let moving: Vec<_> = arcs.iter().filter(|a| !a.pending.is_empty()).collect();
    assert!(!moving.is_empty());
    assert!(moving.iter().all(|a| a.pending == ["joiner"]));
    assert!(arcs.iter().all(|a| a.owner != "joiner"));
    let span: f64 = arcs.iter().map(|a| a.to - a.from).sum();
    assert!((span - 1.0).abs() < 1e-9, "{span}");

    // One node, one token: one arc, the whole circle.
    let one = random_ring(1, 1, 3);
    let arcs = ring_arcs(&one, None, 3);
    assert_eq!(arcs.len(), 1);
    assert!((arcs[0].to - arcs[0].from - 1.0).abs() < 1e-12);
    assert!(ring_arcs(&Ring::new(), None, 3).is_empty());
}

#[test]
fn report_paths_stay_inside_the_directory() {
    let base = tempfile::tempdir().expect("tempdir");
    let root = base.path().join("reports");
    std::fs::create_dir_all(root.join("run1")).expect("mkdir");
    std::fs::write(root.join("run1/plot.svg"), "<svg/>").expect("write");
    std::fs::write(root.join("report.md"), "# r").expect("write");
    std::fs::write(root.join(".hidden"), "h").expect("write");
    std::fs::write(base.path().join("secret"), "s").expect("write");
    std::os::unix::fs::symlink(base.path().join("secret"), root.join("link")).expect("symlink");

    let ok = report_path(&root, &["run1", "plot.svg"]).expect("inside");
    assert!(ok.ends_with("run1/plot.svg"));
    assert!(report_path(&root, &["report.md"]).is_ok());
    for bad in [
        &["..", "secret"][..],
        &["%2e%2e", "secret"],
        &["run1", "..", "..", "secret"],
        &["..%2Fsecret"],
        &["run1%2F..%2F..%2Fsecret"],
        &[".hidden"],
        &[""],
        &["run1", ""],
        &["%00"],
        &["%ff"],
    ] {
        let err = report_path(&root, bad).expect_err("refused");
        assert_eq!(err.code(), "bad_request", "{bad:?}");
    }
    // A link out of the directory, a directory, a missing file: not found.
    for missing in [&["link"][..], &["run1"], &["nope.svg"]] {
        let err = report_path(&root, missing).expect_err("refused");
        assert_eq!(err.code(), "not_found", "{missing:?}");
    }

    let listing = list_reports(&root);
    let paths: Vec<_> = listing["files"]
        .as_array()
        .expect("files")
        .iter()
        .filter_map(|f| f["path"].as_str())
        .collect();
    assert_eq!(paths, ["report.md", "run1/plot.svg"]);
    assert_eq!(content_type(&ok), "image/svg+xml");
    assert!(content_type(Path::new("x.html")).starts_with("text/plain"));
}

#[tokio::test(start_paused = true)]
async fn reports_are_served_read_only_from_the_configured_directory() {
    let base = tempfile::tempdir().expect("tempdir");
    let root = base.path().join("reports");
    std::fs::create_dir_all(&root).expect("mkdir");
    std::fs::write(root.join("plot.svg"), "<svg/>").expect("write");
    std::fs::write(base.path().join("secret"), "s3cret").expect("write");
    let sim = Sim::start(1, 5, &["--ui-reports-dir", root.to_str().expect("utf-8")]).await;
    let api = sim.api(0);
    let (status, _, body) = get(api, "/ui/reports", "", None).await;
    assert_eq!(status, 200);
    assert_eq!(body_json(&body)["files"][0]["path"], "plot.svg");
    let (status, headers, body) = get(api, "/ui/reports/plot.svg", "", None).await;
    assert_eq!((status, &body[..]), (200, &b"<svg/>"[..]));
    assert_eq!(headers[header::CONTENT_TYPE], "image/svg+xml");
    assert!(
        headers[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .expect("ascii")
            .contains("sandbox")
    );
    for path in [
        "/ui/reports/../secret",
        "/ui/reports/%2e%2e/secret",
        "/ui/reports/..%2fsecret",
    ] {
        let (status, _, body) = get(api, path, "", None).await;
        assert_ne!(status, 200, "{path}");
        assert!(!String::from_utf8_lossy(&body).contains("s3cret"), "{path}");
    }
    let body = super::super::request::Body::new(
        futures::stream::empty::<Result<Bytes, warp::Error>>(),
        Duration::from_secs(1),
    );
    let resp = super::super::serve(
        api.clone(),
        Method::PUT,
        "/ui/reports/plot.svg",
        "",
        HeaderMap::new(),
        body,
    )
    .await;
    assert_eq!(resp.status().as_u16(), 405);
}
