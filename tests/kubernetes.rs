//! berth as the agent of a Kubernetes cluster, against the real API server
//! (kube-apiserver 1.34 and etcd, which `scripts/test` starts on loopback)
//! and the real kubectl: the platform it reports, the `/kubernetes` proxy
//! on the pod's own service account and on the token Portainer sends for
//! its user (RBAC holding through berth), watches streamed, the API
//! server's certificate verified, and kubectl itself through berth.

mod support;

use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use serde_json::Value;
use support::client::{request, unsigned_request, Target};
use support::kube::{cluster, KubeCluster};
use support::temp_dir::temp_dir;
use tokio_tungstenite::tungstenite::Message;

/// How long a watch event may take to come through.
const EVENT_LIMIT: Duration = Duration::from_secs(20);

fn with_token(mut request: Request<Full<Bytes>>, token: &str) -> Request<Full<Bytes>> {
    request
        .headers_mut()
        .insert("X-PortainerAgent-SA-Token", token.parse().unwrap());
    request
}

async fn json_of(berth: &Target, request: Request<Full<Bytes>>) -> (u16, Value) {
    let (response, body) = berth.fetch_request(request).await;
    let value = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&body)));
    (response.status().as_u16(), value)
}

#[tokio::test]
async fn in_a_pod_berth_reports_kubernetes_and_refuses_docker_requests() {
    let Some(kube) = cluster() else { return };
    let namespace = kube.namespace("platform");
    let account = kube.service_account(&namespace, kube.reader_role(), None);
    let berth = kube.berth(&account.dir, &[]);
    assert!(berth
        .log()
        .iter()
        .any(|line| line.contains("agent running on Kubernetes platform")));
    let target = Target::Berth(berth.addr);
    let (ping, _) = target
        .fetch_request(unsigned_request("GET", "/ping", ""))
        .await;
    assert_eq!(ping.status(), 204);
    assert_eq!(ping.headers()["Portainer-Agent-Platform"], "2");
    assert_eq!(ping.headers()["Portainer-Agent"], "2.23.0");
    for path in ["/containers/json", "/v1.41/info", "/websocket/exec?id=x"] {
        let (status, error) = json_of(&target, request("GET", path, "")).await;
        assert_eq!(status, 501, "{path}: {error}");
        assert!(
            error["message"]
                .as_str()
                .unwrap()
                .contains("no Docker engine"),
            "{path}: {error}"
        );
    }
    // The stack route is berth's own, not the proxy's.
    let (status, error) = json_of(&target, request("POST", "/v2/kubernetes/stack", "{}")).await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["details"], "Missing deployment config");
    // The proxy is signed like every route but /ping.
    let (status, _) = json_of(
        &target,
        unsigned_request("GET", "/kubernetes/api/v1/namespaces", ""),
    )
    .await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn the_proxy_answers_as_the_api_server_on_the_pods_service_account() {
    let Some(kube) = cluster() else { return };
    let namespace = kube.namespace("proxy");
    kube.kubectl(&[
        "-n",
        &namespace,
        "create",
        "configmap",
        "settings",
        "--from-literal=mode=fast",
    ]);
    let account = kube.service_account(&namespace, kube.reader_role(), None);
    let berth = kube.berth(&account.dir, &[]);
    let target = Target::Berth(berth.addr);

    let (status, version) = json_of(&target, request("GET", "/kubernetes/version", "")).await;
    assert_eq!(status, 200, "{version}");
    assert_eq!(version["gitVersion"], "v1.34.2");
    let (status, namespaces) =
        json_of(&target, request("GET", "/kubernetes/api/v1/namespaces", "")).await;
    assert_eq!(status, 200, "{namespaces}");
    let names: Vec<&str> = namespaces["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["metadata"]["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&namespace.as_str()), "{names:?}");
    let path = format!("/kubernetes/api/v1/namespaces/{namespace}/configmaps/settings");
    let (status, settings) = json_of(&target, request("GET", &path, "")).await;
    assert_eq!(status, 200, "{settings}");
    assert_eq!(settings["data"]["mode"], "fast");
    // The API server's own refusal passes through as it wrote it: the
    // account reads but does not write.
    let body = format!(
        r#"{{"apiVersion":"v1","kind":"ConfigMap","metadata":{{"name":"written","namespace":"{namespace}"}}}}"#
    );
    let path = format!("/kubernetes/api/v1/namespaces/{namespace}/configmaps");
    let (status, refusal) = json_of(&target, request("POST", &path, &body)).await;
    assert_eq!(status, 403, "{refusal}");
    assert_eq!(refusal["kind"], "Status");
    assert!(
        refusal["message"].as_str().unwrap().contains(&format!(
            "system:serviceaccount:{namespace}:{}",
            account.name
        )),
        "{refusal}"
    );
}

#[tokio::test]
async fn a_token_limited_to_one_namespace_reads_no_other_through_berth() {
    let Some(kube) = cluster() else { return };
    let portainer = kube.namespace("portainer");
    let team_a = kube.namespace("team-a");
    let team_b = kube.namespace("team-b");
    for namespace in [&team_a, &team_b] {
        kube.kubectl(&["-n", namespace, "create", "configmap", "notes"]);
    }
    // berth's own account may read everything; the user's only team-a, as
    // Portainer binds its users' service accounts.
    let own = kube.service_account(&portainer, "cluster-admin", None);
    let user = kube.service_account(&portainer, kube.reader_role(), Some(&team_a));
    let token = user.token();
    let berth = kube.berth(&own.dir, &[]);
    let target = Target::Berth(berth.addr);

    let allowed = format!("/kubernetes/api/v1/namespaces/{team_a}/configmaps");
    let (status, list) = json_of(&target, with_token(request("GET", &allowed, ""), &token)).await;
    assert_eq!(status, 200, "{list}");
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["metadata"]["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"notes"), "{names:?}");
    let other = format!("/kubernetes/api/v1/namespaces/{team_b}/configmaps");
    let (status, refusal) = json_of(&target, with_token(request("GET", &other, ""), &token)).await;
    assert_eq!(status, 403, "{refusal}");
    assert!(
        refusal["message"]
            .as_str()
            .unwrap()
            .contains(&format!("system:serviceaccount:{portainer}:{}", user.name)),
        "{refusal}"
    );
    // Without the header, berth's own account reads it.
    let (status, _) = json_of(&target, request("GET", &other, "")).await;
    assert_eq!(status, 200);
    // A caller's Authorization header does not replace the credential.
    let mut forged = with_token(request("GET", &other, ""), &token);
    forged.headers_mut().insert(
        "Authorization",
        format!("Bearer {}", own.token()).parse().unwrap(),
    );
    let (status, _) = json_of(&target, forged).await;
    assert_eq!(status, 403);
    // A token that cannot be a header value is refused, not forwarded.
    let mut bad = request("GET", &other, "");
    bad.headers_mut().insert(
        "X-PortainerAgent-SA-Token",
        http::HeaderValue::from_bytes(b"two words").unwrap(),
    );
    let (status, error) = json_of(&target, bad).await;
    assert_eq!(status, 400, "{error}");
    // berth logged every request at debug level, and never the token.
    let log = berth.log().join("\n");
    assert!(log.contains(&allowed), "requests are logged");
    assert!(!log.contains(&token), "the caller's token was logged");
}

#[tokio::test]
async fn a_watch_streams_each_event_as_it_happens() {
    let Some(kube) = cluster() else { return };
    let namespace = kube.namespace("watch");
    kube.kubectl(&["-n", &namespace, "create", "configmap", "first"]);
    let account = kube.service_account(&namespace, kube.reader_role(), None);
    let berth = kube.berth(&account.dir, &[]);
    let path = format!("/kubernetes/api/v1/namespaces/{namespace}/configmaps?watch=1");
    let response = Target::Berth(berth.addr)
        .send(request("GET", &path, ""))
        .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers().get("content-length").is_none(),
        "a watch has no length: it streams"
    );
    let mut body = response.into_body();
    let mut seen = String::new();
    // The existing object, while the watch stays open...
    read_until(&mut body, &mut seen, r#""name":"first""#).await;
    assert!(seen.contains(r#""type":"ADDED""#), "{seen}");
    // ...then one made after it started.
    kube.kubectl(&["-n", &namespace, "create", "configmap", "second"]);
    read_until(&mut body, &mut seen, r#""name":"second""#).await;
}

#[tokio::test]
async fn an_api_server_whose_certificate_the_ca_does_not_sign_is_refused() {
    let Some(kube) = cluster() else { return };
    let namespace = kube.namespace("wrong-ca");
    let account = kube.service_account(&namespace, kube.reader_role(), None);
    let other = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    std::fs::write(account.dir.join("ca.crt"), other.cert.pem()).unwrap();
    let berth = kube.berth(&account.dir, &[]);
    let (status, error) = json_of(
        &Target::Berth(berth.addr),
        request("GET", "/kubernetes/version", ""),
    )
    .await;
    assert_eq!(status, 502, "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("Unable to reach the Kubernetes API server"),
        "{error}"
    );
    assert!(
        error["details"].as_str().unwrap().contains("certificate"),
        "{error}"
    );
}

#[tokio::test]
async fn bad_pod_settings_are_clear_errors() {
    let Some(kube) = cluster() else { return };
    // No token in the folder: a request without the user's token fails as
    // the Go agent's does, naming the file.
    let dir = temp_dir("no-token");
    std::fs::copy(kube.dir.join("ca.crt"), dir.join("ca.crt")).unwrap();
    let berth = kube.berth(&dir, &[]);
    let (status, error) = json_of(
        &Target::Berth(berth.addr),
        request("GET", "/kubernetes/version", ""),
    )
    .await;
    assert_eq!(status, 500, "{error}");
    assert_eq!(
        error["message"],
        "Unable to read service account token file"
    );
    assert!(
        error["details"].as_str().unwrap().contains("token"),
        "{error}"
    );
    drop(berth);
    // No CA, or an API server address that is not an IP: berth does not start.
    for (account, host, expected) in [
        (temp_dir("no-ca"), "127.0.0.1", "ca.crt"),
        (dir, "kubernetes.default.svc", "not an IP address"),
    ] {
        let output = support::berth_process::berth_command()
            .env_clear()
            .env("KUBERNETES_SERVICE_HOST", host)
            .env("KUBERNETES_SERVICE_ACCOUNT_DIR", &*account)
            .env("AGENT_PORT", "0")
            .env("LOG_MODE", "NOCOLOR")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(1), "{stderr}");
        assert!(stderr.contains(expected), "{stderr}");
    }
}

/// kubectl's own requests through berth: discovery, server-side and
/// client-side apply (a CRD and an object of its kind among them), get,
/// delete. kubectl cannot sign requests, so it authenticates to berth with
/// a client certificate (`AGENT_CLIENT_CERT_AUTH=1`, from `berth keys
/// client-cert`); berth then calls the API server on its own account.
#[tokio::test]
async fn kubectl_works_through_the_proxy() {
    let Some(kube) = cluster() else { return };
    let namespace = kube.namespace("kubectl");
    let account = kube.service_account(&namespace, "cluster-admin", None);
    let kubectl = kube.kubectl_through_berth(&account.dir, &namespace);
    let through_berth = |args: &[&str], input: &str| kubectl.run(args, input);
    let kind = crd_kind(&kube);
    let manifests = format!(
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: web-settings\ndata:\n  mode: fast\n---\n\
         apiVersion: {group}/v1\nkind: Gadget\nmetadata:\n  name: sprocket\nspec:\n  size: 3\n",
        group = kind.group
    );
    let applied = through_berth(&["apply", "--server-side", "-f", "-"], &manifests);
    assert!(
        applied.contains("configmap/web-settings serverside-applied"),
        "{applied}"
    );
    assert!(applied.contains("sprocket serverside-applied"), "{applied}");
    let changed = manifests.replace("mode: fast", "mode: slow");
    let applied = through_berth(&["apply", "--server-side", "-f", "-"], &changed);
    assert!(
        applied.contains("configmap/web-settings serverside-applied"),
        "{applied}"
    );
    let mode = kube.kubectl(&[
        "-n",
        &namespace,
        "get",
        "configmap",
        "web-settings",
        "-o",
        "jsonpath={.data.mode}",
    ]);
    assert_eq!(mode, "slow");
    let client_side = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: client-side\n";
    let applied = through_berth(&["apply", "-f", "-"], client_side);
    assert!(
        applied.contains("configmap/client-side created"),
        "{applied}"
    );
    let listed = through_berth(&["get", &kind.plural, "-o", "name"], "");
    assert!(listed.contains("sprocket"), "{listed}");
    let deleted = through_berth(&["delete", "configmap", "web-settings", "client-side"], "");
    assert!(deleted.contains("\"web-settings\" deleted"), "{deleted}");
    let left = kube.kubectl(&["-n", &namespace, "get", "configmaps", "-o", "name"]);
    assert!(!left.contains("web-settings"), "{left}");
}

struct CustomKind {
    group: String,
    plural: String,
}

/// A namespaced CustomResourceDefinition of `kind` (with an integer
/// `spec.size`) in a group unique to the test (definitions are
/// cluster-wide): its group and its YAML.
fn crd_manifest(prefix: &str, kind: &str) -> (String, String) {
    let group = format!("{}.berth.test", support::unique::unique(prefix));
    let singular = kind.to_lowercase();
    let crd = format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  \
         name: {singular}s.{group}\nspec:\n  group: {group}\n  scope: Namespaced\n  names:\n    \
         plural: {singular}s\n    singular: {singular}\n    kind: {kind}\n  versions:\n  - name: v1\n    \
         served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n        \
         properties:\n          spec:\n            type: object\n            properties:\n              \
         size: {{type: integer}}\n"
    );
    (group, crd)
}

/// A CustomResourceDefinition of the test's own (cluster-wide, so its
/// group is unique to this test), established before it returns.
fn crd_kind(kube: &KubeCluster) -> CustomKind {
    let (group, crd) = crd_manifest("g", "Gadget");
    kube.kubectl_with_input(&["apply", "-f", "-"], &crd);
    kube.kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=30s",
        &format!("crd/gadgets.{group}"),
    ]);
    CustomKind {
        plural: format!("gadgets.{group}"),
        group,
    }
}

/// Upgrades through the proxy: kubectl's exec over its websocket protocol
/// and over SPDY (`KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`), with stdin
/// and the command's exit code, and its port-forward, into a pod that runs
/// on the real node.
#[tokio::test]
async fn kubectl_exec_and_port_forward_pass_through_berth() {
    let Some(kube) = cluster() else { return };
    kube.require_node();
    let namespace = kube.namespace("exec");
    kube.run_pod(
        &namespace,
        "box",
        "nc -ll -p 8080 -e echo served-by-the-pod & sleep 3600",
    );
    let account = kube.service_account(&namespace, "cluster-admin", None);
    let kubectl = kube.kubectl_through_berth(&account.dir, &namespace);

    for websockets in ["true", "false"] {
        let mut command = kubectl.command(&["exec", "-i", "box", "--", "sh", "-c", "cat; exit 3"]);
        command.env("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", websockets);
        let output = support::piped::run_with_input(&mut command, "through berth\n");
        assert_eq!(
            String::from_utf8_lossy(&output.stdout),
            "through berth\n",
            "websockets={websockets}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(output.status.code(), Some(3), "websockets={websockets}");
    }

    let mut forward = kubectl
        .command(&["port-forward", "pod/box", "0:8080"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(forward.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut lines, &mut line).unwrap();
    // "Forwarding from 127.0.0.1:NNNNN -> 8080"
    let local = line
        .split_whitespace()
        .nth(2)
        .unwrap_or_else(|| panic!("kubectl port-forward said {line:?}"))
        .to_string();
    let mut answer = String::new();
    let mut stream = std::net::TcpStream::connect(&local).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
    forward.kill().unwrap();
    forward.wait().unwrap();
    assert_eq!(answer, "served-by-the-pod\n");
}

#[tokio::test]
async fn followed_logs_stream_line_by_line() {
    let Some(kube) = cluster() else { return };
    kube.require_node();
    let namespace = kube.namespace("logs");
    kube.run_pod(
        &namespace,
        "ticker",
        "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done",
    );
    let account = kube.service_account(&namespace, kube.reader_role(), None);
    let berth = kube.berth(&account.dir, &[]);
    let path = format!("/kubernetes/api/v1/namespaces/{namespace}/pods/ticker/log?follow=true");
    let response = Target::Berth(berth.addr)
        .send(request("GET", &path, ""))
        .await;
    assert_eq!(response.status(), 200);
    let mut body = response.into_body();
    let mut seen = String::new();
    // Lines written after the request arrive on the open stream.
    read_until(&mut body, &mut seen, "tick 2\n").await;
    let first = seen.lines().last().unwrap().to_string();
    let later = first.trim_start_matches("tick ").parse::<u32>().unwrap() + 5;
    read_until(&mut body, &mut seen, &format!("tick {later}\n")).await;
}

/// Reads a streamed answer's frames into `seen` until it holds `wanted`;
/// panics when the stream ends first or `EVENT_LIMIT` passes.
async fn read_until(body: &mut hyper::body::Incoming, seen: &mut String, wanted: &str) {
    let reading = async {
        while !seen.contains(wanted) {
            let frame = body.frame().await.expect("the stream is open").unwrap();
            if let Ok(data) = frame.into_data() {
                seen.push_str(&String::from_utf8_lossy(&data));
            }
        }
    };
    if tokio::time::timeout(EVENT_LIMIT, reading).await.is_err() {
        panic!("{wanted:?} did not come within {EVENT_LIMIT:?}: {seen}");
    }
}

/// `/websocket/pod`, as Portainer's pod console opens it: a shell in a
/// pod's container on the real node, a character the container writes in
/// two parts arriving whole, the console's end when the shell exits, and
/// refusals (a missing parameter, no such pod, a user whose role does not
/// reach the pod's namespace) answered before any upgrade, in Portainer's
/// shape.
#[tokio::test]
async fn a_pod_console_is_a_shell_in_the_container() {
    let Some(kube) = cluster() else { return };
    kube.require_node();
    let namespace = kube.namespace("console");
    kube.run_pod(&namespace, "box", "sleep 3600");
    let own = kube.service_account(&namespace, "cluster-admin", None);
    // A user Portainer gave another namespace only.
    let elsewhere = kube.namespace("elsewhere");
    let reader = kube.service_account(&namespace, "cluster-admin", Some(&elsewhere));
    let berth = kube.berth(&own.dir, &[]);
    let path = format!(
        "/websocket/pod?namespace={namespace}&podName=box&containerName=box&command=/bin/sh"
    );
    let mut console = support::console::open_at(berth.addr, &path, None)
        .await
        .unwrap_or_else(|e| panic!("{e}: {:?}", berth.log()));
    console
        .send(Message::text("echo answer-$((6 * 7))\n"))
        .await
        .unwrap();
    support::console::read_until(&mut console, "answer-42").await;
    console
        .send(Message::text(
            "printf '\\303'; sleep 0.3; printf '\\251 ok-%s\\n' $((1 + 1))\n",
        ))
        .await
        .unwrap();
    // The terminal echoes the command; its output is the "ok-2".
    let text = support::console::read_until(&mut console, "ok-2").await;
    assert!(text.contains("é ok-2"), "{text:?}");
    console.send(Message::text("exit\n")).await.unwrap();
    let ended = tokio::time::timeout(EVENT_LIMIT, async {
        loop {
            match console.next().await {
                Some(Ok(Message::Close(frame))) => return frame.map(|f| u16::from(f.code)),
                Some(Ok(_)) => continue,
                other => panic!("the console broke off: {other:?}"),
            }
        }
    })
    .await
    .expect("the console ends when the shell exits");
    assert_eq!(ended, Some(1000));

    let refused = |path: String, headers: Vec<(&'static str, String)>| {
        let addr = berth.addr;
        async move {
            let headers: Vec<(&str, &str)> =
                headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
            match support::console::open_with(addr, &path, &headers).await {
                Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
                    let body: Value =
                        serde_json::from_slice(response.body().as_deref().unwrap_or_default())
                            .unwrap();
                    (response.status().as_u16(), body)
                }
                other => panic!("{path}: not refused: {:?}", other.map(|_| ())),
            }
        }
    };
    let (status, error) = refused(
        format!("/websocket/pod?namespace={namespace}&podName=box&command=sh"),
        vec![],
    )
    .await;
    assert_eq!(
        (status, error["message"].as_str()),
        (400, Some("Invalid query parameter: containerName"))
    );
    let (status, error) = refused(
        format!("/websocket/pod?namespace={namespace}&podName=nobody&containerName=box&command=sh"),
        vec![],
    )
    .await;
    assert_eq!(status, 404, "{error}");
    assert_eq!(
        error["message"],
        "Unable to start exec process inside container"
    );
    assert!(
        error["details"].as_str().unwrap().contains("nobody"),
        "{error}"
    );
    let (status, error) = refused(
        path.clone(),
        vec![("X-PortainerAgent-SA-Token", reader.token())],
    )
    .await;
    assert_eq!(status, 403, "{error}");
    assert!(
        error["details"].as_str().unwrap().contains(&reader.name),
        "{error}"
    );
}

/// `POST /v2/kubernetes/stack` as a client sends it.
fn stack_request(manifests: &str, namespace: &str) -> Request<Full<Bytes>> {
    let body = serde_json::json!({ "StackConfig": manifests, "Namespace": namespace });
    request("POST", "/v2/kubernetes/stack", &body.to_string())
}

/// A stack that makes its own namespace and its own kind (which kubectl
/// cannot apply in one go), applied server-side under berth's field
/// manager and reported as kubectl reports; applied again, unchanged;
/// changed, configured.
#[tokio::test]
async fn a_stack_is_applied_server_side_and_reported_as_kubectl_would() {
    let Some(kube) = cluster() else { return };
    let home = kube.namespace("stack-home");
    let account = kube.service_account(&home, "cluster-admin", None);
    let berth = kube.berth(&account.dir, &[]);
    let target = Target::Berth(berth.addr);
    let (group, crd) = crd_manifest("s", "Widget");
    let made = support::unique::unique("made-");
    let manifests = format!(
        "{crd}---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: {made}\n---\n\
         apiVersion: {group}/v1\nkind: Widget\nmetadata:\n  name: sprocket\n  namespace: {made}\nspec:\n  size: 3\n---\n\
         apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: {made}\ndata:\n  mode: fast\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: {made}\nspec:\n  \
         replicas: 0\n  selector:\n    matchLabels: {{app: web}}\n  template:\n    metadata:\n      \
         labels: {{app: web}}\n    spec:\n      containers:\n      - name: web\n        image: busybox\n"
    );
    let (status, answer) = json_of(&target, stack_request(&manifests, "")).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["Output"],
        format!(
            "customresourcedefinition.apiextensions.k8s.io/widgets.{group} created\n\
             namespace/{made} created\nwidget.{group}/sprocket created\n\
             configmap/settings created\ndeployment.apps/web created\n"
        )
    );
    let size = kube.kubectl(&[
        "-n",
        &made,
        "get",
        &format!("widgets.{group}"),
        "sprocket",
        "-o",
        "jsonpath={.spec.size}",
    ]);
    assert_eq!(size, "3");
    let managers = kube.kubectl(&[
        "-n",
        &made,
        "get",
        "configmap",
        "settings",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}/{.metadata.managedFields[*].operation}",
    ]);
    assert_eq!(managers, "berth/Apply");

    let (status, again) = json_of(&target, stack_request(&manifests, "")).await;
    assert_eq!(status, 200, "{again}");
    let lines: Vec<&str> = again["Output"].as_str().unwrap().lines().collect();
    assert_eq!(lines.len(), 5, "{again}");
    assert!(
        lines.iter().all(|line| line.ends_with(" unchanged")),
        "{again}"
    );

    let changed = manifests.replace("mode: fast", "mode: slow");
    let (status, answer) = json_of(&target, stack_request(&changed, "")).await;
    assert_eq!(status, 200, "{answer}");
    let output = answer["Output"].as_str().unwrap();
    assert!(
        output.contains("configmap/settings configured\n"),
        "{output}"
    );
    assert!(
        output.contains("deployment.apps/web unchanged\n"),
        "{output}"
    );
    kube.kubectl(&["delete", "namespace", &made, "--wait=false"]);
}

/// An invalid object anywhere in a stack leaves the whole stack unapplied,
/// and the answer carries the API server's own message; bad payloads and
/// unknown kinds are refused before the cluster is asked.
#[tokio::test]
async fn an_invalid_stack_is_refused_whole_with_the_api_servers_message() {
    let Some(kube) = cluster() else { return };
    let namespace = kube.namespace("stack-invalid");
    let account = kube.service_account(&namespace, "cluster-admin", None);
    let berth = kube.berth(&account.dir, &[]);
    let target = Target::Berth(berth.addr);
    let manifests = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: first\n---\n\
        apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: broken\nspec:\n  template:\n    \
        spec:\n      containers: []\n";
    let (status, error) = json_of(&target, stack_request(manifests, &namespace)).await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["message"], "Failed deploying");
    let details = error["details"].as_str().unwrap();
    assert!(
        details.contains("Deployment.apps \"broken\" is invalid"),
        "{details}"
    );
    assert!(
        details.contains("nothing of the stack was applied"),
        "{details}"
    );
    let left = kube.kubectl(&["-n", &namespace, "get", "configmaps", "-o", "name"]);
    assert!(!left.contains("configmap/first"), "half-applied: {left}");

    let cases = [
        ("", "Missing deployment config"),
        ("a: [", "Document 1"),
        (
            "kind: ConfigMap\nmetadata: {name: x}\n",
            "apiVersion not set",
        ),
        (
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: x, namespace: elsewhere}\n",
            "the stack's namespace is",
        ),
    ];
    for (manifests, expected) in cases {
        let (status, error) = json_of(&target, stack_request(manifests, &namespace)).await;
        assert_eq!(status, 400, "{manifests}: {error}");
        assert!(
            error["details"].as_str().unwrap().contains(expected),
            "{manifests}: {error}"
        );
    }
    let unknown = "apiVersion: nowhere.berth.test/v1\nkind: Gizmo\nmetadata: {name: x}\n";
    let (status, error) = json_of(&target, stack_request(unknown, &namespace)).await;
    assert_eq!(status, 400, "{error}");
    assert!(
        error["details"]
            .as_str()
            .unwrap()
            .contains("matches for kind \"Gizmo\""),
        "{error}"
    );
    let (status, error) = json_of(&target, request("POST", "/v2/kubernetes/stack", "[")).await;
    assert_eq!(
        (status, error["message"].as_str()),
        (400, Some("Invalid request payload"))
    );
}

/// A stack sent with a user's token is applied as that user: where RBAC
/// lets the user write it is applied; elsewhere the API server's refusal
/// comes back and nothing is applied; the token is never logged.
#[tokio::test]
async fn a_stack_is_applied_with_the_callers_token() {
    let Some(kube) = cluster() else { return };
    let portainer = kube.namespace("stack-portainer");
    let team_a = kube.namespace("stack-a");
    let team_b = kube.namespace("stack-b");
    let own = kube.service_account(&portainer, "cluster-admin", None);
    let user = kube.service_account(&portainer, "edit", Some(&team_a));
    let token = user.token();
    let berth = kube.berth(&own.dir, &[]);
    let target = Target::Berth(berth.addr);
    let manifests = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\n";

    let (status, answer) = json_of(
        &target,
        with_token(stack_request(manifests, &team_a), &token),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["Output"], "configmap/notes created\n");
    let (status, refusal) = json_of(
        &target,
        with_token(stack_request(manifests, &team_b), &token),
    )
    .await;
    assert_eq!(status, 403, "{refusal}");
    assert!(
        refusal["details"]
            .as_str()
            .unwrap()
            .contains(&format!("system:serviceaccount:{portainer}:{}", user.name)),
        "{refusal}"
    );
    let left = kube.kubectl(&["-n", &team_b, "get", "configmaps", "-o", "name"]);
    assert!(!left.contains("notes"), "{left}");
    assert!(
        !berth.log().join("\n").contains(&token),
        "the caller's token was logged"
    );
}

/// berth as an Edge agent in a pod (`EDGE=1`), with the tests' imitation of
/// Portainer answering in CE 2.23's recorded shapes and the real chisel
/// server: it polls as a Kubernetes agent, applies the Edge stacks it is
/// given to the real cluster (in the stack's namespace, the payload's ID
/// 0 ignored for the listed one) and reports each step, reports a stack
/// the API server refuses with the API server's words, serves the cluster
/// through the tunnel as Portainer reaches an Edge environment (its
/// snapshot is taken that way), and removes a stack no longer listed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn as_an_edge_agent_berth_deploys_stacks_to_the_cluster() {
    use support::edge_world::{
        codes, edge_key, fetch_ok, loopback, wait_statuses, EdgeWorld, EDGE_ID, WAIT,
    };
    use support::portainer_ce;

    let Some(kube) = cluster() else { return };
    let Some(EdgeWorld {
        portainer,
        chisel,
        data,
    }) = EdgeWorld::start("kube-edge").await
    else {
        return;
    };
    let home = kube.namespace("edge-home");
    let target = kube.namespace("edge-target");
    let account = kube.service_account(&home, "cluster-admin", None);
    std::fs::write(account.dir.join("namespace"), &home).unwrap();
    let manifests = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: edge-settings\ndata:\n  mode: fast\n---\n\
        apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: edge-web\nspec:\n  replicas: 0\n  \
        selector:\n    matchLabels: {app: edge-web}\n  template:\n    metadata:\n      labels: {app: edge-web}\n    \
        spec:\n      containers:\n      - name: web\n        image: busybox\n";
    let name = format!("kubeedge{}", std::process::id());
    let mut payload = portainer_ce::stack_payload(&name, manifests);
    payload["Namespace"] = serde_json::Value::from(target.clone());
    portainer.set_stack(21, payload);
    let broken = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: broken\nspec:\n  template:\n    \
        spec:\n      containers: []\n";
    let mut payload = portainer_ce::stack_payload(&format!("{name}broken"), broken);
    payload["Namespace"] = serde_json::Value::from(target.clone());
    portainer.set_stack(22, payload);
    let grant = chisel.tunnels[0].clone();
    let mut answer = portainer_ce::poll_answer(&[(21, 1), (22, 1)], 0.5);
    answer["status"] = "REQUIRED".into();
    answer["port"] = grant.port.into();
    answer["credentials"] = grant.credentials.clone().into();
    portainer.set_status(answer);
    let key = edge_key(&portainer, &chisel, 1);
    let data_path = data.display().to_string();
    let berth = kube.berth(
        &account.dir,
        &[
            ("EDGE", "1"),
            ("EDGE_ID", EDGE_ID),
            ("EDGE_KEY", &key),
            ("AGENT_ADVERTISE_ADDR", "127.0.0.1"),
            ("DATA_PATH", &data_path),
        ],
    );

    let polls = portainer
        .wait_requests("/api/endpoints/1/edge/status", 1, WAIT)
        .await;
    assert_eq!(polls[0].headers["portainer-agent-platform"], "2");
    let statuses = wait_statuses(&portainer, 21, 7).await;
    assert_eq!(
        codes(&statuses),
        [3, 8, 1, 7],
        "Acknowledged, Deploying, DeploymentReceived, Running"
    );
    assert!(portainer.stack_statuses(0).is_empty());
    let managers = kube.kubectl(&[
        "-n",
        &target,
        "get",
        "configmap",
        "edge-settings",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert_eq!(managers, "berth");
    let refused = wait_statuses(&portainer, 22, 2).await;
    assert_eq!(codes(&refused), [3, 8, 2], "{refused:?}");
    assert!(
        refused[2].1.starts_with("failed to deploy stack: ")
            && refused[2]
                .1
                .contains("Deployment.apps \"broken\" is invalid"),
        "{refused:?}"
    );

    // Portainer reaches the cluster through the tunnel: its snapshot of an
    // Edge environment on Kubernetes asks these three, then its UI reads.
    chisel.wait_listening(grant.port, 1, WAIT);
    let tunnel = loopback(grant.port);
    let (status, health) = fetch_ok(tunnel, request("GET", "/kubernetes/healthz", "")).await;
    assert_eq!((status, &health[..]), (200, &b"ok"[..]));
    let (status, version) = fetch_ok(tunnel, request("GET", "/kubernetes/version", "")).await;
    assert_eq!(status, 200);
    let version: Value = serde_json::from_slice(&version).unwrap();
    assert_eq!(version["gitVersion"], "v1.34.2");
    let (status, nodes) = fetch_ok(tunnel, request("GET", "/kubernetes/api/v1/nodes", "")).await;
    assert_eq!(status, 200);
    let nodes: Value = serde_json::from_slice(&nodes).unwrap();
    let known = kube.kubectl(&["get", "nodes", "-o", "name"]);
    assert_eq!(
        nodes["items"].as_array().unwrap().len(),
        known.lines().count()
    );
    let path = format!("/kubernetes/api/v1/namespaces/{target}/configmaps");
    let (status, body) = fetch_ok(loopback(grant.port), request("GET", &path, "")).await;
    assert_eq!(status, 200, "{body:?}");
    let list: Value = serde_json::from_slice(&body).unwrap();
    assert!(
        list["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|item| item["metadata"]["name"] == "edge-settings"),
        "{list}"
    );

    // No longer listed: removed from the cluster, reported.
    let mut answer = portainer_ce::poll_answer(&[], 0.5);
    answer["status"] = "ACTIVE".into();
    answer["port"] = grant.port.into();
    portainer.set_status(answer);
    let statuses = wait_statuses(&portainer, 21, 4).await;
    assert_eq!(
        codes(&statuses),
        [3, 8, 1, 7, 9, 4],
        "then Removing, Removed"
    );
    let left = kube.kubectl(&["-n", &target, "get", "configmaps,deployments", "-o", "name"]);
    assert!(
        !left.contains("edge-settings") && !left.contains("edge-web"),
        "{left}"
    );
    drop(berth);
}

/// `deploy/kubernetes/berth-agent.yaml` as a user applies it: berth's own
/// image (the static release binary, imported into the node's containerd,
/// since nothing can be pulled) runs as a pod of the real node, on the
/// manifest's service account, non-root with a read-only root; through a
/// port-forward to its Service it answers as a Kubernetes agent and
/// reaches the API server from the pod, with the token and CA Kubernetes
/// gave the pod.
#[tokio::test]
async fn berth_runs_as_a_pod_from_the_deploy_manifest() {
    let Some(kube) = cluster() else { return };
    kube.require_node();
    let Some(binary) = support::berth_process::from_env_or_skip(
        "BERTH_TEST_STATIC",
        "the static release binary for the node's image",
        "run scripts/test, which builds it with scripts/build-release",
    ) else {
        return;
    };
    kube.import_program_image(std::path::Path::new(&binary), "berth:latest");
    let manifest = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kubernetes/berth-agent.yaml"
    );
    let applied = kube.kubectl(&["apply", "-f", manifest]);
    assert!(
        applied.contains("deployment.apps/portainer-agent created")
            || applied.contains("deployment.apps/portainer-agent configured"),
        "{applied}"
    );
    // No kube-proxy runs in the test cluster, so the service address
    // Kubernetes gives pods (10.96.0.1) leads nowhere: the pod is pointed
    // at the API server itself, as kube-proxy would take it there.
    let host = format!("KUBERNETES_SERVICE_HOST={}", kube.address.ip());
    let port = format!("KUBERNETES_SERVICE_PORT={}", kube.address.port());
    kube.kubectl(&[
        "-n",
        "portainer",
        "set",
        "env",
        "deployment/portainer-agent",
        &host,
        &port,
    ]);
    let rolled = kube.try_kubectl(
        &[
            "-n",
            "portainer",
            "rollout",
            "status",
            "deployment/portainer-agent",
            "--timeout=120s",
        ],
        "",
    );
    if !rolled.status.success() {
        let pods = kube.try_kubectl(&["-n", "portainer", "describe", "pods"], "");
        let logs = kube.try_kubectl(
            &["-n", "portainer", "logs", "deployment/portainer-agent"],
            "",
        );
        panic!(
            "the agent did not roll out: {}\n{}\n{}",
            String::from_utf8_lossy(&rolled.stderr),
            String::from_utf8_lossy(&pods.stdout),
            String::from_utf8_lossy(&logs.stdout)
        );
    }
    let mut forward = kube
        .kubectl_command(&[
            "-n",
            "portainer",
            "port-forward",
            "service/portainer-agent",
            "0:9001",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = std::io::BufReader::new(forward.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut lines, &mut line).unwrap();
    // "Forwarding from 127.0.0.1:NNNNN -> 9001"
    let local: std::net::SocketAddr = line
        .split_whitespace()
        .nth(2)
        .and_then(|address| address.parse().ok())
        .unwrap_or_else(|| panic!("kubectl port-forward said {line:?}"));
    let target = Target::Berth(local);

    let (ping, _) = target
        .fetch_request(unsigned_request("GET", "/ping", ""))
        .await;
    assert_eq!(ping.status(), 204);
    assert_eq!(ping.headers()["Portainer-Agent-Platform"], "2");
    let (status, pods) = json_of(
        &target,
        request("GET", "/kubernetes/api/v1/namespaces/portainer/pods", ""),
    )
    .await;
    assert_eq!(status, 200, "{pods}");
    let own = pods["items"][0]["spec"].clone();
    assert_eq!(
        own["serviceAccountName"], "portainer-sa-clusteradmin",
        "{pods}"
    );
    let (status, answer) = json_of(
        &target,
        stack_request(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: from-the-pod\n",
            "",
        ),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["Output"], "configmap/from-the-pod created\n");
    // Where a stack's objects go that name no namespace: the pod's own.
    kube.kubectl(&["-n", "portainer", "get", "configmap", "from-the-pod"]);

    forward.kill().unwrap();
    let _ = forward.wait();

    // The Edge manifest, its ID and key filled in, replaces it: the pod
    // polls Portainer (the imitation, on the host's end of the node's
    // link) with the ConfigMap's Edge ID, as a Kubernetes agent.
    let portainer = support::portainer_server::TestPortainer::start_on(kube.address.ip()).await;
    portainer.set_status(support::portainer_ce::poll_answer(&[], 0.5));
    let key = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD_NO_PAD,
        format!("{}|{}:1|unused|1", portainer.url(), kube.address.ip()),
    );
    let edge_manifest = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/kubernetes/berth-edge-agent.yaml"
    ))
    .unwrap()
    .replace("<the Edge ID Portainer gave>", "berth-pod-edge")
    .replace("<the Edge key Portainer gave>", &key);
    kube.kubectl_with_input(&["apply", "-f", "-"], &edge_manifest);
    kube.kubectl(&[
        "-n",
        "portainer",
        "set",
        "env",
        "deployment/portainer-agent",
        &host,
        &port,
    ]);
    let polls = portainer
        .wait_requests("/api/endpoints/1/edge/status", 1, Duration::from_secs(120))
        .await;
    assert_eq!(
        polls[0].headers["x-portaineragent-edgeid"],
        "berth-pod-edge"
    );
    assert_eq!(polls[0].headers["portainer-agent-platform"], "2");
    kube.kubectl_with_input(&["delete", "-f", "-", "--wait=false"], &edge_manifest);
}
