//! Copying a directory tree with everything a layer needs preserved (moby `copy.DirCopy`).
//!
//! Regular file data is cloned with `FICLONE` where the filesystem can share extents
//! (btrfs, xfs), else copied in the kernel with `copy_file_range`, else with a read/write
//! loop; each fallback is remembered for the rest of the copy. Hardlinked files stay
//! hardlinked, FIFOs and sockets become FIFOs, device nodes are recreated (skipped with a
//! warning without the privilege), and owners, modes (setuid/setgid/sticky included), xattrs
//! (except overlayfs-private ones) and nanosecond atime/mtime are kept. Directory times are
//! set after their children are in place.

use std::collections::HashMap;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::sync::Arc;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use safe_root::{DirRef, Meta, lstat_at, proc_fd_path};

/// Copies everything under `src` into the existing directory `dst`, and `src`'s own owner,
/// mode, xattrs and times onto `dst`.
pub fn copy_dir(src: &Path, dst: &Path) -> io::Result<()> {
    let span = tracing::debug_span!("copy_dir", src = %src.display(), dst = %dst.display());
    let _enter = span.enter();
    let src_root = Arc::new(open_root(src)?);
    let dst_root = Arc::new(open_root(dst)?);
    let mut copier = Copier {
        linked: HashMap::new(),
        clone_works: true,
        copy_range_works: true,
        privileged: safe_root::is_root(),
        buffer: Vec::new(),
    };
    copier.copy_tree(src_root.as_fd(), dst_root.as_fd())?;
    let meta = safe_root::fstat(src_root.as_fd())?;
    copier.copy_metadata_fd(src_root.as_fd(), dst_root.as_fd(), &meta)?;
    let times = timestamps(&meta);
    rustix::fs::futimens(&*dst_root, &times)?;
    Ok(())
}

fn open_root(path: &Path) -> io::Result<OwnedFd> {
    Ok(rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

struct Copier {
    /// (dev, ino) of a multiply-linked source file → the directory and name of its first copy.
    linked: HashMap<(u64, u64), (DirRef, CString)>,
    clone_works: bool,
    copy_range_works: bool,
    privileged: bool,
    buffer: Vec<u8>,
}

impl Copier {
    /// Copies the tree iteratively: depth costs no stack, and only the directory pair being
    /// copied is open (directories are reopened inside their roots by relative path).
    /// A directory's metadata and times are set once its whole subtree is done.
    fn copy_tree(&mut self, src_root: BorrowedFd<'_>, dst_root: BorrowedFd<'_>) -> io::Result<()> {
        enum Step {
            Enter(DirRef, DirRef),
            Finish(DirRef, DirRef, Meta),
        }
        let mut stack = vec![Step::Enter(DirRef::root(), DirRef::root())];
        while let Some(step) = stack.pop() {
            match step {
                Step::Finish(src, dst, meta) => {
                    let (src, dst) = (src.open(src_root)?, dst.open(dst_root)?);
                    self.copy_metadata_fd(src.as_fd(), dst.as_fd(), &meta)?;
                    rustix::fs::futimens(&dst, &timestamps(&meta))?;
                }
                Step::Enter(src_ref, dst_ref) => {
                    let src = src_ref.open(src_root)?;
                    let dst = dst_ref.open(dst_root)?;
                    let mut subdirs = Vec::new();
                    for name in safe_root::list_dir(src.as_fd())? {
                        let meta = lstat_at(src.as_fd(), &name)?;
                        if meta.is_dir() {
                            match rustix::fs::mkdirat(&dst, &*name, Mode::from_raw_mode(0o700)) {
                                Ok(()) | Err(Errno::EXIST) => {}
                                Err(e) => return Err(e.into()),
                            }
                            let child_src = src_ref.child(src_root, name.to_bytes())?;
                            let child_dst = dst_ref.child(dst_root, name.to_bytes())?;
                            subdirs.push((child_src, child_dst, meta));
                            continue;
                        }
                        if meta.nlink > 1 {
                            if let Some((first_dir, first_name)) =
                                self.linked.get(&(meta.dev, meta.ino))
                            {
                                let first_dir = first_dir.open(dst_root)?;
                                rustix::fs::linkat(
                                    &first_dir,
                                    &**first_name,
                                    &dst,
                                    &*name,
                                    AtFlags::empty(),
                                )?;
                                continue;
                            }
                            self.linked
                                .insert((meta.dev, meta.ino), (dst_ref.clone(), name.clone()));
                        }
                        self.copy_entry(src.as_fd(), dst.as_fd(), &name, &meta)?;
                    }
                    for (child_src, child_dst, meta) in subdirs.into_iter().rev() {
                        stack.push(Step::Finish(child_src.clone(), child_dst.clone(), meta));
                        stack.push(Step::Enter(child_src, child_dst));
                    }
                }
            }
        }
        Ok(())
    }

    fn copy_entry(
        &mut self,
        src: BorrowedFd<'_>,
        dst_fd: BorrowedFd<'_>,
        name: &CStr,
        meta: &Meta,
    ) -> io::Result<()> {
        match meta.file_type {
            FileType::Directory => {
                return Err(io::Error::other("copy_entry called on a directory"));
            }
            FileType::RegularFile => {
                let from = rustix::fs::openat(
                    src,
                    name,
                    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )?;
                let to = rustix::fs::openat(
                    dst_fd,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )?;
                self.copy_data(&from, &to, meta.size)?;
                self.copy_metadata_fd(from.as_fd(), to.as_fd(), meta)?;
                rustix::fs::futimens(&to, &timestamps(meta))?;
                return Ok(());
            }
            FileType::Symlink => {
                let target = safe_root::read_link_at(src, name)?;
                rustix::fs::symlinkat(target.as_slice(), dst_fd, name)?;
            }
            FileType::Fifo | FileType::Socket => {
                rustix::fs::mknodat(
                    dst_fd,
                    name,
                    FileType::Fifo,
                    Mode::from_raw_mode(meta.perm & 0o777),
                    0,
                )?;
            }
            FileType::CharacterDevice | FileType::BlockDevice => {
                match rustix::fs::mknodat(
                    dst_fd,
                    name,
                    meta.file_type,
                    Mode::from_raw_mode(meta.perm & 0o777),
                    meta.rdev as _,
                ) {
                    Ok(()) => {}
                    Err(Errno::PERM) if !self.privileged => {
                        tracing::warn!(name = %name.to_string_lossy(), "skipping device node: no privilege to create it");
                        return Ok(());
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            _ => {
                return Err(io::Error::other(format!(
                    "unknown file type for {}",
                    name.to_string_lossy()
                )));
            }
        }
        // Links and special files: everything through the parent fd, never following.
        self.copy_owner_at(dst_fd, name, meta)?;
        let (from, to) = (
            proc_fd_path(src, Some(name)),
            proc_fd_path(dst_fd, Some(name)),
        );
        copy_xattrs(XattrAt::NoFollow(&from), XattrAt::NoFollow(&to))?;
        if !meta.is_symlink() {
            let fd = safe_root::open_path_at(dst_fd, name)?;
            rustix::fs::chmodat(
                rustix::fs::CWD,
                &*proc_fd_path(fd.as_fd(), None),
                Mode::from_raw_mode(meta.perm),
                AtFlags::empty(),
            )?;
        }
        rustix::fs::utimensat(dst_fd, name, &timestamps(meta), AtFlags::SYMLINK_NOFOLLOW)?;
        Ok(())
    }

    fn copy_owner_at(&self, dir: BorrowedFd<'_>, name: &CStr, meta: &Meta) -> io::Result<()> {
        let result = rustix::fs::chownat(
            dir,
            name,
            Some(rustix::fs::Uid::from_raw(meta.uid)),
            Some(rustix::fs::Gid::from_raw(meta.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        );
        match result {
            Err(Errno::PERM) if !self.privileged => Ok(()),
            other => Ok(other?),
        }
    }

    /// Owner, xattrs and mode from one open file or directory onto another.
    fn copy_metadata_fd(
        &self,
        src: BorrowedFd<'_>,
        dst: BorrowedFd<'_>,
        meta: &Meta,
    ) -> io::Result<()> {
        match rustix::fs::fchown(
            dst,
            Some(rustix::fs::Uid::from_raw(meta.uid)),
            Some(rustix::fs::Gid::from_raw(meta.gid)),
        ) {
            Err(Errno::PERM) if !self.privileged => {}
            other => other?,
        }
        copy_xattrs(XattrAt::Fd(src), XattrAt::Fd(dst))?;
        // After chown, which clears setuid/setgid.
        rustix::fs::fchmod(dst, Mode::from_raw_mode(meta.perm))?;
        Ok(())
    }

    fn copy_data(&mut self, from: &OwnedFd, to: &OwnedFd, size: u64) -> io::Result<()> {
        if size == 0 {
            return Ok(());
        }
        if self.clone_works {
            match rustix::fs::ioctl_ficlone(to, from) {
                Ok(()) => return Ok(()),
                Err(
                    Errno::OPNOTSUPP
                    | Errno::XDEV
                    | Errno::INVAL
                    | Errno::NOTTY
                    | Errno::NOSYS
                    | Errno::PERM,
                ) => {
                    self.clone_works = false;
                }
                Err(e) => return Err(e.into()),
            }
        }
        if self.copy_range_works {
            let mut copied = 0u64;
            loop {
                match rustix::fs::copy_file_range(from, None, to, None, 1 << 30) {
                    Ok(0) => return Ok(()),
                    Ok(n) => copied += n as u64,
                    Err(Errno::INTR) => {}
                    Err(Errno::XDEV | Errno::NOSYS | Errno::INVAL | Errno::OPNOTSUPP)
                        if copied == 0 =>
                    {
                        self.copy_range_works = false;
                        break;
                    }
                    Err(e) => return Err(e.into()),
                }
            }
        }
        if self.buffer.is_empty() {
            self.buffer = vec![0u8; 1 << 20];
        }
        let mut reader = File::from(from.try_clone()?);
        let mut writer = File::from(to.try_clone()?);
        loop {
            let n = match reader.read(&mut self.buffer) {
                Ok(0) => return Ok(()),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            writer.write_all(&self.buffer[..n])?;
        }
    }
}

/// Where xattrs are read or written: an open file, or a path whose last component is not
/// followed (`/proc/self/fd/N/name`).
#[derive(Clone, Copy)]
enum XattrAt<'a> {
    Fd(BorrowedFd<'a>),
    NoFollow(&'a CStr),
}

impl XattrAt<'_> {
    fn list(self, buf: &mut [u8]) -> rustix::io::Result<usize> {
        match self {
            XattrAt::Fd(fd) => rustix::fs::flistxattr(fd, buf),
            XattrAt::NoFollow(p) => rustix::fs::llistxattr(p, buf),
        }
    }

    fn get(self, name: &CStr, buf: &mut [u8]) -> rustix::io::Result<usize> {
        match self {
            XattrAt::Fd(fd) => rustix::fs::fgetxattr(fd, name, buf),
            XattrAt::NoFollow(p) => rustix::fs::lgetxattr(p, name, buf),
        }
    }

    fn set(self, name: &CStr, value: &[u8]) -> rustix::io::Result<()> {
        match self {
            XattrAt::Fd(fd) => rustix::fs::fsetxattr(fd, name, value, XattrFlags::empty()),
            XattrAt::NoFollow(p) => rustix::fs::lsetxattr(p, name, value, XattrFlags::empty()),
        }
    }
}

/// Copies every xattr but the overlayfs-private ones.
fn copy_xattrs(src: XattrAt<'_>, dst: XattrAt<'_>) -> io::Result<()> {
    let mut names = vec![0u8; 4096];
    let n = loop {
        match src.list(&mut names[..]) {
            Ok(n) => break n,
            Err(Errno::NOTSUP) => return Ok(()),
            Err(Errno::RANGE) if names.len() < 1 << 20 => names.resize(names.len() * 4, 0),
            Err(e) => return Err(e.into()),
        }
    };
    if n == 0 {
        return Ok(());
    }
    let mut value = vec![0u8; 64 * 1024];
    for attr in names[..n].split(|&b| b == 0).filter(|a| !a.is_empty()) {
        if attr.starts_with(b"trusted.overlay.") || attr.starts_with(b"user.overlay.") {
            continue;
        }
        let Ok(cattr) = CString::new(attr) else {
            continue;
        };
        let len = match src.get(&cattr, &mut value[..]) {
            Ok(len) => len,
            Err(Errno::NODATA) => continue,
            Err(e) => return Err(e.into()),
        };
        match dst.set(&cattr, &value[..len]) {
            Ok(()) => {}
            Err(Errno::NOTSUP) => {
                tracing::warn!(xattr = %String::from_utf8_lossy(attr), "xattr not supported on the destination; dropped");
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn timestamps(meta: &Meta) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: meta.atime_sec,
            tv_nsec: meta.atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: meta.mtime_sec,
            tv_nsec: meta.mtime_nsec as _,
        },
    }
}
