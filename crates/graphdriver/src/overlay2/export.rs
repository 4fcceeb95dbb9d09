//! The native diff: a streaming tar of a layer's upper dir in Docker's (AUFS) whiteout form.
//!
//! Entries come in Go `filepath.WalkDir` order (pre-order, names sorted bytewise) with the
//! headers Go's `archive/tar` writes for Docker's `TarWithOptions` (PAX format requested):
//! a plain ustar-magic block when everything fits, PAX records before it otherwise; mode with
//! the file-type bits; mtime truncated to the second; owner names looked up on the host.
//! Overlay's own markers are converted back:
//!
//! * a whiteout (char device 0/0) `d/name` becomes an empty regular file `d/.wh.name`, mode
//!   0600, keeping owner and mtime;
//! * an opaque directory (`trusted.overlay.opaque=y`) is followed by an empty regular file
//!   `dir/.wh..wh..opq` with the directory's permission bits and owner and a zero mtime.
//!
//! Under an ID mapping owners are mapped back host → container (whiteouts and `.wh.` names
//! excepted, as moby's tar appender does; owner *names* stay the host's, as Go looks them up
//! before the remap); with recorded owners they come from `user.containers.override_stat`.
//!
//! The tar is produced as the reader pulls: memory holds one header and one directory listing
//! at a time. Files are opened `O_NOFOLLOW` relative to their directory's descriptor, so a
//! container that swaps a directory for a symlink cannot make us read outside the layer.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use layer_archive::codec::field::{BLOCK, padding};
use layer_archive::codec::writer::encode_header;
use layer_archive::{EntryKind, Header, HeaderStyle, Time};
use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

use super::entries::{is_whiteout, sorted_names};
use super::features::read_xattr_at;
use crate::error::{Error, Result};
use crate::ownership::Ownership;
use layer_archive::override_stat::{OVERRIDE_STAT_XATTR, OverrideStat};
use safe_root::DirRef;

/// A directory being archived. Only the deepest frame holds its fd; the others are reopened
/// by name from `at` when the walk comes back to them, so a tree of any depth costs two
/// descriptors and no path longer than [`DirRef::MAX_REL`].
struct Frame {
    fd: Option<OwnedFd>,
    at: DirRef,
    rel: PathBuf,
    names: Vec<OsString>,
    next: usize,
}

/// A `Read` producing the tar of one upper dir.
pub(crate) struct UpperTar {
    id: String,
    root: PathBuf,
    root_fd: OwnedFd,
    opaque_name: String,
    stack: Vec<Frame>,
    pending: Vec<u8>,
    pending_pos: usize,
    file: Option<(File, PathBuf, u64, u64)>,
    hardlinks: HashMap<(u64, u64), Vec<u8>>,
    ownership: Ownership,
    done: bool,
}

impl std::fmt::Debug for UpperTar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpperTar")
            .field("id", &self.id)
            .field("root", &self.root)
            .finish()
    }
}

impl UpperTar {
    pub(crate) fn new(
        id: &str,
        upper: &Path,
        xattr_prefix: &str,
        ownership: &Ownership,
    ) -> Result<Self> {
        let fd = rustix::fs::open(
            upper,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("open", upper, e.into()))?;
        let names = sorted_names(&fd, upper)?;
        let root_fd = fd.try_clone().map_err(|e| Error::io("dup", upper, e))?;
        Ok(UpperTar {
            id: id.to_string(),
            root: upper.to_path_buf(),
            root_fd,
            opaque_name: format!("{xattr_prefix}opaque"),
            stack: vec![Frame {
                fd: Some(fd),
                at: DirRef::root(),
                rel: PathBuf::new(),
                names,
                next: 0,
            }],
            pending: Vec::with_capacity(4 * BLOCK),
            pending_pos: 0,
            file: None,
            hardlinks: HashMap::new(),
            ownership: ownership.clone(),
            done: false,
        })
    }

    fn fail(&self, what: String) -> io::Error {
        io::Error::other(Error::Other(format!(
            "overlay2: diff of layer {}: {what}",
            self.id
        )))
    }

    /// Queues the next entry's header(s) and opens its content. `false` at the end.
    fn next_entry(&mut self) -> Result<bool> {
        loop {
            let Some(frame) = self.stack.last_mut() else {
                return Ok(false);
            };
            if frame.next >= frame.names.len() {
                self.stack.pop();
                continue;
            }
            let name = frame.names[frame.next].clone();
            frame.next += 1;
            let rel = frame.rel.join(&name);
            // For messages only: never handed to a syscall (it may exceed PATH_MAX).
            let full = self.root.join(&rel);
            if frame.fd.is_none() {
                let fd = frame
                    .at
                    .open(self.root_fd.as_fd())
                    .map_err(|e| Error::io("open", self.root.join(&frame.rel), e))?;
                frame.fd = Some(fd);
            }
            let frame_fd = frame.fd.as_ref().expect("opened above");
            let st = match rustix::fs::statat(frame_fd, &name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                // Gone since the listing (a running container): it is simply not in the diff.
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(Error::io("lstat", full, e.into())),
            };
            let parent_fd = frame_fd;
            let mut header = header_from_stat(&st);
            match container_owner(&self.ownership, parent_fd, &full, &name, &st)? {
                Owner::OnDisk => {}
                // moby's names stay those of the host IDs (Go looks them up before the remap).
                Owner::Mapped(uid, gid) => (header.uid, header.gid) = (uid.into(), gid.into()),
                // The names go with the recorded owner, not with the one on disk.
                Owner::Recorded(uid, gid) => {
                    (header.uid, header.gid) = (uid.into(), gid.into());
                    header.uname = user_name(uid).into_bytes();
                    header.gname = group_name(gid).into_bytes();
                }
            }
            if !is_whiteout(&st)
                && let Some(cap) = read_xattr_at(parent_fd, &name, "security.capability")
            {
                header.xattrs.push((b"security.capability".to_vec(), cap));
            }
            let tar_name = rel.as_os_str().as_bytes().to_vec();
            let kind = FileType::from_raw_mode(st.st_mode);
            // Docker's hardlink bookkeeping covers every non-directory it archives (sockets are
            // skipped before it): a second name of an inode points at the first.
            let mut first_name = None;
            if kind != FileType::Directory && kind != FileType::Socket && st.st_nlink > 1 {
                #[allow(clippy::useless_conversion)]
                let key = (u64::from(st.st_dev), u64::from(st.st_ino));
                match self.hardlinks.get(&key) {
                    Some(first) => first_name = Some(first.clone()),
                    None => {
                        self.hardlinks.insert(key, tar_name.clone());
                    }
                }
            }
            let whiteout = is_whiteout(&st);
            if let (Some(first), false) = (&first_name, whiteout) {
                header.name = tar_name;
                header.kind = EntryKind::HardLink;
                header.link_name = first.clone();
                encode_header(&header, HeaderStyle::Docker, &mut self.pending);
                return Ok(true);
            }
            match kind {
                FileType::Directory => {
                    header.name = [tar_name.as_slice(), b"/"].concat();
                    header.kind = EntryKind::Directory;
                    encode_header(&header, HeaderStyle::Docker, &mut self.pending);
                    if read_xattr_at(parent_fd, &name, &self.opaque_name).as_deref() == Some(b"y") {
                        let mut opq = header.clone();
                        opq.name = [tar_name.as_slice(), b"/.wh..wh..opq"].concat();
                        opq.kind = EntryKind::Regular;
                        opq.mode = i64::from(st.st_mode as u32 & 0o777);
                        // Go's zero time, written as 0.
                        opq.mtime = Time::default();
                        encode_header(&opq, HeaderStyle::Docker, &mut self.pending);
                    }
                    let fd = rustix::fs::openat(
                        parent_fd,
                        &name,
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| Error::io("open", &full, e.into()))?;
                    let names = sorted_names(&fd, &full)?;
                    let frame = self.stack.last_mut().expect("the parent frame");
                    let at = frame
                        .at
                        .child(self.root_fd.as_fd(), name.as_bytes())
                        .map_err(|e| Error::io("open", &full, e))?;
                    // Hold only the deepest directory open.
                    frame.fd = None;
                    self.stack.push(Frame {
                        fd: Some(fd),
                        at,
                        rel,
                        names,
                        next: 0,
                    });
                }
                FileType::RegularFile => {
                    header.name = tar_name;
                    header.kind = EntryKind::Regular;
                    let fd = rustix::fs::openat(
                        parent_fd,
                        &name,
                        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| Error::io("open", &full, e.into()))?;
                    let size = st.st_size as u64;
                    header.size = size as i64;
                    encode_header(&header, HeaderStyle::Docker, &mut self.pending);
                    if size > 0 {
                        self.file = Some((File::from(fd), full, size, padding(size)));
                    }
                }
                FileType::Symlink => {
                    let target = rustix::fs::readlinkat(parent_fd, &name, Vec::new())
                        .map_err(|e| Error::io("readlink", &full, e.into()))?;
                    header.name = tar_name;
                    header.kind = EntryKind::Symlink;
                    header.link_name = target.into_bytes();
                    encode_header(&header, HeaderStyle::Docker, &mut self.pending);
                }
                FileType::CharacterDevice if whiteout => {
                    // The kernel makes whiteouts hard links of one shared inode. Docker runs its
                    // hardlink bookkeeping before the whiteout conversion, so every whiteout but
                    // the first keeps a link name pointing at the first one's original path
                    // (harmless on a regular file). Reproduced for byte-identical diffs.
                    if let Some(first) = first_name {
                        header.link_name = first;
                    }
                    let base = name.as_bytes();
                    let dir = frame_dir_prefix(&rel);
                    header.name = [dir.as_slice(), b".wh.", base].concat();
                    header.kind = EntryKind::Regular;
                    header.mode = 0o600;
                    encode_header(&header, HeaderStyle::Docker, &mut self.pending);
                }
                FileType::CharacterDevice | FileType::BlockDevice => {
                    header.name = tar_name;
                    header.kind =
                        if FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice {
                            EntryKind::CharDevice
                        } else {
                            EntryKind::BlockDevice
                        };
                    #[allow(clippy::useless_conversion)]
                    let rdev = u64::from(st.st_rdev);
                    header.dev_major = i64::from(rustix::fs::major(rdev));
                    header.dev_minor = i64::from(rustix::fs::minor(rdev));
                    encode_header(&header, HeaderStyle::Docker, &mut self.pending);
                }
                FileType::Fifo => {
                    header.name = tar_name;
                    header.kind = EntryKind::Fifo;
                    encode_header(&header, HeaderStyle::Docker, &mut self.pending);
                }
                // Docker skips sockets (and tar cannot hold them).
                _ => continue,
            }
            return Ok(true);
        }
    }
}

/// Which owner an entry is archived with.
enum Owner {
    /// The one on disk.
    OnDisk,
    /// The on-disk owner mapped back to the container's IDs.
    Mapped(u32, u32),
    /// The owner recorded in `user.containers.override_stat`.
    Recorded(u32, u32),
}

/// The owner to write for an entry (see [`Owner`]).
fn container_owner(
    ownership: &Ownership,
    dir: &OwnedFd,
    full: &Path,
    name: &OsString,
    st: &Stat,
) -> Result<Owner> {
    let kind = FileType::from_raw_mode(st.st_mode);
    if ownership.records_owners()
        && matches!(kind, FileType::RegularFile | FileType::Directory)
        && let Some(value) = read_xattr_at(dir, name, OVERRIDE_STAT_XATTR)
    {
        let st: OverrideStat = std::str::from_utf8(&value)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                Error::Other(format!(
                    "{}: malformed {OVERRIDE_STAT_XATTR} {:?}",
                    full.display(),
                    String::from_utf8_lossy(&value)
                ))
            })?;
        return Ok(Owner::Recorded(st.uid, st.gid));
    }
    if ownership.is_identity() || is_whiteout(st) || name.as_bytes().starts_with(b".wh.") {
        return Ok(Owner::OnDisk);
    }
    #[allow(clippy::unnecessary_cast)]
    let (uid, gid) = (st.st_uid as u32, st.st_gid as u32);
    ownership
        .id_map()
        .to_container(uid, gid)
        .map(|(uid, gid)| Owner::Mapped(uid, gid))
        .map_err(|e| Error::Other(format!("{}: {e}", full.display())))
}

fn frame_dir_prefix(rel: &Path) -> Vec<u8> {
    match rel.parent() {
        Some(p) if !p.as_os_str().is_empty() => [p.as_os_str().as_bytes(), b"/"].concat(),
        _ => Vec::new(),
    }
}

impl Read for UpperTar {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.pending_pos < self.pending.len() {
                let n = (self.pending.len() - self.pending_pos).min(buf.len());
                buf[..n].copy_from_slice(&self.pending[self.pending_pos..self.pending_pos + n]);
                self.pending_pos += n;
                if self.pending_pos == self.pending.len() {
                    self.pending.clear();
                    self.pending_pos = 0;
                }
                return Ok(n);
            }
            if let Some((file, path, remaining, pad)) = &mut self.file {
                let want = (*remaining).min(buf.len() as u64) as usize;
                let n = file.read(&mut buf[..want])?;
                if n == 0 {
                    let msg = format!(
                        "{} shrank while being read ({} bytes missing)",
                        path.display(),
                        remaining
                    );
                    return Err(self.fail(msg));
                }
                *remaining -= n as u64;
                if *remaining == 0 {
                    self.pending.resize(*pad as usize, 0);
                    self.file = None;
                }
                return Ok(n);
            }
            if self.done {
                return Ok(0);
            }
            match self.next_entry() {
                Ok(true) => {}
                Ok(false) => {
                    self.pending.resize(2 * BLOCK, 0);
                    self.done = true;
                }
                Err(e) => return Err(io::Error::other(e)),
            }
        }
    }
}

/// A header as Docker's archiver fills it from `lstat` (Go's `FileInfoHeader`): the whole
/// `st_mode`, owner ids and names, mtime truncated to the second (Docker forces PAX so Go
/// does not round), written by the codec in [`HeaderStyle::Docker`].
#[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
fn header_from_stat(st: &Stat) -> Header {
    let mut h = Header::new(Vec::new(), EntryKind::Regular);
    h.mode = i64::from(st.st_mode as u32);
    h.uid = i64::from(st.st_uid as u32);
    h.gid = i64::from(st.st_gid as u32);
    h.mtime = Time::from_secs(st.st_mtime as i64);
    h.uname = user_name(st.st_uid as u32).into_bytes();
    h.gname = group_name(st.st_gid as u32).into_bytes();
    h
}

fn id_names(file: &str) -> HashMap<u32, String> {
    let mut out = HashMap::new();
    if let Ok(text) = std::fs::read_to_string(file) {
        for line in text.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() > 2
                && let Ok(id) = fields[2].parse::<u32>()
            {
                out.entry(id).or_insert_with(|| fields[0].to_string());
            }
        }
    }
    out
}

/// The host's name for a uid, as Go's `archive/tar` looks it up (empty when unknown).
fn user_name(uid: u32) -> String {
    static USERS: OnceLock<HashMap<u32, String>> = OnceLock::new();
    USERS
        .get_or_init(|| id_names("/etc/passwd"))
        .get(&uid)
        .cloned()
        .unwrap_or_default()
}

fn group_name(gid: u32) -> String {
    static GROUPS: OnceLock<HashMap<u32, String>> = OnceLock::new();
    GROUPS
        .get_or_init(|| id_names("/etc/group"))
        .get(&gid)
        .cloned()
        .unwrap_or_default()
}
