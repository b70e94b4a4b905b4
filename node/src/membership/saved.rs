//! The ring this node last saw, kept in the metadata partition so that a
//! restart begins from it rather than from gossip alone.
//!
//! Gossip only tells a restarted node about the members that answer it.
//! A member that is down at that moment — crashed, paused, cut off —
//! would otherwise be missing from its member list *and from its ring*:
//! every key that member replicates would be placed on other nodes, reads
//! would ask replicas that never held the key and answer 404 for
//! acknowledged writes. So every node saves each member's last-known
//! gossip state (generation, announced states: addresses, status, tokens,
//! rack, removals) whenever it changes, and at start hands them to gossip
//! ([`quorumkv_gossip::Node::remember`]) before the first round: such a
//! member is a member again, `down` until its heartbeat is seen to
//! advance, keeps its place on the ring, and gossip passes it on to peers
//! that never heard of it. Cassandra does the same with its saved peers
//! table.
//!
//! What is saved is a list of gossip [`Delta`]s (one per member other
//! than this node, `left` members excepted, which gossip forgets anyway),
//! MessagePack-encoded behind a format byte; it is rewritten, fsynced,
//! only when something other than heartbeats and load figures changed
//! ([`shape`]), so not every gossip round.

use quorumkv_gossip::driver::Snapshot;
use quorumkv_gossip::{AppState, Delta, Status};

use crate::storage::{StorageError, Store};

/// Meta key of the saved ring.
const META_KEY: &str = "ring";
/// Format byte in front of the encoding.
const FORMAT: u8 = 1;

/// What to save of `snapshot`: every member but this node and those that
/// left, with its whole state.
pub fn of(snapshot: &Snapshot) -> Vec<Delta> {
    snapshot
        .members
        .iter()
        .filter(|m| !m.is_local && m.state.status() != Some(Status::Left))
        .map(|m| Delta {
            node: m.id.clone(),
            generation: m.state.generation(),
            heartbeat: Some(m.state.heartbeat()),
            states: m.state.states().to_vec(),
        })
        .collect()
}

/// A digest of what matters in `saved`: everything but heartbeats and
/// load figures, which change every round.
pub fn shape(saved: &[Delta]) -> u64 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for d in saved {
        h.update(d.node.as_str().as_bytes());
        h.update(&[0]);
        h.update(&d.generation.to_be_bytes());
        for s in &d.states {
            if matches!(s.value, AppState::Load(_)) {
                continue;
            }
            // Encoding plain data into a Vec does not fail.
            if let Ok(b) = rmp_serde::to_vec(s) {
                h.update(&(b.len() as u64).to_be_bytes());
                h.update(&b);
            }
        }
    }
    h.digest()
}

/// The saved ring; empty when none was saved (a new data dir, or one from
/// before rings were saved).
pub fn load(store: &Store) -> Result<Vec<Delta>, StorageError> {
    let Some(bytes) = store.meta_get(META_KEY)? else {
        return Ok(Vec::new());
    };
    match bytes.split_first() {
        Some((&FORMAT, rest)) => rmp_serde::from_slice(rest)
            .map_err(|e| StorageError::Corrupt(format!("saved ring does not decode: {e}"))),
        _ => Err(StorageError::Corrupt(
            "saved ring has an unknown format byte".into(),
        )),
    }
}

/// Saves `saved` (fsynced, whatever `--sync` says).
pub async fn save(store: &Store, saved: &[Delta]) -> Result<(), StorageError> {
    let mut bytes = vec![FORMAT];
    rmp_serde::encode::write(&mut bytes, saved)
        .map_err(|e| StorageError::Corrupt(format!("cannot encode the ring: {e}")))?;
    store.meta_put_durable(META_KEY, bytes).await
}

#[cfg(test)]
mod tests {
    use quorumkv_gossip::driver::MemberSnapshot;
    use quorumkv_gossip::{EndpointState, Versioned};

    use super::*;

    fn member(id: &str, status: Status, heartbeat: u64, load: u64) -> MemberSnapshot {
        let mut state = EndpointState::new(5);
        state.apply(&Delta {
            node: id.into(),
            generation: 5,
            heartbeat: Some(heartbeat),
            states: vec![
                Versioned {
                    version: 1,
                    value: AppState::Status(status),
                },
                Versioned {
                    version: 2,
                    value: AppState::Tokens(vec![1, 2].into()),
                },
                Versioned {
                    version: 3,
                    value: AppState::Load(load),
                },
            ],
        });
        MemberSnapshot {
            id: id.into(),
            state,
            live: true,
            phi: 0.0,
            is_local: id == "n1",
        }
    }

    fn snap(members: Vec<MemberSnapshot>) -> Snapshot {
        Snapshot {
            members,
            ..Snapshot::default()
        }
    }

    #[tokio::test]
    async fn the_saved_ring_holds_every_other_member_and_reads_back() {
        let s = snap(vec![
            member("n1", Status::Normal, 3, 0),
            member("n2", Status::Normal, 3, 0),
            member("n3", Status::Left, 3, 0),
            member("n4", Status::Joining, 3, 0),
        ]);
        let saved = of(&s);
        let ids: Vec<&str> = saved.iter().map(|d| d.node.as_str()).collect();
        assert_eq!(ids, ["n2", "n4"]);
        let store = Store::memory();
        assert!(load(&store).expect("load").is_empty());
        save(&store, &saved).await.expect("save");
        assert_eq!(load(&store).expect("load"), saved);
    }

    #[test]
    fn heartbeats_and_load_do_not_change_the_shape_but_states_do() {
        let base = shape(&of(&snap(vec![member("n2", Status::Normal, 3, 10)])));
        let beat = shape(&of(&snap(vec![member("n2", Status::Normal, 9, 99)])));
        assert_eq!(base, beat);
        let leaving = shape(&of(&snap(vec![member("n2", Status::Leaving, 3, 10)])));
        assert_ne!(base, leaving);
        let more = shape(&of(&snap(vec![
            member("n2", Status::Normal, 3, 10),
            member("n3", Status::Normal, 3, 10),
        ])));
        assert_ne!(base, more);
    }

    #[tokio::test]
    async fn a_corrupt_saved_ring_is_an_error_not_an_empty_ring() {
        let store = Store::memory();
        store
            .meta_put(META_KEY, vec![FORMAT, 0xc1])
            .await
            .expect("put");
        assert!(matches!(load(&store), Err(StorageError::Corrupt(_))));
        store.meta_put(META_KEY, vec![9]).await.expect("put");
        assert!(matches!(load(&store), Err(StorageError::Corrupt(_))));
    }
}
