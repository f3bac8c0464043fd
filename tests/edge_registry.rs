//! Private registries for Edge stacks, against a real registry (Debian's
//! docker-registry with htpasswd), the real docker and compose CLIs and
//! the real engine: the stack's credentials reach the CLIs through
//! berth's credential helper and its loopback lookup, and only while that
//! stack deploys. Also the lookup and the helper on their own: what they
//! answer outside Edge mode and for each action of the helper protocol.

mod support;

use std::process::Command;
use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use serde_json::json;
use support::berth_process::{engine_host, BerthProcess};
use support::edge_world::{
    codes, docker_cli, edge_key, start_edge_berth, wait_statuses, EdgeWorld, TOOLS_ENV,
};
use support::piped::run_with_input;
use support::portainer_ce;
use support::registry::{self, Registry, PASSWORD, USER};
use support::unique::unique;

const IMAGE: &str = "berth-test/busybox:latest";

fn private_stack(name: &str, image: &str, registry: &str, password: &str) -> serde_json::Value {
    let compose = format!(
        "version: \"3\"\nservices:\n  app:\n    image: {image}\n    command: [\"sleep\", \"3600\"]\n"
    );
    let mut payload = portainer_ce::stack_payload(name, &compose);
    payload["RegistryCredentials"] =
        json!([{"ServerURL": registry, "Username": USER, "Secret": password}]);
    payload
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_images_are_pulled_with_the_stacks_credentials_through_the_helper() {
    let Some(engine) = engine_host() else { return };
    let Some(binary) = registry::binary() else {
        return;
    };
    let Some(EdgeWorld {
        portainer,
        chisel,
        data,
    }) = EdgeWorld::start("registry").await
    else {
        return;
    };
    let registry = Registry::start(&binary);
    let tag = unique("t");
    let good_image = registry.push(&engine, IMAGE, &format!("private/good:{tag}"));
    let refused_image = registry.push(&engine, IMAGE, &format!("private/refused:{tag}"));
    let good = unique("private");
    let refused = unique("refused");
    let mut pulled = private_stack(&good, &good_image, &registry.address, PASSWORD);
    pulled["PrePullImage"] = json!(true);
    portainer.set_stack(51, pulled);
    portainer.set_stack(
        52,
        private_stack(
            &refused,
            &refused_image,
            &registry.address,
            "not-the-password",
        ),
    );
    portainer.set_status(portainer_ce::poll_answer(&[(51, 1), (52, 1)], 0.5));
    let key = edge_key(&portainer, &chisel, 1);
    let mut env = vec![("EDGE_KEY", key.as_str())];
    env.extend_from_slice(&TOOLS_ENV);
    let berth = start_edge_berth(&engine, &data, &env);

    let statuses = wait_statuses(&portainer, 51, 7).await;
    assert_eq!(
        codes(&statuses),
        [3, 6, 8, 1, 7],
        "Acknowledged, ImagesPulled, Deploying, DeploymentReceived, Running"
    );
    let project = format!("label=com.docker.compose.project=edge_{good}");
    assert_eq!(
        docker_cli(
            &engine,
            &["ps", "--filter", &project, "--format", "{{.Image}}"]
        ),
        good_image
    );
    assert!(
        registry
            .log()
            .iter()
            .any(|line| line.contains(&format!("auth.user.name={USER}"))
                || line.contains(&format!("auth.user.name=\"{USER}\""))),
        "the registry saw the stack's user: {:?}",
        registry.log()
    );

    let statuses = wait_statuses(&portainer, 52, 2).await;
    assert_eq!(codes(&statuses), [3, 8, 2]);
    let why = &statuses[2].1;
    assert!(why.starts_with("failed to deploy stack:"), "{why}");
    assert!(
        ["unauthorized", "denied", "authentication"]
            .iter()
            .any(|word| why.to_lowercase().contains(word)),
        "the registry's refusal is in the error: {why}"
    );
    assert!(
        !why.contains("not-the-password"),
        "the secret stays out of the report: {why}"
    );
    assert!(
        !berth.log().iter().any(|line| line.contains(PASSWORD)),
        "and out of berth's log"
    );

    portainer.set_status(portainer_ce::poll_answer(&[], 0.5));
    wait_statuses(&portainer, 51, 4).await;
    assert_eq!(
        docker_cli(&engine, &["ps", "-aq", "--filter", &project]),
        ""
    );
    drop(berth);
}

/// GET `path` on the lookup at `address`: status and body.
async fn lookup(address: &str, method: &str, path: &str) -> (u16, String) {
    let stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", address)
        .body(Empty::<bytes::Bytes>::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// Runs the helper (`program`, with `args`) with `input` on stdin.
fn helper(program: &std::path::Path, args: &[&str], address: &str, input: &str) -> (bool, String) {
    let output = run_with_input(
        Command::new(program)
            .args(args)
            .env_clear()
            .env("BERTH_CREDENTIALS_ADDR", address),
        input,
    );
    let printed = String::from_utf8_lossy(&output.stdout);
    assert!(
        printed.is_empty() || printed.ends_with('\n') && printed.lines().count() == 1,
        "one line: {printed:?}"
    );
    (output.status.success(), printed.trim_end().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lookup_and_the_helper_answer_as_the_protocol_expects() {
    let Some(engine) = engine_host() else { return };
    // Outside Edge mode the lookup runs too, and never has credentials.
    let berth = BerthProcess::start(&[("DOCKER_HOST", engine.as_str())]);
    assert!(
        berth.logged_within(
            "serving the registry credential lookup",
            Duration::from_secs(10)
        ),
        "{:?}",
        berth.log()
    );
    let address = berth
        .log()
        .iter()
        .find_map(|line| {
            let value: serde_json::Value = serde_json::from_str(line).ok()?;
            value["fields"]["lookup_addr"].as_str().map(str::to_string)
        })
        .expect("the lookup's address is logged");
    assert!(address.starts_with("127.0.0.1:"), "{address}");
    assert_eq!(
        lookup(&address, "GET", "/lookup?serverurl=127.0.0.1%3A5000")
            .await
            .0,
        204
    );
    assert_eq!(lookup(&address, "GET", "/lookup").await.0, 204);
    assert_eq!(lookup(&address, "POST", "/lookup").await.0, 405);
    assert_eq!(lookup(&address, "GET", "/elsewhere").await.0, 404);

    let program = std::path::Path::new(env!("CARGO_BIN_EXE_berth"));
    let as_subcommand = |action: &str, input: &str| {
        helper(program, &["credential-helper", action], &address, input)
    };
    assert_eq!(
        as_subcommand("get", "127.0.0.1:5000\n"),
        (false, "credentials not found in native keychain".into())
    );
    assert_eq!(
        as_subcommand("get", ""),
        (false, "no credentials server URL".into())
    );
    assert_eq!(as_subcommand("list", ""), (true, "{}".into()));
    let stored = json!({"ServerURL": "127.0.0.1:5000", "Username": "u", "Secret": "s"});
    assert!(as_subcommand("store", &stored.to_string()).0);
    assert!(as_subcommand("erase", "127.0.0.1:5000").0);
    let (ok, said) = as_subcommand("steal", "");
    assert!(!ok && said.contains("Unknown credential action"), "{said}");

    // Called by the name the CLIs look for.
    let folder = support::temp_dir::temp_dir("credential-helper-link");
    let link = folder.join("docker-credential-portainer");
    std::os::unix::fs::symlink(program, &link).unwrap();
    assert_eq!(
        helper(&link, &["get"], &address, "https://index.docker.io/v1/"),
        (false, "credentials not found in native keychain".into())
    );
    // With no berth to ask, a lookup is "not found" (pulls go anonymous).
    assert_eq!(
        helper(&link, &["get"], "127.0.0.1:9", "127.0.0.1:5000").1,
        "credentials not found in native keychain"
    );
    drop(berth);
}
