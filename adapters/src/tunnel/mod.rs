//! The `TunnelClient` port as chisel's client: a websocket (subprotocol
//! `chisel-v3`), SSH over it, a `config` request naming the reverse remote,
//! and server-opened `chisel` channels dialled to the agent's API.

pub mod ssh;
pub mod websocket;

use std::sync::Arc;
use std::time::Duration;

use berth_ports::{OpenTunnel, TunnelClient, TunnelError, TunnelSpec};
use serde_json::json;

use ssh::{ClientConfig, SshError, SshSession};

/// The version chisel reports when built from source, as the Go agent's is.
const CHISEL_VERSION: &str = "0.0.0-src";

#[derive(Debug, Clone)]
pub struct TunnelTimeouts {
    /// TCP connect plus the websocket handshake (chisel allows 45 s).
    pub websocket: Duration,
    /// SSH key exchange, authentication and the `config` answer.
    pub handshake: Duration,
    /// Dialling the agent API for one channel.
    pub dial: Duration,
    pub keepalive: Duration,
}

impl Default for TunnelTimeouts {
    fn default() -> Self {
        TunnelTimeouts {
            websocket: Duration::from_secs(45),
            handshake: Duration::from_secs(30),
            dial: Duration::from_secs(10),
            keepalive: Duration::from_secs(25),
        }
    }
}

#[derive(Clone)]
pub struct ChiselClient {
    timeouts: TunnelTimeouts,
}

impl ChiselClient {
    pub fn new(timeouts: TunnelTimeouts) -> Self {
        ChiselClient { timeouts }
    }

    /// The system's CA certificates, for `wss://` tunnel servers.
    fn roots(&self) -> Arc<rustls::RootCertStore> {
        crate::http::tls::system_roots()
    }
}

/// `berth doctor`: whether the tunnel server at `server` (an Edge key's
/// tunnel address) upgrades to chisel's websocket, through `proxy` when
/// given, as the tunnel's first step does. Nothing is sent after the 101.
///
/// # Errors
/// What stopped the upgrade.
pub async fn probe_upgrade(
    server: &str,
    proxy: Option<&str>,
    timeout: Duration,
) -> Result<(), String> {
    let target = websocket::tunnel_url(server)?;
    let attempt = async {
        let stream = crate::dial::connect(&target.host, target.port, proxy).await?;
        let roots = if target.secure {
            crate::http::tls::system_roots()
        } else {
            Arc::new(rustls::RootCertStore::empty())
        };
        websocket::open(&target, stream, roots, timeout).await
    };
    match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(_carrier)) => Ok(()),
        Ok(Err(error)) => Err(format!("{}: {error}", target.url)),
        Err(_) => Err(format!("{}: no websocket within {timeout:?}", target.url)),
    }
}

/// Channels a tunnel holds open at once: Portainer opens one per
/// connection it makes through the tunnel, and the agent's API serves 4096
/// by default.
const MAX_CHANNELS: usize = 4096;

pub struct ChiselTunnel {
    session: SshSession,
}

impl ChiselTunnel {
    /// SSH key exchanges on this tunnel, the first one included.
    pub fn key_exchanges(&self) -> u32 {
        self.session.key_exchanges()
    }

    /// The server's keepalive pings answered on this tunnel.
    pub fn pings_answered(&self) -> u32 {
        self.session.pings_answered()
    }
}

impl OpenTunnel for ChiselTunnel {
    fn close(&self) {
        self.session.close();
    }

    async fn closed(&self) -> String {
        self.session.closed().await
    }

    fn proven(&self) -> bool {
        self.session.proven()
    }
}

/// chisel's `config` request for one reverse remote.
pub fn config_payload(spec: &TunnelSpec) -> Result<Vec<u8>, TunnelError> {
    let (host, port) = spec
        .local_target
        .rsplit_once(':')
        .ok_or_else(|| TunnelError::Protocol(format!("bad local target {}", spec.local_target)))?;
    let config = json!({
        "Version": CHISEL_VERSION,
        "Remotes": [{
            "LocalHost": "0.0.0.0",
            "LocalPort": spec.remote_port.to_string(),
            "LocalProto": "tcp",
            "RemoteHost": host,
            "RemotePort": port,
            "RemoteProto": "tcp",
            "Socks": false,
            "Reverse": true,
            "Stdio": false,
        }],
    });
    // The payload is the JSON itself, not an SSH string.
    Ok(config.to_string().into_bytes())
}

fn classify(error: SshError) -> TunnelError {
    match error {
        SshError::AuthRejected => TunnelError::Credentials,
        SshError::Kex(ssh::kex::KexError::WrongFingerprint(got)) => TunnelError::Fingerprint(
            format!("the tunnel server's host key {got} does not match the Edge key's fingerprint"),
        ),
        SshError::Io(e) => TunnelError::Unreachable(e.to_string()),
        other => TunnelError::Protocol(other.to_string()),
    }
}

impl TunnelClient for ChiselClient {
    type Tunnel = ChiselTunnel;

    async fn open(&self, spec: TunnelSpec) -> Result<ChiselTunnel, TunnelError> {
        let target = websocket::tunnel_url(&spec.server).map_err(TunnelError::Unreachable)?;
        let carrier = tokio::time::timeout(self.timeouts.websocket, async {
            let stream =
                crate::dial::connect(&target.host, target.port, spec.proxy.as_deref()).await?;
            let roots = if target.secure {
                self.roots()
            } else {
                Arc::new(rustls::RootCertStore::empty())
            };
            websocket::open(&target, stream, roots, self.timeouts.websocket).await
        })
        .await
        .map_err(|_| TunnelError::Unreachable(format!("no websocket to {} in time", target.url)))?
        .map_err(|e| TunnelError::Unreachable(format!("{}: {e}", target.url)))?;
        let config = ClientConfig {
            identification: ssh::transport::CLIENT_VERSION.into(),
            user: spec.user.clone(),
            password: spec.password.clone(),
            fingerprint: spec.fingerprint.clone(),
            allowed_target: spec.local_target.clone(),
            dial_timeout: self.timeouts.dial,
            keepalive: self.timeouts.keepalive,
            max_channels: MAX_CHANNELS,
        };
        let payload = config_payload(&spec)?;
        let handshake = async {
            let session = SshSession::connect(carrier, config)
                .await
                .map_err(classify)?;
            let reply = session.request("config", payload).await.map_err(classify)?;
            match reply {
                Ok(answer) if answer.is_empty() => Ok(session),
                Ok(answer) | Err(answer) => Err(TunnelError::Protocol(format!(
                    "the tunnel server refused the remote: {}",
                    String::from_utf8_lossy(&answer)
                ))),
            }
        };
        tokio::time::timeout(self.timeouts.handshake, handshake)
            .await
            .map_err(|_| TunnelError::Protocol("the SSH handshake timed out".into()))?
            .map(|session| ChiselTunnel { session })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_names_one_reverse_remote() {
        let spec = TunnelSpec {
            server: "p:8000".into(),
            fingerprint: "f".into(),
            user: "u".into(),
            password: String::from("p").into(),
            remote_port: 49152,
            local_target: "10.0.0.2:9001".into(),
            proxy: None,
        };
        let payload: serde_json::Value =
            serde_json::from_slice(&config_payload(&spec).unwrap()).unwrap();
        let remote = &payload["Remotes"][0];
        assert_eq!(remote["LocalPort"], "49152");
        assert_eq!(remote["RemoteHost"], "10.0.0.2");
        assert_eq!(remote["RemotePort"], "9001");
        assert_eq!(remote["Reverse"], true);
        assert_eq!(payload["Version"], CHISEL_VERSION);
    }

    #[test]
    fn no_debug_output_shows_the_password() {
        let password = "hunter2-secret";
        let spec = TunnelSpec {
            server: "p:8000".into(),
            fingerprint: "f".into(),
            user: "u".into(),
            password: String::from(password).into(),
            remote_port: 49152,
            local_target: "10.0.0.2:9001".into(),
            proxy: None,
        };
        let config = ClientConfig {
            identification: ssh::transport::CLIENT_VERSION.into(),
            user: spec.user.clone(),
            password: spec.password.clone(),
            fingerprint: spec.fingerprint.clone(),
            allowed_target: spec.local_target.clone(),
            dial_timeout: std::time::Duration::from_secs(1),
            keepalive: std::time::Duration::from_secs(1),
            max_channels: 1,
        };
        let credentials = berth_domain::edge::credentials::TunnelCredentials {
            user: "u".into(),
            password: String::from(password).into(),
        };
        for shown in [
            format!("{spec:?}"),
            format!("{config:?}"),
            format!("{credentials:?}"),
        ] {
            assert!(!shown.contains(password), "{shown}");
        }
    }
}
