//! The tunnel's SSH client against a deliberately bad server (the
//! scripted server of `support/scripted_ssh.rs`, after a real key
//! exchange and login): each hostile behaviour ends the session with a
//! clear reason, in bounded time, and with bounded memory. The peak heap
//! growth of each is printed (`--no-capture`) and bounded here; the
//! tunnel driver's reconnect with backoff after any session end is tested
//! in `tests/tunnel.rs`.

mod support;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use berth_adapters::tunnel::ssh::SshSession;
use support::scripted_ssh::{chisel_open, client_config, string, ScriptedServer};

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

const MSG_IGNORE: u8 = 2;
const MSG_KEXINIT: u8 = 20;
const MSG_GLOBAL_REQUEST: u8 = 80;
const MSG_REQUEST_SUCCESS: u8 = 81;
const MSG_CHANNEL_OPEN_CONFIRMATION: u8 = 91;
const MSG_CHANNEL_OPEN_FAILURE: u8 = 92;
const MSG_CHANNEL_WINDOW_ADJUST: u8 = 93;
const MSG_CHANNEL_DATA: u8 = 94;

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
        script.abort();
        held.abort();
        reason
    })
}

/// Opens a chisel channel to the allowed target and waits for the
/// client's confirmation; returns the client's channel ID.
async fn open_channel(server: &mut ScriptedServer, target_of: &str) -> u32 {
    server
        .send(&chisel_open(7, 1 << 20, target_of))
        .await
        .unwrap();
    let confirmation = server
        .receive_kind(MSG_CHANNEL_OPEN_CONFIRMATION)
        .await
        .unwrap();
    u32::from_be_bytes(confirmation[5..9].try_into().unwrap())
}

fn data(channel: u32, bytes: &[u8]) -> Vec<u8> {
    [
        &[MSG_CHANNEL_DATA][..],
        &channel.to_be_bytes(),
        &string(bytes),
    ]
    .concat()
}

#[test]
fn a_4_gib_packet_length_is_refused_without_allocating_it() {
    let reason = against("4 GiB packet", |server, _| async move {
        let mut sender = server.drain();
        sender
            .send_raw(&[0xff, 0xff, 0xff, 0xf0, 0, 0, 0, 0])
            .await
            .ok();
        std::future::pending::<()>().await;
    });
    assert!(reason.contains("bad packet length"), "{reason}");
}

#[test]
fn a_window_grown_past_2_32_ends_the_session() {
    let reason = against(
        "window past 2^32",
        |mut server, target: String| async move {
            let id = open_channel(&mut server, &target).await;
            let adjust = [
                &[MSG_CHANNEL_WINDOW_ADJUST][..],
                &id.to_be_bytes(),
                &u32::MAX.to_be_bytes(),
            ]
            .concat();
            let mut sender = server.drain();
            for _ in 0..3 {
                sender.send(&adjust).await.ok();
            }
            std::future::pending::<()>().await;
        },
    );
    assert!(reason.contains("window past 2^32"), "{reason}");
}

#[test]
fn data_beyond_the_window_ends_the_session() {
    let reason = against(
        "data beyond the window",
        |mut server, target: String| async move {
            let id = open_channel(&mut server, &target).await;
            let mut sender = server.drain();
            // The window is 2 MiB; the consumer never reads, so once the
            // kernel's socket buffers are full no more is granted, and this
            // server goes on regardless.
            let chunk = vec![b'x'; 32 * 1024];
            for _ in 0..2_000 {
                if sender.send(&data(id, &chunk)).await.is_err() {
                    break;
                }
                tokio::task::yield_now().await;
            }
            std::future::pending::<()>().await;
        },
    );
    assert!(
        reason.contains("more data than the channel's window"),
        "{reason}"
    );
}

#[test]
fn data_on_unknown_channels_is_dropped_and_the_session_lives_on() {
    let reason = against("data on unknown channels", |mut server, _| async move {
        let chunk = vec![b'y'; 1024];
        for n in 0..10_000u32 {
            server.send(&data(1000 + n, &chunk)).await.unwrap();
        }
        // Still answering: a ping the server asks for comes back.
        let ping = [&[MSG_GLOBAL_REQUEST][..], &string(b"ping"), &[1]].concat();
        server.send(&ping).await.unwrap();
        server.receive_kind(MSG_REQUEST_SUCCESS).await.unwrap();
        // Then the server goes away.
        drop(server);
    });
    assert!(reason.contains("closed the connection"), "{reason}");
}

#[test]
fn channel_opens_beyond_the_cap_are_refused() {
    let reason = against(
        "thousands of channel opens",
        |mut server, target: String| async move {
            for n in 0..2_000u32 {
                server
                    .send(&chisel_open(n, 1 << 20, &target))
                    .await
                    .unwrap();
            }
            let (mut confirmed, mut refused) = (0, 0);
            while confirmed + refused < 2_000 {
                let answer = server.receive().await.unwrap();
                match answer[0] {
                    MSG_CHANNEL_OPEN_CONFIRMATION => confirmed += 1,
                    MSG_CHANNEL_OPEN_FAILURE => refused += 1,
                    _ => {}
                }
            }
            // The client's cap in this configuration is 16.
            assert_eq!(confirmed, 16, "{refused} refused");
            drop(server);
        },
    );
    assert!(reason.contains("closed the connection"), "{reason}");
}

#[test]
fn a_rekey_that_never_completes_ends_the_session() {
    let reason = against("a re-key never completed", |server, _| async move {
        let mut sender = server.drain();
        let kexinit = berth_adapters::tunnel::ssh::kex::server::kexinit([9; 16]);
        assert_eq!(kexinit[0], MSG_KEXINIT);
        sender.send(&kexinit).await.unwrap();
        std::future::pending::<()>().await;
    });
    assert!(reason.contains("did not finish a key exchange"), "{reason}");
}

#[test]
fn a_server_sending_only_ignore_is_not_alive() {
    let reason = against("IGNORE forever", |server, _| async move {
        let mut sender = server.drain();
        let ignore = [&[MSG_IGNORE][..], &string(b"nothing")].concat();
        loop {
            if sender.send(&ignore).await.is_err() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    assert!(reason.contains("stopped answering keepalives"), "{reason}");
}

#[test]
fn a_server_stalled_mid_packet_is_left() {
    let reason = against("stalled mid-packet", |server, _| async move {
        let mut sender = server.drain();
        let packet = sender.seal(&[MSG_IGNORE, 0, 0, 0, 0]);
        sender.send_raw(&packet[..packet.len() / 2]).await.unwrap();
        std::future::pending::<()>().await;
    });
    assert!(reason.contains("stopped answering keepalives"), "{reason}");
}

#[test]
fn a_host_key_that_changes_on_rekey_is_refused() {
    let reason = against("host key changed on re-key", |mut server, _| async move {
        let _ = server.rekey([8; 32]).await;
        std::future::pending::<()>().await;
    });
    assert!(reason.contains("fingerprint"), "{reason}");
}
