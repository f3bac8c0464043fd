//! Calls from an Edge agent to its Portainer server (and, through the same
//! client, to Docker Hub for `POST /v2/dockerhub`).

use std::fmt;
use std::future::Future;
use std::time::Duration;

/// One call: the path is relative to the Edge key's Portainer URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeCall {
    pub method: http::Method,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeAnswer {
    pub status: u16,
    pub etag: Option<String>,
    /// Every header of the answer, names in lower case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl EdgeAnswer {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortainerError {
    /// No answer: connect, TLS or transport failure.
    Unreachable(String),
    Timeout,
}

impl fmt::Display for PortainerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortainerError::Unreachable(why) => write!(f, "Portainer unreachable: {why}"),
            PortainerError::Timeout => write!(f, "Portainer did not answer in time"),
        }
    }
}

impl std::error::Error for PortainerError {}

pub trait PortainerApi: Clone + Send + Sync + 'static {
    /// Sends a call and reads the whole (small) answer.
    fn call(
        &self,
        call: EdgeCall,
    ) -> impl Future<Output = Result<EdgeAnswer, PortainerError>> + Send;
}
