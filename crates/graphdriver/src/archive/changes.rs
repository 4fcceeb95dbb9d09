//! The changes between two trees (moby `ChangesDirs`) and their size (`ChangesSize`).
//!
//! Both trees are walked in parallel, in name order, over directory fds. A path missing in
//! the old tree is an Add, missing in the new one a Delete (children of a deleted dir are not
//! listed), present in both but different a Modify; a directory with changes below it gets a
//! Modify of its own. Entries with the same device and inode in both trees are the same
//! file (overlay lower layers, hardlinked copies) and are pruned with their subtree.
//!
//! **mtime precision.** moby compares mtimes with `sameFsTime`: equal, or the same second
//! when either side has zero nanoseconds, because trees extracted from tars only have whole
//! seconds. That tolerance hides real changes: a layer extracted at `T.0` and then rewritten
//! (same size) within second `T` looks unchanged, which is why moby's naive `Diff` sleeps to
//! the next whole second before returning. We compare the full nanosecond mtime instead. It is
//! exact for every case the drivers produce: a vfs copy keeps nanosecond mtimes (set with
//! `utimensat`), a tar applied by us restores the PAX nanoseconds it carries, and any write
//! through the kernel stamps the current time at the filesystem's granularity (1 ns on
//! ext4, xfs, btrfs and tmpfs). The one case where precision is really lost is a filesystem
//! with coarse timestamps, where a same-size rewrite within one tick keeps the old mtime:
//! there size, mode, owner and (for symlinks) the target still count, and we accept that
//! residue rather than sleeping. Directory mtimes and sizes are ignored, as in moby
//! (moby/moby#9874): they change whenever a child does.

use std::collections::HashSet;
use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crate::change::{Change, ChangeKind};
use crate::fsutil::{self, Meta, lstat_at};
use crate::safe_root::SafeRoot;

/// The changes of `new` against `old` (`None`: against an empty tree), sorted by path.
pub fn changes_dirs(new: &Path, old: Option<&Path>) -> io::Result<Vec<Change>> {
    let new_root = SafeRoot::open(new)?;
    let old_root = old.map(SafeRoot::open).transpose()?;
    let mut out = Vec::new();
    compare_dirs(
        new_root.root_fd(),
        old_root.as_ref().map(|r| r.root_fd()),
        b"",
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

/// Compares two directories; returns whether anything below them changed.
fn compare_dirs(
    new: BorrowedFd<'_>,
    old: Option<BorrowedFd<'_>>,
    prefix: &[u8],
    out: &mut Vec<Change>,
) -> io::Result<bool> {
    let new_names = fsutil::list_dir(new)?;
    let old_names = match old {
        Some(fd) => fsutil::list_dir(fd)?,
        None => Vec::new(),
    };
    let mut changed = false;
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
                let Some(meta) = stat_or_gone(new, name)? else {
                    continue;
                };
                out.push(change(prefix, name, ChangeKind::Add));
                changed = true;
                if meta.is_dir() {
                    let sub = fsutil::open_dir_at(new, name)?;
                    compare_dirs(sub.as_fd(), None, &child_prefix(prefix, name), out)?;
                }
            }
            std::cmp::Ordering::Greater => {
                out.push(change(prefix, &old_names[j], ChangeKind::Delete));
                changed = true;
                j += 1;
            }
            std::cmp::Ordering::Equal => {
                let name = &new_names[i];
                i += 1;
                j += 1;
                let old_fd = old.expect("a name matched in the old tree");
                let Some(new_meta) = stat_or_gone(new, name)? else {
                    out.push(change(prefix, name, ChangeKind::Delete));
                    changed = true;
                    continue;
                };
                let Some(old_meta) = stat_or_gone(old_fd, name)? else {
                    out.push(change(prefix, name, ChangeKind::Add));
                    changed = true;
                    continue;
                };
                if new_meta.dev == old_meta.dev && new_meta.ino == old_meta.ino {
                    continue;
                }
                let differs = entry_differs(new, old_fd, name, &new_meta, &old_meta)?;
                let at = out.len();
                if differs {
                    out.push(change(prefix, name, ChangeKind::Modify));
                    changed = true;
                }
                if new_meta.is_dir() {
                    let sub_new = fsutil::open_dir_at(new, name)?;
                    let sub_old: Option<OwnedFd> = if old_meta.is_dir() {
                        Some(fsutil::open_dir_at(old_fd, name)?)
                    } else {
                        None
                    };
                    let below = compare_dirs(
                        sub_new.as_fd(),
                        sub_old.as_ref().map(|f| f.as_fd()),
                        &child_prefix(prefix, name),
                        out,
                    )?;
                    if below && !differs {
                        out.insert(at, change(prefix, name, ChangeKind::Modify));
                        changed = true;
                    }
                }
            }
        }
    }
    Ok(changed)
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
        Err(e) if fsutil::errno_of(&e) == Some(rustix::io::Errno::NOENT) => Ok(None),
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
        return Ok(fsutil::read_link_at(new_dir, name)? != fsutil::read_link_at(old_dir, name)?);
    }
    let cap = c"security.capability";
    Ok(fsutil::get_xattr_at(new_dir, name, cap)? != fsutil::get_xattr_at(old_dir, name, cap)?)
}

/// The size of `changes` in `dir`: the sizes of added and modified non-directories, each
/// inode counted once (moby `ChangesSize`). Paths that vanished are skipped.
pub fn changes_size(dir: &Path, changes: &[Change]) -> io::Result<u64> {
    let mut root = SafeRoot::open(dir)?;
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
        let Ok(base) = fsutil::component(base) else {
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
