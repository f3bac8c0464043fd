//! Answers berth makes itself, and the headers every answer carries.

use std::sync::LazyLock;

use berth_domain::error::AgentError;
use berth_domain::headers::common_response_headers;
use berth_domain::kubernetes::Platform;
use berth_ports::{empty_body, full_body, Body};
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE};
use http::{HeaderMap, Response, StatusCode};

/// `{"message": …, "details": …}`, fields omitted when empty, no trailing
/// newline, as Portainer's libhttp writes it.
pub fn error_response(error: &AgentError) -> Response<Body> {
    let mut fields = serde_json::Map::new();
    if !error.message().is_empty() {
        fields.insert("message".into(), error.message().into());
    }
    if !error.details().is_empty() {
        fields.insert("details".into(), error.details().into());
    }
    let body = serde_json::Value::Object(fields).to_string();
    let status = StatusCode::from_u16(error.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = Response::new(full_body(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A 200 with a JSON body (no trailing newline, as libhttp writes it).
pub fn json(value: &serde_json::Value) -> Response<Body> {
    // Straight into bytes: `to_string` goes through `fmt` for every piece.
    json_text(serde_json::to_vec(value).expect("a JSON value writes into memory"))
}

/// A 200 with a body that is JSON text already.
pub fn json_text(body: Vec<u8>) -> Response<Body> {
    let mut response = Response::new(full_body(body));
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

pub fn no_content() -> Response<Body> {
    status_only(StatusCode::NO_CONTENT)
}

/// gorilla/mux's answer for an unknown agent path.
pub fn not_found() -> Response<Body> {
    let mut response = Response::new(full_body("404 page not found\n"));
    *response.status_mut() = StatusCode::NOT_FOUND;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// gorilla/mux's answer for a known agent path with another method.
pub fn method_not_allowed() -> Response<Body> {
    status_only(StatusCode::METHOD_NOT_ALLOWED)
}

fn status_only(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(empty_body());
    *response.status_mut() = status;
    response
}

/// The common headers of each platform berth serves, parsed once.
static DOCKER_HEADERS: LazyLock<Vec<(HeaderName, HeaderValue)>> =
    LazyLock::new(|| parsed_common_headers(Platform::Docker));
static KUBERNETES_HEADERS: LazyLock<Vec<(HeaderName, HeaderValue)>> =
    LazyLock::new(|| parsed_common_headers(Platform::Kubernetes));

fn parsed_common_headers(platform: Platform) -> Vec<(HeaderName, HeaderValue)> {
    common_response_headers(platform)
        .into_iter()
        .map(|(name, value)| {
            (
                HeaderName::from_bytes(name.as_bytes()).expect("a valid header name"),
                HeaderValue::from_static(value),
            )
        })
        .collect()
}

/// Sets `Portainer-Agent`, `Portainer-Agent-API-Version` and
/// `Portainer-Agent-Platform`, replacing any copies (a relayed answer must
/// not carry them twice).
pub fn set_common_headers(headers: &mut HeaderMap, platform: Platform) {
    let common = match platform {
        Platform::Kubernetes => &KUBERNETES_HEADERS,
        Platform::Docker | Platform::Podman => &DOCKER_HEADERS,
    };
    for (name, value) in common.iter() {
        headers.insert(name.clone(), value.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn error_body_has_the_portainer_shape() {
        let response = error_response(&AgentError::new(400, "Invalid request", "bad path"));
        assert_eq!(response.status(), 400);
        assert_eq!(response.headers()[CONTENT_TYPE], "application/json");
        let body = response.into_body().collect().await.unwrap().to_bytes();
        // In the order of the fields of Portainer's Go error struct.
        assert_eq!(
            &body[..],
            br#"{"message":"Invalid request","details":"Bad path"}"#
        );
    }

    #[test]
    fn common_headers_replace_relayed_copies() {
        let mut headers = HeaderMap::new();
        headers.append("portainer-agent", HeaderValue::from_static("old"));
        set_common_headers(&mut headers, Platform::Podman);
        assert_eq!(headers.get_all("portainer-agent").iter().count(), 1);
        assert_eq!(headers["portainer-agent-api-version"], "2");
        assert_eq!(headers["portainer-agent-platform"], "1");
        set_common_headers(&mut headers, Platform::Kubernetes);
        assert_eq!(
            headers.get_all("portainer-agent-platform").iter().count(),
            1
        );
        assert_eq!(headers["portainer-agent-platform"], "2");
    }
}
