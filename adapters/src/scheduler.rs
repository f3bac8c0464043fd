//! The `Scheduler` port with the cron crate: one task per job sleeps until
//! the job's next time (local time, as the host's cron daemon would) and
//! starts a run unless the previous one is still going.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use berth_ports::{JobRun, Scheduler, SchedulerError};
use chrono::Local;
use tokio::task::JoinHandle;
use tracing::debug;

#[derive(Clone, Default)]
pub struct CronScheduler {
    jobs: Arc<Mutex<HashMap<u64, JoinHandle<()>>>>,
}

impl Scheduler for CronScheduler {
    fn start(&self, id: u64, cron: &str, run: JobRun) -> Result<(), SchedulerError> {
        let schedule = cron::Schedule::from_str(cron)
            .map_err(|e| SchedulerError(format!("the cron expression {cron:?} is invalid: {e}")))?;
        let running = Arc::new(AtomicBool::new(false));
        let task = tokio::spawn(async move {
            for next in schedule.upcoming_owned(Local) {
                let wait = (next - Local::now()).to_std().unwrap_or_default();
                tokio::time::sleep(wait).await;
                if running.swap(true, Ordering::SeqCst) {
                    debug!(
                        job = id,
                        "the previous run is still going; this time is skipped"
                    );
                    continue;
                }
                let (run, running) = (Arc::clone(&run), Arc::clone(&running));
                tokio::spawn(async move {
                    run().await;
                    running.store(false, Ordering::SeqCst);
                });
            }
        });
        if let Some(previous) = self.jobs.lock().unwrap().insert(id, task) {
            previous.abort();
        }
        Ok(())
    }

    fn stop(&self, id: u64) {
        if let Some(task) = self.jobs.lock().unwrap().remove(&id) {
            task.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::time::Duration;

    fn counting(count: Arc<AtomicU32>, takes: Duration) -> JobRun {
        Arc::new(move || {
            let count = Arc::clone(&count);
            Box::pin(async move {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::time::sleep(takes).await;
            })
        })
    }

    #[tokio::test]
    async fn jobs_run_on_time_never_overlap_and_stop() {
        let scheduler = CronScheduler::default();
        let quick = Arc::new(AtomicU32::new(0));
        let slow = Arc::new(AtomicU32::new(0));
        scheduler
            .start(
                1,
                "* * * * * *",
                counting(Arc::clone(&quick), Duration::ZERO),
            )
            .unwrap();
        scheduler
            .start(
                2,
                "* * * * * *",
                counting(Arc::clone(&slow), Duration::from_secs(10)),
            )
            .unwrap();
        tokio::time::sleep(Duration::from_millis(3100)).await;
        assert!(quick.load(Ordering::SeqCst) >= 2, "every second");
        assert_eq!(
            slow.load(Ordering::SeqCst),
            1,
            "a run still going is not doubled"
        );
        scheduler.stop(1);
        let stopped_at = quick.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(quick.load(Ordering::SeqCst), stopped_at);
        assert!(scheduler
            .start(3, "0 * * * * 8", counting(quick, Duration::ZERO))
            .is_err());
    }
}
