//! Fuzz-style properties of every decoder that reads bytes from another
//! process: the handshake (anyone who connects), the internode envelope
//! and the gossip message (an authenticated peer, or a bug in one), a
//! version set read from a peer or the disk, and a client's causal-context
//! token. Whatever the bytes: no panic, and no more memory than the frame
//! limit allows, measured with the test allocator ([`crate::alloc_probe`]).

use proptest::prelude::*;
use quorumkv_gossip::Message;

use super::Identity;
use super::handshake;
use super::{Config, Envelope, MadeMs};
use crate::alloc_probe::peak_bytes;
use crate::proto::{self, Encoded};
use crate::version::{Context, Dvvs};

/// The internode frame limit: what one frame may make a node allocate.
fn frame_limit() -> usize {
    Config::new(Identity {
        node: "n".into(),
        addr: "127.0.0.1:1".into(),
        cluster: "c".into(),
        secret: None,
    })
    .max_frame
}

/// Every decoder on the same bytes; the peak allocation of the worst.
fn decode_all(bytes: &[u8]) -> usize {
    let mut worst = 0;
    let mut probe = |f: &dyn Fn()| worst = worst.max(peak_bytes(f).1);
    probe(&|| drop(Envelope::decode(bytes)));
    probe(&|| drop(handshake::parse(bytes)));
    probe(&|| drop(Message::decode(bytes, usize::MAX)));
    probe(&|| drop(Dvvs::decode(bytes)));
    probe(&|| drop(Context::decode(&String::from_utf8_lossy(bytes))));
    worst
}

/// Valid frames to start mutations from.
fn samples() -> Vec<Vec<u8>> {
    let envs = [
        Envelope::Request {
            id: 7,
            timeout_ms: 1000,
            body: proto::Request::Replicate {
                bucket: "default".into(),
                key: b"k".to_vec(),
                object: Encoded::from(vec![1, 2, 3, 4]),
                hint_for: Some("n2".into()),
            },
            made_ms: MadeMs(1),
        },
        Envelope::Response {
            id: 7,
            result: Ok(proto::Response::Pong),
        },
        Envelope::Gossip(Message::Syn {
            cluster: "c".into(),
            digests: vec![],
        }),
    ];
    envs.iter()
        .map(|e| rmp_serde::to_vec(e).expect("encode"))
        .collect()
}

/// MessagePack headers that claim far more than the frame holds: a
/// 2^32-element array or map, a 4 GiB string or blob.
const LIARS: [&[u8]; 5] = [
    &[0xdd, 0xff, 0xff, 0xff, 0xff, 0x01],
    &[0xdf, 0xff, 0xff, 0xff, 0xff, 0x01, 0x01],
    &[0xdb, 0xff, 0xff, 0xff, 0xff, b'a'],
    &[0xc6, 0xff, 0xff, 0xff, 0xff, 0x00],
    &[
        0x81, 0xa7, b'R', b'e', b'q', b'u', b'e', b's', b't', 0xdd, 0xff, 0xff, 0xff, 0xff,
    ],
];

#[test]
fn headers_that_claim_gigabytes_allocate_no_more_than_a_frame() {
    let limit = frame_limit();
    for liar in LIARS {
        let mut framed = b"qkvn".to_vec();
        framed.extend_from_slice(&super::PROTOCOL_VERSION.to_be_bytes());
        framed.extend_from_slice(liar);
        for bytes in [liar, &framed[..]] {
            let peak = decode_all(bytes);
            assert!(peak <= limit, "{bytes:02x?}: {peak} bytes > {limit}");
        }
    }
}

/// A version set (a stored record, or one a peer sent) whose header
/// claims 16 M entries, or 16 M versions in its one entry: its decoder
/// (version/dvvset/codec.rs, written by hand over rmp) must size what it
/// allocates by the bytes present, not by what a header claims.
#[test]
fn version_sets_that_claim_millions_of_items_allocate_no_more_than_a_frame() {
    let encoded = Dvvs::new().encode();
    // The format byte, then the set's one-field array.
    let head = &encoded[..2];
    assert_eq!(head[1], 0x91, "{encoded:02x?}");
    let many: &[u8] = &[0xdd, 0x01, 0x00, 0x00, 0x00];
    let entries = [head, many].concat();
    let versions = [head, &[0x91, 0x93, 0xa1, b'a', 0x01], many].concat();
    for bytes in [entries, versions] {
        assert!(Dvvs::decode(&bytes).is_err(), "{bytes:02x?}");
        let peak = decode_all(&bytes);
        assert!(peak <= frame_limit(), "{bytes:02x?}: {peak} bytes");
    }
}

#[test]
fn the_probe_sees_an_allocation() {
    // The bound above means something only if the probe counts.
    let (_, peak) = peak_bytes(|| drop(std::hint::black_box(vec![0u8; 1 << 20])));
    assert!(peak >= 1 << 20, "{peak}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn arbitrary_bytes_decode_or_fail_within_the_frame_limit(
        bytes in prop::collection::vec(any::<u8>(), 0..512)
    ) {
        let peak = decode_all(&bytes);
        prop_assert!(peak <= frame_limit(), "{} bytes", peak);
    }

    #[test]
    fn mutated_valid_frames_decode_or_fail_within_the_frame_limit(
        which in any::<prop::sample::Index>(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<prop::sample::Index>(),
    ) {
        let samples = samples();
        let mut bytes = samples[which.index(samples.len())].clone();
        for (at, b) in edits {
            let i = at.index(bytes.len());
            bytes[i] = b;
        }
        bytes.truncate(cut.index(bytes.len() + 1));
        let peak = decode_all(&bytes);
        prop_assert!(peak <= frame_limit(), "{} bytes", peak);
    }
}
