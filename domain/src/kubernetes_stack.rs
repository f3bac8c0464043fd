//! A Kubernetes stack, `POST /v2/kubernetes/stack` (reference §6.6): what
//! the request asks for, the objects its manifests hold, the namespace each
//! goes to, which of them the cluster cannot check before the stack itself
//! makes their kind or namespace, and the lines reporting what was applied.
//!
//! The Go agent pipes the YAML into `kubectl apply`; berth applies each
//! object server-side through the `KubernetesObjects` port, after a dry run
//! of the whole stack, and reports as kubectl does
//! (`deployment.apps/web created`).

use std::fmt;

use serde::Deserialize;
use serde_json::Value;

use crate::error::AgentError;

/// The field manager berth's server-side applies are recorded under.
pub const FIELD_MANAGER: &str = "berth";

/// The namespace of a namespaced object that names none, in a stack that
/// names none, when the pod's own namespace is not known either. (kubectl
/// in a pod, as the Go agent runs it, takes the pod's namespace.)
pub const DEFAULT_NAMESPACE: &str = "default";

/// `{"StackConfig": "<yaml>", "Namespace": "<namespace or empty>"}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackRequest {
    pub manifests: String,
    /// `None` when the request leaves it empty.
    pub namespace: Option<String>,
}

#[derive(Deserialize)]
struct Payload {
    #[serde(rename = "StackConfig", default)]
    stack_config: String,
    #[serde(rename = "Namespace", default)]
    namespace: String,
}

impl StackRequest {
    /// # Errors
    /// `400 "Invalid request payload"` as the Go agent answers: a body that
    /// is not the payload, or no manifests in it.
    pub fn from_json(body: &[u8]) -> Result<StackRequest, AgentError> {
        let payload: Payload = serde_json::from_slice(body)
            .map_err(|error| AgentError::new(400, "Invalid request payload", error.to_string()))?;
        if payload.stack_config.is_empty() {
            return Err(AgentError::new(
                400,
                "Invalid request payload",
                "Missing deployment config",
            ));
        }
        Ok(StackRequest {
            manifests: payload.stack_config,
            namespace: Some(payload.namespace).filter(|namespace| !namespace.is_empty()),
        })
    }
}

/// One object of a stack, as it is to be applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    /// Where the object goes if its kind is namespaced: its own
    /// `metadata.namespace`, else the stack's, else the agent's own.
    pub namespace: String,
    /// The whole object, `metadata.namespace` set to `namespace`.
    pub object: Value,
}

impl Manifest {
    /// The API group (`apps` of `apps/v1`; empty for the core group).
    pub fn group(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map_or("", |(group, _)| group)
    }

    pub fn version(&self) -> &str {
        self.api_version
            .rsplit_once('/')
            .map_or(self.api_version.as_str(), |(_, version)| version)
    }

    /// The object as kubectl names it in its output: `deployment.apps/web`,
    /// `configmap/settings`.
    pub fn label(&self) -> String {
        let kind = self.kind.to_lowercase();
        match self.group() {
            "" => format!("{kind}/{}", self.name),
            group => format!("{kind}.{group}/{}", self.name),
        }
    }

    /// For a CustomResourceDefinition, the group and kind it defines.
    fn defines(&self) -> Option<(&str, &str)> {
        if self.group() != "apiextensions.k8s.io" || self.kind != "CustomResourceDefinition" {
            return None;
        }
        let spec = self.object.get("spec")?;
        Some((
            spec.get("group")?.as_str()?,
            spec.get("names")?.get("kind")?.as_str()?,
        ))
    }
}

/// The objects of `yaml`, in their order: multi-document YAML (or JSON),
/// each document an object or a `List` of them. An object that names no
/// namespace goes to `stack_namespace`, else to `own_namespace` (the
/// agent's pod's).
///
/// # Errors
/// `400 "Invalid request payload"` naming the document when one does not
/// parse, is not an object, lacks `apiVersion`, `kind` or `metadata.name`,
/// or names a namespace other than the stack's. Nothing is applied then.
pub fn manifests(
    yaml: &str,
    stack_namespace: Option<&str>,
    own_namespace: &str,
) -> Result<Vec<Manifest>, AgentError> {
    let invalid = |number: usize, why: String| {
        AgentError::new(
            400,
            "Invalid request payload",
            format!("document {number}: {why}"),
        )
    };
    let mut found = Vec::new();
    for (index, document) in yaml_serde::Deserializer::from_str(yaml).enumerate() {
        let number = index + 1;
        let value =
            Value::deserialize(document).map_err(|error| invalid(number, error.to_string()))?;
        for object in objects_of(value) {
            let manifest = manifest(object, stack_namespace, own_namespace)
                .map_err(|why| invalid(number, why))?;
            found.push(manifest);
        }
    }
    if found.is_empty() {
        return Err(AgentError::new(
            400,
            "Invalid request payload",
            "The deployment config holds no Kubernetes object",
        ));
    }
    Ok(found)
}

/// A document's objects: none for an empty document, the items of a list
/// (`kind: List`, `ConfigMapList`…), else the document itself.
fn objects_of(document: Value) -> Vec<Value> {
    match document {
        Value::Null => Vec::new(),
        Value::Object(mut object)
            if object
                .get("kind")
                .and_then(Value::as_str)
                .is_some_and(|kind| kind.ends_with("List"))
                && object.get("items").is_some_and(Value::is_array) =>
        {
            match object.remove("items") {
                Some(Value::Array(items)) => items.into_iter().flat_map(objects_of).collect(),
                _ => Vec::new(),
            }
        }
        other => vec![other],
    }
}

fn manifest(
    mut object: Value,
    stack_namespace: Option<&str>,
    own_namespace: &str,
) -> Result<Manifest, String> {
    let text = |object: &Value, pointer: &str| {
        object
            .pointer(pointer)
            .and_then(Value::as_str)
            .filter(|value| !value.is_empty())
            .map(str::to_string)
    };
    if !object.is_object() {
        return Err(
            "not a Kubernetes object (a mapping with apiVersion, kind and metadata)".into(),
        );
    }
    let missing: Vec<&str> = [("/apiVersion", "apiVersion"), ("/kind", "kind")]
        .into_iter()
        .filter(|(pointer, _)| text(&object, pointer).is_none())
        .map(|(_, field)| field)
        .collect();
    if !missing.is_empty() {
        return Err(format!("{} not set", missing.join(" and ")));
    }
    let api_version = text(&object, "/apiVersion").unwrap_or_default();
    let kind = text(&object, "/kind").unwrap_or_default();
    let name = text(&object, "/metadata/name").ok_or_else(|| {
        format!("a {kind} without metadata.name (server-side apply needs a name)")
    })?;
    let named = text(&object, "/metadata/namespace");
    let namespace = match (named, stack_namespace) {
        (Some(own), Some(stack)) if own != stack => {
            return Err(format!(
                "{kind} {name:?} names namespace {own:?}, the stack's namespace is {stack:?}"
            ))
        }
        (Some(own), _) => own,
        (None, Some(stack)) => stack.to_string(),
        (None, None) => own_namespace.to_string(),
    };
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.insert("namespace".into(), Value::String(namespace.clone()));
    }
    Ok(Manifest {
        api_version,
        kind,
        name,
        namespace,
        object,
    })
}

/// Whether a dry run cannot check `manifest` because the stack itself
/// makes what it needs: its kind (a CustomResourceDefinition in the
/// stack), or its namespace (a Namespace in the stack), that the cluster
/// does not have yet. The real apply checks it, in the stack's order.
pub fn made_by_stack(stack: &[Manifest], manifest: &Manifest, refusal: &Refusal) -> bool {
    match refusal {
        Refusal::UnknownKind => crd_for(stack, manifest).is_some(),
        Refusal::Refused { status: 404, .. } => stack.iter().any(|other| {
            other.api_version == "v1"
                && other.kind == "Namespace"
                && other.name == manifest.namespace
        }),
        Refusal::Refused { .. } => false,
    }
}

/// The CustomResourceDefinition in `stack` that defines `manifest`'s kind,
/// whose name the apply waits on (until it is established) before it
/// applies the object.
pub fn crd_for<'a>(stack: &'a [Manifest], manifest: &Manifest) -> Option<&'a Manifest> {
    stack
        .iter()
        .find(|crd| crd.defines() == Some((manifest.group(), manifest.kind.as_str())))
}

/// Why the cluster did not take an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// Discovery found no resource serving the object's apiVersion and kind.
    UnknownKind,
    /// The API server's refusal: its status code and its message.
    Refused { status: u16, message: String },
}

/// The answer for a stack the cluster refused at `manifest`. `applied`
/// lists what was applied before it (nothing, when the dry run refused).
pub fn refused(manifest: &Manifest, refusal: &Refusal, applied: &[Applied]) -> AgentError {
    let reason = match refusal {
        Refusal::UnknownKind => format!(
            "no matches for kind {:?} in version {:?}: ensure its CustomResourceDefinition is installed first",
            manifest.kind, manifest.api_version
        ),
        Refusal::Refused { message, .. } => message.clone(),
    };
    let status = match refusal {
        Refusal::UnknownKind => 400,
        // The API server's own code, so a client can tell a forbidden
        // object (403) from an invalid one (422) or a conflict (409).
        Refusal::Refused { status, .. } if (400..500).contains(status) => *status,
        Refusal::Refused { .. } => 502,
    };
    let before = if applied.is_empty() {
        "nothing of the stack was applied".to_string()
    } else {
        format!(
            "applied before it: {}",
            output(applied).trim_end().replace('\n', ", ")
        )
    };
    AgentError::new(
        status,
        "Failed deploying",
        format!("{reason} ({}; {before})", manifest.label()),
    )
}

/// What an apply did to an object, from the object before and after it.
/// Its `resourceVersion` alone would not do: the API server writes its own
/// bookkeeping (`managedFields`) on an apply that changes nothing the user
/// sees, such as a Namespace's second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Created,
    Configured,
    Unchanged,
}

impl Outcome {
    pub fn of(before: Option<&Value>, after: &Value) -> Outcome {
        match before {
            None => Outcome::Created,
            Some(before) if without_bookkeeping(before) == without_bookkeeping(after) => {
                Outcome::Unchanged
            }
            Some(_) => Outcome::Configured,
        }
    }
}

/// An object without what the API server changes on every write.
fn without_bookkeeping(object: &Value) -> Value {
    let mut object = object.clone();
    if let Some(metadata) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        metadata.remove("resourceVersion");
        metadata.remove("managedFields");
    }
    object
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Outcome::Created => "created",
            Outcome::Configured => "configured",
            Outcome::Unchanged => "unchanged",
        })
    }
}

/// One line of the stack's `Output`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Applied {
    pub label: String,
    pub outcome: Outcome,
}

/// `Output`, as kubectl prints it: a line an object.
pub fn output(applied: &[Applied]) -> String {
    applied
        .iter()
        .map(|line| format!("{} {}\n", line.label, line.outcome))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(manifests: &str, namespace: Option<&str>) -> StackRequest {
        StackRequest {
            manifests: manifests.to_string(),
            namespace: namespace.map(str::to_string),
        }
    }

    fn manifests_of(request: &StackRequest) -> Result<Vec<Manifest>, AgentError> {
        manifests(
            &request.manifests,
            request.namespace.as_deref(),
            "agent-home",
        )
    }

    #[test]
    fn the_payload_is_read_as_the_go_agent_reads_it() {
        let parsed =
            StackRequest::from_json(br#"{"StackConfig":"kind: x","Namespace":""}"#).unwrap();
        assert_eq!(parsed, request("kind: x", None));
        let parsed =
            StackRequest::from_json(br#"{"StackConfig":"kind: x","Namespace":"team"}"#).unwrap();
        assert_eq!(parsed.namespace.as_deref(), Some("team"));
        let missing = StackRequest::from_json(br#"{"Namespace":"team"}"#).unwrap_err();
        assert_eq!(
            (missing.status(), missing.message(), missing.details()),
            (400, "Invalid request payload", "Missing deployment config")
        );
        let broken = StackRequest::from_json(b"{").unwrap_err();
        assert_eq!(
            (broken.status(), broken.message()),
            (400, "Invalid request payload")
        );
    }

    #[test]
    fn documents_and_lists_become_objects_in_order() {
        let yaml = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
---
---
apiVersion: v1
kind: List
items:
  - {apiVersion: v1, kind: ConfigMap, metadata: {name: a, namespace: team}}
  - {apiVersion: v1, kind: Service, metadata: {name: b}}
";
        let found = manifests_of(&request(yaml, Some("team"))).unwrap();
        let labels: Vec<String> = found.iter().map(Manifest::label).collect();
        assert_eq!(labels, ["deployment.apps/web", "configmap/a", "service/b"]);
        assert!(found.iter().all(|manifest| manifest.namespace == "team"));
        assert_eq!(found[0].object["metadata"]["namespace"], "team");
        assert_eq!((found[0].group(), found[0].version()), ("apps", "v1"));
        assert_eq!((found[1].group(), found[1].version()), ("", "v1"));
    }

    #[test]
    fn an_object_goes_to_its_own_namespace_then_the_stacks_then_the_agents() {
        let yaml = "{apiVersion: v1, kind: ConfigMap, metadata: {name: a, namespace: own}}\n---\n{apiVersion: v1, kind: ConfigMap, metadata: {name: b}}";
        let found = manifests_of(&request(yaml, None)).unwrap();
        assert_eq!(found[0].namespace, "own");
        assert_eq!(found[1].namespace, "agent-home");
        let clash = manifests_of(&request(yaml, Some("team"))).unwrap_err();
        assert_eq!(clash.status(), 400);
        assert!(clash.details().contains("\"own\""), "{}", clash.details());
    }

    #[test]
    fn unusable_documents_are_refused_naming_the_document() {
        let cases = [
            ("a: [", "document 1"),
            ("- 1\n- 2", "not a Kubernetes object"),
            ("metadata: {name: x}", "apiVersion and kind not set"),
            ("{apiVersion: v1, kind: ConfigMap, metadata: {name: a}}\n---\n{apiVersion: v1, kind: ConfigMap}", "document 2: A ConfigMap without metadata.name"),
            ("---\n", "holds no Kubernetes object"),
        ];
        for (yaml, expected) in cases {
            let refusal = manifests_of(&request(yaml, None)).unwrap_err();
            assert_eq!(refusal.status(), 400, "{yaml}");
            assert!(
                refusal
                    .details()
                    .to_lowercase()
                    .contains(&expected.to_lowercase()),
                "{yaml}: {}",
                refusal.details()
            );
        }
    }

    #[test]
    fn what_the_stack_makes_itself_is_left_to_the_real_apply() {
        let yaml = "\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: crontabs.stable.example.com}
spec: {group: stable.example.com, names: {kind: CronTab, plural: crontabs}}
---
{apiVersion: v1, kind: Namespace, metadata: {name: made}}
---
{apiVersion: stable.example.com/v1, kind: CronTab, metadata: {name: tab}}
---
{apiVersion: v1, kind: ConfigMap, metadata: {name: a, namespace: made}}
---
{apiVersion: other.example.com/v1, kind: CronTab, metadata: {name: stray}}
";
        let stack = manifests_of(&request(yaml, None)).unwrap();
        let not_found = Refusal::Refused {
            status: 404,
            message: "namespaces \"made\" not found".into(),
        };
        assert!(made_by_stack(&stack, &stack[2], &Refusal::UnknownKind));
        assert_eq!(
            crd_for(&stack, &stack[2]).unwrap().name,
            "crontabs.stable.example.com"
        );
        assert!(made_by_stack(&stack, &stack[3], &not_found));
        assert!(!made_by_stack(&stack, &stack[4], &Refusal::UnknownKind));
        assert!(!made_by_stack(&stack, &stack[2], &not_found));
        assert!(crd_for(&stack, &stack[4]).is_none());
    }

    #[test]
    fn outcomes_follow_what_the_user_sees_of_the_object() {
        let object = |version: &str, managers: &str, mode: &str| {
            serde_json::json!({
                "metadata": {"name": "a", "resourceVersion": version, "managedFields": [{"manager": managers}]},
                "data": {"mode": mode},
            })
        };
        let before = object("7", "kubectl", "fast");
        assert_eq!(Outcome::of(None, &before), Outcome::Created);
        assert_eq!(Outcome::of(Some(&before), &before), Outcome::Unchanged);
        let bookkeeping = object("8", "berth", "fast");
        assert_eq!(Outcome::of(Some(&before), &bookkeeping), Outcome::Unchanged);
        let changed = object("9", "berth", "slow");
        assert_eq!(Outcome::of(Some(&before), &changed), Outcome::Configured);
        let lines = [
            Applied {
                label: "deployment.apps/web".into(),
                outcome: Outcome::Created,
            },
            Applied {
                label: "configmap/a".into(),
                outcome: Outcome::Unchanged,
            },
        ];
        assert_eq!(
            output(&lines),
            "deployment.apps/web created\nconfigmap/a unchanged\n"
        );
    }

    #[test]
    fn a_refusal_says_what_was_refused_why_and_what_was_applied() {
        let stack = manifests_of(&request(
            "{apiVersion: apps/v1, kind: Deployment, metadata: {name: web}}",
            None,
        ))
        .unwrap();
        let invalid = Refusal::Refused {
            status: 422,
            message: "Deployment.apps \"web\" is invalid: spec.selector: Required value".into(),
        };
        let answer = refused(&stack[0], &invalid, &[]);
        assert_eq!(
            (answer.status(), answer.message()),
            (422, "Failed deploying")
        );
        assert_eq!(
            answer.details(),
            "Deployment.apps \"web\" is invalid: spec.selector: Required value (deployment.apps/web; nothing of the stack was applied)"
        );
        let later = refused(
            &stack[0],
            &Refusal::UnknownKind,
            &[Applied {
                label: "configmap/a".into(),
                outcome: Outcome::Created,
            }],
        );
        assert_eq!(later.status(), 400);
        assert!(later
            .details()
            .ends_with("(deployment.apps/web; applied before it: configmap/a created)"));
        let broken = Refusal::Refused {
            status: 500,
            message: "etcdserver: request timed out".into(),
        };
        assert_eq!(refused(&stack[0], &broken, &[]).status(), 502);
    }
}
