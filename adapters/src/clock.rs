//! The `Clock` port on tokio's timer.

use std::time::Duration;

use berth_ports::Clock;

#[derive(Debug, Clone, Copy, Default)]
pub struct TokioClock;

impl Clock for TokioClock {
    async fn sleep(&self, duration: Duration) {
        tokio::time::sleep(duration).await;
    }
}
