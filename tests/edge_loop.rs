//! The Edge loop with fakes of its ports: a scripted `PortainerApi` and a
//! `TunnelClient` that records what it is asked. Poll answers drive the
//! tunnel; failed opens are retried; inactivity closes it.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use berth::edge::keys::EdgeKeys;
use berth::edge::poll::{PollIdentity, Poller};
use berth::edge::tunnel::{self, Activity, TunnelGauge, TunnelSettings};
use berth_domain::edge::credentials::{self, TunnelCredentials};
use berth_domain::engine::{EngineFacts, SwarmRole};
use berth_domain::kubernetes::Platform;
use berth_ports::{
    EdgeAnswer, EdgeCall, KeyStore, KeyStoreError, OpenTunnel, PortainerApi, PortainerError,
    TunnelClient, TunnelError, TunnelSpec,
};
use serde_json::json;
use tokio::sync::watch;

const EDGE_ID: &str = "edge-loop";
const WAIT: Duration = Duration::from_secs(10);

#[derive(Clone, Default)]
struct ScriptedPortainer {
    answer: Arc<Mutex<serde_json::Value>>,
    calls: Arc<Mutex<Vec<EdgeCall>>>,
}

impl ScriptedPortainer {
    fn set(&self, value: serde_json::Value) {
        *self.answer.lock().unwrap() = value;
    }
}

impl PortainerApi for ScriptedPortainer {
    async fn call(&self, call: EdgeCall) -> Result<EdgeAnswer, PortainerError> {
        self.calls.lock().unwrap().push(call);
        let body = self.answer.lock().unwrap().to_string().into_bytes();
        Ok(EdgeAnswer {
            status: 200,
            etag: None,
            headers: Vec::new(),
            body,
        })
    }
}

#[derive(Clone, Default)]
struct RecordingTunnels {
    opened: Arc<Mutex<Vec<TunnelSpec>>>,
    failures_left: Arc<Mutex<u32>>,
    live: Arc<Mutex<Vec<watch::Sender<Option<String>>>>>,
}

struct FakeTunnel {
    ended: watch::Receiver<Option<String>>,
    close: watch::Sender<Option<String>>,
}

impl OpenTunnel for FakeTunnel {
    fn close(&self) {
        self.close.send_replace(Some("closed by the agent".into()));
    }

    async fn closed(&self) -> String {
        let mut ended = self.ended.clone();
        let reason = ended.wait_for(Option::is_some).await.map(|r| r.clone());
        reason.ok().flatten().unwrap_or_default()
    }

    fn proven(&self) -> bool {
        true
    }
}

impl TunnelClient for RecordingTunnels {
    type Tunnel = FakeTunnel;

    async fn open(&self, spec: TunnelSpec) -> Result<FakeTunnel, TunnelError> {
        self.opened.lock().unwrap().push(spec);
        {
            let mut failures = self.failures_left.lock().unwrap();
            if *failures > 0 {
                *failures -= 1;
                return Err(TunnelError::Unreachable("scripted failure".into()));
            }
        }
        let (close, ended) = watch::channel(None);
        self.live.lock().unwrap().push(close.clone());
        Ok(FakeTunnel { ended, close })
    }
}

impl RecordingTunnels {
    fn opens(&self) -> usize {
        self.opened.lock().unwrap().len()
    }

    fn open_now(&self) -> usize {
        self.live
            .lock()
            .unwrap()
            .iter()
            .filter(|t| t.borrow().is_none())
            .count()
    }
}

#[derive(Clone, Default)]
struct MemoryStore;

impl KeyStore for MemoryStore {
    async fn load(&self) -> Result<Option<String>, KeyStoreError> {
        Ok(None)
    }

    async fn save(&self, _: &str) -> Result<(), KeyStoreError> {
        Ok(())
    }
}

async fn until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !condition() {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

struct Loop {
    portainer: ScriptedPortainer,
    tunnels: RecordingTunnels,
    activity: Activity,
    gauge: TunnelGauge,
    sealed: String,
}

async fn start(inactivity: Duration, failing_opens: u32) -> Loop {
    use base64::Engine as _;
    let portainer = ScriptedPortainer::default();
    portainer.set(json!({"status": "IDLE", "checkin": 0.05}));
    let tunnels = RecordingTunnels::default();
    *tunnels.failures_left.lock().unwrap() = failing_opens;
    let keys = EdgeKeys::new(MemoryStore);
    let key = base64::engine::general_purpose::STANDARD_NO_PAD
        .encode("https://portainer|portainer:8000|fingerprint|5");
    keys.associate(&key).await.unwrap();
    let activity = Activity::default();
    let gauge = TunnelGauge::default();
    let handle = tunnel::spawn(
        tunnels.clone(),
        TunnelSettings {
            server: "portainer:8000".into(),
            fingerprint: "fingerprint".into(),
            local_target: "10.0.0.9:9001".into(),
            proxy: None,
            edge_id: EDGE_ID.into(),
            inactivity,
        },
        activity.clone(),
        gauge.clone(),
    );
    let facts = watch::channel(Arc::new(EngineFacts {
        node_name: "node".into(),
        role: SwarmRole::Standalone,
        node_id: String::new(),
        engine_version: "20.10".into(),
    }))
    .1;
    let identity = PollIdentity {
        edge_id: EDGE_ID.into(),
        update_id: 0,
        time_zone: "UTC".into(),
        platform: Platform::Docker,
    };
    tokio::spawn(Poller::new(portainer.clone(), keys, identity, handle, facts).run());
    let sealed = credentials::encrypt(
        &TunnelCredentials {
            user: "edgeuser".into(),
            password: String::from("s3cret").into(),
        },
        EDGE_ID,
        [4; 12],
    );
    Loop {
        portainer,
        tunnels,
        activity,
        gauge,
        sealed,
    }
}

#[tokio::test]
async fn required_opens_with_the_decrypted_credentials_and_idle_closes() {
    let l = start(Duration::from_secs(300), 0).await;
    until("a poll", || !l.portainer.calls.lock().unwrap().is_empty()).await;
    let call = l.portainer.calls.lock().unwrap()[0].clone();
    assert_eq!(call.path, "/api/endpoints/5/edge/status");
    l.portainer.set(
        json!({"status": "REQUIRED", "port": 50001, "credentials": l.sealed, "checkin": 0.05}),
    );
    until("the tunnel opens", || l.tunnels.open_now() == 1).await;
    let spec = l.tunnels.opened.lock().unwrap()[0].clone();
    assert_eq!(
        (spec.user.as_str(), spec.password.as_str()),
        ("edgeuser", "s3cret")
    );
    assert_eq!(
        (spec.remote_port, spec.local_target.as_str()),
        (50001, "10.0.0.9:9001")
    );
    until("the gauge says open", || l.gauge.get() == 2).await;
    l.portainer
        .set(json!({"status": "ACTIVE", "checkin": 0.05}));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        l.tunnels.opens(),
        1,
        "ACTIVE and repeated REQUIRED open nothing more"
    );
    l.portainer.set(json!({"status": "IDLE", "checkin": 0.05}));
    until("IDLE closes it", || l.tunnels.open_now() == 0).await;
    until("the gauge says closed", || l.gauge.get() == 0).await;
}

#[tokio::test]
async fn failed_opens_are_retried_until_one_works() {
    let l = start(Duration::from_secs(300), 2).await;
    l.portainer.set(
        json!({"status": "REQUIRED", "port": 50002, "credentials": l.sealed, "checkin": 0.05}),
    );
    until("the third try opens it", || l.tunnels.open_now() == 1).await;
    assert_eq!(l.tunnels.opens(), 3);
}

#[tokio::test]
async fn a_tunnel_nobody_uses_closes_and_one_in_use_stays() {
    let l = start(Duration::from_millis(400), 0).await;
    l.portainer.set(
        json!({"status": "REQUIRED", "port": 50003, "credentials": l.sealed, "checkin": 0.05}),
    );
    until("the tunnel opens", || l.tunnels.open_now() == 1).await;
    l.portainer
        .set(json!({"status": "ACTIVE", "checkin": 0.05}));
    let busy_until = Instant::now() + Duration::from_millis(1200);
    while Instant::now() < busy_until {
        l.activity.record();
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(l.tunnels.open_now(), 1, "requests keep the tunnel open");
    until("an idle tunnel closes", || l.tunnels.open_now() == 0).await;
    assert_eq!(
        l.tunnels.opens(),
        1,
        "ACTIVE does not reopen what inactivity closed"
    );
}

#[tokio::test]
async fn a_dropped_tunnel_is_reopened() {
    let l = start(Duration::from_secs(300), 0).await;
    l.portainer.set(
        json!({"status": "REQUIRED", "port": 50004, "credentials": l.sealed, "checkin": 0.05}),
    );
    until("the tunnel opens", || l.tunnels.open_now() == 1).await;
    l.portainer
        .set(json!({"status": "ACTIVE", "checkin": 0.05}));
    l.tunnels.live.lock().unwrap()[0].send_replace(Some("server went away".into()));
    until("it is reopened", || {
        l.tunnels.open_now() == 1 && l.tunnels.opens() == 2
    })
    .await;
}
