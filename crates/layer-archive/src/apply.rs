//! Applying a layer tar under a root directory.
//!
//! Entries are read by the codec ([`crate::codec`]) exactly as Go's `archive/tar` reads them,
//! and extracted by the rules of Docker 20.10's moby: `UnpackLayer` (plain whiteouts, vfs
//! and naive drivers) and `Unpack` with the overlay converter (overlay2):
//!
//! * names are cleaned as moby's `filepath.Clean` cleans them (`/../x` is `x`); a whiteout
//!   is known by its name alone, whatever its type;
//! * contiguous (`7`) and old GNU sparse (`S`) entries, and any other unknown type, are
//!   refused as moby refuses them ("unhandled tar header type"); PAX sparse files are
//!   written with real holes;
//! * a directory entry naming the root (`./`) merges its owner, mode, xattrs and times into
//!   the root in the plain flavour (`UnpackLayer`) and is skipped in the overlay one
//!   (`Unpack`); hard links take the link header's owner, mode and times, as moby's do;
//! * mtimes before the epoch or past year 2262 become the epoch (`system.Chtimes`).
//!
//! Deliberate differences:
//!
//! * paths go through `RESOLVE_IN_ROOT`: a relative symlink that climbs above the root
//!   (`escape -> ..`) is clamped at the root instead of being an error, exactly as an
//!   absolute one is; nothing is ever reached outside the root either way;
//! * a relative name that climbs above the root (`../x`) is refused, as moby's own
//!   `UnpackLayer` refuses it (Docker 20.10 runs it chrooted, where it lands on `x`);
//! * a non-directory entry naming the root is refused (moby would replace the layer root);
//! * implied parent directories are 0755 and root's in both flavours, as `Unpack` makes
//!   them (`UnpackLayer` makes them 0600);
//! * a PAX global header changes nothing (`UnpackLayer` would create its parents and remove
//!   an entry of its name);
//! * owners must be ids from 0 to 2^32 - 1 (moby hands a negative id to `lchown`, where -1
//!   means "unchanged", and truncates larger ones to 32 bits);
//! * `.wh.`, `.wh..` and `.wh...` are refused in both flavours (moby refuses them only for
//!   overlay, and its plain flavour would delete the directory itself);
//! * AUFS hardlink metadata (`.wh..wh.plnk/…`) is skipped, not extracted to a temp dir:
//!   no current producer writes it;
//! * the codec's caps ([`super::Limits`]: 8 chained extension headers, `PATH_MAX` names,
//!   xattr and sparse-region caps) are refusals Go does not make;
//! * a dangling symlink met while creating parent directories is followed inside the root
//!   and its target created (moby#53258 behaviour), also for relative targets;
//! * an opaque marker (plain flavour) for a directory this layer already emptied with a
//!   marker, or below one, removes nothing more: the directory holds only this layer's
//!   entries since. moby walks it again and also deletes what the layer created there
//!   implicitly (parents of later entries) or through a symlink since, files its tar-split
//!   record then names but the disk lacks. This is what makes a repeated marker cost
//!   nothing instead of a walk (8k files and 8k markers: 158 s before);
//! * directory times are set as the applier leaves each directory (moby sets them all at
//!   the end, holding every name). A directory changed after it was left (an out-of-order
//!   tar, a whiteout, an opaque marker below it) gets its times back, so the result is
//!   moby's, except for a directory reached only by following a dangling symlink's target
//!   while creating parents, which keeps the time of that change.
//!
//! `tests/go_differential.rs` checks all of this against Go's reader on generated tars.
//!
//! Shared with moby, and worth knowing: in the overlay flavour an opaque marker at the layer
//! root sets the xattr on the upper dir itself, which overlayfs ignores.

mod dir_times;
mod key_set;

use std::collections::HashSet;
use std::ffi::{CStr, CString};
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};
use rustix::io::Errno;

use super::{
    ApplyOptions, IMPLIED_DIRECTORY_MODE, OVERLAY_OPAQUE_USER_XATTR, OVERLAY_OPAQUE_XATTR,
    WHITEOUT_META_PREFIX, WHITEOUT_OPAQUE_DIR, WHITEOUT_PREFIX, WhiteoutFormat,
};
use crate::codec::name::CleanName;
use crate::codec::{EntryDigest, EntryKind, Header, TarError, TarReader, Time};
use crate::error::{Error, Result};
use crate::override_stat::{OVERRIDE_STAT_XATTR, OverrideStat};
use dir_times::PendingDirs;
use key_set::KeySet;
use safe_root::SafeRoot;
use safe_root::{DirRef, component, errno_of, lstat_at, proc_fd_path, remove_all_at};

/// The tar stream the applier reads entries and their payloads from.
type Payload<'a> = TarReader<&'a mut dyn Read>;

/// Payload copy buffer: large, so that big files take few syscalls.
const COPY_BUFFER: usize = 1 << 20;

/// Applies the layer tar read from `input` under `root` and returns the applied size (the
/// sum of the header sizes, as moby reports it). Reads `input` to EOF, past the
/// end-of-archive marker, so a digest of the stream covers every byte.
///
/// On error the root may hold part of the layer; the caller removes the layer.
pub fn apply_layer(root: &Path, input: &mut dyn Read, opts: &ApplyOptions) -> Result<u64> {
    apply_layer_with_usage(root, input, opts).map(|(size, _)| size)
}

/// What [`apply_layer_report`] applied.
#[derive(Debug, Clone)]
pub struct Applied {
    /// The applied size: the sum of the header sizes, as moby reports it.
    pub size: u64,
    /// The disk usage of what was written, when known without a walk (see
    /// [`apply_layer_with_usage`]).
    pub usage: Option<u64>,
    /// Every entry the applier read, in order, folded into one value: equal to what any
    /// other reader of the same stream folds ([`EntryDigest`]).
    pub entries: crate::EntrySequence,
    /// Directory entries the opaque markers (plain flavour) looked at: at most one look per
    /// entry and marker-free directory, however many markers name a directory (a measure of
    /// work, for tests and benchmarks).
    pub opaque_examined: u64,
}

/// [`apply_layer`], also returning the disk usage of what it wrote, as Docker's
/// `directory.Size` would measure it afterwards (non-directories' sizes, symlinks their
/// target length, each hard-linked inode once) when that is known without a walk: the root
/// was empty and nothing was replaced or removed. `None` means "walk the tree".
pub fn apply_layer_with_usage(
    root: &Path,
    input: &mut dyn Read,
    opts: &ApplyOptions,
) -> Result<(u64, Option<u64>)> {
    apply_layer_report(root, input, opts).map(|a| (a.size, a.usage))
}

/// [`apply_layer_with_usage`], also returning the digest of the entry sequence read.
pub fn apply_layer_report(
    root: &Path,
    input: &mut dyn Read,
    opts: &ApplyOptions,
) -> Result<Applied> {
    let span = tracing::info_span!("apply_layer", layer = %opts.layer, root = %root.display());
    let _enter = span.enter();
    let safe_root = SafeRoot::open(root).map_err(|e| Error::Io {
        layer: opts.layer.clone(),
        op: "open layer root",
        path: root.to_path_buf(),
        source: e.into_io_error(),
    })?;
    let mut applier = Applier {
        root: safe_root,
        opts,
        unpacked: KeySet::default(),
        path_hasher: std::collections::hash_map::RandomState::new(),
        pending: PendingDirs::new(),
        purged: HashSet::new(),
        opaque_examined: 0,
        buffer: vec![0u8; COPY_BUFFER],
        size: 0,
        creator: Creator::current(),
        parent_facts: None,
        usage: Some(0),
    };
    // Usage is counted only from an empty root: otherwise what was there is unknown.
    match safe_root::list_dir(applier.root.root_fd()) {
        Ok(names) if names.is_empty() => {}
        _ => applier.usage = None,
    }
    let mut reader = TarReader::new(input, opts.limits);
    let mut entries = EntryDigest::new();
    loop {
        let header = match reader.next_entry() {
            Ok(Some(h)) => h,
            Ok(None) => break,
            Err(e) => return Err(applier.tar_error(e)),
        };
        entries.push(&header);
        applier.size = applier.size.saturating_add_signed(header.size);
        applier.apply_entry(&header, &mut reader)?;
    }
    reader.drain().map_err(|e| applier.tar_error(e))?;
    applier.pending.finish(&applier.root);
    tracing::debug!(size = applier.size, usage = ?applier.usage, "layer applied");
    Ok(Applied {
        size: applier.size,
        usage: applier.usage,
        entries: entries.value(),
        opaque_examined: applier.opaque_examined,
    })
}

/// Whether an OS error says the machine failed rather than the entry: no space (`ENOSPC`,
/// `EDQUOT`, `EFBIG`), an I/O or filesystem error (`EIO`, `EUCLEAN`, `ESTALE`), a read-only
/// filesystem, or no memory, descriptors or locks left. Such errors are [`Error::Io`]; the
/// others met applying an entry (`ENOENT`, `ENOTDIR`, `ELOOP`, `EEXIST`, `EPERM`…) follow
/// from what the tar asks for over what the tree holds, and refuse the entry
/// ([`Error::BadEntry`]).
pub fn is_machine_error(e: &io::Error) -> bool {
    const MACHINE: [Errno; 11] = [
        Errno::NOSPC,
        Errno::DQUOT,
        Errno::FBIG,
        Errno::IO,
        Errno::UCLEAN,
        Errno::STALE,
        Errno::ROFS,
        Errno::NOMEM,
        Errno::MFILE,
        Errno::NFILE,
        Errno::NOLCK,
    ];
    errno_of(e).is_some_and(|n| MACHINE.contains(&n))
}

struct Applier<'o> {
    root: SafeRoot,
    opts: &'o ApplyOptions,
    /// Names written by this layer; an opaque marker keeps these and deletes the rest.
    /// Stored as keyed 64-bit hashes of the cleaned names, not the names: a layer with a
    /// million entries then costs ~8.5 MB ([`KeySet`]) instead of ~100 MB, and the random
    /// key keeps collisions (which would only spare a lower file from an opaque marker)
    /// unforgeable.
    unpacked: KeySet,
    path_hasher: std::collections::hash_map::RandomState,
    /// Directories whose times are set when the applier leaves them: only those on the
    /// current entry's path ([`dir_times`]).
    pending: PendingDirs,
    /// (device, inode) of directories an opaque marker of this layer has emptied of what the
    /// layer did not write: from then on they hold only this layer's entries, so another
    /// marker has nothing to remove there and skips them (repeated markers cost O(entries)).
    purged: HashSet<(u64, u64)>,
    /// See [`Applied::opaque_examined`].
    opaque_examined: u64,
    buffer: Vec<u8>,
    size: u64,
    /// Who this process creates files as, to skip `fchown`/`fchmod` that change nothing.
    creator: Creator,
    /// What a new entry inherits from the last parent directory used (kept alive by the
    /// `Arc` so its address cannot be reused); dropped whenever a directory may change.
    parent_facts: Option<(std::sync::Arc<OwnedFd>, ParentFacts)>,
    /// Bytes of the entries written so far (see [`apply_layer_with_usage`]); `None` once
    /// something was replaced or removed, which this count cannot follow.
    usage: Option<u64>,
}

/// The process's effective ids and umask: a new inode starts with these.
#[derive(Clone, Copy)]
struct Creator {
    uid: u32,
    gid: u32,
    /// `None` when unknown: then every mode is set explicitly.
    umask: Option<u32>,
}

impl Creator {
    fn current() -> Self {
        // umask(2) can only be read by changing it, process-wide; /proc reports it safely.
        let umask = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Umask:"))
                    .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            });
        Creator {
            uid: rustix::process::geteuid().as_raw(),
            gid: rustix::process::getegid().as_raw(),
            umask,
        }
    }
}

/// What a new entry gets from its parent directory besides the creator's ids.
#[derive(Clone, Copy)]
struct ParentFacts {
    /// The parent's group is the creator's: a new entry's group is then the creator's
    /// whatever the setgid bit or a `grpid` mount say.
    gid_is_creators: bool,
    /// A default ACL (or an unknown state) decides new modes instead of the umask.
    default_acl: bool,
}

/// Where to apply metadata: an fd we hold open (regular files, directories), or a name in
/// a parent directory (links, devices, FIFOs), never followed.
#[derive(Clone, Copy)]
enum Target<'a> {
    Fd(BorrowedFd<'a>),
    At(BorrowedFd<'a>, &'a CStr),
}

impl Applier<'_> {
    fn bad(&self, header: &Header, reason: impl Into<String>) -> Error {
        Error::BadEntry {
            layer: self.opts.layer.clone(),
            entry: String::from_utf8_lossy(&header.name).into_owned(),
            reason: reason.into(),
        }
    }

    fn tar_error(&self, e: TarError) -> Error {
        match e {
            TarError::Io(source) => Error::Read {
                layer: self.opts.layer.clone(),
                source,
            },
            e => Error::BadTar {
                layer: self.opts.layer.clone(),
                reason: e.to_string(),
            },
        }
    }

    /// An OS error met applying `header`: [`Error::Io`] when the machine failed
    /// ([`is_machine_error`]), else the entry is refused with the reason `"{op}: {e}"`.
    fn os_error(&self, header: &Header, op: &'static str, e: impl Into<io::Error>) -> Error {
        let e = e.into();
        let reason = format!("{op}: {e}");
        self.os_error_with(header, op, e, reason)
    }

    /// [`Self::os_error`] with the reason given for the refusal.
    fn os_error_with(
        &self,
        header: &Header,
        op: &'static str,
        e: io::Error,
        reason: String,
    ) -> Error {
        if !is_machine_error(&e) {
            return self.bad(header, reason);
        }
        let mut name: &[u8] = &header.name;
        while let [b'/', rest @ ..] = name {
            name = rest;
        }
        Error::Io {
            layer: self.opts.layer.clone(),
            op,
            path: self.root.path().join(std::ffi::OsStr::from_bytes(name)),
            source: e,
        }
    }

    fn apply_entry(&mut self, header: &Header, reader: &mut Payload<'_>) -> Result<()> {
        if header.kind == EntryKind::GlobalExtension {
            // A PAX global header changes nothing: no file, no parents (moby's `Unpack`).
            return Ok(());
        }
        let name = CleanName::new(&header.name).map_err(|e| self.bad(header, e.to_string()))?;
        if name.is_root() {
            return self.apply_root_entry(header);
        }
        let (parent_rel, base) = name.split_last();
        let top = name
            .as_bytes()
            .split(|&b| b == b'/')
            .next()
            .unwrap_or_default();
        if top.starts_with(WHITEOUT_META_PREFIX.as_bytes())
            && name.as_bytes() != WHITEOUT_OPAQUE_DIR.as_bytes()
        {
            // AUFS metadata (`.wh..wh.plnk/…`, `.wh..wh.aufs`) at the root: never part of
            // the tree.
            return Ok(());
        }
        if !self.opts.id_map.is_empty() && !base.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            // An owner the mapping cannot hold fails the entry before anything of it exists
            // (moby maps the header first too).
            self.owner(header)?;
        }
        // Leave the directories this entry is not in (setting their times), enter its parent.
        let (unpacked, hasher) = (&self.unpacked, &self.path_hasher);
        self.pending.enter(&self.root, parent_rel, &|dir: &[u8]| {
            unpacked.contains(std::hash::BuildHasher::hash_one(hasher, dir))
        });
        let parent = self.ensure_parent(header, parent_rel)?;
        self.pending.offer_fd(parent_rel, &parent);
        if base.starts_with(WHITEOUT_PREFIX.as_bytes()) {
            // Whatever its type, as moby: a whiteout is known by its name alone.
            self.parent_facts = None;
            return self.apply_whiteout(header, parent.as_fd(), parent_rel, base);
        }
        let cbase = component(base).map_err(|e| self.bad(header, e.to_string()))?;
        let created = match header.kind {
            EntryKind::Directory => {
                // This directory's owner, mode or ACL may be about to change.
                self.parent_facts = None;
                self.create_dir(header, parent.as_fd(), &cbase, &name)?
            }
            EntryKind::Regular => {
                let facts = self.parent_facts(&parent);
                self.create_file(header, parent.as_fd(), &cbase, facts, reader)?
            }
            EntryKind::Symlink => {
                let facts = self.parent_facts(&parent);
                self.create_symlink(header, parent.as_fd(), &cbase, facts)?
            }
            EntryKind::HardLink => self.create_hardlink(header, parent.as_fd(), &cbase)?,
            EntryKind::CharDevice | EntryKind::BlockDevice | EntryKind::Fifo => {
                self.create_node(header, parent.as_fd(), &cbase)?
            }
            EntryKind::GlobalExtension
            | EntryKind::Contiguous
            | EntryKind::GnuSparse
            | EntryKind::Other(_) => {
                return Err(self.bad(
                    header,
                    format!("unhandled tar header type {}", header.kind.type_flag()),
                ));
            }
        };
        if created {
            let key = self.path_key(name.as_bytes());
            self.unpacked.insert(key);
        }
        Ok(())
    }

    /// An entry naming the root itself (`./`, `/`, an empty name). moby's `UnpackLayer`
    /// (vfs) merges a directory entry into the root, owner, mode, xattrs and times; its
    /// `Unpack` (overlay2) skips it. Anything else there would replace the root with a
    /// non-directory: refused.
    fn apply_root_entry(&mut self, header: &Header) -> Result<()> {
        if header.kind != EntryKind::Directory {
            return Err(self.bad(
                header,
                "an entry that is not a directory names the layer root",
            ));
        }
        if self.opts.whiteouts == WhiteoutFormat::Overlay {
            return Ok(());
        }
        self.parent_facts = None;
        let root = self
            .root
            .root_fd()
            .try_clone_to_owned()
            .map_err(|e| self.os_error(header, "open layer root", e))?;
        self.set_owner(header, Target::Fd(root.as_fd()))?;
        self.set_xattrs(header, Target::Fd(root.as_fd()))?;
        self.set_mode(header, Target::Fd(root.as_fd()))?;
        self.pending.set_root_times(timestamps(header));
        Ok(())
    }

    /// What a new entry in `parent` inherits, from a small cache (entries of one directory
    /// usually follow each other in a tar). An `fstat` or xattr failure reads as "unknown",
    /// which keeps every `fchown`/`fchmod`.
    fn parent_facts(&mut self, parent: &std::sync::Arc<OwnedFd>) -> ParentFacts {
        if let Some((cached, facts)) = &self.parent_facts
            && std::sync::Arc::ptr_eq(cached, parent)
        {
            return *facts;
        }
        let gid_is_creators =
            rustix::fs::fstat(parent.as_fd()).is_ok_and(|st| st.st_gid == self.creator.gid);
        let default_acl = match rustix::fs::fgetxattr(
            parent.as_fd(),
            "system.posix_acl_default",
            &mut [0u8; 0][..],
        ) {
            Err(Errno::NODATA) | Err(Errno::NOTSUP) => false,
            Ok(_) | Err(_) => true,
        };
        let facts = ParentFacts {
            gid_is_creators,
            default_acl,
        };
        self.parent_facts = Some((parent.clone(), facts));
        facts
    }

    /// Whether a just-created entry already has the header's owner.
    fn owner_is_already(&self, header: &Header, facts: ParentFacts) -> bool {
        !self.opts.no_lchown
            && facts.gid_is_creators
            && self
                .owner(header)
                .is_ok_and(|ids| ids == (self.creator.uid, self.creator.gid))
    }

    /// The parent directory of an entry, creating implied parents (0755, root-owned).
    fn ensure_parent(
        &mut self,
        header: &Header,
        parent_rel: &[u8],
    ) -> Result<std::sync::Arc<OwnedFd>> {
        // Implied directories belong to container root: the remapped root's host IDs.
        let owner = if self.opts.no_lchown || self.opts.record_owners {
            None
        } else {
            Some(self.opts.chown.unwrap_or(self.opts.id_map.root_pair()))
        };
        let mut on_create = |dir: BorrowedFd<'_>, name: &CStr| -> std::io::Result<()> {
            let fd = safe_root::open_dir_at(dir, name)?;
            if let Some((uid, gid)) = owner {
                rustix::fs::fchown(&fd, Some(uid_of(uid)), Some(gid_of(gid)))?;
            }
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(IMPLIED_DIRECTORY_MODE))?;
            Ok(())
        };
        self.root
            .ensure_dir(parent_rel, &mut on_create)
            .map_err(|e| {
                let e = e.into_io_error();
                let reason = format!("resolving parent directory inside the root: {e}");
                self.os_error_with(header, "resolve parent directory", e, reason)
            })
    }

    /// Removes whatever is at `name` unless a directory meets a directory (they merge).
    fn clear_way(&mut self, header: &Header, parent: BorrowedFd<'_>, name: &CStr) -> Result<()> {
        let existing = match lstat_at(parent, name) {
            Ok(m) => m,
            Err(e) if errno_of(&e) == Some(Errno::NOENT) => return Ok(()),
            Err(e) => return Err(self.os_error(header, "stat existing entry", e)),
        };
        self.parent_facts = None;
        if existing.is_dir() && header.kind == EntryKind::Directory {
            // Merged, nothing removed: the usage count still holds.
            return Ok(());
        }
        if existing.is_dir() || existing.is_symlink() {
            // A cached directory fd could be this dir or reached through this link.
            self.root.forget();
        }
        self.usage = None;
        remove_all_at(parent, name).map_err(|e| self.os_error(header, "removing existing entry", e))
    }

    /// Runs `create`; if the name is taken, clears the way (everything but a directory
    /// meeting a directory entry is removed, as moby does) and runs it once more. Trying
    /// first saves a `stat` per entry in the common case of a fresh name.
    fn create_or_replace<T>(
        &mut self,
        header: &Header,
        parent: BorrowedFd<'_>,
        name: &CStr,
        mut create: impl FnMut() -> rustix::io::Result<T>,
    ) -> Result<rustix::io::Result<T>> {
        match create() {
            Err(Errno::EXIST) => {
                self.clear_way(header, parent, name)?;
                Ok(create())
            }
            other => Ok(other),
        }
    }

    fn apply_whiteout(
        &mut self,
        header: &Header,
        parent: BorrowedFd<'_>,
        parent_rel: &[u8],
        base: &[u8],
    ) -> Result<()> {
        let is_opaque = base == WHITEOUT_OPAQUE_DIR.as_bytes();
        let target = &base[WHITEOUT_PREFIX.len()..];
        if !is_opaque && matches!(target, b"" | b"." | b"..") {
            return Err(self.bad(
                header,
                format!("invalid whiteout entry {:?}", String::from_utf8_lossy(base)),
            ));
        }
        self.root.forget();
        if !(self.opts.whiteouts == WhiteoutFormat::Overlay && is_opaque) {
            // Removing something this layer wrote makes the count wrong; a whiteout of a
            // name not (yet) here removes nothing (and an overlay whiteout weighs 0 bytes).
            let removes_nothing = !is_opaque
                && CString::new(target).is_ok_and(|t| {
                    lstat_at(parent, &t).is_err_and(|e| errno_of(&e) == Some(Errno::NOENT))
                });
            if !removes_nothing {
                self.usage = None;
            }
        }
        match (self.opts.whiteouts, is_opaque) {
            (WhiteoutFormat::Plain, true) => {
                let parent_name = CleanName::from_clean(parent_rel.to_vec());
                self.remove_not_unpacked(parent, &parent_name)
                    .map_err(|e| self.os_error(header, "applying opaque directory", e))
            }
            (WhiteoutFormat::Plain, false) => {
                let target = component(target).map_err(|e| self.bad(header, e.to_string()))?;
                remove_all_at(parent, &target)
                    .map_err(|e| self.os_error(header, "applying whiteout", e))
            }
            (WhiteoutFormat::Overlay, true) => {
                let attr = if self.opts.user_overlay_xattrs {
                    OVERLAY_OPAQUE_USER_XATTR
                } else {
                    OVERLAY_OPAQUE_XATTR
                };
                rustix::fs::fsetxattr(parent, attr, b"y", XattrFlags::empty()).map_err(|e| {
                    let reason = format!("setting {attr}: {e}");
                    self.os_error_with(header, "set opaque xattr", e.into(), reason)
                })
            }
            (WhiteoutFormat::Overlay, false) => {
                let target = component(target).map_err(|e| self.bad(header, e.to_string()))?;
                remove_all_at(parent, &target)
                    .map_err(|e| self.os_error(header, "replacing entry", e))?;
                rustix::fs::mknodat(
                    parent,
                    &*target,
                    FileType::CharacterDevice,
                    Mode::empty(),
                    0,
                )
                .map_err(|e| self.os_error(header, "creating overlay whiteout (char 0/0)", e))?;
                if !self.opts.no_lchown && !self.opts.record_owners {
                    let (uid, gid) = self.owner(header)?;
                    if (uid, gid) != (0, 0) {
                        rustix::fs::chownat(
                            parent,
                            &*target,
                            Some(uid_of(uid)),
                            Some(gid_of(gid)),
                            AtFlags::SYMLINK_NOFOLLOW,
                        )
                        .map_err(|e| self.os_error(header, "chown whiteout", e))?;
                    }
                }
                Ok(())
            }
        }
    }

    fn path_key(&self, name: &[u8]) -> u64 {
        std::hash::BuildHasher::hash_one(&self.path_hasher, name)
    }

    /// Deletes everything below `dir` that this layer did not write (opaque directory).
    ///
    /// Walked with a stack of named directories ([`DirRef`]), not recursion and not an fd
    /// per level: a subtree of any depth costs neither stack nor descriptors. A directory
    /// this layer already emptied ([`Applier::purged`]) is not walked again. A directory of
    /// this layer that loses entries keeps the times it had (they were set when the applier
    /// left it); `dir` itself is pending and gets its times when left.
    fn remove_not_unpacked(
        &mut self,
        dir: BorrowedFd<'_>,
        dir_name: &CleanName,
    ) -> std::io::Result<()> {
        struct Frame {
            rel: Vec<u8>,
            at: DirRef,
            children: Vec<CString>,
            next: usize,
            fd: Option<OwnedFd>,
            id: (u64, u64),
            /// Times before anything was removed, and whether something was.
            times: Timestamps,
            removed: bool,
        }
        let top = safe_root::fstat(dir)?;
        if self.purged.contains(&(top.dev, top.ino)) {
            return Ok(());
        }
        let mut stack = vec![Frame {
            rel: dir_name.as_bytes().to_vec(),
            at: DirRef::root(),
            children: safe_root::list_dir(dir)?,
            next: 0,
            fd: None,
            id: (top.dev, top.ino),
            times: meta_times(&top),
            removed: false,
        }];
        while !stack.is_empty() {
            let depth = stack.len();
            let frame = stack.last_mut().expect("a frame");
            if frame.next == frame.children.len() {
                let done = stack.pop().expect("a frame");
                if done.removed && !stack.is_empty() {
                    let fd = match done.fd {
                        Some(fd) => fd,
                        None => done.at.open(dir)?,
                    };
                    rustix::fs::futimens(&fd, &done.times)?;
                }
                self.purged.insert(done.id);
                continue;
            }
            let child = frame.children[frame.next].clone();
            frame.next += 1;
            if frame.fd.is_none() && depth > 1 {
                frame.fd = Some(frame.at.open(dir)?);
            }
            let here = frame.fd.as_ref().map_or(dir, |f| f.as_fd());
            self.opaque_examined += 1;
            let mut child_rel = frame.rel.clone();
            if !child_rel.is_empty() {
                child_rel.push(b'/');
            }
            child_rel.extend_from_slice(child.to_bytes());
            if !self.unpacked.contains(self.path_key(&child_rel)) {
                remove_all_at(here, &child)?;
                frame.removed = true;
                continue;
            }
            let meta = lstat_at(here, &child)?;
            if !meta.is_dir() || self.purged.contains(&(meta.dev, meta.ino)) {
                continue;
            }
            let sub = safe_root::open_dir_at(here, &child)?;
            let children = safe_root::list_dir(sub.as_fd())?;
            let at = frame.at.child(dir, child.to_bytes())?;
            // Hold at most the directory being read.
            frame.fd = None;
            stack.push(Frame {
                rel: child_rel,
                at,
                children,
                next: 0,
                fd: Some(sub),
                id: (meta.dev, meta.ino),
                times: meta_times(&meta),
                removed: false,
            });
        }
        Ok(())
    }

    fn create_dir(
        &mut self,
        header: &Header,
        parent: BorrowedFd<'_>,
        name: &CStr,
        clean: &CleanName,
    ) -> Result<bool> {
        let made = self.create_or_replace(header, parent, name, || {
            rustix::fs::mkdirat(parent, name, Mode::from_raw_mode(0o700))
        })?;
        match made {
            // EXIST after clearing the way: a directory, which this entry merges into.
            Ok(()) | Err(Errno::EXIST) => {}
            Err(e) => return Err(self.os_error(header, "mkdir", e)),
        }
        let fd = safe_root::open_dir_at(parent, name)
            .map_err(|e| self.os_error(header, "open directory", e))?;
        self.set_owner(header, Target::Fd(fd.as_fd()))?;
        self.set_xattrs(header, Target::Fd(fd.as_fd()))?;
        self.set_mode(header, Target::Fd(fd.as_fd()))?;
        // Its entries usually follow: it becomes the deepest pending directory, and the
        // cached parent of the next entry (no lookup from the root, however deep).
        let fd = std::sync::Arc::new(fd);
        self.root.cache_dir(clean.as_bytes(), fd.clone());
        self.pending
            .enter_new(clean.as_bytes(), timestamps(header), fd);
        Ok(true)
    }

    fn create_file(
        &mut self,
        header: &Header,
        parent: BorrowedFd<'_>,
        name: &CStr,
        facts: ParentFacts,
        reader: &mut Payload<'_>,
    ) -> Result<bool> {
        // Created with its final permission bits (the fd is writable whatever they say), so
        // that the usual entry needs no fchmod; special bits are set after the chown, which
        // would clear them.
        let create_mode = header.permissions() & 0o777;
        let fd = self
            .create_or_replace(header, parent, name, || {
                rustix::fs::openat(
                    parent,
                    name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(create_mode),
                )
            })?
            .map_err(|e| self.os_error(header, "create file", e))?;
        let mut file = File::from(fd);
        self.write_payload(header, reader, &mut file)?;
        if !self.owner_is_already(header, facts) {
            self.set_owner(header, Target::Fd(file.as_fd()))?;
        }
        self.set_xattrs(header, Target::Fd(file.as_fd()))?;
        let mode_is_exact = header.permissions() == create_mode
            && header.xattrs.is_empty()
            && !facts.default_acl
            && self
                .creator
                .umask
                .is_some_and(|umask| create_mode & umask == 0);
        if !mode_is_exact {
            self.set_mode(header, Target::Fd(file.as_fd()))?;
        }
        rustix::fs::futimens(&file, &timestamps(header))
            .map_err(|e| self.os_error(header, "set times", e))?;
        self.count_usage(header.size.max(0) as u64);
        Ok(true)
    }

    /// Writes the entry's data into `file`: a plain file's bytes, or a sparse file's data
    /// regions at their offsets with real holes between them, up to its size.
    fn write_payload(
        &mut self,
        header: &Header,
        reader: &mut Payload<'_>,
        file: &mut File,
    ) -> Result<()> {
        let sparse = header.sparse.is_some();
        let mut end = 0u64;
        loop {
            let piece = match reader.read_data(&mut self.buffer) {
                Ok(Some(piece)) => piece,
                Ok(None) => break,
                // The stream broke (I/O), or the payload is malformed or cut short.
                Err(TarError::Io(source)) => {
                    return Err(Error::Read {
                        layer: self.opts.layer.clone(),
                        source,
                    });
                }
                Err(e) => {
                    return Err(Error::BadTar {
                        layer: self.opts.layer.clone(),
                        reason: format!(
                            "reading payload of {:?}: {e}",
                            String::from_utf8_lossy(&header.name)
                        ),
                    });
                }
            };
            let (offset, n) = piece;
            if sparse && offset != end {
                std::io::Seek::seek(file, std::io::SeekFrom::Start(offset))
                    .map_err(|e| self.os_error(header, "seek", e))?;
            }
            file.write_all(&self.buffer[..n])
                .map_err(|e| self.os_error(header, "write", e))?;
            end = offset + n as u64;
        }
        if sparse {
            file.set_len(header.size as u64)
                .map_err(|e| self.os_error(header, "truncate sparse file", e))?;
        }
        Ok(())
    }

    fn create_symlink(
        &mut self,
        header: &Header,
        parent: BorrowedFd<'_>,
        name: &CStr,
        facts: ParentFacts,
    ) -> Result<bool> {
        // The target is stored verbatim; it is only ever resolved later inside a root.
        let target = std::ffi::CString::new(header.link_name.clone())
            .map_err(|_| self.bad(header, "symlink target contains NUL"))?;
        self.create_or_replace(header, parent, name, || {
            rustix::fs::symlinkat(&*target, parent, name)
        })?
        .map_err(|e| self.os_error(header, "symlink", e))?;
        let at = Target::At(parent, name);
        if !self.owner_is_already(header, facts) {
            self.set_owner(header, at)?;
        }
        self.set_xattrs(header, at)?;
        self.set_times_at(header, parent, name)?;
        // A symlink's size is its target's length.
        self.count_usage(header.link_name.len() as u64);
        Ok(true)
    }

    /// Adds a new inode's size to the usage count. Hard links add nothing: their inode is
    /// this layer's (links resolve inside the root) and was counted when written.
    fn count_usage(&mut self, bytes: u64) {
        if let Some(usage) = &mut self.usage {
            *usage = usage.saturating_add(bytes);
        }
    }

    fn create_hardlink(
        &mut self,
        header: &Header,
        parent: BorrowedFd<'_>,
        name: &CStr,
    ) -> Result<bool> {
        // Absolute targets are taken relative to the root (kaniko writes them).
        let target = CleanName::new(&header.link_name).map_err(|e| {
            self.bad(
                header,
                format!(
                    "hardlink target {:?}: {e}",
                    String::from_utf8_lossy(&header.link_name)
                ),
            )
        })?;
        if target.is_root() {
            return Err(self.bad(header, "hardlink to the layer root"));
        }
        let (target_parent_rel, target_base) = target.split_last();
        let target_parent = self
            .root
            .open_dir(target_parent_rel)
            .map_err(|e| self.os_error(header, "hardlink target directory", e.into_io_error()))?;
        let target_base = component(target_base).map_err(|e| self.bad(header, e.to_string()))?;
        // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
        self.create_or_replace(header, parent, name, || {
            rustix::fs::linkat(
                target_parent.as_fd(),
                &*target_base,
                parent,
                name,
                AtFlags::empty(),
            )
        })?
        .map_err(|e| {
            let reason = format!(
                "hardlink to {:?}: {e}",
                String::from_utf8_lossy(&header.link_name)
            );
            self.os_error_with(header, "hardlink", e.into(), reason)
        })?;
        let meta = lstat_at(parent, name).map_err(|e| self.os_error(header, "stat hardlink", e))?;
        let at = Target::At(parent, name);
        self.set_owner(header, at)?;
        if !meta.is_symlink() {
            self.set_xattrs(header, at)?;
            self.set_mode(header, at)?;
            self.set_times_at(header, parent, name)?;
        }
        Ok(true)
    }

    fn create_node(
        &mut self,
        header: &Header,
        parent: BorrowedFd<'_>,
        name: &CStr,
    ) -> Result<bool> {
        let file_type = match header.kind {
            EntryKind::CharDevice => FileType::CharacterDevice,
            EntryKind::BlockDevice => FileType::BlockDevice,
            _ => FileType::Fifo,
        };
        let (Ok(major), Ok(minor)) = (
            u32::try_from(header.dev_major),
            u32::try_from(header.dev_minor),
        ) else {
            return Err(self.bad(header, "device number out of range"));
        };
        let dev = rustix::fs::makedev(major, minor);
        let made = self.create_or_replace(header, parent, name, || {
            rustix::fs::mknodat(
                parent,
                name,
                file_type,
                Mode::from_raw_mode(header.permissions() & 0o777),
                dev,
            )
        })?;
        match made {
            Ok(()) => {}
            Err(Errno::PERM) if self.opts.skip_devices_without_privilege => {
                tracing::warn!(entry = %String::from_utf8_lossy(&header.name), "skipping device node: no privilege to create it");
                return Ok(false);
            }
            Err(e) => return Err(self.os_error(header, "mknod", e)),
        }
        let at = Target::At(parent, name);
        self.set_owner(header, at)?;
        self.set_xattrs(header, at)?;
        self.set_mode(header, at)?;
        self.set_times_at(header, parent, name)?;
        Ok(true)
    }

    /// The owner an entry gets on disk: the `chown` option, else the tar's mapped to the
    /// host (moby `remapIDs`).
    fn owner(&self, header: &Header) -> Result<(u32, u32)> {
        if let Some(pair) = self.opts.chown {
            return Ok(pair);
        }
        match (u32::try_from(header.uid), u32::try_from(header.gid)) {
            (Ok(u), Ok(g)) => self
                .opts
                .id_map
                .to_host(u, g)
                .map_err(|e| self.bad(header, e.to_string())),
            _ => Err(self.bad(
                header,
                format!("uid/gid {}:{} out of range", header.uid, header.gid),
            )),
        }
    }

    fn set_owner(&self, header: &Header, target: Target<'_>) -> Result<()> {
        if self.opts.no_lchown {
            return Ok(());
        }
        let (uid, gid) = self.owner(header)?;
        if self.opts.record_owners {
            return self.record_owner(header, target, (uid, gid));
        }
        let result = match target {
            Target::Fd(fd) => rustix::fs::fchown(fd, Some(uid_of(uid)), Some(gid_of(gid))),
            Target::At(dir, name) => rustix::fs::chownat(
                dir,
                name,
                Some(uid_of(uid)),
                Some(gid_of(gid)),
                AtFlags::SYMLINK_NOFOLLOW,
            ),
        };
        result.map_err(|e| {
            let hint = if e == Errno::INVAL {
                " (the ID is not mapped in this user namespace: too few subordinate IDs in /etc/subuid and /etc/subgid?)"
            } else {
                ""
            };
            let reason = format!("chown {uid}:{gid}: {e}{hint}");
            self.os_error_with(header, "chown", e.into(), reason)
        })
    }

    /// [`ApplyOptions::record_owners`]: the owner goes into `user.containers.override_stat`
    /// on files and directories (removed again when the owner is root); other kinds cannot
    /// carry a `user.` xattr and keep theirs in the tar-split metadata only.
    fn record_owner(
        &self,
        header: &Header,
        target: Target<'_>,
        (uid, gid): (u32, u32),
    ) -> Result<()> {
        let Target::Fd(fd) = target else {
            return Ok(());
        };
        let result = if (uid, gid) == (0, 0) {
            match rustix::fs::fremovexattr(fd, OVERRIDE_STAT_XATTR) {
                Err(Errno::NODATA) => Ok(()),
                other => other,
            }
        } else {
            let kind = if header.kind == EntryKind::Directory {
                "dir"
            } else {
                "file"
            };
            let value = OverrideStat {
                uid,
                gid,
                mode: header.permissions(),
                kind: kind.into(),
            };
            rustix::fs::fsetxattr(
                fd,
                OVERRIDE_STAT_XATTR,
                value.to_string().as_bytes(),
                XattrFlags::empty(),
            )
        };
        result.map_err(|e| {
            let reason = format!("recording owner {uid}:{gid}: {e}");
            self.os_error_with(header, "record owner", e.into(), reason)
        })
    }

    fn set_xattrs(&self, header: &Header, target: Target<'_>) -> Result<()> {
        for (key, value) in &header.xattrs {
            if self.opts.record_owners && key.as_slice() == OVERRIDE_STAT_XATTR.as_bytes() {
                // The tar cannot claim owners: in this mode the xattr is ours.
                continue;
            }
            let ckey = std::ffi::CString::new(key.clone())
                .map_err(|_| self.bad(header, "xattr name contains NUL"))?;
            let result = match target {
                Target::Fd(fd) => rustix::fs::fsetxattr(fd, &*ckey, value, XattrFlags::empty()),
                // No fd form for symlinks and devices: walk from the parent we hold, one
                // component, not following it.
                Target::At(dir, name) => rustix::fs::lsetxattr(
                    &*proc_fd_path(dir, Some(name)),
                    &*ckey,
                    value,
                    XattrFlags::empty(),
                ),
            };
            match result {
                Ok(()) => {}
                Err(Errno::NOTSUP) if self.opts.best_effort_xattrs => {
                    tracing::warn!(entry = %String::from_utf8_lossy(&header.name), xattr = %String::from_utf8_lossy(key), "xattr not supported by the backing filesystem; ignored");
                }
                // moby ignores EPERM (user.* on symlinks and devices) with a warning.
                Err(Errno::PERM) => {
                    tracing::warn!(entry = %String::from_utf8_lossy(&header.name), xattr = %String::from_utf8_lossy(key), "xattr not permitted; ignored");
                }
                Err(e) => {
                    let reason = format!("setting xattr {}: {e}", String::from_utf8_lossy(key));
                    return Err(self.os_error_with(header, "set xattr", e.into(), reason));
                }
            }
        }
        Ok(())
    }

    fn set_mode(&self, header: &Header, target: Target<'_>) -> Result<()> {
        let mode = Mode::from_raw_mode(header.permissions());
        let result = match target {
            Target::Fd(fd) => rustix::fs::fchmod(fd, mode),
            Target::At(dir, name) => {
                // fchmodat cannot refuse to follow on older kernels; chmod the O_PATH fd
                // through /proc instead (works for device nodes on nodev mounts too).
                let fd = safe_root::open_path_at(dir, name)
                    .map_err(|e| self.os_error(header, "open for chmod", e))?;
                rustix::fs::chmodat(
                    rustix::fs::CWD,
                    &*proc_fd_path(fd.as_fd(), None),
                    mode,
                    AtFlags::empty(),
                )
            }
        };
        result.map_err(|e| {
            let reason = format!("chmod {:o}: {e}", header.permissions());
            self.os_error_with(header, "chmod", e.into(), reason)
        })
    }

    fn set_times_at(&self, header: &Header, dir: BorrowedFd<'_>, name: &CStr) -> Result<()> {
        rustix::fs::utimensat(dir, name, &timestamps(header), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| self.os_error(header, "set times", e))
    }
}

/// A directory's current times, to put back after removing entries from it.
fn meta_times(meta: &safe_root::Meta) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: meta.atime_sec,
            tv_nsec: i64::from(meta.atime_nsec) as _,
        },
        last_modification: Timespec {
            tv_sec: meta.mtime_sec,
            tv_nsec: i64::from(meta.mtime_nsec) as _,
        },
    }
}

fn uid_of(uid: u32) -> rustix::fs::Uid {
    rustix::fs::Uid::from_raw(uid)
}

fn gid_of(gid: u32) -> rustix::fs::Gid {
    rustix::fs::Gid::from_raw(gid)
}

/// atime = the later of atime and mtime; times before the epoch or past what Go's
/// `UnixNano` can hold (year 2262) become the epoch (moby's `system.Chtimes`).
fn timestamps(header: &Header) -> Timestamps {
    const LAST: Time = Time {
        sec: i64::MAX / 1_000_000_000,
        nsec: (i64::MAX % 1_000_000_000) as u32,
    };
    let clamp = |t: Time| {
        if t.sec < 0 || t > LAST {
            Time::default()
        } else {
            t
        }
    };
    let atime = header.atime.unwrap_or(header.mtime).max(header.mtime);
    let (mtime, atime) = (clamp(header.mtime), clamp(atime));
    let spec = |t: Time| Timespec {
        tv_sec: t.sec,
        tv_nsec: i64::from(t.nsec) as _,
    };
    Timestamps {
        last_access: spec(atime),
        last_modification: spec(mtime),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;
    use crate::codec::{Header, TarWriter};

    /// Skipping `fchown`/`fchmod` when they would change nothing must never leave a mode or
    /// owner different from the header's: umask-stripped bits, special bits, foreign ids and
    /// a setgid parent of another group all still get set.
    #[test]
    fn modes_and_owners_are_exact_without_redundant_calls() {
        testkit::require!(testkit::gate::root("chown to other IDs"));
        let mut entries: Vec<(Header, &[u8])> = Vec::new();
        let file = |name: &str, mode: i64, uid: i64, gid: i64| {
            let mut h = Header::file(name, 1);
            h.mode = mode;
            h.uid = uid;
            h.gid = gid;
            h
        };
        entries.push((file("plain", 0o640, 0, 0), b"x"));
        entries.push((file("stripped", 0o666, 0, 0), b"x"));
        entries.push((file("setuid", 0o4755, 0, 0), b"x"));
        entries.push((file("sticky", 0o1777, 0, 0), b"x"));
        entries.push((file("readonly", 0o400, 0, 0), b"x"));
        entries.push((file("foreign", 0o644, 1000, 1001), b"x"));
        let mut sgid = Header::dir("sgid");
        sgid.mode = 0o2775;
        sgid.gid = 1234;
        entries.push((sgid, b""));
        entries.push((file("sgid/inner", 0o644, 0, 0), b"x"));
        let mut link = Header::symlink("sgid/link", "inner");
        link.gid = 0;
        entries.push((link, b""));
        let mut w = TarWriter::new(Vec::new());
        for (h, body) in &entries {
            let mut body = *body;
            let data: Option<&mut dyn Read> = if body.is_empty() {
                None
            } else {
                Some(&mut body)
            };
            w.append(h, data).unwrap();
        }
        let bytes = w.finish().unwrap();
        let root = tempfile::tempdir().unwrap();
        apply_layer(root.path(), &mut &bytes[..], &ApplyOptions::default()).unwrap();
        let meta = |n: &str| std::fs::symlink_metadata(root.path().join(n)).unwrap();
        for (h, _) in &entries {
            let name = String::from_utf8(h.name.clone()).unwrap();
            let m = meta(name.trim_end_matches('/'));
            if h.kind != EntryKind::Symlink {
                assert_eq!(m.mode() & 0o7777, h.permissions(), "mode of {name}");
            }
            assert_eq!(
                (i64::from(m.uid()), i64::from(m.gid())),
                (h.uid, h.gid),
                "owner of {name}"
            );
        }
    }
}
