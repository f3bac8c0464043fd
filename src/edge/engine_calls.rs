//! What async Edge mode asks of the engine itself, through the
//! `DockerEngine` port: the answers a snapshot is made from, the logs of a
//! stack's containers, and the container, image and volume commands; and
//! what an updated agent needs to replace the old one.
//! Every call is bounded; a call that fails says what the engine said.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_domain::edge::async_protocol::{ContainerAction, ContainerLogs};
use berth_domain::edge::snapshot::EngineState;
use berth_ports::{empty_body, Body, DockerEngine};
use futures_util::StreamExt;
use http::{Method, Request, Response};
use serde_json::Value;

use berth_ports::read_bounded;

/// One engine answer may be this large (the container list of a big host).
const MAX_ANSWER: usize = 64 * 1024 * 1024;
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Running containers inspected at once for a snapshot.
const INSPECTIONS_AT_ONCE: usize = 8;

#[derive(Clone)]
pub struct EngineCalls<E> {
    engine: E,
}

/// `s` with every byte that is not unreserved in a URL path or query
/// percent-encoded.
fn escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

impl<E: DockerEngine> EngineCalls<E> {
    pub fn new(engine: E) -> Self {
        EngineCalls { engine }
    }

    /// Sends a bodiless request; the answer's head, its body unread.
    async fn send(&self, method: Method, path: &str) -> Result<Response<Body>, String> {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .header(http::header::HOST, "docker")
            .body(empty_body())
            .map_err(|e| e.to_string())?;
        self.engine
            .forward(request)
            .await
            .map_err(|e| e.to_string())
    }

    /// One call: the status and the body (read whole, bounded).
    async fn call(&self, method: Method, path: &str) -> Result<(u16, Vec<u8>), String> {
        let exchange = async {
            let response = self.send(method, path).await?;
            let status = response.status().as_u16();
            let body = read_bounded(response.into_body(), MAX_ANSWER).await?;
            Ok((status, body))
        };
        tokio::time::timeout(CALL_TIMEOUT, exchange)
            .await
            .map_err(|_| format!("the engine did not answer {path} in time"))?
    }

    /// A successful call's JSON.
    async fn json(&self, path: &str) -> Result<Value, String> {
        let (status, body) = self.call(Method::GET, path).await?;
        if !(200..300).contains(&status) {
            return Err(engine_refusal(status, &body));
        }
        serde_json::from_slice(&body).map_err(|e| format!("{path}: not JSON: {e}"))
    }

    /// A call that must succeed; the engine's words otherwise.
    async fn act(&self, method: Method, path: &str) -> Result<(), String> {
        let (status, body) = self.call(method, path).await?;
        if (200..300).contains(&status) {
            Ok(())
        } else {
            Err(engine_refusal(status, &body))
        }
    }

    /// Everything a snapshot is made from.
    ///
    /// # Errors
    /// When `/info` or the container list cannot be read; the other lists
    /// are taken as empty when they fail, as Portainer's snapshot does.
    pub async fn engine_state(&self) -> Result<EngineState, String> {
        let info = self.json("/info").await?;
        let containers = match self.json("/containers/json?all=1").await? {
            Value::Array(list) => list,
            _ => return Err("the container list is not a list".into()),
        };
        let running: Vec<String> = containers
            .iter()
            .filter(|c| c["State"] == "running")
            .filter_map(|c| c["Id"].as_str().map(str::to_string))
            .collect();
        let inspections: BTreeMap<String, Value> = futures_util::stream::iter(running)
            .map(|id| async move {
                let inspection = self.json(&format!("/containers/{id}/json")).await;
                inspection.ok().map(|value| (id, value))
            })
            .buffer_unordered(INSPECTIONS_AT_ONCE)
            .filter_map(std::future::ready)
            .collect()
            .await;
        let swarm = info["Swarm"]["ControlAvailable"].as_bool().unwrap_or(false);
        let list = |value: Result<Value, String>| match value {
            Ok(Value::Array(items)) => items,
            _ => Vec::new(),
        };
        Ok(EngineState {
            version: self.json("/version").await.unwrap_or(Value::Null),
            images: list(self.json("/images/json").await),
            volumes: self
                .json("/volumes")
                .await
                .unwrap_or_else(|_| serde_json::json!({"Volumes": [], "Warnings": null})),
            networks: list(self.json("/networks").await),
            services: if swarm {
                list(self.json("/services").await)
            } else {
                Vec::new()
            },
            nodes: if swarm {
                list(self.json("/nodes").await)
            } else {
                Vec::new()
            },
            info,
            containers,
            inspections,
        })
    }

    /// The last `tail` lines of the containers of Edge stack `name` (a
    /// compose project or a swarm stack called `edge_<name>`).
    pub async fn stack_logs(&self, name: &str, tail: u64) -> Vec<ContainerLogs> {
        let mut logs = Vec::new();
        for label in ["com.docker.compose.project", "com.docker.stack.namespace"] {
            let filter = format!(r#"{{"label":["{label}=edge_{name}"]}}"#);
            let path = format!("/containers/json?all=1&filters={}", escape(&filter));
            let Ok(Value::Array(containers)) = self.json(&path).await else {
                continue;
            };
            for container in containers {
                let Some(id) = container["Id"].as_str() else {
                    continue;
                };
                let tty = self
                    .json(&format!("/containers/{id}/json"))
                    .await
                    .is_ok_and(|c| c["Config"]["Tty"] == true);
                let path = format!("/containers/{id}/logs?stdout=1&stderr=1&tail={tail}");
                if let Ok((200, body)) = self.call(Method::GET, &path).await {
                    let (stdout, stderr) = if tty {
                        (String::from_utf8_lossy(&body).into_owned(), String::new())
                    } else {
                        demultiplex(&body)
                    };
                    logs.push(ContainerLogs {
                        container_id: id.to_string(),
                        stdout,
                        stderr,
                    });
                }
            }
        }
        logs
    }

    /// A container command: start, restart, stop, kill (SIGKILL) or delete.
    pub async fn container(&self, name: &str, action: &ContainerAction) -> Result<(), String> {
        let name = escape(name);
        let (method, path) = match action {
            ContainerAction::Start => (Method::POST, format!("/containers/{name}/start")),
            ContainerAction::Restart => (Method::POST, format!("/containers/{name}/restart")),
            ContainerAction::Stop => (Method::POST, format!("/containers/{name}/stop")),
            ContainerAction::Kill => (Method::POST, format!("/containers/{name}/kill?signal=KILL")),
            ContainerAction::Delete { force, volumes } => (
                Method::DELETE,
                format!("/containers/{name}?force={force}&v={volumes}"),
            ),
        };
        match self.call(method, &path).await? {
            // Already started or stopped: done, as the docker CLI says.
            (status, _) if (200..300).contains(&status) || status == 304 => Ok(()),
            (status, body) => Err(engine_refusal(status, &body)),
        }
    }

    /// Every container (`all=1`), or those with label `label` (`k=v`).
    pub async fn containers(&self, label: Option<&str>) -> Result<Value, String> {
        let path = match label {
            Some(label) => {
                let filter = serde_json::json!({ "label": [label] }).to_string();
                format!("/containers/json?all=1&filters={}", escape(&filter))
            }
            None => "/containers/json?all=1".to_string(),
        };
        self.json(&path).await
    }

    /// The first `limit` bytes of a container's log, both streams as the
    /// engine sends them (frame headers included): enough to look for a
    /// line, never the whole log of a busy container.
    pub async fn log_head(&self, id: &str, limit: usize) -> Result<String, String> {
        use http_body_util::BodyExt;
        let path = format!("/containers/{}/logs?stdout=1&stderr=1", escape(id));
        let read = async {
            let response = self.send(Method::GET, &path).await?;
            if !response.status().is_success() {
                return Err(format!("the engine answered {}", response.status()));
            }
            let mut body = response.into_body();
            let mut head = Vec::new();
            while head.len() < limit {
                let Some(frame) = body.frame().await else {
                    break;
                };
                let frame = frame.map_err(|e| format!("the log broke off: {e}"))?;
                if let Ok(data) = frame.into_data() {
                    head.extend_from_slice(&data[..data.len().min(limit - head.len())]);
                }
            }
            Ok(String::from_utf8_lossy(&head).into_owned())
        };
        tokio::time::timeout(CALL_TIMEOUT, read)
            .await
            .map_err(|_| format!("the engine did not send {path} in time"))?
    }

    pub async fn rename_container(&self, id: &str, name: &str) -> Result<(), String> {
        let path = format!("/containers/{}/rename?name={}", escape(id), escape(name));
        self.act(Method::POST, &path).await
    }

    pub async fn delete_network(&self, id: &str) -> Result<(), String> {
        self.act(Method::DELETE, &format!("/networks/{}", escape(id)))
            .await
    }

    pub async fn delete_image(&self, name: &str, force: bool, prune: bool) -> Result<(), String> {
        let path = format!("/images/{}?force={force}&noprune={}", escape(name), !prune);
        self.act(Method::DELETE, &path).await
    }

    pub async fn delete_volume(&self, name: &str, force: bool) -> Result<(), String> {
        let path = format!("/volumes/{}?force={force}", escape(name));
        self.act(Method::DELETE, &path).await
    }
}

/// The engine's `{"message"}`, or the status.
fn engine_refusal(status: u16, body: &[u8]) -> String {
    serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| v["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| format!("the engine answered {status}"))
}

/// Docker's multiplexed log stream (8-byte frame headers) split into
/// stdout and stderr.
fn demultiplex(mut bytes: &[u8]) -> (String, String) {
    let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
    while bytes.len() >= 8 {
        let size = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]) as usize;
        let end = (8 + size).min(bytes.len());
        let payload = &bytes[8..end];
        match bytes[0] {
            2 => stderr.extend_from_slice(payload),
            _ => stdout.extend_from_slice(payload),
        }
        bytes = &bytes[end..];
    }
    (
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_frames_split_into_their_streams() {
        let mut bytes = vec![1, 0, 0, 0, 0, 0, 0, 3];
        bytes.extend_from_slice(b"out");
        bytes.extend_from_slice(&[2, 0, 0, 0, 0, 0, 0, 3]);
        bytes.extend_from_slice(b"err");
        assert_eq!(demultiplex(&bytes), ("out".into(), "err".into()));
    }

    #[test]
    fn names_and_filters_are_escaped() {
        assert_eq!(escape("web-1"), "web-1");
        assert_eq!(escape("a/b:c d"), "a%2Fb%3Ac%20d");
    }
}
