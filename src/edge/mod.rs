//! Edge mode (reference §10): the key, the key page, the API gate, the
//! poll loop and the tunnel driver.
//!
//! - [`keys`]: the Edge key held, loaded, associated and saved.
//! - [`peer_key`]: an agent without a key takes it from a cluster peer.
//! - [`key_page`]: the page where a person pastes a key.
//! - [`poll`]: asks Portainer what it wants, every `checkin` seconds.
//! - [`jobs`]: the scheduled scripts the poll answers carry.
//! - [`stacks`]: the Edge stacks the poll answers list; [`manifests`]:
//!   deploying them on a Kubernetes cluster.
//! - [`configs`]: Edge configurations, files placed on the host;
//!   [`host_files`]: writing and removing files under the host root.
//! - [`reports`]: where Edge work's results go (Portainer, or async mode's
//!   outbox).
//! - [`tunnel`]: drives the domain's tunnel state machine.
//! - [`async_poll`], [`async_work`], [`engine_calls`]: async mode's one
//!   endpoint, the work its commands hand over, and the engine calls its
//!   snapshots and commands make.
//! - [`agent_update`]: an agent Portainer's updater started replaces the
//!   old one and cleans up after the updater.

pub mod agent_update;
pub mod async_poll;
pub mod async_work;
pub mod configs;
pub mod engine_calls;
pub mod host_files;
pub mod jobs;
pub mod key_page;
pub mod keys;
pub mod manifests;
pub mod peer_key;
pub mod poll;
pub mod poll_record;
pub mod reports;
pub mod stacks;
pub mod tunnel;

use berth_adapters::portainer::PortainerTls;
use berth_domain::edge::key::is_peer_proof;
use berth_domain::edge::proxy::{NoProxy, ProxySettings};
use berth_domain::error::AgentError;
use berth_domain::headers::REQUEST_EDGE_KEY_PROOF;
use berth_domain::options::Options;
use berth_ports::Body;
use http::{Method, Request, Response};

use crate::responses;
use berth_ports::read_bounded;
use keys::EdgeKeys;
use tunnel::Activity;

/// A `POST /key` body is a key and some JSON.
const MAX_KEY_BODY: usize = 64 * 1024;

/// What the API needs in Edge mode: the key (nothing passes without one)
/// and the activity clock the tunnel's inactivity timeout reads.
#[derive(Clone)]
pub struct EdgeGate {
    pub keys: EdgeKeys,
    pub activity: Activity,
    pub edge_id: String,
}

impl EdgeGate {
    /// The reference's gate (§3.4): every request, `/ping` and `/key`
    /// included, is refused until a key is set; after that each one counts
    /// as tunnel activity.
    ///
    /// # Errors
    /// The reference's 403 while no key is set.
    pub fn admit(&self) -> Result<(), AgentError> {
        if !self.keys.is_set() {
            return Err(AgentError::new(
                403,
                "Unable to use the unsecured agent API without Edge key",
                "Edge key not set",
            ));
        }
        self.activity.record();
        Ok(())
    }
}

impl EdgeGate {
    /// A peer of the same Edge environment asking for the key: the one
    /// request that needs no Portainer signature.
    pub fn is_peer_key_request(&self, request: &Request<Body>) -> bool {
        request.method() == Method::GET
            && request.uri().path() == "/key"
            && request
                .headers()
                .get(REQUEST_EDGE_KEY_PROOF)
                .and_then(|v| v.to_str().ok())
                .is_some_and(|proof| is_peer_proof(proof, &self.edge_id))
    }
}

/// `GET /key` and `POST /key` (reference §6.7). berth signs both.
pub async fn key_api(
    gate: Option<&EdgeGate>,
    request: Request<Body>,
) -> Result<Response<Body>, AgentError> {
    let Some(gate) = gate else {
        return Err(AgentError::new(
            503,
            "Edge key management is disabled on non Edge agent",
            "Edge key management is disabled",
        ));
    };
    if request.uri().path() != "/key" {
        return Ok(responses::not_found());
    }
    match *request.method() {
        Method::GET => match gate.keys.get() {
            Some(key) => Ok(responses::json(&serde_json::json!({"key": key.encode()}))),
            None => Err(AgentError::new(
                404,
                "No key associated to this agent",
                "Edge key unavailable",
            )),
        },
        Method::POST => {
            let invalid = |why: &str| AgentError::new(400, "Invalid request payload", why);
            let body = read_bounded(request.into_body(), MAX_KEY_BODY)
                .await
                .map_err(|why| invalid(&why))?;
            let value: serde_json::Value =
                serde_json::from_slice(&body).map_err(|e| invalid(&e.to_string()))?;
            let key = value
                .as_object()
                .and_then(|o| berth_domain::edge::status::field(o, "Key"))
                .and_then(serde_json::Value::as_str)
                .filter(|key| !key.is_empty())
                .ok_or_else(|| invalid("Invalid key"))?;
            gate.keys
                .associate(key)
                .await
                .map_err(|error| error.to_agent_error())?;
            Ok(responses::no_content())
        }
        _ => Ok(responses::method_not_allowed()),
    }
}

/// The proxies of outbound calls, from `HTTPS_PROXY`, `HTTP_PROXY` and
/// `NO_PROXY`.
pub fn proxy_settings(options: &Options) -> ProxySettings {
    ProxySettings {
        https: options.edge.https_proxy.clone(),
        http: options.edge.http_proxy.clone(),
        no_proxy: NoProxy::parse(options.edge.no_proxy.as_deref().unwrap_or_default()),
    }
}

/// How the poll client checks Portainer and presents itself.
pub fn portainer_tls(options: &Options) -> PortainerTls {
    PortainerTls {
        insecure: options.edge.insecure_poll,
        ca: options.mtls.ca.clone(),
        cert: options.mtls.cert.clone(),
        key: options.mtls.key.clone(),
    }
}
