//! The other agents of the cluster, reached over their HTTPS API.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;

use http::{Request, Response};

use crate::body::Body;

#[derive(Debug, Clone)]
pub enum PeerError {
    Unreachable {
        peer: SocketAddr,
        cause: String,
    },
    Timeout {
        peer: SocketAddr,
        after_seconds: u64,
    },
}

impl fmt::Display for PeerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PeerError::Unreachable { peer, cause } => {
                write!(f, "agent at {peer} is unreachable: {cause}")
            }
            PeerError::Timeout {
                peer,
                after_seconds,
            } => {
                write!(
                    f,
                    "agent at {peer} did not accept a connection within {after_seconds}s"
                )
            }
        }
    }
}

impl std::error::Error for PeerError {}

pub trait PeerAgents: Clone + Send + Sync + 'static {
    /// Sends `request` (origin-form URI, headers, streamed body) to the
    /// agent at `peer` and returns its answer as it streams in; a 101 keeps
    /// the upgrade handle so the caller can splice.
    ///
    /// # Errors
    /// [`PeerError`] when no connection could be made.
    fn forward(
        &self,
        peer: SocketAddr,
        request: Request<Body>,
    ) -> impl Future<Output = Result<Response<Body>, PeerError>> + Send;
}
