//! The request handler: asks the domain where a request goes and executes
//! the decision.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use berth_domain::browse::query_value;
use berth_domain::engine::EngineFacts;
use berth_domain::error::AgentError;
use berth_domain::headers::{REQUEST_HOP, REQUEST_MANAGER_OPERATION, REQUEST_TARGET};
use berth_domain::kubernetes::{self, Platform};
use berth_domain::routing::{self, DockerDispatch, LocalView, RequestHead, Route, WebsocketKind};
use berth_domain::signature::overlap;
use berth_ports::{
    Body, ConnectionStanding, DockerEngine, Files, HostProbe, Membership, PeerAgents,
    RequestHandler, VerifiedClientCertificate,
};
use http::{HeaderMap, Method, Request, Response};
use tracing::{debug, warn};

use crate::cluster::Cluster;
use crate::dockerhub::LimitsProbe;
use crate::edge::{self, EdgeGate};
use crate::facts::FactsReceiver;
use crate::in_flight::InFlight;
use crate::kubernetes::KubernetesRoutes;
use crate::metrics::{route_class, Metrics};
use crate::signature::SignatureGuard;
use crate::{browse, console, proxy, responses};

/// The agent: its engine, the host's hardware and files, what it knows of
/// its node, who may use it, and the cluster it belongs to, if any.
#[derive(Clone)]
pub struct Agent<E, M, P, H, F> {
    engine: E,
    host: H,
    files: F,
    facts: FactsReceiver,
    signatures: SignatureGuard,
    cluster: Option<Cluster<M, P>>,
    metrics: Metrics,
    edge: Option<EdgeGate>,
    dockerhub: Option<Arc<dyn LimitsProbe>>,
    /// `AGENT_CLIENT_CERT_AUTH`: a verified client certificate stands in
    /// for a signature.
    certificates_authorise: bool,
    /// Set when berth serves a Kubernetes cluster: then it has no Docker
    /// engine, and says so to Docker requests.
    kubernetes: Option<Arc<dyn KubernetesRoutes>>,
    in_flight: InFlight,
}

/// A `POST /v2/dockerhub` body is a few credentials.
const MAX_DOCKERHUB_BODY: usize = 64 * 1024;

impl<E: DockerEngine, M: Membership, P: PeerAgents, H: HostProbe, F: Files> Agent<E, M, P, H, F> {
    pub fn new(
        engine: E,
        host: H,
        files: F,
        facts: FactsReceiver,
        signatures: SignatureGuard,
        cluster: Option<Cluster<M, P>>,
    ) -> Self {
        Agent {
            engine,
            host,
            files,
            facts,
            signatures,
            cluster,
            metrics: Metrics::default(),
            edge: None,
            dockerhub: None,
            certificates_authorise: false,
            kubernetes: None,
            in_flight: InFlight::default(),
        }
    }

    /// Serves a Kubernetes cluster through `routes` instead of a Docker
    /// engine.
    pub fn with_kubernetes(mut self, routes: impl KubernetesRoutes) -> Self {
        self.kubernetes = Some(Arc::new(routes));
        self
    }

    fn platform(&self) -> Platform {
        match self.kubernetes {
            Some(_) => Platform::Kubernetes,
            None => Platform::Docker,
        }
    }

    /// Answers `POST /v2/dockerhub` with `probe` (without one, 501).
    pub fn with_dockerhub(mut self, probe: impl LimitsProbe) -> Self {
        self.dockerhub = Some(Arc::new(probe));
        self
    }

    /// Edge mode: requests pass only once the agent has a key.
    pub fn with_edge(mut self, gate: EdgeGate) -> Self {
        self.edge = Some(gate);
        self
    }

    /// Counts requests in `metrics` (the `METRICS_ADDR` endpoint shows them).
    pub fn with_metrics(mut self, metrics: Metrics) -> Self {
        self.metrics = metrics;
        self
    }

    /// `AGENT_CLIENT_CERT_AUTH=1`: requests on a connection whose client
    /// certificate the server's CA verified need no signature (they pair
    /// nothing); every other request still does.
    pub fn with_client_certificates(mut self) -> Self {
        self.certificates_authorise = true;
        self
    }

    async fn dispatch(
        &self,
        route: Route,
        facts: &EngineFacts,
        request: Request<Body>,
    ) -> Result<Response<Body>, AgentError> {
        if let Some(kubernetes) = &self.kubernetes {
            return self
                .dispatch_on_kubernetes(kubernetes, route, request)
                .await;
        }
        match (route, &self.cluster) {
            (Route::Ping, _) => Ok(responses::no_content()),
            (Route::NotFound, _) => Ok(responses::not_found()),
            (Route::MethodNotAllowed, _) => Ok(responses::method_not_allowed()),
            (Route::Agents, None) => Err(AgentError::agents_on_standalone()),
            (Route::Agents, Some(cluster)) => Ok(cluster.agents().await),
            (Route::Docker(DockerDispatch::Local), _) | (Route::Docker(_), None) => {
                proxy::forward_to_engine(&self.engine, request).await
            }
            (Route::Docker(DockerDispatch::Node(node)), Some(cluster)) => {
                cluster.forward_to_node(&node, request).await
            }
            (Route::Docker(DockerDispatch::Manager), Some(cluster)) => {
                cluster
                    .forward_to_manager(&self.engine, facts, request)
                    .await
            }
            (Route::Docker(DockerDispatch::Aggregate(kind)), Some(cluster)) => {
                cluster.aggregate(&self.engine, facts, kind, request).await
            }
            (Route::Key, _) => edge::key_api(self.edge.as_ref(), request).await,
            (Route::HostInfo, _) => self.host_info().await,
            (Route::ToNode(node), Some(cluster)) => cluster.forward_to_node(&node, request).await,
            (Route::ToNode(_), None) => Err(AgentError::unknown_target()),
            (Route::Browse { op, volume }, _) => {
                browse::browse(&self.files, op, volume, request).await
            }
            (Route::Websocket(WebsocketKind::Pod), _)
            | (Route::KubernetesProxy | Route::KubernetesStack, _) => {
                Err(kubernetes::not_on_kubernetes())
            }
            (Route::Websocket(kind), _) => console::console(&self.engine, kind, request).await,
            (Route::DockerHub, _) => self.dockerhub_limits(request).await,
        }
    }

    /// The routes of an agent that serves a Kubernetes cluster: the
    /// agent's own API and the cluster's; nothing of Docker's.
    async fn dispatch_on_kubernetes(
        &self,
        kubernetes: &Arc<dyn KubernetesRoutes>,
        route: Route,
        request: Request<Body>,
    ) -> Result<Response<Body>, AgentError> {
        match route {
            Route::Ping => Ok(responses::no_content()),
            Route::NotFound => Ok(responses::not_found()),
            Route::MethodNotAllowed => Ok(responses::method_not_allowed()),
            Route::Key => edge::key_api(self.edge.as_ref(), request).await,
            Route::HostInfo => self.host_info().await,
            Route::KubernetesProxy => kubernetes.proxy(request).await,
            Route::KubernetesStack => kubernetes.stack(request).await,
            Route::Websocket(WebsocketKind::Pod) => kubernetes.pod_console(request).await,
            Route::Agents => Err(AgentError::agents_on_standalone()),
            Route::DockerHub => self.dockerhub_limits(request).await,
            Route::Docker(_) | Route::Websocket(_) | Route::Browse { .. } | Route::ToNode(_) => {
                Err(kubernetes::no_docker_engine())
            }
        }
    }

    /// `POST /v2/dockerhub` (§6.8).
    async fn dockerhub_limits(&self, request: Request<Body>) -> Result<Response<Body>, AgentError> {
        let probe = self
            .dockerhub
            .as_ref()
            .ok_or_else(|| AgentError::not_implemented("The DockerHub probe"))?;
        let body = berth_ports::read_bounded(request.into_body(), MAX_DOCKERHUB_BODY)
            .await
            .map_err(|why| AgentError::new(400, "Invalid request payload", why))?;
        Ok(responses::json(&probe.limits(&body).await?))
    }

    /// `GET /host/info` in the reference's shape (§6.2).
    async fn host_info(&self) -> Result<Response<Body>, AgentError> {
        let info = self.host.host_info().await.map_err(|error| {
            AgentError::new(
                500,
                "Unable to retrieve host information",
                error.to_string(),
            )
        })?;
        let pci: Vec<serde_json::Value> = info
            .pci_devices
            .iter()
            .map(|d| serde_json::json!({"Vendor": d.vendor, "Name": d.name}))
            .collect();
        let disks: Vec<serde_json::Value> = info
            .physical_disks
            .iter()
            .map(|d| serde_json::json!({"Vendor": d.vendor, "Size": d.size}))
            .collect();
        Ok(responses::json(
            &serde_json::json!({"PCIDevices": pci, "PhysicalDisks": disks}),
        ))
    }

    /// Routes, checks the signature, and dispatches.
    async fn answer(
        &self,
        request: Request<Body>,
    ) -> (Option<Route>, Result<Response<Body>, AgentError>) {
        if let Some(error) = malformed(&request) {
            return (None, Err(error));
        }
        let facts = self.facts.borrow().clone();
        let path = request.uri().path().to_string();
        // Consoles may name their node in the query (`nodeName`), as
        // Portainer's console URLs do, instead of the target header.
        let console_node = path
            .contains("/websocket/")
            .then(|| query_value(request.uri().query(), "nodeName"))
            .flatten()
            .filter(|node| !node.is_empty());
        let head = RequestHead {
            method: request.method().as_str(),
            path: &path,
            target: header_text(request.headers(), REQUEST_TARGET).or(console_node.as_deref()),
            manager_operation: header_text(request.headers(), REQUEST_MANAGER_OPERATION).is_some(),
            forwarded: header_text(request.headers(), REQUEST_HOP).is_some(),
        };
        let local = LocalView {
            facts: &facts,
            clustered: self.cluster.is_some(),
        };
        let route = routing::route(&head, local);
        if let Some(gate) = &self.edge {
            if let Err(refused) = gate.admit() {
                return (Some(route), Err(refused));
            }
        }
        // Only /ping is public; forwarded requests keep their signature
        // headers for the next agent to check.
        let peer_key_request = self
            .edge
            .as_ref()
            .is_some_and(|gate| gate.is_peer_key_request(&request));
        let certified = self.certificates_authorise
            && request
                .extensions()
                .get::<VerifiedClientCertificate>()
                .is_some();
        if route != Route::Ping && !peer_key_request && !certified {
            let standing = request
                .extensions()
                .get::<ConnectionStanding>()
                .cloned()
                .unwrap_or_default();
            let pending = match self.signatures.begin(request.headers()) {
                Ok(pending) => pending,
                Err(refused) => {
                    standing.record(false);
                    return (Some(route), Err(refused));
                }
            };
            if let Some(pending) = pending {
                let overlap = overlap::may_forward_while_verifying(overlap::Candidate {
                    method: request.method().as_str(),
                    upgrade: request.headers().contains_key(http::header::UPGRADE),
                    to_local_engine: self.goes_to_local_engine(&route),
                    standing: standing.get(),
                    in_flight: self.in_flight.now(),
                    cores: self.in_flight.cores(),
                });
                if overlap {
                    let outcome = self
                        .signatures
                        .verify_alongside(pending, self.dispatch(route.clone(), &facts, request))
                        .await;
                    standing.record(outcome.is_ok());
                    return (Some(route), outcome.and_then(|answer| answer));
                }
                let verified = pending.verify();
                let passed = self.signatures.finish(*pending, verified);
                standing.record(passed.is_ok());
                if let Err(refused) = passed {
                    return (Some(route), Err(refused));
                }
            } else {
                standing.record(true);
            }
        }
        (
            Some(route.clone()),
            self.dispatch(route, &facts, request).await,
        )
    }

    /// Whether `route` sends the request to this node's engine alone, as
    /// `dispatch` does.
    fn goes_to_local_engine(&self, route: &Route) -> bool {
        self.kubernetes.is_none()
            && match route {
                Route::Docker(DockerDispatch::Local) => true,
                Route::Docker(_) => self.cluster.is_none(),
                _ => false,
            }
    }
}

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

impl<E: DockerEngine, M: Membership, P: PeerAgents, H: HostProbe, F: Files> RequestHandler
    for Agent<E, M, P, H, F>
{
    async fn handle(&self, request: Request<Body>, peer: SocketAddr) -> Response<Body> {
        let started = Instant::now();
        let method = request.method().clone();
        let path = request.uri().path().to_string();
        let in_flight = self.in_flight.enter();
        let (route, outcome) = self.answer(request).await;
        drop(in_flight);
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
            responses::set_common_headers(response.headers_mut(), self.platform());
        }
        self.metrics.record_request(
            route_class(route.as_ref()),
            response.status().as_u16(),
            started.elapsed(),
        );
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
