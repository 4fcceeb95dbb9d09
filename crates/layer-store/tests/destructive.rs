//! The one rule of every destructive operation: remove only what is provably unreferenced.
//!
//! gc, check's repair and release are run on stores damaged the ways real roots get damaged
//! (odd but valid values, unloadable records, foreign directories, garbage, directories that
//! cannot be removed); everything a record, a reference or an unloadable record names stays,
//! and only garbage goes. Also: a second open in one process, roots of other Docker drivers,
//! and Docker's directory modes.

use testkit::store as common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common::{open, read_all, tar_of};
use layer_digest::ChainId;
use layer_store::{CheckOptions, CreateRwOptions, Error, Problem, Store, StoreOptions};
use testkit::store::assert_consistent;

fn hex64() -> String {
    rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A vfs store with a base layer, a child and an RW layer on the child; returns their chain
/// IDs, dropped references (a CLI-like process: counts live only in the process).
fn populated(root: &Path) -> (ChainId, ChainId) {
    let store = open(root, "vfs");
    let base = store
        .register(&tar_of(&[("etc/base", b"base\n", 0o644)])[..], None)
        .unwrap();
    let child = store
        .register(
            &tar_of(&[("etc/child", b"child\n", 0o644)])[..],
            Some(base.chain_id()),
        )
        .unwrap();
    store
        .create_rw_layer("ctr", Some(child.chain_id()), &CreateRwOptions::default())
        .unwrap();
    (base.chain_id().clone(), child.chain_id().clone())
}

fn layerdb(root: &Path) -> PathBuf {
    root.join("image/vfs/layerdb")
}

fn layer_file(root: &Path, id: &ChainId, file: &str) -> PathBuf {
    layerdb(root).join("sha256").join(id.hex()).join(file)
}

fn vfs_dir(root: &Path, id: &str) -> PathBuf {
    root.join("vfs/dir").join(id)
}

/// Odd values moby reads (Go's `strconv.ParseInt` takes `00`, `+12`, `007`) load here too,
/// and nothing treats such a layer as damaged.
#[test]
fn odd_but_valid_values_load() {
    let dir = tempfile::tempdir().unwrap();
    let (base, child) = populated(dir.path());
    std::fs::write(layer_file(dir.path(), &base, "size"), "00").unwrap();
    std::fs::write(layer_file(dir.path(), &child, "size"), "+0012").unwrap();
    std::fs::write(
        layer_file(dir.path(), &child, "cache-id"),
        format!(
            "\n {}\t",
            std::fs::read_to_string(layer_file(dir.path(), &child, "cache-id")).unwrap()
        ),
    )
    .unwrap();
    let store = open(dir.path(), "vfs");
    assert_eq!(store.broken(), (vec![], vec![]));
    assert_eq!(store.map()[&child].diff_size(), 12);
    let report = store.collect_garbage().unwrap();
    assert!(report.is_empty() && report.kept.is_empty(), "{report:?}");
    assert!(store.check(&CheckOptions::default()).unwrap().is_clean());
}

/// gc on a damaged root removes exactly the garbage: a stale write-set, an interrupted
/// removal and its directory, an unnamed directory of ours. It keeps an unloadable layer
/// record and the directory it names, the layer it sits on, a BuildKit directory, an unknown
/// entry, a half-written mount record, and the directory of a live layer that a stale
/// `-removing` copy of its record also names.
#[test]
fn gc_removes_only_garbage() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (base, child) = populated(root);
    let child_cache = std::fs::read_to_string(layer_file(root, &child, "cache-id")).unwrap();
    let base_cache = std::fs::read_to_string(layer_file(root, &base, "cache-id")).unwrap();
    let db = layerdb(root);
    // Damage that must be kept.
    std::fs::write(layer_file(root, &child, "size"), "12\n").unwrap(); // moby refuses it too
    let buildkit = vfs_dir(root, "ekrl4ku7h7dxa8pxgy1hmpjm5");
    std::fs::create_dir_all(&buildkit).unwrap();
    std::fs::write(buildkit.join("f"), "buildkit").unwrap();
    std::fs::create_dir_all(db.join("mounts/half")).unwrap();
    std::fs::write(db.join("sha256/not-a-layer"), "?").unwrap();
    let stale_copy = db.join(format!("sha256/{}-{}-removing", base.hex(), hex64()));
    std::fs::create_dir_all(&stale_copy).unwrap();
    std::fs::write(stale_copy.join("cache-id"), &base_cache).unwrap();
    // Garbage.
    std::fs::create_dir_all(db.join("tmp/write-set-77")).unwrap();
    let orphan_cache = hex64();
    std::fs::create_dir_all(vfs_dir(root, &orphan_cache)).unwrap();
    let orphan_id = hex64();
    let orphan = db.join(format!("sha256/{orphan_id}-{}-removing", hex64()));
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::write(orphan.join("cache-id"), &orphan_cache).unwrap();
    let unnamed = hex64();
    std::fs::create_dir_all(vfs_dir(root, &unnamed)).unwrap();

    let store = open(root, "vfs");
    assert_eq!(store.broken().0.len(), 1, "{:?}", store.broken());
    // The unloadable child still sits on base: base is held.
    let users = store.users(&base).unwrap();
    assert_eq!(users.unloadable_records, vec![format!("layer {child}")]);
    let report = store.collect_garbage().unwrap();
    assert!(report.failures.is_empty(), "{report:?}");
    assert_eq!(report.leftovers, vec!["tmp/write-set-77".to_owned()]);
    assert_eq!(report.driver_dirs, vec![unnamed.clone()]);
    let mut finished = report.finished_removals.clone();
    finished.sort();
    let mut want = vec![format!("sha256:{orphan_id}"), base.to_string()];
    want.sort();
    assert_eq!(finished, want, "{report:?}");
    assert!(!orphan.exists() && !vfs_dir(root, &orphan_cache).exists());
    assert!(!stale_copy.exists());
    // Everything named is still there.
    for kept in [&base_cache, &child_cache] {
        assert!(vfs_dir(root, kept).is_dir(), "{kept}");
    }
    assert!(layer_file(root, &child, "diff").is_file());
    assert!(buildkit.join("f").is_file());
    assert!(db.join("mounts/half").is_dir());
    assert!(db.join("sha256/not-a-layer").is_file());
    // The RW layer on the unloadable child does not load either; its record and directory
    // stay.
    assert!(store.rw_layers().is_empty());
    let mount_id = std::fs::read_to_string(db.join("mounts/ctr/mount-id")).unwrap();
    assert!(vfs_dir(root, &mount_id).is_dir());
    assert!(
        report.kept.iter().any(|k| k.contains("mounts/half")),
        "{report:?}"
    );
    // A release of base cannot delete what the unloadable child sits on.
    let r = store.get(&base).unwrap();
    assert!(store.release(r).unwrap().is_empty());
    assert!(store.map().contains_key(&base));
}

/// A record whose name file does not read may name any directory: while one exists, gc
/// removes no unnamed directory (and says why), and finishes no removal whose directory it
/// would delete.
#[test]
fn an_unreadable_name_keeps_every_unnamed_directory() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let (_, child) = populated(root);
    std::fs::write(layer_file(root, &child, "cache-id"), "../../escape").unwrap();
    let unnamed = hex64();
    std::fs::create_dir_all(vfs_dir(root, &unnamed)).unwrap();
    let store = open(root, "vfs");
    let report = store.collect_garbage().unwrap();
    assert!(report.driver_dirs.is_empty(), "{report:?}");
    assert!(vfs_dir(root, &unnamed).is_dir());
    assert!(
        report
            .kept
            .iter()
            .any(|k| k.contains(&unnamed) && k.contains("cache-id does not read")),
        "{report:?}"
    );
}

/// One item gc cannot remove (a directory with a mount inside: EBUSY) is reported and the
/// rest is still collected.
#[test]
fn gc_goes_on_past_a_failure() {
    testkit::require!(testkit::gate::root("mounting a tmpfs"));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    populated(root);
    let stuck = format!("{:0>64}", "1");
    let gone = format!("{:0>64}", "2");
    for id in [&stuck, &gone] {
        std::fs::create_dir_all(vfs_dir(root, id).join("m")).unwrap();
    }
    let mnt = vfs_dir(root, &stuck).join("m");
    rustix::mount::mount(
        "tmpfs",
        &mnt,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .unwrap();
    let store = open(root, "vfs");
    let report = store.collect_garbage();
    rustix::mount::unmount(&mnt, rustix::mount::UnmountFlags::DETACH).unwrap();
    let report = report.unwrap();
    assert_eq!(report.driver_dirs, vec![gone.clone()], "{report:?}");
    assert_eq!(report.failures.len(), 1, "{report:?}");
    assert!(report.failures[0].contains(&stuck), "{report:?}");
    assert!(!vfs_dir(root, &gone).exists());
}

/// Export-only defects (no tar-split metadata, a changed file) are reported as such and never
/// removed, not even when asked to remove broken layers; a layer without its driver
/// directory is broken, and removed only when nothing holds it and removal was asked for,
/// its parent staying.
#[test]
fn repair_removes_only_unheld_broken_layers_and_only_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = open(root, "vfs");
    let base = store
        .register(&tar_of(&[("a", b"a", 0o644)])[..], None)
        .unwrap();
    let export_defect = store
        .register(&tar_of(&[("b", b"b", 0o644)])[..], Some(base.chain_id()))
        .unwrap();
    let gone_free = store
        .register(&tar_of(&[("c", b"c", 0o644)])[..], Some(base.chain_id()))
        .unwrap();
    let gone_used = store
        .register(&tar_of(&[("d", b"d", 0o644)])[..], Some(base.chain_id()))
        .unwrap();
    let ids = [
        base.chain_id().clone(),
        export_defect.chain_id().clone(),
        gone_free.chain_id().clone(),
        gone_used.chain_id().clone(),
    ];
    store
        .create_rw_layer("ctr", Some(&ids[3]), &CreateRwOptions::default())
        .unwrap();
    for r in [base, export_defect, gone_free, gone_used] {
        std::mem::forget(r);
    }
    drop(store);
    std::fs::remove_file(layer_file(root, &ids[1], "tar-split.json.gz")).unwrap();
    for id in &ids[2..] {
        let cache = std::fs::read_to_string(layer_file(root, id, "cache-id")).unwrap();
        std::fs::remove_dir_all(vfs_dir(root, &cache)).unwrap();
    }

    let store = open(root, "vfs");
    let report = store.check(&CheckOptions::default()).unwrap();
    let defect = report
        .problems
        .iter()
        .find(|p| matches!(p, Problem::ExportDefect { layer, .. } if *layer == ids[1].to_string()));
    assert!(defect.is_some(), "{:#?}", report.problems);
    assert!(defect.unwrap().to_string().contains("containers still run"));

    let listed = store
        .check(&CheckOptions {
            repair: true,
            ..CheckOptions::default()
        })
        .unwrap();
    assert_eq!(listed.removable, vec![format!("layer {}", ids[2])]);
    assert!(listed.repaired.is_empty(), "{listed:?}");
    assert!(
        listed
            .kept
            .iter()
            .any(|k| k.contains(ids[3].as_str()) && k.contains("ctr")),
        "{listed:?}"
    );
    assert_eq!(store.map().len(), 4);

    let removed = store
        .check(&CheckOptions {
            repair: true,
            remove_broken: true,
            ..CheckOptions::default()
        })
        .unwrap();
    assert_eq!(removed.repaired, vec![format!("layer {}", ids[2])]);
    let left: Vec<ChainId> = store.map().into_keys().collect();
    let mut want = vec![ids[0].clone(), ids[1].clone(), ids[3].clone()];
    want.sort();
    assert_eq!(left, want, "the parent stays, no cascade");
    assert!(store.rw_layers().contains_key("ctr"));
    // The parent lost one child's count: two children and nothing else hold it now.
    assert_eq!(store.reference_count(&ids[0]), Some(2));
}

/// A second store on a root already open in this process is an error at once, whatever
/// path names the root, instead of waiting for its own lock forever.
#[test]
fn a_second_open_in_one_process_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let store = open(&root, "vfs");
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&root, &link).unwrap();
    for path in [&root, &link] {
        let err = Store::open(StoreOptions::new(path).driver("vfs")).unwrap_err();
        assert!(matches!(err, Error::AlreadyOpen { .. }), "{err}");
        assert!(err.to_string().contains("already open"), "{err}");
    }
    drop(store);
    let again = open(&root, "vfs");
    drop(again);
}

/// A root that another Docker storage driver uses is refused, naming the driver, before
/// anything is created in it; an explicit driver choice is the user's (as in moby).
#[test]
fn roots_of_other_docker_drivers_are_refused() {
    for driver in [
        "btrfs",
        "zfs",
        "devicemapper",
        "aufs",
        "fuse-overlayfs",
        "overlay",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join(driver).join("subvolumes/x")).unwrap();
        let before: Vec<_> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        let err = Store::open(StoreOptions::new(root)).unwrap_err();
        assert!(
            matches!(err, Error::ForeignDriver { .. }),
            "{driver}: {err}"
        );
        assert!(
            err.to_string()
                .contains(&format!("Docker's {driver} storage driver")),
            "{err}"
        );
        let after: Vec<_> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(before, after, "{driver}: nothing created");
    }
    // Only the layerdb of a foreign driver is enough to tell.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("image/windowsfilter/layerdb")).unwrap();
    let err = Store::open(StoreOptions::new(dir.path())).unwrap_err();
    assert!(err.to_string().contains("windowsfilter"), "{err}");
    // An explicit choice opens.
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("btrfs/subvolumes/x")).unwrap();
    drop(open(dir.path(), "vfs"));
}

/// `image/` and `image/<driver>/` are made 0700, as Docker makes them; existing ones are
/// left as they are.
#[test]
fn image_directories_have_dockers_modes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), "vfs");
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode(&dir.path().join("image")), 0o700);
    assert_eq!(mode(&dir.path().join("image/vfs")), 0o700);
    assert_eq!(mode(&dir.path().join("image/vfs/layerdb")), 0o700);
    drop(store);
    std::fs::set_permissions(
        dir.path().join("image"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    drop(open(dir.path(), "vfs"));
    assert_eq!(mode(&dir.path().join("image")), 0o755);
}

/// After all of the above kinds of repair, a clean store stays consistent: the rule never
/// takes what a clean store needs.
#[test]
fn repair_of_a_clean_store_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (base, _) = populated(dir.path());
    let store = open(dir.path(), "vfs");
    let report = store
        .check(&CheckOptions {
            repair: true,
            remove_broken: true,
            ..CheckOptions::default()
        })
        .unwrap();
    assert!(
        report.is_clean() && report.repaired.is_empty(),
        "{report:?}"
    );
    assert_eq!(
        read_all(store.map()[&base].tar_stream().unwrap()),
        tar_of(&[("etc/base", b"base\n", 0o644)])
    );
    assert_consistent(&store, "clean");
}
