//! The signature check every request but `/ping` passes (reference §4).
//!
//! The policy lives in the domain; this holds it behind a lock for its two
//! cheap steps and runs the expensive verification between them, unlocked,
//! so one slow ECDSA check never queues other requests; where the domain
//! allows (`signature::overlap`), beside the request's engine work.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use berth_domain::error::AgentError;
use berth_domain::headers::{REQUEST_PUBLIC_KEY, REQUEST_SIGNATURE};
use berth_domain::signature::{Check, Credentials, PendingVerification, SignaturePolicy};
use http::HeaderMap;
use std::future::Future;
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
        match self.begin(headers)? {
            None => Ok(()),
            Some(pending) => {
                let verified = pending.verify();
                self.finish(*pending, verified)
            }
        }
    }

    /// The cheap first step: `None` when the headers pass as they are (a
    /// signature verified before), else the verification still to run.
    ///
    /// # Errors
    /// The 403 Portainer expects, for missing or malformed headers or a
    /// key other than the associated one.
    pub fn begin(
        &self,
        headers: &HeaderMap,
    ) -> Result<Option<Box<PendingVerification>>, AgentError> {
        let credentials = Credentials {
            public_key: headers
                .get(REQUEST_PUBLIC_KEY)
                .and_then(|v| v.to_str().ok()),
            signature: headers.get(REQUEST_SIGNATURE).and_then(|v| v.to_str().ok()),
        };
        match self.policy().check(credentials) {
            Check::Accepted => Ok(None),
            Check::Rejected(error) => Err(error.to_agent_error()),
            Check::Verify(pending) => Ok(Some(pending)),
        }
    }

    /// Records the verification's outcome.
    ///
    /// # Errors
    /// The 403 Portainer expects when it did not verify.
    pub fn finish(&self, pending: PendingVerification, verified: bool) -> Result<(), AgentError> {
        let mut policy = self.policy();
        let was_associated = policy.is_associated();
        policy
            .record(pending, verified)
            .map_err(|error| error.to_agent_error())?;
        if !was_associated {
            info!("associated with the first Portainer instance whose signature verified");
        }
        Ok(())
    }

    /// Runs `work` while `pending` is verified on a thread of its own, and
    /// gives its output only once the signature verified (else drops it).
    ///
    /// # Errors
    /// The 403 Portainer expects when the signature does not verify.
    pub async fn verify_alongside<T>(
        &self,
        pending: Box<PendingVerification>,
        work: impl Future<Output = T>,
    ) -> Result<T, AgentError> {
        let verifying = tokio::task::spawn_blocking(move || {
            let verified = pending.verify();
            (pending, verified)
        });
        let (verification, output) = tokio::join!(verifying, work);
        let (pending, verified) = verification.map_err(|error| {
            AgentError::new(500, "Unable to verify the signature", error.to_string())
        })?;
        self.finish(*pending, verified)?;
        Ok(output)
    }
}
