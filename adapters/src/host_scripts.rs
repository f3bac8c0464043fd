//! The `ScriptHost` port: Edge job scripts under the host root mount
//! (`AGENT_HOST_ROOT`, `/host` by default) at the reference's paths
//! (`opt/portainer/scripts/schedule_<id>` and its `.log`), run inside that
//! root (chroot), or directly when the root is `/`.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use berth_ports::{ScriptError, ScriptHost, ScriptOutcome};
use tokio::process::Command;

const SCRIPTS: &str = "opt/portainer/scripts";
/// What a cron job gets, as the Go agent's cron file sets.
const PATH: &str = "/usr/local/sbin:/usr/local/bin:/sbin:/bin:/usr/sbin:/usr/bin";

#[derive(Debug, Clone)]
pub struct HostScripts {
    root: PathBuf,
}

impl HostScripts {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        HostScripts { root: root.into() }
    }

    fn script(&self, id: u64) -> PathBuf {
        self.root.join(SCRIPTS).join(format!("schedule_{id}"))
    }

    fn log_path(&self, id: u64) -> PathBuf {
        self.root.join(SCRIPTS).join(format!("schedule_{id}.log"))
    }

    fn inside_root(&self) -> bool {
        self.root != Path::new("/")
    }
}

fn failed(what: &str, path: &Path, error: io::Error) -> ScriptError {
    ScriptError(format!("cannot {what} {}: {error}", path.display()))
}

impl ScriptHost for HostScripts {
    async fn install(&self, id: u64, script: &[u8]) -> Result<(), ScriptError> {
        let dir = self.root.join(SCRIPTS);
        let path = self.script(id);
        let script = script.to_vec();
        tokio::task::spawn_blocking(move || {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o755)
                .create(&dir)
                .map_err(|e| failed("create", &dir, e))?;
            let temporary = dir.join(format!(".schedule.{}", std::process::id()));
            let write = || -> io::Result<()> {
                let mut file = std::fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .mode(0o744)
                    .open(&temporary)?;
                io::Write::write_all(&mut file, &script)?;
                std::fs::rename(&temporary, &path)
            };
            write().map_err(|e| failed("write", &path, e))
        })
        .await
        .map_err(|e| ScriptError(e.to_string()))?
    }

    async fn run(&self, id: u64, timeout: Duration) -> Result<ScriptOutcome, ScriptError> {
        let log_path = self.log_path(id);
        let log = std::fs::File::create(&log_path).map_err(|e| failed("create", &log_path, e))?;
        let errors = log.try_clone().map_err(|e| failed("open", &log_path, e))?;
        let inner = format!("/{SCRIPTS}/schedule_{id}");
        let mut command = Command::new("/bin/sh");
        command
            .arg(if self.inside_root() {
                PathBuf::from(&inner)
            } else {
                self.script(id)
            })
            .env_clear()
            .env("PATH", PATH)
            .env("SHELL", "/bin/sh")
            .env("HOME", "/root")
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(errors)
            .kill_on_drop(true);
        if self.inside_root() {
            let root = CString::new(self.root.as_os_str().as_bytes())
                .map_err(|_| ScriptError("the host root has a NUL byte".into()))?;
            // SAFETY: between fork and exec the child calls only chroot(2)
            // and chdir(2), both async-signal-safe, on memory made before
            // the fork; nothing allocates or takes a lock.
            unsafe {
                command.pre_exec(move || {
                    if libc::chroot(root.as_ptr()) != 0 || libc::chdir(c"/".as_ptr()) != 0 {
                        return Err(io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        let mut child = command
            .spawn()
            .map_err(|e| ScriptError(format!("cannot start job {id}: {e}")))?;
        match tokio::time::timeout(timeout, child.wait()).await {
            Ok(Ok(status)) => Ok(match status.code() {
                Some(code) => ScriptOutcome::Exited(code),
                None => ScriptOutcome::Killed,
            }),
            Ok(Err(e)) => Err(ScriptError(format!("job {id} could not be awaited: {e}"))),
            Err(_) => {
                let _ = child.kill().await;
                let _ = self
                    .note(id, &format!("berth: stopped after {}s", timeout.as_secs()))
                    .await;
                Ok(ScriptOutcome::TimedOut)
            }
        }
    }

    async fn log(&self, id: u64) -> Result<String, ScriptError> {
        let path = self.log_path(id);
        match tokio::fs::read(&path).await {
            Ok(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(String::new()),
            Err(e) => Err(failed("read", &path, e)),
        }
    }

    async fn note(&self, id: u64, text: &str) -> Result<(), ScriptError> {
        use tokio::io::AsyncWriteExt;
        let path = self.log_path(id);
        if let Some(dir) = path.parent() {
            let _ = tokio::fs::create_dir_all(dir).await;
        }
        let mut file = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await
            .map_err(|e| failed("open", &path, e))?;
        file.write_all(format!("{text}\n").as_bytes())
            .await
            .map_err(|e| failed("write", &path, e))?;
        // tokio's write_all returns once the bytes are handed to a blocking
        // thread; without the flush a read right after can miss the note.
        file.flush().await.map_err(|e| failed("write", &path, e))
    }

    async fn remove(&self, id: u64) -> Result<(), ScriptError> {
        for path in [self.script(id), self.log_path(id)] {
            match tokio::fs::remove_file(&path).await {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(failed("remove", &path, e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scripts_are_installed_noted_and_removed_under_the_root() {
        let dir = std::env::temp_dir().join(format!("berth-scripts-{}", std::process::id()));
        let scripts = HostScripts::new(&dir);
        scripts.install(7, b"echo hi").await.unwrap();
        let mode = std::fs::metadata(scripts.script(7)).unwrap().permissions();
        assert_eq!(
            std::os::unix::fs::PermissionsExt::mode(&mode) & 0o777,
            0o744
        );
        assert_eq!(
            std::fs::read(dir.join("opt/portainer/scripts/schedule_7")).unwrap(),
            b"echo hi"
        );
        assert_eq!(scripts.log(7).await.unwrap(), "", "no log before a run");
        scripts.note(7, "a note").await.unwrap();
        assert_eq!(scripts.log(7).await.unwrap(), "a note\n");
        scripts.remove(7).await.unwrap();
        assert!(!scripts.script(7).exists() && !scripts.log_path(7).exists());
        std::fs::remove_dir_all(dir).unwrap();
    }
}
