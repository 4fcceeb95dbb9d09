//! Resolving a path inside a root: `openat2(RESOLVE_IN_ROOT)`, or a component-wise fd walk
//! with the same rules where `openat2` is unavailable.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::fd::{component, read_link_at};

/// Symlink hops allowed in one resolution (Linux allows 40).
pub(crate) const MAX_SYMLINK_HOPS: u32 = 40;

/// Set once `openat2` has returned ENOSYS; from then on the fd walk is used.
static OPENAT2_MISSING: AtomicBool = AtomicBool::new(false);

/// `base/target` cleaned lexically; `..` never climbs above the root (as `RESOLVE_IN_ROOT`).
pub(crate) fn join_lexically(base: &[u8], target: &[u8]) -> Vec<u8> {
    let mut parts: Vec<&[u8]> = base
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    for comp in target.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    parts.join(&b'/')
}

/// Opens `rel` under `root` with every step confined to `root`.
pub fn open_beneath(root: BorrowedFd<'_>, rel: &[u8], flags: OFlags) -> io::Result<OwnedFd> {
    let rel_or_dot: &[u8] = if rel.is_empty() { b"." } else { rel };
    if !OPENAT2_MISSING.load(Ordering::Relaxed) {
        let c = std::ffi::CString::new(rel_or_dot)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in path"))?;
        match rustix::fs::openat2(
            root,
            &*c,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            Err(Errno::NOSYS) => OPENAT2_MISSING.store(true, Ordering::Relaxed),
            // EAGAIN: a concurrent rename raced the lookup; the walk below is race-free too.
            Err(Errno::AGAIN) => {}
            other => return other.map_err(Into::into),
        }
    }
    walk_beneath(root, rel, flags)
}

/// The `openat2`-free fallback: one `openat(O_NOFOLLOW)` per component, symlinks read and
/// spliced in by hand with `RESOLVE_IN_ROOT` semantics.
pub fn walk_beneath(root: BorrowedFd<'_>, rel: &[u8], flags: OFlags) -> io::Result<OwnedFd> {
    let mut stack: Vec<OwnedFd> = Vec::new();
    let mut pending: std::collections::VecDeque<Vec<u8>> =
        rel.split(|&b| b == b'/').map(<[u8]>::to_vec).collect();
    let mut hops = 0u32;
    let follow_last = !flags.contains(OFlags::NOFOLLOW);
    while let Some(comp) = pending.pop_front() {
        match &comp[..] {
            b"" | b"." => continue,
            b".." => {
                stack.pop();
                continue;
            }
            _ => {}
        }
        let is_last = pending.iter().all(|c| c.is_empty() || c == b".");
        let cur = stack.last().map(|f| f.as_fd()).unwrap_or(root);
        let cname = component(&comp)?;
        let step_flags = if is_last {
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC
        } else {
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC
        };
        match rustix::fs::openat(cur, &*cname, step_flags, Mode::empty()) {
            Ok(fd) => {
                let is_link = is_last && flags.contains(OFlags::PATH) && follow_last && {
                    crate::fd::fstat(fd.as_fd())?.is_symlink()
                };
                if !is_link {
                    if is_last {
                        return Ok(fd);
                    }
                    stack.push(fd);
                    continue;
                }
            }
            Err(Errno::LOOP) | Err(Errno::NOTDIR) => {}
            Err(e) => return Err(e.into()),
        }
        // Maybe a symlink: follow it unless this is the last component and NOFOLLOW was asked.
        if is_last && !follow_last {
            return Err(Errno::LOOP.into());
        }
        let target = match read_link_at(cur, &cname) {
            Ok(t) => t,
            Err(e) if e.raw_os_error() == Some(Errno::INVAL.raw_os_error()) => {
                return Err(Errno::NOTDIR.into());
            }
            Err(e) => return Err(e),
        };
        hops += 1;
        if hops > MAX_SYMLINK_HOPS {
            return Err(Errno::LOOP.into());
        }
        if target.starts_with(b"/") {
            stack.clear();
        }
        for part in target.split(|&b| b == b'/').rev() {
            pending.push_front(part.to_vec());
        }
    }
    let cur = stack.last().map(|f| f.as_fd()).unwrap_or(root);
    Ok(rustix::fs::openat(
        cur,
        c".",
        flags | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::SafeRoot;
    use std::os::unix::fs::symlink;

    #[test]
    fn lexical_join_stays_in_root() {
        assert_eq!(join_lexically(b"var", b"../../run"), b"run");
        assert_eq!(join_lexically(b"", b"/run/x"), b"run/x");
    }

    #[test]
    fn both_resolvers_confine_absolute_and_dotdot_links() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        std::fs::create_dir_all(root.join("run/inside")).unwrap();
        std::fs::create_dir_all(dir.path().join("outside")).unwrap();
        symlink("/run", root.join("abs")).unwrap();
        symlink("../../outside", root.join("up")).unwrap();
        let r = SafeRoot::open(&root).unwrap();
        for resolve in [open_beneath, walk_beneath] {
            let fd = resolve(r.root_fd(), b"abs/inside", OFlags::PATH | OFlags::DIRECTORY).unwrap();
            let m = crate::fd::fstat(fd.as_fd()).unwrap();
            let want = std::fs::metadata(root.join("run/inside")).unwrap();
            assert_eq!(m.ino, std::os::unix::fs::MetadataExt::ino(&want));
            // `up` climbs to the root and then looks for `outside` there: not found.
            let err = resolve(r.root_fd(), b"up", OFlags::PATH | OFlags::DIRECTORY).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(Errno::NOENT.raw_os_error()));
        }
    }
}
