//! Who may use the agent (reference §4.2–4.3), as a state machine that
//! does no I/O and does not lock: the caller holds it behind a lock for the
//! cheap [`SignaturePolicy::check`] and [`SignaturePolicy::record`] steps,
//! and runs the expensive [`PendingVerification::verify`] in between,
//! outside the lock.
//!
//! States (default mode): Unassociated -> Associated(key), on the first
//! request whose signature verifies; never back. Secret mode has no states:
//! any key that signs the secret is accepted.

use subtle::ConstantTimeEq as _;

use super::cache::{Fingerprint, VerifiedCache};
use super::keys::{decode_signature, parse_public_key, PublicKey, SignatureError};
use super::DEFAULT_MESSAGE;

/// The two signature headers of a request, as received.
#[derive(Debug, Clone, Copy, Default)]
pub struct Credentials<'a> {
    pub public_key: Option<&'a str>,
    pub signature: Option<&'a str>,
}

/// The outcome of the cheap first step.
#[derive(Debug)]
pub enum Check {
    Accepted,
    Rejected(SignatureError),
    /// A signature to verify (outside any lock), then to [`SignaturePolicy::record`].
    Verify(Box<PendingVerification>),
}

/// A decoded key and signature, waiting for the expensive check.
#[derive(Debug)]
pub struct PendingVerification {
    key: PublicKey,
    key_der: Vec<u8>,
    key_text: String,
    signature: [u8; 64],
    message: Vec<u8>,
    fingerprint: Fingerprint,
}

impl PendingVerification {
    pub fn verify(&self) -> bool {
        self.key.verifies(&self.signature, &self.message)
    }
}

/// The key a default-mode agent is associated with.
#[derive(Debug, Clone)]
struct AssociatedKey {
    der: Vec<u8>,
    text: String,
    /// Parsed once: decoding a P-256 point costs about as much as a hash
    /// lookup a thousand times over.
    key: PublicKey,
}

#[derive(Debug, Clone)]
pub struct SignaturePolicy {
    /// `None` in default mode; the shared secret otherwise.
    secret: Option<String>,
    associated: Option<AssociatedKey>,
    cache: VerifiedCache,
}

impl SignaturePolicy {
    /// `cache_salt` must be random and secret (see [`VerifiedCache`]).
    pub fn new(secret: Option<String>, cache_salt: [u8; 32], cache_capacity: usize) -> Self {
        SignaturePolicy {
            secret: secret.filter(|s| !s.is_empty()),
            associated: None,
            cache: VerifiedCache::new(cache_salt, cache_capacity),
        }
    }

    pub fn is_secret_mode(&self) -> bool {
        self.secret.is_some()
    }

    /// Whether a Portainer instance may use the agent: always in secret
    /// mode, after the first valid request in default mode. The security
    /// shutdown watches this.
    pub fn is_associated(&self) -> bool {
        self.secret.is_some() || self.associated.is_some()
    }

    fn message(&self) -> &[u8] {
        self.secret.as_deref().unwrap_or(DEFAULT_MESSAGE).as_bytes()
    }

    /// The cheap step: headers present, the associated key, the cache, the
    /// codecs. A cache hit is accepted without verifying again.
    pub fn check(&self, credentials: Credentials<'_>) -> Check {
        let (Some(key_text), Some(signature_text)) = (
            credentials.public_key.filter(|v| !v.is_empty()),
            credentials.signature.filter(|v| !v.is_empty()),
        ) else {
            return Check::Rejected(SignatureError::Missing);
        };
        let same_text_as_associated = self.associated.as_ref().is_some_and(|associated| {
            bool::from(associated.text.as_bytes().ct_eq(key_text.as_bytes()))
        });
        let fingerprint = self
            .cache
            .fingerprint(key_text, signature_text, self.message());
        if (self.associated.is_none() || same_text_as_associated)
            && self.cache.contains(&fingerprint)
        {
            return Check::Accepted;
        }
        let (key, key_der) = match &self.associated {
            Some(associated) if same_text_as_associated => {
                (associated.key.clone(), associated.der.clone())
            }
            _ => match parse_public_key(key_text) {
                Ok(parsed) => parsed,
                Err(error) => return Check::Rejected(error),
            },
        };
        if let Some(associated) = &self.associated {
            if !bool::from(associated.der.ct_eq(&key_der)) {
                return Check::Rejected(SignatureError::OtherKey);
            }
        }
        let signature = match decode_signature(signature_text) {
            Ok(signature) => signature,
            Err(error) => return Check::Rejected(error),
        };
        Check::Verify(Box::new(PendingVerification {
            key,
            key_der,
            key_text: key_text.to_string(),
            signature,
            message: self.message().to_vec(),
            fingerprint,
        }))
    }

    /// The last step, with the result of [`PendingVerification::verify`]:
    /// caches a good signature and, in default mode, associates its key if
    /// no key is associated yet.
    ///
    /// # Errors
    /// [`SignatureError::Invalid`] when the signature did not verify;
    /// [`SignatureError::OtherKey`] when another key was associated meanwhile.
    pub fn record(
        &mut self,
        pending: PendingVerification,
        verified: bool,
    ) -> Result<(), SignatureError> {
        if !verified {
            return Err(SignatureError::Invalid);
        }
        if self.secret.is_none() {
            match &self.associated {
                Some(associated) if !bool::from(associated.der.ct_eq(&pending.key_der)) => {
                    return Err(SignatureError::OtherKey);
                }
                Some(_) => {}
                None => {
                    self.associated = Some(AssociatedKey {
                        der: pending.key_der,
                        text: pending.key_text,
                        key: pending.key,
                    });
                }
            }
        }
        self.cache.insert(pending.fingerprint);
        Ok(())
    }

    /// Runs both steps at once; for callers with no lock to release.
    ///
    /// # Errors
    /// As [`check`](Self::check) and [`record`](Self::record).
    pub fn authorize(&mut self, credentials: Credentials<'_>) -> Result<(), SignatureError> {
        match self.check(credentials) {
            Check::Accepted => Ok(()),
            Check::Rejected(error) => Err(error),
            Check::Verify(pending) => {
                let verified = pending.verify();
                self.record(*pending, verified)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Vectors made by openssl (`fixtures/signatures/make-vectors.sh`).
    const VECTORS: &str = include_str!("../../../fixtures/signatures/vectors.tsv");

    struct Vector {
        name: &'static str,
        key: &'static str,
        signature: &'static str,
        message: &'static str,
        valid: bool,
    }

    fn vectors() -> Vec<Vector> {
        VECTORS
            .lines()
            .map(|line| {
                let fields: Vec<&str> = line.split('\t').collect();
                Vector {
                    name: fields[0],
                    key: fields[1],
                    signature: fields[2],
                    message: fields[3],
                    valid: fields[4] == "valid",
                }
            })
            .collect()
    }

    fn vector(name: &str) -> Vector {
        vectors().into_iter().find(|v| v.name == name).unwrap()
    }

    fn credentials(vector: &Vector) -> Credentials<'_> {
        Credentials {
            public_key: Some(vector.key),
            signature: Some(vector.signature),
        }
    }

    fn policy_for(message: &str) -> SignaturePolicy {
        let secret = (message != DEFAULT_MESSAGE).then(|| message.to_string());
        SignaturePolicy::new(secret, [9; 32], 16)
    }

    #[test]
    fn openssl_vectors() {
        let all = vectors();
        assert!(all.len() >= 14);
        for vector in &all {
            let mut policy = policy_for(vector.message);
            let outcome = policy.authorize(credentials(vector));
            assert_eq!(
                outcome.is_ok(),
                vector.valid,
                "{}: {outcome:?}",
                vector.name
            );
            if let Err(error) = outcome {
                let answer = error.to_agent_error();
                assert_eq!(answer.status(), 403, "{}", vector.name);
                let expected = if vector.signature.is_empty() {
                    "Missing request signature headers"
                } else {
                    "Invalid request signature"
                };
                assert_eq!(answer.message(), expected, "{}", vector.name);
            }
        }
    }

    #[test]
    fn unsupported_keys_are_named_in_the_details() {
        for (name, expected) in [
            ("rsa-key", "Unsupported public key type"),
            ("p384-wrong-curve", "only P-256 is accepted"),
        ] {
            let error = policy_for(DEFAULT_MESSAGE)
                .authorize(credentials(&vector(name)))
                .unwrap_err();
            assert!(
                error.to_agent_error().details().contains(expected),
                "{name}: {error:?}"
            );
        }
    }

    #[test]
    fn missing_headers() {
        let mut policy = policy_for(DEFAULT_MESSAGE);
        let good = vector("p256-a-good");
        for credentials in [
            Credentials::default(),
            Credentials {
                public_key: Some(good.key),
                signature: None,
            },
            Credentials {
                public_key: None,
                signature: Some(good.signature),
            },
            Credentials {
                public_key: Some(""),
                signature: Some(good.signature),
            },
        ] {
            let error = policy.authorize(credentials).unwrap_err();
            assert_eq!(error, SignatureError::Missing);
            assert_eq!(
                error.to_agent_error().message(),
                "Missing request signature headers"
            );
            assert_eq!(error.to_agent_error().details(), "Unauthorized");
        }
        assert!(!policy.is_associated());
    }

    #[test]
    fn default_mode_pins_the_first_valid_key_only() {
        let mut policy = policy_for(DEFAULT_MESSAGE);
        // A bad signature with a parseable key does not pin the agent.
        assert!(policy
            .authorize(credentials(&vector("p256-a-signature-for-b")))
            .is_err());
        assert!(!policy.is_associated());
        policy
            .authorize(credentials(&vector("p256-a-good")))
            .unwrap();
        assert!(policy.is_associated());
        assert_eq!(
            policy.authorize(credentials(&vector("p256-b-good"))),
            Err(SignatureError::OtherKey)
        );
        // The pinned key keeps working, from the cache.
        assert!(matches!(
            policy.check(credentials(&vector("p256-a-good"))),
            Check::Accepted
        ));
    }

    #[test]
    fn secret_mode_accepts_every_key_that_signs_the_secret() {
        let mut policy = policy_for("berth-test-secret");
        assert!(policy.is_associated());
        policy
            .authorize(credentials(&vector("p256-a-secret")))
            .unwrap();
        policy
            .authorize(credentials(&vector("p256-b-secret")))
            .unwrap();
        // A signature over the default message is not a signature over the secret.
        assert_eq!(
            policy.authorize(credentials(&vector("p256-a-good"))),
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn a_verified_signature_is_cached() {
        let mut policy = policy_for(DEFAULT_MESSAGE);
        let good = vector("p256-a-good");
        assert!(matches!(policy.check(credentials(&good)), Check::Verify(_)));
        policy.authorize(credentials(&good)).unwrap();
        assert!(matches!(policy.check(credentials(&good)), Check::Accepted));
        // Another association race: a key verified elsewhere meanwhile.
        let mut raced = policy_for(DEFAULT_MESSAGE);
        let Check::Verify(pending_b) = raced.check(credentials(&vector("p256-b-good"))) else {
            panic!()
        };
        raced.authorize(credentials(&good)).unwrap();
        assert_eq!(
            raced.record(*pending_b, true),
            Err(SignatureError::OtherKey)
        );
    }

    proptest! {
        #[test]
        fn arbitrary_headers_never_panic_and_never_pass(key in ".*", signature in ".*") {
            for message in [DEFAULT_MESSAGE, "a-secret"] {
                let mut policy = policy_for(message);
                let outcome = policy.authorize(Credentials { public_key: Some(&key), signature: Some(&signature) });
                prop_assert!(outcome.is_err());
            }
        }

        #[test]
        fn arbitrary_bytes_as_key_and_signature_never_pass(
            key in proptest::collection::vec(any::<u8>(), 0..200),
            signature in proptest::collection::vec(any::<u8>(), 0..100),
        ) {
            use base64::Engine as _;
            let key = hex::encode(&key);
            let signature = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&signature);
            let mut policy = policy_for(DEFAULT_MESSAGE);
            let outcome = policy.authorize(Credentials { public_key: Some(&key), signature: Some(&signature) });
            prop_assert!(outcome.is_err());
        }

        #[test]
        fn a_good_key_with_arbitrary_signature_bytes_never_passes(signature in proptest::collection::vec(any::<u8>(), 64..=64)) {
            use base64::Engine as _;
            let good = vector("p256-a-good");
            let encoded = base64::engine::general_purpose::STANDARD_NO_PAD.encode(&signature);
            prop_assume!(encoded != good.signature);
            let mut policy = policy_for(DEFAULT_MESSAGE);
            let outcome = policy.authorize(Credentials { public_key: Some(good.key), signature: Some(&encoded) });
            prop_assert!(outcome.is_err());
        }
    }
}
