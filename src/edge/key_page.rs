//! The Edge key page (reference §10.2): while the agent has no key, a
//! person can paste one at `EDGE_SERVER_HOST:EDGE_SERVER_PORT`. The key is
//! checked before it is accepted, and the error shows on the page. The page
//! closes once a key is set, or after 15 minutes without one.

use std::net::SocketAddr;
use std::time::Duration;

use berth_adapters::http::{HttpServer, ServerLimits};
use berth_domain::browse::query_value;
use berth_ports::{full_body, Body, RequestHandler};
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};
use tracing::{info, warn};

use super::keys::{AssociateError, EdgeKeys};
use berth_ports::read_bounded;

const PAGE: &str = include_str!("key_page.html");
/// How long the page waits for a key, as the Go agent.
pub const PAGE_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// A pasted key is well under this.
const MAX_FORM: usize = 64 * 1024;
pub const SETUP_OK: &str = "Agent setup OK. You can close this page.";

#[derive(Clone)]
pub struct KeyPage {
    keys: EdgeKeys,
}

fn text(status: StatusCode, body: impl Into<String>) -> Response<Body> {
    let mut response = Response::new(full_body(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The `key` field of an urlencoded form, or of the query string.
fn key_field(form: &[u8], query: Option<&str>) -> Option<String> {
    let form = String::from_utf8_lossy(form);
    query_value(Some(&form), "key")
        .or_else(|| query_value(query, "key"))
        .filter(|key| !key.trim().is_empty())
}

impl KeyPage {
    async fn init(&self, request: Request<Body>) -> Response<Body> {
        let query = request.uri().query().map(str::to_string);
        let form = match read_bounded(request.into_body(), MAX_FORM).await {
            Ok(form) => form,
            Err(why) => return text(StatusCode::BAD_REQUEST, why),
        };
        let Some(key) = key_field(&form, query.as_deref()) else {
            return text(StatusCode::BAD_REQUEST, "Missing key parameter");
        };
        match self.keys.associate(&key).await {
            Ok(()) => text(StatusCode::OK, SETUP_OK),
            Err(AssociateError::NotSaved(why)) => {
                warn!(%why, "the Edge key could not be saved");
                text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("The key could not be saved: {why}"),
                )
            }
            Err(error @ AssociateError::AlreadySet) => {
                text(StatusCode::CONFLICT, error.to_string())
            }
            Err(error) => text(
                StatusCode::BAD_REQUEST,
                format!("This key is not valid: {error}"),
            ),
        }
    }
}

impl RequestHandler for KeyPage {
    async fn handle(&self, request: Request<Body>, _peer: SocketAddr) -> Response<Body> {
        match (request.method(), request.uri().path()) {
            (&Method::POST, "/init") => self.init(request).await,
            (&Method::GET | &Method::HEAD, "/" | "/index.html") => {
                let mut response = text(StatusCode::OK, PAGE);
                response.headers_mut().insert(
                    CONTENT_TYPE,
                    HeaderValue::from_static("text/html; charset=utf-8"),
                );
                response
            }
            _ => text(StatusCode::NOT_FOUND, "404 page not found"),
        }
    }
}

/// Binds the page; it serves until a key is set or `lifetime` passes.
///
/// # Errors
/// When the address cannot be bound.
pub async fn start(
    address: SocketAddr,
    keys: EdgeKeys,
    limits: ServerLimits,
    lifetime: Duration,
) -> Result<SocketAddr, String> {
    let server = HttpServer::bind(address, None, limits)
        .await
        .map_err(|e| format!("cannot serve the Edge key page on {address}: {e}"))?;
    let bound = server.local_addr().map_err(|e| e.to_string())?;
    info!(%bound, "no Edge key yet: paste one at http://{bound}/");
    let page = KeyPage { keys: keys.clone() };
    tokio::spawn(async move {
        let stop = async move {
            tokio::select! {
                _ = keys.wait() => info!("Edge key set; closing the key page"),
                () = tokio::time::sleep(lifetime) => warn!(
                    minutes = lifetime.as_secs() / 60,
                    "no Edge key was entered; closing the key page (restart the agent to reopen it)"
                ),
            }
        };
        server.run(page, stop).await;
    });
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_key_comes_from_the_form_or_the_query() {
        assert_eq!(key_field(b"key=abc%2B1", None).as_deref(), Some("abc+1"));
        assert_eq!(key_field(b"", Some("key=q")).as_deref(), Some("q"));
        assert_eq!(key_field(b"key=", Some("other=1")), None);
        assert_eq!(key_field(b"key=%20%20", None), None);
    }
}
