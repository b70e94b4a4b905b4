//! The harness shared by quorumkv's cluster tests: it starts real `qkvd`
//! processes on loopback ports with data in temporary directories.
