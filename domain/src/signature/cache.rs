//! Remembers (key, signature, message) triples that verified, so the
//! steady-state cost of a signed request is one hash, not an ECDSA check.
//!
//! Entries are fingerprints: SHA-256 under a secret salt chosen at start.
//! An attacker cannot predict a fingerprint, so the timing of a lookup says
//! nothing about which signatures are cached, and the cache never holds a
//! signature itself.

use std::collections::{HashSet, VecDeque};

use sha2::{Digest as _, Sha256};

pub type Fingerprint = [u8; 32];

#[derive(Debug, Clone)]
pub struct VerifiedCache {
    salt: [u8; 32],
    capacity: usize,
    entries: HashSet<Fingerprint>,
    /// Insertion order, for evicting the oldest entry when full.
    order: VecDeque<Fingerprint>,
}

impl VerifiedCache {
    /// `salt` must be secret and random; `capacity` bounds the memory used.
    pub fn new(salt: [u8; 32], capacity: usize) -> Self {
        VerifiedCache {
            salt,
            capacity: capacity.max(1),
            entries: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    pub fn fingerprint(&self, key: &str, signature: &str, message: &[u8]) -> Fingerprint {
        let mut hasher = Sha256::new();
        hasher.update(self.salt);
        // Lengths first, so no two triples share an encoding.
        for part in [key.as_bytes(), signature.as_bytes(), message] {
            hasher.update((part.len() as u64).to_be_bytes());
            hasher.update(part);
        }
        hasher.finalize().into()
    }

    pub fn contains(&self, fingerprint: &Fingerprint) -> bool {
        self.entries.contains(fingerprint)
    }

    pub fn insert(&mut self, fingerprint: Fingerprint) {
        if !self.entries.insert(fingerprint) {
            return;
        }
        self.order.push_back(fingerprint);
        while self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.entries.remove(&oldest);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_oldest_entry_leaves_when_full() {
        let mut cache = VerifiedCache::new([7; 32], 2);
        let [a, b, c] = ["a", "b", "c"].map(|k| cache.fingerprint(k, "s", b"m"));
        cache.insert(a);
        cache.insert(b);
        cache.insert(b);
        cache.insert(c);
        assert_eq!(cache.len(), 2);
        assert!(!cache.contains(&a) && cache.contains(&b) && cache.contains(&c));
    }

    #[test]
    fn fingerprints_depend_on_every_part_and_the_salt() {
        let cache = VerifiedCache::new([1; 32], 8);
        let base = cache.fingerprint("k", "s", b"m");
        assert_ne!(base, cache.fingerprint("k", "s", b"n"));
        assert_ne!(base, cache.fingerprint("ks", "", b"m"));
        assert_ne!(
            base,
            VerifiedCache::new([2; 32], 8).fingerprint("k", "s", b"m")
        );
    }
}
