//! `qkv faults`: inject faults into a cluster started with
//! `--fault-injection`, through each node's `/internal/faults`
//! (docs/API.md; docs/EXPERIMENTS.md, "Fault injection").
//!
//! Every command applies to every member the first reachable `--node`
//! lists (`/cluster/members`), or to one of them with `--only NODE`, and
//! prints the faults each node now injects. `set`, `partition`, `heal`
//! and `clock` merge into what a node already injects (a JSON merge
//! patch), so that a partition survives a later `set`; `clear` removes
//! everything. A node that fails does not stop the others: the command
//! reports them all, then fails with one line.

use std::collections::BTreeMap;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand};
use quorumkv_faults::{Dist, Leg, Partition, Settings, load};
use serde_json::{Map, Value, json};

use super::Globals;
use super::output::{print_json, table};
use super::ring::admin::{NodeHttp, members};

/// `qkv faults` commands.
#[derive(Debug, Subcommand)]
pub enum FaultsCommand {
    /// What each node injects now.
    Show(Only),
    /// Delay, drop, duplicate or reorder the internode messages a node
    /// sends (to every peer, or with --to to one); merged into what is set.
    Set(SetArgs),
    /// Remove every fault (delays, drops, partition, clock, storage delay).
    Clear(Only),
    /// Partition the nodes: `n1,n2|n3` cuts every message between the
    /// sides (gossip and requests; calls time out); with --one-way only
    /// those from each side to the sides after it.
    Partition(PartitionArgs),
    /// End the partition (the other faults stay).
    Heal(Only),
    /// Set the nodes' clocks off: an offset now, and a drift from then on.
    Clock(ClockArgs),
}

/// Which nodes a command applies to.
#[derive(Debug, Args)]
pub struct Only {
    /// Only this node (by id); default: every member.
    #[arg(long, value_name = "NODE")]
    pub only: Option<String>,
}

/// `qkv faults set` options.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// A preset (lnkd-ssd, lnkd-disk, ymmr[:alpha=A]) or one distribution
    /// for all four legs; the --X-delay options override single legs.
    #[arg(long, value_name = "PRESET|DIST")]
    pub delays: Option<String>,
    /// Write requests (replication, forwarded writes): a distribution in
    /// ms, e.g. const:5, exp:2, uniform:1..3, empirical:FILE.
    #[arg(long, value_name = "DIST")]
    pub w_delay: Option<String>,
    /// Write acknowledgements.
    #[arg(long, value_name = "DIST")]
    pub a_delay: Option<String>,
    /// Read requests.
    #[arg(long, value_name = "DIST")]
    pub r_delay: Option<String>,
    /// Read responses.
    #[arg(long, value_name = "DIST")]
    pub s_delay: Option<String>,
    /// Probability that a message (a request, an answer, a gossip
    /// message) is lost.
    #[arg(long, value_name = "P")]
    pub drop: Option<f64>,
    /// Probability that a request is delivered twice.
    #[arg(long, value_name = "P")]
    pub dup: Option<f64>,
    /// Probability that a request is held back 20 ms, so that later ones
    /// overtake it.
    #[arg(long, value_name = "P")]
    pub reorder: Option<f64>,
    /// Only messages to this node (by id); default: to every peer without
    /// settings of its own.
    #[arg(long, value_name = "NODE")]
    pub to: Option<String>,
    /// The coordinator's operations on its own replica pay the legs too.
    #[arg(long)]
    pub local: bool,
    /// Which nodes send the faulted messages.
    #[command(flatten)]
    pub only: Only,
}

/// `qkv faults partition` options.
#[derive(Debug, Args)]
pub struct PartitionArgs {
    /// The sides: node ids joined by `,`, sides by `|`, e.g. `n1,n2|n3`.
    #[arg(value_name = "SIDES")]
    pub sides: String,
    /// Cut only messages from each side to the sides after it (`A|B`: B
    /// does not hear A, A hears B).
    #[arg(long)]
    pub one_way: bool,
    /// Which nodes enforce it (each node cuts what it sends).
    #[command(flatten)]
    pub only: Only,
}

/// `qkv faults clock` options.
#[derive(Debug, Args)]
pub struct ClockArgs {
    /// How far ahead (negative: behind) the clock reads from now, ms.
    #[arg(long, value_name = "MS", allow_hyphen_values = true)]
    pub offset_ms: i64,
    /// How fast it gains from then on, parts per million (1000 = 1 ms/s;
    /// negative: it loses).
    #[arg(
        long,
        value_name = "PPM",
        default_value_t = 0.0,
        allow_hyphen_values = true
    )]
    pub drift_ppm: f64,
    /// Which nodes' clocks.
    #[command(flatten)]
    pub only: Only,
}

/// What to send each node.
#[derive(Debug, Clone, PartialEq)]
enum Change {
    Show,
    Clear,
    Patch(Value),
}

/// Runs a `qkv faults` command.
pub async fn run(g: &Globals, c: FaultsCommand) -> anyhow::Result<ExitCode> {
    let (members, _) = members(g).await?;
    let ids: Vec<&str> = members.keys().map(String::as_str).collect();
    let (change, only) = match &c {
        FaultsCommand::Show(o) => (Change::Show, o),
        FaultsCommand::Clear(o) => (Change::Clear, o),
        FaultsCommand::Set(a) => (Change::Patch(set_patch(a, &ids)?), &a.only),
        FaultsCommand::Partition(a) => (
            Change::Patch(partition_patch(&a.sides, a.one_way, &ids)?),
            &a.only,
        ),
        FaultsCommand::Heal(o) => (Change::Patch(json!({"partition": null})), o),
        FaultsCommand::Clock(a) => (
            Change::Patch(json!({"clock": {"offset_ms": a.offset_ms, "drift_ppm": a.drift_ppm}})),
            &a.only,
        ),
    };
    let targets: Vec<(String, String)> = match &only.only {
        Some(id) => match members.get(id) {
            Some((_, url)) => vec![(id.clone(), url.clone())],
            None => bail!("no member {id} (members: {})", ids.join(", ")),
        },
        None => members
            .iter()
            .map(|(id, (_, url))| (id.clone(), url.clone()))
            .collect(),
    };
    if targets.is_empty() {
        bail!("the cluster lists no member with an HTTP address");
    }
    let http = NodeHttp::new(g)?;
    let mut done: Vec<(String, String, Settings)> = Vec::new();
    let mut failed: Vec<(String, String, String)> = Vec::new();
    for (id, url) in &targets {
        let (method, body) = match &change {
            Change::Show => (reqwest::Method::GET, None),
            Change::Clear => (reqwest::Method::DELETE, None),
            Change::Patch(p) => (reqwest::Method::PATCH, Some(p)),
        };
        match http
            .send::<Settings>(method, url, "/internal/faults", body, None)
            .await
        {
            Ok(s) => done.push((id.clone(), url.clone(), s)),
            Err(e) => failed.push((id.clone(), url.clone(), e.to_string())),
        }
    }
    if g.json {
        let nodes: Vec<Value> = done
            .iter()
            .map(|(id, url, s)| json!({"node": id, "url": url, "faults": s}))
            .collect();
        let errors: Vec<Value> = failed
            .iter()
            .map(|(id, url, e)| json!({"node": id, "url": url, "error": e}))
            .collect();
        print_json(&json!({"nodes": nodes, "errors": errors}))?;
    } else {
        let mut rows: Vec<Vec<String>> = done
            .iter()
            .map(|(id, _, s)| {
                let mut row = vec![id.clone()];
                row.extend(describe(s));
                row
            })
            .collect();
        rows.extend(failed.iter().map(|(id, url, e)| {
            vec![
                id.clone(),
                String::new(),
                String::new(),
                String::new(),
                format!("failed ({url}): {e}"),
            ]
        }));
        print!(
            "{}",
            table(
                &["NODE", "PARTITION", "CLOCK", "OWN REPLICA", "MESSAGES"],
                &rows
            )
        );
    }
    if let Some((id, url, e)) = failed.first() {
        bail!(
            "{} of {} nodes failed (first: {id} at {url}: {e})",
            failed.len(),
            targets.len()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// A distribution option's value, with any `empirical:FILE` read here and
/// sent inline (the node reads no files).
fn dist(flag: &str, text: &str) -> anyhow::Result<Dist> {
    load::dist(text)
        .map(|d| d.inlined())
        .with_context(|| format!("--{flag}"))
}

fn probability(flag: &str, p: Option<f64>) -> anyhow::Result<Option<f64>> {
    match p {
        Some(v) if !(0.0..=1.0).contains(&v) => {
            bail!("--{flag} {v}: a probability must be within 0..=1")
        }
        other => Ok(other),
    }
}

/// The merge patch of `qkv faults set`.
fn set_patch(a: &SetArgs, members: &[&str]) -> anyhow::Result<Value> {
    let mut link = Map::new();
    if let Some(text) = &a.delays {
        let delays = load::spec(text).context("--delays")?.delays();
        if delays.remote_ms.is_some() {
            bail!(
                "--delays {text}: wan's remote delay depends on where each replica is; give its legs (lnkd-disk) and slower peers their own with --to"
            );
        }
        let l = delays.legs;
        for (leg, d) in [(Leg::W, l.w), (Leg::A, l.a), (Leg::R, l.r), (Leg::S, l.s)] {
            link.insert(leg.name().into(), json!(d.inlined()));
        }
    }
    for (leg, flag, text) in [
        (Leg::W, "w-delay", &a.w_delay),
        (Leg::A, "a-delay", &a.a_delay),
        (Leg::R, "r-delay", &a.r_delay),
        (Leg::S, "s-delay", &a.s_delay),
    ] {
        if let Some(t) = text {
            link.insert(leg.name().into(), json!(dist(flag, t)?));
        }
    }
    for (field, p) in [
        ("drop", probability("drop", a.drop)?),
        ("dup", probability("dup", a.dup)?),
        ("reorder", probability("reorder", a.reorder)?),
    ] {
        if let Some(p) = p {
            link.insert(field.into(), json!(p));
        }
    }
    if link.is_empty() && !a.local {
        bail!(
            "nothing to set: give --delays, a --w-delay/--a-delay/--r-delay/--s-delay, --drop, --dup, --reorder or --local"
        );
    }
    let mut patch = Map::new();
    if !link.is_empty() {
        match &a.to {
            Some(to) => {
                if !members.contains(&to.as_str()) {
                    bail!(
                        "--to {to}: no such member (members: {})",
                        members.join(", ")
                    );
                }
                let mut peers = Map::new();
                peers.insert(to.clone(), Value::Object(link));
                patch.insert("peers".into(), Value::Object(peers));
            }
            None => {
                patch.insert("all_peers".into(), Value::Object(link));
            }
        }
    }
    if a.local {
        patch.insert("local".into(), json!(true));
    }
    Ok(Value::Object(patch))
}

/// The merge patch of `qkv faults partition`.
fn partition_patch(sides: &str, one_way: bool, members: &[&str]) -> anyhow::Result<Value> {
    let mut p: Partition = sides.parse()?;
    p.one_way = one_way;
    if let Some(unknown) = p
        .sides
        .iter()
        .flatten()
        .find(|n| !members.contains(&n.as_str()))
    {
        bail!(
            "{unknown} in `{sides}` is no member (members: {})",
            members.join(", ")
        );
    }
    Ok(json!({"partition": p}))
}

/// One node's faults as the table's columns after NODE: the partition,
/// the clock, the own replica, and (last, as the widest) the messages.
fn describe(s: &Settings) -> Vec<String> {
    let link = |l: &quorumkv_faults::LinkFaults| {
        // Legs with the same distribution (a preset's) share one entry.
        let mut groups: Vec<(String, &Dist)> = Vec::new();
        for leg in Leg::ALL {
            if let Some(d) = l.leg(leg) {
                match groups.iter_mut().find(|(_, g)| *g == d) {
                    Some((names, _)) => names.push_str(&format!(",{leg}")),
                    None => groups.push((leg.to_string(), d)),
                }
            }
        }
        let mut parts: Vec<String> = groups.iter().map(|(n, d)| format!("{n}={d}")).collect();
        for (name, p) in [("drop", l.drop), ("dup", l.dup), ("reorder", l.reorder)] {
            if p > 0.0 {
                parts.push(format!("{name}={p}"));
            }
        }
        parts.join(" ")
    };
    let mut messages: Vec<String> = Vec::new();
    if !s.all_peers.is_quiet() {
        messages.push(format!("all: {}", link(&s.all_peers)));
    }
    let peers: BTreeMap<&String, _> = s.peers.iter().collect();
    for (peer, l) in peers {
        messages.push(format!("to {peer}: {}", link(l)));
    }
    let none = || "-".to_string();
    let clock = if s.clock.is_zero() {
        none()
    } else {
        format!("{:+} ms, {:+} ppm", s.clock.offset_ms, s.clock.drift_ppm)
    };
    let mut own = Vec::new();
    if s.local {
        own.push("pays the legs".to_string());
    }
    if s.storage_delay_ms > 0 {
        own.push(format!("storage +{} ms", s.storage_delay_ms));
    }
    vec![
        s.partition.as_ref().map_or_else(none, |p| p.to_string()),
        clock,
        if own.is_empty() {
            none()
        } else {
            own.join(", ")
        },
        if messages.is_empty() {
            none()
        } else {
            messages.join("; ")
        },
    ]
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;
    use crate::cli::{Cli, Command};

    fn set_args(line: &[&str]) -> SetArgs {
        let mut full = vec!["qkv", "faults", "set"];
        full.extend(line);
        match Cli::try_parse_from(full).expect("parses").command {
            Command::Faults(FaultsCommand::Set(a)) => a,
            other => panic!("{other:?}"),
        }
    }

    const MEMBERS: &[&str] = &["n1", "n2", "n3"];

    #[test]
    fn set_merges_only_the_given_fields_into_the_default_or_one_peer() {
        let p = set_patch(
            &set_args(&["--w-delay", "const:200", "--drop", "0.1"]),
            MEMBERS,
        )
        .expect("valid");
        assert_eq!(p, json!({"all_peers": {"w": "const:200", "drop": 0.1}}));
        let p = set_patch(
            &set_args(&[
                "--delays",
                "lnkd-ssd",
                "--s-delay",
                "exp:2",
                "--to",
                "n2",
                "--local",
            ]),
            MEMBERS,
        )
        .expect("valid");
        let n2 = &p["peers"]["n2"];
        assert_eq!(n2["s"], "exp:2");
        assert!(
            n2["w"]
                .as_str()
                .is_some_and(|w| w.starts_with("mix:0.9122*pareto"))
        );
        assert_eq!(p["local"], true);
        assert!(p.get("all_peers").is_none());
    }

    #[test]
    fn set_refuses_what_a_node_would_refuse_with_one_line() {
        let cases: &[(&[&str], &str)] = &[
            (&[], "nothing to set"),
            (
                &["--drop", "1.5"],
                "--drop 1.5: a probability must be within 0..=1",
            ),
            (&["--w-delay", "exp:-1"], "--w-delay"),
            (&["--delays", "wan"], "wan's remote delay"),
            (
                &["--dup", "0.1", "--to", "n9"],
                "--to n9: no such member (members: n1, n2, n3)",
            ),
        ];
        for (line, want) in cases {
            let err = set_patch(&set_args(line), MEMBERS).expect_err("refused");
            let text = format!("{err:#}");
            assert!(text.contains(want), "{line:?}: {text}");
        }
    }

    #[test]
    fn partitions_name_members_only_and_carry_their_direction() {
        let p = partition_patch("n1|n2,n3", true, MEMBERS).expect("valid");
        assert_eq!(
            p,
            json!({"partition": {"sides": [["n1"], ["n2", "n3"]], "one_way": true}})
        );
        let err = partition_patch("n1|n9", false, MEMBERS).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "n9 in `n1|n9` is no member (members: n1, n2, n3)"
        );
        assert!(partition_patch("n1", false, MEMBERS).is_err());
    }

    #[test]
    fn the_table_describes_each_kind_of_fault() {
        let s: Settings = serde_json::from_value(json!({
            "all_peers": {"w": "const:5", "a": "exp:1", "r": "const:5", "drop": 0.1},
            "peers": {"n2": {"r": "exp:2"}},
            "partition": {"sides": [["n1"], ["n2"]], "one_way": true},
            "clock": {"offset_ms": -2500, "drift_ppm": 100.0},
            "local": true,
            "storage_delay_ms": 40
        }))
        .expect("valid");
        assert_eq!(
            describe(&s),
            [
                "n1|n2 (one-way)",
                "-2500 ms, +100 ppm",
                "pays the legs, storage +40 ms",
                "all: w,r=const:5 a=exp:1 drop=0.1; to n2: r=exp:2",
            ]
        );
        assert_eq!(describe(&Settings::default()), ["-", "-", "-", "-"]);
    }

    #[test]
    fn clock_offsets_may_be_negative() {
        let cli = Cli::try_parse_from([
            "qkv",
            "faults",
            "clock",
            "--offset-ms",
            "-2500",
            "--drift-ppm",
            "-10",
            "--only",
            "n2",
        ])
        .expect("parses");
        let Command::Faults(FaultsCommand::Clock(a)) = cli.command else {
            panic!("{:?}", cli.command)
        };
        assert_eq!(
            (a.offset_ms, a.drift_ppm, a.only.only.as_deref()),
            (-2500, -10.0, Some("n2"))
        );
    }
}
