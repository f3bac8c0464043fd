//! `POST /v2/kubernetes/stack` (reference §6.6): a stack's manifests
//! applied to the cluster, answered `{"Output": …}` with a line an object as
//! kubectl prints them.
//!
//! The Go agent runs `kubectl apply`, which applies object after object and
//! leaves a stack half-applied at the first one the cluster refuses. berth
//! first has the API server check every object with a dry run, and applies
//! nothing when one is refused; only what the stack itself makes (a
//! CustomResourceDefinition's kind, a Namespace) cannot be checked before
//! the stack is applied, in its order.

use std::collections::HashSet;

use berth_domain::error::AgentError;
use berth_domain::kubernetes::Credential;
use berth_domain::kubernetes_stack::{self as stack, Applied, Manifest, Outcome, StackRequest};
use berth_ports::{Body, KubernetesObjects, ObjectsError};
use http::{Request, Response};
use serde_json::json;
use tracing::info;

use crate::kubernetes::api_error;
use crate::responses;

/// The largest stack accepted: the API server keeps an object to 1.5 MB,
/// and a stack of many objects is still far below this.
const MAX_STACK_BODY: usize = 16 * 1024 * 1024;

/// Answers a stack request with the objects applied as `credential`;
/// objects that name no namespace in a stack that names none go to
/// `own_namespace`.
pub async fn answer<O: KubernetesObjects>(
    objects: &O,
    credential: Credential,
    own_namespace: &str,
    request: Request<Body>,
) -> Result<Response<Body>, AgentError> {
    let body = berth_ports::read_bounded(request.into_body(), MAX_STACK_BODY)
        .await
        .map_err(|why| AgentError::new(400, "Invalid request payload", why))?;
    let request = StackRequest::from_json(&body)?;
    let manifests = stack::manifests(
        &request.manifests,
        request.namespace.as_deref(),
        own_namespace,
    )?;
    let applied = deploy(objects, &credential, &manifests).await?;
    info!(
        objects = applied.len(),
        namespace = request.namespace.as_deref().unwrap_or(own_namespace),
        token = credential.source(),
        "Kubernetes stack applied"
    );
    Ok(responses::json(
        &json!({ "Output": stack::output(&applied) }),
    ))
}

/// Checks `manifests` with a dry run, then applies them in order.
///
/// # Errors
/// The first refusal, with what was applied before it.
pub async fn deploy<O: KubernetesObjects>(
    objects: &O,
    credential: &Credential,
    manifests: &[Manifest],
) -> Result<Vec<Applied>, AgentError> {
    for manifest in manifests {
        match objects.apply(manifest, true, credential.clone()).await {
            Ok(_) => {}
            Err(ObjectsError::Refused(refusal))
                if stack::made_by_stack(manifests, manifest, &refusal) => {}
            Err(error) => return Err(failure(manifest, error, &[])),
        }
    }
    let mut applied = Vec::with_capacity(manifests.len());
    let mut established = HashSet::new();
    for manifest in manifests {
        if let Some(definition) = stack::crd_for(manifests, manifest) {
            if established.insert(definition.name.as_str()) {
                objects
                    .wait_established(&definition.name, credential.clone())
                    .await
                    .map_err(|error| failure(manifest, error, &applied))?;
            }
        }
        let change = objects
            .apply(manifest, false, credential.clone())
            .await
            .map_err(|error| failure(manifest, error, &applied))?;
        applied.push(Applied {
            label: manifest.label(),
            outcome: Outcome::of(change.before.as_ref(), &change.after),
        });
    }
    Ok(applied)
}

fn failure(manifest: &Manifest, error: ObjectsError, applied: &[Applied]) -> AgentError {
    match error {
        ObjectsError::Refused(refusal) => stack::refused(manifest, &refusal, applied),
        ObjectsError::Api(error) => api_error(error),
        ObjectsError::Timeout {
            what,
            after_seconds,
        } => AgentError::new(
            504,
            "Failed deploying",
            format!(
                "{what} took more than {after_seconds}s; applied before it: {}",
                stack::output(applied).trim_end().replace('\n', ", ")
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use berth_domain::kubernetes_stack::Refusal;
    use berth_ports::Change;

    use super::*;

    /// A cluster that knows the kinds in `known`, holds the objects in
    /// `existing` (label → resourceVersion), and records every call.
    #[derive(Clone, Default)]
    struct FakeCluster {
        known: Arc<Mutex<HashSet<String>>>,
        namespaces: Arc<Mutex<HashSet<String>>>,
        invalid: Arc<Mutex<HashSet<String>>>,
        calls: Arc<Mutex<Vec<String>>>,
    }

    impl FakeCluster {
        fn knowing(kinds: &[&str]) -> Self {
            let cluster = FakeCluster::default();
            cluster
                .known
                .lock()
                .unwrap()
                .extend(kinds.iter().map(|kind| kind.to_string()));
            cluster.namespaces.lock().unwrap().insert("default".into());
            cluster
        }

        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }
    }

    impl KubernetesObjects for FakeCluster {
        async fn apply(
            &self,
            manifest: &Manifest,
            dry_run: bool,
            _: Credential,
        ) -> Result<Change, ObjectsError> {
            let what = if dry_run { "check" } else { "apply" };
            self.calls
                .lock()
                .unwrap()
                .push(format!("{what} {}", manifest.label()));
            if !self.known.lock().unwrap().contains(&manifest.kind) {
                return Err(ObjectsError::Refused(Refusal::UnknownKind));
            }
            if manifest.kind != "Namespace"
                && !self
                    .namespaces
                    .lock()
                    .unwrap()
                    .contains(&manifest.namespace)
            {
                return Err(ObjectsError::Refused(Refusal::Refused {
                    status: 404,
                    message: format!("namespaces \"{}\" not found", manifest.namespace),
                }));
            }
            if self.invalid.lock().unwrap().contains(&manifest.name) {
                return Err(ObjectsError::Refused(Refusal::Refused {
                    status: 422,
                    message: format!("{} is invalid", manifest.name),
                }));
            }
            if !dry_run {
                match manifest.kind.as_str() {
                    "Namespace" => {
                        self.namespaces
                            .lock()
                            .unwrap()
                            .insert(manifest.name.clone());
                    }
                    "CustomResourceDefinition" => {
                        let kind = manifest.object["spec"]["names"]["kind"].as_str().unwrap();
                        self.known.lock().unwrap().insert(kind.to_string());
                    }
                    _ => {}
                }
            }
            let before = (manifest.name == "old").then(|| serde_json::json!({"old": true}));
            Ok(Change {
                before,
                after: manifest.object.clone(),
            })
        }

        async fn delete(&self, manifest: &Manifest, _: Credential) -> Result<(), ObjectsError> {
            self.calls
                .lock()
                .unwrap()
                .push(format!("delete {}", manifest.label()));
            Ok(())
        }

        async fn exists(&self, _: &Manifest, _: Credential) -> Result<bool, ObjectsError> {
            Ok(true)
        }

        async fn wait_established(&self, name: &str, _: Credential) -> Result<(), ObjectsError> {
            self.calls.lock().unwrap().push(format!("wait {name}"));
            Ok(())
        }
    }

    fn stack_of(yaml: &str) -> Vec<Manifest> {
        stack::manifests(yaml, None, "default").unwrap()
    }

    const CRD: &str = "\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: crontabs.stable.example.com}
spec: {group: stable.example.com, names: {kind: CronTab, plural: crontabs}}
";

    #[tokio::test]
    async fn a_stack_is_checked_whole_then_applied_in_order() {
        let cluster = FakeCluster::knowing(&["ConfigMap", "Deployment"]);
        let stack = stack_of(
            "{apiVersion: v1, kind: ConfigMap, metadata: {name: old}}\n---\n{apiVersion: apps/v1, kind: Deployment, metadata: {name: web}}",
        );
        let applied = deploy(&cluster, &Credential::OwnServiceAccount, &stack)
            .await
            .unwrap();
        assert_eq!(
            stack::output(&applied),
            "configmap/old configured\ndeployment.apps/web created\n"
        );
        assert_eq!(
            cluster.calls(),
            [
                "check configmap/old",
                "check deployment.apps/web",
                "apply configmap/old",
                "apply deployment.apps/web"
            ]
        );
    }

    #[tokio::test]
    async fn one_invalid_object_leaves_the_whole_stack_unapplied() {
        let cluster = FakeCluster::knowing(&["ConfigMap", "Deployment"]);
        cluster.invalid.lock().unwrap().insert("web".into());
        let stack = stack_of(
            "{apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n---\n{apiVersion: apps/v1, kind: Deployment, metadata: {name: web}}",
        );
        let refusal = deploy(&cluster, &Credential::OwnServiceAccount, &stack)
            .await
            .unwrap_err();
        assert_eq!(refusal.status(), 422);
        assert!(refusal
            .details()
            .contains("nothing of the stack was applied"));
        assert!(cluster.calls().iter().all(|call| call.starts_with("check")));
    }

    #[tokio::test]
    async fn a_kind_and_a_namespace_the_stack_makes_are_applied_after_them() {
        let cluster = FakeCluster::knowing(&["CustomResourceDefinition", "Namespace", "ConfigMap"]);
        let yaml = format!(
            "{CRD}---\n{{apiVersion: v1, kind: Namespace, metadata: {{name: made}}}}\n---\n{{apiVersion: stable.example.com/v1, kind: CronTab, metadata: {{name: tab, namespace: made}}}}\n---\n{{apiVersion: v1, kind: ConfigMap, metadata: {{name: c, namespace: made}}}}"
        );
        let applied = deploy(&cluster, &Credential::OwnServiceAccount, &stack_of(&yaml))
            .await
            .unwrap();
        assert_eq!(applied.len(), 4);
        let calls = cluster.calls();
        let wait = calls
            .iter()
            .position(|call| call == "wait crontabs.stable.example.com")
            .unwrap();
        let crd = calls
            .iter()
            .position(|call| call.starts_with("apply customresourcedefinition"))
            .unwrap();
        let tab = calls
            .iter()
            .position(|call| call == "apply crontab.stable.example.com/tab")
            .unwrap();
        assert!(crd < wait && wait < tab, "{calls:?}");
    }

    #[tokio::test]
    async fn a_kind_nobody_defines_is_refused_before_anything_is_applied() {
        let cluster = FakeCluster::knowing(&["ConfigMap"]);
        let stack = stack_of(
            "{apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n---\n{apiVersion: stable.example.com/v1, kind: CronTab, metadata: {name: tab}}",
        );
        let refusal = deploy(&cluster, &Credential::OwnServiceAccount, &stack)
            .await
            .unwrap_err();
        assert_eq!(refusal.status(), 400);
        assert!(refusal.details().contains("matches for kind \"CronTab\""));
        assert!(!cluster.calls().iter().any(|call| call.starts_with("apply")));
    }
}
