//! Trees about 2,000 levels deep on every path of both drivers: apply, diff (export), changes,
//! and a read-write layer's changes and diff, with the descriptor limit lowered to 256.
//!
//! A 2,000-level path is ~4,000 bytes, near `PATH_MAX`: any step that builds a full path for
//! a syscall fails with `ENAMETOOLONG` on the upper levels, and any step that holds a
//! descriptor per level fails with `EMFILE`. Both are the bug these tests catch.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use graphdriver::graphtest::TempHome;
use graphdriver::overlay2::{Overlay2, Overlay2Options};
use graphdriver::{CreateOpts, Driver, ProtoDriver};
use layer_archive::change::ChangeKind;
use layer_archive::codec::{EntryKind, Header, Limits, TarReader, TarWriter};
use rustix::fs::{Mode, OFlags};

use testkit::overlay2 as overlay2_util;

/// Levels of the trees: `d/` × DEPTH plus a file `f` at every level is a 4,001-byte name at
/// the bottom, under the codec's 4,096-byte cap.
const DEPTH: usize = 2000;
/// Descriptors a test may hold: far below DEPTH.
const FD_LIMIT: u64 = 256;

/// The tests share the process's descriptor limit: one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn lower_fd_limit() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
        rustix::process::setrlimit(
            rustix::process::Resource::Nofile,
            rustix::process::Rlimit {
                current: Some(FD_LIMIT),
                maximum: hard,
            },
        )
        .unwrap();
    });
}

/// `top/`, `top/f`, `top/d/`, `top/d/f`, … DEPTH levels below `top`.
fn deep_tar(top: &str) -> Vec<u8> {
    let mut w = TarWriter::new(Vec::new());
    let mut dir = top.to_owned();
    for level in 0..DEPTH {
        if level > 0 {
            dir.push_str("/d");
        }
        w.append(&Header::dir(format!("{dir}/")), None).unwrap();
        let mut body: &[u8] = b"x";
        w.append(&Header::file(format!("{dir}/f"), 1), Some(&mut body))
            .unwrap();
    }
    w.finish().unwrap()
}

/// The entry names of a tar, in order, without a trailing slash.
fn names(tar: impl Read) -> Vec<(String, EntryKind)> {
    let mut r = TarReader::new(tar, Limits::default());
    let mut out = Vec::new();
    while let Some(h) = r.next_entry().unwrap() {
        let name = String::from_utf8(h.name.clone()).unwrap();
        out.push((name.trim_end_matches('/').to_owned(), h.kind));
    }
    out
}

/// Expected names of [`deep_tar`]`(top)`.
fn deep_names(top: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut dir = top.to_owned();
    for level in 0..DEPTH {
        if level > 0 {
            dir.push_str("/d");
        }
        out.push(dir.clone());
        out.push(format!("{dir}/f"));
    }
    out
}

/// Creates `top` and DEPTH levels below it in `root`, fd by fd (paths that long cannot be
/// named from the root), with a file `f` in each; only one directory fd is held at a time.
fn write_deep_tree(root: &Path, top: &str) {
    let open_dir = |at: &OwnedFd, name: &str| -> OwnedFd {
        rustix::fs::openat(
            at,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .unwrap()
    };
    let root = rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .unwrap();
    rustix::fs::mkdirat(&root, top, Mode::from_raw_mode(0o755)).unwrap();
    let mut cur = open_dir(&root, top);
    for level in 0..DEPTH {
        let f = rustix::fs::openat(
            &cur,
            "f",
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o644),
        )
        .unwrap();
        rustix::io::write(&f, b"y").unwrap();
        if level + 1 < DEPTH {
            rustix::fs::mkdirat(&cur, "d", Mode::from_raw_mode(0o755)).unwrap();
            cur = open_dir(&cur, "d");
        }
    }
}

/// Descriptors this process has open (a few come and go with the driver's own files: the
/// checks allow a handful, far below a leak per level).
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// The deepest directory of the tree `top` in `root`, reached fd by fd.
fn open_deep(root: &Path, top: &str) -> OwnedFd {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let root = rustix::fs::open(root, flags, Mode::empty()).unwrap();
    let mut cur = rustix::fs::openat(&root, top, flags, Mode::empty()).unwrap();
    for _ in 1..DEPTH {
        cur = rustix::fs::openat(&cur, "d", flags, Mode::empty()).unwrap();
    }
    cur
}

fn sorted(mut v: Vec<String>) -> Vec<String> {
    v.sort();
    v
}

/// Every path of a driver on deep trees.
fn every_path(driver: &dyn Driver) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    lower_fd_limit();
    let fds_before = open_fds();
    // Apply a deep layer.
    let tar = deep_tar("a");
    driver.create("base", None, &CreateOpts::default()).unwrap();
    let applied = driver.apply_diff("base", None, &mut &tar[..]).unwrap();
    assert_eq!(applied, DEPTH as u64, "applied size: one byte per file");
    // Export it (diff against nothing) and list its changes.
    assert!(open_fds() <= fds_before + 4, "descriptors leaked by apply");
    let exported = names(driver.diff("base", None).unwrap());
    let want = deep_names("a");
    assert_eq!(
        sorted(exported.into_iter().map(|(n, _)| n).collect()),
        sorted(want),
        "export of the deep layer"
    );
    assert_eq!(driver.diff_size("base", None).unwrap(), DEPTH as u64);
    let changes = driver.changes("base", None).unwrap();
    assert_eq!(changes.len(), 2 * DEPTH);
    assert!(changes.iter().all(|c| c.kind == ChangeKind::Add));
    // A read-write layer on it, with a second deep tree written into it by hand.
    driver
        .create_read_write("rw", Some("base"), &CreateOpts::default())
        .unwrap();
    let root = driver.get("rw", "").unwrap();
    write_deep_tree(&root, "b");
    // And a file at the bottom of the parent's deep tree (overlay2 copies every level up).
    let bottom = open_deep(&root, "a");
    let f = rustix::fs::openat(
        &bottom,
        "added",
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    )
    .unwrap();
    drop((f, bottom));
    driver.put("rw").unwrap();
    let changes = driver.changes("rw", Some("base")).unwrap();
    // Every level of `a` is changed (a child added below it), `added` and all of `b` new.
    let a_levels: Vec<String> = deep_names("a")
        .into_iter()
        .filter(|n| !n.ends_with("/f"))
        .collect();
    let added = format!("{}/added", a_levels.last().unwrap());
    let mut want: Vec<(String, ChangeKind)> = deep_names("b")
        .into_iter()
        .map(|n| (n, ChangeKind::Add))
        .collect();
    want.extend(a_levels.iter().map(|n| (n.clone(), ChangeKind::Modify)));
    want.push((added.clone(), ChangeKind::Add));
    want.sort();
    let mut got: Vec<(String, ChangeKind)> = changes
        .iter()
        .map(|c| {
            (
                c.path.to_string_lossy().trim_start_matches('/').to_owned(),
                c.kind,
            )
        })
        .collect();
    got.sort();
    assert_eq!(got.len(), want.len(), "changes of the rw layer");
    assert!(got == want, "changes of the rw layer differ");
    assert!(
        open_fds() <= fds_before + 4,
        "descriptors leaked by changes"
    );
    let diff = names(driver.diff("rw", Some("base")).unwrap());
    let mut want_diff: Vec<String> = deep_names("b");
    want_diff.extend(a_levels.iter().cloned());
    want_diff.push(added);
    assert_eq!(
        sorted(diff.into_iter().map(|(n, _)| n).collect()),
        sorted(want_diff),
        "diff of the rw layer"
    );
    // And the diff applies as a layer of its own.
    let diff: Vec<u8> = {
        let mut v = Vec::new();
        driver
            .diff("rw", Some("base"))
            .unwrap()
            .read_to_end(&mut v)
            .unwrap();
        v
    };
    driver
        .create("top", Some("base"), &CreateOpts::default())
        .unwrap();
    driver
        .apply_diff("top", Some("base"), &mut &diff[..])
        .unwrap();
    let top = names(driver.diff("top", Some("base")).unwrap());
    assert_eq!(top.len(), 2 * DEPTH + DEPTH + 1);
    for id in ["top", "rw", "base"] {
        driver.remove(id).unwrap();
    }
    assert!(open_fds() <= fds_before + 4, "descriptors leaked");
}

#[test]
fn vfs_deep_trees_on_every_path() {
    let home = TempHome::new("deep-vfs").unwrap();
    let driver = graphdriver::vfs::init(home.path(), &[]).unwrap();
    every_path(&driver);
}

#[test]
fn overlay2_deep_trees_on_every_path() {
    if !overlay2_util::can_run() {
        return;
    }
    let home = TempHome::new("deep-ovl").unwrap();
    let driver = Overlay2::new(home.path().join("overlay2"), Overlay2Options::default()).unwrap();
    every_path(&driver);
    driver.cleanup().unwrap();
}
