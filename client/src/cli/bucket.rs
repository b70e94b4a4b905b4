//! `qkv bucket get NAME` and `qkv bucket set NAME [--n ..] [--r ..] ...`.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use quorumkv_client::{BucketProps, BucketPropsUpdate, Conflicts, Consistency, ReadRepair};
use serde_json::Value;

use super::Globals;
use super::output::{print_json, table};

/// `qkv bucket ...`.
#[derive(Debug, Subcommand)]
pub enum BucketCommand {
    /// Show a bucket's properties.
    Get {
        /// Bucket name.
        name: String,
    },
    /// Change some properties; the others keep their value.
    Set(SetArgs),
}

/// Arguments of `qkv bucket set`.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// Bucket name (`[A-Za-z0-9_-]{1,64}`); created if new.
    pub name: String,
    /// Replicas per key (fixed once the bucket holds data).
    #[arg(long)]
    pub n: Option<u32>,
    /// Default read consistency.
    #[arg(long)]
    pub r: Option<Consistency>,
    /// Default write consistency.
    #[arg(long)]
    pub w: Option<Consistency>,
    /// Conflict resolution: siblings or lww.
    #[arg(long)]
    pub conflicts: Option<Conflicts>,
    /// Dynamo's sloppy quorum: true or false.
    #[arg(long)]
    pub sloppy_quorum: Option<bool>,
    /// Read repair: blocking, async or off.
    #[arg(long)]
    pub read_repair: Option<ReadRepair>,
    /// When a read also asks a spare replica: auto, off, or NNms.
    #[arg(long, value_name = "auto|off|NNms")]
    pub speculative_retry: Option<String>,
}

impl SetArgs {
    fn update(&self) -> BucketPropsUpdate {
        BucketPropsUpdate {
            n: self.n,
            r: self.r,
            w: self.w,
            conflicts: self.conflicts.clone(),
            sloppy_quorum: self.sloppy_quorum,
            read_repair: self.read_repair.clone(),
            speculative_retry: self.speculative_retry.clone(),
        }
    }
}

/// Runs a `bucket` subcommand.
pub async fn run(g: &Globals, cmd: BucketCommand) -> anyhow::Result<ExitCode> {
    let client = g.client()?;
    let props = match cmd {
        BucketCommand::Get { name } => client.bucket_get(&name).await?,
        BucketCommand::Set(a) => {
            let update = a.update();
            if update.is_empty() {
                bail!(
                    "nothing to set: give at least one of --n, --r, --w, --conflicts, --sloppy-quorum, --read-repair"
                );
            }
            client.bucket_set(&a.name, &update).await?
        }
    };
    if g.json {
        print_json(&serde_json::to_value(&props)?)?;
    } else {
        print!("{}", props_table(&props));
    }
    Ok(ExitCode::SUCCESS)
}

/// Properties as a two-column table, unknown ones included.
fn props_table(p: &BucketProps) -> String {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let mut rows = vec![
        vec!["n".into(), opt(p.n.map(|n| n.to_string()))],
        vec!["r".into(), opt(p.r.map(|c| c.to_string()))],
        vec!["w".into(), opt(p.w.map(|c| c.to_string()))],
        vec![
            "conflicts".into(),
            opt(p.conflicts.as_ref().map(|c| c.to_string())),
        ],
        vec![
            "sloppy_quorum".into(),
            opt(p.sloppy_quorum.map(|b| b.to_string())),
        ],
        vec![
            "read_repair".into(),
            opt(p.read_repair.as_ref().map(|c| c.to_string())),
        ],
    ];
    // Shown only when set, as the node shows it.
    if let Some(sr) = &p.speculative_retry {
        rows.push(vec!["speculative_retry".into(), sr.clone()]);
    }
    for (k, v) in &p.extra {
        let v = match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        rows.push(vec![k.clone(), v]);
    }
    table(&["PROPERTY", "VALUE"], &rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn props_table_lists_known_then_unknown_properties() {
        let p: BucketProps = serde_json::from_str(
            r#"{"n":3,"r":"quorum","w":"2","conflicts":"siblings","sloppy_quorum":false,"read_repair":"async","ttl":"1h"}"#,
        )
        .unwrap();
        let t = props_table(&p);
        assert!(t.contains("w              2\n"), "{t}");
        assert!(t.ends_with("ttl            1h\n"), "{t}");
    }
}
