//! `SafeRoot`: resolve paths *inside* a directory, never outside it.
//!
//! Every lookup is `openat2(root, path, RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)`: the kernel
//! treats the root as `/` for the whole walk, so `..` stops at it and an absolute symlink
//! such as `var/run -> /run` lands on `<root>/run`. This is what makes absolute links in
//! valid layers keep working while a hostile `a -> /etc` then `a/passwd` writes
//! `<root>/etc/passwd`, never the host's. Where `openat2` is unusable (an old kernel, a
//! seccomp filter; [`crate::resolve`] has the policy) the same rules are emulated by a
//! component-by-component fd walk.
//!
//! Resolved directories are cached by name so that applying a layer does not re-walk the
//! path of every entry; the applier calls [`SafeRoot::forget`] whenever it removes or
//! replaces something that a cached name could have gone through.

use std::collections::HashMap;
use std::ffi::{CStr, OsStr};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::fd::{component, lstat_at, open_dir_at, read_link_at};
use crate::resolve::{MAX_SYMLINK_HOPS, join_lexically, open_beneath};

/// How many directory fds the cache keeps before it starts over: few, so that several
/// appliers in one process stay far below a 1,024 descriptor limit.
const CACHE_CAPACITY: usize = 64;
/// A directory that all lookups are confined to. See the module doc.
#[derive(Debug)]
pub struct SafeRoot {
    root: OwnedFd,
    path: PathBuf,
    cache: HashMap<Vec<u8>, Arc<OwnedFd>>,
}

impl SafeRoot {
    /// Opens `path` (which must be a directory; a final symlink is refused) as a root.
    pub fn open(path: &Path) -> Result<Self> {
        let root = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("open root", path, e.into()))?;
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
    pub fn open_in_root(&self, rel: &[u8], flags: OFlags) -> Result<OwnedFd> {
        open_beneath(self.root.as_fd(), rel, flags).map_err(|e| self.error("open", rel, e))
    }

    /// An [`Error`] about `rel` inside the root.
    fn error(&self, op: &'static str, rel: &[u8], source: io::Error) -> Error {
        Error::io(op, self.path.join(OsStr::from_bytes(rel)), source)
    }

    /// The existing directory `rel`, resolved inside the root (cached).
    pub fn open_dir(&mut self, rel: &[u8]) -> Result<Arc<OwnedFd>> {
        if let Some(fd) = self.cache.get(rel) {
            return Ok(fd.clone());
        }
        let fd = open_beneath(self.root.as_fd(), rel, OFlags::RDONLY | OFlags::DIRECTORY)
            .map_err(|e| self.error("open directory", rel, e))?;
        let fd = Arc::new(fd);
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
    ) -> Result<Arc<OwnedFd>> {
        self.ensure_dir_io(rel, on_create)
            .map_err(|e| self.error("create directory", rel, e))
    }

    fn ensure_dir_io(
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
                        open_dir_at(dir, &cname)?
                    }
                    // A symlink (or a non-directory): let the kernel resolve it in the root.
                    Err(Errno::LOOP) | Err(Errno::NOTDIR) => {
                        if !lstat_at(dir, &cname)?.is_symlink() {
                            return Err(Errno::NOTDIR.into());
                        }
                        match open_beneath(
                            self.root.as_fd(),
                            &prefix,
                            OFlags::RDONLY | OFlags::DIRECTORY,
                        ) {
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
                None => Arc::new(open_beneath(
                    self.root.as_fd(),
                    b"",
                    OFlags::RDONLY | OFlags::DIRECTORY,
                )?),
            };
            self.remember(rel, fd.clone());
            return Ok(fd);
        }
    }

    /// Caches `fd` as the directory `rel` (one the caller just created or opened inside
    /// the root), so that the next [`SafeRoot::ensure_dir`] of `rel` or below starts there.
    pub fn cache_dir(&mut self, rel: &[u8], fd: Arc<OwnedFd>) {
        self.remember(rel, fd);
    }

    fn remember(&mut self, rel: &[u8], fd: Arc<OwnedFd>) {
        if self.cache.len() >= CACHE_CAPACITY {
            self.cache.clear();
        }
        self.cache.insert(rel.to_vec(), fd);
    }
}
