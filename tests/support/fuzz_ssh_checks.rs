//! The properties of the tunnel's SSH client under hostile bytes, checked
//! by the `ssh_packets`, `ssh_messages` and `ssh_session` fuzz targets and
//! replayed by `tests/fuzz_regressions.rs`. Each function panics only when
//! a property fails.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use berth_adapters::tunnel::ssh::kex::{self, Ephemeral, Transcript};
use berth_adapters::tunnel::ssh::transport::{self, Sealing, CIPHERS, CLIENT_VERSION};
use berth_adapters::tunnel::ssh::SshSession;
use tokio::io::BufReader;

#[path = "scripted_ssh.rs"]
mod scripted_ssh;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
    })
}

/// Whether any thread panicked since the hook was installed: a panic in a
/// task the session spawned is caught by tokio, not by the caller.
fn panics_seen() -> &'static AtomicBool {
    static SEEN: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    SEEN.get_or_init(|| {
        let seen = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&seen);
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            flag.store(true, Ordering::SeqCst);
            previous(info);
        }));
        seen
    })
}

/// The protection chosen by a byte: clear, or AES-GCM with one of the
/// ciphers and fixed keys.
fn sealing(selector: u8) -> Sealing {
    match selector as usize % (CIPHERS.len() + 1) {
        0 => Sealing::clear(),
        n => {
            let cipher = CIPHERS[n - 1];
            Sealing::gcm(cipher, &vec![7u8; transport::key_len(cipher)], &[9u8; 12])
        }
    }
}

/// The packet layer: any bytes give payloads no longer than what came, or
/// a clean error, never a panic or an allocation for bytes that never
/// came; and what is sealed reads back the same.
pub fn ssh_packets(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    runtime().block_on(async {
        let mut inbound = sealing(selector);
        let mut reader = rest;
        let mut read = 0;
        while let Ok(payload) = inbound.read_packet(&mut reader).await {
            read += 1;
            assert!(
                payload.len() <= rest.len(),
                "a payload longer than the input"
            );
            assert!(read <= rest.len(), "more packets than bytes");
        }
        let mut outbound = sealing(selector);
        let mut inbound = sealing(selector);
        let packet = outbound.seal(rest);
        let mut wire = &packet[..];
        assert_eq!(inbound.read_packet(&mut wire).await.unwrap(), rest);
    });
}

/// The decoders that face the server before any key is shared: version
/// lines, KEXINIT and the ECDH reply. A forged reply never verifies.
pub fn ssh_messages(data: &[u8]) {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let _ = kex::negotiate(rest);
    let ephemeral = Ephemeral::new([selector; 32]);
    let ours = kex::client_kexinit([1; 16]);
    let transcript = Transcript {
        client_version: CLIENT_VERSION,
        server_version: "SSH-2.0-fuzz",
        client_kexinit: &ours,
        server_kexinit: rest,
    };
    for kind in ["ecdsa-sha2-nistp256", "ssh-ed25519"] {
        let accepted = kex::finish(rest, &ephemeral, &transcript, kind, |_| Ok(()));
        assert!(accepted.is_err(), "a reply nobody signed was accepted");
    }
    runtime().block_on(async {
        let mut reader = BufReader::new(rest);
        if let Ok(version) =
            transport::exchange_versions(&mut reader, &mut Vec::new(), CLIENT_VERSION).await
        {
            assert!(
                version.starts_with("SSH-") && version.len() < 256,
                "{version:?}"
            );
        }
    });
}

/// A whole session against a scripted server: a real key exchange, then
/// (with the first byte odd, after the server accepts the login itself)
/// fuzz-chosen messages, each a big-endian u16 length and its bytes,
/// sealed as the server would. The client must end cleanly: `connect`
/// fails with an error, or the session ends with a reason, in bounded
/// (virtual) time, and nothing panics.
pub fn ssh_session(data: &[u8]) {
    let _ = session_outcome(data);
}

/// How a scripted session went: `Some(true)` when the client connected,
/// `Some(false)` when `connect` refused; `None` for empty input.
pub fn session_outcome(data: &[u8]) -> Option<bool> {
    let (&mode, script) = data.split_first()?;
    let seen = panics_seen();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("a runtime");
    let script = script.to_vec();
    let ended = runtime.block_on(async move {
        let (client_end, server_end) = tokio::io::duplex(64 * 1024);
        // Loopback, and nothing listens there: a dial fails at once.
        let config = scripted_ssh::client_config("127.0.0.1:1");
        let mut client = tokio::spawn(SshSession::connect(client_end, config));
        let server_side = serve(server_end, mode & 1 == 1, &script).await;
        // Time to act on the script; a client still waiting for a message
        // that never comes waits for nothing else, so (virtual) time runs.
        let early = tokio::time::timeout(Duration::from_secs(60), &mut client).await;
        // Then the server goes away: the client must notice and end.
        drop(server_side);
        let connected = match early {
            Ok(done) => done,
            Err(_) => match tokio::time::timeout(Duration::from_secs(600), client).await {
                Ok(done) => done,
                Err(_) => return Err("connect never returned after the server left".to_string()),
            },
        };
        match connected {
            Err(join) => Err(format!("connect panicked: {join}")),
            Ok(Err(_refused)) => Ok(false),
            Ok(Ok(session)) => tokio::time::timeout(Duration::from_secs(600), session.closed())
                .await
                .map(|_| true)
                .map_err(|_| "the session never ended after the server left".to_string()),
        }
    });
    drop(runtime);
    assert!(!seen.load(Ordering::SeqCst), "a task panicked");
    Some(ended.unwrap())
}

/// The server's side: the handshake, then the script, each message a
/// big-endian u16 length and its bytes. Returned open (`None` when the
/// handshake failed): the caller decides when the server leaves.
async fn serve(
    stream: tokio::io::DuplexStream,
    accept_login: bool,
    script: &[u8],
) -> Option<scripted_ssh::Sender> {
    let server = scripted_ssh::ScriptedServer::handshake(stream, accept_login)
        .await
        .ok()?;
    let mut sender = server.drain();
    let mut rest = script;
    while rest.len() >= 2 {
        let length = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let (message, tail) = rest[2..].split_at(length);
        rest = tail;
        if sender.send(message).await.is_err() {
            break;
        }
        // Let the client act on each message before the next.
        tokio::task::yield_now().await;
    }
    Some(sender)
}
