//! Portainer request signatures (reference §4): the key and signature
//! codecs, the verification cache, and the policy that decides whether a
//! request is signed well enough.
//!
//! A Portainer signature never depends on the request: it is an ECDSA
//! P-256 signature over MD5 of a fixed message (`Portainer-App`, or the
//! `AGENT_SECRET`). berth also accepts Ed25519 keys, whose signature is over
//! the message itself.

pub mod cache;
mod keys;
pub mod overlap;
mod policy;
pub mod signing;

pub use cache::VerifiedCache;
pub use keys::{decode_signature, parse_public_key, PublicKey, SignatureError};
pub use policy::{Check, Credentials, PendingVerification, SignaturePolicy};

/// What Portainer signs when no secret is set.
pub const DEFAULT_MESSAGE: &str = "Portainer-App";
