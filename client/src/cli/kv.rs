//! `qkv get`, `qkv put`, `qkv delete`.
//!
//! `get` prints the value raw (exact bytes, no newline) so `qkv get k > f`
//! round-trips any file. Siblings are never collapsed: `get` prints them as
//! a table (or JSON) and exits with 3, so scripts notice the conflict.
//! A context can be given inline (`--context TOKEN`) or from a file
//! (`--context @FILE`, e.g. one written by `get --context-out FILE`).

use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Args;
use quorumkv_client::{Consistency, Context, Fetched, ReadOptions, WriteOptions};
use serde_json::json;

use super::output::{preview, print_json, print_raw, siblings_json, table};
use super::{EXIT_FAILED, EXIT_SIBLINGS, Globals};

/// Arguments of `qkv get`.
#[derive(Debug, Args)]
pub struct GetArgs {
    /// Bucket.
    #[arg(long, short, default_value = "default")]
    pub bucket: String,
    /// Key (UTF-8 text; sent percent-encoded as one path segment).
    pub key: String,
    /// Read consistency: one, two, three, quorum, all or a count.
    #[arg(long)]
    pub r: Option<Consistency>,
    /// The node's quorum deadline, in milliseconds.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
    /// Also write the causal context to this file (for `put --context @FILE`).
    #[arg(long)]
    pub context_out: Option<PathBuf>,
}

/// Arguments of `qkv put`.
#[derive(Debug, Args)]
pub struct PutArgs {
    /// Bucket.
    #[arg(long, short, default_value = "default")]
    pub bucket: String,
    /// Key.
    pub key: String,
    /// The value. Omitted or `-`: read from stdin.
    #[arg(conflicts_with = "file")]
    pub value: Option<String>,
    /// Read the value from this file.
    #[arg(long, short)]
    pub file: Option<PathBuf>,
    /// Content type stored with the value.
    #[arg(long, short = 't', default_value = "application/octet-stream")]
    pub content_type: String,
    /// Causal context from an earlier read (`@FILE` reads it from a file).
    #[arg(long)]
    pub context: Option<String>,
    /// Write consistency: one, two, three, quorum, all, any or a count.
    #[arg(long)]
    pub w: Option<Consistency>,
    /// The node's quorum deadline, in milliseconds.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
}

/// Arguments of `qkv delete`.
#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Bucket.
    #[arg(long, short, default_value = "default")]
    pub bucket: String,
    /// Key.
    pub key: String,
    /// Causal context from an earlier read (`@FILE` reads it from a file).
    #[arg(long)]
    pub context: Option<String>,
    /// Write consistency.
    #[arg(long)]
    pub w: Option<Consistency>,
    /// The node's quorum deadline, in milliseconds.
    #[arg(long)]
    pub timeout_ms: Option<u64>,
}

/// `TOKEN` as is, `@FILE` from the file (trimmed).
fn load_context(arg: Option<&str>) -> anyhow::Result<Option<Context>> {
    let Some(arg) = arg else { return Ok(None) };
    let token = match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the context file {path}"))?
            .trim()
            .to_string(),
        None => arg.trim().to_string(),
    };
    if token.is_empty() {
        bail!("the context is empty");
    }
    Ok(Some(Context(token)))
}

/// The value of `put`: the argument, the file, or stdin.
fn load_value(args: &PutArgs) -> anyhow::Result<Vec<u8>> {
    if let Some(path) = &args.file {
        return std::fs::read(path).with_context(|| format!("cannot read {}", path.display()));
    }
    match args.value.as_deref() {
        Some("-") | None => {
            let mut buf = Vec::new();
            std::io::stdin()
                .lock()
                .read_to_end(&mut buf)
                .context("cannot read the value from stdin")?;
            Ok(buf)
        }
        Some(v) => Ok(v.as_bytes().to_vec()),
    }
}

/// `qkv get`.
pub async fn get(g: &Globals, a: GetArgs) -> anyhow::Result<ExitCode> {
    let client = g.client()?;
    let opts = ReadOptions {
        r: a.r,
        timeout_ms: a.timeout_ms,
    };
    let fetched = client.get(&a.bucket, a.key.as_bytes(), &opts).await?;
    if let (Some(path), Some(ctx)) = (&a.context_out, fetched.context()) {
        std::fs::write(path, ctx.as_str())
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let v = match fetched {
        Fetched::NotFound { .. } => {
            eprintln!(
                "Error: not_found: no value for key {:?} in bucket {:?}",
                a.key, a.bucket
            );
            return Ok(ExitCode::from(EXIT_FAILED));
        }
        Fetched::Found(v) => v,
    };
    let code = if v.is_conflict() {
        ExitCode::from(EXIT_SIBLINGS)
    } else {
        ExitCode::SUCCESS
    };
    if g.json {
        print_json(&json!({"context": v.context, "values": siblings_json(&v.values)}))?;
    } else if let Some(one) = v.single() {
        print_raw(&one.value)?;
    } else {
        let rows: Vec<Vec<String>> = v
            .values
            .iter()
            .enumerate()
            .map(|(i, s)| {
                vec![
                    (i + 1).to_string(),
                    s.content_type.clone(),
                    s.value.len().to_string(),
                    if s.deleted {
                        "(deleted)".to_string()
                    } else {
                        preview(&s.value, 60)
                    },
                ]
            })
            .collect();
        println!(
            "{} siblings (concurrent writes) for key {:?}; write the merged value with --context {}",
            v.values.len(),
            a.key,
            v.context
        );
        print!("{}", table(&["#", "CONTENT-TYPE", "BYTES", "VALUE"], &rows));
    }
    Ok(code)
}

/// `qkv put`.
pub async fn put(g: &Globals, a: PutArgs) -> anyhow::Result<ExitCode> {
    let client = g.client()?;
    let value = load_value(&a)?;
    let context = load_context(a.context.as_deref())?;
    let opts = WriteOptions {
        w: a.w,
        timeout_ms: a.timeout_ms,
    };
    let ctx = client
        .put(
            &a.bucket,
            a.key.as_bytes(),
            value,
            Some(&a.content_type),
            context.as_ref(),
            &opts,
        )
        .await?;
    if g.json {
        print_json(&json!({"context": ctx}))?;
    } else {
        println!("{ctx}");
    }
    Ok(ExitCode::SUCCESS)
}

/// `qkv delete`.
pub async fn delete(g: &Globals, a: DeleteArgs) -> anyhow::Result<ExitCode> {
    let client = g.client()?;
    let context = load_context(a.context.as_deref())?;
    let opts = WriteOptions {
        w: a.w,
        timeout_ms: a.timeout_ms,
    };
    client
        .delete(&a.bucket, a.key.as_bytes(), context.as_ref(), &opts)
        .await?;
    if g.json {
        print_json(&json!({"deleted": true}))?;
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_come_inline_or_from_a_file() {
        assert_eq!(load_context(None).unwrap(), None);
        assert_eq!(
            load_context(Some(" abc ")).unwrap(),
            Some(Context("abc".into()))
        );
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ctx");
        std::fs::write(&p, "tok\n").unwrap();
        let arg = format!("@{}", p.display());
        assert_eq!(
            load_context(Some(&arg)).unwrap(),
            Some(Context("tok".into()))
        );
        assert!(load_context(Some("")).is_err());
    }

    #[test]
    fn values_come_from_the_argument_or_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("v");
        std::fs::write(&p, [0u8, 1, 2]).unwrap();
        let mut a = PutArgs {
            bucket: "default".into(),
            key: "k".into(),
            value: Some("hello".into()),
            file: None,
            content_type: "text/plain".into(),
            context: None,
            w: None,
            timeout_ms: None,
        };
        assert_eq!(load_value(&a).unwrap(), b"hello");
        a.value = None;
        a.file = Some(p);
        assert_eq!(load_value(&a).unwrap(), vec![0, 1, 2]);
    }
}
