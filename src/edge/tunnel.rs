//! Drives the domain's tunnel state machine: poll answers in, the tunnel
//! client's results in, activity sampled, and the machine's actions carried
//! out. One task owns the machine, so its idea of the tunnel is the truth.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use berth_domain::edge::credentials;
use berth_domain::edge::status::TunnelStatus;
use berth_domain::edge::tunnel::{Action, Phase, TunnelMachine, TunnelRequest};
use berth_ports::{OpenTunnel, TunnelClient, TunnelSpec};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// When requests last went through the API, for the inactivity timeout.
/// Written on every request, so it is an atomic rather than a message.
#[derive(Clone)]
pub struct Activity {
    started: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Default for Activity {
    fn default() -> Self {
        Activity {
            started: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl Activity {
    pub fn record(&self) {
        let now = self.now().as_millis() as u64;
        self.last_ms.fetch_max(now, Ordering::Relaxed);
    }

    fn now(&self) -> Duration {
        self.started.elapsed()
    }

    fn last(&self) -> Duration {
        Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }
}

/// The tunnel's phase for the metrics endpoint (see `Phase::code`).
#[derive(Clone, Default)]
pub struct TunnelGauge(Arc<AtomicU8>);

impl TunnelGauge {
    pub fn get(&self) -> u8 {
        self.0.load(Ordering::Relaxed)
    }

    pub fn name(&self) -> &'static str {
        Phase::name_of_code(self.get())
    }

    fn set(&self, phase: Phase) {
        self.0.store(phase.code(), Ordering::Relaxed);
    }
}

/// What the driver needs besides each request's port and credentials.
#[derive(Debug, Clone)]
pub struct TunnelSettings {
    pub server: String,
    pub fingerprint: String,
    pub local_target: String,
    pub proxy: Option<String>,
    pub edge_id: String,
    pub inactivity: Duration,
}

/// One poll's word on the tunnel.
struct StatusUpdate {
    status: TunnelStatus,
    port: Option<u16>,
    credentials: Option<String>,
}

enum Event<T> {
    Opened(u64, Result<T, berth_ports::TunnelError>),
    /// The reason, and whether the server had proven itself.
    Ended(u64, String, bool),
}

/// How the poller talks to the driver.
#[derive(Clone)]
pub struct TunnelHandle {
    updates: Option<mpsc::UnboundedSender<StatusUpdate>>,
}

impl TunnelHandle {
    pub fn status(&self, status: TunnelStatus, port: Option<u16>, credentials: Option<String>) {
        if let Some(updates) = &self.updates {
            let _ = updates.send(StatusUpdate {
                status,
                port,
                credentials,
            });
        }
    }

    /// A handle that ignores everything (`EDGE_TUNNEL=false`).
    pub fn disabled() -> Self {
        TunnelHandle { updates: None }
    }
}

/// Starts the driver task; returns the handle the poller uses.
pub fn spawn<C: TunnelClient>(
    client: C,
    settings: TunnelSettings,
    activity: Activity,
    gauge: TunnelGauge,
) -> TunnelHandle {
    let (events, inbox) = mpsc::unbounded_channel::<Event<C::Tunnel>>();
    let (updates, statuses) = mpsc::unbounded_channel();
    let driver = Driver {
        machine: TunnelMachine::new(settings.inactivity),
        client,
        settings,
        activity,
        gauge,
        events,
        current: None,
        generation: 0,
    };
    tokio::spawn(driver.run(statuses, inbox));
    TunnelHandle {
        updates: Some(updates),
    }
}

struct Driver<C: TunnelClient> {
    machine: TunnelMachine,
    client: C,
    settings: TunnelSettings,
    activity: Activity,
    gauge: TunnelGauge,
    events: mpsc::UnboundedSender<Event<C::Tunnel>>,
    current: Option<Arc<C::Tunnel>>,
    /// Tells stale results (of a tunnel already given up) from current ones.
    generation: u64,
}

impl<C: TunnelClient> Driver<C> {
    async fn run(
        mut self,
        mut statuses: mpsc::UnboundedReceiver<StatusUpdate>,
        mut inbox: mpsc::UnboundedReceiver<Event<C::Tunnel>>,
    ) {
        loop {
            let wait = self
                .machine
                .next_deadline()
                .map(|at| at.saturating_sub(self.activity.now()))
                .unwrap_or(Duration::from_secs(3600));
            tokio::select! {
                update = statuses.recv() => match update {
                    Some(update) => {
                        let action = self.machine.on_status(
                            update.status,
                            update.port,
                            update.credentials.as_deref(),
                        );
                        self.act(action);
                    }
                    None => return,
                },
                Some(event) = inbox.recv() => self.on_event(event),
                () = tokio::time::sleep(wait) => {}
            }
            self.machine.on_activity(self.activity.last());
            let action = self.machine.tick(self.activity.now());
            self.act(action);
            self.gauge.set(self.machine.phase());
        }
    }

    fn on_event(&mut self, event: Event<C::Tunnel>) {
        match event {
            Event::Opened(generation, result) if generation == self.generation => match result {
                Ok(tunnel) => {
                    info!("Edge tunnel open");
                    let tunnel = Arc::new(tunnel);
                    let watcher = Arc::clone(&tunnel);
                    let events = self.events.clone();
                    tokio::spawn(async move {
                        let reason = watcher.closed().await;
                        let proven = watcher.proven();
                        let _ = events.send(Event::Ended(generation, reason, proven));
                    });
                    self.current = Some(tunnel);
                    self.activity.record();
                    self.machine.on_opened(self.activity.now());
                }
                Err(error) => {
                    warn!(%error, "the Edge tunnel could not be opened");
                    self.lost();
                }
            },
            Event::Ended(generation, reason, proven) if generation == self.generation => {
                self.current = None;
                if self.machine.phase() == Phase::Open {
                    warn!(%reason, proven, "the Edge tunnel dropped; reconnecting");
                    if proven {
                        self.machine.on_proven();
                    }
                    self.lost();
                } else {
                    self.machine.on_closed();
                }
            }
            Event::Opened(..) | Event::Ended(..) => {}
        }
    }

    fn lost(&mut self) {
        self.machine.on_lost(self.activity.now(), jitter());
        if let Phase::Retrying { at } = self.machine.phase() {
            let after = at.saturating_sub(self.activity.now());
            info!(
                retry_in_ms = after.as_millis() as u64,
                "Edge tunnel retry scheduled"
            );
        }
    }

    fn act(&mut self, action: Action) {
        match action {
            Action::Nothing => {}
            Action::Open(request) => self.open(request),
            Action::Close(reason) => {
                info!(?reason, "closing the Edge tunnel");
                self.generation += 1;
                if let Some(tunnel) = self.current.take() {
                    tunnel.close();
                }
                self.machine.on_closed();
            }
        }
        self.gauge.set(self.machine.phase());
    }

    fn open(&mut self, request: TunnelRequest) {
        self.generation += 1;
        let generation = self.generation;
        let creds = match credentials::decrypt(&request.credentials, &self.settings.edge_id) {
            Ok(creds) => creds,
            Err(error) => {
                warn!(%error, "cannot open the Edge tunnel");
                self.lost();
                return;
            }
        };
        let spec = TunnelSpec {
            server: self.settings.server.clone(),
            fingerprint: self.settings.fingerprint.clone(),
            user: creds.user,
            password: creds.password,
            remote_port: request.port,
            local_target: self.settings.local_target.clone(),
            proxy: self.settings.proxy.clone(),
        };
        info!(port = request.port, server = %spec.server, "opening the Edge tunnel");
        let client = self.client.clone();
        let events = self.events.clone();
        tokio::spawn(async move {
            let result = client.open(spec).await;
            let _ = events.send(Event::Opened(generation, result));
        });
    }
}

/// A uniform number in [0, 1) for backoff jitter.
pub fn jitter() -> f64 {
    let mut bytes = [0u8; 8];
    let _ = getrandom::getrandom(&mut bytes);
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}
