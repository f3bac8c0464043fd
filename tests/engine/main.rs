//! Tests against a real Docker engine through a running berth. They need
//! `BERTH_TEST_DOCKER_HOST` (set by `scripts/test`); with
//! `BERTH_SKIP_ENGINE_TESTS=1` the engine tests are skipped, loudly.

#[path = "../support/mod.rs"]
mod support;

mod api;
mod browse;
mod client_certs;
mod cluster;
mod console;
mod docker_cli;
mod process;
mod swarm;
mod transparency;

use support::berth_process::{engine_host, BerthProcess};

/// A berth in front of the test engine, or `None` when engine tests are
/// skipped on purpose.
fn berth_for_engine() -> Option<(BerthProcess, String)> {
    let host = engine_host()?;
    let berth = BerthProcess::start(&[("DOCKER_HOST", &host)]);
    Some((berth, host))
}

/// A name no other test (or earlier run) uses.
fn unique(name: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "berth-test-{name}-{}-{nanos}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

const IMAGE: &str = "berth-test/busybox:latest";
