//! go-archive behaviours the drivers rely on (moby-layer-spec §4.4), against our archive
//! code. moby's copy tests (§4.2 items 20–23) are graphdriver's `tests/copy.rs`.

use testkit::archive as common_tree;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};

use common_tree::{copy_tree, describe, dir, file, marker, set_mtime, tar_of};
use layer_archive::Header;
use layer_archive::changes::{changes_dirs, changes_size};
use layer_archive::walk::{NoConversion, WalkOptions, tar_directory};
use layer_archive::{ApplyOptions, EntryKind, WhiteoutFormat, apply_layer};
use layer_archive::{Change, ChangeKind};

fn opts() -> ApplyOptions {
    ApplyOptions::for_current_user().with_layer("test")
}

/// Spec §4.4 item 48 and 53: implied parents are 0755 whatever the umask; explicit modes
/// are kept; a directory entry without a trailing slash works.
#[test]
fn implied_directories_and_explicit_modes() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = Header::dir("explicit");
    d.mode = 0o600;
    let mut f = Header::file("implied/deeper/file", 0);
    f.mode = 0o666;
    let tar = tar_of(&[(d, b""), (f, b"")]);
    apply_layer(tmp.path(), &mut &tar[..], &opts()).unwrap();
    let mode = |p: &str| fs::metadata(tmp.path().join(p)).unwrap().mode() & 0o7777;
    assert_eq!(mode("implied"), 0o755);
    assert_eq!(mode("implied/deeper"), 0o755);
    assert_eq!(mode("explicit"), 0o600);
    assert_eq!(mode("implied/deeper/file"), 0o666);
    assert!(fs::metadata(tmp.path().join("explicit")).unwrap().is_dir());
}

/// Directory times are restored after their children are written.
#[test]
fn directory_times_set_after_children() {
    let tmp = tempfile::tempdir().unwrap();
    let mut d = Header::dir("d/");
    d.mtime = layer_archive::Time {
        sec: 1_000_000_000,
        nsec: 5,
    };
    let mut f = Header::file("d/f", 1);
    f.mtime = layer_archive::Time {
        sec: 1_500_000_000,
        nsec: 123_456_789,
    };
    let tar = tar_of(&[(d, b""), (f, b"x"), marker("d/.wh.nothing")]);
    apply_layer(tmp.path(), &mut &tar[..], &opts()).unwrap();
    let dm = fs::metadata(tmp.path().join("d")).unwrap();
    assert_eq!((dm.mtime(), dm.mtime_nsec()), (1_000_000_000, 5));
    let fm = fs::metadata(tmp.path().join("d/f")).unwrap();
    assert_eq!((fm.mtime(), fm.mtime_nsec()), (1_500_000_000, 123_456_789));
}

/// Item 54 (root): block, char and fifo nodes survive tar and apply; ChangesDirs is empty.
#[test]
fn block_char_fifo_round_trip() {
    testkit::require!(testkit::gate::root("mknod of devices"));
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dst).unwrap();
    use rustix::fs::{FileType, Mode, makedev, mknodat};
    let dirfd = rustix::fs::open(&src, rustix::fs::OFlags::DIRECTORY, Mode::empty()).unwrap();
    mknodat(
        &dirfd,
        "char",
        FileType::CharacterDevice,
        Mode::from_raw_mode(0o620),
        makedev(1, 5),
    )
    .unwrap();
    mknodat(
        &dirfd,
        "block",
        FileType::BlockDevice,
        Mode::from_raw_mode(0o660),
        makedev(7, 1),
    )
    .unwrap();
    mknodat(
        &dirfd,
        "fifo",
        FileType::Fifo,
        Mode::from_raw_mode(0o640),
        0,
    )
    .unwrap();
    let tar = tar_directory(&src, Vec::new(), &WalkOptions::default(), &mut NoConversion).unwrap();
    apply_layer(&dst, &mut &tar[..], &opts()).unwrap();
    assert!(changes_dirs(&dst, Some(&src)).unwrap().is_empty());
    assert_eq!(describe(&dst, true), describe(&src, true));
}

/// Items 56 and 60: hardlinks stay hardlinks through tar and apply; 1000 files round-trip.
#[test]
fn hardlinks_and_many_files_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir_all(src.join("sub")).unwrap();
    fs::create_dir(&dst).unwrap();
    for i in 0..1000 {
        fs::write(src.join(format!("sub/file-{i}")), format!("content {i}")).unwrap();
    }
    fs::hard_link(src.join("sub/file-1"), src.join("link-1")).unwrap();
    fs::hard_link(src.join("sub/file-1"), src.join("sub/zz-link")).unwrap();
    let tar = tar_directory(&src, Vec::new(), &WalkOptions::default(), &mut NoConversion).unwrap();
    let links: Vec<(String, String)> = tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.header().entry_type() == tar::EntryType::Link)
        .map(|e| {
            (
                e.path().unwrap().display().to_string(),
                e.link_name().unwrap().unwrap().display().to_string(),
            )
        })
        .collect();
    assert_eq!(
        links,
        [
            ("sub/file-1".to_string(), "link-1".to_string()),
            ("sub/zz-link".into(), "link-1".into())
        ]
    );
    apply_layer(&dst, &mut &tar[..], &opts()).unwrap();
    assert!(changes_dirs(&dst, Some(&src)).unwrap().is_empty());
    let m = fs::metadata(dst.join("sub/zz-link")).unwrap();
    assert_eq!(m.nlink(), 3);
    assert_eq!(m.ino(), fs::metadata(dst.join("link-1")).unwrap().ino());
}

/// Item 65: ChangesDirs on a mutated copy gives the exact sorted list; touching a
/// directory is not a change.
#[test]
fn changes_dirs_mutated() {
    let tmp = tempfile::tempdir().unwrap();
    let (old, new) = (tmp.path().join("old"), tmp.path().join("new"));
    fs::create_dir(&old).unwrap();
    for d in ["dir1", "dir2", "dir3"] {
        fs::create_dir(old.join(d)).unwrap();
    }
    fs::write(old.join("dir2/inner"), "x").unwrap();
    for (i, f) in ["file1", "file2", "file3", "file4", "file5"]
        .iter()
        .enumerate()
    {
        fs::write(old.join(f), format!("content {i}")).unwrap();
        set_mtime(&old.join(f), 1_600_000_000, 0);
    }
    std::os::unix::fs::symlink("file1", old.join("symlink1")).unwrap();
    std::os::unix::fs::symlink("file1", old.join("symlink2")).unwrap();
    fs::create_dir(&new).unwrap();
    copy_tree(&old, &new);
    assert!(
        changes_dirs(&new, Some(&old)).unwrap().is_empty(),
        "a copy has no changes"
    );

    fs::remove_dir_all(new.join("dir1")).unwrap();
    fs::remove_file(new.join("dir2/inner")).unwrap();
    fs::create_dir(new.join("dirnew")).unwrap();
    set_mtime(&new.join("dir3"), 1_700_000_000, 1); // a touch on a dir is not a change
    fs::remove_file(new.join("file1")).unwrap();
    fs::write(new.join("file2"), "content 1 but longer").unwrap(); // size
    set_mtime(&new.join("file3"), 1_600_000_001, 0); // mtime
    fs::set_permissions(new.join("file4"), fs::Permissions::from_mode(0o600)).unwrap(); // mode
    set_mtime(&new.join("file5"), 1_600_000_000, 1); // one nanosecond
    fs::write(new.join("filenew"), "new").unwrap();
    fs::remove_file(new.join("symlink1")).unwrap();
    fs::remove_file(new.join("symlink2")).unwrap();
    std::os::unix::fs::symlink("file2", new.join("symlink2")).unwrap();
    std::os::unix::fs::symlink("file2", new.join("symlinknew")).unwrap();

    let got: Vec<String> = changes_dirs(&new, Some(&old))
        .unwrap()
        .iter()
        .map(Change::to_string)
        .collect();
    assert_eq!(
        got,
        [
            "D /dir1",
            "C /dir2",
            "D /dir2/inner",
            "A /dirnew",
            "D /file1",
            "C /file2",
            "C /file3",
            "C /file4",
            "C /file5",
            "A /filenew",
            "D /symlink1",
            "C /symlink2",
            "A /symlinknew",
        ]
    );
    // Item 67: only Add and Modify of non-directories count.
    let size = changes_size(&new, &changes_dirs(&new, Some(&old)).unwrap()).unwrap();
    let expect: u64 = [
        "file2",
        "file3",
        "file4",
        "file5",
        "filenew",
        "symlink2",
        "symlinknew",
    ]
    .iter()
    .map(|f| fs::symlink_metadata(new.join(f)).unwrap().len())
    .sum();
    assert_eq!(size, expect);
}

/// The case moby sleeps for: a same-size rewrite that keeps the exact mtime (a write within
/// one coarse clock tick of the original) is still a change, because the new file was born
/// right at that mtime and its content is compared.
#[test]
fn same_tick_rewrite_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let (old, new) = (tmp.path().join("old"), tmp.path().join("new"));
    fs::create_dir(&old).unwrap();
    fs::create_dir(&new).unwrap();
    fs::write(old.join("f"), "AAAA").unwrap();
    copy_tree(&old, &new);
    let m = fs::metadata(old.join("f")).unwrap();
    fs::write(new.join("f"), "BBBB").unwrap();
    set_mtime(&new.join("f"), m.mtime(), m.mtime_nsec() as u32);
    let got = changes_dirs(&new, Some(&old)).unwrap();
    assert_eq!(
        got,
        [Change {
            path: "/f".into(),
            kind: ChangeKind::Modify
        }]
    );
    // An old file with equal stat data is trusted without reading it.
    set_mtime(&old.join("f"), 1_000_000_000, 0);
    set_mtime(&new.join("f"), 1_000_000_000, 0);
    fs::write(old.join("g"), "same").unwrap();
    assert_eq!(
        changes_dirs(&new, Some(&old)).unwrap(),
        [Change {
            path: "/g".into(),
            kind: ChangeKind::Delete
        }]
    );
}

/// Item 67: each inode counted once.
#[test]
fn changes_size_counts_hardlinks_once() {
    let tmp = tempfile::tempdir().unwrap();
    fs::write(tmp.path().join("a"), vec![0u8; 100]).unwrap();
    fs::hard_link(tmp.path().join("a"), tmp.path().join("b")).unwrap();
    fs::write(tmp.path().join("c"), vec![0u8; 3]).unwrap();
    let changes = changes_dirs(tmp.path(), None).unwrap();
    assert_eq!(changes.len(), 3);
    assert_eq!(changes_size(tmp.path(), &changes).unwrap(), 103);
    let deletes = vec![Change {
        path: "/a".into(),
        kind: ChangeKind::Delete,
    }];
    assert_eq!(changes_size(tmp.path(), &deletes).unwrap(), 0);
}

/// Item 45 (root): overlay form on apply; item 47: the same tar applied plainly keeps
/// overlay-shaped names only through whiteout semantics.
#[test]
fn overlay_untar_restores_modes_opaque_and_devices() {
    testkit::require!(testkit::gate::root("trusted xattrs and mknod"));
    let tmp = tempfile::tempdir().unwrap();
    let mut d1 = Header::dir("d1/");
    d1.mode = 0o700;
    let mut d2 = Header::dir("d2/");
    d2.mode = 0o750;
    let mut d3 = Header::dir("d3/");
    d3.mode = 0o700;
    let tar = tar_of(&[
        (d1, b""),
        marker("d1/.wh..wh..opq"),
        file("d1/f1", ""),
        (d2, b""),
        marker("d2/.wh..wh..opq"),
        file("d2/f1", ""),
        (d3, b""),
        marker("d3/.wh.f1"),
    ]);
    let overlay = ApplyOptions {
        whiteouts: WhiteoutFormat::Overlay,
        ..opts()
    };
    apply_layer(tmp.path(), &mut &tar[..], &overlay).unwrap();
    let mut buf = [0u8; 4];
    for (d, mode, opaque) in [
        ("d1", 0o700, true),
        ("d2", 0o750, true),
        ("d3", 0o700, false),
    ] {
        let p = tmp.path().join(d);
        assert_eq!(fs::metadata(&p).unwrap().mode() & 0o7777, mode, "{d}");
        let got = rustix::fs::lgetxattr(&p, "trusted.overlay.opaque", &mut buf[..]);
        assert_eq!(got.is_ok(), opaque, "{d} opaque");
    }
    let f = fs::symlink_metadata(tmp.path().join("d3/f1")).unwrap();
    assert!(std::os::unix::fs::FileTypeExt::is_char_device(
        &f.file_type()
    ));
    assert_eq!(f.rdev(), 0);
}

/// Item 55 (root): security.capability survives tar/untar and is the only xattr captured
/// by default.
#[test]
fn capability_xattr_is_the_only_one_captured_by_default() {
    testkit::require!(testkit::gate::root("security.capability (CAP_SETFCAP)"));
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dst).unwrap();
    fs::write(src.join("ping"), "bin").unwrap();
    // VFS_CAP_REVISION_2 with cap_net_raw permitted+effective.
    let cap: [u8; 20] = [
        0, 0, 0, 2, 0, 0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
    ];
    let flags = rustix::fs::XattrFlags::empty();
    rustix::fs::lsetxattr(src.join("ping"), "security.capability", &cap, flags).unwrap();
    rustix::fs::lsetxattr(src.join("ping"), "user.other", b"v", flags).unwrap();
    let tar = tar_directory(&src, Vec::new(), &WalkOptions::default(), &mut NoConversion).unwrap();
    apply_layer(&dst, &mut &tar[..], &opts()).unwrap();
    let mut buf = [0u8; 64];
    let n = rustix::fs::lgetxattr(dst.join("ping"), "security.capability", &mut buf[..]).unwrap();
    assert_eq!(&buf[..n], &cap);
    assert!(rustix::fs::lgetxattr(dst.join("ping"), "user.other", &mut buf[..]).is_err());
}

/// PAX xattrs (any namespace) are applied; with best effort, EOPNOTSUPP is ignored.
#[test]
fn pax_xattrs_are_applied() {
    let tmp = tempfile::tempdir().unwrap();
    let mut h = Header::file("f", 5);
    h.xattrs.push((b"user.test".to_vec(), b"value".to_vec()));
    let tar = tar_of(&[(h, b"hello")]);
    match apply_layer(tmp.path(), &mut &tar[..], &opts()) {
        Ok(_) => {
            let mut buf = [0u8; 16];
            let n = rustix::fs::lgetxattr(tmp.path().join("f"), "user.test", &mut buf[..]).unwrap();
            assert_eq!(&buf[..n], b"value");
        }
        Err(e) => {
            assert!(e.to_string().contains("xattr"), "{e}");
            let _ =
                testkit::gate::lacking("user xattrs", format!("user xattrs unsupported here: {e}"));
        }
    }
}

/// A tar of one entry of every kind survives our writer, the `tar` crate and our reader.
#[test]
fn header_only_kinds_carry_no_payload() {
    let tmp = tempfile::tempdir().unwrap();
    let mut h = Header::new("l", EntryKind::HardLink);
    h.link_name = b"f".to_vec();
    let tar = tar_of(&[file("f", "data"), (h, b""), dir("d/")]);
    let size = apply_layer(tmp.path(), &mut &tar[..], &opts()).unwrap();
    assert_eq!(size, 4);
    assert_eq!(fs::read(tmp.path().join("l")).unwrap(), b"data");
}

/// Item 70 (CVE-2018-15664): a layer root that is itself a symlink to a host directory is
/// refused, for apply and for tar, and the host directory is untouched.
#[test]
fn symlinked_layer_root_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let host = tmp.path().join("host");
    fs::create_dir(&host).unwrap();
    fs::write(host.join("passwd"), "root:x:0:0").unwrap();
    let root = tmp.path().join("safe");
    std::os::unix::fs::symlink(&host, &root).unwrap();
    let tar = tar_of(&[file("passwd", "pwned")]);
    let err = apply_layer(&root, &mut &tar[..], &opts()).unwrap_err();
    assert!(err.to_string().contains("open layer root"), "{err}");
    assert_eq!(fs::read(host.join("passwd")).unwrap(), b"root:x:0:0");
    assert!(
        tar_directory(
            &root,
            Vec::new(),
            &WalkOptions::default(),
            &mut NoConversion
        )
        .is_err()
    );
    assert!(changes_dirs(&root, None).is_err());
}
