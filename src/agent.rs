//! The request handler: asks the domain where a request goes and executes
//! the decision.

use std::net::SocketAddr;
use std::time::Instant;

use berth_domain::error::AgentError;
use berth_domain::headers::{REQUEST_MANAGER_OPERATION, REQUEST_TARGET};
use berth_domain::routing::{self, DockerDispatch, RequestHead, Route};
use berth_ports::{Body, DockerEngine, RequestHandler};
use http::{HeaderMap, Method, Request, Response};
use tracing::{debug, warn};

use crate::facts::FactsReceiver;
use crate::signature::SignatureGuard;
use crate::{proxy, responses};

/// The agent: one engine, what it knows of it, and who may use it.
#[derive(Clone)]
pub struct Agent<E> {
    engine: E,
    facts: FactsReceiver,
    signatures: SignatureGuard,
}

impl<E: DockerEngine> Agent<E> {
    pub fn new(engine: E, facts: FactsReceiver, signatures: SignatureGuard) -> Self {
        Agent {
            engine,
            facts,
            signatures,
        }
    }

    async fn dispatch(
        &self,
        route: Route,
        request: Request<Body>,
    ) -> Result<Response<Body>, AgentError> {
        match route {
            Route::Ping => Ok(responses::no_content()),
            Route::NotFound => Ok(responses::not_found()),
            Route::MethodNotAllowed => Ok(responses::method_not_allowed()),
            Route::Agents if !self.facts.borrow().is_swarm_node() => {
                Err(AgentError::agents_on_standalone())
            }
            Route::Docker(DockerDispatch::Local) => proxy::forward(&self.engine, request).await,
            Route::Docker(_) => Err(AgentError::not_implemented("Cluster dispatch")),
            Route::Key => Err(AgentError::not_implemented("The Edge key API")),
            Route::Agents => Err(AgentError::not_implemented("The agent list")),
            Route::HostInfo => Err(AgentError::not_implemented("Host info")),
            Route::Browse { .. } => Err(AgentError::not_implemented("File browsing")),
            Route::Websocket(_) => Err(AgentError::not_implemented("Websocket consoles")),
            Route::KubernetesProxy | Route::KubernetesStack => {
                Err(AgentError::not_implemented("Kubernetes"))
            }
            Route::DockerHub => Err(AgentError::not_implemented("The DockerHub probe")),
        }
    }
}

/// Requests berth refuses before routing: CONNECT and anything whose target
/// is not a plain path.
fn malformed(request: &Request<Body>) -> Option<AgentError> {
    if request.method() == Method::CONNECT {
        return Some(AgentError::bad_request("CONNECT is not supported"));
    }
    let uri = request.uri();
    if uri.scheme().is_some() || uri.authority().is_some() || !uri.path().starts_with('/') {
        return Some(AgentError::bad_request("The request target must be a path"));
    }
    None
}

fn header_text<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get(name)
        .and_then(|value| value.to_str().ok())
        .filter(|value| !value.is_empty())
}

impl<E: DockerEngine> RequestHandler for Agent<E> {
    async fn handle(&self, request: Request<Body>, peer: SocketAddr) -> Response<Body> {
        let started = Instant::now();
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let (route, outcome) = match malformed(&request) {
            Some(error) => (None, Err(error)),
            None => {
                let facts = self.facts.borrow().clone();
                let head = RequestHead {
                    method: method.as_str(),
                    path: &path,
                    target: header_text(request.headers(), REQUEST_TARGET),
                    manager_operation: header_text(request.headers(), REQUEST_MANAGER_OPERATION)
                        .is_some(),
                };
                let route = routing::route(&head, &facts);
                // Only /ping is public; forwarded requests keep their
                // signature headers for the next agent to check.
                let outcome = match route {
                    Route::Ping => Ok(()),
                    _ => self.signatures.authorize(request.headers()),
                };
                let outcome = match outcome {
                    Ok(()) => self.dispatch(route.clone(), request).await,
                    Err(refused) => Err(refused),
                };
                (Some(route), outcome)
            }
        };
        let mut response = outcome.unwrap_or_else(|error| {
            if error.status() >= 500 {
                warn!(%method, %path, status = error.status(), message = error.message(), cause = error.details(), "request failed");
            } else {
                debug!(%method, %path, status = error.status(), details = error.details(), "request refused");
            }
            responses::error_response(&error)
        });
        // The Edge key API is the one route the reference leaves bare.
        if route != Some(Route::Key) {
            responses::set_common_headers(response.headers_mut());
        }
        debug!(
            %peer,
            %method,
            %path,
            status = response.status().as_u16(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        );
        response
    }
}
