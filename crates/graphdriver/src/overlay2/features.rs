//! What the kernel and the backing filesystem can do, probed once per home.
//!
//! Probing mounts a tiny overlay in a scratch directory under the home, the way Docker's
//! `check.go` does: it checks overlay works with two lowers, that the kernel neither copies up
//! the opaque flag (pre-4.8 bug) nor writes redirect xattrs on rename (`redirect_dir`), whether
//! copy-up is metadata-only (`metacopy`), and whether the new mount API takes `lowerdir+`.
//! Results are cached per home for the life of the process.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use rustix::mount::{FsMountFlags, FsOpenFlags, MountAttrFlags};

use super::layout::{PROBE_PREFIX, generate_link_id, mkdir_mode};
use super::mount::{OverlaySpec, mount_overlay, unmount};
use crate::error::{Error, Result};

/// Probed facts about a driver home.
#[derive(Debug, Clone)]
pub struct Features {
    /// Backing filesystem name from its magic number (`extfs`, `xfs`, …, or `<unknown>`).
    pub backing_fs: String,
    /// Whether readdir reports file types (overlay needs it).
    pub d_type: bool,
    /// Whether `index=off` is passed (the kernel has the `index` parameter).
    pub index_off: bool,
    /// Whether `userxattr` is passed (running in a user namespace).
    pub userxattr: bool,
    /// Whether copy-up is metadata-only (`metacopy=on`).
    pub metacopy: bool,
    /// `Ok` when the upper dir can be read as the layer's diff; else why not.
    pub native_diff: std::result::Result<(), String>,
    /// Whether the new mount API accepts `lowerdir+` (kernel ≥ 6.8).
    pub lowerdir_plus: bool,
}

impl Features {
    /// The xattr namespace overlay uses here: `trusted.` normally, `user.` with `userxattr`.
    pub fn xattr_prefix(&self) -> &'static str {
        if self.userxattr {
            "user.overlay."
        } else {
            "trusted.overlay."
        }
    }
}

fn cache() -> &'static Mutex<HashMap<PathBuf, Arc<Features>>> {
    static CACHE: OnceLock<Mutex<HashMap<PathBuf, Arc<Features>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

/// Probes `home` (which must exist), or returns the cached result.
pub(crate) fn probe(home: &Path) -> Result<Arc<Features>> {
    let mut cache = cache().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(found) = cache.get(home) {
        // Another process killed mid-probe leaves its probe dir even when this process knows
        // the features already: remove it on every open, not only on the first.
        remove_stale_probes(home);
        return Ok(found.clone());
    }
    let features = Arc::new(probe_uncached(home)?);
    cache.insert(home.to_path_buf(), features.clone());
    Ok(features)
}

/// Whether the kernel lists overlay in `/proc/filesystems`.
pub fn overlay_in_proc_filesystems() -> bool {
    std::fs::read_to_string("/proc/filesystems")
        .map(|s| {
            s.lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"))
        })
        .unwrap_or(false)
}

fn in_user_namespace() -> bool {
    match std::fs::read_to_string("/proc/self/uid_map") {
        Ok(map) => {
            let fields: Vec<&str> = map.split_whitespace().collect();
            fields != ["0", "0", "4294967295"]
        }
        Err(_) => false,
    }
}

/// Docker's fs magic table, for the `Backing Filesystem` status row.
fn fs_name(magic: u64) -> &'static str {
    match magic {
        0x6175_6673 => "aufs",
        0x9123_683E => "btrfs",
        0x28cd_3d45 => "cramfs",
        0xf15f => "ecryptfs",
        0xEF53 => "extfs",
        0xF2F5_2010 => "f2fs",
        0x4750_4653 => "gpfs",
        0x72b6 => "jffs2",
        0x3153_464a => "jfs",
        0x6969 => "nfs",
        0x8584_58f6 => "ramfs",
        0x5265_4973 => "reiserfs",
        0xfe53_4d42 => "smb2",
        0x7371_7368 => "squashfs",
        0x0102_1994 => "tmpfs",
        0xa501_fcf5 => "vxfs",
        0x5846_5342 => "xfs",
        0x2fc1_2fc1 => "zfs",
        0x794C_7630 => "overlayfs",
        _ => "<unknown>",
    }
}

/// The backing filesystem's name at `path`; an error when overlay cannot stack on it.
pub(crate) fn check_backing_fs(path: &Path) -> Result<String> {
    let statfs = rustix::fs::statfs(path).map_err(|e| Error::io("statfs", path, e.into()))?;
    #[allow(clippy::unnecessary_cast)]
    let backing_fs = fs_name(statfs.f_type as u64).to_string();
    if backing_fs == "overlayfs" || backing_fs == "aufs" || backing_fs == "ecryptfs" {
        return Err(Error::NotSupported(format!(
            "overlay2 is not supported over {backing_fs} ({})",
            path.display()
        )));
    }
    Ok(backing_fs)
}

/// Removes the probe directory even when a probe step fails half-way.
struct ProbeDir {
    path: PathBuf,
    merged: PathBuf,
}

impl Drop for ProbeDir {
    fn drop(&mut self) {
        let _ = unmount(&self.merged);
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Removes probe dirs (and their mounts) that a process killed mid-probe left behind. The
/// caller owns the home (one store per data-root, under its lock), so any found now is stale;
/// without this they pile up, mounted, where no gc looks (`list` skips them).
fn remove_stale_probes(home: &Path) {
    let Ok(entries) = std::fs::read_dir(home) else {
        return;
    };
    for entry in entries.flatten() {
        if entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(PROBE_PREFIX))
        {
            drop(ProbeDir {
                merged: entry.path().join("merged"),
                path: entry.path(),
            });
        }
    }
}

fn probe_uncached(home: &Path) -> Result<Features> {
    let _span = tracing::debug_span!("overlay2_probe", home = %home.display()).entered();
    if !overlay_in_proc_filesystems() {
        return Err(Error::NotSupported(
            "overlay is not in /proc/filesystems".into(),
        ));
    }
    let backing_fs = check_backing_fs(home)?;
    remove_stale_probes(home);
    let userxattr = in_user_namespace();
    let xattr = if userxattr {
        "user.overlay."
    } else {
        "trusted.overlay."
    };

    let probe_path = home.join(format!("{PROBE_PREFIX}{}", &generate_link_id()[..12]));
    mkdir_mode(&probe_path, 0o700)?;
    let probe = ProbeDir {
        merged: probe_path.join("merged"),
        path: probe_path.clone(),
    };
    let p = |s: &str| probe.path.join(s);
    for dir in ["l1", "l1/d", "l1/d1", "l2", "l2/d", "l3", "work", "merged"] {
        mkdir_mode(&p(dir), 0o755)?;
    }
    std::fs::write(p("l1/m"), b"metacopy probe").map_err(|e| Error::io("write", p("l1/m"), e))?;
    let d_type = has_d_type(&probe.path)?;
    if !d_type {
        return Err(Error::NotSupported(format!(
            "overlay2: the backing {backing_fs} filesystem under {} is formatted without d_type \
             support, which overlay needs",
            home.display()
        )));
    }
    rustix::fs::lsetxattr(
        p("l2/d"),
        format!("{xattr}opaque"),
        b"y",
        rustix::fs::XattrFlags::empty(),
    )
    .map_err(|e| match e {
        // Unprivileged outside a user namespace (trusted.* needs CAP_SYS_ADMIN), or a backing
        // filesystem without xattrs: overlay2 cannot work here, so the next driver is tried.
        rustix::io::Errno::PERM | rustix::io::Errno::ACCESS | rustix::io::Errno::NOTSUP => {
            Error::NotSupported(format!(
                "overlay2 cannot set {xattr}* xattrs under {}: {e}",
                home.display()
            ))
        }
        e => Error::io("setxattr", p("l2/d"), e.into()),
    })?;

    // Loading the module on first mount makes /sys/module/overlay appear; check after mounting.
    let spec = OverlaySpec {
        home: &probe.path,
        lowers: vec!["l2".into(), "l1".into()],
        upper_work: Some(("l3".into(), "work".into())),
        target: probe.merged.clone(),
        index_off: false,
        userxattr,
        label: None,
    };
    mount_overlay(&spec, false).map_err(|e| {
        let e = crate::error::with_causes(&e);
        Error::NotSupported(format!("overlay mount test failed: {e}"))
    })?;
    let index_off = Path::new("/sys/module/overlay/parameters/index").exists();

    let native_diff = native_diff_probe(&probe.path, xattr);
    let metacopy = {
        let m = p("merged/m");
        std::fs::set_permissions(&m, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .map_err(|e| Error::io("chmod", &m, e))?;
        has_xattr(&p("l3/m"), &format!("{xattr}metacopy"))
    };
    unmount(&probe.merged)?;

    let lowerdir_plus = {
        let attempt = || -> rustix::io::Result<()> {
            let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)?;
            rustix::mount::fsconfig_set_string(&fs, "lowerdir+", p("l2").as_path())?;
            rustix::mount::fsconfig_set_string(&fs, "lowerdir+", p("l1").as_path())?;
            rustix::mount::fsconfig_create(&fs)?;
            // A detached mount: dropping the fd unmounts it.
            let _mnt = rustix::mount::fsmount(
                &fs,
                FsMountFlags::FSMOUNT_CLOEXEC,
                MountAttrFlags::empty(),
            )?;
            Ok(())
        };
        attempt().is_ok()
    };
    let native_diff = if metacopy && native_diff.is_ok() {
        Err("kernel has metacopy enabled (copy-up is metadata-only)".to_string())
    } else {
        native_diff
    };
    if let Err(reason) = &native_diff {
        tracing::warn!(
            "Not using native diff for overlay2, this may cause degraded performance for building images: {reason}"
        );
    }
    drop(probe);
    Ok(Features {
        backing_fs,
        d_type,
        index_off,
        userxattr,
        metacopy,
        native_diff,
        lowerdir_plus,
    })
}

/// Docker's `doesSupportNativeDiff` checks, run on the probe mount.
fn native_diff_probe(dir: &Path, xattr: &str) -> std::result::Result<(), String> {
    let f = dir.join("merged/d/f");
    std::fs::write(&f, b"").map_err(|e| format!("write {}: {e}", f.display()))?;
    if read_xattr(&dir.join("l3/d"), &format!("{xattr}opaque")).as_deref() == Some(b"y") {
        return Err(
            "opaque flag erroneously copied up, consider update to kernel 4.8 or later".into(),
        );
    }
    match std::fs::rename(dir.join("merged/d1"), dir.join("merged/d2")) {
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::XDEV.raw_os_error()) => Ok(()),
        Err(e) => Err(format!("failed to rename dir in merged directory: {e}")),
        Ok(()) => {
            if has_xattr(&dir.join("l3/d2"), &format!("{xattr}redirect")) {
                Err("kernel has CONFIG_OVERLAY_FS_REDIRECT_DIR enabled".into())
            } else {
                Ok(())
            }
        }
    }
}

fn has_d_type(dir: &Path) -> Result<bool> {
    let fd = rustix::fs::open(
        dir,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| Error::io("open", dir, e.into()))?;
    let mut entries =
        rustix::fs::Dir::read_from(&fd).map_err(|e| Error::io("readdir", dir, e.into()))?;
    let mut seen = false;
    while let Some(entry) = entries.read() {
        let entry = entry.map_err(|e| Error::io("readdir", dir, e.into()))?;
        let name = entry.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        seen = true;
        if entry.file_type() == rustix::fs::FileType::Unknown {
            return Ok(false);
        }
    }
    Ok(seen)
}

/// Reads an xattr without following symlinks; `None` when absent or unreadable.
pub(crate) fn read_xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match rustix::fs::lgetxattr(path, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Some(buf);
            }
            Err(rustix::io::Errno::RANGE) if buf.len() < 65536 => buf.resize(buf.len() * 4, 0),
            Err(_) => return None,
        }
    }
}

/// [`read_xattr`] of the entry `name` in the directory `dir`, not following it: the kernel
/// resolves one component, so it works at any depth.
pub(crate) fn read_xattr_at(
    dir: &std::os::fd::OwnedFd,
    name: &std::ffi::OsStr,
    attr: &str,
) -> Option<Vec<u8>> {
    use std::os::fd::AsFd;
    use std::os::unix::ffi::OsStrExt;
    let name = std::ffi::CString::new(name.as_bytes()).ok()?;
    let attr = std::ffi::CString::new(attr).ok()?;
    safe_root::get_xattr_at(dir.as_fd(), &name, &attr)
        .ok()
        .flatten()
}

pub(crate) fn has_xattr(path: &Path, name: &str) -> bool {
    read_xattr(path, name).is_some()
}
