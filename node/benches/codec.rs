//! Version-set coding: the hand-written codec (`Dvvs::encode`/`decode`)
//! against `rmp_serde` over the serde derive, which write the same bytes.
//! Every read decodes one set and every write decodes and encodes one, so
//! this is per-request CPU; `docs/PERFORMANCE.md` quotes the figures.
//!
//! Run: `cargo bench -p quorumkv-node --bench codec -- --warm-up-time 1 --measurement-time 3`

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use quorumkv_node::version::{Context, Dvvs, Timestamp, Value};
use serde::Deserialize;

/// A set as the benchmark workload leaves it: `siblings` concurrent
/// 100-byte versions written through one replica.
fn set(siblings: u64) -> Dvvs {
    let mut d = Dvvs::new();
    for k in 1..=siblings {
        let v = Value::live(vec![7; 100], "application/octet-stream", Timestamp(k << 20));
        d.update(&Context::new(), "n1a2b3c4d5e6f708", v)
            .expect("a fresh dot");
    }
    d
}

fn serde_decode(bytes: &[u8]) -> Dvvs {
    let mut de = rmp_serde::Deserializer::new(&bytes[1..]);
    Dvvs::deserialize(&mut de).unwrap_or_default()
}

fn serde_encode(d: &Dvvs) -> Vec<u8> {
    let mut buf = vec![1];
    rmp_serde::encode::write(&mut buf, d).unwrap_or_default();
    buf
}

fn coding(c: &mut Criterion) {
    for siblings in [1, 3] {
        let d = set(siblings);
        let bytes = d.encode();
        assert_eq!(bytes, serde_encode(&d), "the codec writes the serde form");
        assert_eq!(serde_decode(&bytes), d);
        let mut g = c.benchmark_group(format!("dvvs_{siblings}_version"));
        g.bench_function("decode/codec", |b| {
            b.iter(|| Dvvs::decode(black_box(&bytes)))
        });
        g.bench_function("decode/rmp_serde", |b| {
            b.iter(|| serde_decode(black_box(&bytes)))
        });
        g.bench_function("encode/codec", |b| b.iter(|| black_box(&d).encode()));
        g.bench_function("encode/rmp_serde", |b| {
            b.iter(|| serde_encode(black_box(&d)))
        });
        g.finish();
    }
}

criterion_group!(benches, coding);
criterion_main!(benches);
