//! The hostile tunnel servers of `support/hostile_scripts.rs`, end to end:
//! a berth process in Edge mode, told by a scripted Portainer to open its
//! tunnel, meets one of them behind a websocket, as it would meet a
//! spoofed or compromised tunnel server (a real key exchange and login,
//! the `config` request granted, then the hostile part). For each: the
//! agent's API keeps answering meanwhile, each drop is logged with its
//! reason, the reconnects back off (the delays logged and the gaps between
//! the server's connections both grow), and the peak resident set stays
//! bounded. chisel cannot be made to do any of this, hence the scripted
//! server. Scripts that end only by berth's timeouts (a re-key never
//! finished, IGNORE forever, a stall: 30 s and 50 s) are run in process
//! with paused time by `tests/hostile_ssh.rs`.

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use berth_adapters::tunnel::ssh::kex::server::host_key_blob;
use berth_domain::edge::credentials::{self, TunnelCredentials};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::Request;
use http_body_util::Full;
use serde_json::json;
use support::berth_process::{engine_host, free_port, BerthProcess};
use support::edge_world::{fetch, loopback, start_edge_berth, wait_metric, EDGE_ID, WAIT};
use support::hostile_scripts::{self as script, MSG_GLOBAL_REQUEST, MSG_REQUEST_SUCCESS};
use support::portainer_server::TestPortainer;
use support::scripted_ssh::{ScriptedServer, HOST_SEED};
use support::temp_dir::{temp_dir, TempDir};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::handshake::server::{
    ErrorResponse, Request as WsRequest, Response,
};
use tokio_tungstenite::tungstenite::Message;

/// Connections each script must see: the first and two reconnects.
const CONNECTIONS: usize = 3;
/// How long a script may go on: past berth's longest wait (three
/// keepalive ticks of 25 s).
const SCRIPT_LIMIT: Duration = Duration::from_secs(150);
/// Peak resident set over the agent's at the start, in every case: the
/// tunnel's windows and buffers with room to spare, far below what the
/// hostile servers name (4 GiB packets, 4 GiB windows, 64 MiB of data).
const MEMORY_BOUND_KIB: u64 = 96 * 1024;

#[derive(Clone, Copy, Debug)]
enum Script {
    FourGibPacket,
    WindowPast2_32,
    DataBeyondTheWindow,
    DataOnUnknownChannels,
    ChannelFlood,
    HostKeyChanged,
    RekeyNeverCompleted,
    IgnoreForever,
    StallMidPacket,
}

impl Script {
    async fn run(self, server: ScriptedServer, target: String) {
        match self {
            Script::FourGibPacket => script::four_gib_packet(server, target).await,
            Script::WindowPast2_32 => script::window_past_2_32(server, target).await,
            Script::DataBeyondTheWindow => script::data_beyond_the_window(server, target).await,
            Script::DataOnUnknownChannels => script::data_on_unknown_channels(server, target).await,
            Script::ChannelFlood => {
                let (confirmed, refused) = script::channel_flood(server, target, 2_000).await;
                eprintln!("channel flood: {confirmed} confirmed, {refused} refused");
            }
            Script::HostKeyChanged => script::host_key_changed(server, target).await,
            Script::RekeyNeverCompleted => script::rekey_never_completed(server, target).await,
            Script::IgnoreForever => script::ignore_forever(server, target).await,
            Script::StallMidPacket => script::stall_mid_packet(server, target).await,
        }
    }
}

/// The hostile server: chisel's websocket in front of the scripted SSH
/// server, running the script of the moment on every connection.
struct HostileServer {
    address: SocketAddr,
    script: Arc<Mutex<Script>>,
    arrivals: Arc<Mutex<Vec<Instant>>>,
}

impl HostileServer {
    async fn start() -> HostileServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let server = HostileServer {
            address: listener.local_addr().unwrap(),
            script: Arc::new(Mutex::new(Script::FourGibPacket)),
            arrivals: Arc::default(),
        };
        let (script, arrivals) = (Arc::clone(&server.script), Arc::clone(&server.arrivals));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                arrivals.lock().unwrap().push(Instant::now());
                let chosen = *script.lock().unwrap();
                tokio::spawn(async move {
                    let Some(pipe) = accept_websocket(stream).await else {
                        return;
                    };
                    let Ok(mut server) = ScriptedServer::handshake(pipe, true).await else {
                        return;
                    };
                    let Some(target) = grant_config(&mut server).await else {
                        return;
                    };
                    // Scripts may wait forever once the client has gone;
                    // none may end before berth's own timeouts do.
                    let _ = tokio::time::timeout(SCRIPT_LIMIT, chosen.run(server, target)).await;
                });
            }
        });
        server
    }

    fn arrivals(&self) -> Vec<Instant> {
        self.arrivals.lock().unwrap().clone()
    }
}

// The error type is tungstenite's, for its callback.
#[allow(clippy::result_large_err)]
fn echo_subprotocol(
    request: &WsRequest,
    mut response: Response,
) -> Result<Response, ErrorResponse> {
    if let Some(protocol) = request.headers().get("sec-websocket-protocol") {
        response
            .headers_mut()
            .insert("sec-websocket-protocol", protocol.clone());
    }
    Ok(response)
}

/// chisel's websocket upgrade (subprotocol `chisel-v3` echoed), its binary
/// messages bridged to an in-memory pipe for the scripted server.
async fn accept_websocket(stream: tokio::net::TcpStream) -> Option<DuplexStream> {
    let socket = tokio_tungstenite::accept_hdr_async(stream, echo_subprotocol)
        .await
        .ok()?;
    let (ours, theirs) = tokio::io::duplex(256 * 1024);
    let (mut from_server, mut to_server) = tokio::io::split(theirs);
    let (mut sink, mut stream) = socket.split();
    tokio::spawn(async move {
        let mut buffer = vec![0u8; 32 * 1024];
        while let Ok(n) = from_server.read(&mut buffer).await {
            if n == 0
                || sink
                    .send(Message::binary(buffer[..n].to_vec()))
                    .await
                    .is_err()
            {
                break;
            }
        }
        let _ = sink.close().await;
    });
    tokio::spawn(async move {
        while let Some(Ok(message)) = stream.next().await {
            if let Message::Binary(bytes) = message {
                if to_server.write_all(&bytes).await.is_err() {
                    break;
                }
            }
        }
        let _ = to_server.shutdown().await;
    });
    Some(ours)
}

/// Answers the client's `config` request with chisel's success; returns
/// the agent address it names (the one place channels may go).
async fn grant_config(server: &mut ScriptedServer) -> Option<String> {
    let request = server.receive_kind(MSG_GLOBAL_REQUEST).await.ok()?;
    let name_length = u32::from_be_bytes(request[1..5].try_into().ok()?) as usize;
    let config: serde_json::Value = serde_json::from_slice(&request[5 + name_length + 1..]).ok()?;
    let remote = &config["Remotes"][0];
    let target = format!(
        "{}:{}",
        remote["RemoteHost"].as_str()?,
        remote["RemotePort"].as_str()?
    );
    server.send(&[MSG_REQUEST_SUCCESS]).await.ok()?;
    Some(target)
}

fn edge_key(portainer: &TestPortainer, hostile: &HostileServer) -> String {
    let fingerprint =
        berth_domain::edge::fingerprint::sha256_fingerprint(&host_key_blob(HOST_SEED));
    base64::engine::general_purpose::STANDARD_NO_PAD.encode(format!(
        "{}|{}|{fingerprint}|1",
        portainer.url(),
        hostile.address
    ))
}

fn sealed_credentials() -> String {
    credentials::encrypt(
        &TunnelCredentials {
            user: "hostile".into(),
            password: String::from("anything").into(),
        },
        EDGE_ID,
        [7; 12],
    )
}

/// A field of a JSON log line, as text.
fn field(line: &str, name: &str) -> Option<String> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let found = value
        .get("fields")
        .and_then(|fields| fields.get(name))
        .or_else(|| value.get(name))?;
    Some(match found {
        serde_json::Value::String(text) => text.clone(),
        other => other.to_string(),
    })
}

/// The kilobytes of `key` (`VmRSS`, `VmHWM`) in the process's status.
fn memory_kib(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{key}:")))
        .and_then(|rest| rest.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

/// The API's `/ping`, asked until `done`; panics on any answer other
/// than 204 or none within WAIT. Returns how many were answered.
async fn ping_until(api: SocketAddr, done: impl Fn() -> bool) -> usize {
    let mut answered = 0;
    while !done() {
        let ping = Request::get("/ping")
            .header("host", "agent")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let answer = tokio::time::timeout(WAIT, fetch(api, ping)).await;
        match answer {
            Ok(Some((204, _))) => answered += 1,
            other => panic!("the API did not answer /ping: {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    answered
}

/// A berth process in Edge mode, a scripted Portainer and a hostile tunnel
/// server its Edge key names.
struct World {
    portainer: TestPortainer,
    hostile: HostileServer,
    berth: BerthProcess,
    metrics: SocketAddr,
    baseline_kib: u64,
    _data: TempDir,
}

impl World {
    async fn start(engine: &str, name: &str) -> World {
        let portainer = TestPortainer::start().await;
        let hostile = HostileServer::start().await;
        let data = temp_dir(name);
        let metrics = loopback(free_port());
        let metrics_addr = metrics.to_string();
        let key = edge_key(&portainer, &hostile);
        let berth = start_edge_berth(
            engine,
            &data,
            &[("EDGE_KEY", &key), ("METRICS_ADDR", &metrics_addr)],
        );
        wait_metric(metrics, "berth_edge_tunnel_state", "0").await;
        let baseline_kib = memory_kib(berth.pid(), "VmRSS");
        eprintln!("{name}: resident at the start: {baseline_kib} KiB");
        World {
            portainer,
            hostile,
            berth,
            metrics,
            baseline_kib,
            _data: data,
        }
    }

    /// One case: the script on every connection until CONNECTIONS
    /// arrived (within `limit`), then Portainer says IDLE. Checks what
    /// every case must show; `expected` is in every drop's reason.
    async fn case(&self, chosen: Script, expected: &str, limit: Duration) {
        *self.hostile.script.lock().unwrap() = chosen;
        let (log_from, arrived_from) = (self.berth.log().len(), self.hostile.arrivals().len());
        self.portainer
            .set_status(json!({"status": "REQUIRED", "port": free_port(),
            "credentials": sealed_credentials(), "checkin": 0.2}));
        let deadline = Instant::now() + limit;
        let answered = ping_until(self.berth.addr, || {
            assert!(Instant::now() < deadline, "{chosen:?}: too few connections");
            self.hostile.arrivals().len() >= arrived_from + CONNECTIONS
        })
        .await;
        // The drops before the last connection are logged (the log trails).
        let dropped = |log: &[String]| {
            log.iter()
                .filter(|line| line.contains("the Edge tunnel dropped; reconnecting"))
                .count()
        };
        while dropped(&self.berth.log()[log_from..]) < CONNECTIONS {
            assert!(
                Instant::now() < deadline,
                "{chosen:?}: the last drop not logged"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.portainer
            .set_status(json!({"status": "IDLE", "checkin": 0.2}));
        wait_metric(self.metrics, "berth_edge_tunnel_state", "0").await;
        let log: Vec<String> = self.berth.log()[log_from..].to_vec();
        let reasons: Vec<String> = log
            .iter()
            .filter(|line| line.contains("the Edge tunnel dropped; reconnecting"))
            .filter_map(|line| field(line, "reason"))
            .collect();
        let retries: Vec<u64> = log
            .iter()
            .filter(|line| line.contains("Edge tunnel retry scheduled"))
            .filter_map(|line| field(line, "retry_in_ms")?.parse().ok())
            .collect();
        let arrivals = self.hostile.arrivals()[arrived_from..].to_vec();
        let gaps: Vec<Duration> = arrivals.windows(2).map(|w| w[1] - w[0]).collect();
        let peak = memory_kib(self.berth.pid(), "VmHWM");
        eprintln!(
            "{chosen:?}: dropped with {:?}; retries in {retries:?} ms; connections {gaps:?} apart; \
             /ping answered {answered} times meanwhile; peak resident {peak} KiB ({} KiB over the start)",
            reasons.first(),
            peak.saturating_sub(self.baseline_kib)
        );
        assert!(reasons.len() >= CONNECTIONS - 1, "{chosen:?}: {reasons:?}");
        assert!(
            reasons.iter().all(|reason| reason.contains(expected)),
            "{chosen:?}: {reasons:?}"
        );
        // Doubling windows with jitter in their upper half: 0.5–1 s, then
        // 1–2 s, then 2–4 s.
        assert!(retries.len() >= CONNECTIONS - 1, "{chosen:?}: {retries:?}");
        assert!(
            retries[0] <= 1_000 && retries[1] >= 1_000,
            "{chosen:?}: the reconnects do not back off: {retries:?}"
        );
        for (gap, retry) in gaps.iter().zip(&retries) {
            assert!(
                *gap >= Duration::from_millis(*retry),
                "{chosen:?}: reconnected {gap:?} after a drop, before the {retry} ms backoff"
            );
        }
        assert!(
            peak.saturating_sub(self.baseline_kib) < MEMORY_BOUND_KIB,
            "{chosen:?}: peak resident {peak} KiB from {} KiB",
            self.baseline_kib
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_tunnel_servers_are_dropped_with_a_reason_and_retried_with_backoff() {
    let Some(engine) = engine_host() else { return };
    let world = World::start(&engine, "hostile-tunnel").await;
    for (chosen, expected) in [
        (Script::FourGibPacket, "bad packet length"),
        (Script::WindowPast2_32, "window past 2^32"),
        (
            Script::DataBeyondTheWindow,
            "more data than the channel's window",
        ),
        (Script::DataOnUnknownChannels, "closed the connection"),
        (Script::ChannelFlood, "closed the connection"),
        (Script::HostKeyChanged, "fingerprint"),
    ] {
        world.case(chosen, expected, 3 * WAIT).await;
    }
}

/// The servers that only berth's own timeouts end (a key exchange must
/// finish within 30 s; two unanswered keepalives of 25 s end a session),
/// each against an agent of its own, side by side: some two and a half
/// minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_that_only_berths_timeouts_end_are_dropped_and_retried_with_backoff() {
    let Some(engine) = engine_host() else { return };
    let limit = 2 * SCRIPT_LIMIT;
    let (rekey, ignore, stall) = tokio::join!(
        World::start(&engine, "hostile-rekey"),
        World::start(&engine, "hostile-ignore"),
        World::start(&engine, "hostile-stall"),
    );
    tokio::join!(
        rekey.case(
            Script::RekeyNeverCompleted,
            "did not finish a key exchange",
            limit
        ),
        ignore.case(Script::IgnoreForever, "stopped answering keepalives", limit),
        stall.case(
            Script::StallMidPacket,
            "stopped answering keepalives",
            limit
        ),
    );
}
