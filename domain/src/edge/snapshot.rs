//! The Docker snapshot an async Edge agent posts (reference §10.6), made
//! as Portainer's own snapshot code makes it (`pkg/snapshot/docker.go`)
//! and in the field order of Portainer's `DockerSnapshot`, so the JSON is
//! the one Go would write and its hash the one Portainer computes:
//!
//! - `Swarm` is `/info`'s `Swarm.ControlAvailable`; `DockerVersion` its
//!   `ServerVersion`; CPU and memory from `/info`, or summed over the nodes
//!   of a swarm (whose `NodeCount` is theirs; a standalone engine's is 0,
//!   as Portainer leaves it).
//! - `ContainerCount` is every container (the Go agent 2.23 leaves it 0;
//!   Portainer's code counts them); running is state `running`, stopped
//!   `exited` or `stopped` (not `created`); healthy and unhealthy come from
//!   the status text.
//! - Stacks are the distinct compose projects of containers plus the
//!   distinct stack namespaces of services.
//! - GPU use comes from the running containers' device requests (driver
//!   `nvidia`, or a first capability `gpu`); `Env` is kept for running
//!   containers only.
//! - Networks, volumes and each container's mounts are sorted by name, as
//!   the Go agent sorts them before diffing.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

/// The engine's answers a snapshot is made from, as the engine gave them.
#[derive(Debug, Clone, Default)]
pub struct EngineState {
    /// `GET /info`.
    pub info: Value,
    /// `GET /version`.
    pub version: Value,
    /// `GET /containers/json?all=1`.
    pub containers: Vec<Value>,
    /// `GET /containers/<id>/json` of the running containers, by ID.
    pub inspections: BTreeMap<String, Value>,
    /// `GET /images/json`.
    pub images: Vec<Value>,
    /// `GET /volumes`: `{"Volumes": [...], "Warnings": ...}`.
    pub volumes: Value,
    /// `GET /networks`.
    pub networks: Vec<Value>,
    /// `GET /services` and `GET /nodes` on a swarm manager.
    pub services: Vec<Value>,
    pub nodes: Vec<Value>,
}

const COMPOSE_PROJECT: &str = "com.docker.compose.project";
const STACK_NAMESPACE: &str = "com.docker.stack.namespace";

fn text<'a>(value: &'a Value, path: &[&str]) -> &'a str {
    follow(value, path).and_then(Value::as_str).unwrap_or("")
}

fn follow<'a>(value: &'a Value, path: &[&str]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(*key))
}

fn integer(value: &Value, path: &[&str]) -> i64 {
    follow(value, path).and_then(Value::as_i64).unwrap_or(0)
}

fn sort_by_name(items: &mut [Value]) {
    items.sort_by(|a, b| text(a, &["Name"]).cmp(text(b, &["Name"])));
}

/// The GPUs a running container asked for: all of them, or these IDs.
fn gpu_use(inspection: &Value) -> Option<(bool, Vec<String>)> {
    let requests = follow(inspection, &["HostConfig", "DeviceRequests"])?.as_array()?;
    // The last GPU request wins, as in Portainer's loop.
    let gpu = requests.iter().rfind(|request| {
        text(request, &["Driver"]) == "nvidia"
            || follow(request, &["Capabilities"])
                .and_then(|c| c.get(0))
                .and_then(|c| c.get(0))
                .and_then(Value::as_str)
                == Some("gpu")
    })?;
    let all = integer(gpu, &["Count"]) == -1;
    let ids = follow(gpu, &["DeviceIDs"])
        .and_then(Value::as_array)
        .map(|ids| {
            ids.iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    Some((all, ids))
}

/// The snapshot of `state`, taken at `time` (Unix seconds).
pub fn docker_snapshot(state: EngineState, time: i64) -> Value {
    let EngineState {
        info,
        version,
        containers,
        inspections,
        images,
        volumes,
        mut networks,
        services,
        nodes,
    } = state;
    let swarm = follow(&info, &["Swarm", "ControlAvailable"])
        .and_then(Value::as_bool)
        .unwrap_or(false);
    let (mut total_cpu, mut total_memory) =
        (integer(&info, &["NCPU"]), integer(&info, &["MemTotal"]));
    let mut node_count = 0;
    let mut stacks: BTreeSet<String> = BTreeSet::new();
    if swarm {
        let nano_cpus: i64 = nodes
            .iter()
            .map(|n| integer(n, &["Description", "Resources", "NanoCPUs"]))
            .sum();
        total_cpu = nano_cpus / 1_000_000_000;
        total_memory = nodes
            .iter()
            .map(|n| integer(n, &["Description", "Resources", "MemoryBytes"]))
            .sum();
        node_count = nodes.len();
        for service in &services {
            let namespace = text(service, &["Spec", "Labels", STACK_NAMESPACE]);
            if follow(service, &["Spec", "Labels", STACK_NAMESPACE]).is_some() {
                stacks.insert(format!("stack:{namespace}"));
            }
        }
    }
    let service_count = if swarm { services.len() } else { 0 };

    let (mut running, mut stopped, mut healthy, mut unhealthy) = (0, 0, 0, 0);
    let mut gpu_all = false;
    let mut gpu_ids: BTreeSet<String> = BTreeSet::new();
    let mut raw_containers = Vec::with_capacity(containers.len());
    for container in containers {
        if let Some(project) = follow(&container, &["Labels", COMPOSE_PROJECT]) {
            stacks.insert(format!("compose:{}", project.as_str().unwrap_or("")));
        }
        let state_text = text(&container, &["State"]);
        match state_text {
            "running" => running += 1,
            "exited" | "stopped" => stopped += 1,
            _ => {}
        }
        let status = text(&container, &["Status"]);
        if status.contains("(healthy)") {
            healthy += 1;
        }
        if status.contains("(unhealthy)") {
            unhealthy += 1;
        }
        let is_running = state_text == "running";
        let id = text(&container, &["Id"]).to_string();
        let inspection = inspections.get(&id).filter(|_| is_running);
        if let Some((all, ids)) = inspection.and_then(gpu_use) {
            gpu_all |= all;
            gpu_ids.extend(ids);
        }
        let env = inspection
            .and_then(|i| follow(i, &["Config", "Env"]))
            .and_then(Value::as_array)
            .filter(|env| !env.is_empty())
            .cloned();
        raw_containers.push(container_snapshot(container, env));
    }

    let mut volumes = volumes;
    let volume_count = match volumes.get_mut("Volumes").and_then(Value::as_array_mut) {
        Some(list) => {
            sort_by_name(list);
            list.len()
        }
        None => 0,
    };
    sort_by_name(&mut networks);
    let is_podman = follow(&version, &["Components"])
        .and_then(Value::as_array)
        .is_some_and(|components| {
            components
                .iter()
                .any(|c| text(c, &["Name"]).to_ascii_lowercase().contains("podman"))
        });

    let mut snapshot = Map::new();
    snapshot.insert("Time".into(), json!(time));
    snapshot.insert(
        "DockerVersion".into(),
        json!(text(&info, &["ServerVersion"])),
    );
    snapshot.insert("Swarm".into(), json!(swarm));
    snapshot.insert("TotalCPU".into(), json!(total_cpu));
    snapshot.insert("TotalMemory".into(), json!(total_memory));
    snapshot.insert("ContainerCount".into(), json!(raw_containers.len()));
    snapshot.insert("RunningContainerCount".into(), json!(running));
    snapshot.insert("StoppedContainerCount".into(), json!(stopped));
    snapshot.insert("HealthyContainerCount".into(), json!(healthy));
    snapshot.insert("UnhealthyContainerCount".into(), json!(unhealthy));
    snapshot.insert("VolumeCount".into(), json!(volume_count));
    snapshot.insert("ImageCount".into(), json!(images.len()));
    snapshot.insert("ServiceCount".into(), json!(service_count));
    snapshot.insert("StackCount".into(), json!(stacks.len()));
    let mut raw = Map::new();
    raw.insert("Containers".into(), Value::Array(raw_containers));
    raw.insert("Volumes".into(), volumes);
    raw.insert("Networks".into(), Value::Array(networks));
    raw.insert("Images".into(), Value::Array(images));
    raw.insert("Info".into(), info);
    raw.insert("Version".into(), version);
    snapshot.insert("DockerSnapshotRaw".into(), Value::Object(raw));
    snapshot.insert("NodeCount".into(), json!(node_count));
    snapshot.insert("GpuUseAll".into(), json!(gpu_all));
    snapshot.insert(
        "GpuUseList".into(),
        Value::Array(gpu_ids.into_iter().map(Value::String).collect()),
    );
    snapshot.insert("IsPodman".into(), json!(is_podman));
    snapshot.insert("DiagnosticsData".into(), Value::Null);
    snapshot.insert("PerformanceMetrics".into(), Value::Null);
    Value::Object(snapshot)
}

/// The RFC 6902 patch that turns `previous` into `current`, as the async
/// agent sends once Portainer holds a snapshot.
pub fn patch_between(previous: &Value, current: &Value) -> Value {
    serde_json::to_value(json_patch::diff(previous, current))
        .unwrap_or_else(|_| Value::Array(Vec::new()))
}

/// A container as Portainer's `DockerContainerSnapshot` holds it: Docker's
/// fields, mounts sorted by name, then `Env` when there is one.
fn container_snapshot(container: Value, env: Option<Vec<Value>>) -> Value {
    let Value::Object(mut fields) = container else {
        return container;
    };
    if let Some(Value::Array(mounts)) = fields.get_mut("Mounts") {
        sort_by_name(mounts);
    }
    if let Some(env) = env {
        fields.insert("Env".into(), Value::Array(env));
    }
    Value::Object(fields)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn container(id: &str, state: &str, status: &str, labels: Value) -> Value {
        json!({"Id": id, "Names": [format!("/{id}")], "State": state, "Status": status,
               "Labels": labels, "Mounts": [{"Name": "b"}, {"Name": "a"}]})
    }

    fn state() -> EngineState {
        let containers = vec![
            container(
                "web",
                "running",
                "Up 2 minutes (healthy)",
                json!({COMPOSE_PROJECT: "shop"}),
            ),
            container(
                "db",
                "running",
                "Up 2 minutes (unhealthy)",
                json!({COMPOSE_PROJECT: "shop"}),
            ),
            container("old", "exited", "Exited (0) 1 hour ago", json!({})),
            container("new", "created", "Created", json!({COMPOSE_PROJECT: "lab"})),
        ];
        let inspections = BTreeMap::from([
            (
                "web".to_string(),
                json!({"Config": {"Env": ["A=1"]}, "HostConfig": {"DeviceRequests": [
                    {"Driver": "", "Count": 0, "DeviceIDs": ["GPU-2", "GPU-1"], "Capabilities": [["gpu"]]}]}}),
            ),
            (
                "db".to_string(),
                json!({"Config": {"Env": []}, "HostConfig": {}}),
            ),
            ("old".to_string(), json!({"Config": {"Env": ["SECRET=1"]}})),
        ]);
        EngineState {
            info: json!({"ServerVersion": "26.1.5", "NCPU": 2, "MemTotal": 1024,
                         "Swarm": {"ControlAvailable": false}}),
            version: json!({"Components": [{"Name": "Engine"}]}),
            containers,
            inspections,
            images: vec![json!({"Id": "sha256:1"})],
            volumes: json!({"Volumes": [{"Name": "z"}, {"Name": "a"}], "Warnings": null}),
            networks: vec![json!({"Name": "none"}), json!({"Name": "bridge"})],
            services: vec![],
            nodes: vec![],
        }
    }

    #[test]
    fn counts_follow_portainers_snapshot_code() {
        let snapshot = docker_snapshot(state(), 1_700_000_000);
        assert_eq!(snapshot["Time"], 1_700_000_000);
        assert_eq!(snapshot["DockerVersion"], "26.1.5");
        assert_eq!(snapshot["ContainerCount"], 4);
        assert_eq!(snapshot["RunningContainerCount"], 2);
        assert_eq!(
            snapshot["StoppedContainerCount"], 1,
            "created is not stopped"
        );
        assert_eq!(snapshot["HealthyContainerCount"], 1);
        assert_eq!(snapshot["UnhealthyContainerCount"], 1);
        assert_eq!(snapshot["StackCount"], 2, "shop and lab");
        assert_eq!(snapshot["VolumeCount"], 2);
        assert_eq!(snapshot["ImageCount"], 1);
        assert_eq!(snapshot["NodeCount"], 0);
        assert_eq!(snapshot["TotalCPU"], 2);
        assert_eq!(snapshot["GpuUseAll"], false);
        assert_eq!(snapshot["GpuUseList"], json!(["GPU-1", "GPU-2"]));
        assert_eq!(snapshot["IsPodman"], false);
    }

    #[test]
    fn env_is_kept_for_running_containers_and_lists_are_sorted() {
        let snapshot = docker_snapshot(state(), 0);
        let raw = &snapshot["DockerSnapshotRaw"];
        let containers = raw["Containers"].as_array().unwrap();
        assert_eq!(containers[0]["Env"], json!(["A=1"]));
        assert!(containers[1].get("Env").is_none(), "empty Env is left out");
        assert!(containers[2].get("Env").is_none(), "stopped: no Env");
        assert_eq!(
            containers[0]["Mounts"],
            json!([{"Name": "a"}, {"Name": "b"}])
        );
        assert_eq!(
            raw["Networks"],
            json!([{"Name": "bridge"}, {"Name": "none"}])
        );
        assert_eq!(
            raw["Volumes"]["Volumes"],
            json!([{"Name": "a"}, {"Name": "z"}])
        );
    }

    #[test]
    fn fields_come_in_portainers_struct_order() {
        let snapshot = docker_snapshot(state(), 0);
        let keys: Vec<&str> = snapshot
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(
            keys,
            [
                "Time",
                "DockerVersion",
                "Swarm",
                "TotalCPU",
                "TotalMemory",
                "ContainerCount",
                "RunningContainerCount",
                "StoppedContainerCount",
                "HealthyContainerCount",
                "UnhealthyContainerCount",
                "VolumeCount",
                "ImageCount",
                "ServiceCount",
                "StackCount",
                "DockerSnapshotRaw",
                "NodeCount",
                "GpuUseAll",
                "GpuUseList",
                "IsPodman",
                "DiagnosticsData",
                "PerformanceMetrics"
            ]
        );
    }

    #[test]
    fn one_stopped_container_is_a_small_patch() {
        let before = docker_snapshot(state(), 1);
        let mut stopped = state();
        stopped.containers[1]["State"] = json!("exited");
        stopped.containers[1]["Status"] = json!("Exited (0) 1 second ago");
        let after = docker_snapshot(stopped, 2);
        let patch = patch_between(&before, &after);
        let operations = patch.as_array().unwrap();
        assert!(operations.len() <= 6, "{patch}");
        let mut applied = before.clone();
        let parsed: json_patch::Patch = serde_json::from_value(patch).unwrap();
        json_patch::patch(&mut applied, &parsed).unwrap();
        assert_eq!(applied, after);
    }

    #[test]
    fn a_swarm_counts_its_nodes_services_and_stacks() {
        let mut swarm = state();
        swarm.info["Swarm"]["ControlAvailable"] = json!(true);
        swarm.nodes = vec![
            json!({"Description": {"Resources": {"NanoCPUs": 4_000_000_000i64, "MemoryBytes": 100}}}),
            json!({"Description": {"Resources": {"NanoCPUs": 2_000_000_000i64, "MemoryBytes": 50}}}),
        ];
        swarm.services = vec![
            json!({"Spec": {"Labels": {STACK_NAMESPACE: "edge_a"}}}),
            json!({"Spec": {"Labels": {STACK_NAMESPACE: "edge_a"}}}),
            json!({"Spec": {"Labels": {}}}),
        ];
        swarm.version = json!({"Components": [{"Name": "Podman Engine"}]});
        let snapshot = docker_snapshot(swarm, 0);
        assert_eq!(snapshot["Swarm"], true);
        assert_eq!(snapshot["NodeCount"], 2);
        assert_eq!(snapshot["TotalCPU"], 6);
        assert_eq!(snapshot["TotalMemory"], 150);
        assert_eq!(snapshot["ServiceCount"], 3);
        assert_eq!(snapshot["StackCount"], 3, "edge_a, shop, lab");
        assert_eq!(snapshot["IsPodman"], true);
    }
}
