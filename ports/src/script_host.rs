//! Where Edge job scripts live and run: the host, through its root mount.

use std::fmt;
use std::future::Future;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScriptError(pub String);

impl fmt::Display for ScriptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ScriptError {}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScriptOutcome {
    Exited(i32),
    /// Ended by a signal.
    Killed,
    TimedOut,
}

pub trait ScriptHost: Clone + Send + Sync + 'static {
    /// Writes job `id`'s script where the host's cron would find it.
    fn install(
        &self,
        id: u64,
        script: &[u8],
    ) -> impl Future<Output = Result<(), ScriptError>> + Send;

    /// Runs job `id`'s script inside the host's root, its output going to
    /// the job's log, stopped after `timeout`.
    fn run(
        &self,
        id: u64,
        timeout: Duration,
    ) -> impl Future<Output = Result<ScriptOutcome, ScriptError>> + Send;

    /// The job's log; empty when it has not run.
    fn log(&self, id: u64) -> impl Future<Output = Result<String, ScriptError>> + Send;

    /// Writes a note into the job's log (why it cannot run, for example).
    fn note(&self, id: u64, text: &str) -> impl Future<Output = Result<(), ScriptError>> + Send;

    /// Removes job `id`'s script and log.
    fn remove(&self, id: u64) -> impl Future<Output = Result<(), ScriptError>> + Send;
}
