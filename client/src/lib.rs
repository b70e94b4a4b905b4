//! The quorumkv client library.
