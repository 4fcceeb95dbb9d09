//! Directory times, set as the applier leaves each directory.
//!
//! Adding or removing a child changes a directory's mtime, so a directory's header times can
//! only be set once nothing more is written into it. moby keeps every directory's header
//! until the end of the layer; that holds every name at once (100k directories with 3.9 KB
//! names: 390 MB). Here only the directories on the path of the current entry are pending,
//! a stack as deep as that path: when an entry is not below a pending directory, the
//! directory is left and its times set then.
//!
//! A tar may come back to a directory it left (entries need not be in walk order). Such a
//! directory is entered again with its *current* times (those set when it was left) as the
//! ones to restore, so what the new children change is undone when it is left again: the
//! end result is the one moby's set-everything-at-the-end gives.
//!
//! Setting times needs the directory, and reopening a path of 2,000 levels from the root for
//! each of 2,000 directories is quadratic. The deepest pending directory's fd is held; a
//! directory reached while leaving several levels at once is its child's `..`, used only if
//! it is the very directory (device, inode) seen when it was entered. Anything else is
//! reopened by name inside the root. So at most two descriptors are held, at any depth.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use rustix::fs::{AtFlags, Mode, OFlags, Timestamps};

use safe_root::SafeRoot;

/// One pending directory: a prefix of the current path.
struct Level {
    /// End of this level's name in [`PendingDirs::path`].
    end: usize,
    /// Times to set when leaving, `None` for a directory this layer has no header for (a
    /// lower layer's, an implied one): moby leaves those as the writes left them.
    times: Option<Timestamps>,
    /// (device, inode) when known: what a `..` must be to stand for this level.
    id: Option<(u64, u64)>,
    /// Held for the deepest level only.
    fd: Option<Arc<OwnedFd>>,
}

/// The directories on the path of the entry being applied. See the module doc.
pub(super) struct PendingDirs {
    /// The deepest pending directory's name (empty: the root).
    path: Vec<u8>,
    /// Level 0 is the root.
    levels: Vec<Level>,
}

impl PendingDirs {
    pub(super) fn new() -> Self {
        PendingDirs {
            path: Vec::new(),
            levels: vec![Level {
                end: 0,
                times: None,
                id: None,
                fd: None,
            }],
        }
    }

    /// The root's own times (a `./` entry of the plain flavour).
    pub(super) fn set_root_times(&mut self, times: Timestamps) {
        self.levels[0].times = Some(times);
    }

    /// Makes `dir` (a cleaned name, empty for the root) the deepest pending directory:
    /// leaves (sets the times of) every pending directory not on its path, then enters the
    /// missing levels. `reentered(name)` says whether a level is a directory this layer
    /// already set times on (then its current times are read and kept).
    pub(super) fn enter(&mut self, root: &SafeRoot, dir: &[u8], reentered: &dyn Fn(&[u8]) -> bool) {
        // How many levels of the current path are a prefix of `dir`: one comparison of the
        // two paths, then O(1) per level (comparing each level's prefix anew was O(depth²)
        // bytes per entry, a quarter of a 2,048-level import).
        let common = common_prefix_len(dir, &self.path);
        let mut keep = 1;
        while keep < self.levels.len() {
            let end = self.levels[keep].end;
            let is_prefix = end <= common && (dir.len() == end || dir[end] == b'/');
            if !is_prefix {
                break;
            }
            keep += 1;
        }
        self.leave_to(root, keep);
        // Enter what is missing, one component at a time.
        let mut end = self.path.len();
        while end < dir.len() {
            let start = if end == 0 { 0 } else { end + 1 };
            let next = dir[start..]
                .iter()
                .position(|&b| b == b'/')
                .map_or(dir.len(), |i| start + i);
            let name = &dir[..next];
            let (times, id) = if reentered(name) {
                match current_times(root, name) {
                    Some((t, id)) => (Some(t), Some(id)),
                    None => (None, None),
                }
            } else {
                (None, None)
            };
            self.push(name, times, id, None);
            end = next;
        }
    }

    /// Enters `dir`, a child of the deepest pending directory, just created or merged by a
    /// directory entry, with that entry's times; `fd` is the directory.
    pub(super) fn enter_new(&mut self, dir: &[u8], times: Timestamps, fd: Arc<OwnedFd>) {
        let id = safe_root::fstat(fd.as_fd()).ok().map(|m| (m.dev, m.ino));
        self.push(dir, Some(times), id, Some(fd));
    }

    /// Hands the deepest pending directory's fd over, when the caller has it (the applier's
    /// parent directory), so that leaving it needs no lookup.
    pub(super) fn offer_fd(&mut self, dir: &[u8], fd: &Arc<OwnedFd>) {
        let top = self
            .levels
            .last_mut()
            .expect("the root level is never left");
        if top.fd.is_none() && self.path.as_slice() == dir {
            if top.id.is_none() {
                top.id = safe_root::fstat(fd.as_fd()).ok().map(|m| (m.dev, m.ino));
            }
            top.fd = Some(fd.clone());
        }
    }

    /// Leaves every directory, the root last (the end of the layer).
    pub(super) fn finish(&mut self, root: &SafeRoot) {
        self.leave_to(root, 1);
        let level = self.levels.pop().expect("the root level");
        if let Some(times) = level.times {
            set_times(root.root_fd(), &[], &times);
        }
        *self = PendingDirs::new();
    }

    fn push(
        &mut self,
        name: &[u8],
        times: Option<Timestamps>,
        id: Option<(u64, u64)>,
        fd: Option<Arc<OwnedFd>>,
    ) {
        // Only the deepest level holds its fd.
        let depth = self.levels.len();
        if let Some(top) = self.levels.last_mut()
            && depth > 1
        {
            top.fd = None;
        }
        self.path.clear();
        self.path.extend_from_slice(name);
        self.levels.push(Level {
            end: name.len(),
            times,
            id,
            fd,
        });
    }

    /// Leaves levels until `keep` remain.
    fn leave_to(&mut self, root: &SafeRoot, keep: usize) {
        // The fd of the level being left, to reach its parent by `..`.
        let mut below: Option<Arc<OwnedFd>> = None;
        while self.levels.len() > keep {
            let level = self.levels.pop().expect("more levels than kept");
            let name = &self.path[..level.end];
            let fd = level.fd.or_else(|| {
                let parent = below.take()?;
                let dotdot = rustix::fs::openat(
                    parent.as_fd(),
                    "..",
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .ok()?;
                let meta = safe_root::fstat(dotdot.as_fd()).ok()?;
                (level.id == Some((meta.dev, meta.ino))).then(|| Arc::new(dotdot))
            });
            if let Some(times) = &level.times {
                match &fd {
                    Some(fd) => {
                        if let Err(e) = rustix::fs::futimens(fd.as_fd(), times) {
                            warn(name, &e.into());
                        }
                    }
                    // The directory may have been replaced later in the layer: skip it then.
                    None => set_times(root.root_fd(), name, times),
                }
            }
            below = fd;
            let parent_end = self.levels.last().map_or(0, |l| l.end);
            self.path.truncate(parent_end);
        }
        // The level now deepest keeps the `..` found on the way up, if it is that directory.
        let depth = self.levels.len();
        if let (Some(fd), Some(top)) = (below, self.levels.last_mut())
            && depth > 1
            && top.fd.is_none()
            && top.id.is_some()
        {
            let parent = rustix::fs::openat(
                fd.as_fd(),
                "..",
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            );
            if let Ok(parent) = parent
                && safe_root::fstat(parent.as_fd()).is_ok_and(|m| top.id == Some((m.dev, m.ino)))
            {
                top.fd = Some(Arc::new(parent));
            }
        }
    }
}

/// The current times and identity of directory `name` inside the root.
fn current_times(root: &SafeRoot, name: &[u8]) -> Option<(Timestamps, (u64, u64))> {
    let fd = root
        .open_in_root(name, OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW)
        .ok()?;
    let st = rustix::fs::fstat(&fd).ok()?;
    let spec = |sec: i64, nsec: u64| rustix::fs::Timespec {
        tv_sec: sec,
        tv_nsec: nsec as _,
    };
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    let times = Timestamps {
        last_access: spec(st.st_atime as i64, st.st_atime_nsec as u64),
        last_modification: spec(st.st_mtime as i64, st.st_mtime_nsec as u64),
    };
    #[allow(clippy::useless_conversion)]
    Some((times, (u64::from(st.st_dev), u64::from(st.st_ino))))
}

/// Sets the times of directory `name` (empty: the root), reopened inside the root, not
/// through a final symlink.
fn set_times(root: std::os::fd::BorrowedFd<'_>, name: &[u8], times: &Timestamps) {
    let Ok(fd) = safe_root::open_beneath(
        root,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW,
    ) else {
        return;
    };
    if let Err(e) = rustix::fs::utimensat(
        rustix::fs::CWD,
        &*safe_root::proc_fd_path(fd.as_fd(), None),
        times,
        AtFlags::empty(),
    ) {
        warn(name, &e.into());
    }
}

fn warn(name: &[u8], e: &std::io::Error) {
    tracing::warn!(dir = %String::from_utf8_lossy(name), error = %e, "could not restore directory times");
}

/// How many leading bytes `a` and `b` share, compared 64 bytes at a time (a deep tree's
/// entries share kilobytes of path with the one before).
fn common_prefix_len(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut i = 0;
    while i + 64 <= n && a[i..i + 64] == b[i..i + 64] {
        i += 64;
    }
    i + a[i..]
        .iter()
        .zip(&b[i..])
        .take_while(|(x, y)| x == y)
        .count()
}
