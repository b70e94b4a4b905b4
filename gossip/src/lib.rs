//! Cluster membership for quorumkv: Scuttlebutt-style push-pull gossip and
//! a phi-accrual failure detector, written as a pure state machine
//! (messages and the current time in; messages and events out) so that a
//! thousand nodes can be simulated in one test.
//!
//! # Map
//!
//! | module | what |
//! |---|---|
//! | [`state`] | endpoint state (generation, heartbeat, versioned application states) and its merge rules |
//! | [`protocol`] | SYN / ACK / ACK2, digests and deltas, events, the MessagePack codec |
//! | [`node`] | [`Node`]: the state machine, rounds, peer choice, packing under size caps |
//! | [`failure_detector`] | phi accrual (exponential model), its own [`failure_detector::Config`] |
//! | [`driver`] | the tokio loop around a [`Node`], behind a [`driver::Transport`] trait with an in-memory twin |
//! | [`sim`] | a deterministic simulated network of many nodes, for tests and `examples/simulate.rs` |
//!
//! See `ALGORITHM.md` next to this crate for the invariants.
//!
//! # Driving a node
//!
//! A driver (tokio or otherwise) owns the sockets and the clock:
//!
//! ```
//! use std::time::Duration;
//! use quorumkv_gossip::{AppState, Config, Message, Node, Status};
//! use rand::SeedableRng;
//!
//! let mut config = Config::new("prod");
//! config.seeds = vec!["10.0.0.1:7001".into()];
//! let rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
//! // generation: persisted counter or seconds since the epoch, grows across restarts
//! let mut node = Node::new("n2".into(), "10.0.0.2:7001".into(), 1_795_830_000, config, rng)?;
//! node.set_local(AppState::Status(Status::Normal))?;
//! node.set_local(AppState::Tokens(vec![1, 2, 3].into()))?;
//!
//! let now = Duration::ZERO; // monotonic time since the driver started
//! let mut send = |_to: &quorumkv_gossip::Addr, _bytes: Vec<u8>| {}; // the driver's socket
//! for out in node.tick(now) {
//!     send(&out.to, out.msg.encode()?);
//! }
//! // on a frame from `from`:
//! # let frame = Message::Ack2 { cluster: "prod".into(), states: vec![] }.encode()?;
//! # let from = "10.0.0.1:7001".into();
//! let msg = Message::decode(&frame, node.config().max_message_bytes)?;
//! for out in node.handle(&from, msg, now) {
//!     send(&out.to, out.msg.encode()?);
//! }
//! for event in node.drain_events() {
//!     println!("{event:?}"); // Joined / Updated / Up / Down / Restarted / Removed / Refused
//! }
//! // then sleep until node.next_round_at() and tick again
//! # Ok::<(), quorumkv_gossip::Error>(())
//! ```

pub mod config;
pub mod driver;
pub mod error;
pub mod failure_detector;
pub mod node;
pub mod protocol;
pub mod sim;
pub mod state;

pub use config::Config;
pub use error::Error;
pub use node::{MemberView, Node};
pub use protocol::{Delta, Digest, Event, Message, Outgoing};
pub use state::{
    Addr, AppState, EndpointState, Generation, Key, NodeId, Status, Token, Version, Versioned,
};
