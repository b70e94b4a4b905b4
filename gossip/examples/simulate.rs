//! Prints convergence, failure detection and bandwidth figures from the
//! simulated network. Run with
//! `cargo run -p quorumkv-gossip --release --example simulate`.

use std::time::Duration;

use quorumkv_gossip::sim::{Sim, SimConfig};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).ceil() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let runs: usize = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(50);
    if args.get(2).is_some_and(|a| a == "prof") {
        let t = std::time::Instant::now();
        let mut sim = Sim::converged(SimConfig::new(1), 1000, 0);
        println!("build {:?}", t.elapsed());
        for _ in 0..6 {
            let t = std::time::Instant::now();
            sim.reset_counters();
            sim.run_for(Duration::from_secs(1));
            println!(
                "round {:?} msgs {} bytes/node {}",
                t.elapsed(),
                sim.sent,
                (0..1000).map(|h| sim.bytes_sent(h)).sum::<u64>() / 1000
            );
        }
        return;
    }
    for n in [10usize, 100, 1000] {
        let mut join = Vec::new();
        let mut change = Vec::new();
        let t0 = std::time::Instant::now();
        for run in 0..runs {
            let mut sim = Sim::converged(SimConfig::new(run as u64 * 7919 + n as u64), n, 3);
            let h = sim.add_node_at(Duration::ZERO);
            let w = sim.watch(h);
            join.push(
                sim.run_watch(w, Duration::from_secs(120))
                    .expect("join converges"),
            );
            sim.run_for(Duration::from_millis(300));
            let k = sim.random_alive(&[h]).expect("a host");
            sim.node_mut(k)
                .expect("alive")
                .set_local(quorumkv_gossip::AppState::Load(42))
                .expect("fits");
            let w = sim.watch(k);
            change.push(
                sim.run_watch(w, Duration::from_secs(120))
                    .expect("change converges"),
            );
        }
        for v in [&mut join, &mut change] {
            v.sort_by(|a, b| a.total_cmp(b));
        }
        let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
        println!(
            "n={n:5} runs={runs}: join mean {:.2} p99 {:.2} max {:.2} | change mean {:.2} p99 {:.2} max {:.2}  ({:.1?})",
            mean(&join),
            percentile(&join, 0.99),
            join[join.len() - 1],
            mean(&change),
            percentile(&change, 0.99),
            change[change.len() - 1],
            t0.elapsed()
        );
    }
}
