//! Turning files on disk into tar entries: a directory walk, or single entries named by the
//! caller (export of changes), with a hook that may rewrite or drop each entry.
//!
//! The hook ([`EntryConverter`]) is how overlay2 exports its upper dir: it turns a char 0/0
//! device into a `.wh.<name>` entry and adds `.wh..wh..opq` after an opaque directory. The
//! walk itself is fd-based (`openat` with `O_NOFOLLOW` from the directory fd, sorted
//! `getdents`), so a symlink inside the tree is archived as a symlink and never followed.
//!
//! ```
//! use layer_archive::walk::{tar_directory, NoConversion, WalkOptions};
//!
//! let dir = tempfile::tempdir().unwrap();
//! std::fs::create_dir(dir.path().join("etc")).unwrap();
//! std::fs::write(dir.path().join("etc/hostname"), "box\n").unwrap();
//! let tar = tar_directory(dir.path(), Vec::new(), &WalkOptions::default(), &mut NoConversion).unwrap();
//! let names: Vec<String> = tar::Archive::new(&tar[..]).entries().unwrap()
//!     .map(|e| e.unwrap().path().unwrap().display().to_string()).collect();
//! assert_eq!(names, ["etc/", "etc/hostname"]);
//! ```

use std::collections::HashMap;
use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use rustix::fs::{FileType, Mode, OFlags};

use crate::codec::{EntryKind, Header, TarWriter, Time};
use safe_root::{Meta, component, lstat_at};

/// How precisely mtimes are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MtimePrecision {
    /// Whole seconds, as moby's archiver writes them.
    Seconds,
    /// Full nanoseconds (a PAX `mtime` record when the fraction is non-zero), so that a tree
    /// exported and applied again compares equal, nanoseconds included.
    #[default]
    Nanoseconds,
}

/// Which xattrs are archived.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum XattrPolicy {
    /// None at all.
    None,
    /// Only `security.capability`, as moby (file capabilities are the one xattr images rely on).
    #[default]
    CapabilityOnly,
    /// Every xattr except the overlayfs-private `trusted.overlay.*` / `user.overlay.*`.
    All,
}

/// Options for walking files into tar entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WalkOptions {
    /// mtime precision.
    pub mtime: MtimePrecision,
    /// xattr selection.
    pub xattrs: XattrPolicy,
}

/// An entry about to be archived, for the converter.
#[derive(Debug, Clone, Copy)]
pub struct WalkEntry<'a> {
    /// The directory holding the entry.
    pub dir: BorrowedFd<'a>,
    /// The entry's name in `dir`.
    pub name: &'a CStr,
    /// The path relative to the archive root, without a trailing slash (`etc/hosts`).
    pub rel: &'a [u8],
    /// Its stat data.
    pub meta: &'a Meta,
}

/// What a converter wants written for an entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Converted {
    /// Write this header (the given one, possibly modified). Payload is the file's content
    /// if the header is still a regular file with the file's own name and a non-zero size.
    Write(Header),
    /// Write this header, then these header-only entries (e.g. an opaque marker).
    WriteThen(Header, Vec<Header>),
    /// Write nothing for this entry (a walk still descends into a skipped directory).
    Skip,
}

/// Rewrites entries on their way into the tar.
pub trait EntryConverter {
    /// Decides what to write for `entry`, whose default header is `header`.
    fn convert(&mut self, entry: &WalkEntry<'_>, header: Header) -> io::Result<Converted>;
}

/// The identity converter.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoConversion;

impl EntryConverter for NoConversion {
    fn convert(&mut self, _entry: &WalkEntry<'_>, header: Header) -> io::Result<Converted> {
        Ok(Converted::Write(header))
    }
}

/// A tar being built from files: the writer plus the hardlink table shared by all entries.
#[derive(Debug)]
pub struct TarBuilder<W: Write> {
    writer: TarWriter<W>,
    options: WalkOptions,
    /// (dev, ino) of files with several links → the name they were first archived under.
    seen_inodes: HashMap<(u64, u64), Vec<u8>>,
}

impl<W: Write> TarBuilder<W> {
    /// A builder writing to `out`.
    pub fn new(out: W, options: WalkOptions) -> Self {
        TarBuilder {
            writer: TarWriter::new(out),
            options,
            seen_inodes: HashMap::new(),
        }
    }

    /// The raw writer, to add entries by hand (whiteouts).
    pub fn writer(&mut self) -> &mut TarWriter<W> {
        &mut self.writer
    }

    /// Writes the end-of-archive marker and returns the output.
    pub fn finish(self) -> io::Result<W> {
        self.writer.finish()
    }

    /// The default header for an entry: type, mode, owner, size, mtime, link target,
    /// device numbers, xattrs per the policy. Sockets give `None` (tar cannot hold them).
    pub fn header_for(
        &self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        rel: &[u8],
        meta: &Meta,
    ) -> io::Result<Option<Header>> {
        let kind = match meta.file_type {
            FileType::RegularFile => EntryKind::Regular,
            FileType::Directory => EntryKind::Directory,
            FileType::Symlink => EntryKind::Symlink,
            FileType::CharacterDevice => EntryKind::CharDevice,
            FileType::BlockDevice => EntryKind::BlockDevice,
            FileType::Fifo => EntryKind::Fifo,
            _ => return Ok(None),
        };
        let mut tar_name = rel.to_vec();
        if kind == EntryKind::Directory {
            tar_name.push(b'/');
        }
        let mut header = Header::new(tar_name, kind);
        header.mode = i64::from(meta.perm);
        header.uid = i64::from(meta.uid);
        header.gid = i64::from(meta.gid);
        header.size = if kind == EntryKind::Regular {
            meta.size as i64
        } else {
            0
        };
        header.mtime = Time {
            sec: meta.mtime_sec,
            nsec: if self.options.mtime == MtimePrecision::Nanoseconds {
                meta.mtime_nsec
            } else {
                0
            },
        };
        if kind == EntryKind::Symlink {
            header.link_name = safe_root::read_link_at(dir, name)?;
        }
        if matches!(kind, EntryKind::CharDevice | EntryKind::BlockDevice) {
            header.dev_major = i64::from(rustix::fs::major(meta.rdev));
            header.dev_minor = i64::from(rustix::fs::minor(meta.rdev));
        }
        match self.options.xattrs {
            XattrPolicy::None => {}
            XattrPolicy::CapabilityOnly => {
                if kind != EntryKind::Symlink
                    && let Some(v) = safe_root::get_xattr_at(dir, name, c"security.capability")?
                {
                    header
                        .xattrs
                        .push((b"security.capability".to_vec(), capability_as_v2(v)));
                }
            }
            XattrPolicy::All => {
                for attr in safe_root::list_xattrs_at(dir, name)? {
                    let bytes = attr.to_bytes();
                    if bytes.starts_with(b"trusted.overlay.") || bytes.starts_with(b"user.overlay.")
                    {
                        continue;
                    }
                    if let Some(v) = safe_root::get_xattr_at(dir, name, &attr)? {
                        header.xattrs.push((bytes.to_vec(), v));
                    }
                }
            }
        }
        Ok(Some(header))
    }

    /// Archives the single entry `name` of `dir` under the archive name `rel`.
    pub fn append_entry(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        rel: &[u8],
        converter: &mut dyn EntryConverter,
    ) -> io::Result<()> {
        let meta = lstat_at(dir, name)?;
        self.append_with_meta(dir, name, rel, &meta, converter)
    }

    fn append_with_meta(
        &mut self,
        dir: BorrowedFd<'_>,
        name: &CStr,
        rel: &[u8],
        meta: &Meta,
        converter: &mut dyn EntryConverter,
    ) -> io::Result<()> {
        let Some(header) = self.header_for(dir, name, rel, meta)? else {
            tracing::warn!(path = %String::from_utf8_lossy(rel), "skipping socket: tar cannot hold it");
            return Ok(());
        };
        let entry = WalkEntry {
            dir,
            name,
            rel,
            meta,
        };
        let original_name = header.name.clone();
        let (mut header, extras) = match converter.convert(&entry, header)? {
            Converted::Write(h) => (h, Vec::new()),
            Converted::WriteThen(h, extras) => (h, extras),
            Converted::Skip => return Ok(()),
        };
        let unchanged = header.name == original_name;
        // Later names of a multiply-linked inode become hard links to the first one.
        if unchanged && header.kind != EntryKind::Directory && meta.nlink > 1 {
            match self.seen_inodes.get(&(meta.dev, meta.ino)) {
                Some(first) => {
                    header.kind = EntryKind::HardLink;
                    header.link_name = first.clone();
                    header.size = 0;
                }
                None => {
                    self.seen_inodes
                        .insert((meta.dev, meta.ino), header.name.clone());
                }
            }
        }
        if header.kind == EntryKind::Regular && header.size > 0 && unchanged {
            let fd = rustix::fs::openat(
                dir,
                name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let mut file = File::from(fd);
            self.writer.append(&header, Some(&mut file))?;
        } else {
            self.writer.append(&header, None)?;
        }
        for extra in &extras {
            self.writer.append(extra, None)?;
        }
        Ok(())
    }

    /// Archives everything below the directory `dir` (not `dir` itself), names prefixed with
    /// `prefix` (empty for the archive root), depth first in byte order of names.
    ///
    /// Iterative: a tree of any depth costs no stack, and only the directory being read
    /// is held open (a parent is reopened inside `dir` when the walk comes back to it).
    pub fn append_tree(
        &mut self,
        dir: BorrowedFd<'_>,
        prefix: &[u8],
        converter: &mut dyn EntryConverter,
    ) -> io::Result<()> {
        struct Frame {
            /// Path below `dir` (empty for `dir` itself), for entry names.
            rel: Vec<u8>,
            /// How to reopen the directory.
            at: safe_root::DirRef,
            children: Vec<std::ffi::CString>,
            next: usize,
            fd: Option<std::os::fd::OwnedFd>,
        }
        let join = |a: &[u8], b: &[u8]| -> Vec<u8> {
            let mut v = a.to_vec();
            if !v.is_empty() {
                v.push(b'/');
            }
            v.extend_from_slice(b);
            v
        };
        let mut stack = vec![Frame {
            rel: Vec::new(),
            at: safe_root::DirRef::root(),
            children: safe_root::list_dir(dir)?,
            next: 0,
            fd: None,
        }];
        while let Some(top) = stack.last_mut() {
            if top.next == top.children.len() {
                stack.pop();
                continue;
            }
            let child = top.children[top.next].clone();
            top.next += 1;
            if top.fd.is_none() && !top.rel.is_empty() {
                top.fd = Some(top.at.open(dir)?);
            }
            let dir_fd = top.fd.as_ref().map(|f| f.as_fd()).unwrap_or(dir);
            let rel_in_dir = join(&top.rel, child.to_bytes());
            let name = join(prefix, &rel_in_dir);
            let meta = match lstat_at(dir_fd, &child) {
                Ok(m) => m,
                // Vanished since the listing: nothing to archive.
                Err(e) if safe_root::errno_of(&e) == Some(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(e),
            };
            self.append_with_meta(dir_fd, &child, &name, &meta, converter)?;
            if meta.is_dir() {
                let sub = safe_root::open_dir_at(dir_fd, &child)?;
                let children = safe_root::list_dir(sub.as_fd())?;
                let at = top.at.child(dir, child.to_bytes())?;
                // Keep at most the current directory open.
                top.fd = None;
                stack.push(Frame {
                    rel: rel_in_dir,
                    at,
                    children,
                    next: 0,
                    fd: Some(sub),
                });
            }
        }
        Ok(())
    }
}

/// File capabilities of revision 3 carry a namespace root uid that only means something on
/// the host that wrote them; like moby, archive them as revision 2 (the first 20 bytes,
/// with the revision field rewritten and the effective flag kept).
fn capability_as_v2(mut value: Vec<u8>) -> Vec<u8> {
    const REVISION_MASK: u32 = 0xFF00_0000;
    const REVISION_2: u32 = 0x0200_0000;
    const REVISION_3: u32 = 0x0300_0000;
    if value.len() == 24 {
        let magic = u32::from_le_bytes([value[0], value[1], value[2], value[3]]);
        if magic & REVISION_MASK == REVISION_3 {
            let converted = (magic & !REVISION_MASK) | REVISION_2;
            value[..4].copy_from_slice(&converted.to_le_bytes());
            value.truncate(20);
        }
    }
    value
}

/// Tars the whole tree under `src` (the root itself is not an entry) into `out`.
pub fn tar_directory<W: Write>(
    src: &Path,
    out: W,
    options: &WalkOptions,
    converter: &mut dyn EntryConverter,
) -> io::Result<W> {
    let root = safe_root::SafeRoot::open(src).map_err(safe_root::Error::into_io_error)?;
    let mut builder = TarBuilder::new(out, *options);
    builder.append_tree(root.root_fd(), b"", converter)?;
    builder.finish()
}

/// A whiteout entry deleting `rel` (`dir/.wh.name`): empty regular file, mode 0, owner 0:0,
/// mtime 0 (fixed so that exports are reproducible).
pub fn whiteout_header(rel: &[u8]) -> io::Result<Header> {
    let (dir, base) = match rel.iter().rposition(|&b| b == b'/') {
        Some(i) => (&rel[..=i], &rel[i + 1..]),
        None => (&rel[..0], rel),
    };
    component(base)?;
    let mut name = dir.to_vec();
    name.extend_from_slice(super::WHITEOUT_PREFIX.as_bytes());
    name.extend_from_slice(base);
    let mut h = Header::file(name, 0);
    h.mode = 0;
    Ok(h)
}

#[cfg(test)]
mod tests {
    use super::capability_as_v2;

    #[test]
    fn v3_capabilities_become_v2() {
        let mut v3 = vec![0u8; 24];
        v3[..4].copy_from_slice(&0x0300_0001u32.to_le_bytes()); // v3, effective
        v3[4] = 0x20;
        v3[20] = 7; // rootid
        let v2 = capability_as_v2(v3);
        assert_eq!(v2.len(), 20);
        assert_eq!(
            u32::from_le_bytes([v2[0], v2[1], v2[2], v2[3]]),
            0x0200_0001
        );
        assert_eq!(v2[4], 0x20);
        let already_v2 = vec![0, 0, 0, 2, 1, 2, 3, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        assert_eq!(capability_as_v2(already_v2.clone()), already_v2);
    }
}
