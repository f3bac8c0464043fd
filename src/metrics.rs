//! Prometheus metrics: what the agent counts, and the unsigned endpoint
//! that shows them on `METRICS_ADDR` (scrapers cannot sign).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use crate::edge::tunnel::TunnelGauge;
use crate::facts::EngineHealth;
use berth_domain::cluster::MemberStatus;
use berth_domain::routing::{DockerDispatch, Route};
use berth_ports::{full_body, Body, Membership, RequestHandler};
use http::header::{HeaderValue, CONTENT_TYPE};
use http::{Method, Request, Response, StatusCode};

/// Upper bounds of the latency histogram, in seconds.
const BUCKETS: [f64; 10] = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

#[derive(Default)]
struct Latency {
    /// Counts per bucket (not cumulative; summed when rendered), then +Inf.
    buckets: [u64; BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Counts {
    requests: BTreeMap<(&'static str, u16), u64>,
    latency: BTreeMap<&'static str, Latency>,
    fanout_failures: BTreeMap<String, u64>,
}

/// Shared by every request; cheap to clone.
#[derive(Clone, Default)]
pub struct Metrics {
    counts: Arc<Mutex<Counts>>,
}

/// The label a route is counted under.
pub fn route_class(route: Option<&Route>) -> &'static str {
    match route {
        None => "malformed",
        Some(Route::Ping) => "ping",
        Some(Route::Agents) => "agents",
        Some(Route::Docker(DockerDispatch::Local)) => "docker_local",
        Some(Route::Docker(DockerDispatch::Node(_))) => "docker_node",
        Some(Route::Docker(DockerDispatch::Manager)) => "docker_manager",
        Some(Route::Docker(DockerDispatch::Aggregate(_))) => "docker_list",
        Some(Route::NotFound | Route::MethodNotAllowed) => "unknown",
        Some(_) => "agent_api",
    }
}

impl Metrics {
    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        // Counters stay usable after a panic elsewhere.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// One answered request: its class, status, and the time to its head.
    pub fn record_request(&self, class: &'static str, status: u16, elapsed: Duration) {
        let seconds = elapsed.as_secs_f64();
        let mut counts = self.counts();
        *counts.requests.entry((class, status)).or_default() += 1;
        let latency = counts.latency.entry(class).or_default();
        let bucket = BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(BUCKETS.len());
        latency.buckets[bucket] += 1;
        latency.sum += seconds;
        latency.count += 1;
    }

    /// A node missing from a cluster-wide list.
    pub fn record_fanout_failure(&self, node: &str) {
        *self
            .counts()
            .fanout_failures
            .entry(node.to_string())
            .or_default() += 1;
    }

    fn render(&self, out: &mut String) {
        let counts = self.counts();
        out.push_str("# HELP berth_requests_total Requests answered, by route class and status.\n");
        out.push_str("# TYPE berth_requests_total counter\n");
        for ((class, status), count) in &counts.requests {
            let _ = writeln!(
                out,
                "berth_requests_total{{route=\"{class}\",status=\"{status}\"}} {count}"
            );
        }
        out.push_str(
            "# HELP berth_request_duration_seconds Time to the answer's head, by route class.\n",
        );
        out.push_str("# TYPE berth_request_duration_seconds histogram\n");
        for (class, latency) in &counts.latency {
            let mut cumulative = 0;
            for (bound, count) in BUCKETS.iter().zip(latency.buckets.iter()) {
                cumulative += count;
                let _ = writeln!(
                    out,
                    "berth_request_duration_seconds_bucket{{route=\"{class}\",le=\"{bound}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "berth_request_duration_seconds_bucket{{route=\"{class}\",le=\"+Inf\"}} {}",
                latency.count
            );
            let _ = writeln!(
                out,
                "berth_request_duration_seconds_sum{{route=\"{class}\"}} {}",
                latency.sum
            );
            let _ = writeln!(
                out,
                "berth_request_duration_seconds_count{{route=\"{class}\"}} {}",
                latency.count
            );
        }
        out.push_str(
            "# HELP berth_fanout_node_failures_total Nodes missing from cluster-wide lists.\n",
        );
        out.push_str("# TYPE berth_fanout_node_failures_total counter\n");
        for (node, count) in &counts.fanout_failures {
            let node = node.replace(['\\', '"', '\n'], "_");
            let _ = writeln!(
                out,
                "berth_fanout_node_failures_total{{node=\"{node}\"}} {count}"
            );
        }
    }
}

/// `GET /metrics` in the Prometheus text format; anything else is a 404.
#[derive(Clone)]
pub struct MetricsEndpoint<M> {
    metrics: Metrics,
    membership: Option<M>,
    open_connections: Arc<AtomicUsize>,
    engine: EngineHealth,
    tunnel: Option<TunnelGauge>,
}

impl<M: Membership> MetricsEndpoint<M> {
    pub fn new(
        metrics: Metrics,
        membership: Option<M>,
        open_connections: Arc<AtomicUsize>,
        engine: EngineHealth,
    ) -> Self {
        MetricsEndpoint {
            metrics,
            membership,
            open_connections,
            engine,
            tunnel: None,
        }
    }

    /// Edge mode: also report the tunnel's state.
    pub fn with_tunnel(mut self, gauge: TunnelGauge) -> Self {
        self.tunnel = Some(gauge);
        self
    }

    async fn render(&self) -> String {
        let mut out = String::new();
        self.metrics.render(&mut out);
        out.push_str("# HELP berth_open_connections Client connections open on the API.\n");
        out.push_str("# TYPE berth_open_connections gauge\n");
        let _ = writeln!(
            out,
            "berth_open_connections {}",
            self.open_connections.load(Ordering::Relaxed)
        );
        out.push_str("# HELP berth_engine_up Whether the engine answered its last facts read.\n");
        out.push_str("# TYPE berth_engine_up gauge\n");
        let _ = writeln!(out, "berth_engine_up {}", u8::from(self.engine.answers()));
        out.push_str("# HELP berth_cluster_members Cluster members gossip knows, by status.\n");
        out.push_str("# TYPE berth_cluster_members gauge\n");
        if let Some(membership) = &self.membership {
            let members = membership.members().await;
            for status in MemberStatus::ALL {
                let label = status.label();
                let count = members.iter().filter(|m| m.status == status).count();
                let _ = writeln!(out, "berth_cluster_members{{status=\"{label}\"}} {count}");
            }
        }
        if let Some(tunnel) = &self.tunnel {
            out.push_str(
                "# HELP berth_edge_tunnel_state The Edge tunnel: 0 closed, 1 opening, 2 open, 3 retrying.\n",
            );
            out.push_str("# TYPE berth_edge_tunnel_state gauge\n");
            let _ = writeln!(out, "berth_edge_tunnel_state {}", tunnel.get());
        }
        out
    }
}

impl<M: Membership> RequestHandler for MetricsEndpoint<M> {
    async fn handle(&self, request: Request<Body>, _peer: SocketAddr) -> Response<Body> {
        if request.method() != Method::GET || request.uri().path() != "/metrics" {
            let mut response = Response::new(full_body("404 page not found\n"));
            *response.status_mut() = StatusCode::NOT_FOUND;
            return response;
        }
        let mut response = Response::new(full_body(self.render().await));
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let metrics = Metrics::default();
        metrics.record_request("ping", 204, Duration::from_micros(100));
        metrics.record_request("ping", 204, Duration::from_millis(20));
        metrics.record_request("docker_list", 200, Duration::from_secs(9));
        metrics.record_fanout_failure("node-\"c\"");
        let mut out = String::new();
        metrics.render(&mut out);
        assert!(
            out.contains("berth_requests_total{route=\"ping\",status=\"204\"} 2"),
            "{out}"
        );
        assert!(
            out.contains("berth_request_duration_seconds_bucket{route=\"ping\",le=\"0.0005\"} 1")
        );
        assert!(out.contains("berth_request_duration_seconds_bucket{route=\"ping\",le=\"0.05\"} 2"));
        assert!(
            out.contains("berth_request_duration_seconds_bucket{route=\"docker_list\",le=\"5\"} 0")
        );
        assert!(out.contains(
            "berth_request_duration_seconds_bucket{route=\"docker_list\",le=\"+Inf\"} 1"
        ));
        assert!(out.contains("berth_fanout_node_failures_total{node=\"node-_c_\"} 1"));
    }
}
