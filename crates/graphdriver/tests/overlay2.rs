//! overlay2 driver tests on real kernel overlayfs. They need root and overlay; without them
//! they print why and skip (under `CI=true` a missing overlay is a failure).

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use graphdriver::overlay2::{MountApi, Overlay2, Overlay2Options};
use graphdriver::{ChangeKind, CreateOpts, DiffDriver, ProtoDriver};

use overlay2_util::*;
use testkit::overlay2 as overlay2_util;

fn opts() -> CreateOpts {
    CreateOpts::default()
}

fn driver_in(home: &Path, options: Overlay2Options) -> Guarded {
    Guarded(Overlay2::new(home, options).expect("overlay2 init"))
}

#[test]
fn layout_is_dockers() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("overlay2");
    let d = driver_in(&home, Overlay2Options::default());
    assert_eq!(mode_of(&home), 0o710);
    assert_eq!(mode_of(&home.join("l")), 0o700);

    d.create("base", None, &opts()).unwrap();
    d.create("mid", Some("base"), &opts()).unwrap();
    d.create_read_write("top", Some("mid"), &opts()).unwrap();

    let link = |id: &str| std::fs::read_to_string(home.join(id).join("link")).unwrap();
    for id in ["base", "mid", "top"] {
        let dir = home.join(id);
        assert_eq!(mode_of(&dir), 0o710, "{id}");
        assert_eq!(mode_of(&dir.join("diff")), 0o755, "{id}");
        assert_eq!(mode_of(&dir.join("link")), 0o644, "{id}");
        let l = link(id);
        assert_eq!(l.len(), 26, "{id}: {l:?}");
        assert!(
            l.bytes()
                .all(|b| b.is_ascii_uppercase() || (b'2'..=b'7').contains(&b))
        );
        let target = std::fs::read_link(home.join("l").join(&l)).unwrap();
        assert_eq!(target, PathBuf::from(format!("../{id}/diff")));
    }
    // A base layer has neither lower nor work.
    assert!(!home.join("base/lower").exists());
    assert!(!home.join("base/work").exists());
    assert_eq!(
        std::fs::read_to_string(home.join("mid/lower")).unwrap(),
        format!("l/{}", link("base"))
    );
    assert_eq!(
        std::fs::read_to_string(home.join("top/lower")).unwrap(),
        format!("l/{}:l/{}", link("mid"), link("base"))
    );
    assert_eq!(mode_of(&home.join("top/lower")), 0o644);
    assert_eq!(mode_of(&home.join("top/work")), 0o700);
    // Parents are marked committed; the top is not.
    for id in ["base", "mid"] {
        let c = home.join(id).join("committed");
        assert_eq!(mode_of(&c), 0o600);
        assert_eq!(std::fs::metadata(&c).unwrap().len(), 0);
    }
    assert!(!home.join("top/committed").exists());

    let meta = d.metadata("top").unwrap();
    assert_eq!(meta["UpperDir"], home.join("top/diff").to_string_lossy());
    assert_eq!(meta["WorkDir"], home.join("top/work").to_string_lossy());
    assert_eq!(meta["MergedDir"], home.join("top/merged").to_string_lossy());
    assert_eq!(
        meta["LowerDir"],
        format!(
            "{}:{}",
            home.join("mid/diff").display(),
            home.join("base/diff").display()
        )
    );
    assert!(!d.metadata("base").unwrap().contains_key("LowerDir"));
    assert_eq!(d.list().unwrap(), vec!["base", "mid", "top"]);
    assert_eq!(d.payload_root("mid").unwrap(), Some(home.join("mid/diff")));

    // Removing drops the directory and the l/ symlink.
    let top_link = link("top");
    d.remove("top").unwrap();
    assert!(!home.join("top").exists());
    assert!(std::fs::symlink_metadata(home.join("l").join(top_link)).is_err());
    d.remove("top").unwrap();
    assert!(!d.exists("top"));
}

#[test]
fn bad_ids_options_and_missing_layers_are_clear_errors() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("overlay2");
    let d = driver_in(&home, Overlay2Options::default());
    for bad in ["", "..", "a/b", "l"] {
        assert!(d.create(bad, None, &opts()).is_err(), "{bad:?}");
    }
    let err = d.create("x", Some("missing"), &opts()).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
    assert!(!home.join("x").exists(), "a failed create leaves nothing");
    d.create("x", None, &opts()).unwrap();
    assert!(
        d.create("x", None, &opts()).is_err(),
        "creating twice is refused"
    );

    let mut size = CreateOpts::default();
    size.storage_opt.insert("size".into(), "10G".into());
    let err = d.create("y", Some("x"), &size).unwrap_err();
    assert!(
        err.to_string().contains("only supported for ReadWrite"),
        "{err}"
    );
    let mut unknown = CreateOpts::default();
    unknown.storage_opt.insert("color".into(), "blue".into());
    assert!(
        d.create_read_write("y", Some("x"), &unknown)
            .unwrap_err()
            .to_string()
            .contains("Unknown option")
    );
    assert!(!home.join("y").exists());

    assert!(Overlay2Options::parse(&["overlay2.max_depth=501"]).is_err());
    assert!(Overlay2Options::parse(&["overlay2.bogus=1"]).is_err());
    assert!(Overlay2Options::parse(&["overlay2.size=10G"]).is_err());
    let parsed =
        Overlay2Options::parse(&["overlay2.max_depth=300", "overlay2.mount_api=legacy"]).unwrap();
    assert_eq!(parsed.max_depth, 300);
    assert_eq!(parsed.mount_api, MountApi::Legacy);

    // A corrupt lower file is reported with the layer's name, not mounted.
    d.create("z", Some("x"), &opts()).unwrap();
    std::fs::write(home.join("z/lower"), "").unwrap();
    let err = d.get("z", "").unwrap_err();
    assert!(err.to_string().contains("layer z"), "{err}");
    assert!(!home.join("z/merged").exists());
    assert!(matches!(
        d.get("nope", ""),
        Err(graphdriver::Error::NotFound(_))
    ));
}

#[test]
fn status_reports_features() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = driver_in(&tmp.path().join("overlay2"), Overlay2Options::default());
    let status: BTreeMap<String, String> = d.status().into_iter().collect();
    for key in [
        "Backing Filesystem",
        "Supports d_type",
        "Using metacopy",
        "Native Overlay Diff",
        "userxattr",
        "Changes",
    ] {
        assert!(status.contains_key(key), "{key} missing from {status:?}");
    }
    assert_eq!(status["Supports d_type"], "true");
    assert_ne!(status["Backing Filesystem"], "<unknown>");
    assert_eq!(
        status["Native Overlay Diff"],
        d.uses_native_diff().to_string()
    );
    assert!(status["Changes"].starts_with(if d.uses_native_diff() {
        "native"
    } else {
        "naive"
    }));
    eprintln!("overlay2 status here: {status:?}");
}

#[test]
fn get_put_are_refcounted_and_adopt_existing_mounts() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("overlay2");
    let d = driver_in(&home, Overlay2Options::default());
    d.create("base", None, &opts()).unwrap();
    std::fs::write(home.join("base/diff/hello"), "hi").unwrap();
    d.create_read_write("rw", Some("base"), &opts()).unwrap();

    // A base layer is its diff dir: nothing to mount.
    assert_eq!(d.get("base", "").unwrap(), home.join("base/diff"));
    d.put("base").unwrap();

    let merged = home.join("rw/merged");
    let a = d.get("rw", "").unwrap();
    let b = d.get("rw", "").unwrap();
    assert_eq!(a, merged);
    assert_eq!(a, b);
    assert!(is_mounted(&merged));
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = info
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(merged.to_str().unwrap()))
        .unwrap();
    assert!(line.contains(" - overlay overlay "), "{line}");
    // index=off is the kernel's default here, which mountinfo does not print.
    assert!(!line.contains("index=on"), "{line}");
    assert!(
        line.contains(&format!("upperdir={}", home.join("rw/diff").display())),
        "{line}"
    );
    assert_eq!(std::fs::read_to_string(merged.join("hello")).unwrap(), "hi");
    std::fs::write(merged.join("new"), "x").unwrap();
    assert!(
        home.join("rw/diff/new").exists(),
        "writes land in the upper dir"
    );
    d.put("rw").unwrap();
    assert!(is_mounted(&merged), "one reference left");
    d.put("rw").unwrap();
    assert!(!is_mounted(&merged));
    assert!(!merged.exists(), "merged is removed on the last put");

    // A mount left by an earlier driver instance is recognised, not mounted twice.
    d.get("rw", "").unwrap();
    let d2 = driver_in(&home, Overlay2Options::default());
    assert_eq!(d2.get("rw", "").unwrap(), merged);
    assert_eq!(count_mounts(&merged), 1);
    d2.put("rw").unwrap();
    assert!(is_mounted(&merged), "the adopted mount keeps its reference");
    // Cleanup unmounts everything under the home.
    d2.cleanup().unwrap();
    assert!(!is_mounted(&merged));
    d.cleanup().unwrap();
}

#[test]
fn committed_parents_mount_read_only() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("overlay2");
    let d = driver_in(&home, Overlay2Options::default());
    d.create("base", None, &opts()).unwrap();
    d.create("mid", Some("base"), &opts()).unwrap();
    d.create_read_write("top", Some("mid"), &opts()).unwrap();
    let top = d.get("top", "").unwrap();
    let mid = d.get("mid", "").unwrap();
    // Both mounted at once: mid's diff is a lower of top and mid is mounted without upper.
    let err = std::fs::write(mid.join("f"), "x").unwrap_err();
    assert_eq!(err.raw_os_error(), Some(30), "EROFS expected, got {err}");
    std::fs::write(top.join("f"), "x").unwrap();
    d.put("mid").unwrap();
    d.put("top").unwrap();
}

/// graphtest's DriverTestCreateBase / CreateSnap: modes, owners and special bits survive.
#[test]
fn create_base_and_snapshot_keep_metadata() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = driver_in(&tmp.path().join("overlay2"), Overlay2Options::default());
    d.create_read_write("Base", None, &opts()).unwrap();
    let root = d.get("Base", "").unwrap();
    let sub = root.join("a subdir");
    std::fs::create_dir(&sub).unwrap();
    std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o1705)).unwrap();
    std::os::unix::fs::lchown(&sub, Some(1), Some(2)).unwrap();
    let file = root.join("a file");
    std::fs::write(&file, "Some data").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o4222)).unwrap();
    d.put("Base").unwrap();
    d.create("Snap", Some("Base"), &opts()).unwrap();
    for id in ["Base", "Snap"] {
        let root = d.get(id, "").unwrap();
        let m = std::fs::symlink_metadata(root.join("a subdir")).unwrap();
        assert_eq!(m.mode(), 0o041705, "{id}");
        assert_eq!((m.uid(), m.gid()), (1, 2));
        let m = std::fs::symlink_metadata(root.join("a file")).unwrap();
        assert_eq!(m.mode(), 0o104222, "{id}");
        assert_eq!((m.uid(), m.gid()), (0, 0));
        assert_eq!(std::fs::read_dir(&root).unwrap().count(), 2);
        d.put(id).unwrap();
    }
    d.remove("Snap").unwrap();
    d.remove("Base").unwrap();
}

/// graphtest's DriverTestDeepLayerRead: each layer writes its id; the top sees all of them.
fn deep_layer_read(d: &Overlay2, layers: usize) {
    d.create("base", None, &opts()).unwrap();
    let root = d.get("base", "").unwrap();
    std::fs::write(root.join("testfile.txt"), "test content").unwrap();
    d.put("base").unwrap();
    let mut lower = "base".to_string();
    for i in 1..=layers {
        let upper = format!("layer{i:04}");
        d.create(&upper, Some(&lower), &opts()).unwrap();
        let root = d.get(&upper, "").unwrap();
        std::fs::write(root.join("top-id"), &upper).unwrap();
        std::fs::create_dir(root.join(format!("layer-{i}"))).unwrap();
        std::fs::write(root.join(format!("layer-{i}/layer-id")), &upper).unwrap();
        std::fs::write(root.join(format!("layer-{i}/parent-id")), &lower).unwrap();
        d.put(&upper).unwrap();
        lower = upper;
    }
    let root = d.get(&lower, "").unwrap();
    assert_eq!(std::fs::read_to_string(root.join("top-id")).unwrap(), lower);
    let mut expect = lower.clone();
    for i in (1..=layers).rev() {
        let got = std::fs::read_to_string(root.join(format!("layer-{i}/layer-id"))).unwrap();
        assert_eq!(got, expect, "layer-{i}");
        expect = std::fs::read_to_string(root.join(format!("layer-{i}/parent-id"))).unwrap();
    }
    assert_eq!(expect, "base");
    assert_eq!(
        std::fs::read_to_string(root.join("testfile.txt")).unwrap(),
        "test content"
    );
    d.put(&lower).unwrap();
}

#[test]
fn deep_layer_read_128() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = driver_in(&tmp.path().join("overlay2"), Overlay2Options::default());
    deep_layer_read(&d, 128);
    // Docker's limit: a 129th lower is refused, and nothing is left behind.
    let err = d
        .create("too-deep", Some("layer0128"), &opts())
        .unwrap_err();
    assert!(err.to_string().contains("max depth exceeded"), "{err}");
    assert!(!tmp.path().join("overlay2/too-deep").exists());
    d.cleanup().unwrap();
}

/// A home path long enough that Docker's absolute option string for 128 lowers exceeds a
/// page, so mount(2) must switch to home-relative paths (and must not move our cwd).
#[test]
fn chain_longer_than_a_page_of_options_mounts_with_mount2() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp
        .path()
        .join("a-rather-long-directory-name-for-the-driver-home")
        .join("overlay2");
    std::fs::create_dir_all(home.parent().unwrap()).unwrap();
    let options = Overlay2Options {
        mount_api: MountApi::Legacy,
        ..Overlay2Options::default()
    };
    let d = driver_in(&home, options);
    let cwd = std::env::current_dir().unwrap();
    let absolute_len = 128 * (home.as_os_str().len() + "/l/".len() + 27);
    assert!(
        absolute_len > 4096,
        "the test must exceed a page ({absolute_len})"
    );
    deep_layer_read(&d, 128);
    assert_eq!(
        std::env::current_dir().unwrap(),
        cwd,
        "mounting must not chdir the process"
    );
    d.cleanup().unwrap();
}

/// With the new mount API there is no page limit: 300 lowers mount (max_depth raised), and
/// the same chain is refused by mount(2) with a clear error.
#[test]
fn chain_of_300_with_fsconfig() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("overlay2");
    let d = driver_in(
        &home,
        Overlay2Options {
            max_depth: 500,
            ..Overlay2Options::default()
        },
    );
    if !d.features().lowerdir_plus {
        let _ = testkit::gate::lacking("lowerdir+", "kernel has no fsconfig lowerdir+ (needs 6.8)");
        return;
    }
    deep_layer_read(&d, 300);
    d.cleanup().unwrap();
    let legacy = driver_in(
        &home,
        Overlay2Options {
            max_depth: 500,
            mount_api: MountApi::Legacy,
            ..Overlay2Options::default()
        },
    );
    let err = legacy.get("layer0300", "").unwrap_err();
    assert!(err.to_string().contains("too large"), "{err}");
    assert!(!home.join("layer0300/merged").exists());
}

fn write_files(root: &Path, count: usize, seed: u64) {
    std::fs::create_dir_all(root.join("directory-0")).unwrap();
    for i in 0..count {
        std::fs::write(
            root.join(format!("directory-0/file-{i}")),
            pseudo_random(seed + i as u64, 64),
        )
        .unwrap();
    }
}

fn check_files(root: &Path, count: usize, seed: u64) {
    for i in 0..count {
        let got = std::fs::read(root.join(format!("directory-0/file-{i}"))).unwrap();
        assert_eq!(got, pseudo_random(seed + i as u64, 64), "file-{i}");
    }
}

/// graphtest's DriverTestDiffApply(10): diff of upper against base applied on a fresh child of
/// base reproduces upper, and the applied size equals DiffSize.
#[test]
fn diff_apply_10_files() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = driver_in(&tmp.path().join("overlay2"), Overlay2Options::default());
    assert!(
        d.uses_native_diff(),
        "this kernel supports native diff (see status)"
    );
    let n = 10;
    d.create("base", None, &opts()).unwrap();
    let root = d.get("base", "").unwrap();
    write_files(&root, n, 3);
    std::fs::write(root.join("file-remove.txt"), "remove me").unwrap();
    std::fs::create_dir_all(root.join("var/lib")).unwrap();
    d.put("base").unwrap();

    d.create("upper", Some("base"), &opts()).unwrap();
    let root = d.get("upper", "").unwrap();
    write_files(&root, n, 6);
    std::fs::remove_file(root.join("file-remove.txt")).unwrap();
    std::fs::remove_dir(root.join("var/lib")).unwrap();
    d.put("upper").unwrap();

    let diff_size = d.diff_size("upper", None).unwrap();
    assert_eq!(diff_size, 64 * n as u64);

    d.create("diff", Some("base"), &opts()).unwrap();
    let root = d.get("diff", "").unwrap();
    check_files(&root, n, 3);
    assert!(root.join("file-remove.txt").exists());
    d.put("diff").unwrap();

    let mut tar = d.diff("upper", Some("base")).unwrap();
    let applied = d.apply_diff("diff", Some("base"), &mut tar).unwrap();
    assert_eq!(applied, diff_size);
    let root = d.get("diff", "").unwrap();
    check_files(&root, n, 6);
    assert!(!root.join("file-remove.txt").exists());
    assert!(!root.join("var/lib").exists());
    assert!(root.join("var").is_dir());
    d.put("diff").unwrap();
    // The upper dir holds overlay whiteouts, as the kernel would have made them.
    let wh =
        std::fs::symlink_metadata(tmp.path().join("overlay2/diff/diff/file-remove.txt")).unwrap();
    assert_eq!((wh.mode() & 0o170000, wh.rdev()), (0o020000, 0));
}

/// graphtest's DriverTestChanges(20): modify, add and delete every third file.
#[test]
fn changes_20_files() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = driver_in(&tmp.path().join("overlay2"), Overlay2Options::default());
    d.create("base", None, &opts()).unwrap();
    let root = d.get("base", "").unwrap();
    write_files(&root, 20, 3);
    d.put("base").unwrap();
    d.create("upper", Some("base"), &opts()).unwrap();
    let root = d.get("upper", "").unwrap();
    let mut expect = vec![(PathBuf::from("/directory-0"), ChangeKind::Modify)];
    for j in 0..20 {
        let path = format!("directory-0/file-{j}");
        match j % 3 {
            0 => {
                std::fs::write(root.join(&path), pseudo_random(100 + j as u64, 80)).unwrap();
                expect.push((PathBuf::from(format!("/{path}")), ChangeKind::Modify));
            }
            1 => {
                let added = format!("directory-0/file-9-{j}");
                std::fs::write(root.join(&added), "new").unwrap();
                expect.push((PathBuf::from(format!("/{added}")), ChangeKind::Add));
            }
            _ => {
                std::fs::remove_file(root.join(&path)).unwrap();
                expect.push((PathBuf::from(format!("/{path}")), ChangeKind::Delete));
            }
        }
    }
    d.put("upper").unwrap();
    expect.sort();
    let got: Vec<_> = d
        .changes("upper", Some("base"))
        .unwrap()
        .into_iter()
        .map(|c| (c.path, c.kind))
        .collect();
    assert_eq!(got, expect);
}

/// Native changes agree with the naive comparison of the two mounted trees on a scenario with
/// every kind of edit a container can make.
#[test]
fn native_changes_agree_with_naive_comparison() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = driver_in(&tmp.path().join("overlay2"), Overlay2Options::default());
    d.create("base", None, &opts()).unwrap();
    let b = d.get("base", "").unwrap();
    for dir in [
        "etc",
        "usr/share/data",
        "usr/lib",
        "opt/app/sub",
        "swap/d",
        "keep",
    ] {
        std::fs::create_dir_all(b.join(dir)).unwrap();
    }
    for (f, c) in [
        ("etc/a.conf", "a"),
        ("etc/b.conf", "b"),
        ("etc/c.conf", "c"),
        ("usr/share/data/1", "1"),
        ("usr/share/data/2", "2"),
        ("usr/lib/x", "x"),
        ("opt/app/sub/deep", "d"),
        ("swap/f", "f"),
        ("swap/d/inner", "i"),
        ("keep/same", "s"),
    ] {
        std::fs::write(b.join(f), c).unwrap();
    }
    std::os::unix::fs::symlink("a.conf", b.join("etc/link")).unwrap();
    d.put("base").unwrap();
    d.create("mid", Some("base"), &opts()).unwrap();
    let m = d.get("mid", "").unwrap();
    std::fs::write(m.join("etc/mid-added"), "m").unwrap();
    std::fs::remove_file(m.join("usr/lib/x")).unwrap();
    d.put("mid").unwrap();

    d.create_read_write("rw", Some("mid"), &opts()).unwrap();
    let r = d.get("rw", "").unwrap();
    std::fs::write(r.join("etc/a.conf"), "changed").unwrap(); // C
    std::fs::remove_file(r.join("etc/c.conf")).unwrap(); // D
    std::fs::set_permissions(r.join("etc/b.conf"), std::fs::Permissions::from_mode(0o600)).unwrap(); // C (mode)
    std::os::unix::fs::lchown(r.join("keep"), Some(5), Some(5)).unwrap(); // C dir (owner)
    std::fs::remove_dir_all(r.join("usr/share/data")).unwrap();
    std::fs::create_dir(r.join("usr/share/data")).unwrap(); // opaque re-creation
    std::fs::write(r.join("usr/share/data/new"), "n").unwrap();
    std::fs::remove_dir_all(r.join("opt/app")).unwrap(); // D of a whole tree
    std::fs::remove_file(r.join("swap/f")).unwrap();
    std::fs::create_dir(r.join("swap/f")).unwrap(); // file -> dir
    std::fs::write(r.join("swap/f/child"), "c").unwrap();
    std::fs::remove_dir_all(r.join("swap/d")).unwrap();
    std::fs::write(r.join("swap/d"), "now a file").unwrap(); // dir -> file
    std::fs::create_dir_all(r.join("brand/new/tree")).unwrap(); // A subtree
    std::fs::write(r.join("brand/new/tree/f"), "f").unwrap();
    std::fs::hard_link(r.join("etc/a.conf"), r.join("etc/a.hard")).unwrap();
    std::fs::remove_file(r.join("etc/link")).unwrap();
    std::os::unix::fs::symlink("b.conf", r.join("etc/link")).unwrap(); // symlink retargeted
    std::fs::write(r.join("etc/mid-added"), "m").unwrap(); // same content, new mtime
    std::fs::write(r.join("usr/lib/x"), "back").unwrap(); // re-created over a lower whiteout
    let mut f = std::fs::File::open(r.join("keep/same")).unwrap(); // read only: no copy-up
    let mut s = String::new();
    f.read_to_string(&mut s).unwrap();
    d.put("rw").unwrap();

    let native = d.changes("rw", Some("mid")).unwrap();
    let rw_view = d.get("rw", "").unwrap();
    let mid_view = d.get("mid", "").unwrap();
    let mut naive = layer_archive::changes::changes_dirs(&rw_view, Some(&mid_view)).unwrap();
    d.put("mid").unwrap();
    d.put("rw").unwrap();
    naive.sort();
    let show = |v: &[graphdriver::Change]| {
        v.iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(show(&native), show(&naive));
    assert!(
        native
            .iter()
            .any(|c| c.path == Path::new("/usr/share/data/1") && c.kind == ChangeKind::Delete)
    );
    assert!(
        native
            .iter()
            .any(|c| c.path == Path::new("/opt/app") && c.kind == ChangeKind::Delete)
    );
    assert!(!native.iter().any(|c| c.path.starts_with("/keep/same")));

    // The diff of rw applied on a new child of mid gives the same merged view.
    d.create("again", Some("mid"), &opts()).unwrap();
    let mut tar = d.diff("rw", Some("mid")).unwrap();
    d.apply_diff("again", Some("mid"), &mut tar).unwrap();
    let a = d.get("again", "").unwrap();
    let r = d.get("rw", "").unwrap();
    assert_eq!(tree(&a, false), tree(&r, false));
    d.put("rw").unwrap();
    d.put("again").unwrap();
}

/// The native diff's whiteouts: `.wh.<name>` regular files, mode 0600, owner names from the
/// host, opaque dirs followed by `.wh..wh..opq`; when the kernel shares one whiteout inode,
/// later whiteouts carry the first one's path as link name, exactly as Docker writes them.
#[test]
fn native_diff_whiteouts_look_like_dockers() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("overlay2");
    let d = driver_in(&home, Overlay2Options::default());
    d.create("base", None, &opts()).unwrap();
    let b = d.get("base", "").unwrap();
    std::fs::create_dir_all(b.join("d/gone")).unwrap();
    std::fs::write(b.join("a"), "a").unwrap();
    std::fs::write(b.join("d/b"), "b").unwrap();
    std::fs::write(b.join("d/gone/x"), "x").unwrap();
    d.put("base").unwrap();
    d.create_read_write("rw", Some("base"), &opts()).unwrap();
    let r = d.get("rw", "").unwrap();
    std::fs::remove_file(r.join("a")).unwrap();
    std::fs::remove_file(r.join("d/b")).unwrap();
    std::fs::remove_dir_all(r.join("d/gone")).unwrap();
    std::fs::create_dir(r.join("d/gone")).unwrap();
    d.put("rw").unwrap();
    let shared = std::fs::symlink_metadata(home.join("rw/diff/a"))
        .unwrap()
        .nlink()
        > 1;

    let mut tar = Vec::new();
    d.diff("rw", Some("base"))
        .unwrap()
        .read_to_end(&mut tar)
        .unwrap();
    let mut archive = tar::Archive::new(&tar[..]);
    let mut seen = Vec::new();
    for entry in archive.entries().unwrap() {
        let entry = entry.unwrap();
        let h = entry.header();
        let name = String::from_utf8(entry.path_bytes().to_vec()).unwrap();
        let link = h
            .link_name_bytes()
            .map(|l| String::from_utf8(l.to_vec()).unwrap());
        seen.push((
            name,
            h.entry_type().as_byte(),
            h.mode().unwrap(),
            h.username().unwrap().map(String::from),
            link,
        ));
    }
    let root = Some("root".to_string());
    let expect = vec![
        (".wh.a".to_string(), b'0', 0o600, root.clone(), None),
        ("d/".to_string(), b'5', 0o40755, root.clone(), None),
        (
            "d/.wh.b".to_string(),
            b'0',
            0o600,
            root.clone(),
            shared.then(|| "a".to_string()),
        ),
        ("d/gone/".to_string(), b'5', 0o40755, root.clone(), None),
        (
            "d/gone/.wh..wh..opq".to_string(),
            b'0',
            0o755,
            root.clone(),
            None,
        ),
    ];
    assert_eq!(seen, expect, "kernel shares whiteout inodes: {shared}");
}

/// Against an ancestor that is not the direct parent, the upper dir is not the diff: changes,
/// diff size and diff fall back to the naive comparison and still give the right answer.
#[test]
fn changes_against_a_grandparent_use_the_naive_walk() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = driver_in(&tmp.path().join("overlay2"), Overlay2Options::default());
    d.create("base", None, &opts()).unwrap();
    std::fs::write(d.get("base", "").unwrap().join("b"), "b").unwrap();
    d.put("base").unwrap();
    d.create("mid", Some("base"), &opts()).unwrap();
    std::fs::write(d.get("mid", "").unwrap().join("m"), "m").unwrap();
    d.put("mid").unwrap();
    d.create_read_write("top", Some("mid"), &opts()).unwrap();
    std::fs::write(d.get("top", "").unwrap().join("t"), "tt").unwrap();
    d.put("top").unwrap();
    let shown: Vec<String> = d
        .changes("top", Some("base"))
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(shown, ["A /m", "A /t"]);
    assert_eq!(d.diff_size("top", Some("base")).unwrap(), 3);
    let mut tar = Vec::new();
    d.diff("top", Some("base"))
        .unwrap()
        .read_to_end(&mut tar)
        .unwrap();
    let names: Vec<String> = tar::Archive::new(&tar[..])
        .entries()
        .unwrap()
        .map(|e| String::from_utf8(e.unwrap().path_bytes().to_vec()).unwrap())
        .collect();
    assert_eq!(names, ["m", "t"]);
    // Nothing is left mounted by the naive path.
    assert!(!is_mounted(&tmp.path().join("overlay2/top/merged")));
    assert!(!is_mounted(&tmp.path().join("overlay2/base/merged")));
}

/// Hard links of every kind in an upper dir are exported as Docker does: the first name
/// carries the content, later names are link entries pointing at it.
#[test]
fn native_diff_exports_hard_links_once() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = driver_in(&tmp.path().join("overlay2"), Overlay2Options::default());
    d.create("base", None, &opts()).unwrap();
    d.create_read_write("rw", Some("base"), &opts()).unwrap();
    let r = d.get("rw", "").unwrap();
    std::fs::write(r.join("a"), "content").unwrap();
    std::fs::hard_link(r.join("a"), r.join("b")).unwrap();
    std::os::unix::fs::symlink("target", r.join("s1")).unwrap();
    std::fs::hard_link(r.join("s1"), r.join("s2")).unwrap();
    d.put("rw").unwrap();
    let mut tar = Vec::new();
    d.diff("rw", Some("base"))
        .unwrap()
        .read_to_end(&mut tar)
        .unwrap();
    let mut seen = Vec::new();
    for entry in tar::Archive::new(&tar[..]).entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = String::from_utf8(entry.path_bytes().to_vec()).unwrap();
        let kind = entry.header().entry_type().as_byte() as char;
        let link = entry
            .header()
            .link_name_bytes()
            .map(|l| String::from_utf8(l.to_vec()).unwrap());
        let mut body = String::new();
        entry.read_to_string(&mut body).unwrap();
        seen.push(format!("{name} {kind} {link:?} {body:?}"));
    }
    assert_eq!(
        seen,
        [
            "a 0 None \"content\"",
            "b 1 Some(\"a\") \"\"",
            "s1 2 Some(\"target\") \"\"",
            "s2 1 Some(\"s1\") \"\"",
        ]
    );
}

/// A home on an overlay filesystem (Docker in Docker without a volume) is refused up front.
#[test]
fn home_on_overlayfs_is_not_supported() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = driver_in(&tmp.path().join("overlay2"), Overlay2Options::default());
    d.create("base", None, &opts()).unwrap();
    d.create_read_write("rw", Some("base"), &opts()).unwrap();
    let merged = d.get("rw", "").unwrap();
    let err = Overlay2::new(merged.join("nested"), Overlay2Options::default()).unwrap_err();
    assert!(matches!(err, graphdriver::Error::NotSupported(_)), "{err}");
    assert!(err.to_string().contains("overlayfs"), "{err}");
    assert!(
        !merged.join("nested").exists(),
        "nothing is created on refusal"
    );
    d.put("rw").unwrap();
}

/// Random edits through several layers: the native changes of the top layer (read from its
/// upper dir and its lowers, no mount) always equal the naive comparison of the mounted trees.
#[test]
fn native_changes_match_naive_on_random_layer_stacks() {
    if !can_run() {
        return;
    }
    let mut kinds_seen = std::collections::BTreeSet::new();
    for seed in 1..=24u64 {
        let tmp = tempfile::tempdir().unwrap();
        let d = driver_in(&tmp.path().join("overlay2"), Overlay2Options::default());
        let mut rng = seed.wrapping_mul(0x2545_F491_4F6C_DD1D);
        let mut next = move |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        let mut parent: Option<String> = None;
        for layer in 0..4 {
            let id = format!("l{layer}");
            d.create(&id, parent.as_deref(), &opts()).unwrap();
            let root = d.get(&id, "").unwrap();
            let ops = if layer == 0 { 30 } else { 8 };
            for _ in 0..ops {
                random_edit(&root, &mut next);
            }
            d.put(&id).unwrap();
            if layer == 3 {
                let native = d.changes(&id, parent.as_deref()).unwrap();
                let top = d.get(&id, "").unwrap();
                let below = d.get(parent.as_deref().unwrap(), "").unwrap();
                let mut naive = layer_archive::changes::changes_dirs(&top, Some(&below)).unwrap();
                naive.sort();
                d.put(parent.as_deref().unwrap()).unwrap();
                d.put(&id).unwrap();
                let show = |v: &[graphdriver::Change]| {
                    v.iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                assert_eq!(show(&native), show(&naive), "seed {seed}");
                kinds_seen.extend(native.iter().map(|c| c.kind));
            }
            parent = Some(id);
        }
    }
    assert_eq!(
        kinds_seen.len(),
        3,
        "the random edits must add, modify and delete"
    );
}

/// One random edit of a merged view: create, overwrite, delete, chmod, or replace a file by a
/// directory and back, somewhere in a small fixed namespace.
fn random_edit(root: &Path, next: &mut impl FnMut(usize) -> usize) {
    const NAMES: [&str; 4] = ["a", "b", "c", "d"];
    let depth = 1 + next(3);
    let rel: PathBuf = (0..depth).map(|_| NAMES[next(NAMES.len())]).collect();
    let path = root.join(&rel);
    let parent_ok = rel
        .parent()
        .is_none_or(|p| p.as_os_str().is_empty() || root.join(p).is_dir());
    let meta = std::fs::symlink_metadata(&path).ok();
    match (next(6), meta) {
        (0 | 1, None) if parent_ok => std::fs::write(&path, format!("{}", next(1000))).unwrap(),
        (2, None) if parent_ok => std::fs::create_dir(&path).unwrap(),
        (0, Some(m)) if m.is_file() => {
            std::fs::write(&path, format!("new {}", next(1000))).unwrap()
        }
        (1 | 3, Some(m)) if m.is_dir() => std::fs::remove_dir_all(&path).unwrap(),
        (1 | 3, Some(_)) => std::fs::remove_file(&path).unwrap(),
        (4, Some(_)) => std::fs::set_permissions(
            &path,
            std::fs::Permissions::from_mode(0o700 | next(0o100) as u32),
        )
        .unwrap(),
        (5, Some(m)) if m.is_file() => {
            std::fs::remove_file(&path).unwrap();
            std::fs::create_dir(&path).unwrap();
        }
        (5, Some(m)) if m.is_dir() => {
            std::fs::remove_dir_all(&path).unwrap();
            std::fs::create_dir(&path).unwrap(); // re-created: the kernel marks it opaque
        }
        _ => {}
    }
}

/// A layer tar that both marks a directory opaque and whites out one of its entries (legal,
/// if redundant) reports each deletion once, as the naive comparison does.
#[test]
fn opaque_directory_with_a_whiteout_reports_each_delete_once() {
    use layer_archive::{Header, TarWriter};
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let d = driver_in(&tmp.path().join("overlay2"), Overlay2Options::default());
    d.create("base", None, &opts()).unwrap();
    let b = d.get("base", "").unwrap();
    std::fs::create_dir(b.join("d")).unwrap();
    std::fs::write(b.join("d/x"), "x").unwrap();
    std::fs::write(b.join("d/y"), "y").unwrap();
    d.put("base").unwrap();
    let mut tar = TarWriter::new(Vec::new());
    tar.append(&Header::dir("d/"), None).unwrap();
    tar.append(&Header::file("d/.wh..wh..opq", 0), None)
        .unwrap();
    tar.append(&Header::file("d/.wh.x", 0), None).unwrap();
    tar.append(&Header::file("d/z", 1), Some(&mut &b"z"[..]))
        .unwrap();
    let tar = tar.finish().unwrap();
    d.create("child", Some("base"), &opts()).unwrap();
    d.apply_diff("child", Some("base"), &mut &tar[..]).unwrap();
    let shown: Vec<String> = d
        .changes("child", Some("base"))
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    assert_eq!(shown, ["C /d", "D /d/x", "D /d/y", "A /d/z"]);
    let top = d.get("child", "").unwrap();
    let below = d.get("base", "").unwrap();
    let mut naive = layer_archive::changes::changes_dirs(&top, Some(&below)).unwrap();
    naive.sort();
    d.put("base").unwrap();
    d.put("child").unwrap();
    assert_eq!(
        naive.iter().map(|c| c.to_string()).collect::<Vec<_>>(),
        shown
    );
}

/// A random, well-formed layer tar over the names a–d (depth ≤ 3): directories (some
/// opaque), files, and whiteouts, parents before children. Like the tars Docker exports,
/// whiteouts only name paths the parent view (`below`) has, outside opaque directories: a
/// whiteout of nothing in a directory that only one layer has would show up in the kernel's
/// readdir (while lstat says ENOENT), which no real layer does.
fn random_layer_tar(below: Option<&Path>, next: &mut impl FnMut(usize) -> usize) -> Vec<u8> {
    use layer_archive::{Header, TarWriter};
    fn level(
        tar: &mut TarWriter<Vec<u8>>,
        below: Option<&Path>,
        prefix: &str,
        depth: usize,
        next: &mut impl FnMut(usize) -> usize,
    ) {
        for name in ["a", "b", "c", "d"] {
            let path = format!("{prefix}{name}");
            match next(if depth < 3 { 6 } else { 4 }) {
                0 => {}
                1 => {
                    let body = format!("{path} {}", next(100));
                    let mut h = Header::file(path.clone(), body.len() as u64);
                    h.mode = 0o600 + next(0o100) as i64;
                    tar.append(&h, Some(&mut body.as_bytes())).unwrap();
                }
                2 => {
                    if below.is_some_and(|b| std::fs::symlink_metadata(b.join(&path)).is_ok()) {
                        let wh = format!("{prefix}.wh.{name}");
                        tar.append(&Header::file(wh, 0), None).unwrap();
                    }
                }
                3 if depth == 3 => {}
                _ => {
                    tar.append(&Header::dir(format!("{path}/")), None).unwrap();
                    let opaque = next(3) == 0;
                    if opaque {
                        let marker = format!("{path}/.wh..wh..opq");
                        tar.append(&Header::file(marker, 0), None).unwrap();
                    }
                    let below = if opaque { None } else { below };
                    level(tar, below, &format!("{path}/"), depth + 1, next);
                }
            }
        }
    }
    let mut tar = TarWriter::new(Vec::new());
    level(&mut tar, below, "", 1, next);
    tar.finish().unwrap()
}

/// Layers made from tars (Docker's image layers) and by the kernel (containers), stacked at
/// random: the top layer's native changes equal the naive comparison of the mounted trees.
#[test]
fn native_changes_match_naive_on_random_tar_and_kernel_layers() {
    if !can_run() {
        return;
    }
    let mut kinds_seen = std::collections::BTreeSet::new();
    for seed in 1..=24u64 {
        let tmp = tempfile::tempdir().unwrap();
        let d = driver_in(&tmp.path().join("overlay2"), Overlay2Options::default());
        let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move |n: usize| {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            (rng % n as u64) as usize
        };
        let mut parent: Option<String> = None;
        for layer in 0..5 {
            let id = format!("l{layer}");
            d.create(&id, parent.as_deref(), &opts()).unwrap();
            let from_tar = match layer {
                0 | 1 | 3 => true,
                2 => false,
                _ => seed % 2 == 0,
            };
            if from_tar {
                let below = parent.as_deref().map(|p| d.get(p, "").unwrap());
                let tar = random_layer_tar(below.as_deref(), &mut next);
                if let Some(p) = parent.as_deref() {
                    d.put(p).unwrap();
                }
                d.apply_diff(&id, parent.as_deref(), &mut &tar[..]).unwrap();
            } else {
                let root = d.get(&id, "").unwrap();
                for _ in 0..10 {
                    random_edit(&root, &mut next);
                }
                d.put(&id).unwrap();
            }
            if let Some(below) = parent.as_deref().filter(|_| layer >= 2) {
                let native = d.changes(&id, Some(below)).unwrap();
                let top_view = d.get(&id, "").unwrap();
                let below_view = d.get(below, "").unwrap();
                let mut naive =
                    layer_archive::changes::changes_dirs(&top_view, Some(&below_view)).unwrap();
                naive.sort();
                d.put(below).unwrap();
                d.put(&id).unwrap();
                let show = |v: &[graphdriver::Change]| {
                    v.iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join("\n")
                };
                assert_eq!(show(&native), show(&naive), "seed {seed}, layer {layer}");
                kinds_seen.extend(native.iter().map(|c| c.kind));
            }
            parent = Some(id);
        }
    }
    assert_eq!(kinds_seen.len(), 3);
}

/// Many threads taking and releasing the same layers: every get sees the merged view, and
/// when all references are back nothing is left mounted.
#[test]
fn concurrent_get_put_balance_out() {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("overlay2");
    let d = driver_in(&home, Overlay2Options::default());
    d.create("base", None, &opts()).unwrap();
    std::fs::write(home.join("base/diff/f"), "base").unwrap();
    for id in ["rw1", "rw2"] {
        d.create_read_write(id, Some("base"), &opts()).unwrap();
    }
    std::thread::scope(|s| {
        for t in 0..8 {
            let d = &d;
            s.spawn(move || {
                let id = if t % 2 == 0 { "rw1" } else { "rw2" };
                for _ in 0..40 {
                    let root = d.get(id, "").unwrap();
                    assert_eq!(std::fs::read_to_string(root.join("f")).unwrap(), "base");
                    d.put(id).unwrap();
                }
            });
        }
    });
    for id in ["rw1", "rw2"] {
        assert!(!is_mounted(&home.join(id).join("merged")), "{id}");
    }
}
