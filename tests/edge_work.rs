//! Edge stacks and jobs with fakes of their ports: the order of stack
//! statuses, one failing stack not stopping another, status reports
//! retried through Portainer's 5xx, and schedule changes reaching the
//! scheduler.

use std::collections::{BTreeMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use berth::edge::jobs::EdgeJobs;
use berth::edge::poll::PollWork;
use berth::edge::reports::PortainerReports;
use berth::edge::stacks::SyncStacks;
use berth_domain::engine::{EngineFacts, SwarmRole};
use berth_ports::{
    DeployError, Deployer, Deployment, EdgeAnswer, EdgeCall, JobRun, PortainerApi, PortainerError,
    ProjectState, Scheduler, SchedulerError, ScriptError, ScriptHost, ScriptOutcome,
};
use serde_json::json;
use tokio::sync::watch;

/// Portainer: stack payloads by ID, scripted failures for status reports.
#[derive(Clone, Default)]
struct FakePortainer {
    payloads: Arc<Mutex<BTreeMap<u64, serde_json::Value>>>,
    report_failures: Arc<Mutex<VecDeque<u16>>>,
    calls: Arc<Mutex<Vec<EdgeCall>>>,
}

impl FakePortainer {
    fn statuses(&self, stack: u64) -> Vec<u64> {
        let path = format!("/api/edge_stacks/{stack}/status");
        self.calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.path == path)
            .map(|c| {
                serde_json::from_slice::<serde_json::Value>(&c.body).unwrap()["Status"]
                    .as_u64()
                    .unwrap()
            })
            .collect()
    }
}

impl PortainerApi for FakePortainer {
    async fn call(&self, call: EdgeCall) -> Result<EdgeAnswer, PortainerError> {
        self.calls.lock().unwrap().push(call.clone());
        let answer = |status: u16, body: String| EdgeAnswer {
            status,
            etag: None,
            body: body.into_bytes(),
        };
        if call.path.ends_with("/status") {
            return Ok(match self.report_failures.lock().unwrap().pop_front() {
                Some(status) => answer(status, String::new()),
                None => answer(200, String::new()),
            });
        }
        let id: u64 = call
            .path
            .split('?')
            .next()
            .unwrap()
            .rsplit('/')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        Ok(match self.payloads.lock().unwrap().get(&id) {
            Some(payload) => answer(200, payload.to_string()),
            None => answer(404, "{}".into()),
        })
    }
}

/// A deployer whose projects named `*bad*` fail to deploy.
#[derive(Clone, Default)]
struct FakeDeployer {
    up: Arc<Mutex<Vec<String>>>,
}

impl Deployer for FakeDeployer {
    async fn validate(&self, _: &Deployment) -> Result<(), DeployError> {
        Ok(())
    }

    async fn pull(&self, _: &Deployment) -> Result<(), DeployError> {
        Ok(())
    }

    async fn deploy(&self, d: &Deployment) -> Result<(), DeployError> {
        if d.project.contains("bad") {
            return Err(DeployError::Failed("image not found".into()));
        }
        assert!(
            d.folder.join(&d.entry_file).exists(),
            "files are written first"
        );
        assert!(d.env.iter().any(|(k, _)| k == "PORTAINER_EDGE_ID"));
        self.up.lock().unwrap().push(d.project.clone());
        Ok(())
    }

    async fn state(&self, d: &Deployment) -> Result<ProjectState, DeployError> {
        Ok(if self.up.lock().unwrap().contains(&d.project) {
            ProjectState::Running
        } else {
            ProjectState::Absent
        })
    }

    async fn remove(&self, d: &Deployment) -> Result<(), DeployError> {
        self.up.lock().unwrap().retain(|p| *p != d.project);
        Ok(())
    }
}

fn payload(id: u64, name: &str) -> serde_json::Value {
    json!({"ID": id, "Name": name, "DirEntries": [
        {"Name": "docker-compose.yml", "IsFile": true, "Content": STANDARD.encode("services: {}")}]})
}

fn work(answer: serde_json::Value) -> PollWork {
    PollWork {
        answer: Arc::new(answer),
        endpoint_id: 4,
    }
}

fn facts() -> watch::Receiver<Arc<EngineFacts>> {
    watch::channel(Arc::new(EngineFacts {
        node_name: "n".into(),
        role: SwarmRole::Standalone,
        node_id: String::new(),
        engine_version: "20.10".into(),
    }))
    .1
}

fn folder(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("berth-edge-work-{name}-{}", std::process::id()))
}

#[tokio::test(start_paused = true)]
async fn stacks_report_in_order_and_a_failure_does_not_stop_the_others() {
    let portainer = FakePortainer::default();
    portainer
        .payloads
        .lock()
        .unwrap()
        .insert(1, payload(1, "bad"));
    portainer
        .payloads
        .lock()
        .unwrap()
        .insert(2, payload(2, "good"));
    // The first report meets two 5xx answers: it is retried, not lost.
    portainer.report_failures.lock().unwrap().extend([502, 503]);
    let deployer = FakeDeployer::default();
    let dir = folder("stacks");
    let mut stacks = SyncStacks::new(
        deployer.clone(),
        portainer.clone(),
        "edge".into(),
        dir.clone(),
        facts(),
    );

    stacks
        .apply(&work(
            json!({"stacks": [{"ID": 1, "Version": 1}, {"ID": 2, "Version": 1}]}),
        ))
        .await;
    assert_eq!(
        portainer.statuses(1),
        [3, 3, 3, 8, 2],
        "Acknowledged (after two 5xx), Deploying, Error"
    );
    assert_eq!(
        portainer.statuses(2),
        [3, 8, 7],
        "the other stack still runs"
    );
    assert_eq!(*deployer.up.lock().unwrap(), ["edge_good"]);

    // The same list again changes nothing; an emptied list removes.
    stacks
        .apply(&work(
            json!({"stacks": [{"ID": 1, "Version": 1}, {"ID": 2, "Version": 1}]}),
        ))
        .await;
    assert_eq!(portainer.statuses(2).len(), 3);
    stacks.apply(&work(json!({"stacks": []}))).await;
    assert_eq!(portainer.statuses(2), [3, 8, 7, 9, 4]);
    assert!(deployer.up.lock().unwrap().is_empty());
    assert!(!dir.join("2").exists());
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test(start_paused = true)]
async fn an_escaping_stack_file_is_reported_not_written() {
    let portainer = FakePortainer::default();
    portainer.payloads.lock().unwrap().insert(
        5,
        json!({"ID": 5, "Name": "evil", "DirEntries": [
            {"Name": "docker-compose.yml", "IsFile": true, "Content": STANDARD.encode("x")},
            {"Name": "../../escaped", "IsFile": true, "Content": STANDARD.encode("x")}]}),
    );
    let dir = folder("evil");
    let mut stacks = SyncStacks::new(
        FakeDeployer::default(),
        portainer.clone(),
        "edge".into(),
        dir.clone(),
        facts(),
    );
    stacks
        .apply(&work(json!({"stacks": [{"ID": 5, "Version": 1}]})))
        .await;
    assert_eq!(portainer.statuses(5), [2]);
    let report = portainer.calls.lock().unwrap().last().unwrap().body.clone();
    assert!(String::from_utf8_lossy(&report).contains("leaves the stack folder"));
    assert!(!dir.exists());
}

#[derive(Clone, Default)]
struct FakeScheduler {
    jobs: Arc<Mutex<BTreeMap<u64, String>>>,
}

impl Scheduler for FakeScheduler {
    fn start(&self, id: u64, cron: &str, _: JobRun) -> Result<(), SchedulerError> {
        self.jobs.lock().unwrap().insert(id, cron.to_string());
        Ok(())
    }

    fn stop(&self, id: u64) {
        self.jobs.lock().unwrap().remove(&id);
    }
}

#[derive(Clone, Default)]
struct FakeHost {
    scripts: Arc<Mutex<BTreeMap<u64, Vec<u8>>>>,
}

impl ScriptHost for FakeHost {
    async fn install(&self, id: u64, script: &[u8]) -> Result<(), ScriptError> {
        self.scripts.lock().unwrap().insert(id, script.to_vec());
        Ok(())
    }

    async fn run(&self, _: u64, _: Duration) -> Result<ScriptOutcome, ScriptError> {
        Ok(ScriptOutcome::Exited(0))
    }

    async fn log(&self, id: u64) -> Result<String, ScriptError> {
        Ok(format!("log of {id}"))
    }

    async fn note(&self, _: u64, _: &str) -> Result<(), ScriptError> {
        Ok(())
    }

    async fn remove(&self, id: u64) -> Result<(), ScriptError> {
        self.scripts.lock().unwrap().remove(&id);
        Ok(())
    }
}

fn schedule(id: u64, version: u64) -> serde_json::Value {
    json!({"Id": id, "CronExpression": "*/5 * * * *", "Version": version,
           "Script": STANDARD_NO_PAD.encode(format!("echo {id}"))})
}

#[tokio::test]
async fn every_schedule_change_reaches_the_scheduler() {
    let scheduler = FakeScheduler::default();
    let host = FakeHost::default();
    let mut jobs = EdgeJobs::new(
        scheduler.clone(),
        host.clone(),
        PortainerReports::new(FakePortainer::default(), "edge".into()),
        Duration::from_secs(60),
    );
    jobs.apply(&work(
        json!({"schedules": [schedule(1, 1), schedule(2, 1), schedule(3, 1)]}),
    ))
    .await;
    assert_eq!(jobs.running(), [1, 2, 3]);
    assert_eq!(scheduler.jobs.lock().unwrap()[&1], "0 */5 * * * *");
    jobs.apply(&work(
        json!({"schedules": [schedule(1, 1), schedule(3, 2)]}),
    ))
    .await;
    assert_eq!(jobs.running(), [1, 3], "removing one of several is applied");
    assert_eq!(
        scheduler
            .jobs
            .lock()
            .unwrap()
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        [1, 3]
    );
    assert!(!host.scripts.lock().unwrap().contains_key(&2));
    jobs.apply(&work(json!({"status": "IDLE"}))).await;
    assert_eq!(
        jobs.running(),
        [1, 3],
        "an answer without schedules changes nothing"
    );
    jobs.apply(&work(json!({"schedules": []}))).await;
    assert!(jobs.running().is_empty());
}
