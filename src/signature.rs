//! The signature check every request but `/ping` passes (reference §4).
//!
//! The policy lives in the domain; this holds it behind a lock for its two
//! cheap steps and runs the expensive verification between them, unlocked,
//! so one slow ECDSA check never queues other requests.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use berth_domain::error::AgentError;
use berth_domain::headers::{REQUEST_PUBLIC_KEY, REQUEST_SIGNATURE};
use berth_domain::signature::{Check, Credentials, SignaturePolicy};
use http::HeaderMap;
use tracing::info;

/// How many verified signatures are remembered. Each entry is 32 bytes.
pub const CACHE_CAPACITY: usize = 4096;

#[derive(Clone)]
pub struct SignatureGuard {
    policy: Arc<Mutex<SignaturePolicy>>,
}

impl SignatureGuard {
    pub fn new(policy: SignaturePolicy) -> Self {
        SignatureGuard {
            policy: Arc::new(Mutex::new(policy)),
        }
    }

    /// `AGENT_SECRET` (if any), with a cache salt from the OS.
    ///
    /// # Errors
    /// When the OS gives no randomness.
    pub fn from_secret(secret: Option<String>) -> Result<Self, String> {
        let mut salt = [0u8; 32];
        getrandom::getrandom(&mut salt)
            .map_err(|error| format!("no randomness from the OS: {error}"))?;
        Ok(SignatureGuard::new(SignaturePolicy::new(
            secret,
            salt,
            CACHE_CAPACITY,
        )))
    }

    fn policy(&self) -> MutexGuard<'_, SignaturePolicy> {
        // The policy is left consistent by every step, so a panic elsewhere
        // while it was locked does not make it unusable.
        self.policy.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn is_associated(&self) -> bool {
        self.policy().is_associated()
    }

    /// Whether the request's signature headers let it through.
    ///
    /// # Errors
    /// The 403 Portainer expects.
    pub fn authorize(&self, headers: &HeaderMap) -> Result<(), AgentError> {
        let credentials = Credentials {
            public_key: headers
                .get(REQUEST_PUBLIC_KEY)
                .and_then(|v| v.to_str().ok()),
            signature: headers.get(REQUEST_SIGNATURE).and_then(|v| v.to_str().ok()),
        };
        let check = self.policy().check(credentials);
        let pending = match check {
            Check::Accepted => return Ok(()),
            Check::Rejected(error) => return Err(error.to_agent_error()),
            Check::Verify(pending) => pending,
        };
        let verified = pending.verify();
        let mut policy = self.policy();
        let was_associated = policy.is_associated();
        policy
            .record(*pending, verified)
            .map_err(|error| error.to_agent_error())?;
        if !was_associated {
            info!("associated with the first Portainer instance whose signature verified");
        }
        Ok(())
    }
}
