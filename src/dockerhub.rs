//! `POST /v2/dockerhub` (reference §6.8): asks Docker Hub's token service
//! for a token (as the account in the request, or anonymously), then a
//! manifest's `HEAD` for the pull limits, each call bounded by 3 s as the
//! Go agent's client. The addresses are options (`DOCKERHUB_AUTH_URL`,
//! `DOCKERHUB_REGISTRY_URL`), so a scripted Docker Hub can stand in.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use berth_domain::dockerhub::{
    limits_from, limits_unreachable, parse_request, token_from, token_unreachable, LIMITS_TARGET,
    TOKEN_TARGET,
};
use berth_domain::error::AgentError;
use berth_ports::{EdgeCall, PortainerApi};
use http::Method;
use serde_json::Value;

const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// What the agent asks for `POST /v2/dockerhub`; a trait object, so the
/// agent is not generic over one more port.
pub trait LimitsProbe: Send + Sync + 'static {
    /// The limits for the request `body`: `{"remaining","limit"}` or
    /// `null`.
    fn limits<'a>(
        &'a self,
        body: &'a [u8],
    ) -> Pin<Box<dyn Future<Output = Result<Value, AgentError>> + Send + 'a>>;
}

/// Docker Hub through two clients of the `PortainerApi` port: its token
/// service and its registry.
pub struct DockerHubProbe<A> {
    auth: A,
    registry: A,
}

impl<A: PortainerApi> DockerHubProbe<A> {
    pub fn new(auth: A, registry: A) -> Self {
        DockerHubProbe { auth, registry }
    }

    async fn limits_of(&self, body: &[u8]) -> Result<Value, AgentError> {
        let account = parse_request(body)?;
        let headers = account
            .map(|a| vec![("Authorization".to_string(), a.basic_auth())])
            .unwrap_or_default();
        let answer = self
            .auth
            .call(get(Method::GET, TOKEN_TARGET, headers))
            .await
            .map_err(|e| token_unreachable(&e.to_string()))?;
        let token = token_from(answer.status, &answer.body)?;
        let bearer = vec![("Authorization".to_string(), format!("Bearer {token}"))];
        let answer = self
            .registry
            .call(get(Method::HEAD, LIMITS_TARGET, bearer))
            .await
            .map_err(|e| limits_unreachable(&e.to_string()))?;
        limits_from(
            answer.status,
            answer.header("RateLimit-Limit"),
            answer.header("RateLimit-Remaining"),
        )
    }
}

fn get(method: Method, target: &str, headers: Vec<(String, String)>) -> EdgeCall {
    EdgeCall {
        method,
        path: target.to_string(),
        headers,
        body: Vec::new(),
        timeout: CALL_TIMEOUT,
    }
}

impl<A: PortainerApi + Sync> LimitsProbe for DockerHubProbe<A> {
    fn limits<'a>(
        &'a self,
        body: &'a [u8],
    ) -> Pin<Box<dyn Future<Output = Result<Value, AgentError>> + Send + 'a>> {
        Box::pin(self.limits_of(body))
    }
}
