//! This node's ring tokens: chosen once, with the ring crate's allocator,
//! and persisted in the metadata partition so that a restart keeps the
//! node's place on the ring.

use quorumkv_ring::Token;
use rand::Rng;

use crate::config::Config;
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

/// Chooses `--vnodes` tokens for a node joining an empty ring: evenly
/// spaced from a random offset, which is what the balanced allocator gives
/// the first node (and random tokens for `--token-allocation random`).
pub fn allocate(_id: &str, config: &Config) -> Vec<Token> {
    let mut rng = rand::rng();
    let v = config.vnodes as u64;
    let mut tokens: Vec<Token> = match config.token_allocation {
        crate::config::TokenAllocation::Balanced => {
            let step = u64::MAX / v;
            let offset: u64 = rng.random_range(0..step);
            (0..v).map(|i| offset.wrapping_add(i * step)).collect()
        }
        crate::config::TokenAllocation::Random => (0..v).map(|_| rng.random()).collect(),
    };
    tokens.sort_unstable();
    tokens.dedup();
    tokens
}
