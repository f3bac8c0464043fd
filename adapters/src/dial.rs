//! Outbound TCP connections for the Edge agent, directly or through an HTTP
//! CONNECT proxy (`HTTPS_PROXY`/`HTTP_PROXY`).

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest proxy answer head berth reads.
const MAX_PROXY_HEAD: usize = 8192;

/// Connects to `host:port`, tunnelling through `proxy` (`http://host:port`)
/// when given.
///
/// # Errors
/// When the connection fails or the proxy refuses; SOCKS and `https://`
/// proxies are refused with a clear error.
pub async fn connect(host: &str, port: u16, proxy: Option<&str>) -> io::Result<TcpStream> {
    let Some(proxy) = proxy.filter(|p| !p.is_empty()) else {
        return TcpStream::connect((host, port)).await;
    };
    if !proxy.starts_with("http://") && proxy.contains("://") {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            format!("only http:// proxies are supported, not {proxy}"),
        ));
    }
    let proxy_address = proxy
        .trim_start_matches("http://")
        .trim_end_matches('/')
        .to_string();
    let mut stream = TcpStream::connect(&proxy_address).await?;
    let authority = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    stream
        .write_all(format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n").as_bytes())
        .await?;
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
    async fn a_connect_proxy_carries_the_connection() {
        let target = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target_port = target.local_addr().unwrap().port();
        tokio::spawn(async move {
            let (mut s, _) = target.accept().await.unwrap();
            s.write_all(b"hello").await.unwrap();
        });
        let proxy = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy_address = proxy.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut client, _) = proxy.accept().await.unwrap();
            let mut head = vec![0u8; 1024];
            let n = client.read(&mut head).await.unwrap();
            let text = String::from_utf8_lossy(&head[..n]).to_string();
            let authority = text.split_whitespace().nth(1).unwrap().to_string();
            let mut upstream = TcpStream::connect(authority).await.unwrap();
            client.write_all(b"HTTP/1.1 200 OK\r\n\r\n").await.unwrap();
            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        });
        let proxy_url = format!("http://{proxy_address}");
        let mut stream = connect("127.0.0.1", target_port, Some(&proxy_url))
            .await
            .unwrap();
        let mut greeting = Vec::new();
        stream.read_to_end(&mut greeting).await.unwrap();
        assert_eq!(greeting, b"hello");
        let socks = connect("127.0.0.1", 1, Some("socks5://127.0.0.1:1")).await;
        assert_eq!(socks.unwrap_err().kind(), io::ErrorKind::Unsupported);
    }
}
