//! chisel's carrier: a websocket (subprotocol `chisel-v3`) whose binary
//! messages make one byte stream, bridged here to an in-memory duplex pipe
//! so the SSH client sees plain `AsyncRead + AsyncWrite`.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::header::SEC_WEBSOCKET_PROTOCOL;
use http::HeaderValue;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

pub const SUBPROTOCOL: &str = "chisel-v3";
const PIPE_BUFFER: usize = 256 * 1024;

/// Where the websocket goes, from the Edge key's tunnel address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TunnelUrl {
    pub secure: bool,
    pub host: String,
    pub port: u16,
    pub url: String,
}

/// As chisel: `http://` is assumed, `http`→`ws`, `https`→`wss`, and a
/// missing port is 80 or 443.
pub fn tunnel_url(address: &str) -> Result<TunnelUrl, String> {
    let with_scheme = if address.starts_with("http") || address.starts_with("ws") {
        address.to_string()
    } else {
        format!("http://{address}")
    };
    let (secure, rest) = if let Some(rest) = with_scheme
        .strip_prefix("https://")
        .or_else(|| with_scheme.strip_prefix("wss://"))
    {
        (true, rest)
    } else if let Some(rest) = with_scheme
        .strip_prefix("http://")
        .or_else(|| with_scheme.strip_prefix("ws://"))
    {
        (false, rest)
    } else {
        return Err(format!("unsupported tunnel server address {address:?}"));
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority.is_empty() {
        return Err(format!("the tunnel server address {address:?} has no host"));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
            let port = port
                .parse()
                .map_err(|_| format!("the tunnel server port in {address:?} is not a number"))?;
            (host.to_string(), port)
        }
        _ => (authority.to_string(), if secure { 443 } else { 80 }),
    };
    let scheme = if secure { "wss" } else { "ws" };
    Ok(TunnelUrl {
        url: format!("{scheme}://{host}:{port}/"),
        secure,
        host: host.trim_matches(['[', ']']).to_string(),
        port,
    })
}

/// The websocket handshake, then a task pumping messages to and from the
/// returned pipe until either side ends.
pub async fn open(
    target: &TunnelUrl,
    stream: TcpStream,
    roots: Arc<rustls::RootCertStore>,
    timeout: Duration,
) -> io::Result<DuplexStream> {
    let mut request = target
        .url
        .as_str()
        .into_client_request()
        .map_err(io::Error::other)?;
    request.headers_mut().insert(
        SEC_WEBSOCKET_PROTOCOL,
        HeaderValue::from_static(SUBPROTOCOL),
    );
    let handshake = async {
        if target.secure {
            let config = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = ServerName::try_from(target.host.clone()).map_err(io::Error::other)?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, stream)
                .await?;
            bridge(request, tls).await
        } else {
            bridge(request, stream).await
        }
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "websocket handshake timed out"))?
}

async fn bridge<S>(request: http::Request<()>, stream: S) -> io::Result<DuplexStream>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (socket, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .map_err(|e| io::Error::other(format!("websocket handshake failed: {e}")))?;
    let agreed = response
        .headers()
        .get(SEC_WEBSOCKET_PROTOCOL)
        .and_then(|v| v.to_str().ok());
    if agreed.is_some_and(|p| p != SUBPROTOCOL) {
        return Err(io::Error::other(format!(
            "the tunnel server speaks {agreed:?}, not {SUBPROTOCOL}"
        )));
    }
    let (ours, theirs) = tokio::io::duplex(PIPE_BUFFER);
    let (mut from_ssh, mut to_ssh) = tokio::io::split(theirs);
    let (mut sink, mut stream) = socket.split();
    let outgoing = async move {
        let mut buffer = vec![0u8; 32 * 1024];
        loop {
            match from_ssh.read(&mut buffer).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink
                        .send(Message::binary(buffer[..n].to_vec()))
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            }
        }
        let _ = sink.close().await;
    };
    let incoming = async move {
        while let Some(message) = stream.next().await {
            let bytes = match message {
                Ok(Message::Binary(bytes)) => bytes,
                Ok(Message::Text(text)) => text.as_bytes().to_vec().into(),
                Ok(Message::Close(_)) | Err(_) => break,
                Ok(_) => continue,
            };
            if to_ssh.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = to_ssh.shutdown().await;
    };
    tokio::spawn(async move {
        // Either direction ending ends the carrier.
        tokio::select! {
            () = outgoing => {}
            () = incoming => {}
        }
    });
    Ok(ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_become_websocket_urls_as_chisel_makes_them() {
        let url = tunnel_url("portainer.example:8000").unwrap();
        assert_eq!(url.url, "ws://portainer.example:8000/");
        assert!(!url.secure);
        let url = tunnel_url("https://portainer.example").unwrap();
        assert_eq!(
            (url.url.as_str(), url.port),
            ("wss://portainer.example:443/", 443)
        );
        assert_eq!(tunnel_url("http://10.0.0.1").unwrap().port, 80);
        assert!(tunnel_url("http://").is_err());
        assert!(tunnel_url("host:notaport").is_err());
    }
}
