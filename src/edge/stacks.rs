//! Edge stacks (reference §10.7): each poll answer's stack list is made
//! true: new or changed stacks are fetched, written (confined to their
//! folder), validated, deployed and awaited; stacks that left the list are
//! removed. Every step is reported to Portainer; one stack's failure never
//! stops the others.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
use crate::facts::FactsReceiver;

const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a deployed stack may take to run, as the Go agent's minute.
const RUNNING_WITHIN: Duration = Duration::from_secs(60);
/// Status reports retried on 5xx and transport errors, with backoff.
const REPORT_ATTEMPTS: u32 = 6;

struct Deployed {
    version: u64,
    deployment: Deployment,
}

pub struct EdgeStacks<D, A> {
    deployer: D,
    api: A,
    edge_id: String,
    folder: PathBuf,
    facts: FactsReceiver,
    deployed: BTreeMap<u64, Deployed>,
}

impl<D: Deployer, A: PortainerApi> EdgeStacks<D, A> {
    /// Stack files go under `folder/<stack id>`.
    pub fn new(
        deployer: D,
        api: A,
        edge_id: String,
        folder: PathBuf,
        facts: FactsReceiver,
    ) -> Self {
        EdgeStacks {
            deployer,
            api,
            edge_id,
            folder,
            facts,
            deployed: BTreeMap::new(),
        }
    }

    pub async fn apply(&mut self, work: &PollWork) {
        let Some(wanted) = parse_stack_refs(&work.answer) else {
            return;
        };
        let versions = self
            .deployed
            .iter()
            .map(|(id, d)| (*id, d.version))
            .collect();
        let changes = stack_changes(&versions, &wanted);
        for stack in changes.deploy {
            self.deploy(work.endpoint_id, &stack).await;
        }
        for id in changes.remove {
            self.remove(work.endpoint_id, id).await;
        }
    }

    fn engine(&self) -> StackEngine {
        match self.facts.borrow().role {
            SwarmRole::Manager { .. } => StackEngine::Swarm,
            _ => StackEngine::Compose,
        }
    }

    async fn deploy(&mut self, endpoint_id: u64, stack: &StackRef) {
        let id = stack.id;
        let payload = match self.fetch(endpoint_id, stack).await {
            Ok(payload) => payload,
            Err(why) => {
                // Not recorded: the next poll tries again.
                self.report(endpoint_id, id, StackStatus::Error, &why).await;
                return;
            }
        };
        let deployment = Deployment {
            project: payload.project(),
            folder: self.folder.join(id.to_string()),
            entry_file: payload.entry_file.clone(),
            env: payload
                .env
                .iter()
                .cloned()
                .chain([("PORTAINER_EDGE_ID".to_string(), self.edge_id.clone())])
                .collect(),
            engine: self.engine(),
        };
        let outcome = self.deploy_files(endpoint_id, &payload, &deployment).await;
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
                version: stack.version,
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

    async fn remove(&mut self, endpoint_id: u64, id: u64) {
        let Some(deployed) = self.deployed.remove(&id) else {
            return;
        };
        self.report(endpoint_id, id, StackStatus::Removing, "")
            .await;
        let deployment = &deployed.deployment;
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

    /// `PUT /api/edge_stacks/<id>/status`, retried on 5xx and transport
    /// errors with backoff; given up after a few tries (the next change
    /// reports again).
    async fn report(&self, endpoint_id: u64, id: u64, status: StackStatus, error: &str) {
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let body = serde_json::json!({"Error": error, "Status": status.code(),
            "EndpointID": endpoint_id, "Time": time});
        let mut delay = Duration::from_secs(1);
        for attempt in 1..=REPORT_ATTEMPTS {
            let call = EdgeCall {
                method: Method::PUT,
                path: format!("/api/edge_stacks/{id}/status"),
                headers: vec![
                    ("X-PortainerAgent-EdgeID".into(), self.edge_id.clone()),
                    ("Content-Type".into(), "application/json".into()),
                ],
                body: body.to_string().into_bytes(),
                timeout: CALL_TIMEOUT,
            };
            match self.api.call(call).await {
                Ok(answer) if answer.status < 300 => return,
                Ok(answer) if answer.status < 500 => {
                    warn!(
                        stack = id,
                        status = answer.status,
                        "Portainer refused a stack status"
                    );
                    return;
                }
                Ok(_) | Err(_) if attempt < REPORT_ATTEMPTS => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                outcome => {
                    warn!(
                        stack = id,
                        ?outcome,
                        "the stack status could not be reported"
                    );
                }
            }
        }
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

impl<D: Deployer, A: PortainerApi> PollWorker for EdgeStacks<D, A> {
    async fn apply(&mut self, work: &PollWork) {
        EdgeStacks::apply(self, work).await;
    }
}
