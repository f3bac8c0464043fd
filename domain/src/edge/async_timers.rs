//! When the async Edge agent calls Portainer (reference §10.6): three
//! tickers, ping, snapshot and command, whose intervals each answer sets
//! (0 turns one off; all three off leaves a fail-safe ping every minute),
//! and ticks that fall within 100 ms of one another sent as one request.
//! Time is milliseconds on a caller-supplied clock.

/// The fail-safe ping interval when every ticker is off.
pub const FAIL_SAFE_MS: u64 = 60_000;
/// Ticks this close together go out as one request.
pub const COALESCING_MS: u64 = 100;

/// What one request carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tick {
    pub snapshot: bool,
    pub command: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ticker {
    every_ms: u64,
    next_ms: u64,
}

impl Ticker {
    fn new(every_ms: u64, now_ms: u64) -> Option<Ticker> {
        (every_ms > 0).then_some(Ticker {
            every_ms,
            next_ms: now_ms + every_ms,
        })
    }
}

/// The three tickers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsyncTimers {
    ping: Option<Ticker>,
    snapshot: Option<Ticker>,
    command: Option<Ticker>,
    intervals: [u64; 3],
}

impl AsyncTimers {
    /// The state before Portainer's first answer: every ticker off, so
    /// the fail-safe ping. The first request itself goes out at once
    /// (the caller sends it), not after that minute as in the Go agent.
    pub fn new(now_ms: u64) -> AsyncTimers {
        let mut timers = AsyncTimers {
            ping: None,
            snapshot: None,
            command: None,
            intervals: [u64::MAX; 3],
        };
        timers.set_intervals([0, 0, 0], now_ms);
        timers
    }

    /// Applies an answer's intervals (ping, snapshot, command, in
    /// milliseconds); tickers whose interval did not change keep their
    /// phase.
    pub fn set_intervals(&mut self, intervals: [u64; 3], now_ms: u64) {
        if intervals == self.intervals {
            return;
        }
        self.intervals = intervals;
        let [ping, snapshot, command] = intervals;
        let ping = if intervals.iter().all(|i| *i == 0) {
            FAIL_SAFE_MS
        } else {
            ping
        };
        self.ping = Ticker::new(ping, now_ms);
        self.snapshot = Ticker::new(snapshot, now_ms);
        self.command = Ticker::new(command, now_ms);
    }

    /// When the next request is due: the earliest tick, plus the
    /// coalescing window in which later ticks join it.
    pub fn next_request_ms(&self) -> u64 {
        self.tickers()
            .map(|t| t.next_ms)
            .min()
            .map_or(u64::MAX, |first| first.saturating_add(COALESCING_MS))
    }

    /// The request due at `now_ms`, if any: every ticker due by then
    /// joins it and moves to its next period.
    pub fn take_due(&mut self, now_ms: u64) -> Option<Tick> {
        if now_ms < self.next_request_ms() {
            return None;
        }
        let mut tick = Tick::default();
        let due = |ticker: &mut Option<Ticker>| {
            let Some(ticker) = ticker else { return false };
            if ticker.next_ms > now_ms {
                return false;
            }
            // Periods missed while a request took long are not made up.
            while ticker.next_ms <= now_ms {
                ticker.next_ms += ticker.every_ms;
            }
            true
        };
        due(&mut self.ping);
        tick.snapshot = due(&mut self.snapshot);
        tick.command = due(&mut self.command);
        Some(tick)
    }

    fn tickers(&self) -> impl Iterator<Item = &Ticker> {
        [&self.ping, &self.snapshot, &self.command]
            .into_iter()
            .flatten()
    }
}

/// A Go `time.Duration` in nanoseconds, as Portainer sends intervals, in
/// milliseconds; a negative or non-integer value is off.
pub fn duration_ms(nanoseconds: &serde_json::Value) -> u64 {
    nanoseconds.as_u64().map_or(0, |ns| ns / 1_000_000)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn before_any_answer_only_the_fail_safe_ping_ticks() {
        let mut timers = AsyncTimers::new(0);
        assert_eq!(timers.next_request_ms(), FAIL_SAFE_MS + COALESCING_MS);
        assert_eq!(timers.take_due(FAIL_SAFE_MS), None);
        assert_eq!(
            timers.take_due(FAIL_SAFE_MS + COALESCING_MS),
            Some(Tick::default())
        );
    }

    #[test]
    fn ticks_within_the_window_go_out_as_one_request() {
        let mut timers = AsyncTimers::new(0);
        timers.set_intervals([1_000, 1_050, 5_000], 0);
        assert_eq!(timers.next_request_ms(), 1_100);
        assert_eq!(
            timers.take_due(1_100),
            Some(Tick {
                snapshot: true,
                command: false
            })
        );
        // The ping at 2000 and the snapshot at 2100 again; then the command.
        assert_eq!(timers.next_request_ms(), 2_100);
        assert_eq!(
            timers.take_due(2_100),
            Some(Tick {
                snapshot: true,
                command: false
            })
        );
        let tick = timers.take_due(5_100).unwrap();
        assert!(tick.command);
    }

    #[test]
    fn zero_turns_a_ticker_off_and_unchanged_intervals_keep_their_phase() {
        let mut timers = AsyncTimers::new(0);
        timers.set_intervals([0, 0, 2_000], 0);
        assert_eq!(timers.next_request_ms(), 2_100);
        timers.set_intervals([0, 0, 2_000], 1_500);
        assert_eq!(
            timers.next_request_ms(),
            2_100,
            "same intervals, same phase"
        );
        let tick = timers.take_due(2_100).unwrap();
        assert!(tick.command && !tick.snapshot);
        timers.set_intervals([0, 0, 0], 3_000);
        assert_eq!(
            timers.next_request_ms(),
            3_000 + FAIL_SAFE_MS + COALESCING_MS
        );
    }

    #[test]
    fn missed_periods_are_not_made_up() {
        let mut timers = AsyncTimers::new(0);
        timers.set_intervals([100, 0, 0], 0);
        assert!(timers.take_due(10_000).is_some());
        assert_eq!(timers.take_due(10_050), None);
        assert!(timers.next_request_ms() > 10_000);
    }

    #[test]
    fn intervals_are_go_durations_in_nanoseconds() {
        assert_eq!(duration_ms(&serde_json::json!(60_000_000_000u64)), 60_000);
        assert_eq!(duration_ms(&serde_json::json!(0)), 0);
        assert_eq!(duration_ms(&serde_json::json!(-5)), 0);
        assert_eq!(duration_ms(&serde_json::json!("1m")), 0);
    }
}
