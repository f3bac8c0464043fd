//! chisel's carrier: a websocket (subprotocol `chisel-v3`) whose binary
//! messages make one byte stream, bridged here to an in-memory duplex pipe
//! so the SSH client sees plain `AsyncRead + AsyncWrite`.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::header::{
    CONNECTION, HOST, SEC_WEBSOCKET_ACCEPT, SEC_WEBSOCKET_KEY, SEC_WEBSOCKET_PROTOCOL,
    SEC_WEBSOCKET_VERSION, UPGRADE,
};
use http::{HeaderValue, Request, Response, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::client::generate_key;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

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
    let handshake = async {
        if target.secure {
            let config = rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth();
            let name = ServerName::try_from(target.host.clone()).map_err(io::Error::other)?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, stream)
                .await?;
            bridge(target, tls).await
        } else {
            bridge(target, stream).await
        }
    };
    tokio::time::timeout(timeout, handshake)
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "websocket handshake timed out"))?
}

/// The upgrade request as chisel's client sends it.
fn upgrade_request(target: &TunnelUrl, key: &str) -> io::Result<Request<Empty<Bytes>>> {
    let authority = target
        .url
        .split_once("://")
        .map_or("", |(_, rest)| rest)
        .trim_end_matches('/');
    Request::get("/")
        .header(HOST, authority)
        .header(UPGRADE, "websocket")
        .header(CONNECTION, "Upgrade")
        .header(SEC_WEBSOCKET_VERSION, "13")
        .header(SEC_WEBSOCKET_KEY, key)
        .header(SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL)
        .body(Empty::new())
        .map_err(io::Error::other)
}

/// What the Go peers check of the server's 101, and no more: chisel's
/// server (gorilla's `Upgrader` without `Subprotocols`) never echoes the
/// subprotocol, and chisel's client does not ask for the echo, so a missing
/// one is accepted; a different one is not.
fn check_switch<B>(response: &Response<B>, key: &str) -> io::Result<()> {
    let status = response.status();
    if status != StatusCode::SWITCHING_PROTOCOLS {
        return Err(io::Error::other(format!(
            "websocket handshake failed: the server answered {status} instead of switching to a websocket"
        )));
    }
    let headers = response.headers();
    let has_token = |name: http::header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|value| {
            value.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(token))
            })
        })
    };
    if !has_token(UPGRADE, "websocket") || !has_token(CONNECTION, "upgrade") {
        return Err(io::Error::other(
            "websocket handshake failed: the server's 101 does not upgrade to a websocket",
        ));
    }
    let accept = headers.get(SEC_WEBSOCKET_ACCEPT).map(HeaderValue::as_bytes);
    if accept != Some(derive_accept_key(key.as_bytes()).as_bytes()) {
        return Err(io::Error::other(
            "websocket handshake failed: the server's Sec-WebSocket-Accept is wrong",
        ));
    }
    let agreed = headers
        .get(SEC_WEBSOCKET_PROTOCOL)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    if agreed.as_deref().is_some_and(|p| p != SUBPROTOCOL) {
        return Err(io::Error::other(format!(
            "the tunnel server speaks {agreed:?}, not {SUBPROTOCOL}"
        )));
    }
    Ok(())
}

async fn bridge<S>(target: &TunnelUrl, stream: S) -> io::Result<DuplexStream>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let key = generate_key();
    let request = upgrade_request(target, &key)?;
    let failed = |e: hyper::Error| io::Error::other(format!("websocket handshake failed: {e}"));
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(failed)?;
    // The connection is driven here, not spawned, so a handshake given up
    // by the caller's timeout leaves nothing behind. On a 101 it ends by
    // handing its stream to the upgrade, possibly before the answer is
    // read here.
    let mut connection = connection.with_upgrades();
    let send = sender.send_request(request);
    tokio::pin!(send);
    let mut handed_over = false;
    let response = loop {
        tokio::select! {
            response = &mut send => break response.map_err(failed)?,
            ended = &mut connection, if !handed_over => {
                ended.map_err(failed)?;
                handed_over = true;
            }
        }
    };
    check_switch(&response, &key)?;
    let upgraded = if handed_over {
        hyper::upgrade::on(response).await
    } else {
        tokio::join!(hyper::upgrade::on(response), connection).0
    };
    let upgraded = upgraded.map_err(failed)?;
    let socket = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Client, None).await;
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

    fn switch(key: &str) -> http::response::Builder {
        Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(UPGRADE, "websocket")
            .header(CONNECTION, "Upgrade")
            .header(SEC_WEBSOCKET_ACCEPT, derive_accept_key(key.as_bytes()))
    }

    #[test]
    fn a_101_without_the_subprotocol_is_accepted_as_chisel_sends_it() {
        let key = generate_key();
        assert!(check_switch(&switch(&key).body(()).unwrap(), &key).is_ok());
        let echoed = switch(&key)
            .header(SEC_WEBSOCKET_PROTOCOL, SUBPROTOCOL)
            .body(())
            .unwrap();
        assert!(check_switch(&echoed, &key).is_ok());
    }

    #[test]
    fn what_gorilla_refuses_is_refused() {
        let key = generate_key();
        let other = switch(&key)
            .header(SEC_WEBSOCKET_PROTOCOL, "chisel-v2")
            .body(())
            .unwrap();
        let error = check_switch(&other, &key).unwrap_err().to_string();
        assert!(error.contains("chisel-v2"), "{error}");
        let wrong_accept = switch(&generate_key()).body(()).unwrap();
        assert!(check_switch(&wrong_accept, &key).is_err());
        let not_upgraded = Response::builder()
            .status(StatusCode::SWITCHING_PROTOCOLS)
            .header(SEC_WEBSOCKET_ACCEPT, derive_accept_key(key.as_bytes()))
            .body(())
            .unwrap();
        assert!(check_switch(&not_upgraded, &key).is_err());
        let not_found = Response::builder().status(404).body(()).unwrap();
        let error = check_switch(&not_found, &key).unwrap_err().to_string();
        assert!(error.contains("404 Not Found"), "{error}");
    }
}
