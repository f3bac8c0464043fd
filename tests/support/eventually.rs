//! Waiting for something a test cannot be told about: checked every
//! 100 ms, bounded, and named in the failure.

use std::ops::AsyncFnMut;
use std::time::Duration;
use tokio::time::Instant;

const EVERY: Duration = Duration::from_millis(100);

/// Returns once `holds` is true; panics naming `what` after `limit`.
pub async fn eventually(what: &str, limit: Duration, mut holds: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !holds().await {
        assert!(
            Instant::now() < deadline,
            "{what}: not within {}s",
            limit.as_secs()
        );
        tokio::time::sleep(EVERY).await;
    }
}

/// The blocking twin of `eventually`, for a process a test starts: returns
/// once `holds` is true (checked every 20 ms); panics after `limit` naming
/// `what` with `context()` (its log, say). `holds` may panic itself, when
/// the process it waits for has ended.
pub fn wait_until(
    what: &str,
    limit: Duration,
    mut holds: impl FnMut() -> bool,
    context: impl Fn() -> String,
) {
    let deadline = std::time::Instant::now() + limit;
    while !holds() {
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: not within {limit:?}: {}",
            context()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
