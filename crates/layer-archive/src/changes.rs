//! The changes between two trees (moby `ChangesDirs`) and their size (`ChangesSize`).
//!
//! Both trees are walked in parallel, in name order, over directory fds. A path missing in
//! the old tree is an Add, missing in the new one a Delete (children of a deleted dir are not
//! listed), present in both but different a Modify; a directory with changes below it gets a
//! Modify of its own. Entries with the same device and inode in both trees are the same
//! file (overlay lower layers, hardlinked copies) and are pruned with their subtree.
//!
//! **mtime precision.** moby compares mtimes with `sameFsTime` (equal, or the same second
//! when either side has zero nanoseconds, because trees extracted from tars only have whole
//! seconds) and its naive `Diff` sleeps to the next whole second so that a later rewrite
//! cannot fall into the same second as the extraction. We do it exactly instead:
//!
//! 1. mtimes are compared to the nanosecond. Copies keep nanosecond mtimes (vfs sets them
//!    with `utimensat`), tars applied by us restore the PAX nanoseconds they carry, and our
//!    exports write them, so an untouched file always compares equal.
//! 2. The kernel stamps writes with a *coarse* clock (one scheduler tick, 1–10 ms, unless
//!    the filesystem has multigrain timestamps), and some filesystems store whole seconds.
//!    So a same-size rewrite made within the same tick as the original's last write keeps
//!    the very same mtime: this is the one case where precision is lost, and stat data
//!    cannot tell it from an untouched copy. It can only happen to a file created (copied)
//!    less than a tick after the mtime it carries. We detect exactly that window: when all
//!    stat data is equal, we look at the new file's birth time (`statx` btime, or ctime
//!    where btime is missing) and, if it is within [`AMBIGUITY_WINDOW_NS`] of the mtime,
//!    compare the two files' contents. Old files never pay for this; fresh ones pay one
//!    read of equal-sized files, instead of everyone paying a sleep.
//!
//! Directory mtimes and sizes are ignored, as in moby (moby/moby#9874): they change
//! whenever a child does.

use std::collections::HashSet;
use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::change::{Change, ChangeKind};
use safe_root::SafeRoot;
use safe_root::{DirRef, Meta, lstat_at};

/// The changes of `new` against `old` (`None`: against an empty tree), sorted by path.
pub fn changes_dirs(new: &Path, old: Option<&Path>) -> io::Result<Vec<Change>> {
    let new_root = SafeRoot::open(new).map_err(safe_root::Error::into_io_error)?;
    let old_root = old
        .map(SafeRoot::open)
        .transpose()
        .map_err(safe_root::Error::into_io_error)?;
    let mut out = Vec::new();
    compare_dirs(
        new_root.root_fd(),
        old_root.as_ref().map(|r| r.root_fd()),
        &mut out,
    )?;
    out.sort_by(|a, b| {
        a.path
            .as_os_str()
            .as_bytes()
            .cmp(b.path.as_os_str().as_bytes())
    });
    Ok(out)
}

fn change(prefix: &[u8], name: &CStr, kind: ChangeKind) -> Change {
    let mut p = prefix.to_vec();
    p.push(b'/');
    p.extend_from_slice(name.to_bytes());
    Change {
        path: PathBuf::from(OsStr::from_bytes(&p)),
        kind,
    }
}

/// Work items of the comparison walk (iterative, so that depth costs no stack and only two
/// directory fds are open at a time; directories are reopened inside their roots).
enum Step {
    /// Compare directory `rel` (`/a/b`, empty for the root), found at `new` and, if it is
    /// a directory in the old tree too, `old`.
    Enter {
        rel: Vec<u8>,
        new: DirRef,
        old: Option<DirRef>,
    },
    /// After `rel`'s subtree: give it a Modify if something below changed and it has none.
    Finish {
        rel: Vec<u8>,
        start: usize,
        modified: bool,
    },
}

/// Compares the trees under `new` and `old` (`None`: empty), appending changes to `out`.
fn compare_dirs(
    new: BorrowedFd<'_>,
    old: Option<BorrowedFd<'_>>,
    out: &mut Vec<Change>,
) -> io::Result<()> {
    let mut stack = vec![Step::Enter {
        rel: Vec::new(),
        new: DirRef::root(),
        old: old.map(|_| DirRef::root()),
    }];
    while let Some(step) = stack.pop() {
        let (prefix, (new_ref, old_ref)) = match step {
            Step::Finish {
                rel,
                start,
                modified,
            } => {
                if out.len() > start && !modified {
                    out.push(Change {
                        path: PathBuf::from(OsStr::from_bytes(&rel)),
                        kind: ChangeKind::Modify,
                    });
                }
                continue;
            }
            Step::Enter { rel, new, old } => (rel, (new, old)),
        };
        // The subtree of this directory starts now: tell its Finish, if it has one.
        if let Some(Step::Finish { start, .. }) = stack.last_mut()
            && *start == usize::MAX
        {
            *start = out.len();
        }
        let new_dir = new_ref.open(new)?;
        let old_dir = match (&old_ref, old) {
            (Some(r), Some(root)) => Some(r.open(root)?),
            _ => None,
        };
        let new_fd = new_dir.as_fd();
        let new_names = safe_root::list_dir(new_fd)?;
        let old_names = match &old_dir {
            Some(fd) => safe_root::list_dir(fd.as_fd())?,
            None => Vec::new(),
        };
        let mut subdirs: Vec<Vec<Step>> = Vec::new();
        let (mut i, mut j) = (0, 0);
        while i < new_names.len() || j < old_names.len() {
            let order = match (new_names.get(i), old_names.get(j)) {
                (Some(a), Some(b)) => a.as_c_str().cmp(b.as_c_str()),
                (Some(_), None) => std::cmp::Ordering::Less,
                _ => std::cmp::Ordering::Greater,
            };
            match order {
                std::cmp::Ordering::Less => {
                    let name = &new_names[i];
                    i += 1;
                    let Some(meta) = stat_or_gone(new_fd, name)? else {
                        continue;
                    };
                    out.push(change(&prefix, name, ChangeKind::Add));
                    if meta.is_dir() {
                        subdirs.push(vec![Step::Enter {
                            rel: child_prefix(&prefix, name),
                            new: new_ref.child(new, name.to_bytes())?,
                            old: None,
                        }]);
                    }
                }
                std::cmp::Ordering::Greater => {
                    out.push(change(&prefix, &old_names[j], ChangeKind::Delete));
                    j += 1;
                }
                std::cmp::Ordering::Equal => {
                    let name = &new_names[i];
                    i += 1;
                    j += 1;
                    // A name can only match when the old directory was listed.
                    let Some(old_fd) = old_dir.as_ref().map(|f| f.as_fd()) else {
                        continue;
                    };
                    let Some(new_meta) = stat_or_gone(new_fd, name)? else {
                        out.push(change(&prefix, name, ChangeKind::Delete));
                        continue;
                    };
                    let Some(old_meta) = stat_or_gone(old_fd, name)? else {
                        out.push(change(&prefix, name, ChangeKind::Add));
                        continue;
                    };
                    if new_meta.dev == old_meta.dev && new_meta.ino == old_meta.ino {
                        continue;
                    }
                    let differs = entry_differs(new_fd, old_fd, name, &new_meta, &old_meta)?;
                    if differs {
                        out.push(change(&prefix, name, ChangeKind::Modify));
                    }
                    if new_meta.is_dir() {
                        let rel = child_prefix(&prefix, name);
                        // Finish runs after the subtree: it sits right below its Enter.
                        subdirs.push(vec![
                            Step::Finish {
                                rel: rel.clone(),
                                start: usize::MAX,
                                modified: differs,
                            },
                            Step::Enter {
                                rel,
                                new: new_ref.child(new, name.to_bytes())?,
                                old: match (&old_ref, old) {
                                    (Some(r), Some(root)) if old_meta.is_dir() => {
                                        Some(r.child(root, name.to_bytes())?)
                                    }
                                    _ => None,
                                },
                            },
                        ]);
                    }
                }
            }
        }
        // Push in reverse so directories are visited in name order; each group is
        // [Finish, Enter] so that a Finish sits right below its Enter.
        for group in subdirs.into_iter().rev() {
            stack.extend(group);
        }
    }
    Ok(())
}

fn child_prefix(prefix: &[u8], name: &CStr) -> Vec<u8> {
    let mut p = prefix.to_vec();
    p.push(b'/');
    p.extend_from_slice(name.to_bytes());
    p
}

fn stat_or_gone(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Option<Meta>> {
    match lstat_at(dir, name) {
        Ok(m) => Ok(Some(m)),
        Err(e) if safe_root::errno_of(&e) == Some(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e),
    }
}

/// moby's `statDifferent` with exact mtimes (see the module doc), plus the symlink target
/// and the `security.capability` xattr.
fn entry_differs(
    new_dir: BorrowedFd<'_>,
    old_dir: BorrowedFd<'_>,
    name: &CStr,
    new: &Meta,
    old: &Meta,
) -> io::Result<bool> {
    if new.file_type != old.file_type
        || new.perm != old.perm
        || new.uid != old.uid
        || new.gid != old.gid
        || new.rdev != old.rdev
    {
        return Ok(true);
    }
    if !new.is_dir()
        && (new.size != old.size
            || new.mtime_sec != old.mtime_sec
            || new.mtime_nsec != old.mtime_nsec)
    {
        return Ok(true);
    }
    if new.is_symlink() {
        return Ok(
            safe_root::read_link_at(new_dir, name)? != safe_root::read_link_at(old_dir, name)?
        );
    }
    let cap = c"security.capability";
    if safe_root::get_xattr_at(new_dir, name, cap)? != safe_root::get_xattr_at(old_dir, name, cap)?
    {
        return Ok(true);
    }
    if new.file_type == rustix::fs::FileType::RegularFile && born_near_mtime(new_dir, name, new)? {
        return contents_differ(new_dir, old_dir, name);
    }
    Ok(false)
}

/// Wider than any timestamp granularity we know of (coarse clock ticks, whole-second
/// filesystems), so that every ambiguous file is caught.
pub const AMBIGUITY_WINDOW_NS: i128 = 2_000_000_000;

/// Whether the file was created (or last had its inode changed, without btime) so soon
/// after the mtime it carries that a rewrite could have kept that mtime. See the module doc.
fn born_near_mtime(dir: BorrowedFd<'_>, name: &CStr, meta: &Meta) -> io::Result<bool> {
    use rustix::fs::{AtFlags, StatxFlags};
    let stx = match rustix::fs::statx(
        dir,
        name,
        AtFlags::SYMLINK_NOFOLLOW,
        StatxFlags::BTIME | StatxFlags::CTIME,
    ) {
        Ok(stx) => stx,
        // No statx at all: assume the worst and compare contents.
        Err(rustix::io::Errno::NOSYS) => return Ok(true),
        Err(e) => return Err(e.into()),
    };
    let born = if stx.stx_mask & StatxFlags::BTIME.bits() != 0 {
        stx.stx_btime
    } else {
        stx.stx_ctime
    };
    let ns = |sec: i64, nsec: u32| i128::from(sec) * 1_000_000_000 + i128::from(nsec);
    Ok(ns(born.tv_sec, born.tv_nsec) - ns(meta.mtime_sec, meta.mtime_nsec) < AMBIGUITY_WINDOW_NS)
}

/// Byte comparison of two regular files of equal size.
fn contents_differ(
    new_dir: BorrowedFd<'_>,
    old_dir: BorrowedFd<'_>,
    name: &CStr,
) -> io::Result<bool> {
    use rustix::fs::{Mode, OFlags};
    use std::io::Read;
    let open = |dir| -> io::Result<std::fs::File> {
        let fd = rustix::fs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(std::fs::File::from(fd))
    };
    let (mut a, mut b) = (open(new_dir)?, open(old_dir)?);
    let (mut buf_a, mut buf_b) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = read_full(&mut a, &mut buf_a)?;
        let m = read_full(&mut b, &mut buf_b)?;
        if n != m || buf_a[..n] != buf_b[..m] {
            return Ok(true);
        }
        if n == 0 {
            return Ok(false);
        }
    }
    fn read_full(f: &mut std::fs::File, buf: &mut [u8]) -> io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match f.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(filled)
    }
}

/// The size of `changes` in `dir`: the sizes of added and modified non-directories, each
/// inode counted once (moby `ChangesSize`). Paths that vanished are skipped.
pub fn changes_size(dir: &Path, changes: &[Change]) -> io::Result<u64> {
    let mut root = SafeRoot::open(dir).map_err(safe_root::Error::into_io_error)?;
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut total = 0u64;
    for c in changes {
        if c.kind == ChangeKind::Delete {
            continue;
        }
        let Some((parent, base)) = split_change_path(&c.path) else {
            continue;
        };
        let Ok(parent_fd) = root.open_dir(parent) else {
            continue;
        };
        let Ok(base) = safe_root::component(base) else {
            continue;
        };
        let Some(meta) = stat_or_gone(parent_fd.as_fd(), &base)? else {
            continue;
        };
        if meta.is_dir() {
            continue;
        }
        if meta.nlink > 1 && !seen.insert((meta.dev, meta.ino)) {
            continue;
        }
        total += meta.size;
    }
    Ok(total)
}

/// `/a/b/c` → (`a/b`, `c`); `None` for `/`.
pub(crate) fn split_change_path(path: &Path) -> Option<(&[u8], &[u8])> {
    let bytes = path.as_os_str().as_bytes();
    let bytes = bytes.strip_prefix(b"/").unwrap_or(bytes);
    if bytes.is_empty() {
        return None;
    }
    Some(match bytes.iter().rposition(|&b| b == b'/') {
        Some(i) => (&bytes[..i], &bytes[i + 1..]),
        None => (&bytes[..0], bytes),
    })
}
