//! The `KeyStore` port as a file, `DATA_PATH/agent_edge_key`: written to a
//! temporary file (mode 0600) and renamed into place, so a crash leaves the
//! old key or the new one, never half of one.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;

use berth_ports::{KeyStore, KeyStoreError};

pub const KEY_FILE_NAME: &str = "agent_edge_key";

/// A small private text in the data folder: the Edge key
/// (`agent_edge_key`), or another file named at construction (async
/// mode's command timestamp).
#[derive(Debug, Clone)]
pub struct KeyFile {
    dir: PathBuf,
    name: &'static str,
}

impl KeyFile {
    pub fn new(data_path: impl Into<PathBuf>) -> Self {
        Self::named(data_path, KEY_FILE_NAME)
    }

    pub fn named(data_path: impl Into<PathBuf>, name: &'static str) -> Self {
        KeyFile {
            dir: data_path.into(),
            name,
        }
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(self.name)
    }
}

impl KeyStore for KeyFile {
    async fn load(&self) -> Result<Option<String>, KeyStoreError> {
        let path = self.path();
        match tokio::fs::read_to_string(&path).await {
            Ok(text) if text.trim().is_empty() => Ok(None),
            Ok(text) => Ok(Some(text.trim().to_string())),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => Err(KeyStoreError(format!(
                "cannot read {}: {error}",
                path.display()
            ))),
        }
    }

    async fn save(&self, key: &str) -> Result<(), KeyStoreError> {
        let dir = self.dir.clone();
        let name = self.name;
        let key = key.to_string();
        tokio::task::spawn_blocking(move || {
            let fail = |what: &str, error: std::io::Error| {
                KeyStoreError(format!("cannot {what} in {}: {error}", dir.display()))
            };
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .map_err(|e| fail("create the folder", e))?;
            let temporary = dir.join(format!(".{name}.{}", std::process::id()));
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&temporary)
                .map_err(|e| fail("write the key", e))?;
            file.write_all(key.as_bytes())
                .and_then(|()| file.sync_all())
                .map_err(|e| fail("write the key", e))?;
            std::fs::rename(&temporary, dir.join(name))
                .map_err(|e| fail("move the key into place", e))
        })
        .await
        .map_err(|e| KeyStoreError(format!("the key writer failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[tokio::test]
    async fn a_saved_key_loads_back_private_to_its_owner() {
        let dir = std::env::temp_dir().join(format!("berth-keyfile-{}", std::process::id()));
        let store = KeyFile::new(dir.join("data"));
        assert_eq!(store.load().await.unwrap(), None);
        store.save("first").await.unwrap();
        store.save("second").await.unwrap();
        assert_eq!(store.load().await.unwrap().as_deref(), Some("second"));
        let mode = std::fs::metadata(store.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let leftovers = std::fs::read_dir(dir.join("data")).unwrap().count();
        assert_eq!(leftovers, 1, "no temporary file left behind");
        std::fs::remove_dir_all(dir).unwrap();
    }
}
