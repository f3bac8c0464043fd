//! The `PortainerApi` port: one HTTP/1.1 call per connection to the Edge
//! key's Portainer URL (an agent polls every few seconds; a fresh
//! connection per poll also picks up rotated client certificates), over
//! TLS for `https://`, through a CONNECT proxy when configured.

use std::sync::Arc;

use berth_ports::{EdgeAnswer, EdgeCall, PortainerApi, PortainerError};
use bytes::Bytes;
use http::header::{ETAG, HOST};
use http::{Request, Uri};
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, RootCertStore};

use crate::http::tls;

/// The largest answer berth reads from Portainer (stack files included).
const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// TLS choices for Portainer (EDGE_INSECURE_POLL and the MTLS_* options).
#[derive(Debug, Clone, Default)]
pub struct PortainerTls {
    pub insecure: bool,
    pub ca: Option<String>,
    pub cert: Option<String>,
    pub key: Option<String>,
}

#[derive(Clone)]
pub struct PortainerHttp {
    secure: bool,
    host: String,
    port: u16,
    /// The URL's path, prefixed to every call's path.
    base_path: String,
    tls: PortainerTls,
    /// Built once when no file is involved (system roots, or
    /// `EDGE_INSECURE_POLL`); with `MTLS_*` files it is rebuilt per call,
    /// so rotated files are used.
    fixed_tls: Option<Arc<ClientConfig>>,
    system_roots: Arc<RootCertStore>,
    proxy: Option<String>,
}

impl PortainerHttp {
    /// # Errors
    /// When the URL is not `http://` or `https://` with a host.
    pub fn new(url: &str, tls: PortainerTls, proxy: Option<String>) -> Result<Self, String> {
        let uri: Uri = url
            .parse()
            .map_err(|e| format!("the Portainer URL {url:?} is invalid: {e}"))?;
        let secure = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            _ => {
                return Err(format!(
                    "the Portainer URL {url:?} must be http:// or https://"
                ))
            }
        };
        let host = uri
            .host()
            .ok_or_else(|| format!("the Portainer URL {url:?} has no host"))?
            .trim_matches(['[', ']'])
            .to_string();
        let uses_files = !tls.insecure && (tls.ca.is_some() || tls.cert.is_some());
        // The system's CA store is read only when it can be used.
        let system_roots = Arc::new(if secure && !tls.insecure && tls.ca.is_none() {
            tls::system_roots()
        } else {
            RootCertStore::empty()
        });
        let fixed_tls = if secure && !uses_files {
            Some(
                tls::portainer_client_config(tls.insecure, None, None, &system_roots)
                    .map_err(|e| e.to_string())?,
            )
        } else {
            None
        };
        Ok(PortainerHttp {
            fixed_tls,
            secure,
            port: uri.port_u16().unwrap_or(if secure { 443 } else { 80 }),
            host,
            base_path: uri.path().trim_end_matches('/').to_string(),
            tls,
            system_roots,
            proxy,
        })
    }

    fn authority(&self) -> String {
        let default = if self.secure { 443 } else { 80 };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        if self.port == default {
            host
        } else {
            format!("{host}:{}", self.port)
        }
    }

    async fn exchange(&self, call: EdgeCall) -> Result<EdgeAnswer, PortainerError> {
        let unreachable = |what: String| PortainerError::Unreachable(what);
        let tcp = crate::dial::connect(&self.host, self.port, self.proxy.as_deref())
            .await
            .map_err(|e| unreachable(format!("{}: {e}", self.authority())))?;
        let _ = tcp.set_nodelay(true);
        let mut builder = Request::builder()
            .method(call.method)
            .uri(format!("{}{}", self.base_path, call.path))
            .header(HOST, self.authority());
        for (name, value) in &call.headers {
            builder = builder.header(name.as_str(), value.as_str());
        }
        let request = builder
            .body(Full::new(Bytes::from(call.body)))
            .map_err(|e| unreachable(format!("cannot build the request: {e}")))?;
        let response = if self.secure {
            let config = match &self.fixed_tls {
                Some(config) => Arc::clone(config),
                None => tls::portainer_client_config(
                    self.tls.insecure,
                    self.tls.ca.as_deref(),
                    self.tls.cert.as_deref().zip(self.tls.key.as_deref()),
                    &self.system_roots,
                )
                .map_err(|e| unreachable(e.to_string()))?,
            };
            let name = ServerName::try_from(self.host.clone())
                .map_err(|e| unreachable(format!("bad server name: {e}")))?;
            let stream = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await
                .map_err(|e| unreachable(format!("TLS with {}: {e}", self.authority())))?;
            send(stream, request).await?
        } else {
            send(tcp, request).await?
        };
        let status = response.status().as_u16();
        let etag = response
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = Limited::new(response.into_body(), MAX_ANSWER)
            .collect()
            .await
            .map_err(|e| unreachable(format!("reading the answer: {e}")))?
            .to_bytes()
            .to_vec();
        Ok(EdgeAnswer { status, etag, body })
    }
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
        let p = PortainerHttp::new(
            "https://portainer.example:9443/sub/",
            PortainerTls::default(),
            None,
        )
        .unwrap();
        assert_eq!(
            (p.secure, p.port, p.base_path.as_str()),
            (true, 9443, "/sub")
        );
        assert_eq!(p.authority(), "portainer.example:9443");
        let p = PortainerHttp::new("http://10.0.0.1", PortainerTls::default(), None).unwrap();
        assert_eq!((p.port, p.authority().as_str()), (80, "10.0.0.1"));
        assert!(PortainerHttp::new("ftp://x", PortainerTls::default(), None).is_err());
        assert!(PortainerHttp::new("not a url", PortainerTls::default(), None).is_err());
    }
}
