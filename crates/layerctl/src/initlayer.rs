//! Docker's init layer (moby `daemon/initlayer`): the mount points and files a container
//! runtime bind-mounts over, made in a layer between the image and the container's own layer
//! so they never show up in `docker diff` or `docker commit`.
//!
//! Every path component is unlinked first (as moby does): a symlink in the image at `/etc` or
//! `/etc/hosts` is replaced, never followed, so nothing is created outside the layer. The
//! walk itself goes through directory fds opened with `O_NOFOLLOW`.
//!
//! What it creates belongs to the (remapped) root pair, as moby's `Setup(fs, rootIdentity)`
//! makes it; unlike moby, the `/etc/mtab` symlink too (moby leaves it to host root, which a
//! remapped store cannot map back).

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, Mode, OFlags};

/// What to make at a path.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Dir,
    File,
    Symlink(&'static str),
}

/// Docker 20.10's list (`/etc/mtab` included, as the fixture's init layers show).
const ENTRIES: &[(&str, Kind)] = &[
    ("/dev/pts", Kind::Dir),
    ("/dev/shm", Kind::Dir),
    ("/proc", Kind::Dir),
    ("/sys", Kind::Dir),
    ("/.dockerenv", Kind::File),
    ("/etc/resolv.conf", Kind::File),
    ("/etc/hosts", Kind::File),
    ("/etc/hostname", Kind::File),
    ("/dev/console", Kind::File),
    ("/etc/mtab", Kind::Symlink("/proc/mounts")),
];

/// Everything is made with mode 0755 (files too, as moby does).
const MODE: u32 = 0o755;

/// Fills a mounted init layer, what it creates owned by `owner` (the store's root pair).
/// Wrapped in a closure, a [`layer_store::InitFn`].
pub fn setup(
    root: &Path,
    owner: (u32, u32),
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let root_fd = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| with_path(e, root))?;
    for (path, kind) in ENTRIES {
        make(&root_fd, path, *kind, owner)
            .map_err(|e| io::Error::new(e.kind(), format!("init layer: {path}: {e}")))?;
    }
    Ok(())
}

fn with_path(e: rustix::io::Errno, p: &Path) -> io::Error {
    let e = io::Error::from(e);
    io::Error::new(e.kind(), format!("{}: {e}", p.display()))
}

/// Gives what was just made to `owner` unless it is the creator's already.
fn chown_new(dir: &OwnedFd, name: &str, (uid, gid): (u32, u32)) -> io::Result<()> {
    let creator = (
        rustix::process::geteuid().as_raw(),
        rustix::process::getegid().as_raw(),
    );
    if (uid, gid) == creator {
        return Ok(());
    }
    rustix::fs::chownat(
        dir,
        name,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
        AtFlags::SYMLINK_NOFOLLOW,
    )?;
    Ok(())
}

fn make(root: &OwnedFd, path: &str, kind: Kind, owner: (u32, u32)) -> io::Result<()> {
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let Some((last, dirs)) = parts.split_last() else {
        return Ok(());
    };
    let mut dir: OwnedFd = root.as_fd().try_clone_to_owned()?;
    for name in dirs {
        // A file or symlink in the way goes; a directory stays (unlink fails on it).
        let _ = rustix::fs::unlinkat(&dir, *name, AtFlags::empty());
        match rustix::fs::mkdirat(&dir, *name, Mode::from_raw_mode(MODE)) {
            Ok(()) => chown_new(&dir, name, owner)?,
            Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        dir = rustix::fs::openat(
            &dir,
            *name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
    }
    let _ = rustix::fs::unlinkat(&dir, *last, AtFlags::empty());
    if rustix::fs::statat(&dir, *last, AtFlags::SYMLINK_NOFOLLOW).is_ok() {
        // A directory the image already has: keep it, as moby does.
        return Ok(());
    }
    match kind {
        Kind::Dir => {
            rustix::fs::mkdirat(&dir, *last, Mode::from_raw_mode(MODE))?;
            let fd = rustix::fs::openat(
                &dir,
                *last,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            // The umask may have cut bits off.
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(MODE))?;
        }
        Kind::File => {
            let fd = rustix::fs::openat(
                &dir,
                *last,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(MODE),
            )?;
            rustix::fs::fchmod(&fd, Mode::from_raw_mode(MODE))?;
        }
        Kind::Symlink(target) => rustix::fs::symlinkat(target, &dir, *last)?,
    }
    chown_new(&dir, last, owner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn makes_docker_init_files_and_replaces_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        // An image whose /etc is a symlink out of the layer: it must be replaced, not followed.
        std::os::unix::fs::symlink(outside.path(), dir.path().join("etc")).unwrap();
        std::fs::create_dir(dir.path().join("proc")).unwrap();
        let me = (
            rustix::process::geteuid().as_raw(),
            rustix::process::getegid().as_raw(),
        );
        setup(dir.path(), me).unwrap();
        assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 0);
        for f in [
            ".dockerenv",
            "etc/hosts",
            "etc/hostname",
            "etc/resolv.conf",
            "dev/console",
        ] {
            let m = std::fs::symlink_metadata(dir.path().join(f)).unwrap();
            assert!(m.is_file(), "{f}");
            assert_eq!(m.len(), 0);
        }
        for d in ["dev/pts", "dev/shm", "proc", "sys", "etc"] {
            assert!(
                std::fs::symlink_metadata(dir.path().join(d))
                    .unwrap()
                    .is_dir(),
                "{d}"
            );
        }
        assert_eq!(
            std::fs::read_link(dir.path().join("etc/mtab")).unwrap(),
            Path::new("/proc/mounts")
        );
    }
}
