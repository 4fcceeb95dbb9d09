//! Where an image's files come from: a directory (OCI layout) or a tar archive (docker save,
//! OCI archive) read in place through an index of its members.
//!
//! A tar archive is indexed in one pass that seeks over member data, then each member is read
//! with positioned reads (`pread`) straight from the file: nothing is extracted and no layer
//! is held in memory.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use layer_archive::codec::{EntryKind, Limits, TarReader};

use super::LoadError;

/// Most members an archive may have: a docker-save archive has a handful per layer, and the
/// index is kept in memory.
const MAX_MEMBERS: usize = 100_000;
/// Most symlinks followed to find one member.
const MAX_LINK_HOPS: usize = 16;

/// A readable set of named files.
#[derive(Debug)]
pub enum Source {
    /// A directory (an OCI layout, or an extracted docker-save archive).
    Dir(PathBuf),
    /// A tar archive, indexed.
    Tar(TarIndex),
}

impl Source {
    /// Opens member `name` (a slash-separated path inside the image); returns it with its size.
    pub fn open(&self, name: &str) -> Result<(Box<dyn Read + Send + '_>, u64), LoadError> {
        let clean = normalize(name).ok_or_else(|| LoadError::BadPath(name.to_owned()))?;
        match self {
            Source::Dir(root) => {
                let path = root.join(&clean);
                // The path is clean, but a symlink inside the layout could still point out.
                let real = path
                    .canonicalize()
                    .map_err(|e| LoadError::Missing(name.to_owned(), e.to_string()))?;
                let real_root = root
                    .canonicalize()
                    .map_err(|e| LoadError::io(root.display().to_string(), e))?;
                if !real.starts_with(&real_root) {
                    return Err(LoadError::BadPath(name.to_owned()));
                }
                let (file, len) = open_regular(&real, name)?;
                Ok((Box::new(file), len))
            }
            Source::Tar(index) => {
                let m = index.resolve(&clean)?;
                Ok((
                    Box::new(Section {
                        file: &index.file,
                        pos: m.offset,
                        end: m.offset + m.size,
                    }),
                    m.size,
                ))
            }
        }
    }

    /// Whether member `name` exists (as a file).
    pub fn exists(&self, name: &str) -> bool {
        self.open(name).is_ok()
    }
}

/// Opens the file `path` (member `name` of a directory source) for reading, refusing
/// anything but a regular file before a byte is read. The open itself never blocks: a FIFO
/// (or a device) planted in a layout would make a blocking `open` wait for a writer forever,
/// so it is opened `O_NONBLOCK` (and `O_NOFOLLOW`: `path` is already resolved), checked
/// with `fstat`, and only a regular file gets its blocking mode back.
pub fn open_regular(path: &Path, name: &str) -> Result<(File, u64), LoadError> {
    use rustix::fs::{FileType, Mode, OFlags};
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::NOCTTY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| LoadError::Missing(name.to_owned(), io::Error::from(e).to_string()))?;
    let io_err = |e: rustix::io::Errno| LoadError::io(path.display().to_string(), e.into());
    let st = rustix::fs::fstat(&fd).map_err(io_err)?;
    let kind = FileType::from_raw_mode(st.st_mode);
    if kind != FileType::RegularFile {
        return Err(LoadError::NotRegular(name.to_owned(), file_kind(kind)));
    }
    let flags = rustix::fs::fcntl_getfl(&fd).map_err(io_err)?;
    rustix::fs::fcntl_setfl(&fd, flags - OFlags::NONBLOCK).map_err(io_err)?;
    Ok((File::from(fd), st.st_size as u64))
}

/// A file type in words, for errors.
pub fn file_kind(kind: rustix::fs::FileType) -> &'static str {
    use rustix::fs::FileType;
    match kind {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symlink",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "of an unknown type",
    }
}

/// Cleans a member path: no leading `/` or `./`, no `.` parts, `..` resolved; `None` when
/// `..` would climb above the top.
pub fn normalize(name: &str) -> Option<String> {
    let mut parts: Vec<&str> = Vec::new();
    for part in name.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            p => parts.push(p),
        }
    }
    if parts.is_empty() {
        return None;
    }
    Some(parts.join("/"))
}

#[derive(Debug, Clone)]
enum Member {
    File { offset: u64, size: u64 },
    Symlink(String),
    Hardlink(String),
}

/// Where each member of a tar archive is.
#[derive(Debug)]
pub struct TarIndex {
    file: File,
    members: HashMap<String, Member>,
}

/// An error and its sources, on one line.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// A resolved regular member.
#[derive(Debug, Clone, Copy)]
struct Span {
    offset: u64,
    size: u64,
}

impl TarIndex {
    /// Reads the headers of every member (seeking over data). `what` names the archive in
    /// errors.
    pub fn build(file: File, what: &str) -> Result<TarIndex, LoadError> {
        let mut members = HashMap::new();
        {
            // The workspace's one tar codec, as Go's archive/tar (docker load's) reads it.
            let mut reader = TarReader::seeking(&file, Limits::default());
            while let Some(header) = reader
                .next_entry()
                .map_err(|e| LoadError::Corrupt(what.to_owned(), error_chain(&e)))?
            {
                if members.len() >= MAX_MEMBERS {
                    return Err(LoadError::Corrupt(
                        what.to_owned(),
                        format!("more than {MAX_MEMBERS} members"),
                    ));
                }
                let Some(name) = normalize(&String::from_utf8_lossy(&header.name)) else {
                    continue;
                };
                let link = || String::from_utf8_lossy(&header.link_name).into_owned();
                let member = match header.kind {
                    // Members are read by offset: a sparse one has no such bytes.
                    EntryKind::Regular if header.is_sparse() => {
                        return Err(LoadError::Corrupt(
                            what.to_owned(),
                            format!("member {name} is a sparse file"),
                        ));
                    }
                    EntryKind::Regular => Member::File {
                        offset: reader.position(),
                        size: header.stored_size,
                    },
                    EntryKind::Symlink => Member::Symlink(link()),
                    EntryKind::HardLink => Member::Hardlink(link()),
                    _ => continue,
                };
                members.insert(name, member);
            }
        }
        let len = file
            .metadata()
            .map_err(|e| LoadError::io(what.to_owned(), e))?
            .len();
        // A truncated archive whose last member claims more bytes than there are.
        for (name, m) in &members {
            if let Member::File { offset, size } = m
                && offset.checked_add(*size).is_none_or(|end| end > len)
            {
                return Err(LoadError::Corrupt(
                    what.to_owned(),
                    format!("member {name} is truncated"),
                ));
            }
        }
        Ok(TarIndex { file, members })
    }

    fn resolve(&self, name: &str) -> Result<Span, LoadError> {
        let mut current = name.to_owned();
        for _ in 0..MAX_LINK_HOPS {
            match self.members.get(&current) {
                None => {
                    return Err(LoadError::Missing(
                        name.to_owned(),
                        "not in the archive".into(),
                    ));
                }
                Some(Member::File { offset, size }) => {
                    return Ok(Span {
                        offset: *offset,
                        size: *size,
                    });
                }
                Some(Member::Hardlink(target)) => {
                    current =
                        normalize(target).ok_or_else(|| LoadError::BadPath(target.clone()))?;
                }
                Some(Member::Symlink(target)) => {
                    // Relative to the link's directory; absolute means the archive's top.
                    let joined = if target.starts_with('/') {
                        target.clone()
                    } else {
                        match Path::new(&current).parent() {
                            Some(dir) => format!("{}/{target}", dir.to_string_lossy()),
                            None => target.clone(),
                        }
                    };
                    current =
                        normalize(&joined).ok_or_else(|| LoadError::BadPath(target.clone()))?;
                }
            }
        }
        Err(LoadError::Missing(
            name.to_owned(),
            "too many levels of links".into(),
        ))
    }
}

/// One member's bytes, read with `pread` so several can be open at once.
struct Section<'a> {
    file: &'a File,
    pos: u64,
    end: u64,
}

impl Read for Section<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let left = self.end - self.pos;
        if left == 0 {
            return Ok(0);
        }
        let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        let n = self.file.read_at(&mut buf[..want], self.pos)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "archive member ends early",
            ));
        }
        self.pos += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::normalize;

    #[test]
    fn normalize_cleans_and_refuses_climbing_out() {
        assert_eq!(normalize("./a/./b").as_deref(), Some("a/b"));
        assert_eq!(
            normalize("/blobs/sha256/x").as_deref(),
            Some("blobs/sha256/x")
        );
        assert_eq!(normalize("a/../b").as_deref(), Some("b"));
        assert_eq!(normalize("../etc/passwd"), None);
        assert_eq!(normalize("a/../../b"), None);
        assert_eq!(normalize("."), None);
    }
}
