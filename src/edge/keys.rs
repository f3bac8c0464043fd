//! The Edge key the agent holds: loaded at start (EDGE_KEY, then the key
//! file), or associated later (the key page, `POST /key`), saved, and
//! watched by everything that waits for it.

use std::sync::Arc;

use berth_domain::edge::key::EdgeKey;
use berth_domain::error::AgentError;
use berth_ports::KeyStore;
use tokio::sync::{watch, Mutex};
use tracing::{info, warn};

/// Where the key stands; cheap to clone, shared by the gate, the key page,
/// the poller and `/key`.
#[derive(Clone)]
pub struct EdgeKeys {
    current: watch::Sender<Option<EdgeKey>>,
    /// Serialises associations, so two pastes cannot both win.
    associating: Arc<Mutex<()>>,
    saver: Arc<dyn Fn(String) -> SaveFuture + Send + Sync>,
}

type SaveFuture = std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>> + Send>>;

/// Why a key was not associated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssociateError {
    Invalid(String),
    AlreadySet,
    NotSaved(String),
}

impl AssociateError {
    /// The `POST /key` answer (reference §6.7; an invalid key is the
    /// caller's mistake, so 400 rather than the Go agent's 500).
    pub fn to_agent_error(&self) -> AgentError {
        match self {
            AssociateError::Invalid(why) => AgentError::new(400, "Invalid Edge key", why),
            AssociateError::AlreadySet => AgentError::new(
                409,
                "An Edge key is already associated to this agent",
                "Edge key already associated",
            ),
            AssociateError::NotSaved(why) => {
                AgentError::new(500, "Unable to associate Edge key", why)
            }
        }
    }
}

impl std::fmt::Display for AssociateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AssociateError::Invalid(why) => f.write_str(why),
            AssociateError::AlreadySet => f.write_str("an Edge key is already associated"),
            AssociateError::NotSaved(why) => write!(f, "the key could not be saved: {why}"),
        }
    }
}

impl EdgeKeys {
    pub fn new<K: KeyStore>(store: K) -> Self {
        let (current, _) = watch::channel(None);
        EdgeKeys {
            current,
            associating: Arc::new(Mutex::new(())),
            saver: Arc::new(move |key: String| {
                let store = store.clone();
                Box::pin(async move { store.save(&key).await.map_err(|e| e.to_string()) })
            }),
        }
    }

    /// The key at start: `EDGE_KEY` (invalid is fatal: the operator typed
    /// it), else the saved file (invalid is logged, and the page asks for a
    /// new one). A key from `EDGE_KEY` is saved too, as the Go agent saves
    /// every key it is given, so a container recreated with its data volume
    /// but without `EDGE_KEY` keeps its key; a data folder that cannot take
    /// it is logged, not fatal, since the key is in hand.
    ///
    /// # Errors
    /// When `EDGE_KEY` is not a valid key, or the file cannot be read.
    pub async fn load<K: KeyStore>(
        &self,
        from_option: Option<&str>,
        store: &K,
    ) -> Result<(), String> {
        if let Some(text) = from_option {
            let key = EdgeKey::parse(text).map_err(|e| format!("EDGE_KEY: {e}"))?;
            let saved = store.load().await.ok().flatten();
            if saved.as_deref() != Some(text.trim()) {
                if let Err(error) = store.save(text.trim()).await {
                    warn!(%error, "the Edge key from EDGE_KEY could not be saved in the data folder");
                }
            }
            self.set(key);
            return Ok(());
        }
        if let Some(text) = store.load().await.map_err(|e| e.to_string())? {
            match EdgeKey::parse(&text) {
                Ok(key) => {
                    info!("using the Edge key saved in the data folder");
                    self.set(key);
                }
                Err(error) => {
                    warn!(%error, "the saved Edge key is unusable; waiting for a new one")
                }
            }
        }
        Ok(())
    }

    fn set(&self, key: EdgeKey) {
        if key.is_insecure_url() {
            warn!(url = %key.portainer_url, "the Edge key's Portainer URL is not HTTPS");
        }
        self.current.send_replace(Some(key));
    }

    pub fn get(&self) -> Option<EdgeKey> {
        self.current.borrow().clone()
    }

    /// Follows the key as it is set.
    pub fn subscribe(&self) -> watch::Receiver<Option<EdgeKey>> {
        self.current.subscribe()
    }

    pub fn is_set(&self) -> bool {
        self.current.borrow().is_some()
    }

    /// Resolves with the key once there is one.
    pub async fn wait(&self) -> EdgeKey {
        let mut watcher = self.current.subscribe();
        let key = match watcher.wait_for(Option::is_some).await {
            Ok(key) => key.clone(),
            Err(_) => None,
        };
        match key {
            Some(key) => key,
            None => std::future::pending().await,
        }
    }

    /// A global key got its endpoint ID from Portainer (or lost it: 0).
    pub fn assign_endpoint(&self, endpoint_id: u64) {
        self.current.send_modify(|key| {
            if let Some(key) = key.as_mut() {
                key.endpoint_id = endpoint_id;
            }
        });
    }

    /// Validates, saves, then sets a pasted or posted key.
    ///
    /// # Errors
    /// When the key is invalid, a key is already set, or saving fails.
    pub async fn associate(&self, text: &str) -> Result<(), AssociateError> {
        let _one_at_a_time = self.associating.lock().await;
        if self.is_set() {
            return Err(AssociateError::AlreadySet);
        }
        let key = EdgeKey::parse(text).map_err(|e| AssociateError::Invalid(e.to_string()))?;
        (self.saver)(text.trim().to_string())
            .await
            .map_err(AssociateError::NotSaved)?;
        info!("Edge key associated");
        self.set(key);
        Ok(())
    }
}
