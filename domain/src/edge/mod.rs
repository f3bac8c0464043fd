//! Edge mode (reference §10): the Edge key, the tunnel credentials and host
//! key fingerprint, the poll answer, the tunnel state machine and backoff,
//! which proxy an outbound call takes, async mode's exchange, timers and
//! snapshot, Edge stacks' registries and retries, and what an updated
//! agent does about the one it replaces.
//! Everything the Edge loop decides is decided here; the adapters only
//! carry bytes.

pub mod agent_update;
pub mod async_protocol;
pub mod async_timers;
pub mod backoff;
pub mod credentials;
pub mod fingerprint;
pub mod go_json;
pub mod key;
pub mod proxy;
pub mod registry;
pub mod retry;
pub mod schedule;
pub mod snapshot;
pub mod stack;
pub mod status;
pub mod tunnel;
pub mod updater_env;
