//! Edge mode (reference §10): the Edge key, the tunnel credentials and host
//! key fingerprint, the poll answer, the tunnel state machine and backoff,
//! which proxy an outbound call takes, and async mode's exchange, timers
//! and snapshot.
//! Everything the Edge loop decides is decided here; the adapters only
//! carry bytes.

pub mod async_protocol;
pub mod async_timers;
pub mod backoff;
pub mod credentials;
pub mod fingerprint;
pub mod go_json;
pub mod key;
pub mod proxy;
pub mod schedule;
pub mod snapshot;
pub mod stack;
pub mod status;
pub mod tunnel;
