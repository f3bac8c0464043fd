//! Edge jobs (reference §10.8): the schedules of each poll answer are run
//! by berth's own scheduler (not the host's cron daemon), inside the host
//! root, with a timeout; every change is applied, and what cannot run is
//! said in the job's log, which goes to Portainer like any other log.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use berth_domain::edge::schedule::{diff, parse_schedules, BadSchedule, Schedule};
use berth_ports::{JobRun, Scheduler, ScriptHost, ScriptOutcome};
use tracing::{info, warn};

use super::poll::{PollWork, PollWorker};
use super::reports::Reports;

pub struct EdgeJobs<S, H, R> {
    scheduler: S,
    host: H,
    reports: R,
    timeout: Duration,
    running: BTreeMap<u64, Schedule>,
    /// (job, reason) already reported, so a bad schedule is reported once.
    reported: BTreeSet<(u64, String)>,
}

impl<S: Scheduler, H: ScriptHost, R: Reports> EdgeJobs<S, H, R> {
    pub fn new(scheduler: S, host: H, reports: R, timeout: Duration) -> Self {
        EdgeJobs {
            scheduler,
            host,
            reports,
            timeout,
            running: BTreeMap::new(),
            reported: BTreeSet::new(),
        }
    }

    /// The jobs running now, by ID.
    pub fn running(&self) -> Vec<u64> {
        self.running.keys().copied().collect()
    }

    pub async fn apply(&mut self, work: &PollWork) {
        let Some((wanted, bad)) = parse_schedules(&work.answer) else {
            return;
        };
        self.reconcile(work.endpoint_id, &wanted, bad).await;
    }

    /// Makes the running jobs `wanted`: new and changed ones scheduled,
    /// the others stopped; `bad` ones reported; the logs of those that ask
    /// uploaded.
    pub async fn reconcile(
        &mut self,
        endpoint_id: u64,
        wanted: &[Schedule],
        bad: Vec<BadSchedule>,
    ) {
        for problem in bad {
            match problem.id {
                Some(id) => self.report(endpoint_id, id, &problem.why).await,
                None => warn!(why = %problem.why, "an Edge job was ignored"),
            }
        }
        let changes = diff(&self.running, wanted);
        for id in changes.stop {
            self.scheduler.stop(id);
            self.running.remove(&id);
            if let Err(error) = self.host.remove(id).await {
                warn!(job = id, %error, "cannot remove the job's files");
            }
            info!(job = id, "Edge job removed");
        }
        for schedule in changes.start {
            let id = schedule.id;
            self.scheduler.stop(id);
            self.running.remove(&id);
            if let Err(error) = self.host.install(id, &schedule.script).await {
                self.report(endpoint_id, id, &error.to_string()).await;
                continue;
            }
            match self.scheduler.start(id, &schedule.cron, self.job(id)) {
                Ok(()) => {
                    info!(job = id, cron = %schedule.cron, version = schedule.version, "Edge job scheduled");
                    self.running.insert(id, schedule);
                }
                Err(error) => self.report(endpoint_id, id, &error.to_string()).await,
            }
        }
        let collect: Vec<u64> = wanted
            .iter()
            .filter(|s| s.collect_logs)
            .map(|s| s.id)
            .collect();
        for id in collect {
            self.upload_log(endpoint_id, id).await;
        }
    }

    fn job(&self, id: u64) -> JobRun {
        let host = self.host.clone();
        let timeout = self.timeout;
        Arc::new(move || {
            let host = host.clone();
            Box::pin(async move {
                match host.run(id, timeout).await {
                    Ok(ScriptOutcome::Exited(0)) => info!(job = id, "Edge job ran"),
                    Ok(outcome) => warn!(job = id, ?outcome, "Edge job failed"),
                    Err(error) => warn!(job = id, %error, "Edge job could not run"),
                }
            })
        })
    }

    /// Says why job `id` cannot run: in the log, in its log file, and to
    /// Portainer as the job's log. Once per job and reason.
    async fn report(&mut self, endpoint_id: u64, id: u64, why: &str) {
        if !self.reported.insert((id, why.to_string())) {
            return;
        }
        warn!(job = id, %why, "Edge job cannot run");
        let _ = self
            .host
            .note(id, &format!("berth: this job cannot run: {why}"))
            .await;
        self.upload_log(endpoint_id, id).await;
    }

    async fn upload_log(&self, endpoint_id: u64, id: u64) {
        let content = match self.host.log(id).await {
            Ok(content) => content,
            Err(error) => format!("berth: the log cannot be read: {error}"),
        };
        self.reports.job_log(endpoint_id, id, content).await;
    }
}

impl<S: Scheduler, H: ScriptHost, R: Reports> PollWorker for EdgeJobs<S, H, R> {
    async fn apply(&mut self, work: &PollWork) {
        EdgeJobs::apply(self, work).await;
    }
}
