//! The staged change: what `qkv ring plan --add/--remove` recorded for
//! `qkv ring apply` to carry out.
//!
//! The plan file (default `./.qkv/plan.json`) holds one change — a join
//! with the tokens the plan chose, a decommission, or a removenode — with
//! the ring it was computed against and the estimate the operator saw. The
//! ring is what makes apply safe: if the live ring differs from it
//! (another change happened in between), the reviewed plan no longer
//! describes what would move, and apply refuses. The estimate is kept so
//! the final summary can compare it with what was streamed.
//!
//! The file is JSON so it can be read, diffed and kept with a change
//! ticket; it is written to a temporary file and renamed, so a crash never
//! leaves half a plan.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;
use quorumkv_ring::{DataSize, TokenEntry};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::super::Globals;
use super::super::output::table;
use super::{bytes, emit, emit_json, pct};

/// The staged plan file's format version.
pub const VERSION: u32 = 1;

/// `--plan-file`, shared by `plan` and `apply`.
#[derive(Debug, Clone, Args)]
pub struct PlanFileArg {
    /// Where the staged change is kept.
    #[arg(
        long,
        value_name = "FILE",
        env = "QKV_PLAN_FILE",
        default_value = ".qkv/plan.json"
    )]
    pub plan_file: PathBuf,
}

/// What kind of membership change, and so which route carries it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// A standby node takes tokens (`POST /cluster/join` on it).
    Join,
    /// A live node leaves (`POST /cluster/decommission` on it).
    Decommission,
    /// A dead node is removed (`POST /cluster/removenode` on a live one).
    Removenode,
}

impl Kind {
    /// The contract's name (`join`, `decommission`, `removenode`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Join => "join",
            Kind::Decommission => "decommission",
            Kind::Removenode => "removenode",
        }
    }
}

impl std::fmt::Display for Kind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One (source, target) stream total of the plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StagedPair {
    /// The node that streams.
    pub source: String,
    /// The node that receives.
    pub target: String,
    /// Ranges streamed.
    pub ranges: usize,
    /// Share of the token space streamed.
    pub fraction: f64,
    /// Estimated keys and bytes, when the load was known.
    #[serde(default)]
    pub estimate: Option<DataSize>,
}

/// The staged change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Staged {
    /// File format version ([`VERSION`]).
    pub version: u32,
    /// When the plan was made.
    pub created_unix_ms: u64,
    /// Join, decommission or removenode.
    pub kind: Kind,
    /// The node joining, leaving or removed.
    pub node: String,
    /// For a join: the tokens the plan chose, sent with the join.
    #[serde(default)]
    pub tokens: Vec<u64>,
    /// For a join: the rack the plan assumed.
    #[serde(default)]
    pub rack: Option<String>,
    /// Replication factor of the plan.
    pub rf: usize,
    /// Where the ring came from (`cluster at URL`).
    pub source: String,
    /// The ring the plan was computed against.
    pub ring: Vec<TokenEntry>,
    /// Ranges whose replica set changes.
    pub ranges_moving: usize,
    /// Fraction of all replica data that moves.
    pub moved_fraction: f64,
    /// Per (source, target) totals.
    #[serde(default)]
    pub pairs: Vec<StagedPair>,
    /// Estimated keys and bytes to stream, when the load was known.
    #[serde(default)]
    pub estimate: Option<DataSize>,
}

impl Staged {
    /// The nodes that receive streams.
    pub fn targets(&self) -> Vec<String> {
        let mut t: Vec<String> = self.pairs.iter().map(|p| p.target.clone()).collect();
        t.sort();
        t.dedup();
        t
    }

    /// Whether `live` (the current ring's tokens) is the ring the plan was
    /// made against, whatever order either lists them in.
    pub fn matches_ring(&self, live: &[TokenEntry]) -> bool {
        sorted(&self.ring) == sorted(live)
    }

    /// A readable description: the change, the ring, the streams and the
    /// estimate.
    pub fn describe(&self, path: &Path) -> String {
        let mut out = String::new();
        let what = match self.kind {
            Kind::Join => format!(
                "join {} with {} token{}{}",
                self.node,
                self.tokens.len(),
                if self.tokens.len() == 1 { "" } else { "s" },
                self.rack
                    .as_ref()
                    .map(|r| format!(" in rack {r}"))
                    .unwrap_or_default()
            ),
            Kind::Decommission => format!(
                "decommission {} (it is up: it streams its data away)",
                self.node
            ),
            Kind::Removenode => format!(
                "removenode {} (it is down: the other replicas re-replicate its ranges)",
                self.node
            ),
        };
        let _ = writeln!(out, "Staged change ({}): {what}", path.display());
        let _ = writeln!(
            out,
            "  planned against {} tokens ({}), rf {}, {} ago",
            self.ring.len(),
            self.source,
            self.rf,
            age(self.created_unix_ms)
        );
        let _ = writeln!(
            out,
            "  {} ranges moving, {} of all replica data",
            self.ranges_moving,
            pct(self.moved_fraction)
        );
        if !self.pairs.is_empty() {
            let rows: Vec<Vec<String>> = self
                .pairs
                .iter()
                .map(|p| {
                    vec![
                        p.source.clone(),
                        p.target.clone(),
                        p.ranges.to_string(),
                        pct(p.fraction),
                        p.estimate.map_or("-".into(), |e| e.keys.to_string()),
                        p.estimate.map_or("-".into(), |e| bytes(e.bytes)),
                    ]
                })
                .collect();
            for line in table(
                &["SOURCE", "TARGET", "RANGES", "FRACTION", "KEYS", "BYTES"],
                &rows,
            )
            .lines()
            {
                let _ = writeln!(out, "  {line}");
            }
        }
        if self.kind == Kind::Removenode {
            let _ = writeln!(
                out,
                "  ({} is down: where it is the SOURCE, a surviving replica of the range streams instead)",
                self.node
            );
        }
        let _ = match &self.estimate {
            Some(e) => writeln!(
                out,
                "  estimated to stream: {} keys, {}",
                e.keys,
                bytes(e.bytes)
            ),
            None => writeln!(out, "  estimated to stream: unknown (no per-range load)"),
        };
        out
    }
}

fn sorted(v: &[TokenEntry]) -> Vec<(u64, &str)> {
    let mut s: Vec<(u64, &str)> = v.iter().map(|e| (e.token, e.node.as_str())).collect();
    s.sort_unstable();
    s
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// `3 s`, `4 min`, `2 h` since `ms`.
fn age(ms: u64) -> String {
    let s = now_ms().saturating_sub(ms) / 1000;
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        _ => format!("{} h", s / 3600),
    }
}

/// Reads the staged change, `None` when there is none.
pub fn load(path: &Path) -> anyhow::Result<Option<Staged>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read plan file {}", path.display()));
        }
    };
    let staged: Staged = serde_json::from_str(&text).with_context(|| {
        format!(
            "plan file {} is not a staged plan (drop it with qkv ring plan --clear)",
            path.display()
        )
    })?;
    if staged.version != VERSION {
        bail!(
            "plan file {} has version {}, this qkv reads {VERSION}; re-run qkv ring plan",
            path.display(),
            staged.version
        );
    }
    Ok(Some(staged))
}

/// Writes the staged change (temporary file, then rename).
pub fn save(path: &Path, staged: &Staged) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut text = serde_json::to_string_pretty(staged)?;
    text.push('\n');
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
}

/// Drops the staged change; true if there was one.
pub fn clear(path: &Path) -> anyhow::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot remove plan file {}", path.display())),
    }
}

/// `qkv ring plan` alone: the staged change, and whether the live ring is
/// still the one it was planned against.
pub async fn show(g: &Globals, path: &Path) -> anyhow::Result<ExitCode> {
    let Some(staged) = load(path)? else {
        if g.json {
            emit_json(&json!({"staged": null, "plan_file": path}))?;
        } else {
            emit(&format!(
                "Nothing staged ({}). qkv ring plan --add NAME or --remove NAME stages a change.\n",
                path.display()
            ))?;
        }
        return Ok(ExitCode::SUCCESS);
    };
    let current = super::apply::live_ring(g)
        .await
        .map(|live| staged.matches_ring(&live));
    if g.json {
        emit_json(&json!({
            "staged": staged,
            "plan_file": path,
            "ring_unchanged": current.as_ref().ok(),
        }))?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut out = staged.describe(path);
    match current {
        Ok(true) => writeln!(
            out,
            "The live ring is the one planned against: qkv ring apply carries it out."
        )?,
        Ok(false) => writeln!(
            out,
            "STALE: the live ring changed since this plan; re-run qkv ring plan."
        )?,
        Err(e) => writeln!(out, "(cannot check the live ring: {e})")?,
    }
    emit(&out)?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(token: u64, node: &str) -> TokenEntry {
        TokenEntry {
            token,
            node: node.into(),
        }
    }

    fn staged() -> Staged {
        Staged {
            version: VERSION,
            created_unix_ms: now_ms(),
            kind: Kind::Join,
            node: "n4".into(),
            tokens: vec![7, 9],
            rack: None,
            rf: 3,
            source: "cluster at http://x".into(),
            ring: vec![entry(1, "n1"), entry(5, "n2")],
            ranges_moving: 2,
            moved_fraction: 0.25,
            pairs: vec![StagedPair {
                source: "n1".into(),
                target: "n4".into(),
                ranges: 2,
                fraction: 0.1,
                estimate: Some(DataSize {
                    keys: 10,
                    bytes: 2048,
                }),
            }],
            estimate: Some(DataSize {
                keys: 10,
                bytes: 2048,
            }),
        }
    }

    #[test]
    fn a_staged_plan_round_trips_through_its_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("sub/plan.json");
        assert_eq!(load(&path).expect("load"), None);
        let s = staged();
        save(&path, &s).expect("save");
        assert_eq!(load(&path).expect("load"), Some(s.clone()));
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(text.contains("\"kind\": \"join\""), "{text}");
        assert!(clear(&path).expect("clear"));
        assert!(!clear(&path).expect("clear again"));
        assert_eq!(load(&path).expect("load"), None);
    }

    #[test]
    fn the_ring_check_ignores_order_but_not_owners() {
        let s = staged();
        assert!(s.matches_ring(&[entry(5, "n2"), entry(1, "n1")]));
        assert!(!s.matches_ring(&[entry(5, "n1"), entry(1, "n1")]));
        assert!(!s.matches_ring(&[entry(1, "n1")]));
        assert_eq!(s.targets(), vec!["n4".to_string()]);
        let d = s.describe(Path::new("p.json"));
        assert!(d.contains("join n4 with 2 tokens"), "{d}");
        assert!(d.contains("2048 (2.0 KiB)"), "{d}");
    }

    #[test]
    fn a_file_that_is_not_a_plan_is_a_readable_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("plan.json");
        std::fs::write(&path, "{}").expect("write");
        let e = load(&path).expect_err("not a plan").to_string();
        assert!(e.contains("--clear"), "{e}");
    }
}
