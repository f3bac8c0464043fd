//! The cost of a signature check: a full verification (what a new
//! signature costs) versus a cache hit (what a repeated one costs).
//!
//!     cargo bench --bench signature

use std::hint::black_box;
use std::time::Instant;

use berth_domain::signature::{Check, Credentials, SignaturePolicy};

const VECTORS: &str = include_str!("../fixtures/signatures/vectors.tsv");

fn credentials(name: &str) -> (String, String) {
    let line = VECTORS
        .lines()
        .find(|line| line.starts_with(&format!("{name}\t")))
        .expect("a vector");
    let fields: Vec<&str> = line.split('\t').collect();
    (fields[1].to_string(), fields[2].to_string())
}

/// Nanoseconds per call of `work`, over enough calls to take ~1 s.
fn per_call(mut work: impl FnMut()) -> f64 {
    let mut calls = 1u64;
    loop {
        let started = Instant::now();
        for _ in 0..calls {
            work();
        }
        let elapsed = started.elapsed();
        if elapsed.as_millis() >= 1000 {
            return elapsed.as_nanos() as f64 / calls as f64;
        }
        calls *= 2;
    }
}

fn main() {
    println!("| check | key | ns per request | relative to a cache hit |");
    println!("|---|---|---|---|");
    for name in ["p256-a-good", "ed25519-good"] {
        let (key, signature) = credentials(name);
        let signed = Credentials {
            public_key: Some(&key),
            signature: Some(&signature),
        };
        // Uncached: a fresh policy each time (parse the key, verify).
        let uncached = per_call(|| {
            let mut policy = SignaturePolicy::new(None, [1; 32], 16);
            black_box(policy.authorize(black_box(signed)).is_ok());
        });
        // Verification alone, the key already parsed (a pinned agent seeing
        // a new signature, as Portainer sends with every request).
        let mut pinned = SignaturePolicy::new(None, [1; 32], 16);
        pinned.authorize(signed).unwrap();
        let Check::Verify(pending) = SignaturePolicy::new(None, [1; 32], 16).check(signed) else {
            panic!("a fresh policy verifies")
        };
        let verify_only = per_call(|| {
            black_box(pending.verify());
        });
        // Cached: the same signature again.
        let cached = per_call(|| {
            black_box(matches!(pinned.check(black_box(signed)), Check::Accepted));
        });
        let key_type = name.split('-').next().unwrap();
        println!(
            "| uncached (parse + verify) | {key_type} | {uncached:.0} | {:.0}x |",
            uncached / cached
        );
        println!(
            "| verify only | {key_type} | {verify_only:.0} | {:.0}x |",
            verify_only / cached
        );
        println!("| cached | {key_type} | {cached:.0} | 1x |");
    }
}
