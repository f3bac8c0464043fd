//! When a request may go to the engine while its signature is still being
//! verified, so that the verification (about two thirds of the CPU berth
//! spends on a request with a fresh signature) overlaps the engine's work
//! instead of preceding it. The answer is held back until the signature
//! verifies, and dropped when it does not: no byte of it leaves berth
//! unverified either way.
//!
//! Only a request that reads (GET or HEAD, no protocol upgrade such as an
//! attach) and only on a connection that has already shown a signature
//! that verified, and has never shown one that failed: a client without a
//! good signature never makes the engine do more than it would for the
//! same requests sent unsigned, which is nothing.
//!
//! And only while a core is spare (fewer requests in flight than cores):
//! under load every core is busy anyway, and handing the verification to
//! another thread then costs CPU (a thread woken per request: 30 % more
//! per `/_ping` at 32 connections, `scripts/bench-go-agent`) for no gain.

/// What a connection's earlier requests showed of its signatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Standing {
    /// No signed request yet.
    Unproven,
    /// Every signature so far verified.
    Proven,
    /// A signature failed: nothing more is taken on trust on it.
    Failed,
}

impl Standing {
    /// The standing after a request whose signature did (or did not)
    /// pass; a failure is never forgotten.
    pub fn after(self, passed: bool) -> Standing {
        match (self, passed) {
            (Standing::Failed, _) | (_, false) => Standing::Failed,
            _ => Standing::Proven,
        }
    }
}

/// A request, as far as overlapping its verification goes.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub method: &'a str,
    /// It asks for a protocol upgrade (an attach, a console).
    pub upgrade: bool,
    /// The route sends it to this node's engine alone (not to other
    /// agents, which verify it themselves, nor to a fan-out).
    pub to_local_engine: bool,
    pub standing: Standing,
    /// Requests being answered now, this one included.
    pub in_flight: usize,
    pub cores: usize,
}

/// Whether a request may be forwarded while its signature is verified.
pub fn may_forward_while_verifying(candidate: Candidate<'_>) -> bool {
    matches!(candidate.method, "GET" | "HEAD")
        && !candidate.upgrade
        && candidate.to_local_engine
        && candidate.standing == Standing::Proven
        && candidate.in_flight < candidate.cores
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read() -> Candidate<'static> {
        Candidate {
            method: "GET",
            upgrade: false,
            to_local_engine: true,
            standing: Standing::Proven,
            in_flight: 1,
            cores: 2,
        }
    }

    #[test]
    fn only_reads_on_a_proven_connection_to_the_local_engine_with_a_core_spare() {
        assert!(may_forward_while_verifying(read()));
        assert!(may_forward_while_verifying(Candidate {
            method: "HEAD",
            ..read()
        }));
        for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
            assert!(
                !may_forward_while_verifying(Candidate { method, ..read() }),
                "{method}"
            );
        }
        assert!(!may_forward_while_verifying(Candidate {
            upgrade: true,
            ..read()
        }));
        assert!(!may_forward_while_verifying(Candidate {
            to_local_engine: false,
            ..read()
        }));
        for standing in [Standing::Unproven, Standing::Failed] {
            assert!(!may_forward_while_verifying(Candidate {
                standing,
                ..read()
            }));
        }
        assert!(!may_forward_while_verifying(Candidate {
            in_flight: 2,
            ..read()
        }));
        assert!(!may_forward_while_verifying(Candidate {
            in_flight: 1,
            cores: 1,
            ..read()
        }));
    }

    #[test]
    fn a_failure_is_never_forgotten() {
        assert_eq!(Standing::Unproven.after(true), Standing::Proven);
        assert_eq!(Standing::Unproven.after(false), Standing::Failed);
        assert_eq!(Standing::Proven.after(false), Standing::Failed);
        assert_eq!(Standing::Failed.after(true), Standing::Failed);
    }
}
