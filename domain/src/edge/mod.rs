//! Edge mode (reference §10): the Edge key, the tunnel credentials and host
//! key fingerprint, the poll answer, the tunnel state machine and backoff,
//! and which proxy an outbound call takes.
//! Everything the Edge loop decides is decided here; the adapters only
//! carry bytes.

pub mod backoff;
pub mod credentials;
pub mod fingerprint;
pub mod key;
pub mod proxy;
pub mod schedule;
pub mod stack;
pub mod status;
pub mod tunnel;
