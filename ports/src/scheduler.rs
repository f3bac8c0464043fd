//! Runs jobs at the times of cron expressions (Edge jobs).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// One run of a job; the scheduler awaits it to know the run has ended.
pub type JobRun = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchedulerError(pub String);

impl fmt::Display for SchedulerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SchedulerError {}

pub trait Scheduler: Clone + Send + Sync + 'static {
    /// Starts job `id`, replacing any job with that ID: `run` is called at
    /// each time of `cron` (6 fields, seconds first, Sunday = 1). A time
    /// that comes while the previous run is still going is skipped, so a
    /// job never runs twice at once.
    ///
    /// # Errors
    /// When the expression is not understood (the job is then not running).
    fn start(&self, id: u64, cron: &str, run: JobRun) -> Result<(), SchedulerError>;

    /// Stops job `id`; a run in progress finishes.
    fn stop(&self, id: u64);
}
