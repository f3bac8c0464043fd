//! From a fresh stream to an authenticated session: identification, the
//! first key exchange, and password authentication.

use berth_domain::edge::credentials::Zeroizing;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use super::kex::{
    self, Agreed, Ephemeral, Transcript, MSG_KEXINIT, MSG_KEX_ECDH_REPLY, MSG_NEWKEYS,
};
use super::session::SshError;
use super::transport::{exchange_versions, Sealing};
use super::wire::{Decoder, Encoder};

pub const MSG_DISCONNECT: u8 = 1;
pub const MSG_IGNORE: u8 = 2;
pub const MSG_UNIMPLEMENTED: u8 = 3;
pub const MSG_DEBUG: u8 = 4;
const MSG_SERVICE_REQUEST: u8 = 5;
const MSG_SERVICE_ACCEPT: u8 = 6;
const MSG_EXT_INFO: u8 = 7;
const MSG_USERAUTH_REQUEST: u8 = 50;
const MSG_USERAUTH_FAILURE: u8 = 51;
const MSG_USERAUTH_SUCCESS: u8 = 52;
const MSG_USERAUTH_BANNER: u8 = 53;

/// Both directions' protection after a key exchange.
pub struct Keys {
    pub outbound: Sealing,
    pub inbound: Sealing,
}

/// A key exchange in progress, started by either side's KEXINIT.
pub struct Rekey {
    pub ours: Vec<u8>,
    pub theirs: Vec<u8>,
    pub agreed: Agreed,
    pub ephemeral: Ephemeral,
}

impl Rekey {
    pub fn begin(ours: Vec<u8>, theirs: Vec<u8>) -> Result<Rekey, SshError> {
        let agreed = kex::negotiate(&theirs)?;
        Ok(Rekey {
            ours,
            theirs,
            agreed,
            ephemeral: Ephemeral::new(random()),
        })
    }

    /// Checks the server's ECDH reply; returns the new keys and the hash
    /// (the session ID, on the first exchange).
    pub fn finish(
        &self,
        reply: &[u8],
        client_version: &str,
        server_version: &str,
        session_id: Option<&[u8]>,
        fingerprint: &str,
    ) -> Result<(Keys, Vec<u8>), SshError> {
        let transcript = Transcript {
            client_version,
            server_version,
            client_kexinit: &self.ours,
            server_kexinit: &self.theirs,
        };
        let exchanged = kex::finish(
            reply,
            &self.ephemeral,
            &transcript,
            self.agreed.host_key,
            |blob| {
                if berth_domain::edge::fingerprint::matches(fingerprint, blob) {
                    Ok(())
                } else {
                    Err(berth_domain::edge::fingerprint::sha256_fingerprint(blob))
                }
            },
        )?;
        let session_id = session_id.unwrap_or(&exchanged.hash);
        let keys = exchanged.keys(session_id, &self.agreed);
        Ok((
            Keys {
                outbound: Sealing::gcm(self.agreed.cipher_out, &keys.key_out, &keys.iv_out),
                inbound: Sealing::gcm(self.agreed.cipher_in, &keys.key_in, &keys.iv_in),
            },
            exchanged.hash,
        ))
    }
}

pub fn random<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    getrandom::getrandom(&mut bytes).expect("the OS has randomness");
    bytes
}

pub fn our_kexinit() -> Vec<u8> {
    kex::client_kexinit(random())
}

/// A DISCONNECT's reason, for the error.
pub fn disconnect_reason(payload: &[u8]) -> String {
    let mut d = Decoder::new(payload);
    let _ = d.byte();
    let code = d.u32().unwrap_or(0);
    let text = d.text().unwrap_or("");
    format!("the server disconnected (code {code}): {text}")
}

/// The connection right after authentication.
pub struct Established<R, W> {
    pub reader: BufReader<R>,
    pub writer: W,
    pub keys: Keys,
    pub session_id: Vec<u8>,
    pub server_version: String,
}

struct Handshake<R, W> {
    reader: BufReader<R>,
    writer: W,
    inbound: Sealing,
    outbound: Sealing,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> Handshake<R, W> {
    async fn send(&mut self, payload: &[u8]) -> Result<(), SshError> {
        let packet = self.outbound.seal(payload);
        self.writer.write_all(&packet).await?;
        self.writer.flush().await?;
        Ok(())
    }

    /// The next message that matters (IGNORE, DEBUG and EXT_INFO skipped).
    async fn receive(&mut self) -> Result<Vec<u8>, SshError> {
        loop {
            let payload = self.inbound.read_packet(&mut self.reader).await?;
            match payload.first() {
                None => return Err(SshError::protocol("empty message")),
                Some(&MSG_DISCONNECT) => {
                    return Err(SshError::Disconnected(disconnect_reason(&payload)))
                }
                Some(&(MSG_IGNORE | MSG_DEBUG | MSG_EXT_INFO | MSG_UNIMPLEMENTED)) => continue,
                Some(_) => return Ok(payload),
            }
        }
    }

    async fn expect(&mut self, kind: u8, what: &str) -> Result<Vec<u8>, SshError> {
        let payload = self.receive().await?;
        if payload[0] != kind {
            return Err(SshError::protocol(format!(
                "expected {what}, got message {}",
                payload[0]
            )));
        }
        Ok(payload)
    }
}

/// Runs the client side of the handshake up to an authenticated session.
pub async fn establish<R, W>(
    reader: R,
    writer: W,
    identification: &str,
    user: &str,
    password: &str,
    fingerprint: &str,
) -> Result<Established<R, W>, SshError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut hs = Handshake {
        reader: BufReader::new(reader),
        writer,
        inbound: Sealing::clear(),
        outbound: Sealing::clear(),
    };
    let server_version = exchange_versions(&mut hs.reader, &mut hs.writer, identification).await?;
    let ours = our_kexinit();
    hs.send(&ours).await?;
    let theirs = hs.expect(MSG_KEXINIT, "KEXINIT").await?;
    let rekey = Rekey::begin(ours, theirs)?;
    hs.send(&rekey.ephemeral.init_message()).await?;
    let reply = hs.expect(MSG_KEX_ECDH_REPLY, "KEX_ECDH_REPLY").await?;
    let (keys, session_id) =
        rekey.finish(&reply, identification, &server_version, None, fingerprint)?;
    hs.send(&[MSG_NEWKEYS]).await?;
    hs.expect(MSG_NEWKEYS, "NEWKEYS").await?;
    hs.outbound = keys.outbound;
    hs.inbound = keys.inbound;

    hs.send(
        &Encoder::message(MSG_SERVICE_REQUEST)
            .string("ssh-userauth")
            .finish(),
    )
    .await?;
    hs.expect(MSG_SERVICE_ACCEPT, "SERVICE_ACCEPT").await?;
    // The packet holds the password: wiped once sent.
    let login = Zeroizing::new(
        Encoder::message(MSG_USERAUTH_REQUEST)
            .string(user)
            .string("ssh-connection")
            .string("password")
            .boolean(false)
            .string(password)
            .finish(),
    );
    hs.send(&login).await?;
    loop {
        let answer = hs.receive().await?;
        match answer[0] {
            MSG_USERAUTH_SUCCESS => break,
            MSG_USERAUTH_BANNER => continue,
            MSG_USERAUTH_FAILURE => return Err(SshError::AuthRejected),
            other => {
                return Err(SshError::protocol(format!(
                    "unexpected message {other} during authentication"
                )))
            }
        }
    }
    Ok(Established {
        reader: hs.reader,
        writer: hs.writer,
        keys: Keys {
            outbound: hs.outbound,
            inbound: hs.inbound,
        },
        session_id,
        server_version,
    })
}
