//! The tunnel's SSH client against a deliberately bad server (the
//! scripted server of `support/scripted_ssh.rs`, after a real key
//! exchange and login): each hostile behaviour ends the session with a
//! clear reason, in bounded time, and with bounded memory. The peak heap
//! growth of each is printed (`--no-capture`) and bounded here; the
//! tunnel driver's reconnect with backoff after any session end is tested
//! in `tests/tunnel.rs`, and the same scripts against a berth process in
//! `tests/hostile_tunnel.rs`.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use berth_adapters::tunnel::ssh::SshSession;
use support::hostile_scripts as script;
use support::scripted_ssh::{client_config, ScriptedServer};

/// Counts the heap in use and its peak, for the memory bounds.
struct Counting;

static IN_USE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = IN_USE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        IN_USE.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Heap growth over the baseline is kept under this in every case: the
/// channel window (2 MiB) and the pipes, with room to spare; the largest
/// thing a hostile server names (a 4 GiB packet, a 4 GiB window) is far
/// beyond it.
const MEMORY_BOUND: usize = 8 << 20;
/// How long, in (paused, virtual) time, the session may take to end.
const END_WITHIN: Duration = Duration::from_secs(120);

/// Runs `hostile` as the server against a connected client whose only
/// allowed target is a loopback listener that accepts and never reads;
/// returns why the session ended, and checks time and memory.
fn against<F, Fut>(name: &str, hostile: F) -> String
where
    F: FnOnce(ScriptedServer, String) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = listener.local_addr().unwrap().to_string();
        // Accepts and holds connections without reading: a slow consumer.
        let held = tokio::spawn(async move {
            let mut kept = Vec::new();
            while let Ok((stream, _)) = listener.accept().await {
                kept.push(stream);
            }
        });
        let (client_end, server_end) = tokio::io::duplex(256 * 1024);
        let config = client_config(&target);
        let target = target.clone();
        let client = tokio::spawn(SshSession::connect(client_end, config));
        let server = ScriptedServer::handshake(server_end, true).await.unwrap();
        let session = client.await.unwrap().expect("the login goes through");
        let baseline = IN_USE.load(Ordering::Relaxed);
        PEAK.store(baseline, Ordering::Relaxed);
        let script = tokio::spawn(hostile(server, target));
        let reason = tokio::time::timeout(END_WITHIN, session.closed())
            .await
            .unwrap_or_else(|_| panic!("{name}: the session did not end"));
        let peak = PEAK.load(Ordering::Relaxed).saturating_sub(baseline);
        eprintln!(
            "{name}: ended with {reason:?}; peak heap growth {} KiB",
            peak / 1024
        );
        assert!(peak < MEMORY_BOUND, "{name}: {peak} bytes of heap growth");
        // A script's own assertions fail the test.
        script.abort();
        if let Err(ended) = script.await {
            if ended.is_panic() {
                std::panic::resume_unwind(ended.into_panic());
            }
        }
        held.abort();
        reason
    })
}

#[test]
fn a_4_gib_packet_length_is_refused_without_allocating_it() {
    let reason = against("4 GiB packet", script::four_gib_packet);
    assert!(reason.contains("bad packet length"), "{reason}");
}

#[test]
fn a_window_grown_past_2_32_ends_the_session() {
    let reason = against("window past 2^32", script::window_past_2_32);
    assert!(reason.contains("window past 2^32"), "{reason}");
}

#[test]
fn data_beyond_the_window_ends_the_session() {
    // The window is 2 MiB; the consumer never reads, so once the kernel's
    // socket buffers are full no more is granted, and the server goes on
    // regardless.
    let reason = against("data beyond the window", script::data_beyond_the_window);
    assert!(
        reason.contains("more data than the channel's window"),
        "{reason}"
    );
}

#[test]
fn data_on_unknown_channels_is_dropped_and_the_session_lives_on() {
    // The script checks that a ping is still answered, then goes away.
    let reason = against("data on unknown channels", script::data_on_unknown_channels);
    assert!(reason.contains("closed the connection"), "{reason}");
}

#[test]
fn channel_opens_beyond_the_cap_are_refused() {
    let reason = against(
        "thousands of channel opens",
        |server, target: String| async move {
            let (confirmed, refused) = script::channel_flood(server, target, 2_000).await;
            // The client's cap in this configuration is 16.
            assert_eq!(confirmed, 16, "{refused} refused");
        },
    );
    assert!(reason.contains("closed the connection"), "{reason}");
}

#[test]
fn a_rekey_that_never_completes_ends_the_session() {
    let reason = against("a re-key never completed", script::rekey_never_completed);
    assert!(reason.contains("did not finish a key exchange"), "{reason}");
}

#[test]
fn a_server_sending_only_ignore_is_not_alive() {
    let reason = against("IGNORE forever", script::ignore_forever);
    assert!(reason.contains("stopped answering keepalives"), "{reason}");
}

#[test]
fn a_server_stalled_mid_packet_is_left() {
    let reason = against("stalled mid-packet", script::stall_mid_packet);
    assert!(reason.contains("stopped answering keepalives"), "{reason}");
}

#[test]
fn a_host_key_that_changes_on_rekey_is_refused() {
    let reason = against("host key changed on re-key", script::host_key_changed);
    assert!(reason.contains("fingerprint"), "{reason}");
}
