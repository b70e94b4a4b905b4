//! This node's ring tokens: chosen once, with the ring crate's allocator,
//! and persisted in the metadata partition so that a restart keeps the
//! node's place on the ring.

use quorumkv_ring::{Ring, Strategy, Token};

use crate::config::{Config, TokenAllocation};
use crate::storage::{StorageError, Store};

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

/// Persists the tokens (durably, whatever the sync mode).
pub async fn save(store: &Store, tokens: &[Token]) -> Result<(), StorageError> {
    let bytes: Vec<u8> = tokens.iter().flat_map(|t| t.to_be_bytes()).collect();
    store.meta_put(META_KEY, bytes).await
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
