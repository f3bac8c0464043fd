//! Kubernetes: which platform berth serves, and what becomes of a request
//! for the cluster's API server before it leaves berth (reference §6.6).
//!
//! The proxy's policy lives here, so it is decided in one place and tested
//! without a cluster: whose token a request carries, which of its headers
//! stay behind, and the API server's path for the agent's.

use std::fmt;

use crate::browse::query_value;
use crate::error::AgentError;
use crate::headers::{PLATFORM_DOCKER, PLATFORM_KUBERNETES};
use crate::routing::strip_version_prefix;

/// The container platform, chosen once at start (reference §1): `PODMAN=1`
/// first, then a non-empty `KUBERNETES_SERVICE_HOST` (Kubernetes sets it in
/// every pod), else Docker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Docker,
    Podman,
    Kubernetes,
}

impl Platform {
    pub fn detect(podman: bool, kubernetes_service_host: Option<&str>) -> Platform {
        match (podman, kubernetes_service_host) {
            (true, _) => Platform::Podman,
            (false, Some(host)) if !host.is_empty() => Platform::Kubernetes,
            _ => Platform::Docker,
        }
    }

    /// `Portainer-Agent-Platform`: Podman reports as Docker, as the Go
    /// agent does (Portainer knows no Podman agent).
    pub fn wire_value(self) -> &'static str {
        match self {
            Platform::Docker | Platform::Podman => PLATFORM_DOCKER,
            Platform::Kubernetes => PLATFORM_KUBERNETES,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Platform::Docker => "Docker",
            Platform::Podman => "Podman",
            Platform::Kubernetes => "Kubernetes",
        }
    }
}

/// The header in which Portainer sends the token of the user it calls for
/// (a service account Portainer made for that user).
pub const SA_TOKEN_HEADER: &str = "X-PortainerAgent-SA-Token";

/// Whose identity a request has on the API server.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// The token Portainer sent for its user, used as it is.
    Caller(String),
    /// No token sent: the pod's own service account (Portainer's admin
    /// calls, such as making its users' service accounts).
    OwnServiceAccount,
}

impl Credential {
    /// Whose token it is, in words fit for a log line.
    pub fn source(&self) -> &'static str {
        match self {
            Credential::Caller(_) => "the caller's",
            Credential::OwnServiceAccount => "the pod's own",
        }
    }
}

/// Tokens are secrets: a `{:?}` of a credential never shows one.
impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Caller(_) => f.write_str("Caller(<token withheld>)"),
            Credential::OwnServiceAccount => f.write_str("OwnServiceAccount"),
        }
    }
}

/// The credential for a request whose `X-PortainerAgent-SA-Token` is
/// `header` (its raw bytes). An empty header means none, as in the Go agent.
///
/// # Errors
/// A token that cannot travel in an `Authorization` header (control
/// characters, spaces, bytes outside ASCII): 400, without the token.
pub fn credential(header: Option<&[u8]>) -> Result<Credential, AgentError> {
    let Some(raw) = header.filter(|raw| !raw.is_empty()) else {
        return Ok(Credential::OwnServiceAccount);
    };
    // RFC 6750's b64token, loosely: what Kubernetes tokens are made of.
    if raw.iter().all(|b| b.is_ascii_graphic()) {
        let token = std::str::from_utf8(raw).expect("ASCII is UTF-8");
        Ok(Credential::Caller(token.to_string()))
    } else {
        Err(AgentError::new(
            400,
            "Invalid Kubernetes service account token",
            format!("{SA_TOKEN_HEADER} may hold only visible ASCII characters"),
        ))
    }
}

/// The API server's path and query for the agent's `path_and_query`
/// (`/kubernetes/api/v1/pods?watch=1` → `/api/v1/pods?watch=1`; a Docker
/// API version before it, `/v1.41/kubernetes/…`, is dropped too).
/// `None` when the path is not under `/kubernetes`.
pub fn api_server_path(path_and_query: &str) -> Option<String> {
    let bare = strip_version_prefix(path_and_query);
    let rest = bare.strip_prefix("/kubernetes")?;
    match rest.chars().next() {
        None => Some("/".to_string()),
        Some('/') => Some(rest.to_string()),
        Some('?') => Some(format!("/{rest}")),
        Some(_) => None,
    }
}

/// Whether the API server's answer to `path_and_query` is a stream a
/// client waits on event by event (a watch, a followed log), whose frames
/// must go on as they come; other answers end soon, and their frames may be
/// joined on the way.
pub fn answers_event_by_event(path_and_query: &str) -> bool {
    let Some((_, query)) = path_and_query.split_once('?') else {
        return false;
    };
    let on = |name: &str| {
        query_value(Some(query), name).is_some_and(|value| value == "true" || value == "1")
    };
    on("watch") || on("follow")
}

/// Whether a request header stays behind: the agent protocol's own headers
/// (the caller's token and Portainer's signature among them) are for berth,
/// and the caller's `Authorization` is replaced by the credential's.
pub fn withheld_header(name: &str) -> bool {
    name.eq_ignore_ascii_case("authorization")
        || name
            .get(..17)
            .is_some_and(|prefix| prefix.eq_ignore_ascii_case("x-portaineragent-"))
}

/// A console into a container of a pod (`/websocket/pod`, reference §6.5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodExec {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    /// `command` split on single spaces, as the Go agent splits it.
    pub command: Vec<String>,
}

impl PodExec {
    /// From `/websocket/pod`'s query: `namespace`, `podName`,
    /// `containerName` and `command`, all required.
    ///
    /// # Errors
    /// `400 "Invalid query parameter: <name>"` for the first one missing
    /// or empty, as the Go agent answers.
    pub fn from_query(query: Option<&str>) -> Result<PodExec, AgentError> {
        let required = |name: &str| {
            query_value(query, name)
                .filter(|value| !value.is_empty())
                .ok_or_else(|| {
                    AgentError::new(
                        400,
                        format!("Invalid query parameter: {name}"),
                        "Missing query parameter",
                    )
                })
        };
        Ok(PodExec {
            namespace: required("namespace")?,
            pod: required("podName")?,
            container: required("containerName")?,
            command: required("command")?
                .split(' ')
                .map(str::to_string)
                .collect(),
        })
    }

    /// The API server's exec path for an interactive terminal: stdin,
    /// stdout, stderr and a TTY, as the Go agent asks for them.
    pub fn api_server_path(&self) -> String {
        let mut path = format!(
            "/api/v1/namespaces/{}/pods/{}/exec?container={}&stdin=true&stdout=true&stderr=true&tty=true",
            percent_encode(&self.namespace),
            percent_encode(&self.pod),
            percent_encode(&self.container),
        );
        for word in &self.command {
            path.push_str("&command=");
            path.push_str(&percent_encode(word));
        }
        path
    }
}

/// RFC 3986's unreserved characters pass; every other byte is escaped.
fn percent_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// The answer to a Docker request (the engine's API, its consoles, its
/// volumes) on an agent that serves a Kubernetes cluster.
pub fn no_docker_engine() -> AgentError {
    AgentError::new(
        501,
        "This agent serves a Kubernetes cluster and has no Docker engine",
        "Docker requests need an agent on a Docker host; send Kubernetes requests under /kubernetes",
    )
}

/// The answer to a Kubernetes request on an agent of a Docker host.
pub fn not_on_kubernetes() -> AgentError {
    AgentError::new(
        501,
        "This agent serves a Docker host, not a Kubernetes cluster",
        "Kubernetes requests need berth running in a pod of the cluster (KUBERNETES_SERVICE_HOST set)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn podman_comes_first_then_kubernetes_then_docker() {
        assert_eq!(Platform::detect(true, Some("10.96.0.1")), Platform::Podman);
        assert_eq!(
            Platform::detect(false, Some("10.96.0.1")),
            Platform::Kubernetes
        );
        assert_eq!(Platform::detect(false, Some("")), Platform::Docker);
        assert_eq!(Platform::detect(false, None), Platform::Docker);
        assert_eq!(Platform::Podman.wire_value(), "1");
        assert_eq!(Platform::Kubernetes.wire_value(), "2");
    }

    #[test]
    fn the_callers_token_is_used_as_sent_and_never_shown() {
        let caller = credential(Some(b"eyJhbGciOi.payload.sig")).unwrap();
        assert_eq!(caller, Credential::Caller("eyJhbGciOi.payload.sig".into()));
        assert!(!format!("{caller:?}").contains("eyJ"));
        assert_eq!(credential(None).unwrap(), Credential::OwnServiceAccount);
        assert_eq!(
            credential(Some(b"")).unwrap(),
            Credential::OwnServiceAccount
        );
    }

    #[test]
    fn a_token_that_cannot_be_a_header_is_refused_without_echoing_it() {
        for bad in [&b"two words"[..], b"line\nbreak", "caf\u{e9}".as_bytes()] {
            let error = credential(Some(bad)).unwrap_err();
            assert_eq!(error.status(), 400);
            assert!(!error.details().contains("word"), "{}", error.details());
        }
    }

    #[test]
    fn the_api_servers_path_is_the_agents_without_its_prefix() {
        let cases = [
            (
                "/kubernetes/api/v1/pods?watch=1",
                Some("/api/v1/pods?watch=1"),
            ),
            ("/kubernetes", Some("/")),
            ("/kubernetes/", Some("/")),
            ("/kubernetes?timeout=32s", Some("/?timeout=32s")),
            ("/v1.41/kubernetes/version", Some("/version")),
            ("/kubernetesx/api", None),
            ("/containers/json", None),
        ];
        for (agent, api) in cases {
            assert_eq!(api_server_path(agent).as_deref(), api, "{agent}");
        }
    }

    #[test]
    fn a_pod_console_needs_every_parameter_and_escapes_them() {
        let exec = PodExec::from_query(Some(
            "namespace=team-a&podName=web-1&containerName=app&command=sh%20-c%20echo+hi%26",
        ))
        .unwrap();
        assert_eq!(exec.command, ["sh", "-c", "echo", "hi&"]);
        assert_eq!(
            exec.api_server_path(),
            "/api/v1/namespaces/team-a/pods/web-1/exec?container=app&stdin=true&stdout=true\
             &stderr=true&tty=true&command=sh&command=-c&command=echo&command=hi%26"
        );
        for (query, missing) in [
            ("podName=p&containerName=c&command=sh", "namespace"),
            ("namespace=n&containerName=c&command=sh", "podName"),
            ("namespace=n&podName=p&command=sh", "containerName"),
            ("namespace=n&podName=p&containerName=c&command=", "command"),
        ] {
            let error = PodExec::from_query(Some(query)).unwrap_err();
            assert_eq!(error.status(), 400);
            assert_eq!(
                error.message(),
                format!("Invalid query parameter: {missing}")
            );
        }
        let escaped = PodExec {
            namespace: "a/b".into(),
            pod: "p q".into(),
            container: "c?".into(),
            command: vec!["é".into()],
        };
        assert_eq!(
            escaped.api_server_path(),
            "/api/v1/namespaces/a%2Fb/pods/p%20q/exec?container=c%3F&stdin=true&stdout=true\
             &stderr=true&tty=true&command=%C3%A9"
        );
    }

    #[test]
    fn watches_and_followed_logs_go_event_by_event() {
        for streamed in [
            "/api/v1/pods?watch=1",
            "/api/v1/namespaces/a/configmaps?labelSelector=x&watch=true",
            "/api/v1/namespaces/a/pods/p/log?follow=true&tailLines=10",
        ] {
            assert!(answers_event_by_event(streamed), "{streamed}");
        }
        for whole in [
            "/api/v1/pods",
            "/api/v1/pods?watch=false",
            "/api/v1/namespaces/a/pods/p/log?follow=false",
            "/apis?timeout=32s",
        ] {
            assert!(!answers_event_by_event(whole), "{whole}");
        }
    }

    #[test]
    fn agent_headers_and_the_callers_authorization_stay_behind() {
        for name in [
            "Authorization",
            "X-PortainerAgent-SA-Token",
            "x-portaineragent-signature",
            "X-PortainerAgent-PublicKey",
        ] {
            assert!(withheld_header(name), "{name}");
        }
        for name in [
            "Accept",
            "Content-Type",
            "X-Stream-Protocol-Version",
            "X-Port",
        ] {
            assert!(!withheld_header(name), "{name}");
        }
    }
}
