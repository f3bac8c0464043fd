//! The reverse tunnel to Portainer (chisel: SSH over a websocket).

use std::fmt;
use std::future::Future;

/// Everything needed to open one tunnel.
#[derive(Clone, PartialEq, Eq)]
pub struct TunnelSpec {
    /// The Edge key's tunnel server address (`host:port`, maybe a URL).
    pub server: String,
    /// The Edge key's host key fingerprint.
    pub fingerprint: String,
    pub user: String,
    /// Wiped when dropped; never in `Debug`.
    pub password: berth_domain::edge::credentials::Zeroizing<String>,
    /// The port Portainer listens on for this agent.
    pub remote_port: u16,
    /// The agent API address (`host:port`) the server's channels reach.
    pub local_target: String,
    /// `HTTPS_PROXY`/`HTTP_PROXY` for the websocket.
    pub proxy: Option<String>,
}

impl fmt::Debug for TunnelSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TunnelSpec")
            .field("server", &self.server)
            .field("remote_port", &self.remote_port)
            .field("local_target", &self.local_target)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TunnelError {
    /// The server could not be reached or the websocket failed.
    Unreachable(String),
    /// The host key is not the one in the Edge key.
    Fingerprint(String),
    /// The server refused the credentials.
    Credentials,
    /// Anything else the server or the protocol did wrong.
    Protocol(String),
}

impl fmt::Display for TunnelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TunnelError::Unreachable(why) => write!(f, "tunnel server unreachable: {why}"),
            TunnelError::Fingerprint(why) => write!(f, "{why}"),
            TunnelError::Credentials => write!(f, "the tunnel server refused the credentials"),
            TunnelError::Protocol(why) => write!(f, "tunnel protocol error: {why}"),
        }
    }
}

impl std::error::Error for TunnelError {}

/// An open tunnel. Dropping it closes it.
pub trait OpenTunnel: Send + Sync + 'static {
    fn close(&self);
    /// Resolves when the tunnel ends (closed, dropped by the server, or
    /// the connection lost), with the reason.
    fn closed(&self) -> impl Future<Output = String> + Send;
    /// Whether the server showed it works, beyond letting the tunnel open
    /// (it answered a keepalive). Only a drop after that starts the
    /// reconnect backoff over, so a server that accepts every tunnel and
    /// then fails it is retried with growing delays.
    fn proven(&self) -> bool;
}

pub trait TunnelClient: Clone + Send + Sync + 'static {
    type Tunnel: OpenTunnel;

    /// Connects, authenticates, and asks the server to listen on the
    /// remote port.
    fn open(
        &self,
        spec: TunnelSpec,
    ) -> impl Future<Output = Result<Self::Tunnel, TunnelError>> + Send;
}
