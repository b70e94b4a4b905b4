//! `qkv status`: the members table.

use std::process::ExitCode;

use quorumkv_client::Member;

use super::Globals;
use super::output::{print_json, table};

/// Prints the cluster's members as the first reachable node sees them.
pub async fn run(g: &Globals) -> anyhow::Result<ExitCode> {
    let client = g.client()?;
    let members = client.members().await?;
    if g.json {
        print_json(&serde_json::to_value(&members)?)?;
    } else {
        print!("{}", members_table(&members));
    }
    Ok(ExitCode::SUCCESS)
}

/// The aligned table of `qkv status`, one row per member in id order.
pub fn members_table(members: &[Member]) -> String {
    let mut sorted: Vec<&Member> = members.iter().collect();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    let dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let rows: Vec<Vec<String>> = sorted
        .iter()
        .map(|m| {
            vec![
                m.id.clone(),
                dash(&m.http_addr),
                dash(&m.gossip_addr),
                dash(&m.status),
                dash(&m.state),
                m.phi.map_or("-".into(), |p| format!("{p:.2}")),
                m.generation.to_string(),
                m.heartbeat.to_string(),
                m.tokens.len().to_string(),
                m.hints_pending.map_or("-".into(), |h| h.to_string()),
            ]
        })
        .collect();
    table(
        &[
            "ID",
            "HTTP",
            "GOSSIP",
            "STATUS",
            "STATE",
            "PHI",
            "GENERATION",
            "HEARTBEAT",
            "TOKENS",
            "HINTS",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn members_print_sorted_with_token_counts() {
        let ms: Vec<Member> = serde_json::from_str(
            r#"[{"id":"n2","http_addr":"127.0.0.1:8002","status":"down","phi":9.5,"tokens":[1,2]},
                {"id":"n1","http_addr":"127.0.0.1:8001","gossip_addr":"127.0.0.1:7001","status":"up",
                 "state":"normal","phi":0.25,"generation":5,"heartbeat":9,"tokens":[3],"hints_pending":7}]"#,
        )
        .unwrap();
        let t = members_table(&ms);
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[0].starts_with("ID  HTTP"));
        assert!(lines[1].starts_with("n1  127.0.0.1:8001  127.0.0.1:7001  up"));
        let cols = |l: &str| l.split_whitespace().map(str::to_string).collect::<Vec<_>>();
        assert_eq!(cols(lines[1])[5..], ["0.25", "5", "9", "1", "7"], "{t}");
        assert_eq!(
            cols(lines[2])[2..],
            ["-", "down", "-", "9.50", "0", "0", "2", "-"],
            "{t}"
        );
    }
}
