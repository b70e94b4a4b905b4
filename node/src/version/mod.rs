//! Versioning (stub, being written).
