//! Printing helpers shared by the commands: aligned tables, JSON, and a
//! readable one-line rendering of binary values.

use std::io::Write;

use base64::Engine as _;
use quorumkv_client::Sibling;
use serde_json::{Value, json};

/// Formats rows under a header, each column padded to its widest cell and
/// separated by two spaces; no trailing spaces.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            if i + 1 < row.len() {
                let pad = widths.get(i).copied().unwrap_or(0);
                line.extend(std::iter::repeat_n(
                    ' ',
                    pad.saturating_sub(cell.chars().count()),
                ));
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// Prints `v` as pretty JSON on stdout.
pub fn print_json(v: &Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    out.write_all(b"\n")?;
    Ok(())
}

/// Writes bytes to stdout exactly, with no newline added.
pub fn print_raw(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes)?;
    out.flush()?;
    Ok(())
}

/// The wire JSON of a sibling list: `[{"value_base64","content_type"}]`
/// (`"deleted": true` on a concurrent deletion).
pub fn siblings_json(values: &[Sibling]) -> Value {
    Value::Array(
        values
            .iter()
            .map(|s| {
                let mut v = json!({
                    "value_base64": base64::engine::general_purpose::STANDARD.encode(&s.value),
                    "content_type": s.content_type,
                });
                if s.deleted {
                    v["deleted"] = json!(true);
                }
                v
            })
            .collect(),
    )
}

/// A value shown in one table cell: escaped text when it is UTF-8, hex
/// otherwise, shortened to about `max` characters.
pub fn preview(value: &[u8], max: usize) -> String {
    let full = match std::str::from_utf8(value) {
        Ok(s) => s.escape_debug().to_string(),
        Err(_) => {
            let hex: String = value.iter().map(|b| format!("{b:02x}")).collect();
            format!("0x{hex}")
        }
    };
    if full.chars().count() > max {
        let mut s: String = full.chars().take(max).collect();
        s.push('…');
        s
    } else {
        full
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_without_trailing_space() {
        let t = table(
            &["ID", "HTTP"],
            &[
                vec!["n1".into(), "127.0.0.1:8001".into()],
                vec!["node-22".into(), "x".into()],
            ],
        );
        assert_eq!(t, "ID       HTTP\nn1       127.0.0.1:8001\nnode-22  x\n");
    }

    #[test]
    fn previews_text_and_binary() {
        assert_eq!(preview(b"hi\n", 10), "hi\\n");
        assert_eq!(preview(&[0xff, 0x00], 10), "0xff00");
        assert_eq!(preview(b"abcdefgh", 3), "abc…");
    }
}
