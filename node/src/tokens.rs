//! This node's ring tokens: chosen once, with the ring crate's allocator,
//! and persisted in the metadata partition so that a restart keeps the
//! node's place on the ring.
//!
//! A node restarted on a *wiped* data dir has no stored tokens, but the
//! cluster still knows its id and tokens. Choosing new ones would move
//! every range it held (and leave its old tokens in the other nodes'
//! rings until gossip replaced them), so before it gossips it asks its
//! seeds what they know of its id ([`recover`], served by
//! [`known_tokens`]) and takes those back. It must ask *before* gossip
//! starts: its new generation (time-based, so higher than the old one)
//! replaces its old state, tokens included, on every peer that hears it.

use std::sync::Arc;
use std::time::Duration;

use quorumkv_ring::{Ring, Strategy, Token};
use tracing::{info, warn};

use crate::cluster::{Member, NodeState};
use crate::config::{Config, TokenAllocation};
use crate::proto::{Request, Response};
use crate::storage::{StorageError, Store};
use crate::transport::tcp::Net;

const META_KEY: &str = "tokens";

/// The stored tokens, if this node has chosen them.
pub fn load(store: &Store) -> Result<Option<Vec<Token>>, StorageError> {
    let Some(bytes) = store.meta_get(META_KEY)? else {
        return Ok(None);
    };
    if bytes.len() % 8 != 0 {
        return Err(StorageError::Corrupt(format!(
            "stored tokens are {} bytes, not a multiple of 8",
            bytes.len()
        )));
    }
    Ok(Some(
        bytes
            .chunks_exact(8)
            .map(|c| {
                let mut b = [0u8; 8];
                b.copy_from_slice(c);
                u64::from_be_bytes(b)
            })
            .collect(),
    ))
}

/// Persists the tokens, fsynced whatever the sync mode: a node that
/// forgot its tokens after a machine crash would choose others, and every
/// range it held would move.
pub async fn save(store: &Store, tokens: &[Token]) -> Result<(), StorageError> {
    let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_be_bytes()).collect();
    store.meta_put_durable(META_KEY, bytes).await
}

/// Chooses `--vnodes` tokens with the ring crate's allocator (`--token-
/// allocation`), against `ring` — the ring this node knows when it joins —
/// balancing replicated ownership for the node's default replica count.
pub fn allocate(
    ring: &Ring,
    id: &str,
    config: &Config,
) -> Result<Vec<Token>, quorumkv_ring::Error> {
    let strategy = match config.token_allocation {
        TokenAllocation::Balanced => Strategy::Balanced,
        TokenAllocation::Random => Strategy::Random,
    };
    let mut ring = ring.clone();
    if let Some(rack) = &config.rack {
        ring.set_rack(id, Some(rack));
    }
    let seed: u64 = rand::random();
    quorumkv_ring::allocate(
        &ring,
        id,
        config.vnodes as usize,
        config.default_n as usize,
        strategy,
        seed,
    )
}

/// The tokens `members` (a node's view of the cluster) give node `id`,
/// when it owns ranges (`normal` or `leaving`); empty otherwise — an
/// unknown id, a node that left, or one that never chose tokens.
pub fn known_tokens(members: &[Member], id: &str) -> Vec<Token> {
    members
        .iter()
        .find(|m| m.id == id)
        .filter(|m| matches!(m.state, NodeState::Normal | NodeState::Leaving))
        .map(|m| m.tokens.clone())
        .unwrap_or_default()
}

/// How long one seed may take to answer [`recover`].
const RECOVER_TIMEOUT: Duration = Duration::from_secs(2);
/// Rounds over the seeds while none of them answers.
const RECOVER_ROUNDS: u32 = 3;

/// For a node without stored tokens: asks the seeds (other than itself)
/// which tokens the cluster knows for `id`, and returns them when one
/// knows some (the caller stores them: the node replaces its lost data
/// dir, see `membership::replace`); empty when no seed knows the id (a new
/// node: it chooses tokens when it joins) or none answered within
/// [`RECOVER_ROUNDS`] rounds (it then joins as a new node, and says so).
pub async fn recover(
    net: &Arc<Net>,
    config: &Config,
    id: &str,
) -> Result<Vec<Token>, StorageError> {
    let seeds: Vec<String> = config
        .seeds
        .iter()
        .filter(|s| **s != config.listen)
        .map(|s| s.to_string())
        .collect();
    if seeds.is_empty() {
        return Ok(Vec::new());
    }
    for round in 0..RECOVER_ROUNDS {
        let mut answered = false;
        for seed in &seeds {
            let req = Request::NodeTokens {
                node: id.to_string(),
            };
            match net.call(seed, req, RECOVER_TIMEOUT).await {
                Ok(Response::Tokens(tokens)) if !tokens.is_empty() => {
                    info!(
                        %seed,
                        count = tokens.len(),
                        "no stored tokens, but the cluster knows this id: took back its tokens; replacing (counts toward no quorum until every range is repaired)"
                    );
                    return Ok(tokens);
                }
                Ok(_) => answered = true,
                Err(e) => {
                    tracing::debug!(%seed, error = %e, "seed did not say which tokens it knows for this node")
                }
            }
        }
        if answered {
            return Ok(Vec::new());
        }
        if round + 1 < RECOVER_ROUNDS {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    warn!(
        ?seeds,
        "no seed answered: cannot tell whether the cluster knows this id; joining as a new node"
    );
    Ok(Vec::new())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, state: NodeState, tokens: &[Token]) -> Member {
        Member {
            id: id.into(),
            gossip_addr: "127.0.0.1:7001".into(),
            http_addr: "127.0.0.1:8001".into(),
            status: "down",
            state,
            phi: 0.0,
            generation: 1,
            heartbeat: 1,
            tokens: tokens.to_vec(),
            rack: None,
            replacing: false,
        }
    }

    #[test]
    fn known_tokens_are_those_of_a_member_that_owns_ranges() {
        let members = [
            member("n1", NodeState::Normal, &[1, 2]),
            member("n2", NodeState::Leaving, &[3]),
            member("n3", NodeState::Left, &[4]),
            member("n4", NodeState::Joining, &[]),
        ];
        assert_eq!(known_tokens(&members, "n1"), [1, 2]);
        assert_eq!(known_tokens(&members, "n2"), [3]);
        assert!(known_tokens(&members, "n3").is_empty());
        assert!(known_tokens(&members, "n4").is_empty());
        assert!(known_tokens(&members, "n9").is_empty());
    }
}
