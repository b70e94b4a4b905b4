//! Preference-list lookup (n = 3) on 64 nodes × 16 vnodes and 1000 nodes ×
//! 256 vnodes; the target is ≤ 1 µs for both (docs/RING.md); the request path uses
//! `preference_into` (indices, no allocation), the CLI and admin routes the
//! `String` convenience.
//!
//! Run: `cargo bench -p quorumkv-ring --bench lookup -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use quorumkv_ring::{Ring, Token, random_for};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn ring(nodes: usize, vnodes: usize, racks: usize) -> Ring {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let mut ring = Ring::new();
    for k in 0..nodes {
        let name = format!("node-{k:04}");
        let tokens = random_for(&ring, vnodes, &mut rng);
        ring.insert_node(&name, &tokens);
        if racks > 1 {
            ring.set_rack(&name, Some(&format!("rack-{}", k % racks)));
        }
    }
    ring
}

fn lookups(c: &mut Criterion) {
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    // Many distinct keys, so the binary search does not stay in cache.
    let keys: Vec<Token> = (0..4096).map(|_| rng.random()).collect();
    let mut group = c.benchmark_group("preference_list_n3");
    for (nodes, vnodes, racks) in [(64, 16, 1), (1000, 256, 1), (64, 16, 3), (1000, 256, 3)] {
        let r = ring(nodes, vnodes, racks);
        let label = format!("{nodes}x{vnodes}{}", if racks > 1 { "_3racks" } else { "" });
        let mut out = Vec::with_capacity(3);
        let mut i = 0usize;
        group.bench_function(BenchmarkId::new("indices", &label), |b| {
            b.iter(|| {
                i = (i + 1) & 4095;
                r.preference_into(black_box(keys[i]), 3, &mut out);
                black_box(out.len())
            })
        });
        group.bench_function(BenchmarkId::new("strings", &label), |b| {
            b.iter(|| {
                i = (i + 1) & 4095;
                black_box(r.preference_list(black_box(keys[i]), 3))
            })
        });
    }
    group.finish();
}

criterion_group!(benches, lookups);
criterion_main!(benches);
