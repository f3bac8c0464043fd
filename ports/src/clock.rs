//! Time, as a port, so timers (the security shutdown, later the tunnel's
//! inactivity) are tested with a manual clock in milliseconds.

use std::future::Future;
use std::time::Duration;

pub trait Clock: Clone + Send + Sync + 'static {
    /// Resolves once `duration` has passed on this clock.
    fn sleep(&self, duration: Duration) -> impl Future<Output = ()> + Send;
}
