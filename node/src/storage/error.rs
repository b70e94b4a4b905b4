//! The storage error type.
//!
//! Variants are what a caller acts on: refuse to start (`DataDirUnusable`,
//! `Locked`, `Corrupt` at open), answer 503 and alert (`Io`, `DiskFull`,
//! `Engine`), reject the request (`InvalidKey`), or stop (`Closed`). Every
//! message is one line a person can read in a log or a startup failure.
//! The type is `Clone` so that one failed group commit can hand the same
//! error to every writer that shared it.

use std::path::PathBuf;

/// Why a storage operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StorageError {
    /// The data directory cannot hold a database: it is a regular file, it
    /// cannot be created, or it is not writable. Raised only by `Store::open`.
    #[error("data directory {} is unusable: {reason}", path.display())]
    DataDirUnusable {
        /// The directory given to `Store::open`.
        path: PathBuf,
        /// What went wrong, from the operating system's error.
        reason: String,
    },

    /// Another process (or another `Store` in this process) holds the
    /// database lock on this directory.
    #[error(
        "data directory {} is locked by another process (is another qkvd running on it?)",
        path.display()
    )]
    Locked {
        /// The directory given to `Store::open`.
        path: PathBuf,
    },

    /// An I/O error while reading or writing. After a failed journal write or
    /// fsync the engine refuses further writes (see [`StorageError::Engine`]),
    /// because it can no longer know what reached the disk.
    #[error("storage I/O error: {0}")]
    Io(String),

    /// The disk (or the quota) is full. Nothing of the failed write was
    /// acknowledged; the engine refuses writes until restarted with space.
    #[error("storage I/O error: disk full: {0}")]
    DiskFull(String),

    /// The engine refused the operation for a reason other than plain I/O,
    /// typically because an earlier fsync failed and it has poisoned itself
    /// to avoid acknowledging writes it cannot make durable.
    #[error("storage engine error: {0}")]
    Engine(String),

    /// Bytes on disk do not decode: a damaged journal or table, a database
    /// of an unknown format version, or a data key not in our layout.
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),

    /// A key or bucket name the engine cannot store (too long, empty, or a
    /// bucket holding 0x00). Callers validate earlier; this is the backstop
    /// that keeps such input from reaching an engine that would panic.
    #[error("invalid key: {0}")]
    InvalidKey(String),

    /// The store was closed (node shutting down); nothing was written.
    #[error("storage is closed (the node is shutting down)")]
    Closed,
}

impl StorageError {
    /// Maps an I/O error, singling out a full disk.
    pub(crate) fn from_io(e: &std::io::Error) -> Self {
        match e.kind() {
            std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
                StorageError::DiskFull(e.to_string())
            }
            _ => StorageError::Io(e.to_string()),
        }
    }
}
