//! The lexical rules of file browsing (reference §6.3): which volume names
//! and paths are acceptable at all. The filesystem adapter enforces
//! confinement again when it opens anything (symlinks, races); these rules
//! give the clear 400s first.

use crate::error::AgentError;

/// The host prefix Portainer's host browser puts before every path.
pub const HOST_PREFIX: &str = "/host";

/// A path inside a browse root, as its normal components (no `.`, no `..`,
/// no empty parts). The empty path is the root itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfinedPath {
    components: Vec<String>,
}

impl ConfinedPath {
    pub fn components(&self) -> &[String] {
        &self.components
    }

    pub fn is_root(&self) -> bool {
        self.components.is_empty()
    }

    /// The relative path (`a/b/c`), empty for the root.
    pub fn relative(&self) -> String {
        self.components.join("/")
    }

    /// The last component, for `Content-Disposition`.
    pub fn file_name(&self) -> Option<&str> {
        self.components.last().map(String::as_str)
    }
}

fn invalid_path() -> AgentError {
    AgentError::new(
        400,
        "Invalid volume",
        "Invalid path. Ensure that the path do not contain '..' elements",
    )
}

/// A Docker volume name: `[a-zA-Z0-9][a-zA-Z0-9_.-]*`, so no `/`, no `..`.
///
/// # Errors
/// A 400 in the reference's shape.
pub fn check_volume_id(volume: &str) -> Result<(), AgentError> {
    let mut chars = volume.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && !volume.contains("..");
    if valid {
        Ok(())
    } else {
        Err(AgentError::new(400, "Invalid volume", "Invalid volume ID"))
    }
}

/// A path relative to a browse root. Absolute paths count from the root;
/// `..` anywhere, NUL and backslash-separated `..` are refused.
///
/// # Errors
/// A 400 in the reference's shape.
pub fn confine(path: &str) -> Result<ConfinedPath, AgentError> {
    if path.contains('\0') {
        return Err(invalid_path());
    }
    let mut components = Vec::new();
    for part in path.split(['/', '\\']) {
        match part {
            "" | "." => {}
            ".." => return Err(invalid_path()),
            other => components.push(other.to_string()),
        }
    }
    Ok(ConfinedPath { components })
}

/// A host path as Portainer sends it (`/host/etc`), relative to the host
/// root: the `/host` prefix is dropped when present.
///
/// # Errors
/// A 400 that names the host path (not the reference's "Invalid volume":
/// no volume is involved) when it would leave the host root.
pub fn confine_host_path(path: &str) -> Result<ConfinedPath, AgentError> {
    let inside = match path.strip_prefix(HOST_PREFIX) {
        Some(rest) if rest.is_empty() || rest.starts_with('/') => rest,
        _ => path,
    };
    confine(inside).map_err(|_| {
        AgentError::new(
            400,
            "Invalid host path",
            format!("The host path {path:?} leaves the host root: '..' is not allowed"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn volume_ids() {
        for good in ["data", "my_volume-1.2", "a", "0abc"] {
            assert!(check_volume_id(good).is_ok(), "{good}");
        }
        for bad in [
            "", "..", "../x", "a/b", ".hidden", "-x", "a..b", "a\0b", "é",
        ] {
            assert_eq!(check_volume_id(bad).unwrap_err().status(), 400, "{bad:?}");
        }
    }

    #[test]
    fn paths() {
        assert_eq!(confine("/a/./b//c/").unwrap().relative(), "a/b/c");
        assert!(confine("/").unwrap().is_root());
        assert!(confine("").unwrap().is_root());
        assert_eq!(confine("a\\b").unwrap().components(), ["a", "b"]);
        for bad in ["..", "a/../b", "/..", "a\\..\\b", "x\0y"] {
            assert_eq!(
                confine(bad).unwrap_err().message(),
                "Invalid volume",
                "{bad:?}"
            );
        }
        // Percent-encoding is undone by the query parser, not here: `%2e%2e` is a name.
        assert_eq!(confine("%2e%2e").unwrap().relative(), "%2e%2e");
    }

    #[test]
    fn host_paths_drop_the_host_prefix() {
        assert_eq!(
            confine_host_path("/host/etc/hosts").unwrap().relative(),
            "etc/hosts"
        );
        assert!(confine_host_path("/host").unwrap().is_root());
        assert_eq!(
            confine_host_path("/hostname").unwrap().relative(),
            "hostname"
        );
        assert_eq!(confine_host_path("/etc").unwrap().relative(), "etc");
        let outside = confine_host_path("/host/../etc").unwrap_err();
        assert_eq!(
            (outside.status(), outside.message()),
            (400, "Invalid host path")
        );
        assert!(
            outside.details().contains("\"/host/../etc\""),
            "{outside:?}"
        );
    }

    proptest! {
        #[test]
        fn confined_paths_never_climb(path in "[a-z./\\\\]{0,40}") {
            if let Ok(confined) = confine(&path) {
                for component in confined.components() {
                    prop_assert!(component != ".." && component != "." && !component.is_empty());
                    prop_assert!(!component.contains('/') && !component.contains('\\'));
                }
            }
        }
    }
}

/// Which tree a browse request reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrowseRoot {
    /// A volume's `_data` folder (the ID already checked).
    Volume(String),
    /// The host's root mount.
    Host,
}

/// One entry of a folder listing, as `ls` answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileEntry {
    pub name: String,
    /// For a symlink, the link's own size: links are shown, not followed.
    pub size: u64,
    pub dir: bool,
    /// Seconds since the Unix epoch.
    pub mod_time: i64,
}

/// A single byte range of a file, both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub first: u64,
    pub last: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.last - self.first + 1
    }

    pub fn is_empty(&self) -> bool {
        false
    }
}

/// What a `Range` header asks of a file of `size` bytes: `Ok(None)` for the
/// whole file (no header, or one berth does not serve, such as several
/// ranges), `Err(())` when the range cannot be satisfied (416).
#[allow(clippy::result_unit_err)]
pub fn parse_range(header: Option<&str>, size: u64) -> Result<Option<ByteRange>, ()> {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return Ok(None);
    };
    if spec.contains(',') {
        return Ok(None);
    }
    let (first, last) = spec.split_once('-').ok_or(())?;
    let range = match (first.trim(), last.trim()) {
        ("", suffix) => {
            let suffix: u64 = suffix.parse().map_err(|_| ())?;
            if suffix == 0 || size == 0 {
                return Err(());
            }
            ByteRange {
                first: size.saturating_sub(suffix),
                last: size - 1,
            }
        }
        (first, "") => {
            let first: u64 = first.parse().map_err(|_| ())?;
            if first >= size {
                return Err(());
            }
            ByteRange {
                first,
                last: size - 1,
            }
        }
        (first, last) => {
            let (first, last): (u64, u64) = (
                first.parse().map_err(|_| ())?,
                last.parse().map_err(|_| ())?,
            );
            if first > last || first >= size {
                return Err(());
            }
            ByteRange {
                first,
                last: last.min(size - 1),
            }
        }
    };
    Ok(Some(range))
}

#[cfg(test)]
mod range_tests {
    use super::*;

    #[test]
    fn ranges() {
        let r = |first, last| Ok(Some(ByteRange { first, last }));
        assert_eq!(parse_range(None, 10), Ok(None));
        assert_eq!(parse_range(Some("bytes=0-4"), 10), r(0, 4));
        assert_eq!(parse_range(Some("bytes=5-"), 10), r(5, 9));
        assert_eq!(parse_range(Some("bytes=-3"), 10), r(7, 9));
        assert_eq!(parse_range(Some("bytes=8-100"), 10), r(8, 9));
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), Ok(None));
        assert_eq!(parse_range(Some("items=0-1"), 10), Ok(None));
        for bad in ["bytes=10-", "bytes=5-4", "bytes=x-1", "bytes=-0", "bytes=7"] {
            assert_eq!(parse_range(Some(bad), 10), Err(()), "{bad}");
        }
        assert_eq!(ByteRange { first: 2, last: 5 }.len(), 4);
    }
}

/// The query string's parameters, percent-decoded (`+` is a space), first
/// value wins as in Go's `FormValue`.
pub fn query_value(query: Option<&str>, name: &str) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(key)? == name).then(|| percent_decode(value))?
        })
        .next()
}

fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            other => {
                out.push(other);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod query_tests {
    use super::*;

    #[test]
    fn query_values() {
        let query = Some("volumeID=v1&path=%2Fa%20b%2Fc+d&path=second&flag");
        assert_eq!(query_value(query, "volumeID").as_deref(), Some("v1"));
        assert_eq!(query_value(query, "path").as_deref(), Some("/a b/c d"));
        assert_eq!(query_value(query, "flag").as_deref(), Some(""));
        assert_eq!(query_value(query, "missing"), None);
        assert_eq!(query_value(None, "path"), None);
        assert_eq!(query_value(Some("path=%zz"), "path"), None);
        // %2e%2e decodes to `..`, which confine then refuses.
        let decoded = query_value(Some("path=%2e%2e/etc"), "path").unwrap();
        assert!(confine(&decoded).is_err());
    }
}
