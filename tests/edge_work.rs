//! Edge stacks and jobs with fakes of their ports: the order of stack
//! statuses, one failing stack not stopping another, status reports
//! retried through Portainer's 5xx, and schedule changes reaching the
//! scheduler.

#[path = "support/temp_dir.rs"]
mod temp_dir;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use base64::Engine as _;
use berth::edge::jobs::EdgeJobs;
use berth::edge::poll::PollWork;
use berth::edge::poll::PollWorker;
use berth::edge::reports::PortainerReports;
use berth::edge::stacks::{StackSettings, SyncStacks};
use berth::registry_lookup::CredentialsInUse;
use berth_adapters::fs::ConfinedFiles;
use berth_domain::engine::{EngineFacts, SwarmRole};
use berth_ports::{
    DeployError, Deployer, Deployment, EdgeAnswer, EdgeCall, JobRun, PortainerApi, PortainerError,
    ProjectState, Scheduler, SchedulerError, ScriptError, ScriptHost, ScriptOutcome,
};
use serde_json::json;
use temp_dir::{temp_dir, TempDir};
use tokio::sync::watch;

/// Portainer: stack payloads by ID, scripted failures for status reports.
#[derive(Clone, Default)]
struct FakePortainer {
    payloads: Arc<Mutex<BTreeMap<u64, serde_json::Value>>>,
    report_failures: Arc<Mutex<VecDeque<u16>>>,
    calls: Arc<Mutex<Vec<EdgeCall>>>,
}

impl FakePortainer {
    /// Portainer holds the stack `payload` (by its `ID`).
    fn offer(&self, payload: serde_json::Value) {
        let id = payload["ID"].as_u64().unwrap();
        self.payloads.lock().unwrap().insert(id, payload);
    }

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
            headers: Vec::new(),
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

/// A deployer whose projects named `*bad*` fail to deploy, whose next
/// pulls and deploys may be made to fail, and which notes what the
/// credential helper would be told while it works.
#[derive(Clone, Default)]
struct FakeDeployer {
    up: Arc<Mutex<Vec<String>>>,
    failing_pulls: Arc<Mutex<u32>>,
    failing_deploys: Arc<Mutex<u32>>,
    /// Pulls and deploys, with the time each came (the paused clock's).
    tries: Arc<Mutex<Vec<(&'static str, tokio::time::Instant)>>>,
    credentials: CredentialsInUse,
    /// The user the credential helper was given for 127.0.0.1:5000 at
    /// each pull.
    helper_saw: Arc<Mutex<Vec<Option<String>>>>,
}

impl FakeDeployer {
    fn fails_next(counter: &Mutex<u32>) -> bool {
        let mut left = counter.lock().unwrap();
        let fail = *left > 0;
        *left = left.saturating_sub(1);
        fail
    }
}

impl Deployer for FakeDeployer {
    async fn validate(&self, _: &Deployment) -> Result<(), DeployError> {
        Ok(())
    }

    async fn pull(&self, _: &Deployment) -> Result<(), DeployError> {
        let now = tokio::time::Instant::now();
        self.tries.lock().unwrap().push(("pull", now));
        let user = self.credentials.find("127.0.0.1:5000").map(|c| c.username);
        self.helper_saw.lock().unwrap().push(user);
        if Self::fails_next(&self.failing_pulls) {
            return Err(DeployError::Failed(
                "unauthorized: authentication required".into(),
            ));
        }
        Ok(())
    }

    async fn deploy(&self, d: &Deployment) -> Result<(), DeployError> {
        let now = tokio::time::Instant::now();
        self.tries.lock().unwrap().push(("deploy", now));
        if d.project.contains("bad") || Self::fails_next(&self.failing_deploys) {
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

fn sync_stacks(
    portainer: &FakePortainer,
    deployer: &FakeDeployer,
    dir: &Path,
) -> SyncStacks<FakeDeployer, FakePortainer, ConfinedFiles> {
    SyncStacks::new(deployer.clone(), portainer.clone(), settings(dir, deployer))
}

/// Where a test's stacks go: a folder the stacks code makes, inside one
/// that goes when the test ends, with the host root beside it (`settings`).
fn folder(name: &str) -> (TempDir, PathBuf) {
    let parent = temp_dir(&format!("edge-work-{name}"));
    let stacks = parent.join("stacks");
    (parent, stacks)
}

/// Stacks under `dir`, with `host` as the host root (its own folder).
fn settings(dir: &Path, deployer: &FakeDeployer) -> StackSettings<ConfinedFiles> {
    let host = dir.with_extension("host");
    std::fs::create_dir_all(&host).unwrap();
    StackSettings {
        edge_id: "edge".into(),
        folder: dir.to_path_buf(),
        facts: facts(),
        host: ConfinedFiles::new(host.join("volumes"), &host),
        host_is_root: false,
        credentials: deployer.credentials.clone(),
    }
}

#[tokio::test(start_paused = true)]
async fn stacks_report_in_order_and_a_failure_does_not_stop_the_others() {
    let portainer = FakePortainer::default();
    portainer.offer(payload(1, "bad"));
    portainer.offer(payload(2, "good"));
    // The first report meets two 5xx answers: it is retried, not lost.
    portainer.report_failures.lock().unwrap().extend([502, 503]);
    let deployer = FakeDeployer::default();
    let (_parent, dir) = folder("stacks");
    let mut stacks = sync_stacks(&portainer, &deployer, &dir);

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
    let (_parent, dir) = folder("evil");
    let deployer = FakeDeployer::default();
    let mut stacks = sync_stacks(&portainer, &deployer, &dir);
    stacks
        .apply(&work(json!({"stacks": [{"ID": 5, "Version": 1}]})))
        .await;
    assert_eq!(portainer.statuses(5), [2]);
    let report = portainer.calls.lock().unwrap().last().unwrap().body.clone();
    assert!(String::from_utf8_lossy(&report).contains("leaves the stack folder"));
    assert!(!dir.exists());
}

/// Runs the stacks' retries as the clock reaches them, until none is left
/// or `limit` passes.
async fn run_retries<W: PollWorker>(stacks: &mut W, limit: Duration) {
    let end = tokio::time::Instant::now() + limit;
    while let Some(at) = stacks.wake_at() {
        if at > end {
            return;
        }
        tokio::time::sleep_until(at).await;
        stacks.wake().await;
    }
}

#[tokio::test(start_paused = true)]
async fn a_failed_pull_is_tried_again_at_the_go_agents_pace_and_reported_once() {
    let portainer = FakePortainer::default();
    let mut private = payload(6, "private");
    private["PrePullImage"] = json!(true);
    private["RegistryCredentials"] =
        json!([{"ServerURL": "127.0.0.1:5000", "Username": "alice", "Secret": "pw"}]);
    portainer.offer(private);
    let deployer = FakeDeployer::default();
    *deployer.failing_pulls.lock().unwrap() = 2;
    let (_parent, dir) = folder("retry-pull");
    let mut stacks = sync_stacks(&portainer, &deployer, &dir);
    stacks
        .apply(&work(json!({"stacks": [{"ID": 6, "Version": 1}]})))
        .await;
    assert_eq!(
        portainer.statuses(6),
        [3, 2],
        "the failure is reported at once"
    );
    assert!(stacks.wake_at().is_some(), "and a retry is planned");

    run_retries(&mut stacks, Duration::from_secs(60)).await;
    assert_eq!(
        portainer.statuses(6),
        [3, 2, 6, 8, 7],
        "the same failure again is not reported twice; then ImagesPulled, Deploying, Running"
    );
    let pulls: Vec<tokio::time::Instant> = deployer
        .tries
        .lock()
        .unwrap()
        .iter()
        .filter(|(what, _)| *what == "pull")
        .map(|(_, at)| *at)
        .collect();
    assert_eq!(pulls.len(), 3);
    assert_eq!(
        pulls[1] - pulls[0],
        Duration::from_secs(5),
        "the Go agent's pass"
    );
    assert_eq!(pulls[2] - pulls[1], Duration::from_secs(5));
    assert_eq!(
        *deployer.helper_saw.lock().unwrap(),
        [
            Some("alice".to_string()),
            Some("alice".to_string()),
            Some("alice".to_string())
        ],
        "the helper is given the stack's credentials while it deploys"
    );
    assert!(
        deployer.credentials.find("127.0.0.1:5000").is_none(),
        "and no longer once it is done"
    );
    // Polls meanwhile do not start it over.
    stacks
        .apply(&work(json!({"stacks": [{"ID": 6, "Version": 1}]})))
        .await;
    assert_eq!(portainer.statuses(6).len(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_failed_deploy_is_tried_again_only_when_the_stack_asks() {
    let portainer = FakePortainer::default();
    let mut retried = payload(7, "retried");
    retried["RetryDeploy"] = json!(true);
    portainer.offer(retried);
    portainer.offer(payload(8, "bad"));
    let deployer = FakeDeployer::default();
    *deployer.failing_deploys.lock().unwrap() = 1;
    let (_parent, dir) = folder("retry-deploy");
    let mut stacks = sync_stacks(&portainer, &deployer, &dir);
    stacks
        .apply(&work(
            json!({"stacks": [{"ID": 7, "Version": 1}, {"ID": 8, "Version": 1}]}),
        ))
        .await;
    run_retries(&mut stacks, Duration::from_secs(60)).await;
    assert_eq!(portainer.statuses(7), [3, 8, 2, 8, 7]);
    assert_eq!(portainer.statuses(8), [3, 8, 2], "no RetryDeploy: one try");
    assert!(stacks.wake_at().is_none());
    // A stack that leaves the list stops being retried.
    portainer.payloads.lock().unwrap().get_mut(&8).unwrap()["RetryDeploy"] = json!(true);
    stacks
        .apply(&work(
            json!({"stacks": [{"ID": 7, "Version": 1}, {"ID": 8, "Version": 2}]}),
        ))
        .await;
    assert!(stacks.wake_at().is_some(), "version 2 asks for retries");
    stacks
        .apply(&work(json!({"stacks": [{"ID": 7, "Version": 1}]})))
        .await;
    assert!(stacks.wake_at().is_none(), "removed, not retried");
}

#[tokio::test(start_paused = true)]
async fn relative_path_stacks_are_written_where_the_host_sees_them() {
    let portainer = FakePortainer::default();
    let (_parent, dir) = folder("relative");
    let filesystem_path = dir.join("fs");
    let mut relative = payload(9, "relative");
    relative["SupportRelativePath"] = json!(true);
    relative["FilesystemPath"] = json!(filesystem_path.to_str().unwrap());
    relative["DirEntries"].as_array_mut().unwrap().push(
        json!({"Name": "static/index.html", "IsFile": true, "Content": STANDARD.encode("hello")}),
    );
    portainer.offer(relative);
    let deployer = FakeDeployer::default();
    let host = dir.with_extension("host");
    let mut stacks = sync_stacks(&portainer, &deployer, &dir);
    stacks
        .apply(&work(json!({"stacks": [{"ID": 9, "Version": 1}]})))
        .await;
    assert_eq!(portainer.statuses(9), [3, 8, 7]);
    let unpacked = filesystem_path.join("portainer-compose-unpacker/9");
    assert!(
        unpacked.join("docker-compose.yml").exists(),
        "where compose runs"
    );
    let on_host = host.join(unpacked.strip_prefix("/").unwrap());
    assert_eq!(
        std::fs::read_to_string(on_host.join("static/index.html")).unwrap(),
        "hello",
        "and the same path under the host root"
    );
    stacks.apply(&work(json!({"stacks": []}))).await;
    assert!(!unpacked.exists());
    assert!(!on_host.exists(), "removed from the host too");
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
