//! Storage engines (stub, being written).
