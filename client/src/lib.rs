//! The quorumkv client library: typed, async access to a cluster over the
//! HTTP contract of API.md.
//!
//! ```no_run
//! # async fn demo() -> Result<(), quorumkv_client::Error> {
//! use quorumkv_client::{Client, Fetched, ReadOptions, WriteOptions};
//!
//! let client = Client::new(vec!["http://127.0.0.1:8001".into()])?;
//! client
//!     .put("default", b"greeting", b"hello".to_vec(), Some("text/plain"), None, &WriteOptions::default())
//!     .await?;
//! match client.get("default", b"greeting", &ReadOptions::default()).await? {
//!     Fetched::Found(v) if v.is_conflict() => println!("{} siblings", v.values.len()),
//!     Fetched::Found(v) => println!("{:?}", v.single().map(|s| &s.value)),
//!     Fetched::NotFound { .. } => println!("not found"),
//! }
//! # Ok(()) }
//! ```
//!
//! What lives where:
//! - [`client`]: [`Client`], its builder, node fallback and timeouts.
//! - [`types`]: consistency levels, the causal [`Context`], read results
//!   ([`Fetched`], [`Versioned`], [`Sibling`]), bucket properties, cluster
//!   views.
//! - [`key`]: how byte keys become one URL path segment.
//! - [`error`]: the one [`Error`] enum.
//! - [`exp`]: experiments — the PBS staleness predictor (`qkv exp
//!   predict`), the fault experiments' history format and its checker.
//! - [`local`]: supervising real `qkvd` processes on this machine (`qkv
//!   local` and the cluster-test harness share it).
//!
//! The `qkv` command-line tool (get/put/delete, buckets, status, local
//! clusters and the benchmark) is a thin binary on top of this crate.

pub mod client;
pub mod error;
pub mod exp;
pub mod key;
pub mod local;
pub mod types;

pub use client::{Client, ClientBuilder, ca_certificates};
pub use error::Error;
pub use types::{
    BucketProps, BucketPropsUpdate, Conflicts, Consistency, Context, Fetched, Health, Member,
    ReadOptions, ReadRepair, RingInfo, RingToken, Sibling, Versioned, WriteOptions,
};
