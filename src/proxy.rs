//! The proxy core: one way to forward a request, to the local engine or to
//! another agent.
//!
//! Bodies stream both ways untouched. An upgrade (`docker exec -it`,
//! `docker attach`: `Upgrade: tcp`) is spliced: once the engine answers 101,
//! the client's and the engine's connections are joined byte for byte, each
//! direction closing on its own, so a client's end of input reaches the
//! engine while output keeps flowing back.

use std::future::Future;

use berth_domain::error::AgentError;
use berth_ports::{Body, DockerEngine, EngineError};
use http::header::{HeaderName, CONNECTION, TRANSFER_ENCODING, UPGRADE};
use http::{HeaderMap, Request, Response, StatusCode};
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tracing::debug;

use crate::coalesce::Coalesced;
use http_body_util::BodyExt as _;

/// Headers that belong to one connection, not to the request or answer
/// (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
];

/// Forwards `request` to the local engine.
pub async fn forward_to_engine<E: DockerEngine>(
    engine: &E,
    request: Request<Body>,
) -> Result<Response<Body>, AgentError> {
    forward(request, |request| async move {
        engine.forward(request).await.map_err(engine_error)
    })
    .await
}

/// Forwards `request` with `send` (to the engine or to another agent) and
/// returns the answer as it streams in; a 101 is spliced.
pub async fn forward<F, Fut>(request: Request<Body>, send: F) -> Result<Response<Body>, AgentError>
where
    F: FnOnce(Request<Body>) -> Fut,
    Fut: Future<Output = Result<Response<Body>, AgentError>>,
{
    forward_with(request, send, Streams::Joined).await
}

/// What the proxy does with the frames of a streamed answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Streams {
    /// Small frames are joined for a millisecond at most (see `coalesce`):
    /// the engine writes a log line a frame.
    Joined,
    /// Each frame goes out as it came: the Kubernetes API server writes a
    /// whole watch event (or a followed log's lines) a frame, and the
    /// client waits for each.
    AsTheyCome,
}

/// [`forward`], choosing what becomes of a stream's frames.
pub async fn forward_with<F, Fut>(
    mut request: Request<Body>,
    send: F,
    streams: Streams,
) -> Result<Response<Body>, AgentError>
where
    F: FnOnce(Request<Body>) -> Fut,
    Fut: Future<Output = Result<Response<Body>, AgentError>>,
{
    let wants_upgrade = is_upgrade(request.headers());
    // Taken off the request so it stays with the client's connection.
    let client_upgrade = request.extensions_mut().remove::<OnUpgrade>();
    strip_hop_by_hop(request.headers_mut(), wants_upgrade);
    let mut response = send(request).await?;
    if response.status() == StatusCode::SWITCHING_PROTOCOLS {
        let upstream_upgrade = hyper::upgrade::on(&mut response);
        match client_upgrade {
            Some(client_upgrade) => {
                tokio::spawn(splice(client_upgrade, upstream_upgrade));
            }
            None => {
                return Err(AgentError::new(
                    502,
                    "The upstream switched protocols unasked",
                    "The request did not ask for an upgrade",
                ))
            }
        }
        return Ok(response);
    }
    strip_hop_by_hop(response.headers_mut(), false);
    // Only a stream of unknown length is joined: an answer with a length
    // is whole already, and copying it would only cost.
    if streams == Streams::AsTheyCome
        || http_body::Body::size_hint(response.body())
            .exact()
            .is_some()
    {
        return Ok(response);
    }
    Ok(response.map(|body| Coalesced::new(body).boxed_unsync()))
}

/// Maps the engine port's failures to the answers clients see.
pub fn engine_error(error: EngineError) -> AgentError {
    match error {
        EngineError::Unreachable { endpoint, cause }
        | EngineError::Protocol { endpoint, cause } => {
            AgentError::engine_unreachable(&endpoint, &cause)
        }
        EngineError::Timeout {
            endpoint,
            after_seconds,
        } => AgentError::engine_timeout(&endpoint, after_seconds),
    }
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Removes hop-by-hop headers and those the `Connection` header names. An
/// upgrade request keeps `Connection` and `Upgrade`, which the engine needs.
fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|token| HeaderName::from_bytes(token.trim().as_bytes()).ok())
        .filter(|name| !(keep_upgrade && *name == UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        if keep_upgrade && name == "connection" {
            continue;
        }
        headers.remove(name);
    }
    if !keep_upgrade {
        headers.remove(UPGRADE);
    }
    debug_assert!(!headers.contains_key(TRANSFER_ENCODING));
}

/// Joins the two upgraded connections until both directions have ended.
async fn splice(client: OnUpgrade, upstream: OnUpgrade) {
    let (client, upstream) = match tokio::try_join!(client, upstream) {
        Ok(pair) => pair,
        Err(error) => return debug!(%error, "upgrade did not complete"),
    };
    let mut client = TokioIo::new(client);
    let mut upstream = TokioIo::new(upstream);
    match tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
        Ok((sent, received)) => debug!(sent, received, "upgraded stream closed"),
        Err(error) => debug!(%error, "upgraded stream ended with an error"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn hop_by_hop_headers_are_removed() {
        let mut map = headers(&[
            ("connection", "keep-alive, x-private"),
            ("keep-alive", "timeout=5"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("content-type", "application/json"),
            ("x-portaineragent-target", "node-1"),
        ]);
        strip_hop_by_hop(&mut map, false);
        let names: Vec<_> = map.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-type", "x-portaineragent-target"]);
    }

    #[test]
    fn upgrade_requests_keep_connection_and_upgrade() {
        let mut map = headers(&[
            ("connection", "Upgrade"),
            ("upgrade", "tcp"),
            ("te", "trailers"),
        ]);
        assert!(is_upgrade(&map));
        strip_hop_by_hop(&mut map, true);
        assert_eq!(map["connection"], "Upgrade");
        assert_eq!(map["upgrade"], "tcp");
        assert!(!map.contains_key("te"));
    }

    #[test]
    fn upgrade_needs_both_headers() {
        assert!(!is_upgrade(&headers(&[("upgrade", "tcp")])));
        assert!(!is_upgrade(&headers(&[("connection", "upgrade")])));
        assert!(is_upgrade(&headers(&[
            ("connection", "keep-alive, Upgrade"),
            ("upgrade", "h2c")
        ])));
    }
}
