//! HashiCorp memberlist and serf as the Go Portainer agent speaks them
//! (reference §7): the wire format, gossip encryption, and the rules of
//! membership. The adapter in `berth-adapters::gossip` moves the bytes and
//! keeps the time; everything it decides comes from here.

pub mod keyring;
pub mod messages;
pub mod msgpack;
pub mod serf;
pub mod state;
