//! The `KubernetesApi` port: the cluster's API server, reached as a pod
//! reaches it (`KUBERNETES_SERVICE_HOST`/`_PORT`), over a pooled HTTPS
//! client that verifies the server's certificate against the service
//! account's CA. (The Go agent skips that verification.)

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth_domain::kubernetes::Credential;
use berth_ports::{Body, KubernetesApi, KubernetesError, PeerAgents, PeerError};
use http::header::{AUTHORIZATION, HOST};
use http::{HeaderValue, Request, Response};
use rustls::RootCertStore;

use crate::http::tls::portainer_client_config;
use crate::peers::HttpsPeers;

/// What a pod finds in its service account folder.
pub const TOKEN_FILE: &str = "token";
pub const CA_FILE: &str = "ca.crt";
pub const NAMESPACE_FILE: &str = "namespace";

/// The pod's namespace, from its service account folder, as kubectl in a
/// pod finds it; `default` when the file is missing or empty.
pub fn own_namespace(service_account_dir: &Path) -> String {
    std::fs::read_to_string(service_account_dir.join(NAMESPACE_FILE))
        .ok()
        .map(|namespace| namespace.trim().to_string())
        .filter(|namespace| !namespace.is_empty())
        .unwrap_or_else(|| berth_domain::kubernetes_stack::DEFAULT_NAMESPACE.to_string())
}

#[derive(Clone)]
pub struct KubeApiServer {
    client: HttpsPeers,
    address: SocketAddr,
    token_file: Arc<TokenFile>,
}

impl KubeApiServer {
    /// The API server at `host` (an IP, as Kubernetes sets
    /// `KUBERNETES_SERVICE_HOST`) and `port`, trusted through the CA in
    /// `service_account_dir`, whose token is the pod's own credential.
    ///
    /// # Errors
    /// When `host` is not an IP address or the CA file is unusable.
    pub fn in_cluster(
        host: &str,
        port: u16,
        service_account_dir: &Path,
        connect_timeout: Duration,
    ) -> Result<Self, String> {
        // An IPv6 service address comes without brackets.
        let ip: IpAddr = host.trim_matches(['[', ']']).parse().map_err(|_| {
            format!("KUBERNETES_SERVICE_HOST={host:?} is not an IP address, as Kubernetes sets it")
        })?;
        let ca = service_account_dir.join(CA_FILE);
        let tls = portainer_client_config(
            false,
            Some(&ca.to_string_lossy()),
            None,
            &RootCertStore::empty(),
            None,
        )
        .map_err(|error| format!("the cluster's CA cannot be used: {error}"))?;
        Ok(KubeApiServer {
            client: HttpsPeers::new(tls, connect_timeout),
            address: SocketAddr::new(ip, port),
            token_file: Arc::new(TokenFile::new(service_account_dir.join(TOKEN_FILE))),
        })
    }

    /// The bearer token for `credential`.
    async fn token(&self, credential: Credential) -> Result<String, KubernetesError> {
        match credential {
            Credential::Caller(token) => Ok(token),
            Credential::OwnServiceAccount => self.token_file.read(Instant::now()).await,
        }
    }
}

/// How long a copy of the pod's token serves before its file is read
/// again: the kubelet writes a new projected token once 80% of the old
/// one's life (an hour at least) has passed, so a copy a minute old is
/// always still valid, and no request waits on the file system.
const TOKEN_REREAD: Duration = Duration::from_secs(60);

/// The pod's own token, which Kubernetes rotates in place.
struct TokenFile {
    path: PathBuf,
    copy: Mutex<Option<(String, Instant)>>,
}

impl TokenFile {
    fn new(path: PathBuf) -> Self {
        TokenFile {
            path,
            copy: Mutex::new(None),
        }
    }

    async fn read(&self, now: Instant) -> Result<String, KubernetesError> {
        if let Some((token, read)) = &*self.copy.lock().expect("not poisoned") {
            if now.saturating_duration_since(*read) < TOKEN_REREAD {
                return Ok(token.clone());
            }
        }
        let token = tokio::fs::read_to_string(&self.path)
            .await
            .map(|token| token.trim().to_string())
            .map_err(|error| KubernetesError::NoServiceAccountToken {
                path: self.path.display().to_string(),
                cause: error.to_string(),
            })?;
        *self.copy.lock().expect("not poisoned") = Some((token.clone(), now));
        Ok(token)
    }
}

impl KubernetesApi for KubeApiServer {
    async fn forward(
        &self,
        mut request: Request<Body>,
        credential: Credential,
    ) -> Result<Response<Body>, KubernetesError> {
        let token = self.token(credential).await?;
        let mut authorization = HeaderValue::try_from(format!("Bearer {token}")).map_err(|_| {
            KubernetesError::NoServiceAccountToken {
                path: self.token_file.path.display().to_string(),
                cause: "it holds characters a header cannot carry".to_string(),
            }
        })?;
        authorization.set_sensitive(true);
        request.headers_mut().insert(AUTHORIZATION, authorization);
        // Requests berth makes itself (a pod console's exec) name no host;
        // HTTP/1.1 requires one.
        if !request.headers().contains_key(HOST) {
            let host = HeaderValue::try_from(self.address.to_string())
                .expect("an address is a valid header value");
            request.headers_mut().insert(HOST, host);
        }
        self.client
            .forward(self.address, request)
            .await
            .map_err(|error| match error {
                PeerError::Unreachable { cause, .. } => KubernetesError::Unreachable {
                    endpoint: self.endpoint(),
                    cause,
                },
                PeerError::Timeout { after_seconds, .. } => KubernetesError::Timeout {
                    endpoint: self.endpoint(),
                    after_seconds,
                },
            })
    }

    fn endpoint(&self) -> String {
        format!("https://{}", self.address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_pods_token_is_read_again_once_a_minute() {
        let dir = std::env::temp_dir().join(format!("berth-token-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(TOKEN_FILE);
        std::fs::write(&path, "first-token\n").unwrap();
        let file = TokenFile::new(path.clone());
        let start = Instant::now();
        assert_eq!(file.read(start).await.unwrap(), "first-token");
        std::fs::write(&path, "rotated-token\n").unwrap();
        assert_eq!(
            file.read(start + Duration::from_secs(59)).await.unwrap(),
            "first-token"
        );
        assert_eq!(
            file.read(start + TOKEN_REREAD).await.unwrap(),
            "rotated-token"
        );
        std::fs::remove_file(&path).unwrap();
        let later = start + TOKEN_REREAD * 3;
        match file.read(later).await {
            Err(KubernetesError::NoServiceAccountToken { path: named, .. }) => {
                assert_eq!(named, path.display().to_string());
            }
            other => panic!("{other:?}"),
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
