//! A scripted Portainer server for the Edge tests: it answers the poll with
//! whatever status the test sets (with ETags and 304s, as Portainer does),
//! hands out an endpoint for global keys, records every request, and can
//! misbehave (hang, fail, answer garbage).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Normal,
    /// Accepts the request and never answers.
    Hang,
    Error500,
    /// 200 with a body that is not JSON.
    Garbage,
    /// 403 with Portainer's error body, as for an untrusted device.
    Forbidden,
    /// Sends every request on to another server, as a proxy in front of
    /// Portainer may: GET with 302, POST with 307, anything else with 308.
    Redirect,
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: http::HeaderMap,
    pub body: String,
    pub status: u16,
}

struct State {
    stacks: std::collections::HashMap<u64, serde_json::Value>,
    /// Edge configurations served at `/api/edge_configurations/<id>/files`;
    /// `None` answers 403, as for a device Portainer does not trust.
    configs: std::collections::HashMap<u64, Option<serde_json::Value>>,
    mode: Mode,
    /// Where `Mode::Redirect` sends requests.
    redirect_to: String,
    status: serde_json::Value,
    version: u64,
    seen: Vec<Seen>,
}

#[derive(Clone)]
pub struct TestPortainer {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

/// The endpoint a global key is given.
pub const GLOBAL_ENDPOINT: u64 = 77;

impl TestPortainer {
    pub async fn start() -> TestPortainer {
        TestPortainer::start_on(std::net::Ipv4Addr::LOCALHOST.into()).await
    }

    /// Listening on `ip` (a test's own address: a pod reaches the host's
    /// end of the test node's link, not its loopback).
    pub async fn start_on(ip: std::net::IpAddr) -> TestPortainer {
        let listener = TcpListener::bind((ip, 0)).await.unwrap();
        let server = TestPortainer {
            addr: listener.local_addr().unwrap(),
            state: Arc::new(Mutex::new(State {
                stacks: std::collections::HashMap::new(),
                configs: std::collections::HashMap::new(),
                mode: Mode::Normal,
                redirect_to: String::new(),
                status: serde_json::json!({"status": "IDLE", "checkin": 1}),
                version: 1,
                seen: Vec::new(),
            })),
        };
        let handler = server.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let handler = handler.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let handler = handler.clone();
                        async move { Ok::<_, Infallible>(handler.answer(request).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        server
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn set_status(&self, status: serde_json::Value) {
        let mut state = self.state.lock().unwrap();
        state.status = status;
        state.version += 1;
    }

    /// What `GET /api/endpoints/<id>/edge/stacks/<stack>` answers.
    pub fn set_stack(&self, id: u64, payload: serde_json::Value) {
        self.state.lock().unwrap().stacks.insert(id, payload);
    }

    /// What `GET /api/edge_configurations/<id>/files` answers (`None`: 403).
    pub fn set_config(&self, id: u64, config: Option<serde_json::Value>) {
        self.state.lock().unwrap().configs.insert(id, config);
    }

    /// The stack statuses reported for `stack`, in order.
    pub fn stack_statuses(&self, stack: u64) -> Vec<(u64, String)> {
        let path = format!("/api/edge_stacks/{stack}/status");
        self.seen()
            .into_iter()
            .filter(|s| s.method == "PUT" && s.path == path)
            .filter_map(|s| serde_json::from_str::<serde_json::Value>(&s.body).ok())
            .map(|v| {
                (
                    v["Status"].as_u64().unwrap_or(99),
                    v["Error"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect()
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.lock().unwrap().mode = mode;
    }

    /// Redirects every request to the same path on `url`.
    pub fn redirect_to(&self, url: &str) {
        let mut state = self.state.lock().unwrap();
        state.mode = Mode::Redirect;
        state.redirect_to = url.to_string();
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.state.lock().unwrap().seen.clone()
    }

    /// Waits until `count` requests matching `path_part` have been seen.
    pub async fn wait_requests(&self, path_part: &str, count: usize, limit: Duration) -> Vec<Seen> {
        let deadline = Instant::now() + limit;
        loop {
            let seen: Vec<Seen> = self
                .seen()
                .into_iter()
                .filter(|s| s.path.contains(path_part))
                .collect();
            if seen.len() >= count {
                return seen;
            }
            assert!(
                Instant::now() < deadline,
                "only {} of {count} requests to {path_part} within {limit:?}",
                seen.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn answer(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let method = request.method().to_string();
        let path = request.uri().path().to_string();
        let headers = request.headers().clone();
        let body = request
            .into_body()
            .collect()
            .await
            .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
            .unwrap_or_default();
        let (mode, status, version, redirect_to) = {
            let state = self.state.lock().unwrap();
            (
                state.mode,
                state.status.clone(),
                state.version,
                state.redirect_to.clone(),
            )
        };
        let etag = format!("\"v{version}\"");
        if mode == Mode::Hang {
            self.state.lock().unwrap().seen.push(Seen {
                method,
                path,
                headers,
                body,
                status: 0,
            });
            return std::future::pending().await;
        }
        let request_body = body;
        let location = (mode == Mode::Redirect).then(|| format!("{redirect_to}{path}"));
        let (code, body, tag) = match mode {
            Mode::Hang => unreachable!("answered above"),
            Mode::Redirect => {
                let code = match method.as_str() {
                    "GET" => 302,
                    "POST" => 307,
                    _ => 308,
                };
                (code, String::new(), None)
            }
            Mode::Error500 => (500, r#"{"message":"boom"}"#.to_string(), None),
            Mode::Garbage => (200, "<html>not json".to_string(), None),
            Mode::Forbidden => (
                403,
                r#"{"message":"Permission denied to access environment","details":"untrusted"}"#
                    .to_string(),
                None,
            ),
            Mode::Normal if path == "/api/endpoints/global-key" => (
                200,
                serde_json::json!({"endpointID": GLOBAL_ENDPOINT}).to_string(),
                None,
            ),
            Mode::Normal if path.ends_with("/edge/status") => {
                let cached = headers
                    .get("if-none-match")
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|tags| tags.split(',').any(|t| t.trim() == etag));
                if cached {
                    (304, String::new(), Some(etag))
                } else {
                    (200, status.to_string(), Some(etag))
                }
            }
            Mode::Normal if path.contains("/edge/jobs/") && path.ends_with("/logs") => {
                (200, String::new(), None)
            }
            Mode::Normal if path.starts_with("/api/edge_stacks/") && path.ends_with("/status") => {
                (200, String::new(), None)
            }
            Mode::Normal if path.starts_with("/api/edge_configurations/") && method == "PUT" => {
                (200, String::new(), None)
            }
            Mode::Normal if path.starts_with("/api/edge_configurations/") => {
                let id: u64 = path.split('/').nth(3).unwrap_or("").parse().unwrap_or(0);
                match self.state.lock().unwrap().configs.get(&id) {
                    Some(Some(config)) => (200, config.to_string(), None),
                    Some(None) => (403, r#"{"message":"untrusted"}"#.to_string(), None),
                    None => (
                        404,
                        r#"{"message":"no such configuration"}"#.to_string(),
                        None,
                    ),
                }
            }
            Mode::Normal if path.contains("/edge/stacks/") => {
                let id: u64 = path.rsplit('/').next().unwrap_or("").parse().unwrap_or(0);
                match self.state.lock().unwrap().stacks.get(&id) {
                    Some(payload) => (200, payload.to_string(), None),
                    None => (404, r#"{"message":"no such stack"}"#.to_string(), None),
                }
            }
            Mode::Normal => (404, r#"{"message":"not found"}"#.to_string(), None),
        };
        self.state.lock().unwrap().seen.push(Seen {
            method,
            path,
            headers,
            body: request_body,
            status: code,
        });
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = StatusCode::from_u16(code).unwrap();
        if let Some(tag) = tag {
            response.headers_mut().insert("etag", tag.parse().unwrap());
        }
        if let Some(location) = location {
            response
                .headers_mut()
                .insert("location", location.parse().unwrap());
        }
        response
    }
}
