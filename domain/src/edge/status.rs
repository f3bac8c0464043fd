//! The answer to `GET /api/endpoints/<id>/edge/status` (reference §10.4).
//! Go decodes JSON field names case-insensitively and Portainer relies on
//! it (schedules carry `Id` where the agent declares `ID`), so fields are
//! looked up without regard to case; unknown fields are ignored.

use std::fmt;
use std::time::Duration;

use serde_json::{Map, Value};

/// What Portainer wants of the tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TunnelStatus {
    Idle,
    Required,
    Active,
}

/// The parts of a poll answer that sync Edge mode uses.
#[derive(Debug, Clone, PartialEq)]
pub struct PollAnswer {
    pub tunnel: TunnelStatus,
    pub port: Option<u16>,
    /// The next poll interval.
    pub checkin: Option<Duration>,
    pub credentials: Option<String>,
    /// Kept whole for the schedule and stack work (`schedules`, `stacks`).
    pub raw: Value,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PollAnswerError {
    NotJson(String),
    NotAnObject,
    UnknownStatus(String),
    BadField(&'static str),
}

impl fmt::Display for PollAnswerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PollAnswerError::NotJson(why) => write!(f, "the poll answer is not JSON: {why}"),
            PollAnswerError::NotAnObject => write!(f, "the poll answer is not a JSON object"),
            PollAnswerError::UnknownStatus(status) => {
                write!(f, "the poll answer has an unknown tunnel status {status:?}")
            }
            PollAnswerError::BadField(name) => {
                write!(f, "the poll answer's {name:?} field has the wrong type")
            }
        }
    }
}

impl std::error::Error for PollAnswerError {}

/// A field of a JSON object, matched as Go matches them (case-insensitive,
/// an exact match first).
pub fn field<'a>(object: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    object.get(name).or_else(|| {
        object
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    })
}

pub fn parse_poll_answer(body: &[u8]) -> Result<PollAnswer, PollAnswerError> {
    let raw: Value =
        serde_json::from_slice(body).map_err(|e| PollAnswerError::NotJson(e.to_string()))?;
    let object = raw.as_object().ok_or(PollAnswerError::NotAnObject)?;
    let tunnel = match field(object, "status").and_then(Value::as_str) {
        Some("IDLE") | None => TunnelStatus::Idle,
        Some("REQUIRED") => TunnelStatus::Required,
        Some("ACTIVE") => TunnelStatus::Active,
        Some(other) => return Err(PollAnswerError::UnknownStatus(other.to_string())),
    };
    let port = match field(object, "port") {
        None | Some(Value::Null) => None,
        Some(value) => match value.as_u64() {
            Some(0) => None,
            Some(port) => Some(u16::try_from(port).map_err(|_| PollAnswerError::BadField("port"))?),
            None => return Err(PollAnswerError::BadField("port")),
        },
    };
    let checkin = match field(object, "checkin") {
        None | Some(Value::Null) => None,
        Some(value) => {
            let seconds = value.as_f64().ok_or(PollAnswerError::BadField("checkin"))?;
            (seconds.is_finite() && seconds > 0.0)
                .then(|| Duration::from_secs_f64(seconds.min(86_400.0)))
        }
    };
    let credentials = match field(object, "credentials") {
        None | Some(Value::Null) => None,
        Some(Value::String(text)) if text.is_empty() => None,
        Some(Value::String(text)) => Some(text.clone()),
        Some(_) => return Err(PollAnswerError::BadField("credentials")),
    };
    Ok(PollAnswer {
        tunnel,
        port,
        checkin,
        credentials,
        raw,
    })
}

/// Portainer's error body on a refused poll, as one line for the log.
pub fn refusal_text(status: u16, body: &[u8]) -> String {
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let object = parsed.as_ref().and_then(Value::as_object);
    let part = |name| {
        object
            .and_then(|o| field(o, name))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let (message, details) = (part("message"), part("details"));
    match (message.is_empty(), details.is_empty()) {
        (true, true) => format!("Portainer answered {status}"),
        (false, true) => format!("Portainer answered {status}: {message}"),
        _ => format!("Portainer answered {status}: {message} ({details})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_answer_decodes_and_unknown_fields_are_ignored() {
        let body = br#"{"status":"REQUIRED","port":49152,"checkin":2.5,"credentials":"abc",
            "schedules":[{"Id":1}],"stacks":null,"somethingNew":{"x":1}}"#;
        let answer = parse_poll_answer(body).unwrap();
        assert_eq!(answer.tunnel, TunnelStatus::Required);
        assert_eq!(answer.port, Some(49152));
        assert_eq!(answer.checkin, Some(Duration::from_millis(2500)));
        assert_eq!(answer.credentials.as_deref(), Some("abc"));
    }

    #[test]
    fn field_names_match_regardless_of_case() {
        let body = br#"{"Status":"ACTIVE","PORT":1,"CheckIn":5}"#;
        let answer = parse_poll_answer(body).unwrap();
        assert_eq!(answer.tunnel, TunnelStatus::Active);
        assert_eq!(answer.port, Some(1));
        assert_eq!(answer.checkin, Some(Duration::from_secs(5)));
    }

    #[test]
    fn bad_answers_are_errors_not_panics() {
        assert!(matches!(
            parse_poll_answer(b"<html>"),
            Err(PollAnswerError::NotJson(_))
        ));
        assert_eq!(parse_poll_answer(b"[1]"), Err(PollAnswerError::NotAnObject));
        assert_eq!(
            parse_poll_answer(br#"{"status":"OPEN"}"#),
            Err(PollAnswerError::UnknownStatus("OPEN".into()))
        );
        assert_eq!(
            parse_poll_answer(br#"{"port":70000}"#),
            Err(PollAnswerError::BadField("port"))
        );
        assert_eq!(
            parse_poll_answer(br#"{"checkin":"5"}"#),
            Err(PollAnswerError::BadField("checkin"))
        );
        let empty = parse_poll_answer(b"{}").unwrap();
        assert_eq!(
            (empty.tunnel, empty.port, empty.checkin),
            (TunnelStatus::Idle, None, None)
        );
        assert_eq!(
            parse_poll_answer(br#"{"checkin":0}"#).unwrap().checkin,
            None
        );
    }

    #[test]
    fn refusals_read_as_one_line() {
        assert_eq!(
            refusal_text(
                403,
                br#"{"message":"Permission denied","details":"untrusted"}"#
            ),
            "Portainer answered 403: Permission denied (untrusted)"
        );
        assert_eq!(refusal_text(500, b"oops"), "Portainer answered 500");
    }
}
