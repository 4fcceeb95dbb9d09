//! A tar builder for tests: layer tars and archives with fixed owners and times, including
//! entries the `tar` crate refuses to write (`..` or absolute names, raw link names).

use tar::{EntryType, Header};

/// The mtime every entry gets unless told otherwise.
pub const MTIME: u64 = 1_700_000_000;

/// Builds a tar in memory, entry by entry.
///
/// ```
/// let layer = testkit::tar::Tar::new()
///     .dir("etc/")
///     .file("etc/a.conf", b"alpha=1\n")
///     .symlink("etc/a.link", "a.conf")
///     .whiteout("etc/b.conf")
///     .build();
/// assert_eq!(layer.len() % 512, 0);
/// ```
pub struct Tar {
    out: tar::Builder<Vec<u8>>,
    gnu: bool,
    mtime: u64,
    owner: (u64, u64),
}

impl std::fmt::Debug for Tar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tar")
            .field("bytes", &self.out.get_ref().len())
            .field("gnu", &self.gnu)
            .finish()
    }
}

impl Default for Tar {
    fn default() -> Self {
        Self::new()
    }
}

impl Tar {
    /// A ustar archive, entries owned by 0:0 with mtime [`MTIME`].
    pub fn new() -> Self {
        Tar {
            out: tar::Builder::new(Vec::new()),
            gnu: false,
            mtime: MTIME,
            owner: (0, 0),
        }
    }

    /// GNU headers instead of ustar (long names as `././@LongLink`).
    pub fn gnu(mut self) -> Self {
        self.gnu = true;
        self
    }

    /// The mtime of the entries added after this.
    pub fn mtime(mut self, mtime: u64) -> Self {
        self.mtime = mtime;
        self
    }

    /// The owner of the entries added after this.
    pub fn owner(mut self, uid: u64, gid: u64) -> Self {
        self.owner = (uid, gid);
        self
    }

    /// A directory (0755).
    pub fn dir(self, path: &str) -> Self {
        self.entry(EntryType::Directory, path, "", 0o755, b"")
    }

    /// A regular file (0644).
    pub fn file(self, path: &str, data: &[u8]) -> Self {
        self.entry(EntryType::Regular, path, "", 0o644, data)
    }

    /// A regular file with a mode.
    pub fn file_mode(self, path: &str, data: &[u8], mode: u32) -> Self {
        self.entry(EntryType::Regular, path, "", mode, data)
    }

    /// A symbolic link (0777).
    pub fn symlink(self, path: &str, target: &str) -> Self {
        self.entry(EntryType::Symlink, path, target, 0o777, b"")
    }

    /// A hard link to an earlier entry.
    pub fn hardlink(self, path: &str, target: &str) -> Self {
        self.entry(EntryType::Link, path, target, 0o644, b"")
    }

    /// An AUFS whiteout of `path` (`dir/.wh.name`), as Docker's layer tars carry them.
    pub fn whiteout(self, path: &str) -> Self {
        let (dir, name) = match path.trim_end_matches('/').rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n),
            None => (String::new(), path),
        };
        self.file(&format!("{dir}.wh.{name}"), b"")
    }

    /// The opaque-directory marker of `dir` (`dir/.wh..wh..opq`).
    pub fn opaque(self, dir: &str) -> Self {
        let dir = dir.trim_end_matches('/');
        self.file(&format!("{dir}/.wh..wh..opq"), b"")
    }

    /// PAX extended records for the next entry (`SCHILY.xattr.*`, `path`, ...).
    pub fn pax(mut self, records: &[(&str, &[u8])]) -> Self {
        self.out
            .append_pax_extensions(records.iter().map(|(k, v)| (*k, *v)))
            .expect("write PAX header");
        self
    }

    /// Any entry. Names the `tar` crate refuses (`..`, absolute) are written raw into the
    /// ustar fields (up to 100 bytes each).
    pub fn entry(
        mut self,
        kind: EntryType,
        path: &str,
        link: &str,
        mode: u32,
        data: &[u8],
    ) -> Self {
        let mut h = if self.gnu {
            Header::new_gnu()
        } else {
            Header::new_ustar()
        };
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_mtime(self.mtime);
        h.set_uid(self.owner.0);
        h.set_gid(self.owner.1);
        h.set_size(data.len() as u64);
        let raw = |s: &str| s.split('/').any(|c| c == "..") || s.starts_with('/');
        let b = &mut self.out;
        if raw(path) || raw(link) {
            assert!(
                path.len() <= 100 && link.len() <= 100,
                "raw names fit 100 bytes"
            );
            let old = h.as_old_mut();
            old.name = [0; 100];
            old.name[..path.len()].copy_from_slice(path.as_bytes());
            old.linkname = [0; 100];
            old.linkname[..link.len()].copy_from_slice(link.as_bytes());
            h.set_cksum();
            b.append(&h, data).expect("append raw entry");
        } else if matches!(kind, EntryType::Symlink | EntryType::Link) {
            b.append_link(&mut h, path, link).expect("append link");
        } else {
            b.append_data(&mut h, path, data).expect("append entry");
        }
        self
    }

    /// The archive with its end-of-archive marker (two zero blocks).
    pub fn build(self) -> Vec<u8> {
        self.out.into_inner().expect("in-memory tar")
    }

    /// The entries without an end-of-archive marker.
    pub fn build_unterminated(self) -> Vec<u8> {
        self.out.get_ref().clone()
    }
}

/// A tar of regular files `(name, content, mode)`, GNU headers, mtime 1 600 000 000.
pub fn files(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut t = Tar::new().gnu().mtime(1_600_000_000);
    for (name, content, mode) in files {
        t = t.file_mode(name, content, *mode);
    }
    t.build()
}

/// An archive of regular 0644 members `(name, bytes)` (a `docker save`, an OCI archive).
pub fn archive(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut t = Tar::new().gnu();
    for (name, data) in members {
        t = t.file(name, data);
    }
    t.build()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(tar: &[u8]) -> Vec<(String, String)> {
        let mut a = tar::Archive::new(tar);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
                let link = e
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
                    .unwrap_or_default();
                (name, link)
            })
            .collect()
    }

    #[test]
    fn entries_read_back_including_raw_names() {
        let t = Tar::new()
            .dir("etc/")
            .file("etc/a", b"a")
            .whiteout("etc/b")
            .opaque("opt/")
            .hardlink("x", "../../escape")
            .file("../outside", b"x")
            .build();
        assert_eq!(
            names(&t),
            [
                ("etc/".into(), "".into()),
                ("etc/a".into(), "".into()),
                ("etc/.wh.b".into(), "".into()),
                ("opt/.wh..wh..opq".into(), "".into()),
                ("x".into(), "../../escape".into()),
                ("../outside".into(), "".into()),
            ]
        );
        assert!(t.ends_with(&[0u8; 1024]));
    }
}
