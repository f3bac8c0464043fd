//! The Kubernetes routes of an agent that serves a cluster: `/kubernetes/*`,
//! a proxy to the cluster's API server (reference §6.6), `/websocket/pod`
//! (`pod_console`) and `/v2/kubernetes/stack` (`kubernetes_stack`).
//!
//! The domain decides whose token a request carries and what of it goes
//! on; this module applies that to the request and forwards it through the
//! `KubernetesApi` port. Answers stream as they come (watches, followed
//! logs), and an upgrade (exec, attach, port-forward, over SPDY or
//! websocket) is spliced, so `kubectl` works through berth end to end.

use std::future::Future;
use std::pin::Pin;

use berth_domain::error::AgentError;
use berth_domain::kubernetes::{self, Credential, SA_TOKEN_HEADER};
use berth_ports::{Body, KubernetesApi, KubernetesError, KubernetesObjects};
use http::{HeaderName, Request, Response, Uri};

use tracing::debug;

use crate::kubernetes_stack;
use crate::pod_console;
use crate::proxy::{self, Streams};

/// The Kubernetes routes, as the agent calls them (object-safe, so the
/// agent holds them without another type parameter).
pub trait KubernetesRoutes: Send + Sync + 'static {
    /// `/kubernetes/*`.
    fn proxy(
        &self,
        request: Request<Body>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Body>, AgentError>> + Send + '_>>;

    /// `/websocket/pod`.
    fn pod_console(
        &self,
        request: Request<Body>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Body>, AgentError>> + Send + '_>>;

    /// `POST /v2/kubernetes/stack`.
    fn stack(
        &self,
        request: Request<Body>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Body>, AgentError>> + Send + '_>>;
}

pub struct KubernetesProxy<K, O> {
    api: K,
    objects: O,
    /// The pod's namespace, where a stack's objects go that name none.
    own_namespace: String,
}

impl<K: KubernetesApi, O: KubernetesObjects> KubernetesProxy<K, O> {
    pub fn new(api: K, objects: O, own_namespace: String) -> Self {
        KubernetesProxy {
            api,
            objects,
            own_namespace,
        }
    }

    async fn forward(&self, mut request: Request<Body>) -> Result<Response<Body>, AgentError> {
        let credential = credential_of(&request)?;
        let agent_path = request
            .uri()
            .path_and_query()
            .map_or("/", |path| path.as_str());
        let api_path = kubernetes::api_server_path(agent_path)
            .ok_or_else(|| AgentError::bad_request("Kubernetes requests go under /kubernetes"))?;
        let streams = if kubernetes::answers_event_by_event(&api_path) {
            Streams::AsTheyCome
        } else {
            Streams::Joined
        };
        *request.uri_mut() = api_path
            .parse::<Uri>()
            .map_err(|error| AgentError::bad_request(&format!("unusable path: {error}")))?;
        let withheld: Vec<HeaderName> = request
            .headers()
            .keys()
            .filter(|name| kubernetes::withheld_header(name.as_str()))
            .cloned()
            .collect();
        for name in withheld {
            request.headers_mut().remove(name);
        }
        debug!(
            path = %api_path,
            token = credential.source(),
            "to the Kubernetes API server"
        );
        proxy::forward_with(
            request,
            |request| async move {
                self.api
                    .forward(request, credential)
                    .await
                    .map_err(api_error)
            },
            streams,
        )
        .await
    }
}

impl<K: KubernetesApi, O: KubernetesObjects> KubernetesRoutes for KubernetesProxy<K, O> {
    fn proxy(
        &self,
        request: Request<Body>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Body>, AgentError>> + Send + '_>> {
        Box::pin(self.forward(request))
    }

    fn pod_console(
        &self,
        request: Request<Body>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Body>, AgentError>> + Send + '_>> {
        Box::pin(async move {
            let credential = credential_of(&request)?;
            pod_console::open(&self.api, credential, request).await
        })
    }

    fn stack(
        &self,
        request: Request<Body>,
    ) -> Pin<Box<dyn Future<Output = Result<Response<Body>, AgentError>> + Send + '_>> {
        Box::pin(async move {
            let credential = credential_of(&request)?;
            kubernetes_stack::answer(&self.objects, credential, &self.own_namespace, request).await
        })
    }
}

/// Whose token the request carries on the API server.
fn credential_of(request: &Request<Body>) -> Result<Credential, AgentError> {
    kubernetes::credential(
        request
            .headers()
            .get(SA_TOKEN_HEADER)
            .map(|value| value.as_bytes()),
    )
}

/// The answers clients see when the API server could not be asked; the API
/// server's own refusals pass through as it wrote them.
pub(crate) fn api_error(error: KubernetesError) -> AgentError {
    match error {
        KubernetesError::Unreachable { endpoint, cause } => AgentError::new(
            502,
            format!("Unable to reach the Kubernetes API server {endpoint}"),
            cause,
        ),
        KubernetesError::Timeout {
            endpoint,
            after_seconds,
        } => AgentError::new(
            504,
            format!("Unable to reach the Kubernetes API server {endpoint}"),
            format!("no connection within {after_seconds}s"),
        ),
        KubernetesError::NoServiceAccountToken { path, cause } => AgentError::new(
            500,
            "Unable to read service account token file",
            format!("{path}: {cause}"),
        ),
    }
}
