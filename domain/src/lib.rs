//! berth's pure domain.
//!
//! Architecture Invariant: this crate does no I/O. It depends on no async
//! runtime, network, filesystem or clock crate (a test in the suite runs
//! `cargo tree` to keep it so). Everything here is a function of its inputs,
//! so every rule is unit-tested without a socket.

pub mod aggregate;
pub mod browse;
pub mod cluster;
pub mod dockerhub;
pub mod doctor;
pub mod duration;
pub mod edge;
pub mod engine;
pub mod error;
pub mod gossip;
pub mod headers;
pub mod host;
pub mod kubernetes;
pub mod kubernetes_stack;
pub mod options;
pub mod pci_names;
pub mod routing;
pub mod signature;
