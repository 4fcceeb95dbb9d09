//! Where file bodies go during disassembly ([`FilePutter`]) and come from during
//! reassembly ([`FileGetter`]).

use std::collections::HashMap;
#[cfg(target_os = "linux")]
use std::fs::File;
use std::io::{self, Read};
#[cfg(target_os = "linux")]
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
#[cfg(target_os = "linux")]
use std::path::Path;
use std::sync::Arc;

#[cfg(target_os = "linux")]
use rustix::fs::{Mode, OFlags};
#[cfg(target_os = "linux")]
use rustix::io::Errno;

use crate::crc::{Crc64, Crc64Bytes};

/// Stores file bodies while an archive is disassembled (Go `storage.FilePutter`).
///
/// The disassembler pushes each body in chunks (`begin`, `write_chunk`…, `end`) so that it
/// never has to hold a whole file and can pass the same bytes on to its reader in one pass.
/// [`FilePutter::put`] is the pull-style convenience Go offers, built on the same calls.
/// The CRC-64 is computed by the caller; putters only store.
pub trait FilePutter {
    /// A body named `name` of `size` bytes starts.
    fn begin(&mut self, name: &[u8], size: u64) -> io::Result<()>;
    /// The next chunk of the current body.
    fn write_chunk(&mut self, data: &[u8]) -> io::Result<()>;
    /// The current body is complete.
    fn end(&mut self) -> io::Result<()>;

    /// Stores the whole of `body` under `name`; returns its length and CRC-64 (Go `Put`).
    fn put(&mut self, name: &[u8], body: &mut dyn Read) -> io::Result<(u64, Crc64Bytes)> {
        self.begin(name, 0)?;
        let mut crc = Crc64::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            crc.update(&buf[..n]);
            self.write_chunk(&buf[..n])?;
        }
        self.end()?;
        Ok((crc.len(), crc.bytes()))
    }
}

impl<P: FilePutter + ?Sized> FilePutter for &mut P {
    fn begin(&mut self, name: &[u8], size: u64) -> io::Result<()> {
        (**self).begin(name, size)
    }
    fn write_chunk(&mut self, data: &[u8]) -> io::Result<()> {
        (**self).write_chunk(data)
    }
    fn end(&mut self) -> io::Result<()> {
        (**self).end()
    }
}

/// Supplies file bodies for reassembly (Go `storage.FileGetter`).
pub trait FileGetter {
    /// A readable body.
    type Body: Read;

    /// Opens the body recorded under `name`.
    fn get(&mut self, name: &[u8]) -> io::Result<Self::Body>;

    /// The body's length when known up front (lets the assembler check sizes without an
    /// extra read).
    fn body_len(_body: &Self::Body) -> Option<u64> {
        None
    }
}

impl<G: FileGetter + ?Sized> FileGetter for &mut G {
    type Body = G::Body;
    fn get(&mut self, name: &[u8]) -> io::Result<Self::Body> {
        (**self).get(name)
    }
    fn body_len(body: &Self::Body) -> Option<u64> {
        G::body_len(body)
    }
}

/// A body held by [`BufferFileGetPutter`], shared so that reading needs no copy.
#[derive(Debug, Clone)]
pub struct SharedBody(Arc<Vec<u8>>);

impl AsRef<[u8]> for SharedBody {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

/// A regular file opened by [`PathFileGetter`], with its length at open time.
#[cfg(target_os = "linux")]
#[derive(Debug)]
pub struct FileBody {
    file: File,
    len: u64,
}

#[cfg(target_os = "linux")]
impl FileBody {
    /// Reads from `offset` without moving the file position (`pread`), for readers that
    /// take pieces of one file out of order.
    pub fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        std::os::unix::fs::FileExt::read_at(&self.file, buf, offset)
    }
}

#[cfg(target_os = "linux")]
impl Read for FileBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.file.read(buf)
    }
}

/// Stores nothing (Go `NewDiscardFilePutter`); the CRCs are still computed by the caller.
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardFilePutter;

impl FilePutter for DiscardFilePutter {
    fn begin(&mut self, _: &[u8], _: u64) -> io::Result<()> {
        Ok(())
    }
    fn write_chunk(&mut self, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
    fn end(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Keeps bodies in memory by exact name (Go `NewBufferFileGetPutter`); a later put of the
/// same name replaces the earlier one. For tests and small archives only.
#[derive(Debug, Default)]
pub struct BufferFileGetPutter {
    files: HashMap<Vec<u8>, SharedBody>,
    current: Option<(Vec<u8>, Vec<u8>)>,
}

impl BufferFileGetPutter {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// The stored body of `name`.
    pub fn body(&self, name: &[u8]) -> Option<&[u8]> {
        self.files.get(name).map(|b| b.0.as_slice())
    }

    /// Stores `body` under `name` directly.
    pub fn insert(&mut self, name: impl Into<Vec<u8>>, body: impl Into<Vec<u8>>) {
        self.files
            .insert(name.into(), SharedBody(Arc::new(body.into())));
    }
}

impl FilePutter for BufferFileGetPutter {
    fn begin(&mut self, name: &[u8], size: u64) -> io::Result<()> {
        self.current = Some((
            name.to_vec(),
            Vec::with_capacity(size.min(1 << 20) as usize),
        ));
        Ok(())
    }
    fn write_chunk(&mut self, data: &[u8]) -> io::Result<()> {
        match &mut self.current {
            Some((_, body)) => {
                body.extend_from_slice(data);
                Ok(())
            }
            None => Err(super::io_other("write_chunk without begin")),
        }
    }
    fn end(&mut self) -> io::Result<()> {
        let (name, body) = self
            .current
            .take()
            .ok_or_else(|| super::io_other("end without begin"))?;
        self.files.insert(name, SharedBody(Arc::new(body)));
        Ok(())
    }
}

impl FileGetter for BufferFileGetPutter {
    type Body = io::Cursor<SharedBody>;
    fn get(&mut self, name: &[u8]) -> io::Result<Self::Body> {
        match self.files.get(name) {
            Some(body) => Ok(io::Cursor::new(body.clone())),
            None => Err(io::Error::new(io::ErrorKind::NotFound, "no such file")),
        }
    }
    fn body_len(body: &Self::Body) -> Option<u64> {
        Some(body.get_ref().0.len() as u64)
    }
}

/// Reads bodies from a directory tree, typically the extracted layer (Go
/// `NewPathFileGetter`), without ever leaving it.
///
/// Go joins `root` and the name, so `../../etc/hostname` or a symlink in the tree reads
/// host files. Here every lookup is confined to the root by [`safe_root::open_beneath`]
/// (`openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` relative to the root's descriptor,
/// or safe-root's fd walk with the same rules where `openat2` is unusable; safe-root's
/// policy decides which, the same one the layer applier follows): `..` and absolute
/// symlinks resolve inside the root. Only regular files are returned (a FIFO would block
/// the reader forever).
///
/// Linux only (`openat2`, `O_PATH`); elsewhere tarsplit has no path getter, and a caller
/// supplies its own [`FileGetter`].
#[cfg(target_os = "linux")]
#[derive(Debug)]
pub struct PathFileGetter {
    root: OwnedFd,
    /// [`safe_root::open_beneath`], or [`safe_root::walk_beneath`] alone in tests.
    resolve: fn(BorrowedFd<'_>, &[u8], OFlags) -> io::Result<OwnedFd>,
    /// The directory of the previous lookup: archives list files directory by directory,
    /// so most lookups then open one component relative to it.
    last_dir: Option<(Vec<u8>, OwnedFd)>,
    /// Open with `O_NOATIME` (reading a body is no access worth recording, and it spares
    /// the kernel an atime check per read); dropped after the first `EPERM`, which the
    /// kernel returns for files we neither own nor may override (`CAP_FOWNER`).
    noatime: bool,
}

#[cfg(target_os = "linux")]
impl PathFileGetter {
    /// A getter rooted at `root`.
    pub fn new(root: impl AsRef<Path>) -> io::Result<Self> {
        let root = rustix::fs::open(
            root.as_ref(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(PathFileGetter {
            root,
            resolve: safe_root::open_beneath,
            last_dir: None,
            noatime: true,
        })
    }

    /// A second getter on the same root (its own descriptor of it), e.g. for another thread.
    pub fn try_clone(&self) -> io::Result<Self> {
        Ok(PathFileGetter {
            root: self.root.try_clone()?,
            resolve: self.resolve,
            last_dir: None,
            noatime: self.noatime,
        })
    }

    /// Forces the fallback walk (for tests of kernels without `openat2`).
    pub fn without_openat2(mut self) -> Self {
        self.resolve = safe_root::walk_beneath;
        self
    }

    fn open(&mut self, name: &[u8]) -> io::Result<OwnedFd> {
        if name.contains(&0) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "file name contains a NUL byte",
            ));
        }
        let relative = trim_leading_slashes(name);
        match self.open_flags(relative) {
            Err(e) if self.noatime && e.raw_os_error() == Some(Errno::PERM.raw_os_error()) => {
                self.noatime = false;
                self.open_flags(relative)
            }
            other => other,
        }
    }

    fn open_flags(&mut self, relative: &[u8]) -> io::Result<OwnedFd> {
        let mut flags = OFlags::RDONLY | OFlags::NOCTTY | OFlags::NONBLOCK;
        if self.noatime {
            flags |= OFlags::NOATIME;
        }
        if let Some(fd) = self.open_in_cached_dir(relative, flags)? {
            return Ok(fd);
        }
        (self.resolve)(self.root.as_fd(), relative, flags)
    }

    /// Opens `dir/base` as `base` relative to a cached descriptor of `dir` (itself resolved
    /// inside the root). `None` means "use the full lookup": unusual names, or a final
    /// symlink, which the full lookup then resolves inside the root.
    fn open_in_cached_dir(
        &mut self,
        relative: &[u8],
        flags: OFlags,
    ) -> io::Result<Option<OwnedFd>> {
        let Some(slash) = memchr::memrchr(b'/', relative) else {
            return Ok(None);
        };
        let (dir, base) = (&relative[..slash], &relative[slash + 1..]);
        let plain = |c: &[u8]| !c.is_empty() && c != b"." && c != b"..";
        // `dir` is plain components joined by `/`: SIMD scans, not a step per component (a
        // 2,048-level name has 2,048).
        if !plain(base) || dir.first() == Some(&b'/') || !crate::clean::is_clean(dir) {
            return Ok(None);
        }
        if self.last_dir.as_ref().is_none_or(|(path, _)| path != dir) {
            let fd = match self.descend_from_last(dir) {
                Some(fd) => fd,
                None => {
                    match (self.resolve)(self.root.as_fd(), dir, OFlags::PATH | OFlags::DIRECTORY) {
                        Ok(fd) => fd,
                        Err(_) => return Ok(None),
                    }
                }
            };
            self.last_dir = Some((dir.to_vec(), fd));
        }
        let (_, dir_fd) = self.last_dir.as_ref().expect("set above");
        match rustix::fs::openat(
            dir_fd,
            base,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => Ok(Some(fd)),
            Err(Errno::LOOP) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

#[cfg(target_os = "linux")]
impl PathFileGetter {
    /// Most components [`PathFileGetter::descend_from_last`] walks; deeper jumps take one
    /// confined lookup from the root instead.
    const MAX_DESCENT: usize = 8;

    /// `dir` opened from the cached directory when it lies a few plain components below it
    /// (the next directory of a walk: in a deep tree every file is one level further down),
    /// one `openat(O_NOFOLLOW)` per component: O(1) per directory instead of a lookup of the
    /// whole path from the root (O(depth), quadratic over a deep tree). Any symlink or error
    /// on the way gives `None`, and the caller's confined lookup from the root decides.
    fn descend_from_last(&self, dir: &[u8]) -> Option<OwnedFd> {
        let (last, last_fd) = self.last_dir.as_ref()?;
        let rest = dir.strip_prefix(last.as_slice())?.strip_prefix(b"/")?;
        let mut cur: Option<OwnedFd> = None;
        for (i, comp) in rest.split(|&b| b == b'/').enumerate() {
            if i == Self::MAX_DESCENT {
                return None;
            }
            let at = cur.as_ref().map_or(last_fd.as_fd(), |fd| fd.as_fd());
            let fd = rustix::fs::openat(
                at,
                comp,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ok()?;
            cur = Some(fd);
        }
        cur
    }
}

#[cfg(target_os = "linux")]
fn trim_leading_slashes(mut name: &[u8]) -> &[u8] {
    while let [b'/', rest @ ..] = name {
        name = rest;
    }
    name
}

#[cfg(target_os = "linux")]
impl FileGetter for PathFileGetter {
    type Body = FileBody;
    fn get(&mut self, name: &[u8]) -> io::Result<FileBody> {
        let fd = self.open(name)?;
        let st = rustix::fs::fstat(&fd)?;
        if !rustix::fs::FileType::from_raw_mode(st.st_mode).is_file() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "not a regular file",
            ));
        }
        Ok(FileBody {
            file: File::from(fd),
            len: st.st_size as u64,
        })
    }
    fn body_len(body: &FileBody) -> Option<u64> {
        Some(body.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crc::crc64;

    fn read_all(mut r: impl Read) -> Vec<u8> {
        let mut v = Vec::new();
        r.read_to_end(&mut v).unwrap();
        v
    }

    #[test]
    fn buffer_get_put() {
        let mut b = BufferFileGetPutter::new();
        for (name, body) in [("foo", "foo"), ("bar", "bar")] {
            let (n, crc) = b.put(name.as_bytes(), &mut body.as_bytes()).unwrap();
            assert_eq!((n, crc), (3, crc64(body.as_bytes())));
        }
        assert_eq!(read_all(b.get(b"foo").unwrap()), b"foo");
        let err = b.get(b"nope").err().unwrap();
        assert_eq!(err.to_string(), "no such file");
        let (n, crc) = DiscardFilePutter.put(b"baz", &mut &b"bazz"[..]).unwrap();
        assert_eq!((n, crc), (4, crc64(b"bazz")));
    }

    /// Files one level further down each time are opened from the cached directory, and a
    /// symlink met on the way down is resolved inside the root (by the full lookup), never
    /// followed outside it.
    #[cfg(target_os = "linux")]
    #[test]
    fn path_getter_descends_from_its_cached_directory() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        let mut dir = root.clone();
        let mut names = Vec::new();
        let mut name = String::new();
        for level in 0..300 {
            dir.push("d");
            name.push_str("d/");
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(dir.join("f"), format!("{level}")).unwrap();
            names.push(format!("{name}f"));
        }
        std::fs::create_dir_all(root.join("d/in")).unwrap();
        std::fs::write(root.join("d/in/f"), b"inside").unwrap();
        std::fs::create_dir_all(outer.path().join("in")).unwrap();
        std::fs::write(outer.path().join("in/f"), b"host").unwrap();
        // `d/d/link -> /d/in`: inside the root that is `<root>/d/in`.
        std::os::unix::fs::symlink("/d/in", root.join("d/d/link")).unwrap();
        let mut g = PathFileGetter::new(&root).unwrap();
        for (level, name) in names.iter().enumerate() {
            assert_eq!(
                read_all(g.get(name.as_bytes()).unwrap()),
                format!("{level}").as_bytes()
            );
        }
        assert_eq!(read_all(g.get(b"d/f").unwrap()), b"0");
        assert_eq!(read_all(g.get(b"d/d/link/f").unwrap()), b"inside");
        assert_eq!(read_all(g.get(b"d/d/f").unwrap()), b"1");
        assert_eq!(read_all(g.get(b"d/d/link/f").unwrap()), b"inside");
    }

    /// Reading a body leaves the file's atime as it was (relatime would update an atime
    /// older than the mtime on the first read).
    #[cfg(target_os = "linux")]
    #[test]
    fn path_getter_leaves_atime_alone() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        let path = dir.path().join("d/f");
        std::fs::write(&path, b"body").unwrap();
        let old = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_times(std::fs::FileTimes::new().set_accessed(old))
            .unwrap();
        let mut g = PathFileGetter::new(dir.path()).unwrap();
        assert_eq!(read_all(g.get(b"d/f").unwrap()), b"body");
        assert_eq!(read_all(g.get(b"/d/../d/f").unwrap()), b"body");
        assert_eq!(std::fs::metadata(&path).unwrap().accessed().unwrap(), old);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn path_getter_stays_inside_root() {
        let outer = tempfile::tempdir().unwrap();
        let root = outer.path().join("root");
        std::fs::create_dir_all(root.join("d")).unwrap();
        std::fs::write(outer.path().join("secret"), b"host data").unwrap();
        std::fs::write(root.join("d/f"), b"layer data").unwrap();
        std::os::unix::fs::symlink("../../secret", root.join("d/up")).unwrap();
        std::os::unix::fs::symlink("/secret", root.join("abs")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            root.join("fifo"),
            rustix::fs::FileType::Fifo,
            Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        for walk_only in [false, true] {
            let mut g = PathFileGetter::new(&root).unwrap();
            if walk_only {
                g = g.without_openat2();
            }
            assert_eq!(read_all(g.get(b"d/f").unwrap()), b"layer data");
            assert_eq!(read_all(g.get(b"/d/../d/./f").unwrap()), b"layer data");
            assert_eq!(read_all(g.get(b"../../../d/f").unwrap()), b"layer data");
            assert!(g.get(b"../secret").is_err(), "walk_only={walk_only}");
            assert!(g.get(b"d/up").is_err(), "walk_only={walk_only}");
            assert!(g.get(b"abs").is_err(), "walk_only={walk_only}");
            assert!(g.get(b"fifo").is_err(), "walk_only={walk_only}");
            assert!(g.get(b"d").is_err(), "walk_only={walk_only}");
            assert!(g.get(b"a\0b").is_err());
        }
    }
}
