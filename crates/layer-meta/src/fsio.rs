//! fd-based filesystem primitives, all relative to the layerdb root directory fd.
//!
//! Every disk-changing primitive first asks the optional [`FaultInjector`], then maps failures
//! to [`Error::Io`] naming the full path. Reads are never injected: they change nothing.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags, RenameFlags};
use rustix::io::Errno;

use crate::error::{Error, Result};
use crate::seam::{FaultInjector, FsOp};

/// How deep a tree we agree to remove; layerdb directories are flat, so this is generous.
const MAX_REMOVE_DEPTH: usize = 64;

/// The root directory of the store plus the optional fault injector.
#[derive(Debug)]
pub(crate) struct Fs {
    root: PathBuf,
    root_fd: OwnedFd,
    injector: Option<Arc<dyn FaultInjector>>,
}

/// One directory entry: its raw name and type (resolved with `lstat` when `d_type` is unknown).
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) name: OsString,
    pub(crate) file_type: FileType,
}

impl Entry {
    /// The name as UTF-8, if it is.
    pub(crate) fn utf8_name(&self) -> Option<&str> {
        self.name.to_str()
    }
}

impl Fs {
    pub(crate) fn new(
        root: PathBuf,
        root_fd: OwnedFd,
        injector: Option<Arc<dyn FaultInjector>>,
    ) -> Fs {
        Fs {
            root,
            root_fd,
            injector,
        }
    }

    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn root_fd(&self) -> BorrowedFd<'_> {
        self.root_fd.as_fd()
    }

    /// The absolute path of `rel`, for messages.
    pub(crate) fn path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    pub(crate) fn io_error(&self, op: &'static str, rel: &str, source: io::Error) -> Error {
        Error::Io {
            op,
            path: self.path(rel),
            source,
        }
    }

    pub(crate) fn inject(&self, op: FsOp<'_>) -> io::Result<()> {
        match &self.injector {
            Some(injector) => injector.before(&op),
            None => Ok(()),
        }
    }

    /// Creates directory `rel` with exactly `mode` (umask ignored). `Ok(false)` if it already was
    /// a directory; `ENOTDIR` if something else is there (what Go's `MkdirAll` reports),
    /// including a symlink, so that writes never leave the layerdb root.
    pub(crate) fn ensure_dir(&self, rel: &str, mode: u32) -> Result<bool> {
        match self.create_dir(rel, mode) {
            Ok(()) => Ok(true),
            Err(Error::Io { source, .. })
                if source.raw_os_error() == Some(Errno::EXIST.raw_os_error()) =>
            {
                match rustix::fs::statat(self.root_fd(), rel, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(st) if FileType::from_raw_mode(st.st_mode) == FileType::Directory => {
                        Ok(false)
                    }
                    Ok(_) => Err(self.io_error("create directory", rel, Errno::NOTDIR.into())),
                    Err(e) => Err(self.io_error("stat", rel, e.into())),
                }
            }
            Err(e) => Err(e),
        }
    }

    /// `mkdirat` + `chmod` so the mode is exact whatever the umask.
    pub(crate) fn create_dir(&self, rel: &str, mode: u32) -> Result<()> {
        let op = "create directory";
        self.inject(FsOp::CreateDir { path: rel })
            .map_err(|e| self.io_error(op, rel, e))?;
        rustix::fs::mkdirat(self.root_fd(), rel, Mode::from_raw_mode(mode))
            .map_err(|e| self.io_error(op, rel, e.into()))?;
        rustix::fs::chmodat(
            self.root_fd(),
            rel,
            Mode::from_raw_mode(mode),
            AtFlags::empty(),
        )
        .map_err(|e| self.io_error("chmod", rel, e.into()))
    }

    /// Opens directory `rel` (not following a final symlink) for reading, fsync and `*at` calls.
    pub(crate) fn open_dir(&self, rel: &str) -> io::Result<OwnedFd> {
        let path = if rel.is_empty() { "." } else { rel };
        Ok(rustix::fs::openat(
            self.root_fd(),
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?)
    }

    /// Creates (truncating) file `rel` with exactly `mode`, returned as a writer that keeps
    /// consulting the injector on every write.
    pub(crate) fn create_file(self: &Arc<Self>, rel: &str, mode: u32) -> Result<SeamFile> {
        let op = "create file";
        self.inject(FsOp::CreateFile { path: rel })
            .map_err(|e| self.io_error(op, rel, e))?;
        let fd = rustix::fs::openat(
            self.root_fd(),
            rel,
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        )
        .map_err(|e| self.io_error(op, rel, e.into()))?;
        rustix::fs::fchmod(&fd, Mode::from_raw_mode(mode))
            .map_err(|e| self.io_error("chmod", rel, e.into()))?;
        Ok(SeamFile {
            fs: Arc::clone(self),
            rel: rel.to_owned(),
            file: File::from(fd),
        })
    }

    /// Writes a whole small file: create, write, optionally fsync, close.
    pub(crate) fn write_file(
        self: &Arc<Self>,
        rel: &str,
        data: &[u8],
        mode: u32,
        sync: bool,
    ) -> Result<()> {
        let mut file = self.create_file(rel, mode)?;
        file.write_all(data)
            .map_err(|e| self.io_error("write", rel, e))?;
        if sync {
            file.sync()?;
        }
        Ok(())
    }

    pub(crate) fn sync_dir(&self, rel: &str) -> Result<()> {
        let op = "fsync directory";
        self.inject(FsOp::SyncDir { path: rel })
            .map_err(|e| self.io_error(op, rel, e))?;
        let fd = self.open_dir(rel).map_err(|e| self.io_error(op, rel, e))?;
        rustix::fs::fsync(&fd).map_err(|e| self.io_error(op, rel, e.into()))
    }

    pub(crate) fn sync_fs(&self, rel: &str) -> Result<()> {
        let op = "syncfs";
        self.inject(FsOp::SyncFs { path: rel })
            .map_err(|e| self.io_error(op, rel, e))?;
        let fd = self.open_dir(rel).map_err(|e| self.io_error(op, rel, e))?;
        rustix::fs::syncfs(&fd).map_err(|e| self.io_error(op, rel, e.into()))
    }

    /// Renames `from` to `to`, refusing to replace anything at `to` (`EEXIST`), like Go's
    /// `os.Rename` refuses an existing directory. Errors are returned raw so callers can
    /// tell `EEXIST` apart.
    pub(crate) fn rename_noreplace(&self, from: &str, to: &str) -> io::Result<()> {
        self.inject(FsOp::Rename { from, to })?;
        let root = self.root_fd();
        match rustix::fs::renameat_with(root, from, root, to, RenameFlags::NOREPLACE) {
            Ok(()) => Ok(()),
            // Filesystems without RENAME_NOREPLACE: check, then rename. The window between the
            // two is only a problem for concurrent writers of the same name, which the layer
            // store serialises anyway.
            Err(Errno::INVAL) | Err(Errno::NOSYS) => {
                match rustix::fs::statat(root, to, AtFlags::SYMLINK_NOFOLLOW) {
                    Ok(_) => return Err(Errno::EXIST.into()),
                    Err(Errno::NOENT) => {}
                    Err(e) => return Err(e.into()),
                }
                Ok(rustix::fs::renameat(root, from, root, to)?)
            }
            Err(Errno::NOTEMPTY) => Err(Errno::EXIST.into()),
            Err(e) => Err(e.into()),
        }
    }

    /// Atomically swaps `a` and `b` (both must exist).
    pub(crate) fn exchange(&self, a: &str, b: &str) -> io::Result<()> {
        self.inject(FsOp::Exchange { from: a, to: b })?;
        let root = self.root_fd();
        Ok(rustix::fs::renameat_with(
            root,
            a,
            root,
            b,
            RenameFlags::EXCHANGE,
        )?)
    }

    /// `lstat`'s file type of `rel`, `None` if absent.
    pub(crate) fn file_type(&self, rel: &str) -> io::Result<Option<FileType>> {
        match rustix::fs::statat(self.root_fd(), rel, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => Ok(Some(FileType::from_raw_mode(st.st_mode))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Reads a small file whole, refusing more than `limit` bytes (so a corrupt file cannot make
    /// us allocate without bound).
    pub(crate) fn read_small(&self, rel: &str, limit: u64) -> io::Result<ReadSmall> {
        read_small_at(self.root_fd(), rel, limit)
    }

    /// Opens a file for streaming reads.
    pub(crate) fn open_read(&self, rel: &str) -> io::Result<Option<File>> {
        match rustix::fs::openat(
            self.root_fd(),
            rel,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(Some(File::from(fd))),
            Err(Errno::NOENT) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// Lists directory `rel`; `None` if it does not exist.
    pub(crate) fn read_dir(&self, rel: &str) -> io::Result<Option<Vec<Entry>>> {
        let fd = match self.open_dir(rel) {
            Ok(fd) => fd,
            Err(e) if e.raw_os_error() == Some(Errno::NOENT.raw_os_error()) => return Ok(None),
            Err(e) => return Err(e),
        };
        read_entries(fd).map(Some)
    }

    /// Removes `rel` and everything under it, without following symlinks. Absent is success.
    /// `last`, if present in the top directory, is removed after everything else, so a crash
    /// part-way keeps the file that identifies the directory (its `cache-id`).
    pub(crate) fn remove_tree(&self, rel: &str, last: Option<&str>) -> Result<()> {
        let file_type = self
            .file_type(rel)
            .map_err(|e| self.io_error("stat", rel, e))?;
        match file_type {
            None => Ok(()),
            Some(FileType::Directory) => self.remove_dir_contents(rel, last, 0),
            Some(_) => self.remove_one(rel, false),
        }
    }

    fn remove_dir_contents(&self, rel: &str, last: Option<&str>, depth: usize) -> Result<()> {
        if depth > MAX_REMOVE_DEPTH {
            return Err(self.io_error(
                "remove",
                rel,
                io::Error::other("directory tree too deep to remove"),
            ));
        }
        let entries = match self
            .read_dir(rel)
            .map_err(|e| self.io_error("read directory", rel, e))?
        {
            Some(entries) => entries,
            None => return Ok(()),
        };
        let mut deferred = None;
        for entry in entries {
            let Some(name) = entry.utf8_name() else {
                // Names we never create; `*at` calls with raw bytes would work, but messages and
                // the injector speak UTF-8, so refuse rather than guess.
                return Err(self.io_error(
                    "remove",
                    rel,
                    io::Error::other(format!("entry with non-UTF-8 name {:?}", entry.name)),
                ));
            };
            if Some(name) == last {
                deferred = Some(format!("{rel}/{name}"));
                continue;
            }
            let child = format!("{rel}/{name}");
            if entry.file_type == FileType::Directory {
                self.remove_dir_contents(&child, None, depth + 1)?;
            } else {
                self.remove_one(&child, false)?;
            }
        }
        if let Some(child) = deferred {
            self.remove_one(&child, false)?;
        }
        self.remove_one(rel, true)
    }

    fn remove_one(&self, rel: &str, dir: bool) -> Result<()> {
        let op = "remove";
        self.inject(FsOp::Remove { path: rel })
            .map_err(|e| self.io_error(op, rel, e))?;
        let flags = if dir {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        match rustix::fs::unlinkat(self.root_fd(), rel, flags) {
            Ok(()) | Err(Errno::NOENT) => Ok(()),
            Err(e) => Err(self.io_error(op, rel, e.into())),
        }
    }
}

/// Reads `rel` under `dir` whole (not following a final symlink), refusing more than `limit`
/// bytes. A small file costs one read for its bytes and one for the end: layer metadata files
/// are tens of bytes, and a store opens five per layer.
fn read_small_at(dir: BorrowedFd<'_>, rel: &str, limit: u64) -> io::Result<ReadSmall> {
    let fd = match rustix::fs::openat(
        dir,
        rel,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(ReadSmall::Missing),
        Err(e) => return Err(e.into()),
    };
    // Read straight into the vector's spare room (nothing zeroed first: a store reads five of
    // these per layer at open), never holding more than `limit + 1` bytes.
    let cap = usize::try_from(limit.saturating_add(1)).unwrap_or(usize::MAX);
    let mut buf: Vec<u8> = Vec::with_capacity(cap.min(SMALL_READ_START));
    loop {
        if buf.len() == buf.capacity() {
            buf.reserve_exact((buf.capacity() * 2).min(cap) - buf.len());
        }
        match rustix::io::read(&fd, rustix::buffer::spare_capacity(&mut buf)) {
            Ok(0) => return Ok(ReadSmall::Data(buf)),
            Ok(_) if buf.len() as u64 > limit => return Ok(ReadSmall::TooLarge),
            Ok(_) | Err(Errno::INTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// What [`read_small_at`] allocates first: every layer metadata file but `descriptor.json`
/// fits (a digest is 71 bytes).
const SMALL_READ_START: usize = 128;

/// The outcome of [`Fs::read_small`].
#[derive(Debug)]
pub(crate) enum ReadSmall {
    Data(Vec<u8>),
    Missing,
    TooLarge,
}

fn read_entries(fd: OwnedFd) -> io::Result<Vec<Entry>> {
    let mut dir = Dir::read_from(&fd)?;
    let mut entries = Vec::new();
    while let Some(entry) = dir.read() {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let mut file_type = entry.file_type();
        if file_type == FileType::Unknown {
            let st = rustix::fs::statat(&fd, entry.file_name(), AtFlags::SYMLINK_NOFOLLOW)?;
            file_type = FileType::from_raw_mode(st.st_mode);
        }
        entries.push(Entry {
            name: OsString::from_vec(name.to_vec()),
            file_type,
        });
    }
    entries.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(entries)
}

/// A file being written, that consults the injector before each write.
#[derive(Debug)]
pub(crate) struct SeamFile {
    fs: Arc<Fs>,
    rel: String,
    file: File,
}

impl SeamFile {
    pub(crate) fn rel(&self) -> &str {
        &self.rel
    }

    /// `fsync`s the file.
    pub(crate) fn sync(&mut self) -> Result<()> {
        let op = "fsync";
        self.fs
            .inject(FsOp::SyncFile { path: &self.rel })
            .map_err(|e| self.fs.io_error(op, &self.rel, e))?;
        self.file
            .sync_all()
            .map_err(|e| self.fs.io_error(op, &self.rel, e))
    }
}

impl Write for SeamFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.fs.inject(FsOp::Write {
            path: &self.rel,
            len: buf.len(),
        })?;
        self.file.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
