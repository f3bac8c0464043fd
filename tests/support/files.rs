//! The `Files` port for application tests: the real confined adapter over
//! a folder of the test's own (a temporary tree stands in for an in-memory
//! fake, since confinement is the filesystem's job).

use std::path::{Path, PathBuf};

use berth_adapters::fs::ConfinedFiles;

/// Files over roots that do not exist: every browse answers not found.
pub fn test_files() -> ConfinedFiles {
    ConfinedFiles::new("/nonexistent/berth-volumes", "/nonexistent/berth-host")
}

/// A temporary host root and volumes root, removed on drop.
pub struct TestTree {
    pub base: PathBuf,
}

impl TestTree {
    pub fn new(name: &str) -> TestTree {
        let base = std::env::temp_dir().join(format!("berth-tree-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("host")).unwrap();
        std::fs::create_dir_all(base.join("volumes")).unwrap();
        TestTree { base }
    }

    pub fn host(&self) -> PathBuf {
        self.base.join("host")
    }

    pub fn volume_data(&self, volume: &str) -> PathBuf {
        let data = self.base.join("volumes").join(volume).join("_data");
        std::fs::create_dir_all(&data).unwrap();
        data
    }

    pub fn files(&self) -> ConfinedFiles {
        ConfinedFiles::new(self.base.join("volumes"), self.host())
    }

    pub fn write(&self, path: &Path, contents: &str) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, contents).unwrap();
    }
}

impl Drop for TestTree {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}
