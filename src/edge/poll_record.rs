//! The last poll's outcome, for `berth status` and `berth doctor`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

/// One poll: when it ended and, if it failed, why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollOutcome {
    pub at: SystemTime,
    pub error: Option<String>,
}

/// Shared between the poller that writes it and the status socket.
#[derive(Debug, Clone, Default)]
pub struct PollRecord(Arc<Mutex<Option<PollOutcome>>>);

impl PollRecord {
    pub fn record(&self, error: Option<&str>) {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = Some(PollOutcome {
            at: SystemTime::now(),
            error: error.map(str::to_string),
        });
    }

    pub fn last(&self) -> Option<PollOutcome> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}
