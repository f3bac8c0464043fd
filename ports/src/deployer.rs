//! Deploys Edge stacks: docker compose on a standalone engine, `docker
//! stack` on a swarm manager, manifests on a Kubernetes cluster.

use std::fmt;
use std::future::Future;
use std::path::PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackEngine {
    Compose,
    Swarm,
}

/// One stack's files on disk and how to deploy them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// `edge_<name>`.
    pub project: String,
    pub folder: PathBuf,
    /// Relative to `folder`.
    pub entry_file: String,
    /// Given to the tools' environment (compose interpolation).
    pub env: Vec<(String, String)>,
    pub engine: StackEngine,
    /// Kubernetes: the namespace of the objects that name none.
    pub namespace: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeployError {
    /// The docker or compose CLI is not installed.
    ToolMissing(String),
    /// The tool failed; the text is what it said (its stderr).
    Failed(String),
    Timeout(String),
}

impl fmt::Display for DeployError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeployError::ToolMissing(what) | DeployError::Failed(what) => f.write_str(what),
            DeployError::Timeout(what) => write!(f, "{what} took too long"),
        }
    }
}

impl std::error::Error for DeployError {}

/// Where a deployed project stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProjectState {
    Running,
    Starting,
    /// Something ended or failed; the text says what.
    Failed(String),
    Absent,
}

pub trait Deployer: Clone + Send + Sync + 'static {
    fn validate(
        &self,
        deployment: &Deployment,
    ) -> impl Future<Output = Result<(), DeployError>> + Send;
    fn pull(&self, deployment: &Deployment)
        -> impl Future<Output = Result<(), DeployError>> + Send;
    fn deploy(
        &self,
        deployment: &Deployment,
    ) -> impl Future<Output = Result<(), DeployError>> + Send;
    fn state(
        &self,
        deployment: &Deployment,
    ) -> impl Future<Output = Result<ProjectState, DeployError>> + Send;
    fn remove(
        &self,
        deployment: &Deployment,
    ) -> impl Future<Output = Result<(), DeployError>> + Send;
}
