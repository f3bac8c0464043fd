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

/// Whether a request may be forwarded while its signature is verified.
/// `to_local_engine`: the route sends it to this node's engine alone (not
/// to other agents, which verify it themselves, nor to a fan-out).
pub fn may_forward_while_verifying(
    method: &str,
    upgrade: bool,
    to_local_engine: bool,
    standing: Standing,
) -> bool {
    matches!(method, "GET" | "HEAD") && !upgrade && to_local_engine && standing == Standing::Proven
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reads_on_a_proven_connection_to_the_local_engine() {
        assert!(may_forward_while_verifying(
            "GET",
            false,
            true,
            Standing::Proven
        ));
        assert!(may_forward_while_verifying(
            "HEAD",
            false,
            true,
            Standing::Proven
        ));
        for method in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
            assert!(
                !may_forward_while_verifying(method, false, true, Standing::Proven),
                "{method}"
            );
        }
        assert!(!may_forward_while_verifying(
            "GET",
            true,
            true,
            Standing::Proven
        ));
        assert!(!may_forward_while_verifying(
            "GET",
            false,
            false,
            Standing::Proven
        ));
        for standing in [Standing::Unproven, Standing::Failed] {
            assert!(!may_forward_while_verifying("GET", false, true, standing));
        }
    }

    #[test]
    fn a_failure_is_never_forgotten() {
        assert_eq!(Standing::Unproven.after(true), Standing::Proven);
        assert_eq!(Standing::Unproven.after(false), Standing::Failed);
        assert_eq!(Standing::Proven.after(false), Standing::Failed);
        assert_eq!(Standing::Failed.after(true), Standing::Failed);
    }
}
