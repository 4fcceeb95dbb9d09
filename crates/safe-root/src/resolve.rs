//! Resolving a path inside a root: `openat2(RESOLVE_IN_ROOT)`, or a component-wise fd walk
//! with the same rules where `openat2` is unavailable.
//!
//! **The `openat2` policy**, the one every confined lookup in the workspace follows
//! ([`open_beneath`]; the applier's [`crate::SafeRoot`] and tarsplit's `PathFileGetter` both
//! go through it):
//!
//! * `ENOSYS` (a kernel before 5.6, or a seccomp filter that answers unknown syscalls so, as
//!   Docker's default profile does) and `E2BIG` (a kernel that does not know our `open_how`):
//!   `openat2` is unusable in this process. Remembered process-wide; every later lookup
//!   walks.
//! * `EPERM`: older seccomp profiles deny unknown syscalls with `EPERM`, but a real open can
//!   fail with `EPERM` too (a sealed file, `O_NOATIME` on another's file, fanotify). The root
//!   itself is then probed with `openat2(".", O_PATH)`: if that fails the same way, `openat2`
//!   is filtered (remembered, walk); otherwise the `EPERM` is the file's and is returned.
//! * `EAGAIN`: with `RESOLVE_IN_ROOT` the kernel refuses a lookup that a concurrent rename or
//!   mount raced. Transient: retried up to [`EAGAIN_RETRIES`] times, then the walk answers
//!   (it keeps its own stack of directory fds and cannot be raced above the root).
//! * Anything else (`ENOENT`, `ELOOP`, `EXDEV` for a magic link, …) is the lookup's answer.
//!
//! The walk follows symlinks inside the root exactly as `RESOLVE_IN_ROOT` does, so a lookup
//! gives the same file whichever path answered it.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::fd::{component, read_link_at};

/// Symlink hops allowed in one resolution (Linux allows 40).
pub(crate) const MAX_SYMLINK_HOPS: u32 = 40;

/// How many times an `openat2` that failed with `EAGAIN` is retried before the walk answers.
pub const EAGAIN_RETRIES: u32 = 8;

/// Set once `openat2` is known to be unusable here (see the module doc); from then on the fd
/// walk is used.
static OPENAT2_MISSING: AtomicBool = AtomicBool::new(false);

/// Whether lookups in this process still try `openat2` (false once it proved unusable).
pub fn openat2_in_use() -> bool {
    !OPENAT2_MISSING.load(Ordering::Relaxed)
}

/// What a lookup does after `openat2` failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterError {
    /// Try `openat2` again.
    Retry,
    /// Answer this lookup with the walk.
    Walk,
    /// `openat2` is unusable in this process: remember it, and walk.
    Unusable,
    /// The error is the lookup's answer.
    Fail,
}

/// The policy of the module doc. `tries` counts the failures of this lookup so far (0 on
/// the first); `openat2_works` probes the root (only asked on `EPERM`).
fn after_openat2_error(e: Errno, tries: u32, openat2_works: impl FnOnce() -> bool) -> AfterError {
    match e {
        Errno::NOSYS | Errno::TOOBIG => AfterError::Unusable,
        Errno::PERM if !openat2_works() => AfterError::Unusable,
        Errno::AGAIN if tries < EAGAIN_RETRIES => AfterError::Retry,
        Errno::AGAIN => AfterError::Walk,
        _ => AfterError::Fail,
    }
}

fn openat2_in_root(
    root: BorrowedFd<'_>,
    path: &CStr,
    flags: OFlags,
) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat2(
        root,
        path,
        flags | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
    )
}

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

/// Opens `rel` under `root` with every step confined to `root`: `openat2(RESOLVE_IN_ROOT |
/// RESOLVE_NO_MAGICLINKS)`, or [`walk_beneath`] as the module doc's policy says.
pub fn open_beneath(root: BorrowedFd<'_>, rel: &[u8], flags: OFlags) -> io::Result<OwnedFd> {
    if openat2_in_use() {
        let rel_or_dot: &[u8] = if rel.is_empty() { b"." } else { rel };
        let c = CString::new(rel_or_dot)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in path"))?;
        let mut tries = 0;
        loop {
            let e = match openat2_in_root(root, &c, flags) {
                Ok(fd) => return Ok(fd),
                Err(e) => e,
            };
            let probe = || openat2_in_root(root, c".", OFlags::PATH).is_ok();
            match after_openat2_error(e, tries, probe) {
                AfterError::Retry => tries += 1,
                AfterError::Walk => break,
                AfterError::Unusable => {
                    OPENAT2_MISSING.store(true, Ordering::Relaxed);
                    break;
                }
                AfterError::Fail => return Err(e.into()),
            }
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
    fn openat2_errors_follow_one_policy() {
        use AfterError::*;
        let never = || -> bool { panic!("probe asked for an errno other than EPERM") };
        assert_eq!(after_openat2_error(Errno::NOSYS, 0, never), Unusable);
        assert_eq!(after_openat2_error(Errno::TOOBIG, 0, never), Unusable);
        // EPERM: filtered when the root itself cannot be opened either, else the file's own.
        assert_eq!(after_openat2_error(Errno::PERM, 0, || false), Unusable);
        assert_eq!(after_openat2_error(Errno::PERM, 0, || true), Fail);
        assert_eq!(after_openat2_error(Errno::AGAIN, 0, never), Retry);
        assert_eq!(
            after_openat2_error(Errno::AGAIN, EAGAIN_RETRIES - 1, never),
            Retry
        );
        assert_eq!(
            after_openat2_error(Errno::AGAIN, EAGAIN_RETRIES, never),
            Walk
        );
        for answer in [
            Errno::NOENT,
            Errno::LOOP,
            Errno::XDEV,
            Errno::NOTDIR,
            Errno::ACCESS,
        ] {
            assert_eq!(after_openat2_error(answer, 0, never), Fail, "{answer:?}");
        }
    }

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
