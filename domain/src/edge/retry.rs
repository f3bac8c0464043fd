//! How often a failed image pull, or a failed deploy of a stack marked
//! `RetryDeploy`, is tried again (reference §10.7). The Go agent's worker
//! passes every 5 s and tries on each pass for the first 720 tries (an
//! hour), then on every 720th pass (hourly), and gives up after a week's
//! worth of passes. berth keeps that pace with timers of its own instead
//! of retrying on every poll.

use std::time::Duration;

/// The Go agent's worker pass.
pub const PASS: Duration = Duration::from_secs(5);
/// Tries made at the pace of passes before slowing to hourly.
pub const TRIES_AT_PASS_PACE: u32 = 720;
const HOURLY: Duration = Duration::from_secs(3600);
/// After this long since the first failure, berth stops trying.
pub const GIVE_UP_AFTER: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    After(Duration),
    GiveUp,
}

/// What follows the `tries`-th failed try (counting from 1), made
/// `since_first` after the first one failed.
pub fn after_failure(tries: u32, since_first: Duration) -> Retry {
    let wait = if tries < TRIES_AT_PASS_PACE {
        PASS
    } else {
        HOURLY
    };
    if since_first + wait > GIVE_UP_AFTER {
        Retry::GiveUp
    } else {
        Retry::After(wait)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_hour_at_the_pace_of_passes_then_hourly_then_a_week_at_most() {
        assert_eq!(after_failure(1, Duration::ZERO), Retry::After(PASS));
        assert_eq!(
            after_failure(719, Duration::from_secs(3590)),
            Retry::After(PASS)
        );
        assert_eq!(
            after_failure(720, Duration::from_secs(3595)),
            Retry::After(HOURLY)
        );
        assert_eq!(
            after_failure(800, GIVE_UP_AFTER - HOURLY),
            Retry::After(HOURLY)
        );
        assert_eq!(
            after_failure(801, GIVE_UP_AFTER - HOURLY + PASS),
            Retry::GiveUp
        );
        // Tries that took long (a slow pull) count by time, not by number.
        assert_eq!(after_failure(3, GIVE_UP_AFTER), Retry::GiveUp);
    }
}
