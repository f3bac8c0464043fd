//! Retry delays: doubling from a base up to a cap, with "full jitter" so
//! that many agents restarted together do not retry in step. The caller
//! supplies the randomness, which keeps this deterministic under test.

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    pub const TUNNEL: Backoff = Backoff {
        base: Duration::from_secs(1),
        cap: Duration::from_secs(60),
    };

    /// The delay before retry number `attempt` (0 for the first retry);
    /// `unit` in [0, 1) picks a point in the upper half of the window, so a
    /// retry never comes immediately.
    pub fn delay(&self, attempt: u32, unit: f64) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32.checked_shl(attempt.min(16)).unwrap_or(u32::MAX))
            .min(self.cap);
        let unit = if unit.is_finite() {
            unit.clamp(0.0, 1.0)
        } else {
            0.0
        };
        ceiling.mul_f64(0.5 + unit / 2.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_stay_in_the_window() {
        let b = Backoff::TUNNEL;
        assert_eq!(b.delay(0, 0.0), Duration::from_millis(500));
        assert_eq!(b.delay(0, 1.0), Duration::from_secs(1));
        assert_eq!(b.delay(3, 1.0), Duration::from_secs(8));
        assert_eq!(b.delay(40, 1.0), Duration::from_secs(60));
        assert_eq!(b.delay(40, f64::NAN), Duration::from_secs(30));
        for attempt in 0..20 {
            let d = b.delay(attempt, 0.999);
            assert!(d <= b.cap && d >= b.base / 2);
        }
    }
}
