//! The local Docker engine: forward a request, read its facts.

use std::fmt;
use std::future::Future;

use berth_domain::engine::EngineFacts;
use http::{Request, Response};

use crate::body::Body;

/// Why the engine could not answer.
#[derive(Debug)]
pub enum EngineError {
    /// No connection could be made (socket missing, refused, closed early).
    Unreachable { endpoint: String, cause: String },
    /// The connection was not made within the connect timeout.
    Timeout {
        endpoint: String,
        after_seconds: u64,
    },
    /// The engine answered, but not in a form berth understands.
    Protocol { endpoint: String, cause: String },
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Unreachable { endpoint, cause } => {
                write!(f, "the Docker engine at {endpoint} is unreachable: {cause}")
            }
            EngineError::Timeout {
                endpoint,
                after_seconds,
            } => write!(
                f,
                "the Docker engine at {endpoint} did not accept a connection within {after_seconds}s"
            ),
            EngineError::Protocol { endpoint, cause } => {
                write!(f, "unexpected answer from the Docker engine at {endpoint}: {cause}")
            }
        }
    }
}

impl std::error::Error for EngineError {}

/// The Docker engine this agent runs beside.
pub trait DockerEngine: Clone + Send + Sync + 'static {
    /// Sends `request` (origin-form URI, headers and streamed body as the
    /// client sent them) and returns the engine's answer as it streams in.
    /// A `101 Switching Protocols` answer keeps hyper's upgrade handle in its
    /// extensions, so the caller can splice the two connections.
    ///
    /// # Errors
    /// [`EngineError::Unreachable`] or [`EngineError::Timeout`] when no
    /// connection could be made; an answer with any status is `Ok`.
    fn forward(
        &self,
        request: Request<Body>,
    ) -> impl Future<Output = Result<Response<Body>, EngineError>> + Send;

    /// Reads the engine's facts (`GET /info`, and the node for leadership).
    ///
    /// # Errors
    /// Any [`EngineError`]; callers keep the last known facts.
    fn facts(&self) -> impl Future<Output = Result<EngineFacts, EngineError>> + Send;

    /// The endpoint, as the user wrote it (`unix:///var/run/docker.sock`),
    /// for messages.
    fn endpoint(&self) -> String;
}
