//! Prints the gossip layer's figures from the simulated network:
//! convergence rounds, false convictions, time to convict, bytes per round.
//!
//! ```text
//! cargo run -p quorumkv-gossip --release --example simulate [runs]
//! ```
//!
//! `runs` (default 50) is the number of seeded runs per cluster size; each
//! builds a fresh converged cluster. All runs are deterministic.

use std::time::{Duration, Instant};

use quorumkv_gossip::{
    AppState,
    sim::{Sim, SimConfig},
};

fn main() {
    let runs: usize = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let interval = SimConfig::new(0).gossip.interval;
    println!("# quorumkv gossip simulation");
    println!(
        "network: LAN delay 1-10 ms, rounds at random phases, interval {interval:?}, fanout 1, 3 seeds, 16 tokens/node"
    );
    println!();
    convergence(runs);
    println!();
    failure_detection();
    println!();
    bandwidth();
}

/// Builds a seeded simulation config.
type MakeConfig<'a> = &'a dyn Fn(u64) -> SimConfig;

/// Rounds until every node holds (a) a new node's state, from the moment
/// it starts knowing only the seeds, and (b) a state change of a random
/// existing node, from the moment of the change.
fn convergence(runs: usize) {
    println!("## rounds until every node knows a change (elapsed simulated time / interval)");
    println!(
        "{:>5} | {:>9} {:>9} {:>9} | {:>9} {:>9} {:>9} | {:>8}",
        "n", "join mean", "join p99", "join max", "chg mean", "chg p99", "chg max", "wall"
    );
    let lan = |seed| SimConfig::new(seed);
    let wan = |seed| {
        let mut c = SimConfig::new(seed);
        c.net.loss = 0.05;
        c.net.min_delay = Duration::from_millis(20);
        c.net.max_delay = Duration::from_millis(200);
        c
    };
    let rows: [(&str, usize, usize, MakeConfig<'_>); 5] = [
        ("", 10, runs, &lan),
        ("", 100, runs, &lan),
        ("", 1000, runs, &lan),
        (" 5% loss, 20-200 ms", 100, runs, &wan),
        (" 5% loss, 20-200 ms", 1000, (runs / 5).max(3), &wan),
    ];
    for (label, n, runs, make) in rows {
        let started = Instant::now();
        let (mut join, mut change) = (Vec::new(), Vec::new());
        for run in 0..runs {
            let mut sim = Sim::converged(make(run as u64 * 7919 + n as u64), n, 2);
            let newcomer = sim.add_node_at(Duration::ZERO);
            let w = sim.watch(newcomer);
            join.push(
                sim.run_watch(w, Duration::from_secs(120))
                    .expect("join converges"),
            );
            let k = sim.random_alive(&[newcomer]).expect("a host");
            let node = sim.node_mut(k).expect("alive");
            node.set_local(AppState::Load(1 + run as u64))
                .expect("fits");
            let w = sim.watch(k);
            change.push(
                sim.run_watch(w, Duration::from_secs(120))
                    .expect("change converges"),
            );
        }
        let (j, c) = (Stats::of(&mut join), Stats::of(&mut change));
        println!(
            "{n:>5} | {:>9.2} {:>9.2} {:>9.2} | {:>9.2} {:>9.2} {:>9.2} | {:>7.0?}  {runs} runs{label}",
            j.mean,
            j.p99,
            j.max,
            c.mean,
            c.p99,
            c.max,
            started.elapsed()
        );
    }
    println!(
        "join: a new node knowing only the seeds starts; measured until all n+1 hold its full state."
    );
    println!(
        "chg: one node changes a state; measured until all hold it. p99 = 99th percentile over the runs."
    );
    println!("targets: p99 ≤ 8 rounds at n=100, ≤ 10 at n=1000 (push-pull ~ log3(n) + O(ln ln n))");
}

/// False convictions at 5% loss over 10 000 rounds, then the time every
/// live node takes to convict a killed one.
fn failure_detection() {
    println!("## failure detection (phi accrual, exponential model, threshold 8, 5% message loss)");
    for n in [20usize, 50] {
        let mut config = SimConfig::new(42 + n as u64);
        config.net.loss = 0.05;
        let threshold = config.gossip.failure_detector.threshold;
        let fd = config.gossip.failure_detector.clone();
        let mut sim = Sim::converged(config, n, 3);
        let started = Instant::now();
        sim.run_for(sim.interval() * 10_000);
        let false_convictions = sim.convictions.iter().filter(|c| c.is_false()).count();
        let victim = n / 2;
        let victim_id = sim.id(victim).clone();
        let means: Vec<f64> = sim
            .alive()
            .into_iter()
            .filter(|&h| h != victim)
            .filter_map(|h| {
                sim.node(h)?
                    .arrivals(&victim_id)
                    .map(|w| w.mean(&fd).as_secs_f64())
            })
            .collect();
        let mean_arrival = means.iter().sum::<f64>() / means.len() as f64;
        let killed_at = sim.now();
        sim.kill(victim);
        sim.run_for(Duration::from_secs(90));
        let mut times: Vec<f64> = sim
            .convictions
            .iter()
            .filter(|c| c.subject == victim && c.at >= killed_at)
            .map(|c| (c.at - killed_at).as_secs_f64())
            .collect();
        let convicted_by = times.len();
        let t = Stats::of(&mut times);
        println!(
            "n={n:>3}: 10000 rounds, {} messages, {} lost: false convictions = {false_convictions}; \
             killed node convicted by {convicted_by}/{} live nodes after {:.1} s mean, {:.1}-{:.1} s range ({:.1?} wall)",
            sim.sent,
            sim.dropped,
            n - 1,
            t.mean,
            t.min,
            t.max,
            started.elapsed()
        );
        println!(
            "        learned mean heartbeat inter-arrival {mean_arrival:.2} s → bound threshold·ln10·mean = {:.1} s of silence",
            threshold * std::f64::consts::LN_10 * mean_arrival
        );
    }
    println!(
        "conviction = 18.4 s of silence after the last heartbeat an observer saw (8·ln10·1 s, the mean floored at the interval),\n\
         plus the 0-3 s that heartbeat took to reach it by gossip, minus the part of a round it was already old."
    );
}

/// Steady-state bytes per node per round at n = 1000, with the real codec.
fn bandwidth() {
    println!("## bandwidth at n=1000 (MessagePack, steady state, 10 rounds)");
    let mut config = SimConfig::new(7);
    config.encode = true;
    let n = 1000;
    let mut sim = Sim::converged(config, n, 5);
    sim.reset_counters();
    let rounds = 10;
    sim.run_for(sim.interval() * rounds);
    let bytes: u64 = (0..n).map(|h| sim.bytes_sent(h)).sum();
    let msgs: u64 = (0..n).map(|h| sim.messages_sent(h)).sum();
    let per = bytes as f64 / (n as f64 * rounds as f64);
    let syn = sim
        .node(0)
        .map(|node| {
            let digests = node
                .members()
                .map(|m| quorumkv_gossip::Digest {
                    node: m.id.clone(),
                    generation: m.generation(),
                    version: m.state.max_version(),
                })
                .collect();
            quorumkv_gossip::Message::Syn {
                cluster: "sim".into(),
                digests,
            }
            .encode()
            .map_or(0, |b| b.len())
        })
        .unwrap_or(0);
    println!(
        "sent per node per round: {:.1} KB in {:.2} messages (SYN {:.1} KB = 1000 digests of ~{} B; largest message {:.1} KB)",
        per / 1000.0,
        msgs as f64 / (n as f64 * rounds as f64),
        syn as f64 / 1000.0,
        syn / n,
        sim.largest_message as f64 / 1000.0
    );
    println!(
        "why: every exchange carries one digest per node (Scuttlebutt), and every heartbeat changes every round,\n\
         so ACK/ACK2 carry ~one small heartbeat delta per node the other side is behind on. Full states\n\
         (tokens) move only when they change; deltas are capped at 1 MiB per message."
    );
}

struct Stats {
    mean: f64,
    p99: f64,
    min: f64,
    max: f64,
}

impl Stats {
    fn of(v: &mut [f64]) -> Stats {
        if v.is_empty() {
            return Stats {
                mean: f64::NAN,
                p99: f64::NAN,
                min: f64::NAN,
                max: f64::NAN,
            };
        }
        v.sort_by(f64::total_cmp);
        let idx = ((v.len() as f64 - 1.0) * 0.99).ceil() as usize;
        Stats {
            mean: v.iter().sum::<f64>() / v.len() as f64,
            p99: v[idx.min(v.len() - 1)],
            min: v[0],
            max: v[v.len() - 1],
        }
    }
}
