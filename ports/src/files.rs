//! Confined file access for browsing volumes and the host.

use std::fmt;
use std::future::Future;
use std::time::SystemTime;

use berth_domain::browse::{BrowseRoot, ByteRange, ConfinedPath, FileEntry};

use crate::body::Body;

/// Why a file operation failed; each maps to its own status.
#[derive(Debug)]
pub enum FilesError {
    NotFound(String),
    /// The path led outside its root (a symlink, a race): 403.
    Outside(String),
    /// A folder that is not empty was to be deleted: 409.
    NotEmpty(String),
    Other(String),
}

impl fmt::Display for FilesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FilesError::NotFound(why)
            | FilesError::Outside(why)
            | FilesError::NotEmpty(why)
            | FilesError::Other(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for FilesError {}

/// A file being read: its body streams, never held whole.
pub struct FileRead {
    pub body: Body,
    /// Bytes in `body`.
    pub length: u64,
    /// Bytes in the whole file.
    pub total: u64,
    pub modified: Option<SystemTime>,
}

pub trait Files: Clone + Send + Sync + 'static {
    /// A folder's entries, sorted by name; symlinks as links.
    ///
    /// # Errors
    /// [`FilesError`].
    fn list(
        &self,
        root: &BrowseRoot,
        path: &ConfinedPath,
    ) -> impl Future<Output = Result<Vec<FileEntry>, FilesError>> + Send;

    /// A file, or the part of it `range` names.
    ///
    /// # Errors
    /// [`FilesError`].
    fn read(
        &self,
        root: &BrowseRoot,
        path: &ConfinedPath,
        range: Option<ByteRange>,
    ) -> impl Future<Output = Result<FileRead, FilesError>> + Send;

    /// The size of a file, for checking a range before reading.
    ///
    /// # Errors
    /// [`FilesError`].
    fn size(
        &self,
        root: &BrowseRoot,
        path: &ConfinedPath,
    ) -> impl Future<Output = Result<u64, FilesError>> + Send;

    /// A file, or an empty folder.
    ///
    /// # Errors
    /// [`FilesError::NotEmpty`] for a folder with entries.
    fn delete(
        &self,
        root: &BrowseRoot,
        path: &ConfinedPath,
    ) -> impl Future<Output = Result<(), FilesError>> + Send;

    /// Streams `body` into `folder/name`: into a temporary file in that
    /// folder first, renamed into place once complete, so an interrupted
    /// upload leaves nothing and never clobbers the old file. Missing
    /// folders are made; a file replaced keeps its mode and owner. Returns
    /// the bytes written.
    ///
    /// # Errors
    /// [`FilesError`]; the temporary file is gone either way.
    fn write(
        &self,
        root: &BrowseRoot,
        folder: &ConfinedPath,
        name: &str,
        body: Body,
    ) -> impl Future<Output = Result<u64, FilesError>> + Send;

    /// # Errors
    /// [`FilesError`].
    fn rename(
        &self,
        root: &BrowseRoot,
        from: &ConfinedPath,
        to: &ConfinedPath,
    ) -> impl Future<Output = Result<(), FilesError>> + Send;

    /// Moves a finished upload, `staged`, into `folder/name` as
    /// [`Files::write`] places its file: missing folders made, a file
    /// replaced keeping its mode and owner.
    ///
    /// # Errors
    /// [`FilesError`].
    fn place(
        &self,
        root: &BrowseRoot,
        staged: &ConfinedPath,
        folder: &ConfinedPath,
        name: &str,
    ) -> impl Future<Output = Result<(), FilesError>> + Send;

    /// A folder and every missing folder above it (Edge configurations
    /// create their folders on the host).
    ///
    /// # Errors
    /// [`FilesError`].
    fn make_folders(
        &self,
        root: &BrowseRoot,
        path: &ConfinedPath,
    ) -> impl Future<Output = Result<(), FilesError>> + Send;

    /// A file's permission bits (the low nine, as Portainer gives them).
    ///
    /// # Errors
    /// [`FilesError`].
    fn set_mode(
        &self,
        root: &BrowseRoot,
        path: &ConfinedPath,
        mode: u32,
    ) -> impl Future<Output = Result<(), FilesError>> + Send;
}
