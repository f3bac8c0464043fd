//! Edge stacks on a Kubernetes cluster: the `Deployer` port made of the
//! `KubernetesObjects` port. A stack's entry file holds its manifests; it
//! is checked whole with a dry run and applied server-side as
//! `POST /v2/kubernetes/stack` applies (`kubernetes_stack::deploy`), on the
//! pod's own service account, as the Go agent's in-cluster kubectl does.
//! It runs once every object exists, and is gone once none does.

use berth_domain::kubernetes::Credential;
use berth_domain::kubernetes_stack::{self as stack, Manifest};
use berth_ports::{DeployError, Deployer, Deployment, KubernetesObjects, ProjectState};
use tracing::info;

use crate::kubernetes_stack::deploy;

#[derive(Clone)]
pub struct ManifestDeployer<O> {
    objects: O,
    /// Where objects go that name no namespace, in a stack that names none
    /// (Portainer's "use the manifests' namespaces").
    own_namespace: String,
}

impl<O: KubernetesObjects> ManifestDeployer<O> {
    pub fn new(objects: O, own_namespace: String) -> Self {
        ManifestDeployer {
            objects,
            own_namespace,
        }
    }

    async fn manifests(&self, deployment: &Deployment) -> Result<Vec<Manifest>, DeployError> {
        let path = deployment.folder.join(&deployment.entry_file);
        let yaml = tokio::fs::read_to_string(&path)
            .await
            .map_err(|error| DeployError::Failed(format!("{}: {error}", path.display())))?;
        stack::manifests(&yaml, deployment.namespace.as_deref(), &self.own_namespace)
            .map_err(|error| DeployError::Failed(error.details().to_string()))
    }
}

impl<O: KubernetesObjects> Deployer for ManifestDeployer<O> {
    async fn validate(&self, deployment: &Deployment) -> Result<(), DeployError> {
        self.manifests(deployment).await.map(|_| ())
    }

    /// The kubelet pulls a pod's images; there is nothing to pull first.
    async fn pull(&self, _: &Deployment) -> Result<(), DeployError> {
        Ok(())
    }

    async fn deploy(&self, deployment: &Deployment) -> Result<(), DeployError> {
        let manifests = self.manifests(deployment).await?;
        let applied = deploy(&self.objects, &Credential::OwnServiceAccount, &manifests)
            .await
            .map_err(|error| DeployError::Failed(error.details().to_string()))?;
        info!(
            stack = %deployment.project,
            output = %stack::output(&applied).trim_end(),
            "Edge stack applied to the cluster"
        );
        Ok(())
    }

    async fn state(&self, deployment: &Deployment) -> Result<ProjectState, DeployError> {
        let manifests = self.manifests(deployment).await?;
        let mut existing = 0;
        for manifest in &manifests {
            let found = self
                .objects
                .exists(manifest, Credential::OwnServiceAccount)
                .await
                .map_err(|error| DeployError::Failed(error.to_string()))?;
            existing += usize::from(found);
        }
        Ok(match existing {
            0 => ProjectState::Absent,
            all if all == manifests.len() => ProjectState::Running,
            _ => ProjectState::Starting,
        })
    }

    /// Deletes the stack's objects, the last applied first (a namespace or
    /// a definition after what is in it).
    async fn remove(&self, deployment: &Deployment) -> Result<(), DeployError> {
        let manifests = self.manifests(deployment).await?;
        for manifest in manifests.iter().rev() {
            self.objects
                .delete(manifest, Credential::OwnServiceAccount)
                .await
                .map_err(|error| DeployError::Failed(format!("{}: {error}", manifest.label())))?;
        }
        Ok(())
    }
}
