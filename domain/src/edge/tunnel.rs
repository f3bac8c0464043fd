//! The tunnel's state machine (reference §10.4–10.5), driven by events and
//! a caller-supplied monotonic time, so every transition is unit-tested.
//!
//! Unlike the Go agent, berth's idea of the tunnel is always the truth: a
//! tunnel that drops while Portainer still wants it is reopened with
//! backoff, and a tunnel that failed to open is not reported as open.

use std::time::Duration;

use super::backoff::Backoff;
use super::status::TunnelStatus;

/// Where the tunnel is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Closed,
    Opening,
    Open,
    /// Waiting to reopen after a failure or a drop.
    Retrying {
        at: Duration,
    },
}

impl Phase {
    /// For the metrics gauge: 0 closed, 1 opening, 2 open, 3 retrying.
    pub fn code(&self) -> u8 {
        match self {
            Phase::Closed => 0,
            Phase::Opening => 1,
            Phase::Open => 2,
            Phase::Retrying { .. } => 3,
        }
    }

    pub fn name(&self) -> &'static str {
        Phase::name_of_code(self.code())
    }

    /// The name of a phase known only by its [`Phase::code`] (the gauge).
    pub fn name_of_code(code: u8) -> &'static str {
        match code {
            0 => "closed",
            1 => "opening",
            2 => "open",
            _ => "retrying",
        }
    }
}

/// What Portainer asked for: the port to open on its side, and the sealed
/// credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelRequest {
    pub port: u16,
    pub credentials: String,
}

/// What the caller must do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Nothing,
    Open(TunnelRequest),
    Close(CloseReason),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// Portainer said IDLE.
    Idle,
    /// No request went through the tunnel for the inactivity timeout.
    Inactive,
}

#[derive(Debug, Clone)]
pub struct TunnelMachine {
    phase: Phase,
    /// Portainer wants a tunnel (REQUIRED seen, not yet IDLE or closed by us).
    wanted: Option<TunnelRequest>,
    last_activity: Duration,
    inactivity: Duration,
    failures: u32,
    backoff: Backoff,
}

impl TunnelMachine {
    pub fn new(inactivity: Duration) -> Self {
        TunnelMachine {
            phase: Phase::Closed,
            wanted: None,
            last_activity: Duration::ZERO,
            inactivity,
            failures: 0,
            backoff: Backoff::TUNNEL,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// A poll answered. `ACTIVE` means Portainer believes the tunnel is
    /// open: berth keeps what it has (and reopens a dropped tunnel it still
    /// has credentials for, through `tick`).
    pub fn on_status(
        &mut self,
        status: TunnelStatus,
        port: Option<u16>,
        credentials: Option<&str>,
    ) -> Action {
        match status {
            TunnelStatus::Idle => {
                self.wanted = None;
                self.failures = 0;
                match self.phase {
                    Phase::Open | Phase::Opening => Action::Close(CloseReason::Idle),
                    Phase::Retrying { .. } => {
                        self.phase = Phase::Closed;
                        Action::Nothing
                    }
                    Phase::Closed => Action::Nothing,
                }
            }
            TunnelStatus::Required => {
                if let (Some(port), Some(credentials)) = (port, credentials) {
                    self.wanted = Some(TunnelRequest {
                        port,
                        credentials: credentials.to_string(),
                    });
                }
                match (&self.phase, &self.wanted) {
                    (Phase::Closed, Some(request)) => {
                        self.phase = Phase::Opening;
                        Action::Open(request.clone())
                    }
                    _ => Action::Nothing,
                }
            }
            TunnelStatus::Active => Action::Nothing,
        }
    }

    /// The tunnel is up; opening counts as activity. The backoff does not
    /// start over here: a server that accepts every tunnel and drops it at
    /// once must not be retried every second.
    pub fn on_opened(&mut self, now: Duration) {
        self.phase = Phase::Open;
        self.last_activity = now;
    }

    /// The open tunnel's server showed it works (it answered a keepalive):
    /// the backoff starts over.
    pub fn on_proven(&mut self) {
        self.failures = 0;
    }

    /// Opening failed, or an open tunnel dropped without being asked to.
    /// `unit` in [0, 1) is the jitter.
    pub fn on_lost(&mut self, now: Duration, unit: f64) {
        if self.wanted.is_some() {
            let delay = self.backoff.delay(self.failures, unit);
            self.failures = self.failures.saturating_add(1);
            self.phase = Phase::Retrying { at: now + delay };
        } else {
            self.phase = Phase::Closed;
        }
    }

    /// The caller closed the tunnel as told.
    pub fn on_closed(&mut self) {
        self.phase = Phase::Closed;
    }

    /// A request went through the agent's API.
    pub fn on_activity(&mut self, now: Duration) {
        if self.phase == Phase::Open {
            self.last_activity = self.last_activity.max(now);
        }
    }

    /// Time passes: closes an inactive tunnel, reopens after a backoff.
    pub fn tick(&mut self, now: Duration) -> Action {
        match self.phase {
            Phase::Open if now.saturating_sub(self.last_activity) >= self.inactivity => {
                self.wanted = None;
                self.failures = 0;
                Action::Close(CloseReason::Inactive)
            }
            Phase::Retrying { at } if now >= at => match &self.wanted {
                Some(request) => {
                    self.phase = Phase::Opening;
                    Action::Open(request.clone())
                }
                None => {
                    self.phase = Phase::Closed;
                    Action::Nothing
                }
            },
            _ => Action::Nothing,
        }
    }

    /// When `tick` next has something to do, for a caller that sleeps.
    pub fn next_deadline(&self) -> Option<Duration> {
        match self.phase {
            Phase::Open => Some(self.last_activity + self.inactivity),
            Phase::Retrying { at } => Some(at),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINUTE: Duration = Duration::from_secs(60);

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn required(machine: &mut TunnelMachine) -> Action {
        machine.on_status(TunnelStatus::Required, Some(49152), Some("sealed"))
    }

    fn request() -> TunnelRequest {
        TunnelRequest {
            port: 49152,
            credentials: "sealed".into(),
        }
    }

    #[test]
    fn required_opens_once_and_idle_closes() {
        let mut m = TunnelMachine::new(5 * MINUTE);
        assert_eq!(required(&mut m), Action::Open(request()));
        assert_eq!(m.phase(), Phase::Opening);
        assert_eq!(
            required(&mut m),
            Action::Nothing,
            "no second open while opening"
        );
        m.on_opened(secs(1));
        assert_eq!(required(&mut m), Action::Nothing);
        assert_eq!(
            m.on_status(TunnelStatus::Active, None, None),
            Action::Nothing
        );
        assert_eq!(
            m.on_status(TunnelStatus::Idle, None, None),
            Action::Close(CloseReason::Idle)
        );
        m.on_closed();
        assert_eq!(m.phase(), Phase::Closed);
        assert_eq!(m.on_status(TunnelStatus::Idle, None, None), Action::Nothing);
    }

    #[test]
    fn required_without_credentials_waits() {
        let mut m = TunnelMachine::new(MINUTE);
        assert_eq!(
            m.on_status(TunnelStatus::Required, Some(1), None),
            Action::Nothing
        );
        assert_eq!(m.phase(), Phase::Closed);
    }

    #[test]
    fn inactivity_closes_and_activity_postpones_it() {
        let mut m = TunnelMachine::new(5 * MINUTE);
        required(&mut m);
        m.on_opened(secs(0));
        assert_eq!(m.tick(secs(200)), Action::Nothing);
        m.on_activity(secs(200));
        assert_eq!(
            m.tick(secs(299)),
            Action::Nothing,
            "activity moved the deadline"
        );
        assert_eq!(m.next_deadline(), Some(secs(500)));
        assert_eq!(m.tick(secs(500)), Action::Close(CloseReason::Inactive));
        m.on_closed();
        // An inactive close is not reopened until Portainer asks again.
        assert_eq!(m.tick(secs(10_000)), Action::Nothing);
        assert_eq!(
            m.on_status(TunnelStatus::Active, None, None),
            Action::Nothing
        );
        assert_eq!(required(&mut m), Action::Open(request()));
    }

    #[test]
    fn a_drop_while_required_reconnects_with_growing_backoff() {
        let mut m = TunnelMachine::new(5 * MINUTE);
        required(&mut m);
        m.on_opened(secs(0));
        m.on_lost(secs(10), 1.0);
        assert_eq!(m.phase(), Phase::Retrying { at: secs(11) });
        assert_eq!(m.tick(secs(10)), Action::Nothing);
        assert_eq!(m.tick(secs(11)), Action::Open(request()));
        m.on_lost(secs(11), 1.0);
        assert_eq!(m.phase(), Phase::Retrying { at: secs(13) });
        m.tick(secs(13));
        m.on_lost(secs(13), 1.0);
        assert_eq!(m.phase(), Phase::Retrying { at: secs(17) });
        m.tick(secs(17));
        m.on_opened(secs(18));
        m.on_lost(secs(20), 1.0);
        assert_eq!(
            m.phase(),
            Phase::Retrying { at: secs(28) },
            "a tunnel that opened but proved nothing does not reset the backoff"
        );
        m.tick(secs(28));
        m.on_opened(secs(28));
        m.on_proven();
        m.on_lost(secs(100), 1.0);
        assert_eq!(
            m.phase(),
            Phase::Retrying { at: secs(101) },
            "one whose server answered a keepalive does"
        );
    }

    #[test]
    fn idle_cancels_a_pending_retry_and_a_loss_without_want_stays_closed() {
        let mut m = TunnelMachine::new(MINUTE);
        required(&mut m);
        m.on_lost(secs(1), 0.0);
        assert!(matches!(m.phase(), Phase::Retrying { .. }));
        assert_eq!(m.on_status(TunnelStatus::Idle, None, None), Action::Nothing);
        assert_eq!(m.phase(), Phase::Closed);
        assert_eq!(m.tick(secs(1000)), Action::Nothing);
        m.on_lost(secs(1000), 0.0);
        assert_eq!(m.phase(), Phase::Closed);
    }

    #[test]
    fn fresh_credentials_are_used_for_the_next_attempt() {
        let mut m = TunnelMachine::new(MINUTE);
        required(&mut m);
        m.on_lost(secs(0), 1.0);
        m.on_status(TunnelStatus::Required, Some(50000), Some("fresh"));
        assert_eq!(
            m.tick(secs(5)),
            Action::Open(TunnelRequest {
                port: 50000,
                credentials: "fresh".into()
            })
        );
        assert_eq!(m.phase().name(), "opening");
        assert_eq!(m.phase().code(), 1);
    }
}
