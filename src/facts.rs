//! Keeps the engine facts fresh: read at start, then again whenever the
//! engine's events say they may have changed (and, for what no event tells,
//! every safety interval), so a node promoted, demoted or renamed is seen
//! without a restart, and an idle engine is not polled.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_domain::engine::{EngineFacts, FACT_EVENTS_PATH};
use berth_ports::{empty_body, Body, DockerEngine};
use http::Request;
use http_body_util::BodyExt;
use tokio::sync::watch;
use tracing::{debug, info, warn};

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

/// Reads the facts once (bounded by `read_timeout`), then keeps them
/// current in a task that ends when every receiver is gone: after each
/// event that may change them, and every `safety_interval`.
pub async fn watch_engine_facts<E: DockerEngine>(
    engine: E,
    safety_interval: Duration,
    read_timeout: Duration,
) -> FactsReceiver {
    watch_engine_facts_with(
        engine,
        safety_interval,
        read_timeout,
        EngineHealth::default(),
    )
    .await
}

/// [`watch_engine_facts`], keeping `health` current.
pub async fn watch_engine_facts_with<E: DockerEngine>(
    engine: E,
    safety_interval: Duration,
    read_timeout: Duration,
    health: EngineHealth,
) -> FactsReceiver {
    let mut healthy = true;
    let first = match tokio::time::timeout(read_timeout, engine.facts()).await {
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
    tokio::spawn(refresh(
        engine,
        sender,
        safety_interval,
        read_timeout,
        health,
    ));
    receiver
}

/// How long to wait before asking again for an events stream the engine
/// did not give (it was down, or does not stream events): the facts are
/// then read at this pace, as before there were events to follow.
const RETRY: Duration = Duration::from_secs(5);

/// Follows the engine's events stream and reads the facts again after each
/// event that may change them, as the stream ends (the engine restarted:
/// anything may have changed) and every `safety_interval` (a swarm left,
/// or a worker promoted, tells its own engine's stream nothing). While no
/// stream can be had, the facts are read, and a stream asked for, every
/// [`RETRY`] instead.
async fn refresh<E: DockerEngine>(
    engine: E,
    sender: watch::Sender<Arc<EngineFacts>>,
    safety_interval: Duration,
    read_timeout: Duration,
    health: EngineHealth,
) {
    let mut events = open_events(&engine, read_timeout).await;
    loop {
        let wait = match events {
            Some(_) => safety_interval,
            None => safety_interval.min(RETRY),
        };
        let mut ended = false;
        tokio::select! {
            () = sender.closed() => return,
            () = tokio::time::sleep(wait) => {}
            more = next_event(&mut events) => {
                if !more {
                    debug!("the engine's events stream ended");
                    events = None;
                    ended = true;
                }
            }
        }
        // A stream that just ended is asked for again only after RETRY: an
        // engine (or a proxy before it) that ends every stream at once must
        // not be asked in a loop.
        if events.is_none() && !ended {
            events = open_events(&engine, read_timeout).await;
        }
        read_into(&engine, &sender, read_timeout, &health).await;
    }
}

/// The engine's events stream, filtered to what may change its facts;
/// `None` when the engine does not answer it with a stream.
async fn open_events<E: DockerEngine>(engine: &E, timeout: Duration) -> Option<Body> {
    // The engine port passes the Host header through as given, and
    // HTTP/1.1 needs one.
    let request = Request::get(FACT_EVENTS_PATH)
        .header(http::header::HOST, "docker")
        .body(empty_body())
        .expect("a constant request");
    match tokio::time::timeout(timeout, engine.forward(request)).await {
        Ok(Ok(answer)) if answer.status().is_success() => Some(answer.into_body()),
        Ok(Ok(answer)) => {
            debug!(status = %answer.status(), "the engine gives no events stream");
            None
        }
        Ok(Err(error)) => {
            debug!(%error, "cannot open the engine's events stream");
            None
        }
        Err(_) => None,
    }
}

/// Waits for the next event; `false` when the stream ended or failed.
/// Never completes without a stream.
async fn next_event(events: &mut Option<Body>) -> bool {
    let Some(body) = events else {
        return std::future::pending().await;
    };
    loop {
        match body.frame().await {
            Some(Ok(frame)) if frame.data_ref().is_some_and(|data| !data.is_empty()) => {
                return true
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return false,
        }
    }
}

async fn read_into<E: DockerEngine>(
    engine: &E,
    sender: &watch::Sender<Arc<EngineFacts>>,
    timeout: Duration,
    health: &EngineHealth,
) {
    let healthy = health.answers();
    match tokio::time::timeout(timeout, engine.facts()).await {
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

fn log_facts(facts: &EngineFacts) {
    if facts.is_swarm_node() {
        info!(node = %facts.node_name, role = facts.role.tag(), "agent running on a Swarm cluster node");
    } else if !facts.node_name.is_empty() {
        info!(node = %facts.node_name, "agent running on a standalone Docker engine");
    }
}
