//! The cost of a signature check: a full verification (what a new
//! signature costs) versus a cache hit (what a repeated one costs).
//!
//!     cargo bench --bench signature

use std::hint::black_box;
use std::time::Instant;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use berth_domain::signature::cache::VerifiedCache;
use berth_domain::signature::{Check, Credentials, SignaturePolicy};

/// Counts the bytes allocated and not yet freed, to give the signature
/// cache's real size.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size(), Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

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
    // Bounded: no bigger after a million than after a hundred thousand.
    cache_after_fresh_signatures(10_000);
    cache_after_fresh_signatures(100_000);
    cache_after_fresh_signatures(1_000_000);
    println!();
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
        if key_type == "p256" {
            let p256_crate = p256_crate_verify(&key, &signature);
            println!(
                "| verify only, the p256 crate | {key_type} | {p256_crate:.0} | {:.0}x |",
                p256_crate / cached
            );
        }
    }
}

/// The same verification with the RustCrypto p256 crate (what berth used
/// before AWS-LC), for comparison in the same run.
fn p256_crate_verify(key_hex: &str, signature_b64: &str) -> f64 {
    use base64::Engine as _;
    use md5::Digest as _;
    use p256::ecdsa::signature::hazmat::PrehashVerifier as _;
    use p256::pkcs8::DecodePublicKey as _;
    let key =
        p256::ecdsa::VerifyingKey::from_public_key_der(&hex::decode(key_hex).unwrap()).unwrap();
    let raw = base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(signature_b64)
        .unwrap();
    let signature = p256::ecdsa::Signature::from_slice(&raw).unwrap();
    let digest = md5::Md5::digest(berth_domain::signature::DEFAULT_MESSAGE.as_bytes());
    assert!(key.verify_prehash(&digest, &signature).is_ok());
    per_call(|| {
        black_box(key.verify_prehash(black_box(&digest), &signature).is_ok());
    })
}

/// The cache after `fresh` signatures each seen once (as Portainer's are):
/// its entries and the bytes it holds, counted by the allocator.
fn cache_after_fresh_signatures(fresh: u32) {
    let before = LIVE.load(Ordering::Relaxed);
    let mut cache = VerifiedCache::new([3; 32], berth::signature::CACHE_CAPACITY);
    for n in 0..fresh {
        let signature = n.to_string();
        cache.insert(cache.fingerprint("key", &signature, b"Portainer-App"));
    }
    let held = LIVE.load(Ordering::Relaxed) - before;
    println!(
        "signature cache after {fresh} fresh signatures: {} entries, {} KiB",
        cache.len(),
        held / 1024
    );
    black_box(&cache);
}
