//! An agent started by Portainer's updater (`UPDATE_ID`), on a real
//! engine: busybox containers stand in for the old agent (known only by
//! its start line, written as berth writes it, to stderr), the new agent
//! (named `<old>-update`, labelled with the schedule) and an exited
//! updater with a network of its own. berth itself runs beside them, not
//! in a container: it only acts on what it finds.

mod support;

use std::time::Duration;

use support::berth_process::{engine_host, BerthProcess};
use support::edge_world::docker_cli;
use support::eventually::eventually;
use support::unique::unique;

const IMAGE: &str = "berth-test/busybox:latest";
const LIMIT: Duration = Duration::from_secs(30);

/// Names of the containers (all states) whose name contains `part`.
fn containers_named(engine: &str, part: &str) -> Vec<String> {
    let mut names: Vec<String> = docker_cli(
        engine,
        &[
            "ps",
            "-a",
            "--filter",
            &format!("name={part}"),
            "--format",
            "{{.Names}}",
        ],
    )
    .lines()
    .map(str::to_string)
    .collect();
    names.sort();
    names
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_new_agent_replaces_the_old_one_and_cleans_up_after_the_updater() {
    let Some(engine) = engine_host() else { return };
    let old = unique("agent");
    let new = format!("{old}-update");
    let bystander = unique("bystander");
    let updater = unique("updater");
    let network = unique("updaternet");
    let update_id = "4242";
    let started = |args: &[&str]| {
        let id = docker_cli(&engine, args);
        assert_eq!(id.len(), 64, "docker {args:?} gave {id:?}");
    };
    started(&[
        "run", "-d", "--name", &old, IMAGE, "sh", "-c",
        "echo '2026-12-01T10:00:00Z  INFO starting Agent API server mode=\"edge\"' >&2; exec sleep 300",
    ]);
    started(&[
        "run",
        "-d",
        "--name",
        &new,
        "--label",
        "io.portainer.agent=true",
        "--label",
        &format!("io.portainer.update.scheduleId={update_id}"),
        IMAGE,
        "sleep",
        "300",
    ]);
    // Not an agent: a busy log without the start line, kept.
    started(&[
        "run",
        "-d",
        "--name",
        &bystander,
        IMAGE,
        "sh",
        "-c",
        "echo starting web server; exec sleep 300",
    ]);
    assert!(!docker_cli(&engine, &["network", "create", &network]).is_empty());
    let _ = docker_cli(
        &engine,
        &[
            "run",
            "--name",
            &updater,
            "--network",
            &network,
            "--label",
            "io.portainer.updater=true",
            IMAGE,
            "true",
        ],
    );
    assert_eq!(
        docker_cli(&engine, &["inspect", "-f", "{{.State.Status}}", &updater]),
        "exited"
    );

    let berth = BerthProcess::start(&[("DOCKER_HOST", &engine), ("UPDATE_ID", update_id)]);

    eventually(
        "the old agent removed and the new one renamed",
        LIMIT,
        async || {
            containers_named(&engine, &old) == [old.clone()]
                && docker_cli(
                    &engine,
                    &[
                        "inspect",
                        "-f",
                        "{{index .Config.Labels \"io.portainer.update.scheduleId\"}}",
                        &old,
                    ],
                ) == update_id
        },
    )
    .await;
    eventually(
        "the exited updater and its network removed",
        LIMIT,
        async || {
            containers_named(&engine, &updater).is_empty()
                && docker_cli(
                    &engine,
                    &[
                        "network",
                        "ls",
                        "-q",
                        "--filter",
                        &format!("name={network}"),
                    ],
                )
                .is_empty()
        },
    )
    .await;
    assert_eq!(containers_named(&engine, &bystander), [bystander.as_str()]);
    assert!(berth.logged_within("the old agent container is removed", LIMIT));
    assert!(berth.logged_within("the new agent container takes the old name", LIMIT));
    drop(berth);
    let _ = docker_cli(&engine, &["rm", "-f", &old, &bystander]);
}
