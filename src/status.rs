//! The control socket that `berth status` reads: a unix socket under
//! `DATA_PATH`, mode 0600, so it is reachable only from the machine (or the
//! container) and by root, and never touches key pairing. Each connection
//! gets one JSON document and is closed; the socket reads nothing.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_domain::headers::AGENT_VERSION;
use berth_ports::Membership;
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt as _;
use tracing::{info, warn};

use crate::edge::poll_record::PollRecord;
use crate::edge::tunnel::TunnelGauge;
use crate::facts::{EngineHealth, FactsReceiver};
use crate::signature::SignatureGuard;

/// The socket's name under `DATA_PATH`.
pub const SOCKET_NAME: &str = "berth.sock";
/// A client that does not take its document within this is dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

pub fn socket_path(data_path: &str) -> PathBuf {
    Path::new(data_path).join(SOCKET_NAME)
}

/// What the status document is made from.
#[derive(Clone)]
pub struct StatusSources<M> {
    pub started: SystemTime,
    pub edge: bool,
    pub api_address: SocketAddr,
    pub facts: FactsReceiver,
    pub engine_health: EngineHealth,
    pub open_connections: Arc<AtomicUsize>,
    pub signatures: SignatureGuard,
    pub secret_mode: bool,
    pub secret_timeout: Duration,
    pub membership: Option<M>,
    pub tunnel: Option<TunnelGauge>,
    pub polls: Option<PollRecord>,
}

fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl<M: Membership> StatusSources<M> {
    /// The document `berth status --json` prints.
    pub async fn document(&self) -> Value {
        let now = SystemTime::now();
        let uptime = now.duration_since(self.started).unwrap_or_default();
        let facts = self.facts.borrow().clone();
        let paired = self.signatures.is_associated();
        let shutdown_in =
            (!self.edge && !paired).then(|| self.secret_timeout.saturating_sub(uptime).as_secs());
        let cluster = match &self.membership {
            Some(membership) => {
                let members: Vec<Value> = membership
                    .members()
                    .await
                    .iter()
                    .map(|m| {
                        json!({
                            "node": m.node_name,
                            "role": m.node_role,
                            "leader": m.leader,
                            "status": m.status.label(),
                            "address": m.address.to_string(),
                            "agent_port": m.agent_port,
                            "last_contact": m.last_contact,
                        })
                    })
                    .collect();
                json!({ "members": members })
            }
            None => Value::Null,
        };
        let edge = if self.edge {
            let last_poll = self.polls.as_ref().and_then(PollRecord::last).map(|poll| {
                json!({
                    "at": unix_seconds(poll.at),
                    "ok": poll.error.is_none(),
                    "error": poll.error,
                })
            });
            json!({
                "tunnel": self.tunnel.as_ref().map(TunnelGauge::name),
                "last_poll": last_poll,
            })
        } else {
            Value::Null
        };
        json!({
            "node": facts.node_name,
            "mode": if self.edge { "edge" } else { "standard" },
            "version": AGENT_VERSION,
            "berth_version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "started_at": unix_seconds(self.started),
            "now": unix_seconds(now),
            "uptime_seconds": uptime.as_secs(),
            "engine": {
                "reachable": self.engine_health.answers(),
                "swarm_role": facts.role.tag(),
            },
            "api": {
                "address": self.api_address.to_string(),
                "open_connections": self.open_connections.load(Ordering::Relaxed),
                "secret_mode": self.secret_mode,
                "paired": paired,
                "shutdown_in_seconds": shutdown_in,
            },
            "cluster": cluster,
            "edge": edge,
        })
    }
}

/// Listens on `path` (a stale socket from a previous run is replaced)
/// until the process ends. A socket that cannot be made is logged, not
/// fatal: the agent's work does not depend on it.
pub fn serve<M: Membership>(path: PathBuf, sources: StatusSources<M>) {
    let _ = std::fs::remove_file(&path);
    let listener = match bind_private(&path) {
        Ok(listener) => listener,
        Err(error) => {
            warn!(path = %path.display(), %error, "no control socket: berth status will not reach this agent");
            return;
        }
    };
    info!(path = %path.display(), "serving berth status on the control socket");
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let sources = sources.clone();
            tokio::spawn(async move {
                let document = sources.document().await.to_string();
                let _ = tokio::time::timeout(WRITE_TIMEOUT, async {
                    stream.write_all(document.as_bytes()).await?;
                    stream.shutdown().await
                })
                .await;
            });
        }
    });
}

/// Binds where only this user can reach, sets the mode, then moves the
/// socket into place: no moment exists when another user could connect,
/// whatever the umask.
fn bind_private(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::{DirBuilderExt as _, PermissionsExt as _};
    let parent = path.parent().unwrap_or(Path::new("."));
    let private = parent.join(format!(".berth-control-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&private);
    std::fs::DirBuilder::new().mode(0o700).create(&private)?;
    let made = private.join(SOCKET_NAME);
    let bound = tokio::net::UnixListener::bind(&made).and_then(|listener| {
        std::fs::set_permissions(&made, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&made, path)?;
        Ok(listener)
    });
    let _ = std::fs::remove_dir_all(&private);
    bound
}
