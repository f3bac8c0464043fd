//! berth does not alter what it forwards: for a set of requests, status,
//! body and Docker's headers through berth equal those from the socket.

use crate::berth_for_engine;
use crate::support::berth_process::engine_socket;
use crate::support::client::Target;

/// Headers that differ between any two answers (Podman numbers each
/// answer), or that berth adds.
const UNCOMPARED: [&str; 5] = [
    "date",
    "x-reference-id",
    "portainer-agent",
    "portainer-agent-api-version",
    "portainer-agent-platform",
];

#[tokio::test]
async fn answers_through_berth_equal_answers_from_the_socket() {
    let Some((berth, host)) = berth_for_engine() else {
        return;
    };
    let direct = Target::Socket(engine_socket(&host));
    let through = Target::Berth(berth.addr);
    let requests = [
        ("GET", "/_ping", ""),
        ("HEAD", "/_ping", ""),
        ("GET", "/v1.41/version", ""),
        ("GET", "/version", ""),
        ("GET", "/v1.41/containers/json?all=1", ""),
        ("GET", "/v1.41/images/json", ""),
        ("GET", "/v1.41/containers/no-such-container/json", ""),
        ("GET", "/v9.99/version", ""),
        ("POST", "/v1.41/containers/create", "{not json"),
        ("GET", "/v1.41/no/such/route", ""),
        ("GET", "/volumes/v1.2data", ""),
    ];
    for (method, path, body) in requests {
        let (expected, expected_body) = direct.fetch(method, path, body).await;
        let (actual, actual_body) = through.fetch(method, path, body).await;
        assert_eq!(actual.status(), expected.status(), "{method} {path}");
        assert_eq!(actual_body, expected_body, "{method} {path}");
        let headers = |response: &http::Response<()>| {
            let mut pairs: Vec<(String, String)> = response
                .headers()
                .iter()
                .filter(|(name, _)| !UNCOMPARED.contains(&name.as_str()))
                .map(|(name, value)| (name.to_string(), value.to_str().unwrap().to_string()))
                .collect();
            pairs.sort();
            pairs
        };
        assert_eq!(headers(&actual), headers(&expected), "{method} {path}");
    }
}
