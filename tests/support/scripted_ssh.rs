//! A scripted SSH server for the tunnel client's tests and fuzzing: a
//! real key exchange (Ed25519 host key, curve25519, AES-GCM) over an
//! in-memory pipe, then whatever the test or the fuzzer sends, well formed
//! or not. Not chisel: the hostile behaviours below are what chisel cannot
//! be made to do.
#![allow(dead_code)]

use std::io;
use std::time::Duration;

use berth_adapters::tunnel::ssh::kex::{self, server, Ephemeral, Transcript};
use berth_adapters::tunnel::ssh::transport::{Sealing, CLIENT_VERSION};
use berth_adapters::tunnel::ssh::ClientConfig;
use tokio::io::{
    AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, DuplexStream, ReadHalf, WriteHalf,
};

pub const HOST_SEED: [u8; 32] = [5; 32];
pub const SERVER_VERSION: &str = "SSH-2.0-scripted";
const MSG_KEXINIT: u8 = 20;
const MSG_NEWKEYS: u8 = 21;
const MSG_KEX_ECDH_INIT: u8 = 30;

/// The client's configuration for this server: its host key's fingerprint
/// and `allowed_target` as the only place it may dial.
pub fn client_config(allowed_target: &str) -> ClientConfig {
    ClientConfig {
        identification: CLIENT_VERSION.into(),
        user: "scripted".into(),
        password: String::from("secret").into(),
        fingerprint: berth_domain::edge::fingerprint::sha256_fingerprint(&server::host_key_blob(
            HOST_SEED,
        )),
        allowed_target: allowed_target.into(),
        dial_timeout: Duration::from_secs(1),
        keepalive: Duration::from_secs(5),
        max_channels: 16,
    }
}

/// The server's sending half: its writer and the sealing of the moment.
pub struct Outgoing {
    writer: WriteHalf<DuplexStream>,
    outbound: Sealing,
}

impl Outgoing {
    pub async fn send(&mut self, payload: &[u8]) -> io::Result<()> {
        let packet = self.outbound.seal(payload);
        self.send_raw(&packet).await
    }

    /// Bytes as they are, for what no well-behaved sealing would make.
    pub async fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.writer.write_all(bytes).await?;
        self.writer.flush().await
    }

    /// A sealed packet, as the next one would be sealed.
    pub fn seal(&mut self, payload: &[u8]) -> Vec<u8> {
        self.outbound.seal(payload)
    }
}

pub struct ScriptedServer {
    reader: BufReader<ReadHalf<DuplexStream>>,
    out: Outgoing,
    inbound: Sealing,
    session_id: Vec<u8>,
}

impl std::ops::Deref for ScriptedServer {
    type Target = Outgoing;
    fn deref(&self) -> &Outgoing {
        &self.out
    }
}

impl std::ops::DerefMut for ScriptedServer {
    fn deref_mut(&mut self) -> &mut Outgoing {
        &mut self.out
    }
}

impl ScriptedServer {
    /// Identification and the first key exchange; with `accept_login`,
    /// the service request and the password login are accepted too.
    pub async fn handshake(stream: DuplexStream, accept_login: bool) -> io::Result<Self> {
        let (read_half, mut writer) = tokio::io::split(stream);
        let mut reader = BufReader::new(read_half);
        writer
            .write_all(format!("{SERVER_VERSION}\r\n").as_bytes())
            .await?;
        let mut line = Vec::new();
        reader.read_until(b'\n', &mut line).await?;
        let mut server = ScriptedServer {
            reader,
            out: Outgoing {
                writer,
                outbound: Sealing::clear(),
            },
            inbound: Sealing::clear(),
            session_id: Vec::new(),
        };
        let theirs = server.receive().await?;
        server.exchange(theirs, HOST_SEED).await?;
        if accept_login {
            let _service_request = server.receive().await?;
            let accept = [&[6u8, 0, 0, 0, 12][..], b"ssh-userauth"].concat();
            server.send(&accept).await?;
            let _login = server.receive().await?;
            server.send(&[52]).await?;
        }
        Ok(server)
    }

    /// One key exchange after the client's KEXINIT `theirs` (the first,
    /// which sets the session ID), with this server's KEXINIT sent now.
    async fn exchange(&mut self, theirs: Vec<u8>, host_seed: [u8; 32]) -> io::Result<()> {
        let ours = server::kexinit([2; 16]);
        self.send(&ours).await?;
        self.finish_exchange(&ours, &theirs, host_seed, [4; 32])
            .await
    }

    /// A re-key the server starts, signed with `host_seed`'s key.
    pub async fn rekey(&mut self, host_seed: [u8; 32]) -> io::Result<()> {
        // The client answers a KEXINIT with its own, then its ECDH init.
        let ours = server::kexinit([3; 16]);
        self.send(&ours).await?;
        let theirs = self.receive_kind(MSG_KEXINIT).await?;
        self.finish_exchange(&ours, &theirs, host_seed, [6; 32])
            .await
    }

    /// Both KEXINITs known: the ECDH reply, NEWKEYS both ways, new keys.
    async fn finish_exchange(
        &mut self,
        ours: &[u8],
        theirs: &[u8],
        host_seed: [u8; 32],
        ephemeral_seed: [u8; 32],
    ) -> io::Result<()> {
        let init = self.receive_kind(MSG_KEX_ECDH_INIT).await?;
        let transcript = Transcript {
            client_version: CLIENT_VERSION,
            server_version: SERVER_VERSION,
            client_kexinit: theirs,
            server_kexinit: ours,
        };
        let ephemeral = Ephemeral::new(ephemeral_seed);
        let (reply, exchange) =
            server::reply(&init, &ephemeral, &transcript, host_seed).map_err(io::Error::other)?;
        self.send(&reply).await?;
        self.send(&[MSG_NEWKEYS]).await?;
        let _newkeys = self.receive_kind(MSG_NEWKEYS).await?;
        if self.session_id.is_empty() {
            self.session_id = exchange.hash.clone();
        }
        let agreed = kex::negotiate(ours).map_err(io::Error::other)?;
        let keys = exchange.keys(&self.session_id, &agreed);
        self.out.outbound = Sealing::gcm(agreed.cipher_in, &keys.key_in, &keys.iv_in);
        self.inbound = Sealing::gcm(agreed.cipher_out, &keys.key_out, &keys.iv_out);
        Ok(())
    }

    /// The next message the client sends.
    pub async fn receive(&mut self) -> io::Result<Vec<u8>> {
        self.inbound.read_packet(&mut self.reader).await
    }

    /// The next message of `kind`, skipping others (keepalives and the like).
    pub async fn receive_kind(&mut self, kind: u8) -> io::Result<Vec<u8>> {
        loop {
            let payload = self.receive().await?;
            if payload.first() == Some(&kind) {
                return Ok(payload);
            }
        }
    }

    /// From here on the client's messages are read and dropped (so it never
    /// blocks on a full pipe); the returned side only sends.
    pub fn drain(self) -> Sender {
        let ScriptedServer {
            mut reader, out, ..
        } = self;
        let drain = tokio::spawn(async move {
            let mut sink = [0u8; 4096];
            while matches!(reader.read(&mut sink).await, Ok(n) if n > 0) {}
        });
        Sender { out, drain }
    }
}

/// The sending side of a server whose input is drained; dropping it is
/// the server going away.
pub struct Sender {
    out: Outgoing,
    drain: tokio::task::JoinHandle<()>,
}

impl std::ops::Deref for Sender {
    type Target = Outgoing;
    fn deref(&self) -> &Outgoing {
        &self.out
    }
}

impl std::ops::DerefMut for Sender {
    fn deref_mut(&mut self) -> &mut Outgoing {
        &mut self.out
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.drain.abort();
    }
}

/// An SSH string: a big-endian length, then the bytes.
pub fn string(bytes: &[u8]) -> Vec<u8> {
    [&(bytes.len() as u32).to_be_bytes()[..], bytes].concat()
}

/// chisel's channel open for `target` (raw bytes, not an SSH string), as
/// server channel `id`, with `window`.
pub fn chisel_open(id: u32, window: u32, target: &str) -> Vec<u8> {
    [
        &[90u8][..],
        &string(b"chisel"),
        &id.to_be_bytes(),
        &window.to_be_bytes(),
        &32_768u32.to_be_bytes(),
        target.as_bytes(),
    ]
    .concat()
}
