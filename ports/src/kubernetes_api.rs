//! The API server of the Kubernetes cluster berth runs in.

use std::fmt;
use std::future::Future;

use berth_domain::kubernetes::Credential;
use http::{Request, Response};

use crate::body::Body;

/// Why the API server could not be asked.
#[derive(Debug)]
pub enum KubernetesError {
    /// No connection could be made, or the server's certificate did not
    /// verify against the cluster's CA.
    Unreachable { endpoint: String, cause: String },
    /// The connection was not made within the connect timeout.
    Timeout {
        endpoint: String,
        after_seconds: u64,
    },
    /// The pod's own service-account token could not be read.
    NoServiceAccountToken { path: String, cause: String },
}

impl fmt::Display for KubernetesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KubernetesError::Unreachable { endpoint, cause } => {
                write!(f, "the Kubernetes API server at {endpoint} is unreachable: {cause}")
            }
            KubernetesError::Timeout {
                endpoint,
                after_seconds,
            } => write!(
                f,
                "the Kubernetes API server at {endpoint} did not accept a connection within {after_seconds}s"
            ),
            KubernetesError::NoServiceAccountToken { path, cause } => {
                write!(f, "the service account token {path} is unreadable: {cause}")
            }
        }
    }
}

impl std::error::Error for KubernetesError {}

/// The cluster's API server.
pub trait KubernetesApi: Clone + Send + Sync + 'static {
    /// Sends `request` (origin-form URI with the API server's own path;
    /// headers and streamed body as they are to go) with `credential` as its
    /// bearer token, and returns the answer as it streams in. A `101
    /// Switching Protocols` answer (exec, attach, port-forward) keeps
    /// hyper's upgrade handle in its extensions, so the caller can splice
    /// the two connections.
    ///
    /// # Errors
    /// A [`KubernetesError`] when the server could not be asked; an answer
    /// with any status is `Ok`.
    fn forward(
        &self,
        request: Request<Body>,
        credential: Credential,
    ) -> impl Future<Output = Result<Response<Body>, KubernetesError>> + Send;

    /// The API server's address, for messages.
    fn endpoint(&self) -> String;
}
