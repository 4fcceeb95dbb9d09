//! Mounting and unmounting overlay, and knowing what is mounted.
//!
//! Two ways to mount:
//!
//! * the new mount API (`fsopen` + one `fsconfig("lowerdir+", …)` per lower + `fsmount` +
//!   `move_mount`, kernel ≥ 6.8): every path is its own call, so there is no page-size limit on
//!   the options and no need to change directory;
//! * classic `mount(2)` with an option string. Docker's string uses absolute `l/<LINK>` paths;
//!   when that exceeds a page it switches to paths relative to the home. We do that on a
//!   throw-away thread that unshares its filesystem context (`CLONE_FS`) before `fchdir`, so
//!   the process's working directory never changes.

use std::ffi::CString;
use std::os::fd::AsFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MountFlags, MoveMountFlags, UnmountFlags,
};

use crate::error::{Error, Result};

/// Which syscall family mounts layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MountApi {
    /// `fsconfig` with `lowerdir+` when the kernel has it, else `mount(2)`.
    #[default]
    Auto,
    /// Always `mount(2)` with an option string (relative paths when long), as Docker.
    Legacy,
}

/// One overlay mount to make.
#[derive(Debug, Clone)]
pub(crate) struct OverlaySpec<'a> {
    /// Driver home; relative paths below are relative to it.
    pub home: &'a Path,
    /// Lower directories relative to the home, uppermost first (`l/<LINK>` or `<id>/diff`).
    pub lowers: Vec<String>,
    /// Upper and work dirs relative to the home, for a writable mount.
    pub upper_work: Option<(String, String)>,
    /// Mount point (absolute).
    pub target: PathBuf,
    /// `index=off` is passed when the kernel knows the option.
    pub index_off: bool,
    /// `userxattr` is passed (user namespaces).
    pub userxattr: bool,
    /// SELinux context for the mount, if any.
    pub label: Option<&'a str>,
}

impl OverlaySpec<'_> {
    /// Docker's option string with absolute or home-relative paths.
    pub(super) fn option_string(&self, relative: bool) -> String {
        let abs = |p: &str| {
            if relative {
                p.to_string()
            } else {
                self.home.join(p).to_string_lossy().into_owned()
            }
        };
        let mut s = String::new();
        if self.index_off {
            s.push_str("index=off,");
        }
        if self.userxattr {
            s.push_str("userxattr,");
        }
        s.push_str("lowerdir=");
        let lowers: Vec<String> = self.lowers.iter().map(|l| abs(l)).collect();
        s.push_str(&lowers.join(":"));
        if let Some((upper, work)) = &self.upper_work {
            s.push_str(",upperdir=");
            s.push_str(&abs(upper));
            s.push_str(",workdir=");
            s.push_str(&abs(work));
        }
        if let Some(label) = self.label {
            s.push_str(&format!(",context=\"{label}\""));
        }
        s
    }
}

/// The longest option string `mount(2)` takes: one page minus the NUL.
pub(crate) fn max_option_len() -> usize {
    rustix::param::page_size() - 1
}

/// Mounts `spec`, using the new mount API when `use_fsconfig`.
pub(crate) fn mount_overlay(spec: &OverlaySpec<'_>, use_fsconfig: bool) -> Result<()> {
    let _span = tracing::debug_span!("overlay_mount", target = %spec.target.display(), lowers = spec.lowers.len(), fsconfig = use_fsconfig).entered();
    if use_fsconfig {
        mount_with_fsconfig(spec)
    } else {
        mount_with_mount2(spec)
    }
}

fn mount_err(spec: &OverlaySpec<'_>, detail: String) -> Error {
    Error::Other(format!(
        "error creating overlay mount to {}: {detail}",
        spec.target.display()
    ))
}

fn mount_with_fsconfig(spec: &OverlaySpec<'_>) -> Result<()> {
    let fs = rustix::mount::fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| mount_err(spec, format!("fsopen: {e}")))?;
    let fail = |what: &str, e: rustix::io::Errno| {
        let log = read_fs_context_log(fs.as_fd());
        mount_err(spec, format!("{what}: {e}{log}"))
    };
    // Same source name as Docker's mount(2) calls, for anyone reading mountinfo.
    rustix::mount::fsconfig_set_string(&fs, "source", "overlay").map_err(|e| fail("source", e))?;
    if spec.index_off {
        rustix::mount::fsconfig_set_string(&fs, "index", "off")
            .map_err(|e| fail("index=off", e))?;
    }
    if spec.userxattr {
        rustix::mount::fsconfig_set_flag(&fs, "userxattr").map_err(|e| fail("userxattr", e))?;
    }
    for lower in &spec.lowers {
        let path = spec.home.join(lower);
        rustix::mount::fsconfig_set_string(&fs, "lowerdir+", path.as_path())
            .map_err(|e| fail(&format!("lowerdir+ {}", path.display()), e))?;
    }
    if let Some((upper, work)) = &spec.upper_work {
        rustix::mount::fsconfig_set_string(&fs, "upperdir", spec.home.join(upper).as_path())
            .map_err(|e| fail("upperdir", e))?;
        rustix::mount::fsconfig_set_string(&fs, "workdir", spec.home.join(work).as_path())
            .map_err(|e| fail("workdir", e))?;
    }
    if let Some(label) = spec.label {
        rustix::mount::fsconfig_set_string(&fs, "context", label)
            .map_err(|e| fail("context", e))?;
    }
    rustix::mount::fsconfig_create(&fs).map_err(|e| fail("create", e))?;
    let mnt = rustix::mount::fsmount(&fs, FsMountFlags::FSMOUNT_CLOEXEC, MountAttrFlags::empty())
        .map_err(|e| fail("fsmount", e))?;
    rustix::mount::move_mount(
        &mnt,
        "",
        rustix::fs::CWD,
        spec.target.as_path(),
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
    )
    .map_err(|e| fail("move_mount", e))
}

/// The kernel explains `fsconfig` failures through messages read from the context fd.
fn read_fs_context_log(fs: std::os::fd::BorrowedFd<'_>) -> String {
    let mut out = String::new();
    let mut buf = [0u8; 512];
    for _ in 0..8 {
        match rustix::io::read(fs, &mut buf) {
            Ok(n) if n > 0 => {
                out.push_str(" [");
                out.push_str(String::from_utf8_lossy(&buf[..n]).trim());
                out.push(']');
            }
            _ => break,
        }
    }
    out
}

fn mount_with_mount2(spec: &OverlaySpec<'_>) -> Result<()> {
    let absolute = spec.option_string(false);
    if absolute.len() <= max_option_len() {
        let data = CString::new(absolute).map_err(|_| mount_err(spec, "NUL in options".into()))?;
        return rustix::mount::mount(
            "overlay",
            spec.target.as_path(),
            "overlay",
            MountFlags::empty(),
            data.as_c_str(),
        )
        .map_err(|e| mount_err(spec, e.to_string()));
    }
    let relative = spec.option_string(true);
    if relative.len() > max_option_len() {
        return Err(mount_err(
            spec,
            format!(
                "cannot mount layer, mount label too large {}",
                relative.len()
            ),
        ));
    }
    let target_rel = spec
        .target
        .strip_prefix(spec.home)
        .map_err(|_| mount_err(spec, "mount point is not under the home".into()))?
        .to_path_buf();
    let data = CString::new(relative).map_err(|_| mount_err(spec, "NUL in options".into()))?;
    let home = spec.home.to_path_buf();
    // A dedicated thread with its own fs context: fchdir there cannot move anyone else.
    let joined = std::thread::spawn(move || -> std::result::Result<(), String> {
        // SAFETY: CLONE_FS only detaches this thread's cwd/root/umask from the other threads;
        // it does not touch the file descriptor table, so no fd invariants are affected.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::FS) }
            .map_err(|e| format!("unshare(CLONE_FS): {e}"))?;
        let dir = rustix::fs::open(
            home.as_path(),
            rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::empty(),
        )
        .map_err(|e| format!("open {}: {e}", home.display()))?;
        rustix::process::fchdir(&dir).map_err(|e| format!("fchdir {}: {e}", home.display()))?;
        rustix::mount::mount(
            "overlay",
            target_rel.as_path(),
            "overlay",
            MountFlags::empty(),
            data.as_c_str(),
        )
        .map_err(|e| e.to_string())
    })
    .join();
    match joined {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(mount_err(spec, e)),
        Err(_) => Err(mount_err(spec, "mount thread panicked".into())),
    }
}

/// Detaches the mount at `target` (lazy, like Docker's `MNT_DETACH`).
pub(crate) fn unmount(target: &Path) -> Result<()> {
    rustix::mount::unmount(target, UnmountFlags::DETACH)
        .map_err(|e| Error::io("unmount", target, e.into()))
}

/// Mount points listed in `/proc/self/mountinfo`.
pub(crate) fn mount_points() -> Result<Vec<PathBuf>> {
    let text = std::fs::read("/proc/self/mountinfo")
        .map_err(|e| Error::io("read", "/proc/self/mountinfo", e))?;
    Ok(text
        .split(|&b| b == b'\n')
        .filter_map(|line| line.split(|&b| b == b' ').nth(4))
        .map(unescape_mountinfo)
        .collect())
}

/// Whether something is mounted exactly at `path`.
pub(crate) fn is_mounted(path: &Path) -> Result<bool> {
    Ok(mount_points()?.iter().any(|p| p == path))
}

/// Mount points strictly under `dir`, deepest first (the order to unmount them).
pub(crate) fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = mount_points()?
        .into_iter()
        .filter(|p| p != dir && p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    Ok(found)
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &[u8]) -> PathBuf {
    let mut out = Vec::with_capacity(field.len());
    let mut i = 0;
    while i < field.len() {
        if field[i] == b'\\'
            && i + 3 < field.len()
            && field[i + 1..i + 4]
                .iter()
                .all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (field[i + 1] - b'0') * 64 + (field[i + 2] - b'0') * 8 + (field[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(field[i]);
            i += 1;
        }
    }
    PathBuf::from(std::ffi::OsStr::from_bytes(&out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes_are_decoded() {
        assert_eq!(unescape_mountinfo(b"/a\\040b"), PathBuf::from("/a b"));
        assert_eq!(unescape_mountinfo(b"/plain"), PathBuf::from("/plain"));
        assert_eq!(unescape_mountinfo(b"/end\\04"), PathBuf::from("/end\\04"));
    }

    #[test]
    fn option_strings_follow_docker() {
        let home = Path::new("/var/lib/docker/overlay2");
        let spec = OverlaySpec {
            home,
            lowers: vec!["l/AAA".into(), "l/BBB".into()],
            upper_work: Some(("x/diff".into(), "x/work".into())),
            target: home.join("x/merged"),
            index_off: true,
            userxattr: false,
            label: None,
        };
        assert_eq!(
            spec.option_string(false),
            "index=off,lowerdir=/var/lib/docker/overlay2/l/AAA:/var/lib/docker/overlay2/l/BBB,\
             upperdir=/var/lib/docker/overlay2/x/diff,workdir=/var/lib/docker/overlay2/x/work"
        );
        assert_eq!(
            spec.option_string(true),
            "index=off,lowerdir=l/AAA:l/BBB,upperdir=x/diff,workdir=x/work"
        );
    }
}
