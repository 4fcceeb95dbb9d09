//! `SafeRoot`: resolve paths *inside* a directory, never outside it.
//!
//! Every lookup is `openat2(root, path, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: the kernel
//! treats the root as `/` for the whole walk, so `..` stops at it and an absolute symlink
//! such as `var/run -> /run` lands on `<root>/run`. This is what makes absolute links in
//! valid layers keep working while a hostile `a -> /etc` then `a/passwd` writes
//! `<root>/etc/passwd`, never the host's. Where `openat2` is missing (kernels before 5.6, or
//! seccomp returning ENOSYS) the same rules are emulated by a component-by-component fd walk.
//!
//! Resolved directories are cached by name so that applying a layer does not re-walk the
//! path of every entry; the applier calls [`SafeRoot::forget`] whenever it removes or
//! replaces something that a cached name could have gone through.

use std::collections::HashMap;
use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::fsutil::{component, lstat_at, read_link_at};

/// How many directory fds the cache keeps before it starts over.
const CACHE_CAPACITY: usize = 512;
/// Symlink hops allowed in one resolution (Linux allows 40).
const MAX_SYMLINK_HOPS: u32 = 40;

/// Set once `openat2` has returned ENOSYS; from then on the fd walk is used.
static OPENAT2_MISSING: AtomicBool = AtomicBool::new(false);

/// A directory that all lookups are confined to. See the module doc.
#[derive(Debug)]
pub struct SafeRoot {
    root: OwnedFd,
    path: PathBuf,
    cache: HashMap<Vec<u8>, Arc<OwnedFd>>,
}

impl SafeRoot {
    /// Opens `path` (which must be a directory; a final symlink is refused) as a root.
    pub fn open(path: &Path) -> io::Result<Self> {
        let root = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(SafeRoot {
            root,
            path: path.to_path_buf(),
            cache: HashMap::new(),
        })
    }

    /// The path the root was opened from (for messages only; never used for lookups).
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The root directory fd.
    pub fn root_fd(&self) -> BorrowedFd<'_> {
        self.root.as_fd()
    }

    /// Drops every cached directory fd.
    pub fn forget(&mut self) {
        self.cache.clear();
    }

    /// Opens `rel` (a cleaned, `/`-separated name; empty for the root) with `flags`,
    /// resolving every component inside the root. Uncached.
    pub fn open_in_root(&self, rel: &[u8], flags: OFlags) -> io::Result<OwnedFd> {
        open_beneath(self.root.as_fd(), rel, flags)
    }

    /// The existing directory `rel`, resolved inside the root (cached).
    pub fn open_dir(&mut self, rel: &[u8]) -> io::Result<Arc<OwnedFd>> {
        if let Some(fd) = self.cache.get(rel) {
            return Ok(fd.clone());
        }
        let fd =
            Arc::new(self.open_in_root(rel, OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC)?);
        self.remember(rel, fd.clone());
        Ok(fd)
    }

    /// The directory `rel`, creating missing components. `on_create(parent, name)` runs for
    /// each directory this call creates (the applier sets 0755 and the owner there). A
    /// dangling symlink on the way is followed, inside the root, and its target created.
    ///
    /// Iterative (one `openat` per uncached component), so deep paths cost no stack.
    pub fn ensure_dir(
        &mut self,
        rel: &[u8],
        on_create: &mut dyn FnMut(BorrowedFd<'_>, &CStr) -> io::Result<()>,
    ) -> io::Result<Arc<OwnedFd>> {
        if let Some(fd) = self.cache.get(rel) {
            return Ok(fd.clone());
        }
        let mut wanted = rel.to_vec();
        let mut hops = 0u32;
        'restart: loop {
            let mut cur: Option<Arc<OwnedFd>> = None; // None: the root
            let mut prefix: Vec<u8> = Vec::with_capacity(wanted.len());
            let comps: Vec<Vec<u8>> = wanted
                .split(|&b| b == b'/')
                .filter(|c| !c.is_empty())
                .map(<[u8]>::to_vec)
                .collect();
            // Start below the deepest cached ancestor (usually the parent, just made), looked
            // up from the longest prefix down: walking every prefix from the root hashed
            // O(depth²) bytes per entry, seconds for a 2,000-level tree.
            let mut first = 0;
            let joined = comps.join(&b'/');
            let mut end = joined.len();
            for j in (1..comps.len()).rev() {
                end -= comps[j].len() + 1;
                if let Some(fd) = self.cache.get(&joined[..end]) {
                    cur = Some(fd.clone());
                    prefix.extend_from_slice(&joined[..end]);
                    first = j;
                    break;
                }
            }
            for (i, comp) in comps.iter().enumerate().skip(first) {
                let parent_len = prefix.len();
                if !prefix.is_empty() {
                    prefix.push(b'/');
                }
                prefix.extend_from_slice(comp);
                if let Some(fd) = self.cache.get(&prefix) {
                    cur = Some(fd.clone());
                    continue;
                }
                let cname = component(comp)?;
                let dir = cur
                    .as_deref()
                    .map(|f| f.as_fd())
                    .unwrap_or(self.root.as_fd());
                let opened = rustix::fs::openat(
                    dir,
                    &*cname,
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                );
                let fd = match opened {
                    Ok(fd) => fd,
                    Err(Errno::NOENT) => {
                        match rustix::fs::mkdirat(dir, &*cname, Mode::from_raw_mode(0o700)) {
                            Ok(()) => on_create(dir, &cname)?,
                            Err(Errno::EXIST) => {}
                            Err(e) => return Err(e.into()),
                        }
                        crate::fsutil::open_dir_at(dir, &cname)?
                    }
                    // A symlink (or a non-directory): let the kernel resolve it in the root.
                    Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
                        if !lstat_at(dir, &cname)?.is_symlink() {
                            return Err(Errno::NOTDIR.into());
                        }
                        match self.open_in_root(&prefix, OFlags::RDONLY | OFlags::DIRECTORY) {
                            Ok(fd) => fd,
                            Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => {
                                // Dangling: create its target, inside the root (moby#53258).
                                hops += 1;
                                if hops > MAX_SYMLINK_HOPS {
                                    return Err(Errno::LOOP.into());
                                }
                                let target = read_link_at(dir, &cname)?;
                                let base: &[u8] = if target.starts_with(b"/") {
                                    b""
                                } else {
                                    &prefix[..parent_len]
                                };
                                let mut next = join_lexically(base, &target);
                                for rest in &comps[i + 1..] {
                                    next.push(b'/');
                                    next.extend_from_slice(rest);
                                }
                                wanted = next;
                                continue 'restart;
                            }
                            Err(e) => return Err(e),
                        }
                    }
                    Err(e) => return Err(e.into()),
                };
                let fd = Arc::new(fd);
                self.remember(&prefix, fd.clone());
                cur = Some(fd);
            }
            let fd = match cur {
                Some(fd) => fd,
                None => Arc::new(self.open_in_root(b"", OFlags::RDONLY | OFlags::DIRECTORY)?),
            };
            self.remember(rel, fd.clone());
            return Ok(fd);
        }
    }

    fn remember(&mut self, rel: &[u8], fd: Arc<OwnedFd>) {
        if self.cache.len() >= CACHE_CAPACITY {
            self.cache.clear();
        }
        self.cache.insert(rel.to_vec(), fd);
    }
}

/// `base/target` cleaned lexically; `..` never climbs above the root (as `RESOLVE_IN_ROOT`).
fn join_lexically(base: &[u8], target: &[u8]) -> Vec<u8> {
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
                    crate::fsutil::fstat(fd.as_fd())?.is_symlink()
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
            let m = crate::fsutil::fstat(fd.as_fd()).unwrap();
            let want = std::fs::metadata(root.join("run/inside")).unwrap();
            assert_eq!(m.ino, std::os::unix::fs::MetadataExt::ino(&want));
            // `up` climbs to the root and then looks for `outside` there: not found.
            let err = resolve(r.root_fd(), b"up", OFlags::PATH | OFlags::DIRECTORY).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(Errno::NOENT.raw_os_error()));
        }
    }
}
