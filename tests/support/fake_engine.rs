//! An in-memory `DockerEngine` that replays recorded answers and remembers
//! what it was sent.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_domain::engine::EngineFacts;
use berth_ports::{full_body, Body, DockerEngine, EngineError};
use http::{HeaderMap, Request, Response};
use http_body_util::BodyExt;

use super::fixtures::RecordedAnswer;

/// What the fake engine received.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    pub uri: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

#[derive(Clone, Default)]
pub struct FakeEngine {
    answers: Arc<HashMap<(String, String), RecordedAnswer>>,
    facts: Arc<Mutex<Option<EngineFacts>>>,
    unreachable: bool,
    seen: Arc<Mutex<Vec<SeenRequest>>>,
    events: Arc<Mutex<Option<tokio::sync::mpsc::UnboundedReceiver<bytes::Bytes>>>>,
}

impl FakeEngine {
    /// Answers `(method, path-and-query)` with the recorded answer.
    pub fn replaying(answers: Vec<((&str, &str), RecordedAnswer)>) -> Self {
        let answers = answers
            .into_iter()
            .map(|((m, p), a)| ((m.to_string(), p.to_string()), a))
            .collect();
        FakeEngine {
            answers: Arc::new(answers),
            ..FakeEngine::default()
        }
    }

    /// Every call fails as if the socket were missing.
    pub fn unreachable() -> Self {
        FakeEngine {
            unreachable: true,
            ..FakeEngine::default()
        }
    }

    pub fn with_facts(self, facts: EngineFacts) -> Self {
        self.set_facts(facts);
        self
    }

    /// What the next `facts()` returns, as if the node changed.
    pub fn set_facts(&self, facts: EngineFacts) {
        *self.facts.lock().unwrap() = Some(facts);
    }

    /// The next request for the facts' events stream is answered with a
    /// stream of what is sent here, ending when the sender is dropped.
    pub fn events_stream(&self) -> tokio::sync::mpsc::UnboundedSender<bytes::Bytes> {
        let (sender, receiver) = tokio::sync::mpsc::unbounded_channel();
        *self.events.lock().unwrap() = Some(receiver);
        sender
    }

    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }
}

impl DockerEngine for FakeEngine {
    async fn forward(&self, request: Request<Body>) -> Result<Response<Body>, EngineError> {
        if self.unreachable {
            return Err(EngineError::Unreachable {
                endpoint: self.endpoint(),
                cause: "connect: no such file or directory".into(),
            });
        }
        let (parts, body) = request.into_parts();
        let body = body
            .collect()
            .await
            .expect("a readable body")
            .to_bytes()
            .to_vec();
        let uri = parts.uri.to_string();
        self.seen.lock().unwrap().push(SeenRequest {
            method: parts.method.to_string(),
            uri: uri.clone(),
            headers: parts.headers.clone(),
            body,
        });
        if uri == berth_domain::engine::FACT_EVENTS_PATH {
            if let Some(receiver) = self.events.lock().unwrap().take() {
                let frames = futures_util::stream::unfold(receiver, |mut receiver| async move {
                    let event = receiver.recv().await?;
                    Some((Ok(http_body::Frame::data(event)), receiver))
                });
                return Ok(Response::new(
                    http_body_util::StreamBody::new(frames).boxed_unsync(),
                ));
            }
        }
        let key = (parts.method.to_string(), uri.clone());
        let Some(answer) = self.answers.get(&key) else {
            let mut response = Response::new(full_body(format!(
                "{{\"message\":\"no fixture for {uri}\"}}"
            )));
            *response.status_mut() = http::StatusCode::NOT_FOUND;
            return Ok(response);
        };
        let mut response = Response::new(full_body(answer.body.clone()));
        *response.status_mut() = http::StatusCode::from_u16(answer.status).unwrap();
        for (name, value) in &answer.headers {
            response.headers_mut().append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_str(value).unwrap(),
            );
        }
        Ok(response)
    }

    async fn facts(&self) -> Result<EngineFacts, EngineError> {
        self.facts
            .lock()
            .unwrap()
            .clone()
            .ok_or_else(|| EngineError::Unreachable {
                endpoint: self.endpoint(),
                cause: "no facts".into(),
            })
    }

    fn endpoint(&self) -> String {
        "unix:///fake/docker.sock".into()
    }
}
