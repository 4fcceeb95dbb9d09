//! The native diff: a streaming tar of a layer's upper dir in Docker's (AUFS) whiteout form.
//!
//! Entries come in Go `filepath.WalkDir` order (pre-order, names sorted bytewise) with the
//! headers Go's `archive/tar` writes for Docker's `TarWithOptions` (PAX format requested):
//! a plain ustar-magic block when everything fits, PAX records before it otherwise; mode with
//! the file-type bits; mtime truncated to the second; owner names looked up on the host.
//! Overlay's own markers are converted back:
//!
//! * a whiteout (char device 0/0) `d/name` becomes an empty regular file `d/.wh.name`, mode
//!   0600, keeping owner and mtime;
//! * an opaque directory (`trusted.overlay.opaque=y`) is followed by an empty regular file
//!   `dir/.wh..wh..opq` with the directory's permission bits and owner and a zero mtime.
//!
//! Under an ID mapping owners are mapped back host → container (whiteouts and `.wh.` names
//! excepted, as moby's tar appender does; owner *names* stay the host's, as Go looks them up
//! before the remap); with recorded owners they come from `user.containers.override_stat`.
//!
//! The tar is produced as the reader pulls: memory holds one header and one directory listing
//! at a time. Files are opened `O_NOFOLLOW` relative to their directory's descriptor, so a
//! container that swaps a directory for a symlink cannot make us read outside the layer.

use std::collections::HashMap;
use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Stat};

use super::entries::{is_whiteout, sorted_names};
use super::features::read_xattr;
use crate::error::{Error, Result};
use crate::ownership::Ownership;
use layer_archive::override_stat::{OVERRIDE_STAT_XATTR, OverrideStat};

const BLOCK: usize = 512;

struct Frame {
    fd: OwnedFd,
    rel: PathBuf,
    names: Vec<OsString>,
    next: usize,
}

/// A `Read` producing the tar of one upper dir.
pub(crate) struct UpperTar {
    id: String,
    root: PathBuf,
    opaque_name: String,
    stack: Vec<Frame>,
    pending: Vec<u8>,
    pending_pos: usize,
    file: Option<(File, PathBuf, u64, u64)>,
    hardlinks: HashMap<(u64, u64), Vec<u8>>,
    ownership: Ownership,
    done: bool,
}

impl std::fmt::Debug for UpperTar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpperTar")
            .field("id", &self.id)
            .field("root", &self.root)
            .finish()
    }
}

impl UpperTar {
    pub(crate) fn new(
        id: &str,
        upper: &Path,
        xattr_prefix: &str,
        ownership: &Ownership,
    ) -> Result<Self> {
        let fd = rustix::fs::open(
            upper,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| Error::io("open", upper, e.into()))?;
        let names = sorted_names(&fd, upper)?;
        Ok(UpperTar {
            id: id.to_string(),
            root: upper.to_path_buf(),
            opaque_name: format!("{xattr_prefix}opaque"),
            stack: vec![Frame {
                fd,
                rel: PathBuf::new(),
                names,
                next: 0,
            }],
            pending: Vec::with_capacity(4 * BLOCK),
            pending_pos: 0,
            file: None,
            hardlinks: HashMap::new(),
            ownership: ownership.clone(),
            done: false,
        })
    }

    fn fail(&self, what: String) -> io::Error {
        io::Error::other(Error::Other(format!(
            "overlay2: diff of layer {}: {what}",
            self.id
        )))
    }

    /// Queues the next entry's header(s) and opens its content. `false` at the end.
    fn next_entry(&mut self) -> Result<bool> {
        loop {
            let Some(frame) = self.stack.last_mut() else {
                return Ok(false);
            };
            if frame.next >= frame.names.len() {
                self.stack.pop();
                continue;
            }
            let name = frame.names[frame.next].clone();
            frame.next += 1;
            let rel = frame.rel.join(&name);
            let full = self.root.join(&rel);
            let st = match rustix::fs::statat(&frame.fd, &name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                // Gone since the listing (a running container): it is simply not in the diff.
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(Error::io("lstat", full, e.into())),
            };
            let parent_fd = &frame.fd;
            let mut header = EntryHeader::from_stat(&st);
            match container_owner(&self.ownership, &full, &name, &st)? {
                Owner::OnDisk => {}
                // moby's names stay those of the host IDs (Go looks them up before the remap).
                Owner::Mapped(uid, gid) => (header.uid, header.gid) = (uid.into(), gid.into()),
                // The names go with the recorded owner, not with the one on disk.
                Owner::Recorded(uid, gid) => {
                    (header.uid, header.gid) = (uid.into(), gid.into());
                    header.uname = user_name(uid);
                    header.gname = group_name(gid);
                }
            }
            if !is_whiteout(&st)
                && let Some(cap) = read_xattr(&full, "security.capability")
            {
                header.xattrs.push(("security.capability".into(), cap));
            }
            let tar_name = rel.as_os_str().as_bytes().to_vec();
            let kind = FileType::from_raw_mode(st.st_mode);
            // Docker's hardlink bookkeeping covers every non-directory it archives (sockets are
            // skipped before it): a second name of an inode points at the first.
            let mut first_name = None;
            if kind != FileType::Directory && kind != FileType::Socket && st.st_nlink > 1 {
                #[allow(clippy::useless_conversion)]
                let key = (u64::from(st.st_dev), u64::from(st.st_ino));
                match self.hardlinks.get(&key) {
                    Some(first) => first_name = Some(first.clone()),
                    None => {
                        self.hardlinks.insert(key, tar_name.clone());
                    }
                }
            }
            let whiteout = is_whiteout(&st);
            if let (Some(first), false) = (&first_name, whiteout) {
                header.name = tar_name;
                header.typeflag = b'1';
                header.linkname = first.clone();
                header.write(&mut self.pending);
                return Ok(true);
            }
            match kind {
                FileType::Directory => {
                    header.name = [tar_name.as_slice(), b"/"].concat();
                    header.typeflag = b'5';
                    header.write(&mut self.pending);
                    if read_xattr(&full, &self.opaque_name).as_deref() == Some(b"y") {
                        let mut opq = header.clone();
                        opq.name = [tar_name.as_slice(), b"/.wh..wh..opq"].concat();
                        opq.typeflag = b'0';
                        opq.mode = st.st_mode & 0o777;
                        opq.mtime = None;
                        opq.write(&mut self.pending);
                    }
                    let fd = rustix::fs::openat(
                        parent_fd,
                        &name,
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| Error::io("open", &full, e.into()))?;
                    let names = sorted_names(&fd, &full)?;
                    self.stack.push(Frame {
                        fd,
                        rel,
                        names,
                        next: 0,
                    });
                }
                FileType::RegularFile => {
                    header.name = tar_name;
                    header.typeflag = b'0';
                    let fd = rustix::fs::openat(
                        parent_fd,
                        &name,
                        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| Error::io("open", &full, e.into()))?;
                    let size = st.st_size as u64;
                    header.size = size;
                    header.write(&mut self.pending);
                    if size > 0 {
                        self.file = Some((File::from(fd), full, size, padding(size)));
                    }
                }
                FileType::Symlink => {
                    let target = rustix::fs::readlinkat(parent_fd, &name, Vec::new())
                        .map_err(|e| Error::io("readlink", &full, e.into()))?;
                    header.name = tar_name;
                    header.typeflag = b'2';
                    header.linkname = target.into_bytes();
                    header.write(&mut self.pending);
                }
                FileType::CharacterDevice if whiteout => {
                    // The kernel makes whiteouts hard links of one shared inode. Docker runs its
                    // hardlink bookkeeping before the whiteout conversion, so every whiteout but
                    // the first keeps a link name pointing at the first one's original path
                    // (harmless on a regular file). Reproduced for byte-identical diffs.
                    if let Some(first) = first_name {
                        header.linkname = first;
                    }
                    let base = name.as_bytes();
                    let dir = frame_dir_prefix(&rel);
                    header.name = [dir.as_slice(), b".wh.", base].concat();
                    header.typeflag = b'0';
                    header.mode = 0o600;
                    header.write(&mut self.pending);
                }
                FileType::CharacterDevice | FileType::BlockDevice => {
                    header.name = tar_name;
                    header.typeflag =
                        if FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice {
                            b'3'
                        } else {
                            b'4'
                        };
                    #[allow(clippy::useless_conversion)]
                    let rdev = u64::from(st.st_rdev);
                    header.devmajor = u64::from(rustix::fs::major(rdev));
                    header.devminor = u64::from(rustix::fs::minor(rdev));
                    header.write(&mut self.pending);
                }
                FileType::Fifo => {
                    header.name = tar_name;
                    header.typeflag = b'6';
                    header.write(&mut self.pending);
                }
                // Docker skips sockets (and tar cannot hold them).
                _ => continue,
            }
            return Ok(true);
        }
    }
}

/// Which owner an entry is archived with.
enum Owner {
    /// The one on disk.
    OnDisk,
    /// The on-disk owner mapped back to the container's IDs.
    Mapped(u32, u32),
    /// The owner recorded in `user.containers.override_stat`.
    Recorded(u32, u32),
}

/// The owner to write for an entry (see [`Owner`]).
fn container_owner(
    ownership: &Ownership,
    full: &Path,
    name: &OsString,
    st: &Stat,
) -> Result<Owner> {
    let kind = FileType::from_raw_mode(st.st_mode);
    if ownership.records_owners()
        && matches!(kind, FileType::RegularFile | FileType::Directory)
        && let Some(value) = read_xattr(full, OVERRIDE_STAT_XATTR)
    {
        let st: OverrideStat = std::str::from_utf8(&value)
            .ok()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| {
                Error::Other(format!(
                    "{}: malformed {OVERRIDE_STAT_XATTR} {:?}",
                    full.display(),
                    String::from_utf8_lossy(&value)
                ))
            })?;
        return Ok(Owner::Recorded(st.uid, st.gid));
    }
    if ownership.is_identity() || is_whiteout(st) || name.as_bytes().starts_with(b".wh.") {
        return Ok(Owner::OnDisk);
    }
    #[allow(clippy::unnecessary_cast)]
    let (uid, gid) = (st.st_uid as u32, st.st_gid as u32);
    ownership
        .id_map()
        .to_container(uid, gid)
        .map(|(uid, gid)| Owner::Mapped(uid, gid))
        .map_err(|e| Error::Other(format!("{}: {e}", full.display())))
}

fn frame_dir_prefix(rel: &Path) -> Vec<u8> {
    match rel.parent() {
        Some(p) if !p.as_os_str().is_empty() => [p.as_os_str().as_bytes(), b"/"].concat(),
        _ => Vec::new(),
    }
}

fn padding(size: u64) -> u64 {
    (BLOCK as u64 - size % BLOCK as u64) % BLOCK as u64
}

impl Read for UpperTar {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if self.pending_pos < self.pending.len() {
                let n = (self.pending.len() - self.pending_pos).min(buf.len());
                buf[..n].copy_from_slice(&self.pending[self.pending_pos..self.pending_pos + n]);
                self.pending_pos += n;
                if self.pending_pos == self.pending.len() {
                    self.pending.clear();
                    self.pending_pos = 0;
                }
                return Ok(n);
            }
            if let Some((file, path, remaining, pad)) = &mut self.file {
                let want = (*remaining).min(buf.len() as u64) as usize;
                let n = file.read(&mut buf[..want])?;
                if n == 0 {
                    let msg = format!(
                        "{} shrank while being read ({} bytes missing)",
                        path.display(),
                        remaining
                    );
                    return Err(self.fail(msg));
                }
                *remaining -= n as u64;
                if *remaining == 0 {
                    self.pending.resize(*pad as usize, 0);
                    self.file = None;
                }
                return Ok(n);
            }
            if self.done {
                return Ok(0);
            }
            match self.next_entry() {
                Ok(true) => {}
                Ok(false) => {
                    self.pending.resize(2 * BLOCK, 0);
                    self.done = true;
                }
                Err(e) => return Err(io::Error::other(e)),
            }
        }
    }
}

/// One tar header as Go's `archive/tar` writes it for Docker.
#[derive(Debug, Clone)]
struct EntryHeader {
    name: Vec<u8>,
    mode: u32,
    uid: u64,
    gid: u64,
    size: u64,
    /// Seconds; `None` writes 0 (Go's zero time).
    mtime: Option<i64>,
    typeflag: u8,
    linkname: Vec<u8>,
    uname: String,
    gname: String,
    devmajor: u64,
    devminor: u64,
    xattrs: Vec<(String, Vec<u8>)>,
}

impl EntryHeader {
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    fn from_stat(st: &Stat) -> Self {
        // Docker truncates to the second (and forces the PAX format so Go does not round).
        let mtime = st.st_mtime as i64;
        EntryHeader {
            name: Vec::new(),
            mode: st.st_mode as u32,
            uid: u64::from(st.st_uid),
            gid: u64::from(st.st_gid),
            size: 0,
            mtime: Some(mtime),
            typeflag: b'0',
            linkname: Vec::new(),
            uname: user_name(st.st_uid as u32),
            gname: group_name(st.st_gid as u32),
            devmajor: 0,
            devminor: 0,
            xattrs: Vec::new(),
        }
    }

    fn write(&self, out: &mut Vec<u8>) {
        let mut pax: Vec<(String, Vec<u8>)> = Vec::new();
        // Docker asks Go for the PAX format explicitly, so a long name is a PAX record, never
        // a USTAR prefix split.
        let name_fits = self.name.is_ascii() && self.name.len() <= 100;
        if !name_fits {
            pax.push(("path".into(), self.name.clone()));
        }
        if !self.linkname.is_ascii() || self.linkname.len() > 100 {
            pax.push(("linkpath".into(), self.linkname.clone()));
        }
        if self.size > 0o777_7777_7777 {
            pax.push(("size".into(), self.size.to_string().into_bytes()));
        }
        if self.uid > 0o777_7777 {
            pax.push(("uid".into(), self.uid.to_string().into_bytes()));
        }
        if self.gid > 0o777_7777 {
            pax.push(("gid".into(), self.gid.to_string().into_bytes()));
        }
        if self.uname.len() > 32 || !self.uname.is_ascii() {
            pax.push(("uname".into(), self.uname.clone().into_bytes()));
        }
        if self.gname.len() > 32 || !self.gname.is_ascii() {
            pax.push(("gname".into(), self.gname.clone().into_bytes()));
        }
        for (k, v) in &self.xattrs {
            pax.push((format!("SCHILY.xattr.{k}"), v.clone()));
        }
        let is_pax = !pax.is_empty();
        if is_pax {
            pax.sort();
            let mut records = Vec::new();
            for (k, v) in &pax {
                records.extend_from_slice(&pax_record(k, v));
            }
            let (dir, file) = match self.name.iter().rposition(|&b| b == b'/') {
                Some(i) if i + 1 < self.name.len() => (&self.name[..=i], &self.name[i + 1..]),
                _ => (&self.name[..], &b""[..]),
            };
            let mut xname = [dir, b"PaxHeaders.0"].concat();
            if !file.is_empty() {
                xname.push(b'/');
                xname.extend_from_slice(file);
            }
            let mut block = [0u8; BLOCK];
            put_str(&mut block[0..100], &to_ascii(&xname));
            put_octal(&mut block[100..108], 0);
            put_octal(&mut block[108..116], 0);
            put_octal(&mut block[116..124], 0);
            put_octal(&mut block[124..136], records.len() as u64);
            put_octal(&mut block[136..148], 0);
            block[156] = b'x';
            block[257..263].copy_from_slice(b"ustar\0");
            block[263..265].copy_from_slice(b"00");
            finish_checksum(&mut block);
            out.extend_from_slice(&block);
            let pad = padding(records.len() as u64) as usize;
            out.extend_from_slice(&records);
            out.resize(out.len() + pad, 0);
        }
        let mut block = [0u8; BLOCK];
        put_str(&mut block[0..100], &to_ascii(&self.name));
        put_octal(&mut block[100..108], u64::from(self.mode & 0o7_777_777));
        put_octal(
            &mut block[108..116],
            if self.uid > 0o777_7777 { 0 } else { self.uid },
        );
        put_octal(
            &mut block[116..124],
            if self.gid > 0o777_7777 { 0 } else { self.gid },
        );
        put_octal(
            &mut block[124..136],
            if self.size > 0o777_7777_7777 {
                0
            } else {
                self.size
            },
        );
        put_octal(
            &mut block[136..148],
            self.mtime.map_or(0, |t| t.max(0) as u64),
        );
        block[156] = self.typeflag;
        put_str(&mut block[157..257], &to_ascii(&self.linkname));
        block[257..263].copy_from_slice(b"ustar\0");
        block[263..265].copy_from_slice(b"00");
        put_str(&mut block[265..297], self.uname.as_bytes());
        put_str(&mut block[297..329], self.gname.as_bytes());
        put_octal(&mut block[329..337], self.devmajor);
        put_octal(&mut block[337..345], self.devminor);
        finish_checksum(&mut block);
        out.extend_from_slice(&block);
    }
}

fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    // "<len> key=value\n" where <len> counts itself.
    let body = key.len() + value.len() + 3;
    let mut len = body + body.to_string().len();
    if len.to_string().len() + body != len {
        len = body + len.to_string().len();
    }
    let mut out = format!("{len} {key}=").into_bytes();
    out.extend_from_slice(value);
    out.push(b'\n');
    out
}

fn to_ascii(s: &[u8]) -> Vec<u8> {
    s.iter().copied().filter(|&b| b != 0 && b < 0x80).collect()
}

/// Copies `s` (truncated to the field) and NUL-terminates it when there is room, as Go.
fn put_str(field: &mut [u8], s: &[u8]) {
    let n = s.len().min(field.len());
    field[..n].copy_from_slice(&s[..n]);
    if n < field.len() {
        field[n] = 0;
    }
}

/// Zero-padded octal leaving room for a trailing NUL, as Go's `formatOctal`.
fn put_octal(field: &mut [u8], value: u64) {
    let digits = format!("{value:o}");
    let width = field.len() - 1;
    let text = format!("{digits:0>width$}");
    put_str(field, text.as_bytes());
}

fn finish_checksum(block: &mut [u8; BLOCK]) {
    block[148..156].fill(b' ');
    let sum: u64 = block.iter().map(|&b| u64::from(b)).sum();
    put_octal(&mut block[148..155], sum);
    block[155] = b' ';
}

fn id_names(file: &str) -> HashMap<u32, String> {
    let mut out = HashMap::new();
    if let Ok(text) = std::fs::read_to_string(file) {
        for line in text.lines() {
            let fields: Vec<&str> = line.split(':').collect();
            if fields.len() > 2
                && let Ok(id) = fields[2].parse::<u32>()
            {
                out.entry(id).or_insert_with(|| fields[0].to_string());
            }
        }
    }
    out
}

/// The host's name for a uid, as Go's `archive/tar` looks it up (empty when unknown).
fn user_name(uid: u32) -> String {
    static USERS: OnceLock<HashMap<u32, String>> = OnceLock::new();
    USERS
        .get_or_init(|| id_names("/etc/passwd"))
        .get(&uid)
        .cloned()
        .unwrap_or_default()
}

fn group_name(gid: u32) -> String {
    static GROUPS: OnceLock<HashMap<u32, String>> = OnceLock::new();
    GROUPS
        .get_or_init(|| id_names("/etc/group"))
        .get(&gid)
        .cloned()
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pax_record_length_counts_itself() {
        assert_eq!(pax_record("path", b"a"), b"9 path=a\n");
        assert_eq!(pax_record("path", &[b'y'; 2]), b"11 path=yy\n");
        let long = vec![b'x'; 95];
        let rec = pax_record("path", &long);
        let len: usize = std::str::from_utf8(&rec[..rec.iter().position(|&b| b == b' ').unwrap()])
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(len, rec.len());
    }

    #[test]
    fn octal_fields_have_a_trailing_nul() {
        let mut f = [0xffu8; 8];
        put_octal(&mut f, 0o755);
        assert_eq!(&f, b"0000755\0");
    }
}
