//! The `/kubernetes` proxy's overhead: the API server asked directly versus
//! through berth, same requests, same run. A list (config maps) at one and
//! at eight connections, and a watch: how long after an object is made its
//! event arrives on a watch opened directly and on one opened through berth
//! at the same time.
//!
//! Run by `scripts/bench-kube`, which starts a control plane and berth and
//! sets `BENCH_KUBE_API` (the API server's address), `BENCH_KUBE_CA`,
//! `BENCH_KUBE_TOKEN`, `BENCH_KUBE_NAMESPACE` and `BENCH_BERTH`; optionally
//! `BENCH_SECONDS` and `BENCH_EVENTS`.

#[path = "../tests/support/client.rs"]
#[allow(dead_code)]
mod client;
#[path = "../tests/support/fixtures.rs"]
#[allow(dead_code)]
mod fixtures;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::RootCertStore;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Where a request goes: the API server, or berth's `/kubernetes`.
#[derive(Clone)]
enum Side {
    Direct {
        addr: SocketAddr,
        tls: TlsConnector,
        token: Arc<str>,
    },
    Berth(SocketAddr),
}

impl Side {
    async fn connect(&self) -> SendRequest<Full<Bytes>> {
        let stream = match self {
            Side::Direct { addr, tls, .. } => {
                let tcp = TcpStream::connect(addr).await.unwrap();
                tcp.set_nodelay(true).unwrap();
                tls.connect(ServerName::IpAddress(addr.ip().into()), tcp)
                    .await
                    .unwrap()
            }
            Side::Berth(addr) => client::tls_stream(*addr).await,
        };
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(connection);
        sender
    }

    fn request(&self, method: &str, path: &str, body: &str) -> Request<Full<Bytes>> {
        match self {
            Side::Direct { token, .. } => Request::builder()
                .method(method)
                .uri(path)
                .header("host", "kubernetes")
                .header("authorization", format!("Bearer {token}"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body.to_string())))
                .unwrap(),
            Side::Berth(_) => client::request(method, &format!("/kubernetes{path}"), body),
        }
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Requests per second and the median latency of `GET path` from
/// `connections` connections for `seconds`.
async fn list(side: &Side, path: &str, connections: usize, seconds: f64) -> (f64, f64) {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut workers = Vec::new();
    for _ in 0..connections {
        let side = side.clone();
        let path = path.to_string();
        workers.push(tokio::spawn(async move {
            let mut sender = side.connect().await;
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                sender.ready().await.unwrap();
                let started = Instant::now();
                let response = sender
                    .send_request(side.request("GET", &path, ""))
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200, "{path}");
                response.into_body().collect().await.unwrap();
                latencies.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.unwrap());
    }
    (latencies.len() as f64 / seconds, median(&mut latencies))
}

/// Opens a watch on the namespace's config maps; every event's text goes
/// to `events` with the moment it arrived.
async fn watch(
    side: Side,
    namespace: String,
    events: tokio::sync::mpsc::UnboundedSender<(String, Instant)>,
) {
    let mut sender = side.connect().await;
    let path = format!("/api/v1/namespaces/{namespace}/configmaps?watch=1&resourceVersion=0");
    let response = sender
        .send_request(side.request("GET", &path, ""))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    while let Some(Ok(frame)) = body.frame().await {
        if let Ok(data) = frame.into_data() {
            let _ = events.send((String::from_utf8_lossy(&data).into_owned(), Instant::now()));
        }
    }
}

/// Waits on `events` until one names `name`: when it arrived.
async fn arrival(
    events: &mut tokio::sync::mpsc::UnboundedReceiver<(String, Instant)>,
    name: &str,
) -> Instant {
    let wanted = format!("\"name\":\"{name}\"");
    loop {
        let (text, at) = tokio::time::timeout(Duration::from_secs(20), events.recv())
            .await
            .expect("an event within 20 s")
            .expect("the watch is open");
        if text.contains(&wanted) {
            return at;
        }
    }
}

#[tokio::main]
async fn main() {
    let variables = [
        "BENCH_KUBE_API",
        "BENCH_KUBE_CA",
        "BENCH_KUBE_TOKEN",
        "BENCH_KUBE_NAMESPACE",
        "BENCH_BERTH",
    ];
    let values: Vec<String> = variables
        .iter()
        .filter_map(|name| std::env::var(name).ok())
        .collect();
    if values.len() != variables.len() {
        eprintln!("kubernetes bench: set {variables:?} (scripts/bench-kube does); skipping");
        return;
    }
    let ca = std::fs::read(&values[1]).unwrap();
    let mut roots = RootCertStore::empty();
    for certificate in rustls_pemfile::certs(&mut &ca[..]) {
        roots.add(certificate.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let direct = Side::Direct {
        addr: values[0].parse().unwrap(),
        tls: TlsConnector::from(Arc::new(config)),
        token: values[2].trim().into(),
    };
    let namespace = values[3].clone();
    let berth = Side::Berth(values[4].parse().unwrap());
    let seconds: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);

    let path = format!("/api/v1/namespaces/{namespace}/configmaps");
    println!("| request | connections | direct req/s | berth req/s | ratio | direct p50 ms | berth p50 ms |");
    println!("|---|---|---|---|---|---|---|");
    for connections in [1, 8] {
        let (direct_rate, direct_p50) = list(&direct, &path, connections, seconds).await;
        let (berth_rate, berth_p50) = list(&berth, &path, connections, seconds).await;
        println!(
            "| list of config maps | {connections} | {direct_rate:.0} | {berth_rate:.0} | {:.2} | {direct_p50:.2} | {berth_p50:.2} |",
            berth_rate / direct_rate
        );
    }

    let rounds: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);
    let (direct_events, mut from_direct) = tokio::sync::mpsc::unbounded_channel();
    let (berth_events, mut from_berth) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(watch(direct.clone(), namespace.clone(), direct_events));
    tokio::spawn(watch(berth.clone(), namespace.clone(), berth_events));
    let mut maker = direct.connect().await;
    let (mut direct_delays, mut berth_delays) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let name = format!("bench-event-{round}-{}", std::process::id());
        let body =
            format!(r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"{name}"}}}}"#);
        maker.ready().await.unwrap();
        let made = Instant::now();
        let response = maker
            .send_request(direct.request("POST", &path, &body))
            .await
            .unwrap();
        assert_eq!(response.status(), 201);
        response.into_body().collect().await.unwrap();
        direct_delays.push((arrival(&mut from_direct, &name).await - made).as_secs_f64() * 1000.0);
        berth_delays.push((arrival(&mut from_berth, &name).await - made).as_secs_f64() * 1000.0);
    }
    let (direct_delay, berth_delay) = (median(&mut direct_delays), median(&mut berth_delays));
    println!();
    println!("| watch: an event after its object is made ({rounds} events) | direct median ms | berth median ms | added ms |");
    println!("|---|---|---|---|");
    println!(
        "| config map created | {direct_delay:.2} | {berth_delay:.2} | {:.2} |",
        berth_delay - direct_delay
    );
}
