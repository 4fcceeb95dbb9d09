//! Docker's overlay2 directory layout: paths, link ids, the `lower` file, atomic writes.
//!
//! ```text
//! <home>/                 0710
//!   l/                    0700   <LINKID> -> ../<id>/diff (26-char base32 names keep mount options short)
//!   <id>/                 0710
//!     link                0644   the layer's LINKID, no newline
//!     diff/               0755   the layer's own files (the overlay upper dir)
//!     lower               0644   "l/<parent LINKID>:<parent's lower>", only with a parent
//!     work/               0700   overlay's work dir, only with a parent
//!     merged/             0700   mount point, exists only while mounted
//!     committed           0600   empty; written into a layer's dir when a child is created
//! ```

use std::ffi::OsStr;
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The directory holding the short symlinks.
pub(crate) const LINK_DIR: &str = "l";
/// Length of a link id, as Docker's `idLength`.
pub(crate) const LINK_ID_LEN: usize = 26;
/// Docker's default chain depth limit (`maxDepth`).
pub const DEFAULT_MAX_DEPTH: usize = 128;
/// The kernel's limit on overlay lower layers (`OVL_MAX_STACK`).
pub const KERNEL_MAX_DEPTH: usize = 500;

/// Prefix of the scratch directories feature probes create (and remove) under the home.
pub(crate) const PROBE_PREFIX: &str = "check-overlayfs-";

const BASE32: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";

/// Paths of one layer under the driver home.
#[derive(Debug, Clone)]
pub(crate) struct LayerPaths {
    pub dir: PathBuf,
}

impl LayerPaths {
    pub(super) fn new(home: &Path, id: &str) -> Self {
        LayerPaths { dir: home.join(id) }
    }
    pub(super) fn diff(&self) -> PathBuf {
        self.dir.join("diff")
    }
    pub(super) fn work(&self) -> PathBuf {
        self.dir.join("work")
    }
    pub(super) fn merged(&self) -> PathBuf {
        self.dir.join("merged")
    }
    pub(super) fn link(&self) -> PathBuf {
        self.dir.join("link")
    }
    pub(super) fn lower(&self) -> PathBuf {
        self.dir.join("lower")
    }
    pub(super) fn committed(&self) -> PathBuf {
        self.dir.join("committed")
    }
}

/// Refuses ids that are not a single plain path component, or that would collide with the
/// driver's own entries (`l`, probe directories).
pub(crate) fn validate_id(id: &str) -> Result<()> {
    let bad = id.is_empty()
        || id == "."
        || id == ".."
        || id == LINK_DIR
        || id.starts_with(PROBE_PREFIX)
        || id.starts_with(".tmp-")
        || id.bytes().any(|b| b == b'/' || b == 0);
    if bad {
        return Err(Error::InvalidOption(format!(
            "overlay2: invalid layer id {id:?}"
        )));
    }
    Ok(())
}

/// A fresh random link id: 17 random bytes in base32 (RFC 4648 alphabet), first 26 characters,
/// as Docker's `GenerateID(26)`.
pub(crate) fn generate_link_id() -> String {
    let bytes: [u8; 17] = rand::random();
    let mut out = String::with_capacity(LINK_ID_LEN);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 && out.len() < LINK_ID_LEN {
            bits -= 5;
            out.push(BASE32[((acc >> bits) & 31) as usize] as char);
        }
    }
    out
}

/// Whether `s` looks like a link id Docker could have written.
pub(crate) fn is_link_id(s: &str) -> bool {
    s.len() == LINK_ID_LEN && s.bytes().all(|b| BASE32.contains(&b))
}

/// Parses a `lower` file: `l/<LINK>:l/<LINK>:…`, uppermost first. Returns the link ids.
/// An empty or malformed file is an error naming the layer (moby#35747: an empty entry would
/// otherwise make overlay stack the whole `l/` directory).
pub(crate) fn parse_lower(id: &str, content: &[u8]) -> Result<Vec<String>> {
    let text = std::str::from_utf8(content)
        .map_err(|_| Error::Other(format!("overlay2: layer {id}: lower file is not UTF-8")))?;
    if text.is_empty() {
        return Err(Error::Other(format!(
            "overlay2: layer {id}: lower file is empty"
        )));
    }
    text.split(':')
        .map(|entry| match entry.strip_prefix("l/") {
            Some(link) if is_link_id(link) => Ok(link.to_string()),
            _ => Err(Error::Other(format!(
                "overlay2: layer {id}: bad entry {entry:?} in lower file"
            ))),
        })
        .collect()
}

/// Formats a `lower` file from link ids, uppermost first.
pub(crate) fn format_lower(links: &[String]) -> String {
    let mut s = String::with_capacity(links.len() * (LINK_ID_LEN + 3));
    for (i, link) in links.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str("l/");
        s.push_str(link);
    }
    s
}

/// Reads a layer's `link` file and checks it.
pub(crate) fn read_link_id(home: &Path, id: &str) -> Result<String> {
    let path = LayerPaths::new(home, id).link();
    let raw = std::fs::read(&path).map_err(|e| Error::io("read", &path, e))?;
    let link = String::from_utf8_lossy(&raw).trim().to_string();
    if !is_link_id(&link) {
        return Err(Error::Other(format!(
            "overlay2: layer {id}: link file {} holds {link:?}, not a {LINK_ID_LEN}-character link id",
            path.display()
        )));
    }
    Ok(link)
}

/// Reads a layer's lowers (link ids, uppermost first); empty for a base layer.
pub(crate) fn read_lowers(home: &Path, id: &str) -> Result<Vec<String>> {
    let path = LayerPaths::new(home, id).lower();
    match std::fs::read(&path) {
        Ok(content) => parse_lower(id, &content),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(Error::io("read", &path, e)),
    }
}

/// Creates `path` with exactly `mode` (not masked by the umask). An existing directory is
/// accepted, as Docker's `MkdirAndChown`.
pub(crate) fn mkdir_mode(path: &Path, mode: u32) -> Result<()> {
    match std::fs::DirBuilder::new().mode(mode).create(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && path.is_dir() => return Ok(()),
        Err(e) => return Err(Error::io("mkdir", path, e)),
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io("chmod", path, e))
}

/// Writes `content` to `path` atomically with exactly `mode`: a temporary file in the same
/// directory, fsync, rename. Readers see the old file or the new one, never a torn one.
pub(crate) fn write_atomic(path: &Path, content: &[u8], mode: u32) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().unwrap_or(OsStr::new("file"));
    let mut tmp_name = b".tmp-".to_vec();
    tmp_name.extend_from_slice(name.as_bytes());
    tmp_name.extend_from_slice(&generate_link_id().as_bytes()[..10]);
    let tmp = dir.join(OsStr::from_bytes(&tmp_name));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::io("create", &tmp, e))?;
        f.write_all(content)
            .map_err(|e| Error::io("write", &tmp, e))?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io("chmod", &tmp, e))?;
        f.sync_all().map_err(|e| Error::io("fsync", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io("rename", path, e))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_ids_are_26_base32_chars_and_differ() {
        let a = generate_link_id();
        let b = generate_link_id();
        assert_eq!(a.len(), 26);
        assert!(is_link_id(&a), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn lower_round_trips_and_rejects_garbage() {
        let links = vec!["A".repeat(26), "B".repeat(26)];
        let text = format_lower(&links);
        assert_eq!(text, format!("l/{}:l/{}", "A".repeat(26), "B".repeat(26)));
        assert_eq!(parse_lower("x", text.as_bytes()).unwrap(), links);
        assert!(parse_lower("x", b"").is_err());
        assert!(parse_lower("x", b"l/").is_err());
        assert!(parse_lower("x", format!("l/{}::", "A".repeat(26)).as_bytes()).is_err());
        assert!(parse_lower("x", b"/etc/passwd").is_err());
    }

    #[test]
    fn ids_that_escape_or_collide_are_refused() {
        for bad in ["", ".", "..", "l", "a/b", "check-overlayfs-1"] {
            assert!(validate_id(bad).is_err(), "{bad:?}");
        }
        validate_id("abc-init").unwrap();
    }
}
