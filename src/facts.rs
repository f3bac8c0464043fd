//! Keeps the engine facts fresh: read at start, then every interval, so a
//! node promoted, demoted or renamed is seen without a restart.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_domain::engine::EngineFacts;
use berth_ports::DockerEngine;
use tokio::sync::watch;
use tracing::{info, warn};

/// The latest facts; cheap to clone and to read.
pub type FactsReceiver = watch::Receiver<Arc<EngineFacts>>;

/// Whether the engine answered its last facts read (the facts themselves
/// stay the last good ones): for `/metrics`, `berth status` and alerts.
#[derive(Debug, Clone)]
pub struct EngineHealth(Arc<AtomicBool>);

impl Default for EngineHealth {
    fn default() -> Self {
        EngineHealth(Arc::new(AtomicBool::new(true)))
    }
}

impl EngineHealth {
    pub fn answers(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn set(&self, answers: bool) {
        self.0.store(answers, Ordering::Relaxed);
    }
}

/// Facts that never change: those of an agent with no engine (on
/// Kubernetes), which names its node after its host.
pub fn fixed(facts: EngineFacts) -> FactsReceiver {
    watch::channel(Arc::new(facts)).1
}

/// Reads the facts once (bounded by `first_read_timeout`), then refreshes
/// them every `interval` in a task that ends when every receiver is gone.
pub async fn watch_engine_facts<E: DockerEngine>(
    engine: E,
    interval: Duration,
    first_read_timeout: Duration,
) -> FactsReceiver {
    watch_engine_facts_with(
        engine,
        interval,
        first_read_timeout,
        EngineHealth::default(),
    )
    .await
}

/// [`watch_engine_facts`], keeping `health` current.
pub async fn watch_engine_facts_with<E: DockerEngine>(
    engine: E,
    interval: Duration,
    first_read_timeout: Duration,
    health: EngineHealth,
) -> FactsReceiver {
    let mut healthy = true;
    let first = match tokio::time::timeout(first_read_timeout, engine.facts()).await {
        Ok(Ok(facts)) => facts,
        Ok(Err(error)) => {
            warn!(%error, "cannot read the engine's facts yet; retrying in the background");
            healthy = false;
            EngineFacts::unknown()
        }
        Err(_) => {
            warn!(endpoint = %engine.endpoint(), "the engine did not answer GET /info in time; retrying in the background");
            healthy = false;
            EngineFacts::unknown()
        }
    };
    log_facts(&first);
    health.set(healthy);
    let (sender, receiver) = watch::channel(Arc::new(first));
    tokio::spawn(refresh(engine, sender, interval, health));
    receiver
}

async fn refresh<E: DockerEngine>(
    engine: E,
    sender: watch::Sender<Arc<EngineFacts>>,
    interval: Duration,
    health: EngineHealth,
) {
    loop {
        let healthy = health.answers();
        tokio::select! {
            () = sender.closed() => return,
            () = tokio::time::sleep(interval) => {}
        }
        let read = tokio::time::timeout(interval, engine.facts()).await;
        match read {
            Ok(Ok(facts)) => {
                if !healthy {
                    info!("the engine answers again");
                    health.set(true);
                }
                if **sender.borrow() != facts {
                    log_facts(&facts);
                    sender.send_replace(Arc::new(facts));
                }
            }
            // Logged once per change of state, not once per try.
            Ok(Err(error)) if healthy => {
                warn!(%error, "cannot refresh the engine's facts");
                health.set(false);
            }
            Err(_) if healthy => {
                warn!(endpoint = %engine.endpoint(), "the engine did not answer GET /info in time");
                health.set(false);
            }
            _ => {}
        }
    }
}

fn log_facts(facts: &EngineFacts) {
    if facts.is_swarm_node() {
        info!(node = %facts.node_name, role = facts.role.tag(), "agent running on a Swarm cluster node");
    } else if !facts.node_name.is_empty() {
        info!(node = %facts.node_name, "agent running on a standalone Docker engine");
    }
}
