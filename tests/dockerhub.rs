//! `POST /v2/dockerhub` through the real berth binary. Docker Hub cannot
//! be reached from the tests, so a scripted stand-in on loopback plays its
//! token service and registry (`DOCKERHUB_AUTH_URL`,
//! `DOCKERHUB_REGISTRY_URL`), answering as Docker Hub answers: a token,
//! then `RateLimit-*` headers on a manifest's `HEAD`, or none for a Pro
//! account, or a refusal.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use support::berth_process::BerthProcess;
use support::client::{unsigned_request, Target};

const NO_ENGINE: (&str, &str) = ("DOCKER_HOST", "unix:///nonexistent/docker.sock");

/// How the stand-in answers, and what it was asked.
#[derive(Default)]
struct Script {
    token_status: u16,
    manifest_status: u16,
    /// `(RateLimit-Limit, RateLimit-Remaining)`; none for a Pro account.
    limits: Option<(&'static str, &'static str)>,
    /// `(method, path and query, Authorization)` of each request.
    seen: Vec<(String, String, Option<String>)>,
}

async fn scripted_docker_hub(script: Arc<Mutex<Script>>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let script = Arc::clone(&script);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<Incoming>| {
                    let script = Arc::clone(&script);
                    async move {
                        let mut script = script.lock().unwrap();
                        let target = request.uri().to_string();
                        script.seen.push((
                            request.method().to_string(),
                            target.clone(),
                            request
                                .headers()
                                .get("authorization")
                                .map(|v| v.to_str().unwrap().to_string()),
                        ));
                        let mut answer = Response::builder();
                        let body = if target.starts_with("/token") {
                            answer = answer.status(script.token_status);
                            json!({"token": "scripted-token", "expires_in": 300}).to_string()
                        } else {
                            answer = answer.status(script.manifest_status);
                            if let Some((limit, remaining)) = script.limits {
                                answer = answer
                                    .header("ratelimit-limit", limit)
                                    .header("ratelimit-remaining", remaining);
                            }
                            String::new()
                        };
                        Ok::<_, std::convert::Infallible>(
                            answer.body(Full::new(Bytes::from(body))).unwrap(),
                        )
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    address
}

async fn limits(berth: &BerthProcess, body: Value) -> (u16, Value) {
    Target::Berth(berth.addr)
        .json("POST", "/v2/dockerhub", &body.to_string())
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn docker_hub_limits_are_asked_as_the_go_agent_asks_them() {
    let script = Arc::new(Mutex::new(Script {
        token_status: 200,
        manifest_status: 200,
        limits: Some(("100;w=21600", "76;w=21600")),
        ..Script::default()
    }));
    let hub = scripted_docker_hub(Arc::clone(&script)).await;
    let url = format!("http://{hub}");
    let berth = BerthProcess::start(&[
        NO_ENGINE,
        ("DOCKERHUB_AUTH_URL", url.as_str()),
        ("DOCKERHUB_REGISTRY_URL", url.as_str()),
    ]);

    // Anonymous: the limits of this address.
    let (status, answer) = limits(&berth, json!({"authentication": false})).await;
    assert_eq!(
        (status, answer),
        (200, json!({"remaining": 76, "limit": 100}))
    );
    let seen = std::mem::take(&mut script.lock().unwrap().seen);
    assert_eq!(
        seen,
        [
            (
                "GET".to_string(),
                "/token?service=registry.docker.io&scope=repository:ratelimitpreview/test:pull"
                    .to_string(),
                None
            ),
            (
                "HEAD".to_string(),
                "/v2/ratelimitpreview/test/manifests/latest".to_string(),
                Some("Bearer scripted-token".to_string())
            ),
        ]
    );

    // An account: its credentials go to the token service only.
    let (status, _) = limits(
        &berth,
        json!({"authentication": true, "username": "alice", "password": "pw"}),
    )
    .await;
    assert_eq!(status, 200);
    let seen = std::mem::take(&mut script.lock().unwrap().seen);
    assert_eq!(seen[0].2.as_deref(), Some("Basic YWxpY2U6cHc="));
    assert_eq!(seen[1].2.as_deref(), Some("Bearer scripted-token"));

    // A Pro account has no limits: `null`, not an error.
    script.lock().unwrap().limits = None;
    let (status, answer) = limits(&berth, json!({"authentication": false})).await;
    assert_eq!((status, answer), (200, Value::Null));

    // Refusals, in Portainer's error shape.
    script.lock().unwrap().manifest_status = 429;
    let (status, answer) = limits(&berth, json!({})).await;
    assert_eq!(status, 500);
    assert_eq!(
        answer["message"],
        "Unable to retrieve DockerHub rate limits from DockerHub"
    );
    script.lock().unwrap().token_status = 401;
    let (status, answer) = limits(&berth, json!({})).await;
    assert_eq!(status, 500);
    assert_eq!(
        answer["message"],
        "Unable to retrieve DockerHub token from DockerHub"
    );
    assert_eq!(answer["details"], "Failed fetching dockerhub token");

    // Bad requests never reach Docker Hub.
    script.lock().unwrap().seen.clear();
    let (status, answer) =
        limits(&berth, json!({"authentication": true, "username": "alice"})).await;
    assert_eq!(status, 400);
    assert_eq!(answer["message"], "Invalid request payload");
    assert_eq!(answer["details"], "Missing username or password");
    let (status, answer) = Target::Berth(berth.addr)
        .json("POST", "/v2/dockerhub", "{not json")
        .await;
    assert_eq!(
        (status, answer["message"].as_str()),
        (400, Some("Invalid request payload"))
    );
    assert!(script.lock().unwrap().seen.is_empty());

    // Unsigned, like every route but /ping: refused.
    let (response, _) = Target::Berth(berth.addr)
        .fetch_request(unsigned_request("POST", "/v2/dockerhub", "{}"))
        .await;
    assert_eq!(response.status(), 403);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_docker_hub_is_a_clear_error_within_the_timeout() {
    // A port nobody listens on.
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let url = format!("http://{closed}");
    let berth = BerthProcess::start(&[
        NO_ENGINE,
        ("DOCKERHUB_AUTH_URL", url.as_str()),
        ("DOCKERHUB_REGISTRY_URL", url.as_str()),
    ]);
    let started = std::time::Instant::now();
    let (status, answer) = limits(&berth, json!({})).await;
    assert_eq!(status, 500);
    assert_eq!(
        answer["message"],
        "Unable to retrieve DockerHub token from DockerHub"
    );
    assert!(!answer["details"].as_str().unwrap().is_empty());
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
}
