//! The Edge poll loop (reference §10.4): ask Portainer what it wants, feed
//! the tunnel driver, and come back after `checkin` seconds. Failures back
//! off with jitter and are logged when the state changes, not every try.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use berth_domain::edge::backoff::Backoff;
use berth_domain::edge::key::EdgeKey;
use berth_domain::edge::status::{field, parse_poll_answer, refusal_text, PollAnswer};
use berth_domain::engine::SwarmRole;
use berth_domain::headers::AGENT_VERSION;
use berth_domain::kubernetes::Platform;
use berth_ports::{EdgeCall, PortainerApi};
use http::Method;
use tokio::sync::watch;
use tracing::{info, warn};

use super::keys::EdgeKeys;
use super::poll_record::PollRecord;
use super::tunnel::TunnelHandle;
use crate::facts::FactsReceiver;

/// Before Portainer says otherwise.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// ETags remembered for `If-None-Match`, as the Go agent's LRU.
const ETAG_CACHE: usize = 8;
/// The longest berth waits between failed polls: long enough to spare a
/// struggling Portainer, short enough to come back soon after it does.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// A poll answer for the work it carries (jobs, stacks), with the
/// endpoint it is for.
#[derive(Debug, Clone)]
pub struct PollWork {
    pub answer: Arc<serde_json::Value>,
    pub endpoint_id: u64,
}

/// Work that follows the poll answers on its own task (jobs, stacks).
pub trait PollWorker: Send + 'static {
    fn apply(&mut self, work: &PollWork) -> impl std::future::Future<Output = ()> + Send;

    /// When the worker wants to run without a new answer (a retry).
    fn wake_at(&self) -> Option<tokio::time::Instant> {
        None
    }

    fn wake(&mut self) -> impl std::future::Future<Output = ()> + Send {
        std::future::ready(())
    }
}

/// Hands each poll answer to `worker`, the latest one when it falls behind,
/// and wakes it when it asks, until the poller ends.
pub async fn follow<W: PollWorker>(mut worker: W, mut answers: watch::Receiver<Option<PollWork>>) {
    loop {
        let wake_at = worker.wake_at();
        tokio::select! {
            changed = answers.changed() => {
                if changed.is_err() {
                    return;
                }
                let work = answers.borrow_and_update().clone();
                if let Some(work) = work {
                    worker.apply(&work).await;
                }
            }
            () = sleep_until(wake_at) => worker.wake().await,
        }
    }
}

/// Sleeps until `at`; forever without one.
pub async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// The identity the agent polls with.
#[derive(Debug, Clone)]
pub struct PollIdentity {
    pub edge_id: String,
    pub update_id: i64,
    pub time_zone: String,
    /// Portainer types the environment from it on every poll.
    pub platform: Platform,
}

/// The `X-PortainerAgent-TimeZone` value as Go's `time.Local` names it.
pub fn local_time_zone() -> String {
    match std::env::var("TZ") {
        Ok(tz) if !tz.is_empty() => tz,
        _ if std::path::Path::new("/etc/localtime").exists() => "Local".to_string(),
        _ => "UTC".to_string(),
    }
}

pub struct Poller<A> {
    api: A,
    keys: EdgeKeys,
    identity: PollIdentity,
    tunnel: TunnelHandle,
    facts: FactsReceiver,
    interval: Duration,
    cache: VecDeque<(String, Vec<u8>)>,
    /// The last failure logged, so a repeated one is not logged again.
    failing: Option<String>,
    failures: u32,
    not_leader_logged: bool,
    /// A global key's endpoint ID comes from Portainer, and is given back
    /// when Portainer refuses a poll.
    global: bool,
    /// Each answer, for the jobs and stacks (which may take longer than a
    /// poll interval, so they follow on their own tasks).
    work: watch::Sender<Option<PollWork>>,
    record: PollRecord,
}

impl<A: PortainerApi> Poller<A> {
    pub fn new(
        api: A,
        keys: EdgeKeys,
        identity: PollIdentity,
        tunnel: TunnelHandle,
        facts: FactsReceiver,
    ) -> Self {
        Poller {
            api,
            keys,
            identity,
            tunnel,
            facts,
            interval: DEFAULT_INTERVAL,
            cache: VecDeque::new(),
            failing: None,
            failures: 0,
            not_leader_logged: false,
            global: false,
            work: watch::channel(None).0,
            record: PollRecord::default(),
        }
    }

    /// Where each poll's outcome is kept for `berth status`.
    pub fn with_record(mut self, record: PollRecord) -> Self {
        self.record = record;
        self
    }

    /// Follows the poll answers, for the work they carry.
    pub fn answers(&self) -> watch::Receiver<Option<PollWork>> {
        self.work.subscribe()
    }

    /// Polls until the process ends; the first poll goes out at once.
    pub async fn run(mut self) {
        let key = self.keys.wait().await;
        self.global = key.is_global();
        info!(portainer = %key.portainer_url, endpoint_id = key.endpoint_id, "Edge polling started");
        loop {
            let delay = if self.may_poll() {
                match self.poll_once().await {
                    Ok(()) => self.recovered(),
                    Err(why) => self.failed(why),
                }
            } else {
                self.interval
            };
            tokio::time::sleep(delay).await;
        }
    }

    /// In a swarm only the leader polls, as the Go agent does.
    fn may_poll(&mut self) -> bool {
        let role = self.facts.borrow().role;
        let allowed = matches!(
            role,
            SwarmRole::Standalone | SwarmRole::Manager { leader: true }
        );
        if !allowed && !self.not_leader_logged {
            info!("not the swarm leader: the leader's agent polls Portainer");
        }
        self.not_leader_logged = !allowed;
        allowed
    }

    fn recovered(&mut self) -> Duration {
        self.record.record(None);
        if self.failing.take().is_some() {
            info!("polling Portainer works again");
        }
        self.failures = 0;
        self.interval
    }

    fn failed(&mut self, why: String) -> Duration {
        self.record.record(Some(&why));
        if self.failing.as_deref() != Some(why.as_str()) {
            warn!(error = %why, "polling Portainer failed; retrying with backoff");
            self.failing = Some(why);
        }
        let backoff = Backoff {
            base: self.interval,
            cap: MAX_BACKOFF.max(self.interval),
        };
        let delay = backoff.delay(self.failures, super::tunnel::jitter());
        self.failures = self.failures.saturating_add(1);
        delay
    }

    fn timeout(&self) -> Duration {
        self.interval
            .clamp(Duration::from_secs(5), Duration::from_secs(30))
    }

    fn common_headers(&self) -> Vec<(String, String)> {
        vec![
            (
                "X-PortainerAgent-EdgeID".into(),
                self.identity.edge_id.clone(),
            ),
            ("Portainer-Agent".into(), AGENT_VERSION.into()),
            (
                "X-PortainerAgent-TimeZone".into(),
                self.identity.time_zone.clone(),
            ),
            (
                "Portainer-Agent-Platform".into(),
                self.identity.platform.wire_value().into(),
            ),
            (
                "X-PortainerAgent-Update-ID".into(),
                self.identity.update_id.to_string(),
            ),
        ]
    }

    async fn poll_once(&mut self) -> Result<(), String> {
        let mut key = self.keys.get().ok_or("no Edge key")?;
        if key.is_global() {
            key.endpoint_id = self.claim_endpoint().await?;
            self.keys.assign_endpoint(key.endpoint_id);
        }
        let answer = self.status(&key).await?;
        if let Some(checkin) = answer.checkin {
            if checkin != self.interval {
                info!(
                    seconds = checkin.as_secs_f64(),
                    "Portainer set the poll interval"
                );
                self.interval = checkin;
            }
        }
        self.tunnel
            .status(answer.tunnel, answer.port, answer.credentials.clone());
        self.work.send_replace(Some(PollWork {
            answer: Arc::new(answer.raw),
            endpoint_id: key.endpoint_id,
        }));
        Ok(())
    }

    /// A global key asks Portainer for this agent's endpoint.
    async fn claim_endpoint(&self) -> Result<u64, String> {
        let call = EdgeCall {
            method: Method::POST,
            path: "/api/endpoints/global-key".into(),
            headers: vec![(
                "X-PortainerAgent-EdgeID".into(),
                self.identity.edge_id.clone(),
            )],
            body: b"{}".to_vec(),
            timeout: self.timeout(),
        };
        let answer = self.api.call(call).await.map_err(|e| e.to_string())?;
        if answer.status != 200 {
            return Err(refusal_text(answer.status, &answer.body));
        }
        let value: serde_json::Value = serde_json::from_slice(&answer.body)
            .map_err(|e| format!("the global key answer is not JSON: {e}"))?;
        value
            .as_object()
            .and_then(|o| field(o, "endpointID"))
            .and_then(serde_json::Value::as_u64)
            .filter(|id| *id > 0)
            .ok_or_else(|| "the global key answer has no endpointID".to_string())
    }

    async fn status(&mut self, key: &EdgeKey) -> Result<PollAnswer, String> {
        let mut headers = self.common_headers();
        let tags: Vec<&str> = self.cache.iter().map(|(tag, _)| tag.as_str()).collect();
        headers.insert(0, ("If-None-Match".into(), tags.join(",")));
        let call = EdgeCall {
            method: Method::GET,
            path: format!("/api/endpoints/{}/edge/status", key.endpoint_id),
            headers,
            body: Vec::new(),
            timeout: self.timeout(),
        };
        let answer = self.api.call(call).await.map_err(|e| e.to_string())?;
        let body = match (answer.status, &answer.etag) {
            (304, Some(tag)) => self
                .cache
                .iter()
                .find(|(cached, _)| cached == tag)
                .map(|(_, body)| body.clone())
                .ok_or_else(|| format!("Portainer answered 304 for an unknown ETag {tag}"))?,
            (200, _) => answer.body,
            (status, _) => {
                if self.global {
                    self.keys.assign_endpoint(0);
                }
                return Err(refusal_text(status, &answer.body));
            }
        };
        let parsed = parse_poll_answer(&body).map_err(|e| e.to_string())?;
        if let (200, Some(tag)) = (answer.status, answer.etag) {
            self.cache.retain(|(cached, _)| *cached != tag);
            self.cache.push_front((tag, body));
            self.cache.truncate(ETAG_CACHE);
        }
        Ok(parsed)
    }
}
