//! Loopback ports for nodes: [`free_port`] hands out fresh ones (the test
//! harness), [`check_free`] checks the fixed ones of a layout just before
//! starting (`qkv local up`). Either way another program can still take a
//! port between the check and the node's bind.

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};

use super::Error;

/// First port [`free_port`] hands out: below Linux's ephemeral range
/// (32768-60999), so that no outgoing connection of any client can be
/// holding a port between the moment we pick it and the moment the node
/// binds it (a node that lost that race would fail to start while
/// `/health` on its port answered for another node).
const PORT_BASE: u32 = 20_000;
const PORT_SPAN: u32 = 12_000;
static NEXT_PORT: AtomicU32 = AtomicU32::new(0);

/// The `n`-th candidate of the process with id `pid`: processes start
/// 20 ports apart (by pid), and each walks the span from there.
fn candidate(pid: u32, n: u32) -> u16 {
    let offset = (pid % 600) * 20;
    // PORT_BASE + PORT_SPAN - 1 < 65536, so the cast cannot truncate.
    (PORT_BASE + (offset + n % PORT_SPAN) % PORT_SPAN) as u16
}

/// A loopback port for a node: never handed out twice by this process,
/// spread by pid across processes, and bindable a moment ago.
pub fn free_port() -> Result<u16, Error> {
    for _ in 0..PORT_SPAN {
        let port = candidate(
            std::process::id(),
            NEXT_PORT.fetch_add(1, Ordering::Relaxed),
        );
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(Error::Ports(format!(
        "no free loopback port in {PORT_BASE}..{}",
        PORT_BASE + PORT_SPAN
    )))
}

/// Checks that every `(node id, address)` can be bound now.
pub fn check_free<'a>(addrs: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<(), Error> {
    for (id, addr) in addrs {
        if let Err(source) = TcpListener::bind(addr) {
            return Err(Error::PortTaken {
                addr: addr.to_string(),
                id: id.to_string(),
                source,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn free_ports_are_never_handed_out_twice() {
        let ports: Vec<u16> = (0..50).map(|_| free_port().expect("a free port")).collect();
        let distinct: std::collections::BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len());
    }

    #[test]
    fn a_bound_port_is_reported_taken_with_its_node() {
        let held = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = held.local_addr().expect("addr").to_string();
        let err = check_free([("n2", addr.as_str())]).expect_err("taken");
        assert!(
            matches!(&err, Error::PortTaken { id, .. } if id == "n2"),
            "{err}"
        );
        drop(held);
        check_free([("n2", addr.as_str())]).expect("free again");
    }

    proptest! {
        #[test]
        fn candidates_stay_below_the_ephemeral_range(pid in any::<u32>(), n in any::<u32>()) {
            let p = u32::from(candidate(pid, n));
            prop_assert!((PORT_BASE..PORT_BASE + PORT_SPAN).contains(&p));
        }

        #[test]
        fn one_process_walks_the_whole_span_before_repeating(pid in any::<u32>(), n in 0..PORT_SPAN) {
            prop_assert_ne!(candidate(pid, n), candidate(pid, (n + 1) % PORT_SPAN));
            prop_assert_eq!(candidate(pid, n), candidate(pid, n + PORT_SPAN));
        }
    }
}
