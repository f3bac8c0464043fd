//! The security shutdown (reference §4.4): an agent that no Portainer has
//! paired with after `AGENT_SECRET_TIMEOUT` closes its API, so a forgotten
//! agent cannot be claimed by whoever finds it first. The process stays up,
//! so the orchestrator does not restart it into a fresh pairing window.

use std::time::Duration;

use berth_ports::Clock;
use tracing::warn;

use crate::signature::SignatureGuard;

/// Resolves after `timeout` if no Portainer is associated by then; never
/// resolves otherwise.
pub async fn unassociated_after<C: Clock>(clock: C, timeout: Duration, guard: SignatureGuard) {
    clock.sleep(timeout).await;
    if guard.is_associated() {
        return std::future::pending().await;
    }
    warn!(
        timeout_seconds = timeout.as_secs(),
        "shutting down API server as no client was associated after the timeout, keeping the process alive"
    );
}
