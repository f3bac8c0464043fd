//! The properties of the tunnel's SSH client under hostile bytes, checked
//! by the `ssh_packets`, `ssh_messages` and `ssh_session` fuzz targets and
//! replayed by `tests/fuzz_regressions.rs`. Each function panics only when
//! a property fails.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use berth_adapters::tunnel::ssh::kex::{self, server, Ephemeral, Transcript};
use berth_adapters::tunnel::ssh::transport::{self, Sealing, CIPHERS, CLIENT_VERSION};
use berth_adapters::tunnel::ssh::{ClientConfig, SshSession};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

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
        if let Ok(version) = transport::exchange_versions(&mut reader, &mut Vec::new()).await {
            assert!(
                version.starts_with("SSH-") && version.len() < 256,
                "{version:?}"
            );
        }
    });
}

const HOST_SEED: [u8; 32] = [5; 32];
const SERVER_VERSION: &str = "SSH-2.0-scripted";

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
        let config = ClientConfig {
            user: "fuzz".into(),
            password: String::from("secret").into(),
            fingerprint: berth_domain::edge::fingerprint::sha256_fingerprint(
                &server::host_key_blob(HOST_SEED),
            ),
            // Loopback, and nothing listens there: a dial fails at once.
            allowed_target: "127.0.0.1:1".into(),
            dial_timeout: Duration::from_secs(1),
            keepalive: Duration::from_secs(5),
        };
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

/// The server's side, kept until dropped.
struct ServerSide {
    _writer: Option<tokio::io::WriteHalf<tokio::io::DuplexStream>>,
    drain: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for ServerSide {
    fn drop(&mut self) {
        if let Some(drain) = &self.drain {
            drain.abort();
        }
    }
}

/// The server's side: identification, one key exchange, the login when
/// `accept_login`, then the script. Returned open: the caller decides when
/// the server leaves.
async fn serve(stream: tokio::io::DuplexStream, accept_login: bool, script: &[u8]) -> ServerSide {
    let (read_half, mut writer) = tokio::io::split(stream);
    let mut reader = BufReader::new(read_half);
    let exchanged = async {
        writer
            .write_all(format!("{SERVER_VERSION}\r\n").as_bytes())
            .await?;
        let mut line = Vec::new();
        reader.read_until(b'\n', &mut line).await?;
        let mut clear_in = Sealing::clear();
        let mut clear_out = Sealing::clear();
        let theirs = clear_in.read_packet(&mut reader).await?;
        let ours = server::kexinit([2; 16]);
        writer.write_all(&clear_out.seal(&ours)).await?;
        let init = clear_in.read_packet(&mut reader).await?;
        let transcript = Transcript {
            client_version: CLIENT_VERSION,
            server_version: SERVER_VERSION,
            client_kexinit: &theirs,
            server_kexinit: &ours,
        };
        let ephemeral = Ephemeral::new([4; 32]);
        let (reply, exchange) = server::reply(&init, &ephemeral, &transcript, HOST_SEED)
            .map_err(std::io::Error::other)?;
        writer.write_all(&clear_out.seal(&reply)).await?;
        writer
            .write_all(&clear_out.seal(&[kex::MSG_NEWKEYS]))
            .await?;
        let _newkeys = clear_in.read_packet(&mut reader).await?;
        let agreed = kex::negotiate(&ours).map_err(std::io::Error::other)?;
        let keys = exchange.keys(&exchange.hash, &agreed);
        let mut outbound = Sealing::gcm(agreed.cipher_in, &keys.key_in, &keys.iv_in);
        if accept_login {
            let mut inbound = Sealing::gcm(agreed.cipher_out, &keys.key_out, &keys.iv_out);
            let _service_request = inbound.read_packet(&mut reader).await?;
            let accept = [&[6u8, 0, 0, 0, 12][..], b"ssh-userauth"].concat();
            writer.write_all(&outbound.seal(&accept)).await?;
            let _login = inbound.read_packet(&mut reader).await?;
            writer.write_all(&outbound.seal(&[52])).await?;
        }
        std::io::Result::Ok(outbound)
    };
    let Ok(mut outbound) = exchanged.await else {
        return ServerSide {
            _writer: None,
            drain: None,
        };
    };
    // What the client sends from here on is read and dropped, so it never
    // blocks on a full pipe.
    let drain = tokio::spawn(async move {
        let mut sink = [0u8; 4096];
        while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
    });
    let mut rest = script;
    while rest.len() >= 2 {
        let length = usize::from(u16::from_be_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let (message, tail) = rest[2..].split_at(length);
        rest = tail;
        if writer.write_all(&outbound.seal(message)).await.is_err() {
            break;
        }
        // Let the client act on each message before the next.
        tokio::task::yield_now().await;
    }
    ServerSide {
        _writer: Some(writer),
        drain: Some(drain),
    }
}
