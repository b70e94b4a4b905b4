//! Cluster membership for quorumkv: Scuttlebutt-style push-pull gossip and
//! a phi-accrual failure detector, written as a pure state machine
//! (messages and the current time in; messages and events out) so that a
//! thousand nodes can be simulated in one test.
