//! The `DockerEngine` port, implemented over the engine's socket.

mod connector;
mod facts;

use std::time::Duration;

use berth_domain::engine::EngineFacts;
use berth_domain::options::DockerHost;
use berth_ports::{Body, DockerEngine, EngineError};
use http::uri::{PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use connector::EngineConnector;

use crate::io::{is_timeout, root_cause};
pub use facts::{facts_from_info, OwnContainer};

/// The most of an engine answer read whole for its facts: `GET /info` is a
/// few kilobytes, an inspect tens.
const MAX_FACTS_ANSWER: usize = 4 << 20;

/// A pooled HTTP/1.1 client to one Docker engine. Cloning shares the pool:
/// build it once and hand out clones.
#[derive(Clone)]
pub struct DockerSocket {
    client: Client<EngineConnector, Body>,
    host: DockerHost,
    connect_timeout: Duration,
}

impl DockerSocket {
    pub fn new(host: DockerHost, connect_timeout: Duration) -> Self {
        let connector = EngineConnector::new(host.clone(), connect_timeout);
        let client = Client::builder(TokioExecutor::new())
            // The client's own Host header passes through untouched.
            .set_host(false)
            // Without a timer, idle connections outlive the timeout until
            // the pool is next used.
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        DockerSocket {
            client,
            host,
            connect_timeout,
        }
    }

    fn engine_uri(&self, original: &Uri) -> Result<Uri, EngineError> {
        let path_and_query = original
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        // The connector ignores the authority for unix sockets; it only
        // has to be a valid URI.
        let authority = match &self.host {
            DockerHost::Unix { .. } => "docker".to_string(),
            DockerHost::Tcp { host, port } if host.contains(':') => format!("[{host}]:{port}"),
            DockerHost::Tcp { host, port } => format!("{host}:{port}"),
        };
        Uri::builder()
            .scheme(Scheme::HTTP)
            .authority(authority)
            .path_and_query(path_and_query)
            .build()
            .map_err(|error| EngineError::Protocol {
                endpoint: self.endpoint(),
                cause: error.to_string(),
            })
    }

    /// Inspects the container berth runs in, found by its host name.
    pub async fn own_container(&self, hostname: &str) -> Option<OwnContainer> {
        facts::own_container(self, hostname).await
    }

    /// A small JSON answer of the engine's (its facts, an inspect), read
    /// whole up to [`MAX_FACTS_ANSWER`]; any status but 200 is an error.
    async fn get_json<T: serde::de::DeserializeOwned>(&self, path: &str) -> Result<T, EngineError> {
        let protocol = |cause: String| EngineError::Protocol {
            endpoint: self.endpoint(),
            cause,
        };
        // The pool leaves the Host header to the caller (see `new`), and
        // HTTP/1.1 needs one.
        let request = Request::get(path)
            .header(http::header::HOST, "docker")
            .body(berth_ports::empty_body())
            .map_err(|error| protocol(error.to_string()))?;
        let answer = self.forward(request).await?;
        let status = answer.status();
        let body = berth_ports::read_bounded(answer.into_body(), MAX_FACTS_ANSWER)
            .await
            .map_err(|why| protocol(format!("GET {path}: {why}")))?;
        if status != http::StatusCode::OK {
            return Err(protocol(format!(
                "GET {path} answered {status}: {}",
                String::from_utf8_lossy(&body)
            )));
        }
        serde_json::from_slice(&body).map_err(|error| protocol(format!("GET {path}: {error}")))
    }

    fn classify(&self, error: hyper_util::client::legacy::Error) -> EngineError {
        let endpoint = self.endpoint();
        if error.is_connect() {
            if is_timeout(&error) {
                return EngineError::Timeout {
                    endpoint,
                    after_seconds: self.connect_timeout.as_secs(),
                };
            }
            return EngineError::Unreachable {
                endpoint,
                cause: root_cause(&error),
            };
        }
        EngineError::Unreachable {
            endpoint,
            cause: root_cause(&error),
        }
    }
}

impl DockerEngine for DockerSocket {
    async fn forward(&self, request: Request<Body>) -> Result<Response<Body>, EngineError> {
        let (mut parts, body) = request.into_parts();
        parts.uri = self.engine_uri(&parts.uri)?;
        let response = self
            .client
            .request(Request::from_parts(parts, body))
            .await
            .map_err(|error| self.classify(error))?;
        Ok(response.map(|incoming| incoming.map_err(Into::into).boxed_unsync()))
    }

    async fn facts(&self) -> Result<EngineFacts, EngineError> {
        facts::read_facts(self).await
    }

    fn endpoint(&self) -> String {
        self.host.to_string()
    }
}
