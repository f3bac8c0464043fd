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

use berth_domain::edge::backoff::Backoff;
use berth_domain::edge::retry::{after_failure, Retry, PASS};
use berth_domain::edge::stack::{
    parse_listed_payload, parse_stack_refs, stack_changes, StackPayload, StackRef, StackStatus,
    UNPACKER_FOLDER,
};
use berth_domain::engine::SwarmRole;
use berth_ports::{
    DeployError, Deployer, Deployment, EdgeCall, Files, PortainerApi, ProjectState, StackEngine,
};
use http::Method;
use tokio::time::Instant;
use tracing::{info, warn};

use super::host_files::{remove_tree_on_host, save_on_host};
use super::poll::{PollWork, PollWorker};
use super::reports::{PortainerReports, Reports};
use crate::facts::FactsReceiver;
use crate::registry_lookup::CredentialsInUse;

const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a deployed stack may take to run, as the Go agent's minute.
const RUNNING_WITHIN: Duration = Duration::from_secs(60);

struct Deployed {
    version: u64,
    deployment: Deployment,
    /// A relative-path stack's copy on the host, removed with the stack.
    host_copy: Option<Vec<String>>,
}

/// A stack whose pull or deploy failed and is tried again later.
struct Retrying {
    endpoint_id: u64,
    version: u64,
    payload: StackPayload,
    tries: u32,
    first_failure: Instant,
    due: Instant,
    /// Its images are pulled; only the deploy is left.
    pulled: bool,
    /// The error last reported, so a retry failing the same way is not
    /// reported again.
    reported: String,
}

/// Which step failed, and whether trying again later may help.
struct Failure {
    why: String,
    retry: bool,
    pulled: bool,
}

/// What Edge stacks need besides the deployer and where reports go.
#[derive(Clone)]
pub struct StackSettings<F> {
    pub edge_id: String,
    /// Stack files go under `folder/<stack id>`.
    pub folder: PathBuf,
    pub facts: FactsReceiver,
    /// The host root, for relative-path stacks' copy on the host.
    pub host: F,
    /// `AGENT_HOST_ROOT` is `/`: berth's own paths are the host's, and
    /// the copy on the host is the files themselves.
    pub host_is_root: bool,
    /// Served to the credential helper while a stack deploys.
    pub credentials: CredentialsInUse,
}

pub struct EdgeStacks<D, R, F> {
    deployer: D,
    reports: R,
    settings: StackSettings<F>,
    deployed: BTreeMap<u64, Deployed>,
    retrying: BTreeMap<u64, Retrying>,
}

impl<D: Deployer, R: Reports, F: Files> EdgeStacks<D, R, F> {
    pub fn new(deployer: D, reports: R, settings: StackSettings<F>) -> Self {
        EdgeStacks {
            deployer,
            reports,
            settings,
            deployed: BTreeMap::new(),
            retrying: BTreeMap::new(),
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
        self.retrying.clear();
    }

    fn engine(&self) -> StackEngine {
        match self.settings.facts.borrow().role {
            SwarmRole::Manager { .. } => StackEngine::Swarm,
            _ => StackEngine::Compose,
        }
    }

    /// Where a stack's files are: its folder under `DATA_PATH`, or for a
    /// relative-path stack `<FilesystemPath>/portainer-compose-unpacker/<id>`,
    /// the same path as the copy on the host, as the Go agent keeps them,
    /// so relative bind mounts and `env_file`s resolve alike for compose
    /// and for the engine.
    fn folder_of(&self, payload: &StackPayload) -> PathBuf {
        match &payload.host_folder {
            Some(components) => host_copy(components, payload.id)
                .iter()
                .fold(PathBuf::from("/"), |path, c| path.join(c)),
            None => self.settings.folder.join(payload.id.to_string()),
        }
    }

    fn deployment_of(&self, payload: &StackPayload) -> Deployment {
        Deployment {
            project: payload.project(),
            folder: self.folder_of(payload),
            entry_file: payload.entry_file.clone(),
            env: payload
                .env
                .iter()
                .cloned()
                .chain([(
                    "PORTAINER_EDGE_ID".to_string(),
                    self.settings.edge_id.clone(),
                )])
                .collect(),
            engine: self.engine(),
            namespace: payload.namespace.clone(),
        }
    }

    /// Writes, validates, pulls when asked, deploys and awaits `payload`,
    /// reporting each step; `version` is the one Portainer listed. A pull
    /// that fails, or a deploy that fails when the stack asks for
    /// `RetryDeploy`, is tried again at the Go agent's pace
    /// ([`berth_domain::edge::retry`]).
    pub async fn deploy(&mut self, endpoint_id: u64, version: u64, payload: &StackPayload) {
        // A new version (or a re-pull) starts over.
        self.retrying.remove(&payload.id);
        let deployment = self.deployment_of(payload);
        let outcome = match self.write(endpoint_id, payload, &deployment).await {
            Ok(()) => {
                self.deploy_files(endpoint_id, payload, &deployment, false)
                    .await
            }
            Err(why) => Err(Failure {
                why,
                retry: false,
                pulled: false,
            }),
        };
        self.settle(endpoint_id, version, payload, deployment, outcome, None)
            .await;
    }

    /// When the next retry is due, if any stack waits for one.
    pub fn next_retry(&self) -> Option<Instant> {
        self.retrying.values().map(|r| r.due).min()
    }

    /// Tries again every stack whose retry is due.
    pub async fn retry_due(&mut self) {
        let now = Instant::now();
        let due: Vec<u64> = self
            .retrying
            .iter()
            .filter(|(_, r)| r.due <= now)
            .map(|(id, _)| *id)
            .collect();
        for id in due {
            let Some(retrying) = self.retrying.remove(&id) else {
                continue;
            };
            info!(
                stack = id,
                tries = retrying.tries,
                "trying the Edge stack again"
            );
            let payload = retrying.payload.clone();
            let deployment = self.deployment_of(&payload);
            let outcome = self
                .deploy_files(retrying.endpoint_id, &payload, &deployment, retrying.pulled)
                .await;
            self.settle(
                retrying.endpoint_id,
                retrying.version,
                &payload,
                deployment,
                outcome,
                Some(retrying),
            )
            .await;
        }
    }

    /// Records where a deploy attempt left the stack: deployed, waiting
    /// for a retry, or failed for good (reported, and kept at this version
    /// so the next poll does not try it again).
    async fn settle(
        &mut self,
        endpoint_id: u64,
        version: u64,
        payload: &StackPayload,
        deployment: Deployment,
        outcome: Result<(), Failure>,
        before: Option<Retrying>,
    ) {
        let id = payload.id;
        if let Err(failure) = outcome {
            let (tries, first_failure, reported) = match before {
                Some(before) => (before.tries + 1, before.first_failure, before.reported),
                None => (1, Instant::now(), String::new()),
            };
            let next = if failure.retry {
                after_failure(tries, first_failure.elapsed())
            } else {
                Retry::GiveUp
            };
            match next {
                Retry::After(wait) => {
                    warn!(stack = id, tries, why = %failure.why, "Edge stack failed; trying again in {}s", wait.as_secs());
                    // Portainer hears of the failure once, not on every try.
                    if failure.why != reported {
                        self.report(endpoint_id, id, StackStatus::Error, &failure.why)
                            .await;
                    }
                    self.retrying.insert(
                        id,
                        Retrying {
                            endpoint_id,
                            version,
                            payload: payload.clone(),
                            tries,
                            first_failure,
                            due: Instant::now() + wait,
                            pulled: failure.pulled,
                            reported: failure.why,
                        },
                    );
                }
                Retry::GiveUp => {
                    warn!(stack = id, tries, why = %failure.why, "Edge stack failed");
                    self.report(endpoint_id, id, StackStatus::Error, &failure.why)
                        .await;
                }
            }
        }
        self.deployed.insert(
            id,
            Deployed {
                version,
                deployment,
                host_copy: payload.host_folder.as_ref().map(|c| host_copy(c, id)),
            },
        );
    }

    /// Writes the stack's files, and for a relative-path stack its copy on
    /// the host; Portainer hears Acknowledged.
    async fn write(
        &self,
        endpoint_id: u64,
        payload: &StackPayload,
        deployment: &Deployment,
    ) -> Result<(), String> {
        write_files(&deployment.folder, payload)
            .await
            .map_err(|e| format!("failed to write the stack files: {e}"))?;
        if let (Some(components), false) = (&payload.host_folder, self.settings.host_is_root) {
            let copy = host_copy(components, payload.id);
            remove_tree_on_host(&self.settings.host, &copy).await?;
            for file in &payload.files {
                save_on_host(
                    &self.settings.host,
                    &copy,
                    &file.components,
                    file.content.clone(),
                    file.mode,
                )
                .await
                .map_err(|e| format!("failed to copy the stack files to the host: {e}"))?;
            }
        }
        self.report(endpoint_id, payload.id, StackStatus::Acknowledged, "")
            .await;
        Ok(())
    }

    /// Validates, pulls (unless `pulled`), deploys and awaits a stack
    /// whose files are written, with its registry credentials served to
    /// the credential helper meanwhile.
    async fn deploy_files(
        &self,
        endpoint_id: u64,
        payload: &StackPayload,
        deployment: &Deployment,
        pulled: bool,
    ) -> Result<(), Failure> {
        let id = payload.id;
        let _serving = self.settings.credentials.serve(payload.credentials.clone());
        let fail = |why: String, retry: bool, pulled: bool| Failure { why, retry, pulled };
        self.deployer
            .validate(deployment)
            .await
            .map_err(|e| fail(format!("failed to validate stack: {e}"), false, pulled))?;
        if payload.pull && !pulled {
            self.deployer
                .pull(deployment)
                .await
                .map_err(|e| fail(format!("failed to pull image: {e}"), true, false))?;
            self.report(endpoint_id, id, StackStatus::ImagesPulled, "")
                .await;
        }
        self.report(endpoint_id, id, StackStatus::Deploying, "")
            .await;
        let retry = payload.retry_deploy;
        self.deployer
            .deploy(deployment)
            .await
            .map_err(|e| fail(format!("failed to deploy stack: {e}"), retry, true))?;
        // The engine took the stack; Portainer's "deployments received"
        // counts this status, then Running follows once it runs.
        self.report(endpoint_id, id, StackStatus::DeploymentReceived, "")
            .await;
        let deadline = Instant::now() + RUNNING_WITHIN;
        loop {
            match self.deployer.state(deployment).await {
                Ok(ProjectState::Running) => break,
                Ok(ProjectState::Failed(why)) => return Err(fail(why, retry, true)),
                Ok(state) if Instant::now() >= deadline => {
                    let why = format!(
                        "the stack is not running after {}s ({state:?})",
                        RUNNING_WITHIN.as_secs()
                    );
                    return Err(fail(why, retry, true));
                }
                Err(error) if Instant::now() >= deadline => {
                    return Err(fail(error.to_string(), retry, true))
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
        self.retrying.remove(&id);
        let Some(deployed) = self.deployed.remove(&id) else {
            return;
        };
        self.remove_deployment(endpoint_id, id, &deployed.deployment, deployed.host_copy)
            .await;
    }

    /// Removes the stack `payload` names, deployed by this agent or by an
    /// earlier run of it (async mode: the command carries the stack).
    pub async fn remove_payload(&mut self, endpoint_id: u64, payload: &StackPayload) {
        self.retrying.remove(&payload.id);
        let host_copy = payload
            .host_folder
            .as_ref()
            .map(|c| host_copy(c, payload.id));
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
        self.remove_deployment(endpoint_id, payload.id, &deployment, host_copy)
            .await;
    }

    async fn remove_deployment(
        &mut self,
        endpoint_id: u64,
        id: u64,
        deployment: &Deployment,
        host_copy: Option<Vec<String>>,
    ) {
        self.report(endpoint_id, id, StackStatus::Removing, "")
            .await;
        let mut outcome = self.deployer.remove(deployment).await;
        if outcome.is_ok() {
            let deadline = Instant::now() + RUNNING_WITHIN;
            while !matches!(
                self.deployer.state(deployment).await,
                Ok(ProjectState::Absent)
            ) {
                if Instant::now() >= deadline {
                    outcome = Err(DeployError::Timeout("removing the stack".into()));
                    break;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
        let _ = tokio::fs::remove_dir_all(&deployment.folder).await;
        if let (Some(copy), false) = (host_copy, self.settings.host_is_root) {
            if let Err(why) = remove_tree_on_host(&self.settings.host, &copy).await {
                warn!(stack = id, %why, "cannot remove the stack's files from the host");
            }
        }
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

/// A relative-path stack's folder on the host, as components under the
/// host root: `<FilesystemPath>/portainer-compose-unpacker/<id>`.
fn host_copy(filesystem_path: &[String], id: u64) -> Vec<String> {
    let mut components = filesystem_path.to_vec();
    components.push(UNPACKER_FOLDER.to_string());
    components.push(id.to_string());
    components
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
pub struct SyncStacks<D, A, F> {
    stacks: EdgeStacks<D, PortainerReports<A>, F>,
    api: A,
    edge_id: String,
    /// Stacks whose payload Portainer did not serve: asked again only
    /// when their wait is over (or their version changes), not on every
    /// poll.
    unfetched: BTreeMap<u64, Unfetched>,
}

/// A listed stack whose payload could not be had.
struct Unfetched {
    version: u64,
    tries: u32,
    due: Instant,
    /// What Portainer was last told, so the same failure is told once.
    reported: String,
}

/// How long after a failed fetch a stack's payload is asked for again:
/// doubling from the Go agent's pass up to five minutes.
const FETCH_BACKOFF: Backoff = Backoff {
    base: PASS,
    cap: Duration::from_secs(300),
};

impl<D: Deployer, A: PortainerApi + Clone, F: Files> SyncStacks<D, A, F> {
    pub fn new(deployer: D, api: A, settings: StackSettings<F>) -> Self {
        let edge_id = settings.edge_id.clone();
        let reports = PortainerReports::new(api.clone(), edge_id.clone());
        SyncStacks {
            stacks: EdgeStacks::new(deployer, reports, settings),
            api,
            edge_id,
            unfetched: BTreeMap::new(),
        }
    }

    pub async fn apply(&mut self, work: &PollWork) {
        let Some(wanted) = parse_stack_refs(&work.answer) else {
            return;
        };
        self.unfetched
            .retain(|id, _| wanted.iter().any(|w| w.id == *id));
        let changes = stack_changes(&self.stacks.versions(), &wanted);
        for stack in changes.deploy {
            if self
                .unfetched
                .get(&stack.id)
                .is_some_and(|u| u.version == stack.version && Instant::now() < u.due)
            {
                continue;
            }
            match self.fetch(work.endpoint_id, &stack).await {
                Ok(payload) => {
                    self.unfetched.remove(&stack.id);
                    self.stacks
                        .deploy(work.endpoint_id, stack.version, &payload)
                        .await;
                }
                Err(why) => self.fetch_failed(work.endpoint_id, &stack, why).await,
            }
        }
        for id in changes.remove {
            self.stacks.remove(work.endpoint_id, id).await;
        }
    }

    /// Not recorded as deployed: a later poll asks again once the stack's
    /// wait is over. Portainer hears of each new reason once.
    async fn fetch_failed(&mut self, endpoint_id: u64, stack: &StackRef, why: String) {
        let (tries, reported) = match self.unfetched.remove(&stack.id) {
            Some(before) if before.version == stack.version => (before.tries + 1, before.reported),
            _ => (1, String::new()),
        };
        let wait = FETCH_BACKOFF.delay(tries - 1, 1.0);
        warn!(stack = stack.id, version = stack.version, tries, %why,
            "cannot fetch the Edge stack from Portainer; asking again in {}s", wait.as_secs());
        if why != reported {
            self.stacks
                .report(endpoint_id, stack.id, StackStatus::Error, &why)
                .await;
        }
        self.unfetched.insert(
            stack.id,
            Unfetched {
                version: stack.version,
                tries,
                due: Instant::now() + wait,
                reported: why,
            },
        );
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
        parse_listed_payload(stack, &answer.body).map_err(|e| e.to_string())
    }
}

impl<D: Deployer, A: PortainerApi + Clone, F: Files> PollWorker for SyncStacks<D, A, F> {
    async fn apply(&mut self, work: &PollWork) {
        SyncStacks::apply(self, work).await;
    }

    fn wake_at(&self) -> Option<Instant> {
        self.stacks.next_retry()
    }

    async fn wake(&mut self) {
        self.stacks.retry_due().await;
    }
}
