//! Where the Edge key is kept between restarts (`DATA_PATH/agent_edge_key`).

use std::fmt;
use std::future::Future;

#[derive(Debug, Clone)]
pub struct KeyStoreError(pub String);

impl fmt::Display for KeyStoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KeyStoreError {}

pub trait KeyStore: Clone + Send + Sync + 'static {
    /// The saved key, if any.
    fn load(&self) -> impl Future<Output = Result<Option<String>, KeyStoreError>> + Send;
    /// Saves atomically: a reader sees the old key or the new one.
    fn save(&self, key: &str) -> impl Future<Output = Result<(), KeyStoreError>> + Send;
}
