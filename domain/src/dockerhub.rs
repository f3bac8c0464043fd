//! `POST /v2/dockerhub` (reference §6.8): Docker Hub's pull limits for an
//! account, or for anonymous pulls from this node's address. A token from
//! Docker Hub's token service, then a `HEAD` of a manifest whose answer
//! carries `RateLimit-Limit` and `RateLimit-Remaining`.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::{json, Value};

use crate::edge::status::field;
use crate::error::AgentError;

/// The token service's request, relative to `DOCKERHUB_AUTH_URL`.
pub const TOKEN_TARGET: &str =
    "/token?service=registry.docker.io&scope=repository:ratelimitpreview/test:pull";
/// The manifest whose answer carries the limits, relative to
/// `DOCKERHUB_REGISTRY_URL`.
pub const LIMITS_TARGET: &str = "/v2/ratelimitpreview/test/manifests/latest";

const INVALID: &str = "Invalid request payload";
const NO_TOKEN: &str = "Unable to retrieve DockerHub token from DockerHub";
const NO_LIMITS: &str = "Unable to retrieve DockerHub rate limits from DockerHub";

/// Whose limits: an account's, or (no credentials) this address's.
#[derive(Clone, PartialEq, Eq)]
pub struct Account {
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Account {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Account")
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl Account {
    /// The token request's `Authorization` header.
    pub fn basic_auth(&self) -> String {
        let pair = format!("{}:{}", self.username, self.password);
        format!("Basic {}", STANDARD.encode(pair))
    }
}

/// The request body: `{"authentication", "username", "password"}`, field
/// names in any case as Go decodes them.
///
/// # Errors
/// 400 `Invalid request payload` when it is not a JSON object, or asks for
/// authentication without a username or password.
pub fn parse_request(body: &[u8]) -> Result<Option<Account>, AgentError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| AgentError::new(400, INVALID, e.to_string()))?;
    let object = value
        .as_object()
        .ok_or_else(|| AgentError::new(400, INVALID, "the payload is not a JSON object"))?;
    let authentication = field(object, "authentication")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if !authentication {
        return Ok(None);
    }
    let text = |name| {
        field(object, name)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (username, password) = (text("username"), text("password"));
    if username.is_empty() || password.is_empty() {
        return Err(AgentError::new(
            400,
            INVALID,
            "Missing username or password",
        ));
    }
    Ok(Some(Account { username, password }))
}

/// A transport failure while asking Docker Hub for a token.
pub fn token_unreachable(why: &str) -> AgentError {
    AgentError::new(500, NO_TOKEN, why)
}

/// A transport failure while asking Docker Hub for the limits.
pub fn limits_unreachable(why: &str) -> AgentError {
    AgentError::new(500, NO_LIMITS, why)
}

/// The token service's answer: `200` with `{"token": …}`.
///
/// # Errors
/// 500 `Unable to retrieve DockerHub token from DockerHub`.
pub fn token_from(status: u16, body: &[u8]) -> Result<String, AgentError> {
    if status != 200 {
        return Err(token_unreachable("failed fetching dockerhub token"));
    }
    let value: Value =
        serde_json::from_slice(body).map_err(|e| token_unreachable(&e.to_string()))?;
    Ok(value
        .as_object()
        .and_then(|o| field(o, "token"))
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string())
}

/// The limits from the manifest's answer: `{"remaining", "limit"}`, or
/// `null` when either header is missing or not a number (Docker Hub's Pro
/// accounts have no limits, and no headers).
///
/// # Errors
/// 500 `Unable to retrieve DockerHub rate limits from DockerHub` when the
/// answer is not `200`.
pub fn limits_from(
    status: u16,
    limit: Option<&str>,
    remaining: Option<&str>,
) -> Result<Value, AgentError> {
    if status != 200 {
        return Err(limits_unreachable("failed fetching dockerhub limits"));
    }
    // `100;w=21600`: the number before the first `;`.
    let number = |header: Option<&str>| -> Option<i64> { header?.split(';').next()?.parse().ok() };
    Ok(match (number(limit), number(remaining)) {
        (Some(limit), Some(remaining)) => json!({"remaining": remaining, "limit": limit}),
        _ => Value::Null,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_as_portainer_sends_them() {
        assert_eq!(
            parse_request(br#"{"authentication": false}"#).unwrap(),
            None
        );
        assert_eq!(parse_request(b"{}").unwrap(), None);
        let account =
            parse_request(br#"{"Authentication": true, "Username": "alice", "Password": "pw"}"#)
                .unwrap()
                .unwrap();
        assert_eq!(
            account.basic_auth(),
            format!("Basic {}", STANDARD.encode("alice:pw"))
        );
        assert!(!format!("{account:?}").contains("pw"));
        for bad in [
            &br#"{"authentication": true, "username": "alice"}"#[..],
            br#"{"authentication": true, "password": "pw"}"#,
        ] {
            let error = parse_request(bad).unwrap_err();
            assert_eq!(error.status(), 400);
            assert_eq!(error.message(), INVALID);
            assert_eq!(error.details(), "Missing username or password");
        }
        let error = parse_request(b"not json").unwrap_err();
        assert_eq!((error.status(), error.message()), (400, INVALID));
        assert_eq!(parse_request(b"[]").unwrap_err().status(), 400);
    }

    #[test]
    fn tokens_and_limits_are_read_as_the_go_agent_reads_them() {
        assert_eq!(token_from(200, br#"{"token": "abc"}"#).unwrap(), "abc");
        let error = token_from(401, b"").unwrap_err();
        assert_eq!((error.status(), error.message()), (500, NO_TOKEN));
        assert_eq!(error.details(), "Failed fetching dockerhub token");
        assert_eq!(token_from(200, b"<html>").unwrap_err().message(), NO_TOKEN);

        assert_eq!(
            limits_from(200, Some("100;w=21600"), Some("76;w=21600")).unwrap(),
            json!({"remaining": 76, "limit": 100})
        );
        assert_eq!(
            limits_from(200, Some("100;w=21600"), Some("76;w=21600"))
                .unwrap()
                .to_string(),
            r#"{"remaining":76,"limit":100}"#,
            "the Go struct's field order"
        );
        assert_eq!(limits_from(200, None, None).unwrap(), Value::Null);
        assert_eq!(limits_from(200, Some("x"), Some("1")).unwrap(), Value::Null);
        let error = limits_from(429, None, None).unwrap_err();
        assert_eq!((error.status(), error.message()), (500, NO_LIMITS));
    }
}
