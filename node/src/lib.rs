//! quorumkv-node: the server `qkvd`.
