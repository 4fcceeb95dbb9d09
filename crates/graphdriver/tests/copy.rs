//! moby's copy tests (moby-layer-spec §4.2 items 20–23) against `copy::copy_dir`, and a tree
//! deeper than `PATH_MAX` through copy, changes, tar and removal (what vfs does with it).

use testkit::archive as common_tree;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common_tree::{describe, set_mtime};
use layer_archive::changes::{changes_dirs, changes_size};
use layer_archive::walk::{NoConversion, WalkOptions, tar_directory};

/// Item 22–23: DirCopy keeps modes, owners, nanosecond mtimes, hardlinks; new inodes.
#[test]
fn copy_dir_keeps_metadata_and_hardlinks() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dst).unwrap();
    for i in 0..3 {
        let d = src.join(format!("d{i}/e{i}"));
        fs::create_dir_all(&d).unwrap();
        for j in 0..3 {
            let f = d.join(format!("f{j}"));
            fs::write(
                &f,
                graphdriver::graphtest::random_content(1024, (i * 3 + j) as u64),
            )
            .unwrap();
            fs::set_permissions(&f, fs::Permissions::from_mode(0o400 | (j as u32 * 0o111)))
                .unwrap();
            set_mtime(&f, 1_500_000_000 + j as i64, 100 * j as u32 + 7);
        }
        fs::set_permissions(&d, fs::Permissions::from_mode(0o700 | (i as u32 * 0o21))).unwrap();
        set_mtime(&d, 1_400_000_000 + i as i64, 999);
    }
    fs::hard_link(src.join("d0/e0/f0"), src.join("hl")).unwrap();
    std::os::unix::fs::symlink("/absolute/elsewhere", src.join("sym")).unwrap();
    graphdriver::copy::copy_dir(&src, &dst).unwrap();
    assert_eq!(describe(&dst, true), describe(&src, true));
    for i in 0..3 {
        let (a, b) = (
            src.join(format!("d{i}/e{i}")),
            dst.join(format!("d{i}/e{i}")),
        );
        let (ma, mb) = (fs::metadata(&a).unwrap(), fs::metadata(&b).unwrap());
        assert_eq!(
            (ma.mtime(), ma.mtime_nsec()),
            (mb.mtime(), mb.mtime_nsec()),
            "dir times"
        );
        assert_ne!(ma.ino(), mb.ino());
        assert_eq!(ma.dev(), mb.dev());
    }
    let (a, b) = (
        fs::metadata(dst.join("hl")).unwrap(),
        fs::metadata(dst.join("d0/e0/f0")).unwrap(),
    );
    assert_eq!(a.ino(), b.ino(), "hardlinks stay hardlinked");
    assert_ne!(a.ino(), fs::metadata(src.join("hl")).unwrap().ino());
}

/// A tree deeper than PATH_MAX (1000 levels, 11 KB paths), as a container can create:
/// copy, changes, tar and removal all work, with bounded stack and descriptors.
#[test]
fn trees_deeper_than_path_max() {
    use rustix::fs::{Mode, OFlags};
    const DEPTH: usize = 1000;
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dst).unwrap();
    let mut cur =
        rustix::fs::open(&src, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
    for _ in 0..DEPTH {
        rustix::fs::mkdirat(&cur, "dddddddddd", Mode::from_raw_mode(0o755)).unwrap();
        cur = rustix::fs::openat(
            &cur,
            "dddddddddd",
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
    }
    let bottom = |root: &std::path::Path| {
        let mut fd =
            rustix::fs::open(root, OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
        for _ in 0..DEPTH {
            fd = rustix::fs::openat(
                &fd,
                "dddddddddd",
                OFlags::RDONLY | OFlags::DIRECTORY,
                Mode::empty(),
            )
            .unwrap();
        }
        fd
    };
    let write = |dir: &std::os::fd::OwnedFd, data: &[u8]| {
        let f = rustix::fs::openat(
            dir,
            "leaf",
            OFlags::WRONLY | OFlags::CREATE | OFlags::TRUNC,
            Mode::from_raw_mode(0o644),
        )
        .unwrap();
        rustix::io::write(&f, data).unwrap();
    };
    write(&cur, b"deep");
    drop(cur);

    graphdriver::copy::copy_dir(&src, &dst).unwrap();
    assert!(changes_dirs(&dst, Some(&src)).unwrap().is_empty());
    write(&bottom(&dst), b"DEEP");
    let changes = changes_dirs(&dst, Some(&src)).unwrap();
    assert_eq!(
        changes.len(),
        DEPTH + 1,
        "every directory on the way is modified, plus the leaf"
    );
    assert!(changes.last().unwrap().path.ends_with("dddddddddd/leaf"));
    assert_eq!(
        changes_size(&dst, &changes).unwrap(),
        0,
        "paths past PATH_MAX cannot be sized by path"
    );

    let tar = tar_directory(&src, Vec::new(), &WalkOptions::default(), &mut NoConversion).unwrap();
    let entries = layer_archive::TarReader::new(&tar[..], Default::default());
    let mut reader = entries;
    let mut count = 0;
    while let Ok(Some(_)) = reader.next_entry() {
        count += 1;
    }
    assert!(count > 0);

    let dirfd = rustix::fs::open(
        tmp.path(),
        OFlags::RDONLY | OFlags::DIRECTORY,
        Mode::empty(),
    )
    .unwrap();
    safe_root::remove_all_at(std::os::fd::AsFd::as_fd(&dirfd), c"src").unwrap();
    safe_root::remove_all_at(std::os::fd::AsFd::as_fd(&dirfd), c"dst").unwrap();
    assert!(!src.exists() && !dst.exists());
}
