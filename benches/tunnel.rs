//! What the Edge tunnel adds to a request: the same signed request sent,
//! in turn, through the real chisel server's tunnel port (chisel, SSH over
//! a websocket, berth's channel, berth's API) and straight to berth's
//! API, over one kept-alive connection each, the order swapped every other
//! round so that a slow spell of the shared machine hits both alike.
//! Prints both medians and the median of the per-round differences.
//!
//! Run by `scripts/bench` (or alone, as `cargo bench --bench tunnel`),
//! with `BERTH_TEST_DOCKER_HOST` naming an engine and
//! `BERTH_TEST_CHISEL_DIR` the chisel builds (`scripts/build-test-peers`);
//! `BENCH_TUNNEL_ROUNDS` (default 2000) and `BENCH_TUNNEL_PATHS`
//! (comma-separated, default `/_ping,/containers/json?all=1`).

#[path = "../tests/support/mod.rs"]
mod support;

use std::net::SocketAddr;

use bytes::Bytes;
use http_body_util::Full;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use serde_json::json;
use support::client::timed_get as timed;
use support::edge_world::{edge_key, loopback, start_edge_berth, EdgeWorld, WAIT};

async fn connect(addr: SocketAddr) -> SendRequest<Full<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("HTTP handshake");
    tokio::spawn(connection);
    sender
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let Some(engine) = support::berth_process::engine_host() else {
        eprintln!("no engine: set BERTH_TEST_DOCKER_HOST");
        std::process::exit(2);
    };
    let Some(world) = EdgeWorld::start("bench-tunnel").await else {
        eprintln!("no chisel: set BERTH_TEST_CHISEL_DIR (scripts/build-test-peers)");
        std::process::exit(2);
    };
    let rounds: usize = std::env::var("BENCH_TUNNEL_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(2000);
    let paths = std::env::var("BENCH_TUNNEL_PATHS")
        .unwrap_or_else(|_| "/_ping,/containers/json?all=1".into());
    let key = edge_key(&world.portainer, &world.chisel, 1);
    let berth = start_edge_berth(
        &engine,
        &world.data,
        &[("EDGE_KEY", &key), ("LOG_LEVEL", "INFO")],
    );
    let grant = world.chisel.tunnels[0].clone();
    world
        .portainer
        .set_status(json!({"status": "REQUIRED", "port": grant.port,
        "credentials": grant.credentials, "checkin": 1}));
    world.chisel.wait_listening(grant.port, 1, WAIT);

    let mut tunnel = connect(loopback(grant.port)).await;
    let mut direct = connect(berth.addr).await;
    println!("| path | rounds | direct p50 ms | tunnel p50 ms | tunnel adds, paired median ms |");
    println!("|---|---|---|---|---|");
    for path in paths.split(',') {
        // Warm both paths (connections, the engine's own caches).
        for _ in 0..50 {
            timed(&mut tunnel, path).await;
            timed(&mut direct, path).await;
        }
        let (mut through, mut straight, mut added) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let (t, d) = if round % 2 == 0 {
                let t = timed(&mut tunnel, path).await;
                (t, timed(&mut direct, path).await)
            } else {
                let d = timed(&mut direct, path).await;
                (timed(&mut tunnel, path).await, d)
            };
            let (t, d) = (t.as_secs_f64() * 1000.0, d.as_secs_f64() * 1000.0);
            through.push(t);
            straight.push(d);
            added.push(t - d);
        }
        println!(
            "| {path} | {rounds} | {:.3} | {:.3} | {:+.3} |",
            median(&mut straight),
            median(&mut through),
            median(&mut added)
        );
    }
    drop(berth);
}
