//! Files Edge work places on the host (Edge configurations, relative-path
//! stacks): written and removed through the `Files` port under the host
//! root, every path resolved beneath it as browsing resolves it, so a
//! symlink on the host cannot lead a write outside.

use berth_domain::browse::{confine, BrowseRoot, ConfinedPath};
use berth_ports::{full_body, Files, FilesError};

pub fn path_of(components: &[String]) -> Result<ConfinedPath, String> {
    confine(&components.join("/")).map_err(|_| format!("{components:?} leaves the host root"))
}

fn failed(what: &str, error: FilesError) -> String {
    format!("{what}: {error}")
}

/// Writes `content` at `folder/relative` on the host with `mode`, making
/// the folders on the way.
pub async fn save_on_host<F: Files>(
    files: &F,
    folder: &[String],
    relative: &[String],
    content: Vec<u8>,
    mode: u32,
) -> Result<(), String> {
    let root = BrowseRoot::Host;
    let (name, folders) = relative
        .split_last()
        .ok_or_else(|| "a file has no name".to_string())?;
    let parent = path_of(&[folder, folders].concat())?;
    files
        .make_folders(&root, &parent)
        .await
        .map_err(|e| failed("creating the folder", e))?;
    files
        .write(&root, &parent, name, full_body(content))
        .await
        .map_err(|e| failed("writing a file", e))?;
    let path = path_of(&[parent.components(), std::slice::from_ref(name)].concat())?;
    files
        .set_mode(&root, &path, mode)
        .await
        .map_err(|e| failed("setting a file's mode", e))
}

/// Deletes a file on the host; one already gone is fine.
pub async fn delete_on_host<F: Files>(files: &F, components: &[String]) -> Result<(), String> {
    match files.delete(&BrowseRoot::Host, &path_of(components)?).await {
        Ok(()) | Err(FilesError::NotFound(_)) => Ok(()),
        Err(error) => Err(failed("deleting a file", error)),
    }
}

/// Deletes a folder on the host and everything in it (symlinks as links,
/// never followed); one already gone is fine.
pub async fn remove_tree_on_host<F: Files>(files: &F, folder: &[String]) -> Result<(), String> {
    let root = BrowseRoot::Host;
    // Depth first, without recursion: folders are emptied before their
    // own deletion.
    let mut pending = vec![(folder.to_vec(), false)];
    while let Some((components, emptied)) = pending.pop() {
        let path = path_of(&components)?;
        if emptied {
            delete_on_host(files, &components).await?;
            continue;
        }
        let entries = match files.list(&root, &path).await {
            Ok(entries) => entries,
            Err(FilesError::NotFound(_)) => continue,
            Err(error) => return Err(failed("listing a folder", error)),
        };
        pending.push((components.clone(), true));
        for entry in entries {
            let mut child = components.clone();
            child.push(entry.name.clone());
            if entry.dir {
                pending.push((child, false));
            } else {
                delete_on_host(files, &child).await?;
            }
        }
    }
    Ok(())
}
