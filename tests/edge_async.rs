//! Async Edge mode end to end: a berth process against the real engine and
//! a scripted Portainer (`tests/async-portainer/server.py`) that keeps the
//! last acknowledged snapshot, applies each patch with Python's `jsonpatch`
//! (not berth's code) after checking its base hash, and sends commands.
//! The snapshots are checked against the engine's real state; the
//! commands act on the real engine, compose and the host root.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};
use support::async_portainer::{command, python, AsyncPortainer};
use support::berth_process::{engine_host, engine_socket, BerthProcess};
use support::client::Target;
use support::edge_world::{async_stack_payload, docker_cli, host_root, EDGE_ID, TOOLS_ENV};
use support::eventually::eventually;
use support::temp_dir::{temp_dir, TempDir};

const LONG: Duration = Duration::from_secs(60);
const IMAGE: &str = "berth-test/busybox:latest";

/// An Edge key for `portainer`; endpoint 0 makes it a global key.
fn async_key(portainer: &AsyncPortainer, endpoint: u64) -> String {
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(format!(
        "{}|127.0.0.1:9|no-tunnel-in-async-mode|{endpoint}",
        portainer.url()
    ))
}

struct World {
    portainer: AsyncPortainer,
    engine: String,
    data: TempDir,
    root: TempDir,
}

impl World {
    async fn start(name: &str) -> Option<World> {
        let engine = engine_host()?;
        let python = python()?;
        let world = World {
            portainer: AsyncPortainer::start(&python),
            engine,
            data: temp_dir(&format!("async-{name}-data")),
            root: host_root(&format!("async-{name}-root")),
        };
        // Snapshots and commands every 300 ms from the first answer on.
        world.portainer.set_intervals(0, 300, 300).await;
        Some(world)
    }

    fn berth(&self) -> BerthProcess {
        self.berth_for(1)
    }

    fn berth_for(&self, endpoint: u64) -> BerthProcess {
        let key = async_key(&self.portainer, endpoint);
        let mut env = vec![
            ("DOCKER_HOST", self.engine.as_str()),
            ("EDGE", "1"),
            ("EDGE_ASYNC", "1"),
            ("EDGE_ID", EDGE_ID),
            ("EDGE_KEY", key.as_str()),
            ("AGENT_ADVERTISE_ADDR", "127.0.0.1"),
            ("DATA_PATH", self.data.to_str().unwrap()),
            ("AGENT_HOST_ROOT", self.root.to_str().unwrap()),
            ("EDGE_GROUPS", "4:5"),
        ];
        env.extend_from_slice(&TOOLS_ENV);
        BerthProcess::start(&env)
    }

    fn socket(&self) -> Target {
        Target::Socket(engine_socket(&self.engine))
    }

    /// The engine's own container list: ID → state.
    async fn engine_containers(&self) -> Vec<(String, String)> {
        let (_, list) = self
            .socket()
            .json("GET", "/containers/json?all=1", "")
            .await;
        let mut states: Vec<(String, String)> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                (
                    c["Id"].as_str().unwrap().into(),
                    c["State"].as_str().unwrap().into(),
                )
            })
            .collect();
        states.sort();
        states
    }
}

/// The containers Portainer's copy of the snapshot holds: ID → state.
fn snapshot_containers(state: &Value) -> Vec<(String, String)> {
    let mut states: Vec<(String, String)> = state["snapshot"]["DockerSnapshotRaw"]["Containers"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|c| {
                    (
                        c["Id"].as_str().unwrap().into(),
                        c["State"].as_str().unwrap().into(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    states.sort();
    states
}

fn requests(state: &Value) -> &Vec<Value> {
    state["requests"].as_array().unwrap()
}

fn unique(name: &str) -> String {
    support::unique::unique(&format!("berth-async-{name}-"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn snapshots_and_patches_keep_portainer_in_step_with_the_engine() {
    let Some(world) = World::start("snapshots").await else {
        return;
    };
    let started = Instant::now();
    let berth = world.berth();
    let portainer = &world.portainer;

    // The first request goes out at once, with the whole snapshot, gzipped.
    let state = portainer
        .wait("the first request", LONG, |s| !requests(s).is_empty())
        .await;
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "not a minute later"
    );
    let first = &requests(&state)[0];
    assert_eq!(first["gzipped"], true);
    assert_eq!(first["snapshot_keys"][0], "docker");
    assert_eq!(first["commandTimestamp"], "2000-01-01T00:00:00Z");
    assert_eq!(first["headers"]["x-portaineragent-edgeid"], EDGE_ID);
    assert_eq!(first["headers"]["portainer-agent"], "2.23.0");
    assert_eq!(first["headers"]["content-encoding"], "gzip");
    assert_eq!(first["metaFields"]["edgeGroupsIds"], json!([4, 5]));
    assert!(first["wire_size"].as_u64() < first["plain_size"].as_u64());
    let snapshot = &state["snapshot"];
    assert_eq!(
        snapshot["ContainerCount"],
        snapshot["DockerSnapshotRaw"]["Containers"]
            .as_array()
            .unwrap()
            .len()
    );

    // A container runs, then stops: patches carry it, and Portainer's copy
    // matches the engine.
    let name = unique("snap");
    let id = docker_cli(
        &world.engine,
        &["run", "-d", "--name", &name, IMAGE, "sleep", "300"],
    );
    assert!(!id.is_empty());
    portainer
        .wait("the running container in Portainer's copy", LONG, |s| {
            snapshot_containers(s)
                .iter()
                .any(|(c, st)| c == &id && st == "running")
        })
        .await;
    docker_cli(&world.engine, &["kill", &name]);
    portainer
        .wait("the stopped container in Portainer's copy", LONG, |s| {
            snapshot_containers(s)
                .iter()
                .any(|(c, st)| c == &id && st == "exited")
        })
        .await;
    // Other tests share the engine and change their containers meanwhile:
    // Portainer's copy must catch up with the engine, not match one instant.
    let deadline = Instant::now() + LONG;
    let state = loop {
        let engine = world.engine_containers().await;
        let state = portainer.state().await;
        if snapshot_containers(&state) == engine || Instant::now() > deadline {
            assert_eq!(snapshot_containers(&state), engine);
            break state;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        state["hash_mismatches"], 0,
        "every patch applied on its base"
    );
    assert!(state["patches_applied"].as_u64().unwrap() >= 2);
    // A container's change is a few operations, smaller than the whole
    // snapshot. Other tests share the engine and change their containers in
    // the same interval, so a patch may carry theirs too (one CI run saw 25
    // operations, 3,918 bytes against 6,061): bounded loosely here, exactly
    // in the domain's diff tests.
    let full_size = state["snapshot"].to_string().len() as u64;
    let patches: Vec<(u64, u64)> = requests(&state)
        .iter()
        .filter_map(|r| Some((r["patch_operations"].as_u64()?, r["patch_size"].as_u64()?)))
        .collect();
    assert!(
        patches
            .iter()
            .any(|(ops, size)| (1..=40).contains(ops) && *size < full_size),
        "{patches:?} against a whole snapshot of {full_size} bytes"
    );

    // Portainer asks for the whole snapshot: the next one is whole.
    let seen = requests(&state).len();
    portainer.ask_for_full_snapshot().await;
    portainer
        .wait("a whole snapshot again", LONG, |s| {
            requests(s)[seen..]
                .iter()
                .skip(1)
                .any(|r| r["snapshot_keys"][0] == "docker")
        })
        .await;
    docker_cli(&world.engine, &["rm", "-f", &name]);
    drop(berth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_key_takes_its_endpoint_from_answers_and_gives_it_back_when_refused() {
    let Some(world) = World::start("global").await else {
        return;
    };
    let berth = world.berth_for(0);
    let portainer = &world.portainer;
    let endpoints = |state: &Value| -> Vec<(u64, u64)> {
        requests(state)
            .iter()
            .map(|r| {
                (
                    // Omitted when 0, as Go's omitempty omits it.
                    r["endpointId"].as_u64().unwrap_or(0),
                    r["status"].as_u64().unwrap_or(0),
                )
            })
            .collect()
    };
    let state = portainer
        .wait("a request naming the endpoint given", LONG, |s| {
            endpoints(s).iter().any(|(e, _)| *e == 1)
        })
        .await;
    assert_eq!(endpoints(&state)[0].0, 0, "a global key starts with none");
    assert!(
        !requests(&state)[0]["keys"]
            .as_array()
            .unwrap()
            .contains(&json!("endpointId")),
        "{}",
        requests(&state)[0]
    );

    portainer.refuse(&[403]).await;
    let state = portainer
        .wait(
            "the endpoint asked for again after the refusal",
            LONG,
            |s| {
                let seen = endpoints(s);
                let Some(refused) = seen.iter().position(|(_, status)| *status == 403) else {
                    return false;
                };
                seen[refused + 1..].iter().any(|(e, _)| *e == 1)
            },
        )
        .await;
    let seen = endpoints(&state);
    let refused = seen.iter().position(|(_, status)| *status == 403).unwrap();
    assert_eq!(
        seen[refused + 1].0,
        0,
        "the refusal gave the endpoint back: {seen:?}"
    );
    let first_after = &requests(&state)[refused + 1];
    assert_eq!(
        first_after["snapshot_keys"][0], "docker",
        "after a refusal the whole snapshot goes again"
    );
    drop(berth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_act_on_the_real_engine_once_even_across_a_restart() {
    let Some(world) = World::start("commands").await else {
        return;
    };
    let mut berth = world.berth();
    let portainer = &world.portainer;
    let web = unique("web");
    docker_cli(
        &world.engine,
        &["run", "-d", "--name", &web, IMAGE, "sleep", "300"],
    );
    let volume = unique("vol");
    docker_cli(&world.engine, &["volume", "create", &volume]);
    let image = format!("berth-test/busybox:{}", unique("tag"));
    docker_cli(&world.engine, &["tag", IMAGE, &image]);
    let state_of = |name: String| {
        let socket = world.socket();
        async move {
            let (status, c) = socket
                .json("GET", &format!("/containers/{name}/json"), "")
                .await;
            (status == 200).then(|| c["State"]["Status"].as_str().unwrap_or("").to_string())
        }
    };
    let container = |n: u64, operation: &str| {
        command(
            n,
            "container",
            "add",
            json!({"ContainerName": web, "ContainerOperation": operation}),
        )
    };
    portainer
        .add_commands(vec![
            container(1, "stop"),
            // Unknown and broken commands are skipped; the next ones still run.
            command(2, "teleport", "add", json!({})),
            command(3, "volume", "add", json!(42)),
        ])
        .await;
    eventually("the container stopped", LONG, async || {
        state_of(web.clone()).await.as_deref() == Some("exited")
    })
    .await;
    portainer.add_commands(vec![container(4, "start")]).await;
    eventually("the container started", LONG, async || {
        state_of(web.clone()).await.as_deref() == Some("running")
    })
    .await;
    portainer
        .add_commands(vec![
            container(5, "kill"),
            command(
                6,
                "container",
                "add",
                json!({"containerName": web, "containerOperation": "delete",
                "ContainerRemoveOptions": {"Force": true}}),
            ),
            command(
                7,
                "image",
                "add",
                json!({"ImageName": image, "ImageOperation": "delete"}),
            ),
            command(
                8,
                "volume",
                "add",
                json!({"VolumeName": volume, "VolumeOperation": "delete"}),
            ),
        ])
        .await;
    let last = "2026-12-01T10:00:00.000000008Z";
    portainer
        .wait("the last command's timestamp", LONG, |s| {
            requests(s).iter().any(|r| r["commandTimestamp"] == last)
        })
        .await;
    assert_eq!(state_of(web.clone()).await, None, "the container is gone");
    let (status, _) = world
        .socket()
        .json(
            "GET",
            &format!("/images/{}/json", image.replace('/', "%2F")),
            "",
        )
        .await;
    assert_eq!(status, 404, "the image is gone");
    let (status, _) = world
        .socket()
        .json("GET", &format!("/volumes/{volume}"), "")
        .await;
    assert_eq!(status, 404, "the volume is gone");
    assert!(berth.is_running(), "skipped commands do not stop the agent");

    // Restarted, berth asks from where it was: nothing runs twice.
    drop(berth);
    let before = requests(&portainer.state().await).len();
    let berth = world.berth();
    let state = portainer
        .wait("a request after the restart", LONG, |s| {
            requests(s).len() > before
        })
        .await;
    let after = &requests(&state)[before];
    assert_eq!(after["commandTimestamp"], last);
    assert_eq!(after["commands_sent"], json!([]));
    drop(berth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_stack_deploys_and_its_statuses_and_logs_ride_on_snapshots() {
    let Some(world) = World::start("stack").await else {
        return;
    };
    let berth = world.berth();
    let portainer = &world.portainer;
    let name = format!("async{}", std::process::id());
    let compose = format!(
        "version: '3'\nservices:\n  app:\n    image: {IMAGE}\n    command: sh -c 'echo stack-says-hello; sleep 300'\n"
    );
    // A refused post: the reports it carried come with the next one.
    portainer.refuse(&[503, 503]).await;
    portainer
        .add_commands(vec![command(
            1,
            "edgeStack",
            "add",
            async_stack_payload(41, &name, &compose),
        )])
        .await;
    let statuses = |state: &Value| -> Vec<u64> {
        state["statuses"]["41"]
            .as_array()
            .map(|list| list.iter().filter_map(|r| r["Type"].as_u64()).collect())
            .unwrap_or_default()
    };
    let state = portainer
        .wait("the stack running", Duration::from_secs(120), |s| {
            statuses(s).contains(&7)
        })
        .await;
    let codes = statuses(&state);
    assert_eq!(codes.first(), Some(&3), "acknowledged first: {codes:?}");
    assert!(codes.contains(&8), "deploying: {codes:?}");

    // Its logs, asked for.
    portainer
        .add_commands(vec![command(
            2,
            "edgeLog",
            "add",
            json!({"EdgeStackID": 41, "EdgeStackName": name, "Tail": 10}),
        )])
        .await;
    let state = portainer
        .wait("the stack's logs", LONG, |s| {
            s["stack_logs"]["41"].is_array()
        })
        .await;
    let logs = state["stack_logs"]["41"].to_string();
    assert!(logs.contains("stack-says-hello"), "{logs}");

    portainer
        .add_commands(vec![command(
            3,
            "edgeStack",
            "remove",
            async_stack_payload(41, &name, &compose),
        )])
        .await;
    let state = portainer
        .wait("the stack removed", Duration::from_secs(120), |s| {
            statuses(s).contains(&4)
        })
        .await;
    assert!(statuses(&state).contains(&9), "removing first");
    let left = docker_cli(
        &world.engine,
        &[
            "ps",
            "-aq",
            "--filter",
            &format!("label=com.docker.compose.project=edge_{name}"),
        ],
    );
    assert!(left.is_empty(), "{left}");

    // A stack deployed outside Edge, removed by a `normalStack` command.
    let normal = format!("normal{}", std::process::id());
    let folder = temp_dir("async-normal-stack");
    std::fs::write(folder.join("docker-compose.yml"), &compose).unwrap();
    let up = std::process::Command::new("docker-compose")
        .args(["-p", &normal, "up", "-d"])
        .current_dir(&*folder)
        .env("DOCKER_HOST", &world.engine)
        .output()
        .unwrap();
    assert!(
        up.status.success(),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    let project = format!("label=com.docker.compose.project={normal}");
    assert!(!docker_cli(&world.engine, &["ps", "-aq", "--filter", &project]).is_empty());
    portainer
        .add_commands(vec![command(
            4,
            "normalStack",
            "add",
            json!({"Name": normal, "StackFileContent": compose, "StackOperation": "remove"}),
        )])
        .await;
    eventually("the normal stack removed", LONG, async || {
        docker_cli(&world.engine, &["ps", "-aq", "--filter", &project]).is_empty()
    })
    .await;
    drop(berth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_configurations_and_jobs_work_in_the_host_root() {
    let Some(world) = World::start("configs").await else {
        return;
    };
    let mut berth = world.berth();
    let portainer = &world.portainer;
    let encode = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let entry = |name: &str, text: &str| json!({"Name": name, "IsFile": true, "Content": encode(text), "Permissions": 0o600});
    let config = |files: Value, previous: Value| {
        json!({"ID": 4, "Name": "app", "BaseDir": "/etc/berth-app", "DirEntries": files,
               "Prev": {"DirEntries": previous}})
    };
    let folder = world.root.join("etc/berth-app");
    portainer
        .add_commands(vec![command(
            1,
            "edgeConfig",
            "add",
            config(
                json!([entry("a.conf", "alpha"), entry("sub/b.conf", "beta")]),
                json!([]),
            ),
        )])
        .await;
    portainer
        .wait("the configuration saved", LONG, |s| {
            s["config_states"]["4"] == 0
        })
        .await;
    assert_eq!(
        std::fs::read_to_string(folder.join("a.conf")).unwrap(),
        "alpha"
    );
    assert_eq!(
        std::fs::read_to_string(folder.join("sub/b.conf")).unwrap(),
        "beta"
    );
    let mode = std::fs::metadata(folder.join("a.conf"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    // An update deletes the version before, then saves.
    portainer
        .add_commands(vec![command(
            2,
            "edgeConfig",
            "replace",
            config(
                json!([entry("c.conf", "gamma")]),
                json!([entry("a.conf", ""), entry("sub/b.conf", "")]),
            ),
        )])
        .await;
    eventually("the configuration updated", LONG, async || {
        folder.join("c.conf").exists() && !folder.join("a.conf").exists()
    })
    .await;
    assert!(!folder.join("sub/b.conf").exists());

    // A folder outside the host root is refused; an invalid one fails.
    let outside = world.root.parent().unwrap().join("escaped.conf");
    portainer
        .add_commands(vec![
            command(
                3,
                "edgeConfig",
                "add",
                json!({"ID": 5, "BaseDir": "/../..", "DirEntries": [entry("escaped.conf", "x")]}),
            ),
            command(
                4,
                "edgeConfig",
                "add",
                json!({"ID": 6, "BaseDir": "/etc", "Invalid": true, "DirEntries": []}),
            ),
            command(
                5,
                "edgeConfig",
                "remove",
                config(json!([entry("c.conf", "")]), json!([])),
            ),
        ])
        .await;
    // Both are answered Failure (1): Portainer would show them saving for
    // ever otherwise.
    portainer
        .wait(
            "the refused and the invalid configurations failed",
            LONG,
            |s| s["config_states"]["6"] == 1 && s["config_states"]["5"] == 1,
        )
        .await;
    eventually("the configuration deleted", LONG, async || {
        !folder.join("c.conf").exists()
    })
    .await;
    assert!(
        !outside.exists(),
        "nothing is written outside the host root"
    );

    // A job with its logs collected: its output rides on a snapshot.
    let script = base64::engine::general_purpose::STANDARD_NO_PAD.encode("echo async-job-ran");
    portainer
        .add_commands(vec![command(
            6,
            "edgeJob",
            "add",
            json!({"ID": 9,
            "CronExpression": "* * * * * *", "ScriptFileContent": script, "Version": 1,
            "CollectLogs": false}),
        )])
        .await;
    let log = world.root.join("opt/portainer/scripts/schedule_9.log");
    eventually("the job ran", LONG, async || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("async-job-ran"))
    })
    .await;
    portainer
        .add_commands(vec![command(
            7,
            "edgeJob",
            "replace",
            json!({"ID": 9,
            "CronExpression": "* * * * * *", "ScriptFileContent": script, "Version": 1,
            "CollectLogs": true}),
        )])
        .await;
    let state = portainer
        .wait("the job's log", LONG, |s| s["job_logs"]["9"].is_object())
        .await;
    assert!(state["job_logs"]["9"]["LogFileContent"]
        .as_str()
        .unwrap()
        .contains("async-job-ran"));
    assert!(berth.is_running());
    drop(berth);
}
