//! Async Edge mode's one exchange (reference §10.6): what the agent posts
//! to `/api/endpoints/edge/async`, what Portainer answers, its commands,
//! and the reports queued for the next snapshot.
//!
//! Objects are written in the Go agent's struct order. A command's
//! `timestamp` is kept as the text Portainer sent (a Go `time.Time` with
//! nanoseconds), so it goes back exactly: Portainer sends again any
//! command newer than the timestamp it is given.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::async_timers::duration_ms;
use super::stack::{parse_payload_value, StackPayload, StackStatus};
use super::status::field;

/// Where the command timestamp starts, as the Go agent's.
pub const FIRST_COMMAND_TIMESTAMP: &str = "2000-01-01T00:00:00Z";

/// Auto-onboarding fields, sent when any is set.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetaFields {
    pub edge_groups: Vec<u64>,
    pub tags: Vec<u64>,
    pub environment_group: i64,
}

impl MetaFields {
    fn to_json(&self) -> Value {
        if self.edge_groups.is_empty() && self.tags.is_empty() && self.environment_group <= 0 {
            return Value::Null;
        }
        json!({"edgeGroupsIds": self.edge_groups, "tagsIds": self.tags,
               "environmentGroupId": self.environment_group})
    }
}

/// One stack status report, as `stackStatusArray` carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackReport {
    pub time: i64,
    pub status: StackStatus,
    pub error: String,
}

/// The logs of one Edge stack's containers, asked for by `edgeLog`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerLogs {
    pub container_id: String,
    pub stdout: String,
    pub stderr: String,
}

/// What the next snapshot reports besides the engine: queued by the
/// commands' work, sent with the next snapshot, and kept if that post
/// fails, so nothing is lost.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outbox {
    pub stack_statuses: BTreeMap<u64, Vec<StackReport>>,
    pub stack_logs: BTreeMap<u64, Vec<ContainerLogs>>,
    /// Job ID → its log's content.
    pub job_logs: BTreeMap<u64, String>,
    /// Edge configuration ID → its state.
    pub config_states: BTreeMap<u64, u8>,
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.stack_statuses.is_empty()
            && self.stack_logs.is_empty()
            && self.job_logs.is_empty()
            && self.config_states.is_empty()
    }

    /// Puts reports back in front of newer ones after a failed post.
    pub fn restore(&mut self, earlier: Outbox) {
        for (id, mut reports) in earlier.stack_statuses {
            let newer = self.stack_statuses.remove(&id).unwrap_or_default();
            reports.extend(newer);
            self.stack_statuses.insert(id, reports);
        }
        for (id, logs) in earlier.stack_logs {
            self.stack_logs.entry(id).or_insert(logs);
        }
        for (id, log) in earlier.job_logs {
            self.job_logs.entry(id).or_insert(log);
        }
        for (id, state) in earlier.config_states {
            self.config_states.entry(id).or_insert(state);
        }
    }
}

/// The Docker part of a snapshot: the whole of it, or a patch against the
/// last one Portainer acknowledged and that one's hash.
#[derive(Debug, Clone, PartialEq)]
pub enum DockerPart<'a> {
    Full(&'a Value),
    Patch { patch: Value, base_hash: u32 },
}

/// A JSON object written field by field, so the snapshot (the bulk of a
/// request) is written from where it lies instead of copied into a body.
struct ObjectText(Vec<u8>);

impl ObjectText {
    fn new() -> Self {
        ObjectText(vec![b'{'])
    }

    fn field(&mut self, key: &str, value: &Value) {
        if self.0.len() > 1 {
            self.0.push(b',');
        }
        // Writing a string or a `Value` into memory cannot fail.
        serde_json::to_writer(&mut self.0, key).expect("a key serializes");
        self.0.push(b':');
        serde_json::to_writer(&mut self.0, value).expect("a JSON value serializes");
    }

    fn raw_field(&mut self, key: &str, object: ObjectText) {
        if self.0.len() > 1 {
            self.0.push(b',');
        }
        serde_json::to_writer(&mut self.0, key).expect("a key serializes");
        self.0.push(b':');
        self.0.extend_from_slice(&object.finish());
    }

    fn finish(mut self) -> Vec<u8> {
        self.0.push(b'}');
        self.0
    }
}

/// The body posted to `/api/endpoints/edge/async`, as JSON text.
pub fn request_body(
    command_timestamp: Option<&str>,
    snapshot: Option<(&DockerPart, &Outbox)>,
    endpoint_id: u64,
    meta: &MetaFields,
) -> Vec<u8> {
    let mut body = ObjectText::new();
    if let Some(timestamp) = command_timestamp {
        body.field("commandTimestamp", &json!(timestamp));
    }
    if let Some((docker, outbox)) = snapshot {
        body.raw_field("snapshot", snapshot_text(docker, outbox));
    }
    if endpoint_id != 0 {
        body.field("endpointId", &json!(endpoint_id));
    }
    body.field("metaFields", &meta.to_json());
    body.finish()
}

fn snapshot_text(docker: &DockerPart, outbox: &Outbox) -> ObjectText {
    let mut text = ObjectText::new();
    match docker {
        DockerPart::Full(full) => text.field("docker", full),
        DockerPart::Patch { patch, base_hash } => {
            text.field("dockerPatch", patch);
            text.field("dockerHash", &json!(base_hash));
        }
    }
    for (key, value) in reports_json(outbox) {
        text.field(&key, &value);
    }
    text
}

/// The outbox's reports, as the snapshot carries them.
fn reports_json(outbox: &Outbox) -> Map<String, Value> {
    let mut snapshot = Map::new();
    if !outbox.stack_logs.is_empty() {
        let logs: Vec<Value> = outbox
            .stack_logs
            .iter()
            .map(|(id, logs)| {
                json!({"edgeStackID": id, "logs": logs.iter().map(|l| json!({
                    "dockerContainerID": l.container_id, "stdOut": l.stdout, "stdErr": l.stderr
                })).collect::<Vec<_>>()})
            })
            .collect();
        snapshot.insert("stackLogs".into(), Value::Array(logs));
    }
    if !outbox.stack_statuses.is_empty() {
        let statuses: Map<String, Value> = outbox
            .stack_statuses
            .iter()
            .map(|(id, reports)| {
                let list = reports
                    .iter()
                    .map(|r| {
                        json!({"Time": r.time, "Type": r.status.code(), "Error": r.error,
                               "RollbackTo": null})
                    })
                    .collect();
                (id.to_string(), Value::Array(list))
            })
            .collect();
        snapshot.insert("stackStatusArray".into(), Value::Object(statuses));
    }
    if !outbox.job_logs.is_empty() {
        let jobs: Map<String, Value> = outbox
            .job_logs
            .iter()
            .map(|(id, log)| (id.to_string(), json!({"JobID": id, "LogFileContent": log})))
            .collect();
        snapshot.insert("jobsStatus".into(), Value::Object(jobs));
    }
    if !outbox.config_states.is_empty() {
        let states: Map<String, Value> = outbox
            .config_states
            .iter()
            .map(|(id, state)| (id.to_string(), json!(state)))
            .collect();
        snapshot.insert("edgeConfigStates".into(), Value::Object(states));
    }
    snapshot
}

/// Portainer's answer.
#[derive(Debug, Clone, PartialEq)]
pub struct AsyncAnswer {
    /// Ping, snapshot and command intervals, in milliseconds (0: off).
    pub intervals: [u64; 3],
    pub endpoint_id: u64,
    pub commands: Vec<Value>,
    pub need_full_snapshot: bool,
}

/// Reads Portainer's answer, fields matched as Go matches them.
///
/// # Errors
/// When the answer is not a JSON object.
pub fn parse_answer(body: &[u8]) -> Result<AsyncAnswer, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let o = value
        .as_object()
        .ok_or_else(|| "the answer is not an object".to_string())?;
    let interval = |name| field(o, name).map_or(0, duration_ms);
    Ok(AsyncAnswer {
        intervals: [
            interval("pingInterval"),
            interval("snapshotInterval"),
            interval("commandInterval"),
        ],
        endpoint_id: field(o, "endpointID").and_then(Value::as_u64).unwrap_or(0),
        commands: field(o, "commands")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
        need_full_snapshot: field(o, "needFullSnapshot")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

/// A command's operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Add,
    Replace,
    Remove,
}

/// What a container, image or volume command asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContainerAction {
    Start,
    Restart,
    Stop,
    Kill,
    Delete { force: bool, volumes: bool },
}

/// A decoded command.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    EdgeStack(Operation, StackPayload),
    EdgeJob {
        operation: Operation,
        id: u64,
        cron: String,
        script: String,
        version: u64,
        collect_logs: bool,
    },
    EdgeLog {
        stack_id: u64,
        stack_name: String,
        tail: u64,
    },
    Container {
        name: String,
        action: ContainerAction,
    },
    DeleteImage {
        name: String,
        force: bool,
        prune_children: bool,
    },
    DeleteVolume {
        name: String,
        force: bool,
    },
    RemoveNormalStack {
        name: String,
        /// Its compose file: compose needs it to take the project down.
        compose: String,
    },
    EdgeConfig(Operation, EdgeConfig),
}

/// One command as Portainer sent it, its value decoded or not.
#[derive(Debug, Clone, PartialEq)]
pub struct ReceivedCommand {
    pub id: u64,
    pub kind: String,
    /// The exact text of `timestamp`, sent back as `commandTimestamp`.
    pub timestamp: String,
    pub decoded: Result<Command, String>,
    /// For a command that did not decode: the answer Portainer still waits
    /// for (it shows the stack deploying, the configuration saving, the
    /// logs loading until it hears).
    pub owed: Option<Owed>,
}

/// The report that answers a refused command, so that Portainer stops
/// waiting: each names the object the command was about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owed {
    /// Stack status Error, with the reason.
    StackError(u64),
    /// Configuration state Failure.
    ConfigFailure(u64),
    /// A job log holding the reason.
    JobLog(u64),
    /// The stack's logs: none.
    StackLogs(u64),
}

/// What a command of `kind` that did not decode still owes Portainer: the
/// ID of its object, read on its own so that a value refused for another
/// field still names it. `None` where Portainer waits for nothing (the
/// container, image, volume and normal-stack commands) or no ID is given.
fn owed(kind: &str, value: &Value) -> Option<Owed> {
    let id = |name| {
        value
            .as_object()
            .and_then(|o| field(o, name))
            .and_then(Value::as_u64)
            .filter(|id| *id > 0)
    };
    match kind {
        "edgeStack" => id("ID").map(Owed::StackError),
        "edgeConfig" => id("ID").map(Owed::ConfigFailure),
        "edgeJob" => id("ID").map(Owed::JobLog),
        "edgeLog" => id("EdgeStackID").map(Owed::StackLogs),
        _ => None,
    }
}

/// Reads one command. An unknown type or a value that does not decode is
/// an `Err` in `decoded` (with what it still owes Portainer in `owed`):
/// reported, logged and skipped, its timestamp still taken.
pub fn parse_command(raw: &Value) -> Option<ReceivedCommand> {
    let o = raw.as_object()?;
    let timestamp = field(o, "timestamp")?.as_str()?.to_string();
    let kind = field(o, "type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let operation = match field(o, "op").and_then(Value::as_str).unwrap_or("") {
        "add" => Some(Operation::Add),
        "replace" => Some(Operation::Replace),
        "remove" => Some(Operation::Remove),
        _ => None,
    };
    let value = field(o, "value").cloned().unwrap_or(Value::Null);
    let decoded = decode(&kind, operation, &value);
    Some(ReceivedCommand {
        id: field(o, "id").and_then(Value::as_u64).unwrap_or(0),
        owed: decoded.as_ref().err().and_then(|_| owed(&kind, &value)),
        decoded,
        kind,
        timestamp,
    })
}

fn decode(kind: &str, operation: Option<Operation>, value: &Value) -> Result<Command, String> {
    let object = value
        .as_object()
        .ok_or_else(|| format!("the {kind} command's value is not an object"))?;
    let text = |name: &str| {
        field(object, name)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    let number = |name: &str| field(object, name).and_then(Value::as_u64).unwrap_or(0);
    let flag = |name: &str| {
        field(object, name)
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let nested_flag = |outer: &str, name: &str| {
        field(object, outer)
            .and_then(Value::as_object)
            .and_then(|o| field(o, name))
            .and_then(Value::as_bool)
            .unwrap_or(false)
    };
    let needs_operation = || operation.ok_or_else(|| format!("the {kind} command has no known op"));
    let required = |name: &str| {
        let value = text(name);
        if value.is_empty() {
            Err(format!("the {kind} command has no {name}"))
        } else {
            Ok(value)
        }
    };
    match kind {
        "edgeStack" => Ok(Command::EdgeStack(
            needs_operation()?,
            parse_payload_value(value).map_err(|e| e.to_string())?,
        )),
        "edgeJob" => Ok(Command::EdgeJob {
            operation: needs_operation()?,
            id: number("ID"),
            cron: text("CronExpression"),
            script: text("ScriptFileContent"),
            version: number("Version"),
            collect_logs: flag("CollectLogs"),
        }),
        "edgeLog" => Ok(Command::EdgeLog {
            stack_id: number("EdgeStackID"),
            stack_name: required("EdgeStackName")?,
            tail: number("Tail"),
        }),
        "container" => {
            let action = match text("ContainerOperation").as_str() {
                "start" => ContainerAction::Start,
                "restart" => ContainerAction::Restart,
                "stop" => ContainerAction::Stop,
                "kill" => ContainerAction::Kill,
                "delete" => ContainerAction::Delete {
                    force: nested_flag("ContainerRemoveOptions", "Force"),
                    volumes: nested_flag("ContainerRemoveOptions", "RemoveVolumes"),
                },
                other => return Err(format!("the container operation {other:?} is unknown")),
            };
            Ok(Command::Container {
                name: required("ContainerName")?,
                action,
            })
        }
        "image" => match text("ImageOperation").as_str() {
            "delete" => Ok(Command::DeleteImage {
                name: required("ImageName")?,
                force: nested_flag("ImageRemoveOptions", "Force"),
                prune_children: nested_flag("ImageRemoveOptions", "PruneChildren"),
            }),
            other => Err(format!("the image operation {other:?} is unknown")),
        },
        "volume" => match text("VolumeOperation").as_str() {
            "delete" => Ok(Command::DeleteVolume {
                name: required("VolumeName")?,
                force: flag("ForceRemove"),
            }),
            other => Err(format!("the volume operation {other:?} is unknown")),
        },
        "normalStack" => match text("StackOperation").as_str() {
            "remove" => Ok(Command::RemoveNormalStack {
                name: required("Name")?,
                compose: text("StackFileContent"),
            }),
            other => Err(format!("the stack operation {other:?} is unknown")),
        },
        "edgeConfig" => Ok(Command::EdgeConfig(
            needs_operation()?,
            parse_edge_config(value)?,
        )),
        other => Err(format!("the command type {other:?} is not supported")),
    }
}

/// The states of an Edge configuration (reference §10.9).
pub mod config_state {
    pub const IDLE: u8 = 0;
    pub const FAILURE: u8 = 1;
    pub const SAVING: u8 = 2;
    pub const DELETING: u8 = 3;
    pub const UPDATING: u8 = 4;
}

/// One file of an Edge configuration, its path relative to the base
/// folder, confined as a stack's files are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigFile {
    pub components: Vec<String>,
    pub content: Vec<u8>,
    pub mode: u32,
}

/// An Edge configuration: files for a folder of the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EdgeConfig {
    pub id: u64,
    pub name: String,
    /// The host folder, confined to the host root.
    pub base_dir: Vec<String>,
    pub files: Vec<ConfigFile>,
    /// The files of the version before, for an update.
    pub previous: Vec<ConfigFile>,
    pub invalid: bool,
}

fn config_files(value: Option<&Value>) -> Result<Vec<ConfigFile>, String> {
    use super::stack::stack_file_from;
    value
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
        .filter(|entry| {
            field(entry, "IsFile")
                .and_then(Value::as_bool)
                .unwrap_or(false)
        })
        .map(|entry| {
            let path = field(entry, "Name").and_then(Value::as_str).unwrap_or("");
            stack_file_from(path, entry)
                .map(|f| ConfigFile {
                    components: f.components,
                    content: f.content,
                    mode: f.mode,
                })
                .map_err(|e| e.to_string())
        })
        .collect()
}

/// Reads an Edge configuration (`GET /api/edge_configurations/<id>/files`
/// or an `edgeConfig` command's value).
///
/// # Errors
/// When it is not an object, or a path leaves its folder.
pub fn parse_edge_config(value: &Value) -> Result<EdgeConfig, String> {
    let o = value
        .as_object()
        .ok_or_else(|| "the Edge configuration is not an object".to_string())?;
    let base = field(o, "BaseDir").and_then(Value::as_str).unwrap_or("");
    let base_dir = crate::browse::confine(base.trim_start_matches('/'))
        .map_err(|_| format!("the Edge configuration folder {base:?} leaves the host root"))?
        .components()
        .to_vec();
    let previous = field(o, "Prev")
        .and_then(Value::as_object)
        .and_then(|prev| field(prev, "DirEntries"));
    Ok(EdgeConfig {
        id: field(o, "ID").and_then(Value::as_u64).unwrap_or(0),
        name: field(o, "Name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string(),
        base_dir,
        files: config_files(field(o, "DirEntries"))?,
        previous: config_files(previous)?,
        invalid: field(o, "Invalid")
            .and_then(Value::as_bool)
            .unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;

    fn outbox() -> Outbox {
        let mut outbox = Outbox::default();
        outbox.stack_statuses.insert(
            7,
            vec![StackReport {
                time: 1,
                status: StackStatus::Acknowledged,
                error: String::new(),
            }],
        );
        outbox.job_logs.insert(3, "ran".into());
        outbox.config_states.insert(4, config_state::IDLE);
        outbox
    }

    #[test]
    fn the_request_carries_what_each_tick_asks_for() {
        let meta = MetaFields::default();
        let parse = |text: Vec<u8>| -> Value { serde_json::from_slice(&text).unwrap() };
        let ping = request_body(None, None, 0, &meta);
        assert_eq!(ping, br#"{"metaFields":null}"#);
        let docker = json!({"Time": 1});
        let full = DockerPart::Full(&docker);
        let outbox = outbox();
        let body = parse(request_body(
            Some("2026-01-02T03:04:05.123456789Z"),
            Some((&full, &outbox)),
            12,
            &MetaFields {
                edge_groups: vec![1],
                tags: vec![],
                environment_group: 0,
            },
        ));
        let keys: Vec<&str> = body
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            ["commandTimestamp", "snapshot", "endpointId", "metaFields"]
        );
        assert_eq!(body["commandTimestamp"], "2026-01-02T03:04:05.123456789Z");
        assert_eq!(body["snapshot"]["docker"], json!({"Time": 1}));
        assert_eq!(
            body["snapshot"]["stackStatusArray"]["7"],
            json!([{"Time": 1, "Type": 3, "Error": "", "RollbackTo": null}])
        );
        assert_eq!(
            body["snapshot"]["jobsStatus"]["3"],
            json!({"JobID": 3, "LogFileContent": "ran"})
        );
        assert_eq!(body["snapshot"]["edgeConfigStates"]["4"], 0);
        assert_eq!(body["metaFields"]["edgeGroupsIds"], json!([1]));
        let patch = DockerPart::Patch {
            patch: json!([{"op": "replace", "path": "/Time", "value": 2}]),
            base_hash: 77,
        };
        let body = parse(request_body(
            None,
            Some((&patch, &Outbox::default())),
            0,
            &meta,
        ));
        assert_eq!(body["snapshot"]["dockerHash"], 77);
        assert!(body["snapshot"].get("docker").is_none());
    }

    #[test]
    fn a_failed_post_puts_its_reports_back_before_newer_ones() {
        let mut newer = Outbox::default();
        newer.stack_statuses.insert(
            7,
            vec![StackReport {
                time: 2,
                status: StackStatus::Running,
                error: String::new(),
            }],
        );
        newer.config_states.insert(4, config_state::FAILURE);
        newer.restore(outbox());
        let times: Vec<i64> = newer.stack_statuses[&7].iter().map(|r| r.time).collect();
        assert_eq!(times, [1, 2]);
        assert_eq!(
            newer.config_states[&4],
            config_state::FAILURE,
            "the newer state wins"
        );
        assert_eq!(newer.job_logs[&3], "ran");
    }

    #[test]
    fn answers_give_intervals_in_milliseconds() {
        let answer = parse_answer(
            br#"{"pingInterval":60000000000,"snapshotInterval":0,"commandInterval":5000000000,
                 "endpointID":12,"commands":[{"id":1}],"needFullSnapshot":true}"#,
        )
        .unwrap();
        assert_eq!(answer.intervals, [60_000, 0, 5_000]);
        assert_eq!(answer.endpoint_id, 12);
        assert_eq!(answer.commands.len(), 1);
        assert!(answer.need_full_snapshot);
        assert!(parse_answer(b"[]").is_err());
    }

    #[test]
    fn commands_decode_case_insensitively_and_keep_their_timestamp() {
        let raw = json!({"id": 5, "type": "container", "endpointID": 1,
            "timestamp": "2026-12-01T10:00:00.000000001+01:00", "op": "add", "path": "",
            "value": {"containerName": "web", "ContainerOperation": "delete",
                      "ContainerRemoveOptions": {"force": true, "RemoveVolumes": false}}});
        let command = parse_command(&raw).unwrap();
        assert_eq!(command.timestamp, "2026-12-01T10:00:00.000000001+01:00");
        assert_eq!(
            command.decoded,
            Ok(Command::Container {
                name: "web".into(),
                action: ContainerAction::Delete {
                    force: true,
                    volumes: false
                }
            })
        );
        let unknown =
            parse_command(&json!({"type": "teleport", "timestamp": "t", "value": {}})).unwrap();
        assert!(unknown.decoded.unwrap_err().contains("not supported"));
        let broken =
            parse_command(&json!({"type": "volume", "timestamp": "t", "value": 3})).unwrap();
        assert!(broken.decoded.is_err());
        assert!(
            parse_command(&json!({"type": "volume"})).is_none(),
            "no timestamp"
        );
    }

    #[test]
    fn stack_and_config_values_are_confined() {
        let content = base64::engine::general_purpose::STANDARD.encode("x");
        let stack = json!({"type": "edgeStack", "timestamp": "t", "op": "add", "value": {
            "ID": 9, "Name": "web", "DirEntries": [{"Name": "../escape.yml", "IsFile": true, "Content": content}]}});
        assert!(parse_command(&stack).unwrap().decoded.is_err());
        let config = json!({"ID": 4, "Name": "c", "BaseDir": "/etc/app",
            "DirEntries": [{"Name": "a.conf", "IsFile": true, "Content": content, "Permissions": 0o600}],
            "Prev": {"DirEntries": [{"Name": "old.conf", "IsFile": true, "Content": content}]}});
        let parsed = parse_edge_config(&config).unwrap();
        assert_eq!(parsed.base_dir, ["etc", "app"]);
        assert_eq!(parsed.files[0].components, ["a.conf"]);
        assert_eq!(parsed.files[0].mode, 0o600);
        assert_eq!(parsed.previous[0].components, ["old.conf"]);
        let escaping = json!({"ID": 4, "BaseDir": "/etc/../../root", "DirEntries": []});
        assert!(parse_edge_config(&escaping).is_err());
    }

    #[test]
    fn a_refused_command_still_owes_portainer_its_answer() {
        let content = base64::engine::general_purpose::STANDARD.encode("x");
        let command = |kind: &str, value: Value| {
            parse_command(&json!({"type": kind, "timestamp": "t", "op": "add", "value": value}))
                .unwrap()
        };
        let stack = command(
            "edgeStack",
            json!({"ID": 9, "Name": "web",
            "DirEntries": [{"Name": "../escape.yml", "IsFile": true, "Content": content}]}),
        );
        assert_eq!(stack.owed, Some(Owed::StackError(9)));
        let config = command("edgeConfig", json!({"ID": 4, "BaseDir": "/etc/../../root"}));
        assert!(config.decoded.unwrap_err().contains("leaves the host root"));
        assert_eq!(config.owed, Some(Owed::ConfigFailure(4)));
        let job = parse_command(
            &json!({"type": "edgeJob", "timestamp": "t", "op": "teleport",
            "value": {"ID": 3}}),
        )
        .unwrap();
        assert_eq!(job.owed, Some(Owed::JobLog(3)));
        let logs = command("edgeLog", json!({"EdgeStackID": 5}));
        assert_eq!(logs.owed, Some(Owed::StackLogs(5)));
        // Nothing is owed for a command that decoded, for commands
        // Portainer waits on no answer for, or without an ID to answer.
        let good = command("edgeConfig", json!({"ID": 4, "BaseDir": "/etc/app"}));
        assert_eq!((good.decoded.is_ok(), good.owed), (true, None));
        assert_eq!(command("volume", json!({"ID": 2})).owed, None);
        assert_eq!(command("edgeStack", json!({"Name": "x y"})).owed, None);
        assert_eq!(command("edgeConfig", json!("not an object")).owed, None);
    }
}
