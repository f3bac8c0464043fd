//! The `PortainerApi` port: one HTTP/1.1 call per connection to the Edge
//! key's Portainer URL (an agent polls every few seconds; a fresh
//! connection per poll also picks up rotated client certificates), over
//! TLS for `https://`, through a proxy when the settings name one for that
//! address. Redirects are followed as Go's `http.Client` follows them (the
//! Go agent's client), so a Portainer behind a redirecting proxy works.

use std::sync::{Arc, OnceLock};

use berth_domain::edge::proxy::{join_host_port, ProxySettings};
use berth_ports::{EdgeAnswer, EdgeCall, PortainerApi, PortainerError};
use bytes::Bytes;
use http::header::{ETAG, HOST, LOCATION, PROXY_AUTHORIZATION};
use http::{Method, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};

use crate::http::revocation::Revocation;
use crate::http::tls;

/// The largest answer berth reads from Portainer (stack files included).
const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// A CRL download, as the Go agent's.
const CRL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Go's `http.Client` gives up after ten redirects.
const MAX_REDIRECTS: usize = 10;

/// TLS choices for Portainer (EDGE_INSECURE_POLL and the MTLS_* options).
#[derive(Debug, Clone, Default)]
pub struct PortainerTls {
    pub insecure: bool,
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

/// Where a call goes: scheme, host and port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    secure: bool,
    host: String,
    port: u16,
}

impl Origin {
    fn default_port(secure: bool) -> u16 {
        if secure {
            443
        } else {
            80
        }
    }

    /// The `Host` header: the port only when it is not the scheme's.
    fn authority(&self) -> String {
        match (
            self.port == Self::default_port(self.secure),
            self.host.contains(':'),
        ) {
            (false, _) => join_host_port(&self.host, self.port),
            (true, true) => format!("[{}]", self.host),
            (true, false) => self.host.clone(),
        }
    }

    fn from_uri(uri: &Uri) -> Result<Origin, String> {
        let secure = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => return Err(format!("{uri} is not http:// or https://")),
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("{uri} has no host"))?
            .trim_matches(['[', ']'])
            .to_string();
        Ok(Origin {
            secure,
            port: uri.port_u16().unwrap_or(Self::default_port(secure)),
            host,
        })
    }
}

#[derive(Clone)]
pub struct PortainerHttp {
    origin: Origin,
    /// The URL's path, prefixed to every call's path.
    base_path: String,
    tls: PortainerTls,
    /// Whether `MTLS_*` files are involved: then the configuration is
    /// rebuilt per call, so rotated files are used.
    uses_files: bool,
    /// Otherwise (system roots, or `EDGE_INSECURE_POLL`) it is built once,
    /// on the first call, not when the client is made: the system's roots
    /// are read then, if they had not been already.
    fixed_tls: Arc<OnceLock<Result<Arc<ClientConfig>, String>>>,
    proxies: ProxySettings,
    /// The CRLs of Portainer's chain (checked with a client certificate).
    revocation: Arc<Revocation>,
}

impl PortainerHttp {
    /// # Errors
    /// When the URL is not `http://` or `https://` with a host.
    pub fn new(url: &str, tls: PortainerTls, proxies: ProxySettings) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("the Portainer URL {url:?} is invalid: {e}"))?;
        let origin = Origin::from_uri(&uri).map_err(|e| format!("the Portainer URL {e}"))?;
        let uses_files = !tls.insecure && (tls.ca.is_some() || tls.cert.is_some());
        Ok(PortainerHttp {
            uses_files,
            fixed_tls: Arc::default(),
            base_path: uri.path().trim_end_matches('/').to_string(),
            origin,
            tls,
            proxies,
            revocation: Arc::default(),
        })
    }

    /// The system's CA store, only where it can be used (a redirect from
    /// http:// to https:// may need it).
    fn system_roots(&self) -> Arc<RootCertStore> {
        if !self.tls.insecure && self.tls.ca.is_none() {
            tls::system_roots()
        } else {
            Arc::new(RootCertStore::empty())
        }
    }

    fn tls_config(&self) -> Result<Arc<ClientConfig>, PortainerError> {
        let built = if self.uses_files {
            tls::portainer_client_config(
                self.tls.insecure,
                self.tls.ca.as_deref(),
                self.tls.cert.as_deref().zip(self.tls.key.as_deref()),
                &self.system_roots(),
                Some(&self.revocation),
            )
            .map_err(|e| e.to_string())
        } else {
            self.fixed_tls
                .get_or_init(|| {
                    tls::portainer_client_config(
                        self.tls.insecure,
                        None,
                        None,
                        &self.system_roots(),
                        None,
                    )
                    .map_err(|e| e.to_string())
                })
                .clone()
        };
        built.map_err(PortainerError::Unreachable)
    }

    /// One request on a connection of its own; the answer's head.
    async fn send_once(
        &self,
        origin: &Origin,
        target: &str,
        method: &Method,
        headers: &[(String, String)],
        body: Bytes,
    ) -> Result<http::Response<hyper::body::Incoming>, PortainerError> {
        let unreachable = |what: String| PortainerError::Unreachable(what);
        let authority = origin.authority();
        let proxy = self
            .proxies
            .for_portainer(origin.secure, &origin.host, origin.port);
        // Plain HTTP through a proxy is asked of the proxy in absolute
        // form; everything else is a connection to the origin (through
        // the proxy's CONNECT for https://).
        let (tcp, uri, proxy_authorization) = match proxy {
            Some(proxy) if !origin.secure => {
                let forward = crate::dial::to_proxy(proxy)
                    .await
                    .map_err(|e| unreachable(format!("the proxy for {authority}: {e}")))?;
                let absolute = format!(
                    "http://{}{target}",
                    join_host_port(&origin.host, origin.port)
                );
                (forward.stream, absolute, forward.authorization)
            }
            _ => {
                let tcp = crate::dial::connect(&origin.host, origin.port, proxy)
                    .await
                    .map_err(|e| unreachable(format!("{authority}: {e}")))?;
                (tcp, target.to_string(), None)
            }
        };
        let mut builder = Request::builder()
            .method(method.clone())
            .uri(uri)
            .header(HOST, authority.as_str());
        if let Some(authorization) = proxy_authorization {
            builder = builder.header(PROXY_AUTHORIZATION, authorization);
        }
        for (name, value) in headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| unreachable(format!("cannot build the request: {e}")))?;
        if origin.secure {
            let name = ServerName::try_from(origin.host.clone())
                .map_err(|e| unreachable(format!("bad server name: {e}")))?;
            let stream = match tokio_rustls::TlsConnector::from(self.tls_config()?)
                .connect(name.clone(), tcp)
                .await
            {
                Ok(stream) => stream,
                Err(error) => {
                    let missing = self.revocation.missing();
                    if missing.is_empty() {
                        return Err(unreachable(format!("TLS with {authority}: {error}")));
                    }
                    // The chain names CRLs not fetched yet: fetched, then
                    // a second handshake on a new connection.
                    for url in missing {
                        self.fetch_crl(&url).await.map_err(unreachable)?;
                    }
                    let tcp = crate::dial::connect(&origin.host, origin.port, proxy)
                        .await
                        .map_err(|e| unreachable(format!("{authority}: {e}")))?;
                    tokio_rustls::TlsConnector::from(self.tls_config()?)
                        .connect(name, tcp)
                        .await
                        .map_err(|e| unreachable(format!("TLS with {authority}: {e}")))?
                }
            };
            send(stream, request).await
        } else {
            send(tcp, request).await
        }
    }

    /// Fetches the CRL at `url` (through the proxies Portainer's calls
    /// take, redirects followed) into the revocation cache.
    /// Boxed: a CRL is fetched with a Portainer client of its own, whose
    /// calls could (as a type) fetch CRLs again.
    fn fetch_crl<'a>(
        &'a self,
        url: &'a str,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send + 'a>> {
        Box::pin(self.fetch_crl_now(url))
    }

    async fn fetch_crl_now(&self, url: &str) -> Result<(), String> {
        let failed =
            |why: String| format!("the revocation list at {url} could not be fetched: {why}");
        let uri: Uri = url.parse().map_err(|e| failed(format!("{e}")))?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
        let origin = format!(
            "{}://{}",
            uri.scheme_str().unwrap_or("http"),
            uri.authority().map_or("", |a| a.as_str())
        );
        let client = PortainerHttp::new(&origin, PortainerTls::default(), self.proxies.clone())
            .map_err(failed)?;
        let call = EdgeCall {
            method: Method::GET,
            path,
            headers: Vec::new(),
            body: Vec::new(),
            timeout: CRL_TIMEOUT,
        };
        let answer = tokio::time::timeout(CRL_TIMEOUT, client.exchange(call))
            .await
            .map_err(|_| failed(format!("no answer in {}s", CRL_TIMEOUT.as_secs())))?
            .map_err(|e| failed(e.to_string()))?;
        if answer.status != 200 {
            return Err(failed(format!("the server answered {}", answer.status)));
        }
        self.revocation
            .store(url, answer.body, std::time::SystemTime::now())
    }

    async fn exchange(&self, call: EdgeCall) -> Result<EdgeAnswer, PortainerError> {
        let mut origin = self.origin.clone();
        let mut target = format!("{}{}", self.base_path, call.path);
        let mut method = call.method;
        let mut body = Bytes::from(call.body);
        let mut redirects = 0;
        let response = loop {
            let response = self
                .send_once(&origin, &target, &method, &call.headers, body.clone())
                .await?;
            let Some(next) = redirect(&response, &origin, &target) else {
                break response;
            };
            redirects += 1;
            if redirects > MAX_REDIRECTS {
                return Err(PortainerError::Unreachable(format!(
                    "stopped after {MAX_REDIRECTS} redirects"
                )));
            }
            let (next_origin, next_target) = next.map_err(PortainerError::Unreachable)?;
            // As Go: 301, 302 and 303 turn a request into a bodiless GET
            // (HEAD stays HEAD); 307 and 308 repeat it as it was.
            if matches!(response.status().as_u16(), 301..=303) && method != Method::HEAD {
                method = Method::GET;
                body = Bytes::new();
            }
            origin = next_origin;
            target = next_target;
        };
        let status = response.status().as_u16();
        let etag = response
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let headers = response
            .headers()
            .iter()
            .filter_map(|(name, value)| {
                Some((name.as_str().to_string(), value.to_str().ok()?.to_string()))
            })
            .collect();
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| PortainerError::Unreachable(format!("reading the answer: {e}")))?
            .to_bytes()
            .to_vec();
        Ok(EdgeAnswer {
            status,
            etag,
            headers,
            body,
        })
    }
}

/// Where a redirect answer sends the call next, when it is one Go's client
/// follows (301, 302, 303, 307, 308 with a `Location`); `Some(Err)` for a
/// `Location` that cannot be followed.
fn redirect<B>(
    response: &http::Response<B>,
    origin: &Origin,
    target: &str,
) -> Option<Result<(Origin, String), String>> {
    let followed = [
        StatusCode::MOVED_PERMANENTLY,
        StatusCode::FOUND,
        StatusCode::SEE_OTHER,
        StatusCode::TEMPORARY_REDIRECT,
        StatusCode::PERMANENT_REDIRECT,
    ];
    if !followed.contains(&response.status()) {
        return None;
    }
    let location = response.headers().get(LOCATION)?.to_str().ok()?;
    Some(resolve_location(origin, target, location))
}

/// `location` read against the request it answers (RFC 3986 reference
/// resolution, for the forms servers send).
fn resolve_location(
    origin: &Origin,
    target: &str,
    location: &str,
) -> Result<(Origin, String), String> {
    let unusable = |why: &str| format!("the redirect to {location:?} cannot be followed: {why}");
    let absolute = if location.starts_with("//") {
        let scheme = if origin.secure { "https:" } else { "http:" };
        Some(format!("{scheme}{location}"))
    } else if location.contains("://") {
        Some(location.to_string())
    } else {
        None
    };
    if let Some(absolute) = absolute {
        let uri: Uri = absolute.parse().map_err(|_| unusable("not a URL"))?;
        let next = Origin::from_uri(&uri).map_err(|e| unusable(&e))?;
        let path = uri.path_and_query().map_or("/", |p| p.as_str());
        return Ok((next, path.to_string()));
    }
    let path = if location.starts_with('/') {
        location.to_string()
    } else {
        let current = target.split('?').next().unwrap_or("/");
        let folder = current.rsplit_once('/').map_or("", |(folder, _)| folder);
        format!("{folder}/{location}")
    };
    let path: http::uri::PathAndQuery = path.parse().map_err(|_| unusable("not a path"))?;
    Ok((origin.clone(), path.as_str().to_string()))
}

async fn send<S>(
    stream: S,
    request: Request<Full<Bytes>>,
) -> Result<http::Response<hyper::body::Incoming>, PortainerError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| PortainerError::Unreachable(e.to_string()))?;
    tokio::spawn(connection);
    sender
        .send_request(request)
        .await
        .map_err(|e| PortainerError::Unreachable(e.to_string()))
}

impl PortainerApi for PortainerHttp {
    async fn call(&self, call: EdgeCall) -> Result<EdgeAnswer, PortainerError> {
        let limit = call.timeout;
        tokio::time::timeout(limit, self.exchange(call))
            .await
            .map_err(|_| PortainerError::Timeout)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_give_the_connection_and_the_base_path() {
        let new =
            |url: &str| PortainerHttp::new(url, PortainerTls::default(), ProxySettings::default());
        let p = new("https://portainer.example:9443/sub/").unwrap();
        assert_eq!(
            (p.origin.secure, p.origin.port, p.base_path.as_str()),
            (true, 9443, "/sub")
        );
        assert_eq!(p.origin.authority(), "portainer.example:9443");
        let p = new("http://10.0.0.1").unwrap();
        assert_eq!(
            (p.origin.port, p.origin.authority().as_str()),
            (80, "10.0.0.1")
        );
        let p = new("https://[fd00::1]").unwrap();
        assert_eq!(p.origin.authority(), "[fd00::1]");
        assert!(new("ftp://x").is_err());
        assert!(new("not a url").is_err());
    }

    #[test]
    fn redirects_resolve_as_browsers_and_go_resolve_them() {
        let origin = Origin {
            secure: false,
            host: "portainer.example".into(),
            port: 80,
        };
        let target = "/api/endpoints/1/edge/status?x=1";
        let resolve = |location: &str| resolve_location(&origin, target, location).unwrap();
        let (next, path) = resolve("https://portainer.example:9443/api/endpoints/1/edge/status");
        assert_eq!(
            (next.secure, next.port, path.as_str()),
            (true, 9443, "/api/endpoints/1/edge/status")
        );
        let (next, path) = resolve("//other.example/x");
        assert_eq!(
            (next.host.as_str(), next.secure, path.as_str()),
            ("other.example", false, "/x")
        );
        assert_eq!(resolve("/portainer/api/x").1, "/portainer/api/x");
        assert_eq!(
            resolve("status2?y=2").1,
            "/api/endpoints/1/edge/status2?y=2"
        );
        assert_eq!(resolve("/x").0, origin);
        assert!(resolve_location(&origin, target, "ftp://x/").is_err());
    }
}
