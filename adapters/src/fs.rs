//! The `Files` port with cap-std: every path is resolved beneath its root
//! by the kernel (`openat2` with `RESOLVE_BENEATH` where available), so
//! `..`, absolute symlinks and symlinks swapped in between check and use
//! cannot reach outside, whatever the lexical rules let through.

use std::io::{self, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use berth_domain::browse::{BrowseRoot, ByteRange, ConfinedPath, FileEntry};
use berth_ports::{Body, FileRead, Files, FilesError};
use bytes::Bytes;
use cap_std::ambient_authority;
use cap_std::fs::Dir;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};

/// Reads go out in chunks of this size.
const CHUNK: usize = 64 * 1024;

#[derive(Debug, Clone)]
pub struct ConfinedFiles {
    volumes_root: PathBuf,
    host_root: PathBuf,
}

impl ConfinedFiles {
    pub fn new(volumes_root: impl Into<PathBuf>, host_root: impl Into<PathBuf>) -> Self {
        ConfinedFiles {
            volumes_root: volumes_root.into(),
            host_root: host_root.into(),
        }
    }

    fn root_path(&self, root: &BrowseRoot) -> PathBuf {
        match root {
            BrowseRoot::Volume(id) => self.volumes_root.join(id).join("_data"),
            BrowseRoot::Host => self.host_root.clone(),
        }
    }

    /// Runs `work` on a blocking thread with the root opened as a `Dir`.
    async fn with_root<T: Send + 'static>(
        &self,
        root: &BrowseRoot,
        work: impl FnOnce(&Dir) -> io::Result<T> + Send + 'static,
    ) -> Result<T, FilesError> {
        let root_path = self.root_path(root);
        tokio::task::spawn_blocking(move || {
            let dir = Dir::open_ambient_dir(&root_path, ambient_authority())
                .map_err(|error| files_error(error, &root_path.display().to_string()))?;
            work(&dir).map_err(|error| files_error(error, "the path"))
        })
        .await
        .map_err(|error| FilesError::Other(format!("file task stopped: {error}")))?
    }
}

fn relative(path: &ConfinedPath) -> PathBuf {
    if path.is_root() {
        PathBuf::from(".")
    } else {
        PathBuf::from(path.relative())
    }
}

fn files_error(error: io::Error, what: &str) -> FilesError {
    match error.kind() {
        io::ErrorKind::NotFound => FilesError::NotFound(format!("{what}: {error}")),
        io::ErrorKind::DirectoryNotEmpty => FilesError::NotEmpty(format!("{what}: {error}")),
        // cap-std refuses a path that leads outside with PermissionDenied.
        io::ErrorKind::PermissionDenied => FilesError::Outside(format!("{what}: {error}")),
        _ => FilesError::Other(format!("{what}: {error}")),
    }
}

fn entry_of(name: String, metadata: &cap_std::fs::Metadata) -> FileEntry {
    let mod_time = metadata
        .modified()
        .ok()
        .map(|time| time.into_std())
        .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |since| since.as_secs() as i64);
    FileEntry {
        name,
        size: metadata.len(),
        dir: metadata.is_dir(),
        mod_time,
    }
}

fn list(dir: &Dir, path: &Path) -> io::Result<Vec<FileEntry>> {
    let mut entries = Vec::new();
    for entry in dir.read_dir(path)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // The link itself, not what it points to.
        let metadata = dir.symlink_metadata(path.join(entry.file_name()))?;
        entries.push(entry_of(name, &metadata));
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

impl Files for ConfinedFiles {
    async fn list(
        &self,
        root: &BrowseRoot,
        path: &ConfinedPath,
    ) -> Result<Vec<FileEntry>, FilesError> {
        let path = relative(path);
        self.with_root(root, move |dir| list(dir, &path)).await
    }

    async fn size(&self, root: &BrowseRoot, path: &ConfinedPath) -> Result<u64, FilesError> {
        let path = relative(path);
        self.with_root(root, move |dir| dir.metadata(&path).map(|m| m.len()))
            .await
    }

    async fn read(
        &self,
        root: &BrowseRoot,
        path: &ConfinedPath,
        range: Option<ByteRange>,
    ) -> Result<FileRead, FilesError> {
        let path = relative(path);
        let (file, total, modified) = self
            .with_root(root, move |dir| {
                let file = dir.open(&path)?;
                let metadata = file.metadata()?;
                if metadata.is_dir() {
                    return Err(io::Error::other("is a folder, not a file"));
                }
                let modified = metadata.modified().ok().map(|time| time.into_std());
                Ok((file.into_std(), metadata.len(), modified))
            })
            .await?;
        let (first, length) = match range {
            Some(range) => (range.first, range.len()),
            None => (0, total),
        };
        Ok(FileRead {
            body: stream_file(file, first, length),
            length,
            total,
            modified,
        })
    }

    async fn delete(&self, root: &BrowseRoot, path: &ConfinedPath) -> Result<(), FilesError> {
        if path.is_root() {
            return Err(FilesError::Outside(
                "the root itself cannot be deleted".into(),
            ));
        }
        let path = relative(path);
        self.with_root(root, move |dir| {
            if dir.symlink_metadata(&path)?.is_dir() {
                // Only an empty folder: never a silent recursive delete.
                dir.remove_dir(&path)
            } else {
                dir.remove_file(&path)
            }
        })
        .await
    }

    async fn write(
        &self,
        root: &BrowseRoot,
        folder: &ConfinedPath,
        name: &str,
        mut body: Body,
    ) -> Result<u64, FilesError> {
        use std::sync::atomic::{AtomicU64, Ordering};
        use tokio::io::AsyncWriteExt;
        static UPLOADS: AtomicU64 = AtomicU64::new(0);
        let folder = relative(folder);
        let temporary = folder.join(format!(
            ".berth-upload-{}-{}",
            std::process::id(),
            UPLOADS.fetch_add(1, Ordering::Relaxed)
        ));
        let target = folder.join(name);
        let (dir, file) = {
            let temporary = temporary.clone();
            self.with_root(root, move |dir| {
                make_missing_folders(dir, &folder)?;
                let file = dir.create(&temporary)?;
                Ok((dir.try_clone()?, file.into_std()))
            })
            .await?
        };
        let mut file = tokio::fs::File::from_std(file);
        let mut written = 0u64;
        let copied: Result<(), String> = async {
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|error| format!("the upload broke off: {error}"))?;
                if let Ok(data) = frame.into_data() {
                    file.write_all(&data)
                        .await
                        .map_err(|error| error.to_string())?;
                    written += data.len() as u64;
                }
            }
            file.sync_all().await.map_err(|error| error.to_string())
        }
        .await;
        drop(file);
        // Renamed into place only when complete; otherwise nothing is left.
        tokio::task::spawn_blocking(move || match copied {
            Ok(()) => into_place(&dir, &temporary, &target).map_err(|error| {
                let _ = dir.remove_file(&temporary);
                files_error(error, "the upload")
            }),
            Err(why) => {
                let _ = dir.remove_file(&temporary);
                Err(FilesError::Other(why))
            }
        })
        .await
        .map_err(|error| FilesError::Other(format!("file task stopped: {error}")))??;
        Ok(written)
    }

    async fn rename(
        &self,
        root: &BrowseRoot,
        from: &ConfinedPath,
        to: &ConfinedPath,
    ) -> Result<(), FilesError> {
        if from.is_root() || to.is_root() {
            return Err(FilesError::Outside(
                "the root itself cannot be renamed".into(),
            ));
        }
        let (from, to) = (relative(from), relative(to));
        self.with_root(root, move |dir| dir.rename(&from, dir, &to))
            .await
    }

    async fn place(
        &self,
        root: &BrowseRoot,
        staged: &ConfinedPath,
        folder: &ConfinedPath,
        name: &str,
    ) -> Result<(), FilesError> {
        let (staged, folder) = (relative(staged), relative(folder));
        let target = folder.join(name);
        self.with_root(root, move |dir| {
            make_missing_folders(dir, &folder)?;
            into_place(dir, &staged, &target)
        })
        .await
    }

    async fn make_folders(&self, root: &BrowseRoot, path: &ConfinedPath) -> Result<(), FilesError> {
        let path = relative(path);
        self.with_root(root, move |dir| make_missing_folders(dir, &path))
            .await
    }

    async fn set_mode(
        &self,
        root: &BrowseRoot,
        path: &ConfinedPath,
        mode: u32,
    ) -> Result<(), FilesError> {
        use cap_std::fs::PermissionsExt;
        let path = relative(path);
        self.with_root(root, move |dir| {
            dir.set_permissions(&path, cap_std::fs::Permissions::from_mode(mode & 0o777))
        })
        .await
    }
}

/// A folder and the missing ones above it (an upload's, an Edge
/// configuration's), made beneath the root like every path here, as the
/// Go agent makes them. A folder that resolves outside the root is refused
/// as any path is (never "exists").
fn make_missing_folders(dir: &Dir, folder: &Path) -> io::Result<()> {
    match dir.open_dir(folder) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => dir.create_dir_all(folder),
        Err(error) => Err(error),
    }
}

/// Renames a finished upload, `staged`, over `target` in one step (never a
/// half-written file), after giving it the mode and owner of the regular
/// file it replaces, as an in-place write would keep them. A target that
/// is not a regular file (or none) leaves the upload as created.
fn into_place(dir: &Dir, staged: &Path, target: &Path) -> io::Result<()> {
    use cap_std::fs::MetadataExt;
    use std::os::unix::fs::PermissionsExt;
    if let Ok(existing) = dir.symlink_metadata(target) {
        if existing.is_file() {
            let replacement = dir.open(staged)?.into_std();
            keep_owner(&replacement, existing.uid(), existing.gid())?;
            replacement
                .set_permissions(std::fs::Permissions::from_mode(existing.mode() & 0o7777))?;
        }
    }
    dir.rename(staged, dir, target)
}

fn keep_owner(replacement: &std::fs::File, uid: u32, gid: u32) -> io::Result<()> {
    match std::os::unix::fs::fchown(replacement, Some(uid), Some(gid)) {
        // Not root: the file becomes berth's user's, as it would for any
        // other writer without the right to give files away.
        Err(error) if error.kind() == io::ErrorKind::PermissionDenied => Ok(()),
        other => other,
    }
}

/// `length` bytes of `file` from `first`, read on blocking threads one chunk
/// at a time: never the whole file in memory.
fn stream_file(file: std::fs::File, first: u64, length: u64) -> Body {
    struct Reader {
        file: Option<std::fs::File>,
        position: u64,
        remaining: u64,
    }
    let state = Reader {
        file: Some(file),
        position: first,
        remaining: length,
    };
    let chunks = futures_util::stream::unfold(state, |mut state| async move {
        if state.remaining == 0 {
            return None;
        }
        let mut file = state.file.take()?;
        let (position, want) = (state.position, state.remaining.min(CHUNK as u64) as usize);
        let read = tokio::task::spawn_blocking(move || {
            let mut buffer = vec![0u8; want];
            file.seek(SeekFrom::Start(position))?;
            let got = file.read(&mut buffer)?;
            buffer.truncate(got);
            Ok::<_, io::Error>((file, buffer))
        })
        .await
        .map_err(io::Error::other)
        .and_then(|result| result);
        match read {
            Ok((_, buffer)) if buffer.is_empty() => {
                let error = io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the file got shorter while being read",
                );
                Some((Err(error.into()), state))
            }
            Ok((file, buffer)) => {
                state.position += buffer.len() as u64;
                state.remaining -= buffer.len() as u64;
                state.file = Some(file);
                Some((Ok(Frame::data(Bytes::from(buffer))), state))
            }
            Err(error) => Some((Err(error.into()), state)),
        }
    });
    StreamBody::new(chunks).boxed_unsync()
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_domain::browse::confine;

    /// A host root with files, a subfolder and symlinks, beside a sentinel
    /// folder outside it that nothing may touch.
    struct Tree {
        base: PathBuf,
    }

    impl Tree {
        fn new(name: &str) -> Tree {
            let base = std::env::temp_dir().join(format!("berth-fs-{name}-{}", std::process::id()));
            let _ = std::fs::remove_dir_all(&base);
            let root = base.join("root");
            std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
            std::fs::create_dir_all(base.join("outside")).unwrap();
            std::fs::write(base.join("outside/secret"), "sentinel").unwrap();
            std::fs::write(root.join("a.txt"), "0123456789").unwrap();
            std::os::unix::fs::symlink("../outside", root.join("link_out")).unwrap();
            std::os::unix::fs::symlink("/etc/passwd", root.join("abs_link")).unwrap();
            std::os::unix::fs::symlink("a.txt", root.join("link_in")).unwrap();
            Tree { base }
        }

        fn files(&self) -> ConfinedFiles {
            ConfinedFiles::new(self.base.join("volumes"), self.base.join("root"))
        }

        fn sentinel_intact(&self) -> bool {
            std::fs::read_to_string(self.base.join("outside/secret"))
                .is_ok_and(|text| text == "sentinel")
        }
    }

    impl Drop for Tree {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.base);
        }
    }

    async fn read_all(
        files: &ConfinedFiles,
        path: &str,
        range: Option<ByteRange>,
    ) -> Result<Vec<u8>, FilesError> {
        let read = files
            .read(&BrowseRoot::Host, &confine(path).unwrap(), range)
            .await?;
        Ok(read.body.collect().await.unwrap().to_bytes().to_vec())
    }

    #[tokio::test]
    async fn lists_with_links_shown_not_followed() {
        let tree = Tree::new("list");
        let entries = tree
            .files()
            .list(&BrowseRoot::Host, &confine("/").unwrap())
            .await
            .unwrap();
        let names: Vec<&str> = entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a.txt", "abs_link", "link_in", "link_out", "sub"]);
        let link_out = &entries[3];
        assert!(!link_out.dir, "a symlink to a folder is shown as a link");
        assert_eq!(entries[0].size, 10);
        assert!(entries[4].dir && entries[0].mod_time > 0);
    }

    #[tokio::test]
    async fn reads_whole_files_and_ranges() {
        let tree = Tree::new("read");
        let files = tree.files();
        assert_eq!(
            read_all(&files, "a.txt", None).await.unwrap(),
            b"0123456789"
        );
        assert_eq!(
            read_all(&files, "/link_in", None).await.unwrap(),
            b"0123456789"
        );
        let range = ByteRange { first: 2, last: 4 };
        assert_eq!(
            read_all(&files, "a.txt", Some(range)).await.unwrap(),
            b"234"
        );
        assert!(matches!(
            read_all(&files, "missing", None).await,
            Err(FilesError::NotFound(_))
        ));
        assert!(
            read_all(&files, "sub", None).await.is_err(),
            "a folder is not a file"
        );
    }

    #[tokio::test]
    async fn nothing_outside_the_root_is_read_or_changed() {
        let tree = Tree::new("escape");
        let files = tree.files();
        let host = BrowseRoot::Host;
        for path in ["link_out/secret", "abs_link"] {
            let outcome = read_all(&files, path, None).await;
            assert!(
                matches!(
                    outcome,
                    Err(FilesError::Outside(_)) | Err(FilesError::NotFound(_))
                ),
                "{path}: read {outcome:?}"
            );
            assert!(files
                .list(&host, &confine("link_out").unwrap())
                .await
                .is_err());
        }
        assert!(files
            .delete(&host, &confine("link_out/secret").unwrap())
            .await
            .is_err());
        assert!(files
            .rename(
                &host,
                &confine("a.txt").unwrap(),
                &confine("link_out/stolen").unwrap()
            )
            .await
            .is_err());
        assert!(files
            .rename(
                &host,
                &confine("link_out/secret").unwrap(),
                &confine("got-it").unwrap()
            )
            .await
            .is_err());
        assert!(tree.sentinel_intact());
        assert!(!tree.base.join("outside/stolen").exists());
        // Deleting the link itself removes the link, not what it points to.
        files
            .delete(&host, &confine("link_out").unwrap())
            .await
            .unwrap();
        assert!(tree.sentinel_intact());
    }

    #[tokio::test]
    async fn deletes_and_renames_inside() {
        let tree = Tree::new("change");
        let files = tree.files();
        let host = BrowseRoot::Host;
        assert!(matches!(
            files.delete(&host, &confine("sub").unwrap()).await,
            Err(FilesError::NotEmpty(_))
        ));
        files
            .delete(&host, &confine("sub/deeper").unwrap())
            .await
            .unwrap();
        files
            .rename(
                &host,
                &confine("a.txt").unwrap(),
                &confine("sub/b.txt").unwrap(),
            )
            .await
            .unwrap();
        assert_eq!(
            read_all(&files, "sub/b.txt", None).await.unwrap(),
            b"0123456789"
        );
        files
            .delete(&host, &confine("sub/b.txt").unwrap())
            .await
            .unwrap();
        files.delete(&host, &confine("sub").unwrap()).await.unwrap();
        assert!(files.delete(&host, &confine("/").unwrap()).await.is_err());
    }

    #[tokio::test]
    async fn volumes_are_confined_to_their_data_folder() {
        let tree = Tree::new("volume");
        let data = tree.base.join("volumes/v1/_data");
        std::fs::create_dir_all(&data).unwrap();
        std::fs::write(tree.base.join("volumes/v1/opts.json"), "{}").unwrap();
        std::fs::write(data.join("inside.txt"), "in").unwrap();
        let files = tree.files();
        let volume = BrowseRoot::Volume("v1".into());
        let listed = files.list(&volume, &confine("/").unwrap()).await.unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].name, "inside.txt");
        assert!(matches!(
            files
                .list(
                    &BrowseRoot::Volume("missing".into()),
                    &confine("/").unwrap()
                )
                .await,
            Err(FilesError::NotFound(_))
        ));
    }
}
