//! Outbound TCP connections for the Edge agent: directly, through an HTTP
//! proxy's `CONNECT` (`https://` Portainer, the tunnel), or to the proxy
//! itself for a plain `http://` Portainer, which the proxy is asked for in
//! absolute form as Go's transport asks (many proxies allow `CONNECT` to
//! port 443 only). Proxy addresses are read as Go reads them
//! ([`ProxyUrl`]): no scheme means `http://`, credentials go in
//! `Proxy-Authorization`.
//!
//! Every client socket berth opens is made by [`tcp`], with Nagle's
//! algorithm off: berth writes whole messages (a request head, a TLS
//! record, an SSH packet), and Nagle holds a small write back until the
//! peer's delayed ack, about 40 ms on Linux, for every request through
//! the Edge tunnel.

use std::io;

use berth_domain::edge::proxy::{join_host_port, ProxyScheme, ProxyUrl};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, ToSocketAddrs};

/// The longest proxy answer head berth reads.
const MAX_PROXY_HEAD: usize = 8192;

/// An HTTP proxy for a plain `http://` call: the connection to the proxy,
/// and the `Proxy-Authorization` value each request carries.
pub struct ForwardProxy {
    pub stream: TcpStream,
    pub authorization: Option<String>,
}

/// A TCP connection to `address` with Nagle's algorithm off.
///
/// # Errors
/// When the connection fails or the option cannot be set.
pub async fn tcp(address: impl ToSocketAddrs) -> io::Result<TcpStream> {
    let stream = TcpStream::connect(address).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

fn http_proxy(proxy: &str) -> io::Result<ProxyUrl> {
    let url = ProxyUrl::parse(proxy).map_err(|why| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("the proxy {proxy:?} is unusable: {why}"),
        )
    })?;
    match url.scheme {
        ProxyScheme::Http => Ok(url),
        ProxyScheme::Https | ProxyScheme::Socks5 => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("only http:// proxies are supported, not {proxy}"),
        )),
    }
}

/// Connects to the HTTP proxy `proxy`, to send it absolute-form requests.
///
/// # Errors
/// When the proxy address is unusable or cannot be reached.
pub async fn to_proxy(proxy: &str) -> io::Result<ForwardProxy> {
    let url = http_proxy(proxy)?;
    let stream = tcp(url.address()).await?;
    Ok(ForwardProxy {
        stream,
        authorization: url.authorization(),
    })
}

/// Connects to `host:port`, tunnelling through `proxy` with `CONNECT` when
/// given.
///
/// # Errors
/// When the connection fails or the proxy refuses; SOCKS and `https://`
/// proxies are refused with a clear error.
pub async fn connect(host: &str, port: u16, proxy: Option<&str>) -> io::Result<TcpStream> {
    let Some(proxy) = proxy.filter(|p| !p.trim().is_empty()) else {
        return tcp((host, port)).await;
    };
    let url = http_proxy(proxy)?;
    let mut stream = tcp(url.address()).await?;
    let authority = join_host_port(host, port);
    let mut head = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(authorization) = url.authorization() {
        head.push_str(&format!("Proxy-Authorization: {authorization}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).await?;
    // Byte by byte, so nothing past the answer's head is consumed.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > MAX_PROXY_HEAD || stream.read(&mut byte).await? == 0 {
            return Err(io::Error::other("the proxy closed during CONNECT"));
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head);
    let status_line = text.lines().next().unwrap_or_default();
    if !status_line
        .split_whitespace()
        .nth(1)
        .is_some_and(|code| code.starts_with('2'))
    {
        return Err(io::Error::other(format!(
            "the proxy refused CONNECT: {status_line}"
        )));
    }
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn a_connect_proxy_carries_the_connection_with_its_credentials() {
        let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target_port = target.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = target.accept().await.unwrap();
            s.write_all(b"hello").await.unwrap();
        });
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_address = proxy.local_addr().unwrap();
        let (heads, mut seen) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let (mut client, _) = proxy.accept().await.unwrap();
            let mut head = vec![0u8; 1024];
            let n = client.read(&mut head).await.unwrap();
            let text = String::from_utf8_lossy(&head[..n]).to_string();
            let authority = text.split_whitespace().nth(1).unwrap().to_string();
            heads.send(text).unwrap();
            let mut upstream = TcpStream::connect(authority).await.unwrap();
            client.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
        // No scheme: http:// is assumed, as Go assumes it.
        let proxy_url = format!("agent:secret@{proxy_address}");
        let mut stream = connect("127.0.0.1", target_port, Some(&proxy_url))
            .await
            .unwrap();
        assert!(stream.nodelay().unwrap(), "Nagle is off through a proxy");
        let mut greeting = Vec::new();
        stream.read_to_end(&mut greeting).await.unwrap();
        assert_eq!(greeting, b"hello");
        let head = seen.recv().await.unwrap();
        assert!(head.starts_with(&format!("CONNECT 127.0.0.1:{target_port} HTTP/1.1\r\n")));
        // base64("agent:secret")
        assert!(
            head.contains("Proxy-Authorization: Basic YWdlbnQ6c2VjcmV0\r\n"),
            "{head}"
        );
        let socks = connect("127.0.0.1", 1, Some("socks5://127.0.0.1:1")).await;
        assert_eq!(socks.unwrap_err().kind(), io::ErrorKind::Unsupported);
        let garbage = connect("127.0.0.1", 1, Some("http://proxy:port")).await;
        assert_eq!(garbage.unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }

    #[tokio::test]
    async fn direct_and_forward_proxy_connections_send_without_nagle() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                drop(stream);
            }
        });
        let direct = connect("127.0.0.1", address.port(), None).await.unwrap();
        assert!(direct.nodelay().unwrap());
        let forward = to_proxy(&address.to_string()).await.unwrap();
        assert!(forward.stream.nodelay().unwrap());
        assert!(tcp(address).await.unwrap().nodelay().unwrap());
    }

    #[tokio::test]
    async fn a_refused_connect_says_what_the_proxy_answered() {
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_address = proxy.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut client, _) = proxy.accept().await.unwrap();
            let mut head = vec![0u8; 1024];
            let _ = client.read(&mut head).await.unwrap();
            client
                .write_all(b"HTTP/1.1 403 Access violation\r\n\r\n")
                .await
                .unwrap();
        });
        let error = connect("127.0.0.1", 80, Some(&proxy_address.to_string()))
            .await
            .unwrap_err();
        assert!(
            error.to_string().contains("403 Access violation"),
            "{error}"
        );
    }
}
