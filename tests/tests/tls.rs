//! TLS end to end on real processes: a 3-node cluster started by `qkv
//! local up --tls` serves the README's CLI examples over HTTPS through
//! `qkv --ca-cert`, and a fourth qkvd whose internode certificate comes
//! from another CA is refused: the cluster counts the refusal and never
//! lists it as a member.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use quorumkv_client::Client;
use quorumkv_client::local::tls;
use quorumkv_tests::cluster_ops::metric_sum;
use quorumkv_tests::{NodeProc, NodeSpec, consecutive_ports, eventually, qkvd_bin, run_qkv, text};

/// `qkv ARGS`, which must succeed; its stdout.
fn qkv_ok(args: &[&str]) -> Result<String> {
    let out = run_qkv(args)?;
    if !out.status.success() {
        bail!("qkv {args:?} failed: {}", text(&out.stderr));
    }
    Ok(text(&out.stdout))
}

/// A cluster of `qkv local up --tls`, brought down when dropped.
struct TlsCluster {
    dir: tempfile::TempDir,
    http: u16,
    listen: u16,
}

impl TlsCluster {
    fn up(nodes: u16) -> Result<TlsCluster> {
        let dir = tempfile::Builder::new().prefix("qkv-tls-").tempdir()?;
        let (http, listen) = (consecutive_ports(nodes)?, consecutive_ports(nodes)?);
        let c = TlsCluster { dir, http, listen };
        let (qkvd, d) = (qkvd_bin()?.display().to_string(), c.dir_arg());
        let (h, l, n) = (http.to_string(), listen.to_string(), nodes.to_string());
        let out = run_qkv(&[
            "local",
            "up",
            "--tls",
            "--nodes",
            &n,
            "--base-http-port",
            &h,
            "--base-listen-port",
            &l,
            "--qkvd",
            &qkvd,
            "--dir",
            &d,
        ])?;
        if !out.status.success() {
            bail!("qkv local up --tls failed: {}", text(&out.stderr));
        }
        let printed = text(&out.stdout);
        let ca = c.ca().display().to_string();
        // It tells how to reach it: the HTTPS URL and the CA to trust.
        for says in [
            format!("https://127.0.0.1:{http}"),
            format!("QKV_CA_CERT={ca}"),
        ] {
            if !printed.contains(&says) {
                bail!("`qkv local up --tls` does not print {says}:\n{printed}");
            }
        }
        Ok(c)
    }

    fn dir_arg(&self) -> String {
        self.dir.path().display().to_string()
    }

    fn ca(&self) -> PathBuf {
        tls::ca_file(self.dir.path())
    }

    fn url(&self) -> String {
        format!("https://127.0.0.1:{}", self.http)
    }

    /// `qkv --node URL --ca-cert CA ARGS`, which must succeed.
    fn qkv(&self, args: &[&str]) -> Result<String> {
        let (url, ca) = (self.url(), self.ca().display().to_string());
        let mut line = vec!["--node", &url, "--ca-cert", &ca];
        line.extend(args);
        qkv_ok(&line)
    }

    /// A library client of n1 over HTTPS.
    fn client(&self) -> Result<Client> {
        let pem = std::fs::read(self.ca())?;
        Ok(Client::builder(vec![self.url()]).ca_cert_pem(pem).build()?)
    }
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        let d = self.dir_arg();
        let _ = run_qkv(&["local", "down", "--dir", &d]);
    }
}

/// `qkv_net_refusals_total` of a node's metrics.
fn refusals(metrics: &str) -> f64 {
    metric_sum(metrics, "qkv_net_refusals_total", &[])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_serves_the_readme_over_https_and_refuses_a_node_of_another_ca() -> Result<()>
{
    let cluster = TlsCluster::up(3)?;

    // The README's examples, over HTTPS.
    cluster.qkv(&["put", "greeting", "hello"])?;
    let got = cluster.qkv(&["get", "greeting"])?;
    assert_eq!(got.trim_end(), "hello");
    let status = cluster.qkv(&["status"])?;
    cluster.qkv(&["bucket", "set", "sessions", "--conflicts", "lww"])?;
    let sessions = cluster.qkv(&["--json", "bucket", "get", "sessions"])?;
    assert!(sessions.contains("lww"), "{sessions}");
    let ring = cluster.qkv(&["ring", "show"])?;
    for id in ["n1", "n2", "n3"] {
        assert!(status.contains(id), "{id} in\n{status}");
        assert!(ring.contains(id), "{id} in\n{ring}");
    }
    // Without the CA, qkv does not trust the nodes.
    let url = cluster.url();
    let out = run_qkv(&["--node", &url, "get", "greeting"])?;
    assert!(!out.status.success(), "trusted without --ca-cert");

    // A node with a certificate of another CA, seeded with n1.
    let client = cluster.client()?;
    let before = refusals(&client.metrics().await?);
    let work = tempfile::Builder::new().prefix("qkv-tls-n4-").tempdir()?;
    // A CA of its own (`qkv local up --tls`'s, made afresh in another
    // directory) and a certificate of it for n4.
    let pki = work.path().join("pki");
    tls::generate(&pki, &["n4".to_string()])?;
    let ca = tls::ca_file(&pki);
    let (cert, key) = tls::node_files(&pki, "n4");
    let seed = format!("127.0.0.1:{}", cluster.listen).parse()?;
    let spec = NodeSpec::new("n4").args([
        "--internode-ca".to_string(),
        ca.display().to_string(),
        "--internode-cert".to_string(),
        cert.display().to_string(),
        "--internode-key".to_string(),
        key.display().to_string(),
    ]);
    let _n4 = NodeProc::start(work.path(), spec, vec![seed])?;
    eventually(Duration::from_secs(30), "n1 refuses n4", || async {
        client.metrics().await.is_ok_and(|m| refusals(&m) > before)
    })
    .await?;
    // It never becomes a member: look through several gossip rounds.
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        let members = client.members().await?;
        let ids: Vec<&str> = members.iter().map(|m| m.id.as_str()).collect();
        assert!(!ids.contains(&"n4"), "n4 joined: {ids:?}");
        assert_eq!(ids.len(), 3, "{ids:?}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}
