//! `berth healthcheck`: asks the local agent for `GET /ping` over TLS.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

use super::tls::peer_client_config;

/// Whether the agent at `address` answers `/ping` with 204 within `timeout`.
///
/// # Errors
/// What went wrong, in words, for the health check's output.
pub async fn ping(address: SocketAddr, timeout: Duration) -> Result<(), String> {
    let attempt = async {
        let tls = TlsConnector::from(peer_client_config(None).map_err(|e| e.to_string())?);
        let tcp = crate::dial::tcp(address)
            .await
            .map_err(|e| format!("connect {address}: {e}"))?;
        let name = ServerName::IpAddress(address.ip().into());
        let stream = tls
            .connect(name, tcp)
            .await
            .map_err(|e| format!("TLS: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP: {e}"))?;
        tokio::spawn(connection);
        let request = Request::get("/ping")
            .header("host", address.to_string())
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("GET /ping: {e}"))?;
        match response.status() {
            StatusCode::NO_CONTENT => Ok(()),
            status => Err(format!("GET /ping answered {status}")),
        }
    };
    tokio::time::timeout(timeout, attempt)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "no answer from {address} within {}s",
                timeout.as_secs()
            ))
        })
}
