//! `qkv ring apply`: carries out the staged change.
//!
//! 1. Shows the staged plan (`stage.rs`).
//! 2. Refuses if the live ring is not the one the plan was made against:
//!    the reviewed movement would not be what happens.
//! 3. Asks for confirmation on a terminal, unless `--yes`; without a
//!    terminal and without `--yes` it refuses (a script must say so).
//! 4. Calls the contract route: `POST /cluster/join` with the planned
//!    tokens on the standby node itself, `POST /cluster/decommission` on
//!    the leaving node, `POST /cluster/removenode` on a live node.
//! 5. Polls `GET /cluster/changes` on the nodes involved (the node that
//!    changes, when up, and every node that receives streams) and shows a
//!    bar per stream and a total with an ETA (`progress.rs`), until the
//!    change is done.
//! 6. Prints the summary (ranges, keys, bytes, duration, MB/s, the plan's
//!    estimate against what streamed) and drops the staged plan.
//!
//! Interrupting apply does not stop the change: it runs on the nodes, and
//! `qkv ring status` follows it. `--timeout-secs` only bounds the wait.

use std::collections::BTreeMap;
use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Args;
use quorumkv_client::Member;
use quorumkv_ring::{RingFile, TokenEntry};
use serde_json::{Value, json};

use super::super::Globals;
use super::admin::{ChangesAnswer, NodeHttp, members};
use super::emit;
use super::emit_json;
use super::progress::{Bars, State, Summary, Tracker};
use super::stage::{self, Kind, PlanFileArg, Staged};

/// Arguments of `qkv ring apply`.
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Apply without asking for confirmation.
    #[arg(long, short = 'y')]
    pub yes: bool,
    /// How often progress is polled, in milliseconds.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(10..))]
    pub poll_ms: u64,
    /// Stop waiting after this many seconds (the change goes on; `qkv ring
    /// status` follows it).
    #[arg(long, default_value_t = 86_400)]
    pub timeout_secs: u64,
    /// Where the staged change is kept.
    #[command(flatten)]
    pub file: PlanFileArg,
}

/// The live ring's tokens, from the first reachable `--node`.
pub async fn live_ring(g: &Globals) -> anyhow::Result<Vec<TokenEntry>> {
    let info = g.client()?.ring().await?;
    let file: RingFile = serde_json::from_value(serde_json::to_value(&info)?)
        .context("the node's /cluster/ring answer is not a ring")?;
    Ok(file.tokens)
}

/// Runs `qkv ring apply`.
pub async fn run(g: &Globals, a: ApplyArgs) -> anyhow::Result<ExitCode> {
    let path = &a.file.plan_file;
    let Some(staged) = stage::load(path)? else {
        bail!(
            "nothing staged in {}: run qkv ring plan --add NAME or --remove NAME first",
            path.display()
        );
    };
    // With --json the summary is stdout; what is confirmed goes to stderr.
    let text = staged.describe(path);
    if g.json {
        eprint!("{text}");
    } else {
        emit(&text)?;
    }
    let live = live_ring(g).await?;
    if !staged.matches_ring(&live) {
        bail!(
            "the live ring changed since the plan was made ({} tokens then, {} now): re-run qkv ring plan",
            staged.ring.len(),
            live.len()
        );
    }
    confirm(a.yes, &staged)?;
    let (members, _) = members(g).await?;
    let http = NodeHttp::new(g)?;
    let route = route(&staged, &members)?;
    let reporters = reporters(&staged, &members, &route.by);
    let mut tracker = Tracker::new(&staged.node, staged.kind);
    for (id, url) in &reporters {
        if let Ok(ans) = http.get::<ChangesAnswer>(url, "/cluster/changes").await {
            tracker.baseline(id, &ans);
        }
    }
    let began = Instant::now();
    let ack: Value = http
        .post(&route.url, route.path, route.body.as_ref(), None)
        .await
        .with_context(|| format!("{} of {} on {}", staged.kind, staged.node, route.by))?;
    let by = &route.by;
    let state = ack
        .get("state")
        .and_then(Value::as_str)
        .unwrap_or("accepted");
    let started = format!(
        "{} of {} started on {by}: {state}",
        staged.kind, staged.node
    );
    let estimate = staged.estimate.map_or(0, |e| e.bytes);
    let mut bars = Bars::new(estimate);
    bars.note(&started);
    let deadline = began + Duration::from_secs(a.timeout_secs);
    let mut unreachable: BTreeMap<String, String> = BTreeMap::new();
    loop {
        for (id, url) in &reporters {
            match http.get::<ChangesAnswer>(url, "/cluster/changes").await {
                Ok(ans) => {
                    if unreachable.remove(id).is_some() {
                        bars.note(&format!("{id} answers again"));
                    }
                    tracker.update(id, &ans);
                }
                Err(e) => {
                    let e = e.to_string();
                    if unreachable.insert(id.clone(), e.clone()).is_none() {
                        bars.note(&format!("warning: no progress from {id}: {e}"));
                    }
                }
            }
        }
        bars.update(&tracker.streams());
        // The streams being done is not the end: the change is over once
        // the membership shows it (the joined node normal, the leaving one
        // left), which is also all there is to go by when nobody lists it.
        let done = match tracker.state() {
            State::Running => false,
            State::Done | State::Pending | State::Vanished => finished_in_members(g, &staged).await,
        };
        if done {
            break;
        }
        if Instant::now() >= deadline {
            bars.finish();
            bail!(
                "{} of {} still in flight after {} s; follow it with qkv ring status",
                staged.kind,
                staged.node,
                a.timeout_secs
            );
        }
        tokio::time::sleep(Duration::from_millis(a.poll_ms)).await;
    }
    let streams = tracker.streams();
    bars.update(&streams);
    bars.finish();
    let duration_ms = tracker
        .span_ms()
        .unwrap_or_else(|| began.elapsed().as_millis() as u64);
    let summary = Summary::new(&staged, &streams, duration_ms);
    stage::clear(path)?;
    if g.json {
        emit_json(&json!(summary))?;
    } else {
        let mut out = summary.render();
        out.push_str(&format!(
            "Dropped the staged change ({}).\n",
            path.display()
        ));
        if staged.kind != Kind::Removenode {
            out.push_str(
                "Nodes that gave up ranges still hold their copies: qkv cleanup --all removes them.\n",
            );
        }
        emit(&out)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks on a terminal; refuses without one unless `--yes`.
fn confirm(yes: bool, staged: &Staged) -> anyhow::Result<()> {
    if yes {
        return Ok(());
    }
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        bail!("not confirmed: stdin is not a terminal; pass --yes to apply without asking");
    }
    eprint!("Apply {} of {}? [y/N] ", staged.kind, staged.node);
    std::io::stderr().flush()?;
    let mut line = String::new();
    stdin.lock().read_line(&mut line)?;
    match line.trim().to_ascii_lowercase().as_str() {
        "y" | "yes" => Ok(()),
        _ => bail!("not applied: not confirmed"),
    }
}

/// The nodes whose `/cluster/changes` are followed, by id with URL: the
/// node that changes (it reports its own change; not when it is removed,
/// it is down), the node that took the change, and every node that
/// receives streams.
fn reporters(
    staged: &Staged,
    members: &BTreeMap<String, (Member, String)>,
    by: &str,
) -> Vec<(String, String)> {
    let mut ids = staged.targets();
    if staged.kind != Kind::Removenode {
        ids.push(staged.node.clone());
    }
    ids.push(by.to_string());
    ids.sort();
    ids.dedup();
    ids.into_iter()
        .filter_map(|id| members.get(&id).map(|(_, url)| (id, url.clone())))
        .collect()
}

/// The contract call that starts a change.
struct Route {
    /// The node that takes it.
    by: String,
    /// Its URL.
    url: String,
    /// The route.
    path: &'static str,
    /// The JSON body, if any.
    body: Option<Value>,
}

/// Which node takes the change, on which route: the standby node joins
/// itself, the leaving node decommissions itself, any live normal node
/// removes a dead one.
fn route(staged: &Staged, members: &BTreeMap<String, (Member, String)>) -> anyhow::Result<Route> {
    let node = &staged.node;
    let found = members.get(node);
    Ok(match staged.kind {
        Kind::Join => {
            let Some((_, url)) = found else {
                bail!(
                    "{node} is not a member: start it with --join manual and seeds of this cluster, then apply"
                );
            };
            Route {
                by: node.clone(),
                url: url.clone(),
                path: "/cluster/join",
                body: Some(json!({"tokens": staged.tokens})),
            }
        }
        Kind::Decommission => {
            let Some((m, url)) = found else {
                bail!("{node} is not a member any more: re-run qkv ring plan");
            };
            if m.status != "up" {
                bail!(
                    "{node} is down now: re-run qkv ring plan (a down node is removed with removenode)"
                );
            }
            Route {
                by: node.clone(),
                url: url.clone(),
                path: "/cluster/decommission",
                body: None,
            }
        }
        Kind::Removenode => {
            let Some((id, (_, url))) = members
                .iter()
                .find(|(id, (m, _))| *id != node && m.status == "up" && m.state == "normal")
            else {
                bail!("no live normal node to run removenode of {node}");
            };
            Route {
                by: id.clone(),
                url: url.clone(),
                path: "/cluster/removenode",
                body: Some(json!({"node": node})),
            }
        }
    })
}

/// Whether `/cluster/members` shows the change finished: a joined node
/// normal, a decommissioned node left (or gone), a removed node gone (or
/// left). A failure to ask is "not yet".
async fn finished_in_members(g: &Globals, staged: &Staged) -> bool {
    let Ok(client) = g.client() else {
        return false;
    };
    let Ok(list) = client.members().await else {
        return false;
    };
    let m = list.iter().find(|m| m.id == staged.node);
    match staged.kind {
        Kind::Join => m.is_some_and(|m| m.state == "normal" && !m.tokens.is_empty()),
        Kind::Decommission | Kind::Removenode => m.is_none_or(|m| m.state == "left"),
    }
}
