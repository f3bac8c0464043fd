//! Edge stacks (reference §10.7): a stack's files are written (confined to
//! its folder), validated, pulled when asked, deployed and awaited; a
//! stack is removed when Portainer no longer wants it. Every step is
//! reported (`Reports`); one stack's failure never stops the others.
//!
//! In sync mode each poll answer's stack list is made true (`SyncStacks`:
//! new or changed stacks are fetched from Portainer); in async mode the
//! commands carry the payloads themselves.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_domain::edge::stack::{
    parse_payload, parse_stack_refs, stack_changes, StackPayload, StackRef, StackStatus,
};
use berth_domain::engine::SwarmRole;
use berth_ports::{
    DeployError, Deployer, Deployment, EdgeCall, PortainerApi, ProjectState, StackEngine,
};
use http::Method;
use tracing::{info, warn};

use super::poll::{PollWork, PollWorker};
use super::reports::{PortainerReports, Reports};
use crate::facts::FactsReceiver;

const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a deployed stack may take to run, as the Go agent's minute.
const RUNNING_WITHIN: Duration = Duration::from_secs(60);

struct Deployed {
    version: u64,
    deployment: Deployment,
}

pub struct EdgeStacks<D, R> {
    deployer: D,
    reports: R,
    edge_id: String,
    folder: PathBuf,
    facts: FactsReceiver,
    deployed: BTreeMap<u64, Deployed>,
}

impl<D: Deployer, R: Reports> EdgeStacks<D, R> {
    /// Stack files go under `folder/<stack id>`.
    pub fn new(
        deployer: D,
        reports: R,
        edge_id: String,
        folder: PathBuf,
        facts: FactsReceiver,
    ) -> Self {
        EdgeStacks {
            deployer,
            reports,
            edge_id,
            folder,
            facts,
            deployed: BTreeMap::new(),
        }
    }

    /// The deployed stacks and their versions.
    fn versions(&self) -> BTreeMap<u64, u64> {
        self.deployed
            .iter()
            .map(|(id, d)| (*id, d.version))
            .collect()
    }

    /// Forgets every stack (Portainer refused a poll: it will list them
    /// again), leaving what runs running.
    pub fn forget_all(&mut self) {
        self.deployed.clear();
    }

    fn engine(&self) -> StackEngine {
        match self.facts.borrow().role {
            SwarmRole::Manager { .. } => StackEngine::Swarm,
            _ => StackEngine::Compose,
        }
    }

    fn deployment_of(&self, payload: &StackPayload) -> Deployment {
        Deployment {
            project: payload.project(),
            folder: self.folder.join(payload.id.to_string()),
            entry_file: payload.entry_file.clone(),
            env: payload
                .env
                .iter()
                .cloned()
                .chain([("PORTAINER_EDGE_ID".to_string(), self.edge_id.clone())])
                .collect(),
            engine: self.engine(),
        }
    }

    /// Writes, validates, pulls when asked, deploys and awaits `payload`,
    /// reporting each step; `version` is the one Portainer listed.
    pub async fn deploy(&mut self, endpoint_id: u64, version: u64, payload: &StackPayload) {
        let id = payload.id;
        let deployment = self.deployment_of(payload);
        let outcome = self.deploy_files(endpoint_id, payload, &deployment).await;
        if let Err(why) = &outcome {
            warn!(stack = id, %why, "Edge stack failed");
            self.report(endpoint_id, id, StackStatus::Error, why).await;
            if payload.retry_deploy {
                return;
            }
        }
        self.deployed.insert(
            id,
            Deployed {
                version,
                deployment,
            },
        );
    }

    async fn deploy_files(
        &self,
        endpoint_id: u64,
        payload: &StackPayload,
        deployment: &Deployment,
    ) -> Result<(), String> {
        let id = payload.id;
        write_files(&deployment.folder, payload)
            .await
            .map_err(|e| format!("failed to write the stack files: {e}"))?;
        self.report(endpoint_id, id, StackStatus::Acknowledged, "")
            .await;
        self.deployer
            .validate(deployment)
            .await
            .map_err(|e| format!("failed to validate stack: {e}"))?;
        if payload.pull {
            self.deployer
                .pull(deployment)
                .await
                .map_err(|e| format!("failed to pull image: {e}"))?;
            self.report(endpoint_id, id, StackStatus::ImagesPulled, "")
                .await;
        }
        self.report(endpoint_id, id, StackStatus::Deploying, "")
            .await;
        self.deployer
            .deploy(deployment)
            .await
            .map_err(|e| format!("failed to deploy stack: {e}"))?;
        let deadline = tokio::time::Instant::now() + RUNNING_WITHIN;
        loop {
            match self.deployer.state(deployment).await {
                Ok(ProjectState::Running) => break,
                Ok(ProjectState::Failed(why)) => return Err(why),
                Ok(state) if tokio::time::Instant::now() >= deadline => {
                    return Err(format!(
                        "the stack is not running after {}s ({state:?})",
                        RUNNING_WITHIN.as_secs()
                    ))
                }
                Err(error) if tokio::time::Instant::now() >= deadline => {
                    return Err(error.to_string())
                }
                _ => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
        info!(stack = id, project = %deployment.project, "Edge stack running");
        self.report(endpoint_id, id, StackStatus::Running, "").await;
        Ok(())
    }

    /// Removes stack `id`, if this agent deployed it.
    pub async fn remove(&mut self, endpoint_id: u64, id: u64) {
        let Some(deployed) = self.deployed.remove(&id) else {
            return;
        };
        self.remove_deployment(endpoint_id, id, &deployed.deployment)
            .await;
    }

    /// Removes the stack `payload` names, deployed by this agent or by an
    /// earlier run of it (async mode: the command carries the stack).
    pub async fn remove_payload(&mut self, endpoint_id: u64, payload: &StackPayload) {
        let deployment = match self.deployed.remove(&payload.id) {
            Some(deployed) => deployed.deployment,
            None => {
                // Deployed before a restart: compose needs the files back
                // to take the project down.
                let deployment = self.deployment_of(payload);
                if let Err(error) = write_files(&deployment.folder, payload).await {
                    warn!(stack = payload.id, %error, "cannot write the stack files to remove it");
                }
                deployment
            }
        };
        self.remove_deployment(endpoint_id, payload.id, &deployment)
            .await;
    }

    async fn remove_deployment(&mut self, endpoint_id: u64, id: u64, deployment: &Deployment) {
        self.report(endpoint_id, id, StackStatus::Removing, "")
            .await;
        let mut outcome = self.deployer.remove(deployment).await;
        if outcome.is_ok() {
            let deadline = tokio::time::Instant::now() + RUNNING_WITHIN;
            while !matches!(
                self.deployer.state(deployment).await,
                Ok(ProjectState::Absent)
            ) {
                if tokio::time::Instant::now() >= deadline {
                    outcome = Err(DeployError::Timeout("removing the stack".into()));
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        let _ = tokio::fs::remove_dir_all(&deployment.folder).await;
        match outcome {
            Ok(()) => {
                info!(stack = id, "Edge stack removed");
                self.report(endpoint_id, id, StackStatus::Removed, "").await;
            }
            Err(error) => {
                let why = format!("failed to remove stack: {error}");
                self.report(endpoint_id, id, StackStatus::Error, &why).await;
            }
        }
    }

    async fn report(&self, endpoint_id: u64, id: u64, status: StackStatus, error: &str) {
        self.reports
            .stack_status(endpoint_id, id, status, error)
            .await;
    }
}

/// Writes the payload's files under `folder`, replacing what was there.
async fn write_files(folder: &Path, payload: &StackPayload) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let _ = tokio::fs::remove_dir_all(folder).await;
    tokio::fs::create_dir_all(folder).await?;
    for file in &payload.files {
        let path = file
            .components
            .iter()
            .fold(folder.to_path_buf(), |p, c| p.join(c));
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        tokio::fs::write(&path, &file.content).await?;
        tokio::fs::set_permissions(&path, std::fs::Permissions::from_mode(file.mode)).await?;
    }
    Ok(())
}

/// Sync mode: each poll answer's stack list, made true; new and changed
/// stacks fetched from Portainer.
pub struct SyncStacks<D, A> {
    stacks: EdgeStacks<D, PortainerReports<A>>,
    api: A,
    edge_id: String,
}

impl<D: Deployer, A: PortainerApi + Clone> SyncStacks<D, A> {
    pub fn new(
        deployer: D,
        api: A,
        edge_id: String,
        folder: PathBuf,
        facts: FactsReceiver,
    ) -> Self {
        let reports = PortainerReports::new(api.clone(), edge_id.clone());
        SyncStacks {
            stacks: EdgeStacks::new(deployer, reports, edge_id.clone(), folder, facts),
            api,
            edge_id,
        }
    }

    pub async fn apply(&mut self, work: &PollWork) {
        let Some(wanted) = parse_stack_refs(&work.answer) else {
            return;
        };
        let changes = stack_changes(&self.stacks.versions(), &wanted);
        for stack in changes.deploy {
            match self.fetch(work.endpoint_id, &stack).await {
                Ok(payload) => {
                    self.stacks
                        .deploy(work.endpoint_id, stack.version, &payload)
                        .await;
                }
                // Not recorded: the next poll tries again.
                Err(why) => {
                    self.stacks
                        .report(work.endpoint_id, stack.id, StackStatus::Error, &why)
                        .await;
                }
            }
        }
        for id in changes.remove {
            self.stacks.remove(work.endpoint_id, id).await;
        }
    }

    async fn fetch(&self, endpoint_id: u64, stack: &StackRef) -> Result<StackPayload, String> {
        let call = EdgeCall {
            method: Method::GET,
            path: format!(
                "/api/endpoints/{endpoint_id}/edge/stacks/{}?version={}",
                stack.id, stack.version
            ),
            headers: vec![("X-PortainerAgent-EdgeID".into(), self.edge_id.clone())],
            body: Vec::new(),
            timeout: CALL_TIMEOUT,
        };
        let answer = self.api.call(call).await.map_err(|e| e.to_string())?;
        if answer.status != 200 {
            return Err(berth_domain::edge::status::refusal_text(
                answer.status,
                &answer.body,
            ));
        }
        parse_payload(&answer.body).map_err(|e| e.to_string())
    }
}

impl<D: Deployer, A: PortainerApi + Clone> PollWorker for SyncStacks<D, A> {
    async fn apply(&mut self, work: &PollWork) {
        SyncStacks::apply(self, work).await;
    }
}
