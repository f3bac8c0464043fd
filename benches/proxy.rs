//! Proxy throughput and latency: the engine's socket directly versus
//! through berth, same request, same concurrency, same run.
//!
//! Run by `scripts/bench-proxy`, which starts an engine and berth and sets:
//! `BENCH_SOCKET` (the engine's socket path), `BENCH_BERTH` (berth's
//! address), and optionally `BENCH_PATHS` (comma-separated),
//! `BENCH_CONNECTIONS` (comma-separated) and `BENCH_SECONDS`.

#[path = "../tests/support/client.rs"]
#[allow(dead_code)]
mod client;
#[path = "../tests/support/fixtures.rs"]
#[allow(dead_code)]
mod fixtures;

use std::time::{Duration, Instant};

use client::{timed_get, Target};

struct Figures {
    requests_per_second: f64,
    median_ms: f64,
    p99_ms: f64,
}

async fn measure(target: &Target, path: &str, connections: usize, seconds: f64) -> Figures {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let mut workers = Vec::new();
    for _ in 0..connections {
        let target = target.clone();
        let path = path.to_string();
        workers.push(tokio::spawn(async move {
            let mut sender = target.connect().await;
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                latencies.push(timed_get(&mut sender, &path).await);
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.unwrap());
    }
    latencies.sort();
    let at =
        |q: f64| latencies[((latencies.len() as f64 - 1.0) * q) as usize].as_secs_f64() * 1000.0;
    Figures {
        requests_per_second: latencies.len() as f64 / seconds,
        median_ms: at(0.5),
        p99_ms: at(0.99),
    }
}

fn list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(str::to_string)
        .collect()
}

#[tokio::main]
async fn main() {
    let (Ok(socket), Ok(berth)) = (std::env::var("BENCH_SOCKET"), std::env::var("BENCH_BERTH"))
    else {
        eprintln!(
            "proxy bench: set BENCH_SOCKET and BENCH_BERTH (scripts/bench-proxy does); skipping"
        );
        return;
    };
    let direct = Target::Socket(socket);
    let through = Target::Berth(berth.parse().expect("BENCH_BERTH is host:port"));
    let seconds: f64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5.0);
    println!("| path | connections | direct req/s | berth req/s | ratio | direct p50 ms | berth p50 ms | added p50 ms | direct p99 ms | berth p99 ms |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for path in list(
        "BENCH_PATHS",
        "/_ping,/v1.41/version,/v1.41/containers/json?all=1",
    ) {
        for connections in list("BENCH_CONNECTIONS", "1,32") {
            let connections: usize = connections.parse().expect("a number of connections");
            // Warm both paths (pools, TLS sessions) before measuring.
            measure(&direct, &path, connections, 0.5).await;
            measure(&through, &path, connections, 0.5).await;
            let d = measure(&direct, &path, connections, seconds).await;
            let b = measure(&through, &path, connections, seconds).await;
            println!(
                "| `{path}` | {connections} | {:.0} | {:.0} | {:.2} | {:.3} | {:.3} | {:.3} | {:.3} | {:.3} |",
                d.requests_per_second,
                b.requests_per_second,
                b.requests_per_second / d.requests_per_second,
                d.median_ms,
                b.median_ms,
                b.median_ms - d.median_ms,
                d.p99_ms,
                b.p99_ms
            );
        }
    }
}
