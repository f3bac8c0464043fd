//! Edge stacks (reference §10.7): the stacks a poll answer lists, the
//! stack payload Portainer serves, where its files may go, and the status
//! codes berth reports.

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde_json::Value;

use super::registry::{parse_registry_credentials, RegistryCredential};
use super::status::field;
use super::updater_env::with_updater_credentials;
use crate::browse::confine;

/// Portainer's `EdgeStackStatusType` values berth reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackStatus {
    DeploymentReceived = 1,
    Error = 2,
    Acknowledged = 3,
    Removed = 4,
    ImagesPulled = 6,
    Running = 7,
    Deploying = 8,
    Removing = 9,
}

impl StackStatus {
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// A stack as the poll answer lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackRef {
    pub id: u64,
    pub version: u64,
    /// Pull images again even if the version did not change.
    pub re_pull: bool,
}

/// The poll answer's `stacks`; `None` when absent or null (nothing
/// changes), empty when Portainer wants no stacks at all.
pub fn parse_stack_refs(answer: &Value) -> Option<Vec<StackRef>> {
    let list = answer.as_object().and_then(|o| field(o, "stacks"))?;
    let items = list.as_array()?;
    Some(
        items
            .iter()
            .filter_map(Value::as_object)
            .filter_map(|o| {
                Some(StackRef {
                    id: field(o, "ID").and_then(Value::as_u64)?,
                    version: field(o, "Version").and_then(Value::as_u64).unwrap_or(0),
                    re_pull: field(o, "ReadyRePullImage")
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                })
            })
            .collect(),
    )
}

/// What to do with the stacks: deploy (new, new version, or re-pull
/// asked) and remove (no longer listed).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackChanges {
    pub deploy: Vec<StackRef>,
    pub remove: Vec<u64>,
}

/// `deployed` maps each stack to the version deployed.
pub fn stack_changes(deployed: &BTreeMap<u64, u64>, wanted: &[StackRef]) -> StackChanges {
    StackChanges {
        deploy: wanted
            .iter()
            .filter(|w| w.re_pull || deployed.get(&w.id) != Some(&w.version))
            .cloned()
            .collect(),
        remove: deployed
            .keys()
            .filter(|id| !wanted.iter().any(|w| w.id == **id))
            .copied()
            .collect(),
    }
}

/// One file of a stack, at a path confined to the stack's folder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackFile {
    pub components: Vec<String>,
    pub content: Vec<u8>,
    pub mode: u32,
}

/// The parts of a stack payload berth uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackPayload {
    pub id: u64,
    pub name: String,
    pub entry_file: String,
    pub files: Vec<StackFile>,
    pub env: Vec<(String, String)>,
    pub pull: bool,
    pub retry_deploy: bool,
    /// Served to the docker credential helper while the stack deploys.
    pub credentials: Vec<RegistryCredential>,
    /// `SupportRelativePath` with a `FilesystemPath`: the host folder
    /// (its components, confined) whose `portainer-compose-unpacker/<id>`
    /// holds the files, so relative bind mounts resolve on the host.
    pub host_folder: Option<Vec<String>>,
    /// Kubernetes: the namespace for the manifests' objects that name
    /// none; `None` (CE's `UseManifestNamespaces`) leaves them to their own.
    pub namespace: Option<String>,
}

impl StackPayload {
    /// The compose project: `edge_<name>`.
    pub fn project(&self) -> String {
        format!("edge_{}", self.name)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadError(pub String);

impl fmt::Display for PayloadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PayloadError {}

const DEFAULT_ENTRY: &str = "docker-compose.yml";

/// Reads Portainer's stack payload. Every file path must stay inside the
/// stack folder: `..` or an absolute path is an error naming the entry.
///
/// # Errors
/// When the payload is not an object, has no name, an entry escapes, or a
/// content is not base64.
pub fn parse_payload(body: &[u8]) -> Result<StackPayload, PayloadError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| PayloadError(format!("the stack payload is not JSON: {e}")))?;
    parse_payload_value(&value)
}

/// [`parse_payload`] of a value already read (an async `edgeStack`
/// command's).
///
/// # Errors
/// As [`parse_payload`].
pub fn parse_payload_value(value: &Value) -> Result<StackPayload, PayloadError> {
    let o = value
        .as_object()
        .ok_or_else(|| PayloadError("the stack payload is not an object".into()))?;
    let text = |name| field(o, name).and_then(Value::as_str).unwrap_or("");
    let flag = |name| field(o, name).and_then(Value::as_bool).unwrap_or(false);
    let name = text("Name").to_string();
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(PayloadError(format!(
            "the stack name {name:?} is not a project name"
        )));
    }
    let entry_file = match text("EntryFileName") {
        "" => DEFAULT_ENTRY.to_string(),
        entry => entry.to_string(),
    };
    let mut files = Vec::new();
    for entry in field(o, "DirEntries")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        let Some(entry) = entry.as_object() else {
            continue;
        };
        if !field(entry, "IsFile")
            .and_then(Value::as_bool)
            .unwrap_or(false)
        {
            continue;
        }
        let path = field(entry, "Name").and_then(Value::as_str).unwrap_or("");
        files.push(stack_file_from(path, entry)?);
    }
    let legacy = text("StackFileContent");
    if files.is_empty() && !legacy.is_empty() {
        files.push(StackFile {
            components: confined(&entry_file)?,
            content: legacy.as_bytes().to_vec(),
            mode: 0o644,
        });
    }
    let entry_components = confined(&entry_file)?;
    let Some(entry) = files.iter_mut().find(|f| f.components == entry_components) else {
        return Err(PayloadError(format!(
            "the stack has no entry file {entry_file:?}"
        )));
    };
    let credentials = parse_registry_credentials(o);
    let update_id = field(o, "EdgeUpdateID")
        .and_then(Value::as_u64)
        .unwrap_or(0);
    if update_id > 0 {
        let compose = String::from_utf8_lossy(&entry.content);
        if let Some(rewritten) = with_updater_credentials(&compose, &credentials) {
            entry.content = rewritten.into_bytes();
        }
    }
    let host_folder = match text("FilesystemPath") {
        path if flag("SupportRelativePath") && !path.is_empty() => Some(parse_host_folder(path)?),
        _ => None,
    };
    let env = field(o, "EnvVars")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .filter_map(|pair| {
            let name = field(pair, "name").and_then(Value::as_str)?;
            let value = field(pair, "value").and_then(Value::as_str).unwrap_or("");
            Some((name.to_string(), value.to_string()))
        })
        .collect();
    Ok(StackPayload {
        id: field(o, "ID").and_then(Value::as_u64).unwrap_or(0),
        name,
        entry_file,
        files,
        env,
        pull: flag("PrePullImage") || flag("RePullImage") || flag("ReadyRePullImage"),
        retry_deploy: flag("RetryDeploy"),
        credentials,
        host_folder,
        namespace: Some(text("Namespace").to_string()).filter(|namespace| !namespace.is_empty()),
    })
}

/// Reads the payload Portainer serves for a stack its poll answer listed.
/// The listing is the truth for the stack's identity: Portainer CE serves
/// `"ID":0` and `"Version":0` in every payload (it never fills them), so
/// the deployment, its folder and every status report take the listed ID.
///
/// # Errors
/// As [`parse_payload`].
pub fn parse_listed_payload(listed: &StackRef, body: &[u8]) -> Result<StackPayload, PayloadError> {
    let mut payload = parse_payload(body)?;
    payload.id = listed.id;
    Ok(payload)
}

/// Where relative-path stacks' files go under `FilesystemPath`, as
/// Portainer's compose unpacker puts them.
pub const UNPACKER_FOLDER: &str = "portainer-compose-unpacker";

/// `FilesystemPath`: an absolute host path without `..`.
fn parse_host_folder(path: &str) -> Result<Vec<String>, PayloadError> {
    let refuse = || {
        PayloadError(format!(
            "the stack's FilesystemPath {path:?} is not an absolute path on the host"
        ))
    };
    let relative = path.strip_prefix('/').ok_or_else(refuse)?;
    let confined = confine(relative).map_err(|_| refuse())?;
    Ok(confined.components().to_vec())
}

fn confined(path: &str) -> Result<Vec<String>, PayloadError> {
    let refuse = || PayloadError(format!("the stack entry {path:?} leaves the stack folder"));
    if path.starts_with('/') || path.starts_with('\\') {
        return Err(refuse());
    }
    let confined = confine(path).map_err(|_| refuse())?;
    if confined.is_root() {
        return Err(refuse());
    }
    Ok(confined.components().to_vec())
}

/// One `DirEntries` file entry, its path confined and its content decoded.
///
/// # Errors
/// When the path leaves the folder or the content is not base64.
pub fn stack_file_from(
    path: &str,
    entry: &serde_json::Map<String, Value>,
) -> Result<StackFile, PayloadError> {
    let content = field(entry, "Content")
        .and_then(Value::as_str)
        .unwrap_or("");
    let content = STANDARD
        .decode(content)
        .map_err(|_| PayloadError(format!("the content of {path:?} is not base64")))?;
    let mode = field(entry, "Permissions")
        .and_then(Value::as_u64)
        .map(|m| (m & 0o777) as u32)
        .filter(|m| *m != 0)
        .unwrap_or(0o644);
    Ok(StackFile {
        components: confined(path)?,
        content,
        mode,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(name: &str, content: &str) -> Value {
        json!({"Name": name, "Content": STANDARD.encode(content), "IsFile": true, "Permissions": 0o600})
    }

    #[test]
    fn stack_refs_and_changes() {
        let answer = json!({"stacks": [{"ID": 1, "Version": 2}, {"Id": 3, "Version": 1, "ReadyRePullImage": true}]});
        let wanted = parse_stack_refs(&answer).unwrap();
        assert_eq!(wanted.len(), 2);
        let deployed: BTreeMap<u64, u64> = [(1, 2), (3, 1), (4, 1)].into();
        let changes = stack_changes(&deployed, &wanted);
        assert_eq!(
            changes.deploy.iter().map(|s| s.id).collect::<Vec<_>>(),
            [3],
            "re-pull redeploys"
        );
        assert_eq!(changes.remove, [4]);
        let newer = stack_changes(
            &deployed,
            &[StackRef {
                id: 1,
                version: 3,
                re_pull: false,
            }],
        );
        assert_eq!(newer.deploy.len(), 1);
        assert_eq!(newer.remove, [3, 4]);
        assert!(parse_stack_refs(&json!({"stacks": null})).is_none());
        assert_eq!(parse_stack_refs(&json!({"stacks": []})).unwrap(), []);
    }

    #[test]
    fn payloads_decode_with_their_files_confined() {
        let body = json!({"ID": 7, "Name": "web", "EntryFileName": "compose.yml",
            "DirEntries": [entry("compose.yml", "services: {}"), entry("conf/app.env", "A=1"),
                           {"Name": "conf", "IsFile": false}],
            "EnvVars": [{"name": "MODE", "value": "prod"}], "PrePullImage": true})
        .to_string();
        let payload = parse_payload(body.as_bytes()).unwrap();
        assert_eq!(payload.project(), "edge_web");
        assert_eq!(payload.files.len(), 2);
        assert_eq!(payload.files[1].components, ["conf", "app.env"]);
        assert_eq!(payload.files[1].mode, 0o600);
        assert_eq!(payload.env, [("MODE".to_string(), "prod".to_string())]);
        assert!(payload.pull);
    }

    #[test]
    fn escaping_entries_and_bad_payloads_are_refused() {
        for bad in ["../evil.yml", "/etc/passwd", "a/../../b", ""] {
            let body = json!({"Name": "web", "DirEntries": [entry("docker-compose.yml", "x"), entry(bad, "x")]});
            let error = parse_payload(body.to_string().as_bytes()).unwrap_err();
            assert!(
                error.0.contains("leaves the stack folder"),
                "{bad}: {error}"
            );
        }
        let no_entry = json!({"Name": "web", "DirEntries": [entry("other.yml", "x")]});
        assert!(parse_payload(no_entry.to_string().as_bytes())
            .unwrap_err()
            .0
            .contains("no entry file"));
        let bad_name = json!({"Name": "we b", "StackFileContent": "x"});
        assert!(parse_payload(bad_name.to_string().as_bytes()).is_err());
        assert!(parse_payload(b"[]").is_err());
        let legacy = json!({"Name": "old", "StackFileContent": "services: {}"});
        let payload = parse_payload(legacy.to_string().as_bytes()).unwrap();
        assert_eq!(payload.files[0].components, ["docker-compose.yml"]);
    }

    #[test]
    fn registries_updates_and_relative_paths_come_with_the_payload() {
        let compose = "services:\n  updater:\n    image: 127.0.0.1:5000/updater\n";
        let body = json!({"Name": "update", "EdgeUpdateID": 3,
            "DirEntries": [entry("docker-compose.yml", compose)],
            "RegistryCredentials": [{"ServerURL": "127.0.0.1:5000", "Username": "u", "Secret": "p"}],
            "SupportRelativePath": true, "FilesystemPath": "/mnt/stacks"});
        let payload = parse_payload(body.to_string().as_bytes()).unwrap();
        assert_eq!(payload.credentials.len(), 1);
        assert_eq!(
            payload.host_folder.as_deref(),
            Some(&["mnt".to_string(), "stacks".to_string()][..])
        );
        let written = String::from_utf8(payload.files[0].content.clone()).unwrap();
        assert!(written.contains("REGISTRY_PASSWORD=p"), "{written}");
        // Not an update stack: the file is left as it came.
        let body = json!({"Name": "plain", "DirEntries": [entry("docker-compose.yml", compose)],
            "RegistryCredentials": [{"ServerURL": "127.0.0.1:5000", "Username": "u", "Secret": "p"}],
            "FilesystemPath": "/mnt/stacks"});
        let payload = parse_payload(body.to_string().as_bytes()).unwrap();
        assert_eq!(payload.files[0].content, compose.as_bytes());
        assert_eq!(payload.host_folder, None, "without SupportRelativePath");
        for bad in ["relative/path", "/mnt/../etc"] {
            let body = json!({"Name": "rel", "DirEntries": [entry("docker-compose.yml", "x")],
                "SupportRelativePath": true, "FilesystemPath": bad});
            let error = parse_payload(body.to_string().as_bytes()).unwrap_err();
            assert!(error.0.contains("FilesystemPath"), "{bad}: {error}");
        }
    }

    #[test]
    fn a_listed_stack_keeps_the_listed_id_whatever_the_payload_says() {
        let listed = StackRef {
            id: 4,
            version: 2,
            re_pull: false,
        };
        // Portainer CE's payload: ID and Version never filled.
        for id in [json!(0), json!(9), json!(null)] {
            let body = json!({"ID": id, "Version": 0, "Name": "web",
                "EntryFileName": "docker-compose.yml",
                "DirEntries": [entry("docker-compose.yml", "services: {}")]});
            let payload = parse_listed_payload(&listed, body.to_string().as_bytes()).unwrap();
            assert_eq!(payload.id, 4, "payload ID {id}");
        }
        assert!(parse_listed_payload(&listed, b"{}").is_err());
    }

    #[test]
    fn status_codes_are_portainers() {
        assert_eq!(StackStatus::DeploymentReceived.code(), 1);
        assert_eq!(StackStatus::Acknowledged.code(), 3);
        assert_eq!(StackStatus::Deploying.code(), 8);
        assert_eq!(StackStatus::Running.code(), 7);
        assert_eq!(StackStatus::Error.code(), 2);
        assert_eq!(StackStatus::Removing.code(), 9);
        assert_eq!(StackStatus::Removed.code(), 4);
    }
}
