//! Edge mode end to end: a berth process against the real engine, a
//! scripted Portainer (`support::portainer_server`) and the real chisel
//! server run as Portainer runs it (`support::chisel`; the tunnel test
//! against both pinned versions). The agent polls, opens the tunnel when
//! asked, serves signed Docker requests through it, reconnects after a
//! drop, closes on IDLE and after inactivity, and survives a Portainer that
//! hangs, fails or answers garbage.

mod support;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use serde_json::json;
use support::berth_process::{engine_host, free_port};
use support::chisel::against_each_chisel;
use support::client::{request, unsigned_request};
use support::edge_world::{
    codes, docker_cli, edge_key, fetch_ok, form, host_root, loopback, start_edge_berth,
    wait_metric, wait_statuses, EdgeWorld, EDGE_ID, TOOLS_ENV, WAIT,
};
use support::eventually::eventually;
use support::portainer_ce;
use support::portainer_server::Mode;
use support::temp_dir::temp_dir;

against_each_chisel!(the_agent_polls_and_tunnels_signed_requests_to_the_real_engine);

async fn the_agent_polls_and_tunnels_signed_requests_to_the_real_engine(
    chisel_binary: std::path::PathBuf,
) {
    let Some(engine) = engine_host() else { return };
    let EdgeWorld {
        portainer,
        mut chisel,
        data,
    } = EdgeWorld::start_with("tunnel", &chisel_binary).await;
    let key = edge_key(&portainer, &chisel, 1);
    let metrics = loopback(free_port());
    let metrics_addr = metrics.to_string();
    let berth = start_edge_berth(
        &engine,
        &data,
        &[
            ("EDGE_KEY", &key),
            ("EDGE_INACTIVITY_TIMEOUT", "3s"),
            ("METRICS_ADDR", &metrics_addr),
        ],
    );

    // The poll carries the reference's headers, and ETags are honoured.
    let polls = portainer
        .wait_requests("/api/endpoints/1/edge/status", 2, WAIT)
        .await;
    let first = &polls[0];
    assert_eq!(first.method, "GET");
    let header = |name: &str| {
        first
            .headers
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
    };
    assert_eq!(header("x-portaineragent-edgeid").as_deref(), Some(EDGE_ID));
    assert_eq!(header("portainer-agent-platform").as_deref(), Some("1"));
    assert_eq!(header("x-portaineragent-update-id").as_deref(), Some("0"));
    assert_eq!(header("portainer-agent").as_deref(), Some("2.23.0"));
    assert!(!header("x-portaineragent-timezone").unwrap().is_empty());
    assert_eq!(
        polls[1].status, 304,
        "the second poll is answered from the ETag"
    );
    wait_metric(metrics, "berth_edge_tunnel_state", "0").await;

    // REQUIRED: the tunnel opens to the agent's API, on the one port this
    // environment's chisel user may have.
    let grant = chisel.tunnels[0].clone();
    portainer.set_status(json!({"status": "REQUIRED", "port": grant.port,
        "credentials": grant.credentials, "checkin": 0.2}));
    let remote = chisel.wait_listening(grant.port, 1, WAIT);
    assert_eq!(
        remote,
        berth.addr.port().to_string(),
        "chisel forwards to the agent's own API"
    );
    portainer.set_status(json!({"status": "ACTIVE", "port": grant.port, "checkin": 0.2}));
    wait_metric(metrics, "berth_edge_tunnel_state", "2").await;

    let (status, body) = fetch_ok(
        loopback(grant.port),
        request("GET", "/containers/json?all=1", ""),
    )
    .await;
    assert_eq!(status, 200, "{body:?}");
    assert!(serde_json::from_slice::<serde_json::Value>(&body)
        .unwrap()
        .is_array());
    let (status, _) = fetch_ok(
        loopback(grant.port),
        unsigned_request("GET", "/containers/json", ""),
    )
    .await;
    assert_eq!(status, 403, "the tunnel does not bypass signatures");

    // chisel killed and back: a tunnel Portainer still wants comes back by
    // itself (the Go agent's stays down).
    chisel.restart();
    chisel.wait_listening(grant.port, 2, WAIT);
    let (status, _) = fetch_ok(loopback(grant.port), request("GET", "/version", "")).await;
    assert_eq!(status, 200);

    // No requests for the inactivity timeout: berth closes the tunnel.
    let closed = chisel.count("Closed connection");
    chisel.wait_for_nth("Closed connection", closed + 1, WAIT);
    wait_metric(metrics, "berth_edge_tunnel_state", "0").await;
    assert!(berth.logged_within("Inactive", Duration::from_secs(1)));

    // Asked again (a new port and user, as Portainer does), then IDLE:
    // opens, then closes.
    let grant = chisel.tunnels[1].clone();
    portainer.set_status(json!({"status": "REQUIRED", "port": grant.port,
        "credentials": grant.credentials, "checkin": 0.2}));
    chisel.wait_listening(grant.port, 1, WAIT);
    let closed = chisel.count("Closed connection");
    portainer.set_status(json!({"status": "IDLE", "checkin": 0.2}));
    chisel.wait_for_nth("Closed connection", closed + 1, WAIT);
    wait_metric(metrics, "berth_edge_tunnel_state", "0").await;

    // Two whole tunnel sessions logged at DEBUG: neither password is in
    // the log (the messages do not name them, so neither does a failure).
    let log = berth.log().join("\n");
    assert!(log.contains("\"level\":\"DEBUG\""), "the log is at DEBUG");
    for (n, grant) in chisel.tunnels[..2].iter().enumerate() {
        assert!(
            !log.contains(grant.password.as_str()),
            "tunnel {n}'s password is in berth's log"
        );
    }
    drop(berth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_portainer_never_stops_the_agent() {
    let Some(engine) = engine_host() else { return };
    let Some(EdgeWorld {
        portainer,
        chisel,
        data,
    }) = EdgeWorld::start("faults").await
    else {
        return;
    };
    portainer.set_status(json!({"status": "IDLE", "checkin": 0.2}));
    let key = edge_key(&portainer, &chisel, 1);
    let berth = start_edge_berth(&engine, &data, &[("EDGE_KEY", &key)]);
    let status_path = "/edge/status";
    let mut expected = portainer.wait_requests(status_path, 2, WAIT).await.len();

    for mode in [Mode::Garbage, Mode::Error500, Mode::Forbidden] {
        portainer.set_mode(mode);
        // The first try in this mode and one retry (retries back off).
        expected += 2;
        portainer.wait_requests(status_path, expected, WAIT).await;
        expected = portainer.seen().len();
    }
    let failures = berth
        .log()
        .iter()
        .filter(|line| line.contains("polling Portainer failed"))
        .count();
    assert_eq!(failures, 3, "one log line per kind of failure, not per try");

    portainer.set_mode(Mode::Hang);
    portainer
        .wait_requests(status_path, expected + 1, WAIT)
        .await;
    let ping = Request::get("/ping")
        .header("host", "agent")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(
        fetch_ok(berth.addr, ping).await.0,
        204,
        "the API serves while polls hang"
    );

    // Portainer comes back: the timed-out poll gives way and work resumes.
    portainer.set_mode(Mode::Normal);
    let grant = &chisel.tunnels[0];
    portainer.set_status(json!({"status": "REQUIRED", "port": grant.port,
        "credentials": grant.credentials, "checkin": 0.2}));
    chisel.wait_listening(grant.port, 1, Duration::from_secs(60));
    assert!(berth.logged_within("polling Portainer works again", WAIT));
    drop(berth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_page_checks_keys_and_the_key_is_kept() {
    let Some(engine) = engine_host() else { return };
    let Some(EdgeWorld {
        portainer,
        chisel,
        data,
    }) = EdgeWorld::start("page").await
    else {
        return;
    };
    let page_port = free_port();
    let page_port_text = page_port.to_string();
    let page_env = [
        ("EDGE_SERVER_HOST", "127.0.0.1"),
        ("EDGE_SERVER_PORT", page_port_text.as_str()),
    ];
    let berth = start_edge_berth(&engine, &data, &page_env);
    let page = loopback(page_port);

    // Before a key, the API refuses everything with the reference's 403.
    let ping = || {
        Request::get("/ping")
            .header("host", "agent")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let (status, body) = fetch_ok(berth.addr, ping()).await;
    assert_eq!(status, 403);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        json!({"message": "Unable to use the unsecured agent API without Edge key",
               "details": "Edge key not set"})
    );

    let get = Request::get("/")
        .header("host", "agent")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let (status, html) = fetch_ok(page, get).await;
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&html).contains("Edge key"));
    let (status, body) = fetch_ok(page, form("")).await;
    assert_eq!(
        (status, body.as_ref()),
        (400, &b"Missing key parameter"[..])
    );
    let (status, body) = fetch_ok(page, form("key=bm90IGEga2V5")).await;
    assert_eq!(status, 400);
    assert!(
        String::from_utf8_lossy(&body).contains("expected 4"),
        "{body:?}"
    );

    let key = edge_key(&portainer, &chisel, 1);
    let encoded: String = key.replace('+', "%2B").replace('/', "%2F");
    let (status, body) = fetch_ok(page, form(&format!("key={encoded}"))).await;
    assert_eq!(
        (status, body.as_ref()),
        (200, &b"Agent setup OK. You can close this page."[..])
    );
    let saved = data.join("agent_edge_key");
    assert_eq!(std::fs::read_to_string(&saved).unwrap(), key);
    assert_eq!(
        std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777,
        0o600
    );

    assert_eq!(fetch_ok(berth.addr, ping()).await.0, 204);
    portainer
        .wait_requests("/api/endpoints/1/edge/status", 1, WAIT)
        .await;
    eventually("the key page closed", WAIT, async || {
        tokio::net::TcpStream::connect(page).await.is_err()
    })
    .await;

    // /key: signed in berth (the Go agent leaves GET open), 409 once set.
    let (status, body) = fetch_ok(berth.addr, request("GET", "/key", "")).await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body).unwrap(),
        json!({"key": key})
    );
    assert_eq!(
        fetch_ok(berth.addr, unsigned_request("GET", "/key", ""))
            .await
            .0,
        403
    );
    let post = request("POST", "/key", &json!({"Key": key}).to_string());
    assert_eq!(fetch_ok(berth.addr, post).await.0, 409);
    let post = request("POST", "/key", "{not json");
    assert_eq!(fetch_ok(berth.addr, post).await.0, 400);
    drop(berth);

    // After a restart the saved key is used: no page, the API open.
    let berth = start_edge_berth(&engine, &data, &page_env);
    assert_eq!(fetch_ok(berth.addr, ping()).await.0, 204);
    assert!(tokio::net::TcpStream::connect(page).await.is_err());
    drop(berth);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_global_key_gets_its_endpoint_from_portainer() {
    let Some(engine) = engine_host() else { return };
    let Some(EdgeWorld {
        portainer,
        chisel,
        data,
    }) = EdgeWorld::start("global").await
    else {
        return;
    };
    let key = edge_key(&portainer, &chisel, 0);
    let berth = start_edge_berth(&engine, &data, &[("EDGE_KEY", &key)]);
    let claims = portainer
        .wait_requests("/api/endpoints/global-key", 1, WAIT)
        .await;
    assert_eq!(claims[0].method, "POST");
    let path = format!(
        "/api/endpoints/{}/edge/status",
        support::portainer_server::GLOBAL_ENDPOINT
    );
    portainer.wait_requests(&path, 1, WAIT).await;
    drop(berth);
}

/// As the Go agent: a key given in `EDGE_KEY` is written to the data
/// folder, so the agent recreated with its data volume but without the
/// variable keeps its key (and no key page opens).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_from_edge_key_is_saved_for_an_agent_started_without_it() {
    let Some(engine) = engine_host() else { return };
    let Some(EdgeWorld {
        portainer,
        chisel,
        data,
    }) = EdgeWorld::start("saved").await
    else {
        return;
    };
    portainer.set_status(json!({"status": "IDLE", "checkin": 0.2}));
    let key = edge_key(&portainer, &chisel, 1);
    let berth = start_edge_berth(&engine, &data, &[("EDGE_KEY", &key)]);
    portainer
        .wait_requests("/api/endpoints/1/edge/status", 1, WAIT)
        .await;
    let saved = data.join("agent_edge_key");
    assert_eq!(std::fs::read_to_string(&saved).unwrap(), key);
    assert_eq!(
        std::fs::metadata(&saved).unwrap().permissions().mode() & 0o777,
        0o600
    );
    drop(berth);

    let page_port = free_port();
    let page_port_text = page_port.to_string();
    let berth = start_edge_berth(
        &engine,
        &data,
        &[
            ("EDGE_SERVER_HOST", "127.0.0.1"),
            ("EDGE_SERVER_PORT", page_port_text.as_str()),
        ],
    );
    let ping = Request::get("/ping")
        .header("host", "agent")
        .body(Full::new(Bytes::new()))
        .unwrap();
    assert_eq!(fetch_ok(berth.addr, ping).await.0, 204, "the key was kept");
    assert!(tokio::net::TcpStream::connect(loopback(page_port))
        .await
        .is_err());
    drop(berth);
}

/// Edge configurations in sync mode: the poll lists the states Portainer
/// wants; berth fetches each configuration, applies it in the host root and
/// reports Idle, or Failure when Portainer refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edge_configurations_are_applied_from_the_poll() {
    let Some(engine) = engine_host() else { return };
    let Some(EdgeWorld {
        portainer,
        chisel,
        data,
    }) = EdgeWorld::start("configs").await
    else {
        return;
    };
    let root = host_root("configs-root");
    let content = base64::engine::general_purpose::STANDARD.encode("listen 8080\n");
    portainer.set_config(
        4,
        Some(json!({"ID": 4, "Name": "web", "BaseDir": "/etc/berth-web",
            "DirEntries": [{"Name": "web.conf", "IsFile": true, "Content": content, "Permissions": 0o640}]})),
    );
    portainer.set_config(5, None);
    portainer.set_status(json!({"status": "IDLE", "checkin": 0.2,
        "edge_configurations": {"4": 2, "5": 2}}));
    let key = edge_key(&portainer, &chisel, 1);
    let root_text = root.to_str().unwrap().to_string();
    let berth = start_edge_berth(
        &engine,
        &data,
        &[("EDGE_KEY", &key), ("AGENT_HOST_ROOT", &root_text)],
    );
    portainer
        .wait_requests("/api/edge_configurations/4/0", 1, WAIT)
        .await;
    portainer
        .wait_requests("/api/edge_configurations/5/1", 1, WAIT)
        .await;
    let written = root.join("etc/berth-web/web.conf");
    assert_eq!(std::fs::read_to_string(&written).unwrap(), "listen 8080\n");
    assert_eq!(
        std::fs::metadata(&written).unwrap().permissions().mode() & 0o777,
        0o640
    );
    // Deleting: the listed files go.
    portainer.set_status(json!({"status": "IDLE", "checkin": 0.2,
        "edge_configurations": {"4": 3}}));
    eventually("the configuration deleted", WAIT, async || {
        !written.exists()
    })
    .await;
    drop(berth);
}

#[test]
fn edge_mode_without_an_edge_id_is_a_clear_error() {
    let output = support::berth_process::berth_command()
        .env_clear()
        .env("EDGE", "1")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("EDGE_ID"), "{stderr}");
}

/// The key page as a person uses it, in headless Chromium: a bad key shows
/// its error on the page; a good key shows success and the agent polls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_page_works_in_a_browser() {
    let Some(engine) = engine_host() else { return };
    let Some(browser) = support::chromium::chromium_binary() else {
        return;
    };
    let Some(EdgeWorld {
        portainer,
        chisel,
        data,
    }) = EdgeWorld::start("browser").await
    else {
        return;
    };
    let page_port = free_port().to_string();
    let berth = start_edge_berth(
        &engine,
        &data,
        &[
            ("EDGE_SERVER_HOST", "127.0.0.1"),
            ("EDGE_SERVER_PORT", &page_port),
        ],
    );
    let url = format!("http://127.0.0.1:{page_port}/");
    let mut page = support::chromium::Chromium::open(&browser, &url).await;
    page.wait_until(
        "document.readyState === 'complete' && !!document.getElementById('key')",
        WAIT,
    )
    .await;

    let paste = |key: &str| {
        format!(
            "document.getElementById('key').value = {}; \
             document.getElementById('submit').click(); true",
            json!(key)
        )
    };
    page.eval(&paste("this is not a key")).await;
    page.wait_until(
        "document.getElementById('result').className === 'error'",
        WAIT,
    )
    .await;
    let error = page
        .eval("document.getElementById('result').textContent")
        .await;
    assert!(
        error.as_str().unwrap().contains("This key is not valid"),
        "{error}"
    );
    assert!(!data.join("agent_edge_key").exists());

    let key = edge_key(&portainer, &chisel, 1);
    page.eval(&paste(&key)).await;
    page.wait_until(
        "document.getElementById('result').className === 'success'",
        WAIT,
    )
    .await;
    let success = page
        .eval("document.getElementById('result').textContent")
        .await;
    assert_eq!(success, "Agent setup OK. You can close this page.");
    portainer
        .wait_requests("/api/endpoints/1/edge/status", 1, WAIT)
        .await;
    drop(page);
    drop(berth);
}

/// Two Edge agents in one cluster: the one without a key takes it from the
/// one with it (proving it belongs to the same Edge ID); strangers cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_a_key_takes_it_from_a_cluster_peer() {
    let Some(engines) = support::berth_process::cluster_engine_hosts() else {
        return;
    };
    let Some(EdgeWorld {
        portainer,
        chisel,
        data: data_b,
    }) = EdgeWorld::start("peer-b").await
    else {
        return;
    };
    let key = edge_key(&portainer, &chisel, 1);
    let (gossip_b, gossip_c) = (free_port().to_string(), free_port().to_string());
    let seed_b = format!("127.0.0.1:{gossip_b}");
    let seed_c = format!("127.0.0.1:{gossip_c}");
    let data_c = temp_dir("peer-c");
    let page_port = free_port().to_string();
    let with_key = start_edge_berth(
        &engines[1],
        &data_b,
        &[
            ("EDGE_KEY", &key),
            ("AGENT_CLUSTER_PORT", &gossip_b),
            ("AGENT_CLUSTER_ADDR", &seed_c),
            ("AGENT_CLUSTER_PROBE_INTERVAL", "200ms"),
            ("AGENT_CLUSTER_PROBE_TIMEOUT", "100ms"),
        ],
    );
    let without_key = start_edge_berth(
        &engines[2],
        &data_c,
        &[
            ("AGENT_CLUSTER_PORT", &gossip_c),
            ("AGENT_CLUSTER_ADDR", &seed_b),
            ("AGENT_CLUSTER_PROBE_INTERVAL", "200ms"),
            ("AGENT_CLUSTER_PROBE_TIMEOUT", "100ms"),
            ("EDGE_SERVER_HOST", "127.0.0.1"),
            ("EDGE_SERVER_PORT", &page_port),
        ],
    );
    let ping = || {
        Request::get("/ping")
            .header("host", "agent")
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    eventually(
        "the key from the peer",
        Duration::from_secs(60),
        async || fetch_ok(without_key.addr, ping()).await.0 == 204,
    )
    .await;
    assert_eq!(
        std::fs::read_to_string(data_c.join("agent_edge_key")).unwrap(),
        key
    );

    let stranger = unsigned_request("GET", "/key", "");
    assert_eq!(fetch_ok(with_key.addr, stranger).await.0, 403);
    let mut wrong = unsigned_request("GET", "/key", "");
    wrong.headers_mut().insert(
        "x-berthagent-edgekeyproof",
        berth_domain::edge::key::peer_proof("another-edge-id")
            .parse()
            .unwrap(),
    );
    assert_eq!(fetch_ok(with_key.addr, wrong).await.0, 403);
    drop((with_key, without_key));
}

fn job(id: u64, script: &str, collect: bool) -> serde_json::Value {
    json!({"Id": id, "CronExpression": "* * * * * *", "Version": 1, "CollectLogs": collect,
           "Script": base64::engine::general_purpose::STANDARD_NO_PAD.encode(script)})
}

fn lines(path: &std::path::Path) -> usize {
    std::fs::read_to_string(path)
        .map(|t| t.lines().count())
        .unwrap_or(0)
}

async fn wait_file_lines(path: &std::path::Path, at_least: usize) {
    let what = format!("{} with {at_least} lines", path.display());
    eventually(&what, WAIT, async || lines(path) >= at_least).await;
}

/// Jobs run by berth's scheduler inside the host root (chroot); a removed
/// job stops while the others go on; a bad one is reported; logs upload.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_jobs_run_in_the_host_root_and_report_their_logs() {
    let Some(engine) = engine_host() else { return };
    let Some(EdgeWorld {
        portainer,
        chisel,
        data,
    }) = EdgeWorld::start("jobs").await
    else {
        return;
    };
    let key = edge_key(&portainer, &chisel, 1);
    let root = host_root("jobs-root");
    let marker = format!("berth-job-{}", std::process::id());
    portainer.set_status(json!({"status": "IDLE", "checkin": 0.2, "schedules": [
        job(9, &format!("echo job-nine-ran; echo run >> /{marker}-9"), false),
        job(11, &format!("echo run >> /{marker}-11"), false),
        {"Id": 12, "CronExpression": "every day at noon", "Script": "ZWNobw", "Version": 1},
    ]}));
    let berth = start_edge_berth(
        &engine,
        &data,
        &[
            ("EDGE_KEY", &key),
            ("AGENT_HOST_ROOT", root.to_str().unwrap()),
        ],
    );
    let (nine, eleven) = (
        root.join(format!("{marker}-9")),
        root.join(format!("{marker}-11")),
    );
    wait_file_lines(&nine, 2).await;
    wait_file_lines(&eleven, 2).await;
    assert!(
        !std::path::Path::new(&format!("/{marker}-9")).exists(),
        "ran inside the root"
    );

    // The bad schedule is reported to Portainer as its log.
    let reports = portainer.wait_requests("/edge/jobs/12/logs", 1, WAIT).await;
    assert!(
        reports[0].body.contains("cannot run"),
        "{}",
        reports[0].body
    );

    // Asking for job 9's log uploads it.
    portainer.set_status(json!({"status": "IDLE", "checkin": 0.2, "schedules": [
        job(9, &format!("echo job-nine-ran; echo run >> /{marker}-9"), true),
        job(11, &format!("echo run >> /{marker}-11"), false),
    ]}));
    let uploads = portainer
        .wait_requests("/api/endpoints/1/edge/jobs/9/logs", 1, WAIT)
        .await;
    let body: serde_json::Value = serde_json::from_str(&uploads[0].body).unwrap();
    assert!(
        body["FileContent"]
            .as_str()
            .unwrap()
            .contains("job-nine-ran"),
        "{body}"
    );

    // Job 9 leaves the list while job 11 stays: 9 stops, 11 goes on.
    portainer.set_status(json!({"status": "IDLE", "checkin": 0.2, "schedules": [
        job(11, &format!("echo run >> /{marker}-11"), false),
    ]}));
    eventually("job 9 removed", WAIT, async || {
        !root.join("opt/portainer/scripts/schedule_9").exists()
    })
    .await;
    let (nine_then, eleven_then) = (lines(&nine), lines(&eleven));
    // Two more runs of job 11 are two times job 9 would have run too.
    wait_file_lines(&eleven, eleven_then + 2).await;
    assert!(
        lines(&nine) <= nine_then + 1,
        "the removed job no longer runs"
    );
    drop(berth);
}

/// A compose stack of the tiny image: deployed, running, reported, and
/// removed when it leaves the list; a broken one reports compose's error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_stacks_are_deployed_reported_and_removed() {
    let Some(engine) = engine_host() else { return };
    let Some(EdgeWorld {
        portainer,
        chisel,
        data,
    }) = EdgeWorld::start("stacks").await
    else {
        return;
    };
    let key = edge_key(&portainer, &chisel, 1);
    let name = format!("compose{}", std::process::id());
    let compose = "version: \"3\"\nservices:\n  app:\n    image: berth-test/busybox:latest\n    \
                   command: [\"sleep\", \"3600\"]\n    environment:\n      - GREETING=${GREETING}\n";
    // CE's payloads say "ID":0; the poll's listing names them.
    let mut payload = portainer_ce::stack_payload(&name, compose);
    // Business Edition fills EnvVars; CE sends null.
    payload["EnvVars"] = json!([{"name": "GREETING", "value": "hello-from-portainer"}]);
    portainer.set_stack(21, payload);
    portainer.set_stack(
        22,
        portainer_ce::stack_payload(&format!("{name}broken"), "services: [broken\n"),
    );
    portainer.set_status(portainer_ce::poll_answer(&[(21, 1), (22, 1)], 0.5));
    let mut env = vec![("EDGE_KEY", key.as_str())];
    env.extend_from_slice(&TOOLS_ENV);
    let berth = start_edge_berth(&engine, &data, &env);

    let statuses = wait_statuses(&portainer, 21, 7).await;
    assert_eq!(
        codes(&statuses),
        [3, 8, 1, 7],
        "Acknowledged, Deploying, DeploymentReceived, Running"
    );
    let project = format!("label=com.docker.compose.project=edge_{name}");
    let running = docker_cli(
        &engine,
        &["ps", "--filter", &project, "--format", "{{.State}}"],
    );
    assert_eq!(running, "running");
    let container = docker_cli(&engine, &["ps", "-q", "--filter", &project]);
    // Polls that list it again leave it alone: same container, no new
    // status, nothing said of the payload's own ID 0.
    let polls = portainer.wait_requests("/edge/status", 1, WAIT).await.len();
    portainer
        .wait_requests("/edge/status", polls + 8, WAIT)
        .await;
    assert_eq!(
        docker_cli(&engine, &["ps", "-q", "--filter", &project]),
        container,
        "the stack's container is not recreated"
    );
    assert_eq!(codes(&portainer.stack_statuses(21)), [3, 8, 1, 7]);
    assert!(portainer.stack_statuses(0).is_empty());
    let env_seen = docker_cli(
        &engine,
        &["inspect", "--format", "{{json .Config.Env}}", &container],
    );
    assert!(
        env_seen.contains("GREETING=hello-from-portainer"),
        "{env_seen}"
    );

    let broken = wait_statuses(&portainer, 22, 2).await;
    assert_eq!(codes(&broken), [3, 2]);
    assert!(
        broken[1].1.starts_with("failed to validate stack:"),
        "{broken:?}"
    );
    assert!(
        broken[1].1.len() > "failed to validate stack: ".len(),
        "compose's words are kept"
    );

    // Leaving the list removes the stack.
    portainer.set_status(portainer_ce::poll_answer(&[], 0.5));
    let statuses = wait_statuses(&portainer, 21, 4).await;
    assert_eq!(
        codes(&statuses),
        [3, 8, 1, 7, 9, 4],
        "then Removing, Removed"
    );
    assert_eq!(
        docker_cli(&engine, &["ps", "-aq", "--filter", &project]),
        ""
    );
    assert!(!data.join("edge_stacks/21").exists());
    drop(berth);
}

/// On a swarm manager the stack goes through `docker stack deploy`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_stacks_are_deployed_with_docker_stack() {
    let Some(engines) = support::berth_process::cluster_engine_hosts() else {
        return;
    };
    let manager = &engines[0];
    let Some(EdgeWorld {
        portainer,
        chisel,
        data,
    }) = EdgeWorld::start("swarm-stacks").await
    else {
        return;
    };
    let key = edge_key(&portainer, &chisel, 1);
    let name = format!("swarm{}", std::process::id());
    // No IPVS here: DNS round robin instead of a virtual IP.
    let compose = "version: \"3.3\"\nservices:\n  app:\n    image: berth-test/busybox:latest\n    \
                   command: [\"sleep\", \"3600\"]\n    deploy:\n      endpoint_mode: dnsrr\n";
    portainer.set_stack(31, portainer_ce::stack_payload(&name, compose));
    portainer.set_status(portainer_ce::poll_answer(&[(31, 1)], 0.5));
    let gossip = free_port().to_string();
    let mut env = vec![
        ("EDGE_KEY", key.as_str()),
        ("AGENT_CLUSTER_PORT", gossip.as_str()),
    ];
    env.extend_from_slice(&TOOLS_ENV);
    let berth = start_edge_berth(manager, &data, &env);

    let statuses = wait_statuses(&portainer, 31, 7).await;
    assert_eq!(codes(&statuses), [3, 8, 1, 7], "{statuses:?}");
    let namespace = format!("label=com.docker.stack.namespace=edge_{name}");
    let replicas = docker_cli(
        manager,
        &[
            "service",
            "ls",
            "--filter",
            &namespace,
            "--format",
            "{{.Replicas}}",
        ],
    );
    assert!(replicas.starts_with("1/1"), "{replicas}");
    portainer.set_status(json!({"status": "IDLE", "checkin": 0.5, "stacks": []}));
    wait_statuses(&portainer, 31, 4).await;
    assert_eq!(
        docker_cli(manager, &["service", "ls", "-q", "--filter", &namespace]),
        ""
    );
    drop(berth);
}
