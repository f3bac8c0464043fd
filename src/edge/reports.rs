//! Where Edge work reports what it did. In sync mode every report is its
//! own call to Portainer (a stack status `PUT`, a job log `POST`, a
//! configuration state `PUT`); in async mode no call but the async one is
//! made, so reports wait in the outbox for the next snapshot, and a post
//! that fails puts them back (never lost).

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_domain::edge::async_protocol::{ContainerLogs, Outbox, StackReport};
use berth_domain::edge::stack::StackStatus;
use berth_domain::edge::status::refusal_text;
use berth_ports::{EdgeCall, PortainerApi};
use http::Method;
use tracing::warn;

const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Sync reports retried on 5xx and transport errors, with backoff.
const REPORT_ATTEMPTS: u32 = 6;

/// Reports of Edge stacks, jobs and configurations.
pub trait Reports: Clone + Send + Sync + 'static {
    fn stack_status(
        &self,
        endpoint_id: u64,
        stack: u64,
        status: StackStatus,
        error: &str,
    ) -> impl Future<Output = ()> + Send;

    fn job_log(
        &self,
        endpoint_id: u64,
        job: u64,
        content: String,
    ) -> impl Future<Output = ()> + Send;

    fn config_state(
        &self,
        endpoint_id: u64,
        config: u64,
        state: u8,
    ) -> impl Future<Output = ()> + Send;
}

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// Sync mode: each report is a call to Portainer.
#[derive(Clone)]
pub struct PortainerReports<A> {
    api: A,
    edge_id: String,
}

impl<A: PortainerApi> PortainerReports<A> {
    pub fn new(api: A, edge_id: String) -> Self {
        PortainerReports { api, edge_id }
    }

    fn call(&self, method: Method, path: String, body: Vec<u8>) -> EdgeCall {
        let mut headers = vec![("X-PortainerAgent-EdgeID".into(), self.edge_id.clone())];
        if !body.is_empty() {
            headers.push(("Content-Type".into(), "application/json".into()));
        }
        EdgeCall {
            method,
            path,
            headers,
            body,
            timeout: CALL_TIMEOUT,
        }
    }

    /// Retried on 5xx and transport errors with backoff, given up after a
    /// few tries (the next change reports again); `what` names it in logs.
    async fn send(&self, what: &str, make: impl Fn() -> EdgeCall) {
        let mut delay = Duration::from_secs(1);
        for attempt in 1..=REPORT_ATTEMPTS {
            match self.api.call(make()).await {
                Ok(answer) if answer.status < 300 => return,
                Ok(answer) if answer.status < 500 => {
                    let why = refusal_text(answer.status, &answer.body);
                    warn!(status = answer.status, %why, "Portainer refused {what}");
                    return;
                }
                Ok(_) | Err(_) if attempt < REPORT_ATTEMPTS => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                outcome => warn!(?outcome, "{what} could not be reported"),
            }
        }
    }
}

impl<A: PortainerApi> Reports for PortainerReports<A> {
    async fn stack_status(&self, endpoint_id: u64, stack: u64, status: StackStatus, error: &str) {
        let body = serde_json::json!({"Error": error, "Status": status.code(),
            "EndpointID": endpoint_id, "Time": now()})
        .to_string()
        .into_bytes();
        let path = format!("/api/edge_stacks/{stack}/status");
        self.send("a stack status", || {
            let mut call = self.call(Method::PUT, path.clone(), body.clone());
            call.headers
                .push(("X-Portainer-No-Body".into(), "1".into()));
            call
        })
        .await;
    }

    async fn job_log(&self, endpoint_id: u64, job: u64, content: String) {
        let body = serde_json::json!({"FileContent": content})
            .to_string()
            .into_bytes();
        let path = format!("/api/endpoints/{endpoint_id}/edge/jobs/{job}/logs");
        self.send("a job log", || {
            self.call(Method::POST, path.clone(), body.clone())
        })
        .await;
    }

    async fn config_state(&self, _endpoint_id: u64, config: u64, state: u8) {
        let path = format!("/api/edge_configurations/{config}/{state}");
        self.send("an Edge configuration state", || {
            self.call(Method::PUT, path.clone(), Vec::new())
        })
        .await;
    }
}

/// Async mode: reports wait for the next snapshot.
#[derive(Clone, Default)]
pub struct SharedOutbox(Arc<Mutex<Outbox>>);

impl SharedOutbox {
    /// Everything waiting, for one post.
    pub fn take(&self) -> Outbox {
        std::mem::take(&mut *self.lock())
    }

    /// Puts back what a failed post carried, before anything newer.
    pub fn restore(&self, earlier: Outbox) {
        self.lock().restore(earlier);
    }

    pub fn stack_logs(&self, stack: u64, logs: Vec<ContainerLogs>) {
        self.lock().stack_logs.insert(stack, logs);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Outbox> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Reports for SharedOutbox {
    async fn stack_status(&self, _: u64, stack: u64, status: StackStatus, error: &str) {
        self.lock()
            .stack_statuses
            .entry(stack)
            .or_default()
            .push(StackReport {
                time: now(),
                status,
                error: error.to_string(),
            });
    }

    async fn job_log(&self, _: u64, job: u64, content: String) {
        self.lock().job_logs.insert(job, content);
    }

    async fn config_state(&self, _: u64, config: u64, state: u8) {
        self.lock().config_states.insert(config, state);
    }
}
