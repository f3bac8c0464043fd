//! Async Edge mode (reference §10.6): one endpoint, `POST
//! /api/endpoints/edge/async`, carries pings, snapshots and commands; no
//! tunnel is ever opened.
//!
//! - Three tickers (ping, snapshot, command) take their intervals from
//!   each answer; ticks within 100 ms go out as one request. Unlike the Go
//!   agent, the first request goes out at start, with a snapshot and a
//!   command request, not a minute later.
//! - Once Portainer holds a snapshot, later ones are RFC 6902 patches
//!   against it with its hash; `needFullSnapshot` sends the whole one again
//!   at once. A body with a snapshot is gzipped.
//! - Commands run in order; the command timestamp advances to each one's
//!   and is saved under `DATA_PATH`, so no command runs twice, even after
//!   a restart. One that cannot be decoded is logged and skipped.
//! - Reports (stack statuses, logs, configuration states) wait in the
//!   outbox and ride on the next snapshot; a failed post keeps them.
//! - A refusal gives a global key's endpoint back and forgets the stacks;
//!   failures back off with jitter and are logged once per kind.

use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_domain::edge::async_protocol::{
    config_state, parse_answer, parse_command, request_body, Command, DockerPart, MetaFields, Owed,
    FIRST_COMMAND_TIMESTAMP,
};
use berth_domain::edge::async_timers::{AsyncTimers, Tick};
use berth_domain::edge::backoff::Backoff;
use berth_domain::edge::go_json;
use berth_domain::edge::snapshot::{docker_snapshot, patch_between};
use berth_domain::edge::stack::StackStatus;
use berth_domain::edge::status::refusal_text;
use berth_domain::engine::SwarmRole;
use berth_domain::headers::AGENT_VERSION;
use berth_ports::{DockerEngine, EdgeCall, KeyStore, PortainerApi};
use http::Method;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::async_work::{JobWork, StackWork, ANY_ENDPOINT};
use super::engine_calls::EngineCalls;
use super::keys::EdgeKeys;
use super::poll::PollIdentity;
use super::poll_record::PollRecord;
use super::reports::{Reports, SharedOutbox};
use crate::facts::FactsReceiver;

const ASYNC_PATH: &str = "/api/endpoints/edge/async";
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Where each command's work goes.
#[derive(Clone)]
pub struct AsyncWorkers {
    pub stacks: mpsc::Sender<StackWork>,
    pub jobs: mpsc::Sender<JobWork>,
    pub configs: mpsc::Sender<(
        berth_domain::edge::async_protocol::Operation,
        berth_domain::edge::async_protocol::EdgeConfig,
    )>,
}

pub struct AsyncPoller<A, E, C> {
    api: A,
    engine: EngineCalls<E>,
    keys: EdgeKeys,
    identity: PollIdentity,
    meta: MetaFields,
    facts: FactsReceiver,
    outbox: SharedOutbox,
    workers: AsyncWorkers,
    /// Saves the command timestamp (`DATA_PATH`).
    cursor: C,
    command_timestamp: String,
    /// The last snapshot Portainer took, which patches are made against.
    acknowledged: Option<Value>,
    global: bool,
    failing: Option<String>,
    failures: u32,
    started: Instant,
    record: PollRecord,
}

fn millis_since(start: Instant) -> u64 {
    start.elapsed().as_millis() as u64
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    // Writing to a Vec cannot fail.
    let _ = encoder.write_all(bytes);
    encoder.finish().unwrap_or_default()
}

impl<A: PortainerApi, E: DockerEngine, C: KeyStore> AsyncPoller<A, E, C> {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        api: A,
        engine: E,
        keys: EdgeKeys,
        identity: PollIdentity,
        meta: MetaFields,
        facts: FactsReceiver,
        outbox: SharedOutbox,
        workers: AsyncWorkers,
        cursor: C,
    ) -> Self {
        AsyncPoller {
            api,
            engine: EngineCalls::new(engine),
            keys,
            identity,
            meta,
            facts,
            outbox,
            workers,
            cursor,
            command_timestamp: FIRST_COMMAND_TIMESTAMP.to_string(),
            acknowledged: None,
            global: false,
            failing: None,
            failures: 0,
            started: Instant::now(),
            record: PollRecord::default(),
        }
    }

    /// Where each poll's outcome is kept for `berth status`.
    pub fn with_record(mut self, record: PollRecord) -> Self {
        self.record = record;
        self
    }

    /// Polls until the process ends.
    pub async fn run(mut self) {
        let key = self.keys.wait().await;
        self.global = key.is_global();
        match self.cursor.load().await {
            Ok(Some(saved)) => self.command_timestamp = saved,
            Ok(None) => {}
            Err(error) => warn!(%error, "the saved command timestamp cannot be read"),
        }
        info!(portainer = %key.portainer_url, endpoint_id = key.endpoint_id,
              command_timestamp = %self.command_timestamp, "async Edge polling started");
        let mut timers = AsyncTimers::new(millis_since(self.started));
        // The first request at once, with everything.
        let mut due = Some(Tick {
            snapshot: true,
            command: true,
        });
        loop {
            if let Some(tick) = due.take() {
                if self.may_poll() {
                    match self.exchange(tick, &mut timers).await {
                        Ok(()) => self.recovered(),
                        Err(why) => {
                            tokio::time::sleep(self.failed(why)).await;
                            // The same request again, with whatever came
                            // due meanwhile: a failure never waits for the
                            // next tick (which may be the minute's fail-safe).
                            let meanwhile = timers
                                .take_due(millis_since(self.started))
                                .unwrap_or_default();
                            due = Some(Tick {
                                snapshot: tick.snapshot || meanwhile.snapshot,
                                command: tick.command || meanwhile.command,
                            });
                            continue;
                        }
                    }
                }
            }
            let now = millis_since(self.started);
            let wake = timers.next_request_ms();
            if wake > now {
                tokio::time::sleep(Duration::from_millis((wake - now).min(60_000))).await;
            }
            due = timers.take_due(millis_since(self.started));
        }
    }

    /// In a swarm only the leader's agent polls, as in sync mode.
    fn may_poll(&self) -> bool {
        matches!(
            self.facts.borrow().role,
            SwarmRole::Standalone | SwarmRole::Manager { leader: true }
        )
    }

    fn recovered(&mut self) {
        self.record.record(None);
        if self.failing.take().is_some() {
            info!("async polling works again");
        }
        self.failures = 0;
    }

    fn failed(&mut self, why: String) -> Duration {
        self.record.record(Some(&why));
        if self.failing.as_deref() != Some(why.as_str()) {
            warn!(error = %why, "async polling failed; retrying with backoff");
            self.failing = Some(why);
        }
        let backoff = Backoff {
            base: Duration::from_secs(1),
            cap: MAX_BACKOFF,
        };
        let delay = backoff.delay(self.failures, super::tunnel::jitter());
        self.failures = self.failures.saturating_add(1);
        delay
    }

    fn headers(&self, gzipped: bool) -> Vec<(String, String)> {
        let mut headers = vec![
            (
                "X-PortainerAgent-EdgeID".to_string(),
                self.identity.edge_id.clone(),
            ),
            ("Portainer-Agent".into(), AGENT_VERSION.into()),
            (
                "X-PortainerAgent-TimeZone".into(),
                self.identity.time_zone.clone(),
            ),
            (
                "X-PortainerAgent-Update-ID".into(),
                self.identity.update_id.to_string(),
            ),
            (
                "Portainer-Agent-Platform".into(),
                self.identity.platform.wire_value().into(),
            ),
        ];
        if gzipped {
            headers.push(("Content-Encoding".into(), "gzip".into()));
        }
        headers
    }

    /// One request, and what its answer asks; a refused full snapshot is
    /// sent again at once, once.
    async fn exchange(&mut self, tick: Tick, timers: &mut AsyncTimers) -> Result<(), String> {
        let answer = self.post(tick, false).await?;
        let answer = if tick.snapshot && answer.need_full_snapshot {
            debug!("Portainer asked for the whole snapshot");
            self.post(
                Tick {
                    snapshot: true,
                    command: false,
                },
                true,
            )
            .await?
        } else {
            answer
        };
        timers.set_intervals(answer.intervals, millis_since(self.started));
        if self.global {
            self.keys.assign_endpoint(answer.endpoint_id);
        }
        for raw in &answer.commands {
            self.run_command(raw).await;
        }
        Ok(())
    }

    async fn post(
        &mut self,
        tick: Tick,
        full: bool,
    ) -> Result<berth_domain::edge::async_protocol::AsyncAnswer, String> {
        let key = self.keys.get().ok_or("no Edge key")?;
        let snapshot = if tick.snapshot {
            let began = Instant::now();
            let state = self.engine.engine_state().await?;
            let containers = state.containers.len();
            let time = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_secs() as i64);
            let snapshot = docker_snapshot(state, time);
            debug!(containers, millis = millis_since(began), "snapshot made");
            Some(snapshot)
        } else {
            None
        };
        let encoding = Instant::now();
        let docker = snapshot.as_ref().map(|current| match &self.acknowledged {
            Some(previous) if !full => DockerPart::Patch {
                patch: patch_between(previous, current),
                base_hash: go_json::snapshot_hash(previous),
            },
            _ => DockerPart::Full(current),
        });
        let outbox = if docker.is_some() {
            self.outbox.take()
        } else {
            Default::default()
        };
        let text = request_body(
            tick.command.then_some(self.command_timestamp.as_str()),
            docker.as_ref().map(|d| (d, &outbox)),
            key.endpoint_id,
            &self.meta,
        );
        let gzipped = docker.is_some();
        let patch_operations = match &docker {
            Some(DockerPart::Patch { patch, .. }) => patch.as_array().map_or(0, Vec::len),
            _ => 0,
        };
        let plain_size = text.len();
        let body = if gzipped { gzip(&text) } else { text };
        debug!(
            bytes = plain_size,
            sent = body.len(),
            patch_operations,
            millis = millis_since(encoding),
            "async request"
        );
        let call = EdgeCall {
            method: Method::POST,
            path: ASYNC_PATH.into(),
            headers: self.headers(gzipped),
            body,
            timeout: CALL_TIMEOUT,
        };
        let answer = match self.api.call(call).await {
            Ok(answer) => answer,
            Err(error) => {
                self.outbox.restore(outbox);
                return Err(error.to_string());
            }
        };
        if answer.status != 200 {
            self.outbox.restore(outbox);
            if self.global {
                self.keys.assign_endpoint(0);
            }
            self.acknowledged = None;
            // A closed channel means berth is stopping; nothing to forget.
            let _ = self.workers.stacks.send(StackWork::ForgetAll).await;
            return Err(refusal_text(answer.status, &answer.body));
        }
        let parsed = match parse_answer(&answer.body) {
            Ok(parsed) => parsed,
            Err(why) => {
                self.outbox.restore(outbox);
                return Err(why);
            }
        };
        if let Some(current) = snapshot {
            if !parsed.need_full_snapshot || full {
                self.acknowledged = Some(current);
            }
        }
        Ok(parsed)
    }

    /// Hands one command over, then moves the command timestamp past it.
    async fn run_command(&mut self, raw: &Value) {
        let Some(command) = parse_command(raw) else {
            warn!(command = %raw, "a command without a timestamp was skipped");
            return;
        };
        match command.decoded {
            Ok(decoded) => {
                debug!(id = command.id, kind = %command.kind, "async command");
                self.dispatch(decoded).await;
            }
            Err(why) => {
                warn!(id = command.id, kind = %command.kind, %why, "a command was refused");
                if let Some(owed) = command.owed {
                    self.answer_refused(owed, &why).await;
                }
            }
        }
        self.command_timestamp = command.timestamp;
        if let Err(error) = self.cursor.save(&self.command_timestamp).await {
            warn!(%error, "the command timestamp cannot be saved");
        }
    }

    /// Tells Portainer of a command berth refused, in the shape it waits
    /// for, so that it does not wait for ever.
    async fn answer_refused(&self, owed: Owed, why: &str) {
        match owed {
            Owed::StackError(stack) => {
                let why = format!("failed to deploy async stack: {why}");
                self.outbox
                    .stack_status(ANY_ENDPOINT, stack, StackStatus::Error, &why)
                    .await;
            }
            Owed::ConfigFailure(config) => {
                self.outbox
                    .config_state(ANY_ENDPOINT, config, config_state::FAILURE)
                    .await;
            }
            Owed::JobLog(job) => {
                let log = format!("berth refused the job: {why}\n");
                self.outbox.job_log(ANY_ENDPOINT, job, log).await;
            }
            Owed::StackLogs(stack) => self.outbox.stack_logs(stack, Vec::new()),
        }
    }

    async fn dispatch(&self, command: Command) {
        use berth_domain::edge::async_protocol::Operation;
        let handed = match command {
            Command::EdgeStack(Operation::Remove, payload) => self
                .workers
                .stacks
                .send(StackWork::Remove(payload))
                .await
                .is_ok(),
            Command::EdgeStack(_, payload) => self
                .workers
                .stacks
                .send(StackWork::Deploy(payload))
                .await
                .is_ok(),
            Command::RemoveNormalStack { name, compose } => self
                .workers
                .stacks
                .send(StackWork::RemoveNormal { name, compose })
                .await
                .is_ok(),
            Command::EdgeJob {
                operation,
                id,
                cron,
                script,
                version,
                collect_logs,
            } => self
                .workers
                .jobs
                .send(JobWork {
                    operation,
                    id,
                    cron,
                    script,
                    version,
                    collect_logs,
                })
                .await
                .is_ok(),
            Command::EdgeConfig(operation, config) => {
                self.workers.configs.send((operation, config)).await.is_ok()
            }
            Command::EdgeLog {
                stack_id,
                stack_name,
                tail,
            } => {
                let logs = self.engine.stack_logs(&stack_name, tail).await;
                self.outbox.stack_logs(stack_id, logs);
                true
            }
            Command::Container { name, action } => {
                if let Err(why) = self.engine.container(&name, &action).await {
                    warn!(container = %name, ?action, %why, "a container command failed");
                }
                true
            }
            Command::DeleteImage {
                name,
                force,
                prune_children,
            } => {
                if let Err(why) = self.engine.delete_image(&name, force, prune_children).await {
                    warn!(image = %name, %why, "an image could not be deleted");
                }
                true
            }
            Command::DeleteVolume { name, force } => {
                if let Err(why) = self.engine.delete_volume(&name, force).await {
                    warn!(volume = %name, %why, "a volume could not be deleted");
                }
                true
            }
        };
        if !handed {
            warn!("a command's worker has stopped; the command was dropped");
        }
    }
}
