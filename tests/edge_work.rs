//! Edge stacks and jobs with fakes of their ports: the order of stack
//! statuses, one failing stack not stopping another, status reports
//! retried through Portainer's 5xx, and schedule changes reaching the
//! scheduler.

#[path = "support/portainer_ce.rs"]
mod portainer_ce;
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

/// Portainer: stack payloads by the ID its poll lists (the payloads
/// themselves say `"ID":0`, as Portainer CE's do), scripted failures for
/// status reports.
#[derive(Clone, Default)]
struct FakePortainer {
    payloads: Arc<Mutex<BTreeMap<u64, serde_json::Value>>>,
    report_failures: Arc<Mutex<VecDeque<u16>>>,
    calls: Arc<Mutex<Vec<EdgeCall>>>,
}

impl FakePortainer {
    /// Portainer serves `payload` as stack `id`.
    fn offer(&self, id: u64, payload: serde_json::Value) {
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
    fn deploys(&self) -> usize {
        self.tries
            .lock()
            .unwrap()
            .iter()
            .filter(|(what, _)| *what == "deploy")
            .count()
    }

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

/// A stack payload as Portainer CE serves it.
fn payload(name: &str) -> serde_json::Value {
    portainer_ce::stack_payload(name, "services: {}")
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
    portainer.offer(1, payload("bad"));
    portainer.offer(2, payload("good"));
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
        [3, 8, 1, 7],
        "the other stack still runs: Acknowledged, Deploying, DeploymentReceived, Running"
    );
    assert!(
        portainer.statuses(0).is_empty(),
        "nothing is reported for the payload's own ID"
    );
    assert_eq!(*deployer.up.lock().unwrap(), ["edge_good"]);

    // The same list again changes nothing; an emptied list removes.
    stacks
        .apply(&work(
            json!({"stacks": [{"ID": 1, "Version": 1}, {"ID": 2, "Version": 1}]}),
        ))
        .await;
    assert_eq!(portainer.statuses(2).len(), 4);
    assert_eq!(deployer.deploys(), 2, "nothing is deployed again");
    stacks.apply(&work(json!({"stacks": []}))).await;
    assert_eq!(portainer.statuses(2), [3, 8, 1, 7, 9, 4]);
    assert!(deployer.up.lock().unwrap().is_empty());
    assert!(!dir.join("2").exists());
}

#[tokio::test(start_paused = true)]
async fn an_escaping_stack_file_is_reported_not_written() {
    let portainer = FakePortainer::default();
    let mut evil = payload("evil");
    evil["DirEntries"]
        .as_array_mut()
        .unwrap()
        .push(json!({"Name": "../../escaped", "IsFile": true, "Content": STANDARD.encode("x")}));
    portainer.offer(5, evil);
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

/// Portainer CE's recorded answers, unchanged: the poll lists stack 1 and
/// the payload says `"ID":0`. The stack deploys once, is reported as stack
/// 1, and polls that list it again leave it running.
#[tokio::test(start_paused = true)]
async fn the_recorded_portainer_answers_deploy_the_listed_stack_once() {
    let portainer = FakePortainer::default();
    portainer.offer(1, portainer_ce::answer("edge-stack-payload.json"));
    let deployer = FakeDeployer::default();
    let (_parent, dir) = folder("recorded");
    let mut stacks = sync_stacks(&portainer, &deployer, &dir);
    let poll = work(portainer_ce::answer("edge-status.json"));
    for _ in 0..5 {
        stacks.apply(&poll).await;
    }
    assert_eq!(portainer.statuses(1), [3, 8, 1, 7]);
    assert!(portainer.statuses(0).is_empty());
    assert_eq!(deployer.deploys(), 1, "deployed once, never again");
    assert_eq!(*deployer.up.lock().unwrap(), ["edge_berthrecord"]);
    assert!(dir.join("1/docker-compose.yml").exists());
    stacks
        .apply(&work(portainer_ce::answer("edge-status-first.json")))
        .await;
    assert_eq!(portainer.statuses(1), [3, 8, 1, 7, 9, 4]);
    assert!(deployer.up.lock().unwrap().is_empty());
}

/// A stack Portainer will not serve (CE answers 400 for a stack with no
/// compose file, 404 for one deleted meanwhile) is asked for again with
/// backoff, not on every poll, and Portainer hears the reason once.
#[tokio::test(start_paused = true)]
async fn a_stack_portainer_does_not_serve_is_asked_for_again_with_backoff() {
    let portainer = FakePortainer::default();
    let deployer = FakeDeployer::default();
    let (_parent, dir) = folder("unserved");
    let mut stacks = sync_stacks(&portainer, &deployer, &dir);
    let fetches = || {
        portainer
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.path.contains("/edge/stacks/10"))
            .count()
    };
    let poll = work(json!({"stacks": [{"ID": 10, "Version": 1}]}));
    stacks.apply(&poll).await;
    assert_eq!((fetches(), portainer.statuses(10)), (1, vec![2]));
    for _ in 0..3 {
        stacks.apply(&poll).await;
    }
    assert_eq!(fetches(), 1, "polls within the wait do not ask again");
    tokio::time::advance(Duration::from_secs(5)).await;
    stacks.apply(&poll).await;
    assert_eq!(fetches(), 2, "asked again after 5 s");
    tokio::time::advance(Duration::from_secs(5)).await;
    stacks.apply(&poll).await;
    assert_eq!(fetches(), 2, "then after 10 s");
    assert_eq!(portainer.statuses(10), [2], "the same reason is told once");
    portainer.offer(10, payload("served"));
    tokio::time::advance(Duration::from_secs(5)).await;
    stacks.apply(&poll).await;
    assert_eq!(portainer.statuses(10), [2, 3, 8, 1, 7]);
    // A new version is asked for at once.
    portainer.payloads.lock().unwrap().remove(&10);
    stacks
        .apply(&work(json!({"stacks": [{"ID": 10, "Version": 2}]})))
        .await;
    assert_eq!(fetches(), 4);
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
    let mut private = payload("private");
    private["PrePullImage"] = json!(true);
    private["RegistryCredentials"] =
        json!([{"ServerURL": "127.0.0.1:5000", "Username": "alice", "Secret": "pw"}]);
    portainer.offer(6, private);
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
        [3, 2, 6, 8, 1, 7],
        "the same failure again is not reported twice; then ImagesPulled, Deploying, DeploymentReceived, Running"
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
    assert_eq!(portainer.statuses(6).len(), 6);
}

#[tokio::test(start_paused = true)]
async fn a_failed_deploy_is_tried_again_only_when_the_stack_asks() {
    let portainer = FakePortainer::default();
    let mut retried = payload("retried");
    retried["RetryDeploy"] = json!(true);
    portainer.offer(7, retried);
    portainer.offer(8, payload("bad"));
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
    assert_eq!(portainer.statuses(7), [3, 8, 2, 8, 1, 7]);
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
    let mut relative = payload("relative");
    relative["SupportRelativePath"] = json!(true);
    relative["FilesystemPath"] = json!(filesystem_path.to_str().unwrap());
    relative["DirEntries"].as_array_mut().unwrap().push(
        json!({"Name": "static/index.html", "IsFile": true, "Content": STANDARD.encode("hello")}),
    );
    portainer.offer(9, relative);
    let deployer = FakeDeployer::default();
    let host = dir.with_extension("host");
    let mut stacks = sync_stacks(&portainer, &deployer, &dir);
    stacks
        .apply(&work(json!({"stacks": [{"ID": 9, "Version": 1}]})))
        .await;
    assert_eq!(portainer.statuses(9), [3, 8, 1, 7]);
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
