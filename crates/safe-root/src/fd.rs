//! Small fd-based filesystem helpers shared by the archive code, vfs and the naive differ.
//!
//! Everything here works on a directory fd plus a single name component, never on a path
//! string that the kernel would resolve (and possibly follow) on its own.

use std::ffi::{CStr, CString};
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// The stat fields we use, widened to fixed types (the raw `Stat` differs per architecture).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    /// File type.
    pub file_type: FileType,
    /// Permission bits including setuid/setgid/sticky (`0o7777`).
    pub perm: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Size in bytes.
    pub size: u64,
    /// Modification time, seconds.
    pub mtime_sec: i64,
    /// Modification time, nanoseconds.
    pub mtime_nsec: u32,
    /// Access time, seconds.
    pub atime_sec: i64,
    /// Access time, nanoseconds.
    pub atime_nsec: u32,
    /// Device number of the filesystem.
    pub dev: u64,
    /// Inode number.
    pub ino: u64,
    /// Link count.
    pub nlink: u64,
    /// Device number for device nodes.
    pub rdev: u64,
}

impl Meta {
    /// Converts a raw stat.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    pub fn from_stat(st: &rustix::fs::Stat) -> Meta {
        Meta {
            file_type: FileType::from_raw_mode(st.st_mode as _),
            perm: (st.st_mode as u32) & 0o7777,
            uid: st.st_uid as u32,
            gid: st.st_gid as u32,
            size: st.st_size as u64,
            mtime_sec: st.st_mtime as i64,
            mtime_nsec: st.st_mtime_nsec as u32,
            atime_sec: st.st_atime as i64,
            atime_nsec: st.st_atime_nsec as u32,
            dev: st.st_dev as u64,
            ino: st.st_ino as u64,
            nlink: st.st_nlink as u64,
            rdev: st.st_rdev as u64,
        }
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.file_type == FileType::Directory
    }

    /// Whether this is a symlink.
    pub fn is_symlink(&self) -> bool {
        self.file_type == FileType::Symlink
    }
}

/// `fstatat(dir, name, AT_SYMLINK_NOFOLLOW)`.
pub fn lstat_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Meta> {
    Ok(Meta::from_stat(&rustix::fs::statat(
        dir,
        name,
        AtFlags::SYMLINK_NOFOLLOW,
    )?))
}

/// `fstat(fd)`.
pub fn fstat(fd: BorrowedFd<'_>) -> io::Result<Meta> {
    Ok(Meta::from_stat(&rustix::fs::fstat(fd)?))
}

/// A name component as a C string; refuses NUL bytes and slashes.
pub fn component(name: &[u8]) -> io::Result<CString> {
    if name.is_empty() || name.contains(&b'/') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a single path component",
        ));
    }
    CString::new(name).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in name"))
}

/// `/proc/self/fd/<fd>` or `/proc/self/fd/<fd>/<name>`: a path whose lookup starts at an
/// object we already hold, for calls that have no fd form (`lsetxattr`, `chmod` of an
/// `O_PATH` fd). Only the final `name` (one component) is looked up by the kernel.
pub fn proc_fd_path(fd: BorrowedFd<'_>, name: Option<&CStr>) -> CString {
    let mut s = format!("/proc/self/fd/{}", fd.as_raw_fd()).into_bytes();
    if let Some(n) = name {
        s.push(b'/');
        s.extend_from_slice(n.to_bytes());
    }
    CString::new(s).expect("no NUL in a formatted fd path and a checked component")
}

/// Opens a directory entry (not following a final symlink) as a directory fd that can list.
pub fn open_dir_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Opens any entry as an `O_PATH` fd without following a final symlink.
pub fn open_path_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// Sorted entry names of a directory (without `.` and `..`).
pub fn list_dir(dir: BorrowedFd<'_>) -> io::Result<Vec<CString>> {
    let mut names = Vec::new();
    for entry in rustix::fs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let bytes = name.to_bytes();
        if bytes == b"." || bytes == b".." {
            continue;
        }
        names.push(name.to_owned());
    }
    names.sort_unstable();
    Ok(names)
}

/// Reads a symlink's target, relative to a dir fd.
pub fn read_link_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<u8>> {
    Ok(rustix::fs::readlinkat(dir, name, Vec::new())?.into_bytes())
}

/// Reads one xattr of the entry `name` in `dir` without following it. `None` when absent
/// or unsupported.
pub fn get_xattr_at(dir: BorrowedFd<'_>, name: &CStr, attr: &CStr) -> io::Result<Option<Vec<u8>>> {
    let path = proc_fd_path(dir, Some(name));
    let mut buf = vec![0u8; 256];
    loop {
        match rustix::fs::lgetxattr(&*path, attr, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            Err(rustix::io::Errno::NODATA) | Err(rustix::io::Errno::NOTSUP) => return Ok(None),
            Err(rustix::io::Errno::RANGE) if buf.len() < 1 << 16 => buf.resize(buf.len() * 4, 0),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Lists xattr names of the entry `name` in `dir` without following it.
pub fn list_xattrs_at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Vec<CString>> {
    let path = proc_fd_path(dir, Some(name));
    let mut buf = vec![0u8; 1024];
    let n = loop {
        match rustix::fs::llistxattr(&*path, &mut buf[..]) {
            Ok(n) => break n,
            Err(rustix::io::Errno::NOTSUP) => return Ok(Vec::new()),
            Err(rustix::io::Errno::RANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            Err(e) => return Err(e.into()),
        }
    };
    Ok(buf[..n]
        .split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .filter_map(|s| CString::new(s).ok())
        .collect())
}

/// Whether the current process runs as root (tests skip privileged cases otherwise).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// An errno as an `io::Error`, for matching.
pub fn errno_of(e: &io::Error) -> Option<rustix::io::Errno> {
    e.raw_os_error().map(rustix::io::Errno::from_raw_os_error)
}
