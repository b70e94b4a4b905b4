//! Command lines of `qkvd` nodes (pure: no I/O).
//!
//! [`NodeArgs`] turns a node's identity, addresses and extra flags into its
//! argv; [`Layout`] is the loopback cluster of `qkv local up`: nodes
//! `n1..nK` with HTTP on `base_http_port + i - 1` and gossip on
//! `base_listen_port + i - 1`, every listen address a seed, data in
//! `DIR/nI`, the log in `DIR/nI.log`, and `--default-n` `min(3, K)`.

use std::path::{Path, PathBuf};

use super::Error;
use super::process::Launch;

/// What one node's command line is built from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeArgs {
    /// `--id`.
    pub id: String,
    /// `--http`, `host:port`.
    pub http: String,
    /// `--listen`, `host:port`.
    pub listen: String,
    /// `--seeds`; left out when empty.
    pub seeds: Vec<String>,
    /// `--data-dir`.
    pub data_dir: PathBuf,
    /// Further flags, after the ones above.
    pub extra: Vec<String>,
}

impl NodeArgs {
    /// The arguments for qkvd (without the program name): `--id`,
    /// `--http`, `--listen`, `--seeds` (when any), `--data-dir`, then
    /// `extra`.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "--id".to_string(),
            self.id.clone(),
            "--http".into(),
            self.http.clone(),
            "--listen".into(),
            self.listen.clone(),
        ];
        if !self.seeds.is_empty() {
            args.push("--seeds".into());
            args.push(self.seeds.join(","));
        }
        args.push("--data-dir".into());
        args.push(self.data_dir.display().to_string());
        args.extend(self.extra.iter().cloned());
        args
    }
}

/// The cluster `qkv local up` starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Number of nodes, K.
    pub nodes: u16,
    /// HTTP port of n1.
    pub base_http_port: u16,
    /// Gossip/internode port of n1.
    pub base_listen_port: u16,
    /// `--sync` for every node, when given.
    pub sync: Option<String>,
    /// Extra flags for every node, last on the line.
    pub extra: Vec<String>,
    /// HTTPS and internode TLS from the certificates of
    /// [`super::tls::generate`] under this directory.
    pub tls: Option<PathBuf>,
}

impl Layout {
    /// The K nodes' launches: binary `bin`, files under `dir`, each log
    /// headed `=== {header}: ...` at every start.
    pub fn launches(&self, dir: &Path, bin: &Path, header: &str) -> Result<Vec<Launch>, Error> {
        let k = self.nodes;
        let port = |base: u16, i: u16| {
            base.checked_add(i)
                .ok_or_else(|| Error::Ports(format!("port {base} + {i} is beyond 65535")))
        };
        let listens: Vec<String> = (0..k)
            .map(|i| Ok(format!("127.0.0.1:{}", port(self.base_listen_port, i)?)))
            .collect::<Result<_, Error>>()?;
        let default_n = k.min(3);
        (0..k)
            .map(|i| {
                let id = format!("n{}", i + 1);
                let mut extra = vec!["--default-n".to_string(), default_n.to_string()];
                if let Some(sync) = &self.sync {
                    extra.extend(["--sync".to_string(), sync.clone()]);
                }
                if let Some(tls) = &self.tls {
                    extra.extend(super::tls::node_flags(tls, &id));
                }
                extra.extend(self.extra.iter().cloned());
                let node = NodeArgs {
                    id: id.clone(),
                    http: format!("127.0.0.1:{}", port(self.base_http_port, i)?),
                    listen: listens[usize::from(i)].clone(),
                    seeds: listens.clone(),
                    data_dir: dir.join(&id),
                    extra,
                };
                Ok(Launch::new(bin, &node, dir.join(format!("{id}.log"))).header(header))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn layout(k: u16) -> Layout {
        Layout {
            nodes: k,
            base_http_port: 8001,
            base_listen_port: 7001,
            sync: None,
            extra: vec![],
            tls: None,
        }
    }

    fn plan(l: &Layout) -> Vec<Launch> {
        l.launches(Path::new("/tmp/c"), Path::new("/bin/qkvd"), "t")
            .expect("layout fits")
    }

    #[test]
    fn three_nodes_get_consecutive_ports_and_every_seed() {
        let specs = plan(&layout(3));
        assert_eq!(specs.len(), 3);
        let n2 = &specs[1];
        assert_eq!(n2.id, "n2");
        assert_eq!(n2.http, "127.0.0.1:8002");
        assert_eq!(n2.data_dir, PathBuf::from("/tmp/c/n2"));
        assert_eq!(n2.log, PathBuf::from("/tmp/c/n2.log"));
        assert_eq!(
            n2.args,
            [
                "--id",
                "n2",
                "--http",
                "127.0.0.1:8002",
                "--listen",
                "127.0.0.1:7002",
                "--seeds",
                "127.0.0.1:7001,127.0.0.1:7002,127.0.0.1:7003",
                "--data-dir",
                "/tmp/c/n2",
                "--default-n",
                "3"
            ]
        );
    }

    #[test]
    fn default_n_is_capped_by_the_node_count() {
        for (k, n) in [(1, "1"), (2, "2"), (3, "3"), (5, "3")] {
            let specs = plan(&layout(k));
            let i = specs[0]
                .args
                .iter()
                .position(|a| a == "--default-n")
                .expect("--default-n is passed");
            assert_eq!(specs[0].args[i + 1], n, "k={k}");
        }
    }

    #[test]
    fn sync_and_extra_args_are_passed_through_last() {
        let mut l = layout(1);
        l.sync = Some("always".into());
        l.extra = vec!["--fault-injection".into()];
        let s = &plan(&l)[0];
        assert!(s.args.ends_with(&[
            "--sync".to_string(),
            "always".to_string(),
            "--fault-injection".to_string()
        ]));
    }

    #[test]
    fn ports_beyond_65535_are_refused() {
        for (http, listen) in [(65535, 7001), (8001, 65534)] {
            let mut l = layout(3);
            l.base_http_port = http;
            l.base_listen_port = listen;
            let err = l
                .launches(Path::new("d"), Path::new("q"), "t")
                .expect_err("beyond 65535");
            assert!(err.to_string().contains("beyond 65535"), "{err}");
        }
    }

    #[test]
    fn node_args_leave_out_seeds_when_there_are_none() {
        let a = NodeArgs {
            id: "n1".into(),
            http: "127.0.0.1:1".into(),
            listen: "127.0.0.1:2".into(),
            seeds: vec![],
            data_dir: "d/n1".into(),
            extra: vec!["--sync".into(), "always".into()],
        };
        assert_eq!(
            a.to_args(),
            [
                "--id",
                "n1",
                "--http",
                "127.0.0.1:1",
                "--listen",
                "127.0.0.1:2",
                "--data-dir",
                "d/n1",
                "--sync",
                "always"
            ]
        );
    }

    proptest! {
        #[test]
        fn every_layout_node_has_its_own_ports_and_the_same_seeds(
            k in 1u16..40,
            http in 1024u16..60000,
            listen in 1024u16..60000,
        ) {
            let l = Layout { nodes: k, base_http_port: http, base_listen_port: listen, sync: None, extra: vec![], tls: None };
            let specs = plan(&l);
            prop_assert_eq!(specs.len(), usize::from(k));
            let flag = |s: &Launch, name: &str| {
                let at = s.args.iter().position(|a| a == name).expect("flag present");
                s.args[at + 1].clone()
            };
            let seeds = flag(&specs[0], "--seeds");
            let mut addrs = std::collections::BTreeSet::new();
            for (i, s) in specs.iter().enumerate() {
                let flag = |name: &str| flag(s, name);
                prop_assert_eq!(flag("--id"), format!("n{}", i + 1));
                prop_assert_eq!(flag("--http"), s.http.clone());
                prop_assert_eq!(flag("--seeds").split(',').count(), usize::from(k));
                prop_assert_eq!(&flag("--seeds"), &seeds);
                prop_assert!(flag("--seeds").split(',').any(|a| a == flag("--listen")));
                prop_assert!(addrs.insert(("http", flag("--http"))));
                prop_assert!(addrs.insert(("listen", flag("--listen"))));
            }
        }

        #[test]
        fn node_args_keep_every_flag_value_pair(
            id in "[a-z0-9-]{1,8}",
            seeds in proptest::collection::vec("[0-9.:]{1,12}", 0..4),
            extra in proptest::collection::vec("[ -~]{0,12}", 0..6),
        ) {
            let a = NodeArgs {
                id: id.clone(),
                http: "h:1".into(),
                listen: "l:2".into(),
                seeds: seeds.clone(),
                data_dir: "d".into(),
                extra: extra.clone(),
            };
            let args = a.to_args();
            prop_assert_eq!(&args[..2], &["--id".to_string(), id][..]);
            prop_assert!(args.ends_with(&extra));
            let own = &args[..args.len() - extra.len()];
            prop_assert_eq!(own.contains(&"--seeds".to_string()), !seeds.is_empty());
            prop_assert_eq!(args.len(), 8 + if seeds.is_empty() { 0 } else { 2 } + extra.len());
        }
    }
}
