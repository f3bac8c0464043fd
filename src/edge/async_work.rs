//! The work async commands hand over, each kind on a task of its own so a
//! long stack deployment never holds up polling, jobs or configurations:
//! stacks and normal-stack removals in order, job schedules kept as the
//! commands leave them, configurations applied. Every result goes to the
//! outbox, for the next snapshot.

use std::collections::BTreeMap;
use std::path::PathBuf;

use berth_domain::edge::async_protocol::{EdgeConfig, Operation};
use berth_domain::edge::schedule::parse_schedules;
use berth_domain::edge::stack::StackPayload;
use berth_domain::engine::SwarmRole;
use berth_ports::{Deployer, Deployment, Files, Scheduler, ScriptHost, StackEngine};
use serde_json::json;
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::configs::EdgeConfigs;
use super::jobs::EdgeJobs;
use super::poll::sleep_until;
use super::reports::{Reports, SharedOutbox};
use super::stacks::EdgeStacks;
use crate::facts::FactsReceiver;

/// The endpoint an outbox report names: the outbox does not need one.
pub(super) const ANY_ENDPOINT: u64 = 0;

pub enum StackWork {
    Deploy(StackPayload),
    Remove(StackPayload),
    /// A stack Portainer deployed without Edge (`normalStack`): its name
    /// and compose file.
    RemoveNormal {
        name: String,
        compose: String,
    },
    /// Portainer refused a request: what was deployed is forgotten, as
    /// the Go agent forgets it; later commands carry their stacks whole.
    ForgetAll,
}

/// Runs stack work in the order it came, and stacks' retries when due.
pub async fn run_stacks<D: Deployer, F: Files>(
    mut stacks: EdgeStacks<D, SharedOutbox, F>,
    deployer: D,
    facts: FactsReceiver,
    folder: PathBuf,
    mut work: mpsc::Receiver<StackWork>,
) {
    loop {
        let next = tokio::select! {
            next = work.recv() => next,
            () = sleep_until(stacks.next_retry()) => {
                stacks.retry_due().await;
                continue;
            }
        };
        let Some(next) = next else {
            return;
        };
        match next {
            StackWork::Deploy(payload) => stacks.deploy(ANY_ENDPOINT, 0, &payload).await,
            StackWork::Remove(payload) => stacks.remove_payload(ANY_ENDPOINT, &payload).await,
            StackWork::ForgetAll => stacks.forget_all(),
            StackWork::RemoveNormal { name, compose } => {
                let engine = match facts.borrow().role {
                    SwarmRole::Manager { .. } => StackEngine::Swarm,
                    _ => StackEngine::Compose,
                };
                let folder = folder.join(format!("normal_{name}"));
                let outcome = remove_normal_stack(&deployer, &name, &compose, folder, engine).await;
                match outcome {
                    Ok(()) => info!(stack = %name, "stack removed"),
                    Err(why) => warn!(stack = %name, %why, "the stack could not be removed"),
                }
            }
        }
    }
}

async fn remove_normal_stack<D: Deployer>(
    deployer: &D,
    name: &str,
    compose: &str,
    folder: PathBuf,
    engine: StackEngine,
) -> Result<(), String> {
    // compose needs the file to take the project down; written, then gone.
    tokio::fs::create_dir_all(&folder)
        .await
        .map_err(|e| e.to_string())?;
    tokio::fs::write(folder.join("docker-compose.yml"), compose)
        .await
        .map_err(|e| e.to_string())?;
    let deployment = Deployment {
        project: name.to_string(),
        folder: folder.clone(),
        entry_file: "docker-compose.yml".into(),
        env: Vec::new(),
        engine,
        namespace: None,
    };
    let outcome = deployer
        .remove(&deployment)
        .await
        .map_err(|e| e.to_string());
    let _ = tokio::fs::remove_dir_all(&folder).await;
    outcome
}

/// A job command: the schedule as the sync poll lists one.
pub struct JobWork {
    pub operation: Operation,
    pub id: u64,
    pub cron: String,
    pub script: String,
    pub version: u64,
    pub collect_logs: bool,
}

/// Keeps the schedules the commands leave, and the scheduler in step.
pub async fn run_jobs<S: Scheduler, H: ScriptHost>(
    mut jobs: EdgeJobs<S, H, SharedOutbox>,
    mut work: mpsc::Receiver<JobWork>,
) {
    let mut wanted: BTreeMap<u64, serde_json::Value> = BTreeMap::new();
    while let Some(job) = work.recv().await {
        match job.operation {
            Operation::Add | Operation::Replace => {
                wanted.insert(
                    job.id,
                    json!({"Id": job.id, "CronExpression": job.cron, "Script": job.script,
                           "Version": job.version, "CollectLogs": job.collect_logs}),
                );
            }
            Operation::Remove => {
                wanted.remove(&job.id);
            }
        }
        let answer = json!({"schedules": wanted.values().collect::<Vec<_>>()});
        if let Some((schedules, bad)) = parse_schedules(&answer) {
            jobs.reconcile(ANY_ENDPOINT, &schedules, bad).await;
        }
    }
}

/// Applies configuration commands, their states to the outbox.
pub async fn run_configs<F: Files>(
    configs: EdgeConfigs<F>,
    outbox: SharedOutbox,
    mut work: mpsc::Receiver<(Operation, EdgeConfig)>,
) {
    while let Some((operation, config)) = work.recv().await {
        let state = configs.apply(operation, &config).await;
        outbox.config_state(ANY_ENDPOINT, config.id, state).await;
    }
}
