//! A small SSH client, enough for chisel: curve25519 key exchange, AES-GCM,
//! password authentication, global requests and server-opened channels.
//!
//! Why not russh: chisel servers identify as `SSH-chisel-v3-server`, and
//! russh refuses any identification that does not start with `SSH-2.0-`
//! (its `read_ssh_id`), so it cannot talk to Portainer's tunnel server.
//! The version text enters the exchange hash, so it cannot be rewritten on
//! the way in either.

mod channel;
mod handshake;
pub mod kex;
mod session;
pub mod transport;
pub mod wire;

pub use session::{ClientConfig, SshError, SshSession};
