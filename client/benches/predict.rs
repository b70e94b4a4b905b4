//! Trials per second of the PBS predictor on one thread, sampling,
//! evaluating and sorting included: `qkv exp predict`'s cost per trial,
//! for the paper's LinkedIn SSD fit with N=3, R=W=1 under both models
//! (docs/EXPERIMENTS.md quotes the figures).
//!
//! Run: `cargo bench -p quorumkv-client --bench predict -- --warm-up-time 1 --measurement-time 5`
//! (criterion's `thrpt` is trials per second).

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use quorumkv_client::exp::predict::{Config, Model, QuorumkvModel, ReadCoordinator, predict};
use quorumkv_faults::Preset;

const TRIALS: u64 = 200_000;

fn trials(c: &mut Criterion) {
    let mut group = c.benchmark_group("predict");
    group.throughput(Throughput::Elements(TRIALS));
    group.sample_size(10);
    let quorumkv = Model::Quorumkv(QuorumkvModel {
        nodes: 3,
        speculate_ms: 100.0,
        local_delays: false,
        read_coordinator: ReadCoordinator::Any,
        hop_ms: 0.0,
        client_ms: 0.0,
        overshoot_ms: [0.0; 4],
    });
    for (name, model) in [("wars", Model::Wars), ("quorumkv", quorumkv)] {
        let cfg = Config {
            n: 3,
            rs: vec![1],
            ws: vec![1],
            delays: Preset::LnkdSsd.delays(),
            model,
            ts: vec![0.0, 1.0, 5.0, 10.0],
            ps: vec![0.999],
            max_k: 10,
            trials: TRIALS,
            seed: 7,
        };
        group.bench_function(format!("{name}/lnkd-ssd/n3-r1-w1/one-thread"), |b| {
            b.iter(|| black_box(predict(&cfg, 1)))
        });
    }
    group.finish();
}

criterion_group!(benches, trials);
criterion_main!(benches);
