//! The driver conformance suite (moby `graphdriver/graphtest`), reusable by any driver.
//!
//! Each `driver_test_*` function runs one moby case against a driver and panics with a
//! precise message on failure, like a test assertion. Cases that need something the
//! environment lacks (root, quota) return [`Outcome::Skipped`] with the reason, which the
//! caller should print. Layer ids are fixed per case, so run cases against a fresh driver
//! home each (see [`TempHome`]).
//!
//! ```
//! use graphdriver::graphtest::{self, Outcome, TempHome};
//!
//! let home = TempHome::new("doc").unwrap();
//! let vfs = graphdriver::vfs::init(home.path(), &[]).unwrap();
//! let outcome = graphtest::driver_test_create_empty(&vfs);
//! if let Outcome::Skipped(why) = &outcome { eprintln!("skipping: {why}"); }
//! graphtest::driver_test_deep_layer_read(&vfs, 3);
//! ```

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::driver::{CreateOpts, Driver};
use crate::error::Error;
use layer_archive::change::{Change, ChangeKind};

/// How a case ended (failures panic).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Every check passed.
    Passed,
    /// Not run here, with the reason.
    Skipped(String),
}

/// A fresh, uniquely named directory under the system temp dir, removed on drop.
#[derive(Debug)]
pub struct TempHome {
    path: PathBuf,
}

impl TempHome {
    /// Creates `<tmp>/graphtest-<tag>-<random>`.
    pub fn new(tag: &str) -> std::io::Result<Self> {
        let path =
            std::env::temp_dir().join(format!("graphtest-{tag}-{:016x}", rand::random::<u64>()));
        fs::create_dir(&path)?;
        Ok(TempHome { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TempHome {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}

fn is_root() -> bool {
    safe_root::is_root()
}

fn opts() -> CreateOpts {
    CreateOpts::default()
}

/// Deterministic pseudo-random bytes (splitmix64), like moby's seeded `randomContent`.
pub fn random_content(size: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(size + 8);
    while out.len() < size {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(size);
    out
}

/// Runs `f` on the mounted layer, then puts it back.
fn with_layer<T>(driver: &dyn Driver, id: &str, f: impl FnOnce(&Path) -> T) -> T {
    let dir = driver
        .get(id, "")
        .unwrap_or_else(|e| panic!("get {id}: {}", crate::error::with_causes(&e)));
    let value = f(&dir);
    driver
        .put(id)
        .unwrap_or_else(|e| panic!("put {id}: {}", crate::error::with_causes(&e)));
    value
}

fn remove(driver: &dyn Driver, id: &str) {
    driver
        .remove(id)
        .unwrap_or_else(|e| panic!("remove {id}: {}", crate::error::with_causes(&e)));
    assert!(!driver.exists(id), "{id} still exists after remove");
}

/// moby `DriverTestCreateEmpty`: an empty layer is an empty 0755 directory owned by root.
pub fn driver_test_create_empty(driver: &dyn Driver) -> Outcome {
    driver
        .create("empty", None, &opts())
        .unwrap_or_else(|e| panic!("create empty: {}", crate::error::with_causes(&e)));
    assert!(driver.exists("empty"), "created layer does not exist");
    with_layer(driver, "empty", |dir| {
        let m = fs::metadata(dir).unwrap();
        assert!(m.is_dir());
        assert_eq!(m.mode() & 0o7777, 0o755, "mode of an empty layer");
        if is_root() {
            assert_eq!((m.uid(), m.gid()), (0, 0), "owner of an empty layer");
        }
        let entries: Vec<_> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n != "lost+found")
            .collect();
        assert!(entries.is_empty(), "empty layer has entries: {entries:?}");
    });
    remove(driver, "empty");
    Outcome::Passed
}

/// moby `createBase`: `a subdir` (01705, 1:2) and `a file` ("Some data", 04222, 0:0).
pub fn create_base(driver: &dyn Driver, id: &str) {
    driver
        .create_read_write(id, None, &opts())
        .unwrap_or_else(|e| panic!("create {id}: {}", crate::error::with_causes(&e)));
    with_layer(driver, id, |dir| {
        let sub = dir.join("a subdir");
        fs::create_dir(&sub).unwrap();
        std::os::unix::fs::lchown(&sub, Some(1), Some(2)).unwrap();
        fs::set_permissions(&sub, fs::Permissions::from_mode(0o1705)).unwrap();
        let file = dir.join("a file");
        fs::write(&file, "Some data").unwrap();
        fs::set_permissions(&file, fs::Permissions::from_mode(0o4222)).unwrap();
    });
}

/// moby `verifyBase`.
pub fn verify_base(driver: &dyn Driver, id: &str) {
    with_layer(driver, id, |dir| {
        let sub = fs::symlink_metadata(dir.join("a subdir")).unwrap();
        assert!(sub.is_dir());
        assert_eq!(sub.mode() & 0o7777, 0o1705, "mode of 'a subdir' in {id}");
        assert_eq!(
            (sub.uid(), sub.gid()),
            (1, 2),
            "owner of 'a subdir' in {id}"
        );
        let file = fs::symlink_metadata(dir.join("a file")).unwrap();
        assert!(file.is_file());
        assert_eq!(file.mode() & 0o7777, 0o4222, "mode of 'a file' in {id}");
        assert_eq!(
            (file.uid(), file.gid()),
            (0, 0),
            "owner of 'a file' in {id}"
        );
        assert_eq!(fs::read_dir(dir).unwrap().count(), 2, "entries in {id}");
    });
}

/// moby `DriverTestCreateBase` (root: it chowns to 1:2).
pub fn driver_test_create_base(driver: &dyn Driver) -> Outcome {
    if !is_root() {
        return Outcome::Skipped("create base needs root (chown to 1:2)".into());
    }
    create_base(driver, "Base");
    verify_base(driver, "Base");
    remove(driver, "Base");
    Outcome::Passed
}

/// moby `DriverTestCreateSnap`: a child layer inherits all of the base's metadata.
pub fn driver_test_create_snap(driver: &dyn Driver) -> Outcome {
    if !is_root() {
        return Outcome::Skipped("create snap needs root (chown to 1:2)".into());
    }
    create_base(driver, "Base");
    driver
        .create("Snap", Some("Base"), &opts())
        .unwrap_or_else(|e| panic!("create Snap: {}", crate::error::with_causes(&e)));
    verify_base(driver, "Snap");
    remove(driver, "Snap");
    remove(driver, "Base");
    Outcome::Passed
}

/// moby `DriverTestDeepLayerRead(n)`: a chain of `n` layers on a base, each recording its
/// id and its parent's; the top sees every layer's files and the base's.
pub fn driver_test_deep_layer_read(driver: &dyn Driver, layer_count: usize) -> Outcome {
    driver
        .create("deep-base", None, &opts())
        .unwrap_or_else(|e| panic!("create deep-base: {}", crate::error::with_causes(&e)));
    with_layer(driver, "deep-base", |dir| {
        fs::write(dir.join("testfile.txt"), "test content").unwrap()
    });
    let mut ids = vec!["deep-base".to_string()];
    for i in 1..=layer_count {
        let id = format!("deep-{i}");
        let parent = ids.last().unwrap().clone();
        driver
            .create(&id, Some(&parent), &opts())
            .unwrap_or_else(|e| panic!("create {id}: {}", crate::error::with_causes(&e)));
        with_layer(driver, &id, |dir| {
            fs::write(dir.join("top-id"), &id).unwrap();
            let sub = dir.join(format!("layer-{i}"));
            fs::create_dir(&sub).unwrap();
            fs::write(sub.join("layer-id"), &id).unwrap();
            fs::write(sub.join("parent-id"), &parent).unwrap();
        });
        ids.push(id);
    }
    let top = ids.last().unwrap().clone();
    with_layer(driver, &top, |dir| {
        assert_eq!(fs::read_to_string(dir.join("top-id")).unwrap(), top);
        let mut expected = top.clone();
        for i in (1..=layer_count).rev() {
            let sub = dir.join(format!("layer-{i}"));
            assert_eq!(
                fs::read_to_string(sub.join("layer-id")).unwrap(),
                expected,
                "layer-{i}/layer-id"
            );
            expected = fs::read_to_string(sub.join("parent-id")).unwrap();
        }
        assert_eq!(expected, "deep-base");
        assert_eq!(
            fs::read_to_string(dir.join("testfile.txt")).unwrap(),
            "test content"
        );
    });
    for id in ids.iter().rev() {
        remove(driver, id);
    }
    Outcome::Passed
}

/// moby `addManyFiles`: `directory-<i/100*100>/file-<j>`, 64 bytes of `random_content`.
fn add_many_files(dir: &Path, count: usize, seed: u64) {
    for i in (0..count).step_by(100) {
        let sub = dir.join(format!("directory-{i}"));
        fs::create_dir_all(&sub).unwrap();
        for j in 0..(count - i).min(100) {
            fs::write(
                sub.join(format!("file-{j}")),
                random_content(64, seed + (i + j) as u64),
            )
            .unwrap();
        }
    }
}

fn check_many_files(dir: &Path, count: usize, seed: u64) {
    for i in (0..count).step_by(100) {
        for j in 0..(count - i).min(100) {
            let path = dir.join(format!("directory-{i}/file-{j}"));
            let got = fs::read(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            assert_eq!(
                got,
                random_content(64, seed + (i + j) as u64),
                "content of {}",
                path.display()
            );
        }
    }
}

/// moby `DriverTestDiffApply(n)`: export the diff of an upper layer against its base, apply
/// it onto a fresh child of the base, and get the upper's tree and the same size.
pub fn driver_test_diff_apply(driver: &dyn Driver, file_count: usize) -> Outcome {
    let (base, upper, diff) = ("da-base", "da-upper", "da-diff");
    driver
        .create(base, None, &opts())
        .unwrap_or_else(|e| panic!("create {base}: {}", crate::error::with_causes(&e)));
    with_layer(driver, base, |dir| {
        add_many_files(dir, file_count, 3);
        fs::write(dir.join("file-remove.txt"), "remove me").unwrap();
        fs::create_dir_all(dir.join("var/lib")).unwrap();
    });
    driver
        .create(upper, Some(base), &opts())
        .unwrap_or_else(|e| panic!("create {upper}: {}", crate::error::with_causes(&e)));
    with_layer(driver, upper, |dir| {
        add_many_files(dir, file_count, 6);
        fs::remove_file(dir.join("file-remove.txt")).unwrap();
        fs::remove_dir(dir.join("var/lib")).unwrap();
    });
    let diff_size = driver
        .diff_size(upper, None)
        .unwrap_or_else(|e| panic!("diff size: {}", crate::error::with_causes(&e)));
    driver
        .create(diff, Some(base), &opts())
        .unwrap_or_else(|e| panic!("create {diff}: {}", crate::error::with_causes(&e)));
    with_layer(driver, diff, |dir| {
        check_many_files(dir, file_count, 3);
        assert!(dir.join("file-remove.txt").exists());
    });
    let mut arch = driver
        .diff(upper, Some(base))
        .unwrap_or_else(|e| panic!("diff: {}", crate::error::with_causes(&e)));
    let applied = driver
        .apply_diff(diff, Some(base), &mut arch)
        .unwrap_or_else(|e| panic!("apply diff: {}", crate::error::with_causes(&e)));
    drop(arch);
    assert_eq!(applied, diff_size, "applied size vs diff size");
    with_layer(driver, diff, |dir| {
        check_many_files(dir, file_count, 6);
        assert!(
            !dir.join("file-remove.txt").exists(),
            "file-remove.txt survived the diff"
        );
        assert!(!dir.join("var/lib").exists(), "var/lib survived the diff");
        assert!(dir.join("var").is_dir());
    });
    for id in [diff, upper, base] {
        remove(driver, id);
    }
    Outcome::Passed
}

/// moby `changeManyFiles`: per file j, j%3 == 0 rewrite (C), 1 add a sibling (A), 2 delete
/// (D). Returns the expected changes, including the parent directory's Modify.
fn change_many_files(dir: &Path, count: usize, seed: u64) -> Vec<Change> {
    let mut changes = Vec::new();
    for i in (0..count).step_by(100) {
        let sub = format!("directory-{i}");
        changes.push(Change {
            path: format!("/{sub}").into(),
            kind: ChangeKind::Modify,
        });
        for j in 0..(count - i).min(100) {
            let n = (i + j) as u64;
            match j % 3 {
                0 => {
                    let name = format!("{sub}/file-{j}");
                    fs::write(dir.join(&name), random_content(64, seed + n)).unwrap();
                    changes.push(Change {
                        path: format!("/{name}").into(),
                        kind: ChangeKind::Modify,
                    });
                }
                1 => {
                    let name = format!("{sub}/file-{seed}-{n}");
                    fs::write(dir.join(&name), random_content(64, seed + n)).unwrap();
                    changes.push(Change {
                        path: format!("/{name}").into(),
                        kind: ChangeKind::Add,
                    });
                }
                _ => {
                    let name = format!("{sub}/file-{j}");
                    fs::remove_file(dir.join(&name)).unwrap();
                    changes.push(Change {
                        path: format!("/{name}").into(),
                        kind: ChangeKind::Delete,
                    });
                }
            }
        }
    }
    changes
}

/// moby `DriverTestChanges`: `changes(upper, base)` lists exactly the modifications made.
/// Rewrites keep the size, so this catches differs that only compare whole-second mtimes.
pub fn driver_test_changes(driver: &dyn Driver) -> Outcome {
    let (base, upper) = ("ch-base", "ch-upper");
    driver
        .create(base, None, &opts())
        .unwrap_or_else(|e| panic!("create {base}: {}", crate::error::with_causes(&e)));
    with_layer(driver, base, |dir| add_many_files(dir, 20, 3));
    driver
        .create(upper, Some(base), &opts())
        .unwrap_or_else(|e| panic!("create {upper}: {}", crate::error::with_causes(&e)));
    let expected = with_layer(driver, upper, |dir| change_many_files(dir, 20, 6));
    let got = driver
        .changes(upper, Some(base))
        .unwrap_or_else(|e| panic!("changes: {}", crate::error::with_causes(&e)));
    let sort = |v: Vec<Change>| v.into_iter().collect::<BTreeSet<_>>();
    assert_eq!(sort(got), sort(expected), "changes of the upper layer");
    remove(driver, upper);
    remove(driver, base);
    Outcome::Passed
}

/// moby `DriverTestSetQuota`: a 50M quota on a read-write layer stops a 50 MiB write.
/// Drivers without quota support are skipped unless `required`.
pub fn driver_test_set_quota(driver: &dyn Driver, required: bool) -> Outcome {
    let (base, rw) = ("quota-base", "quota-rw");
    driver
        .create(base, None, &opts())
        .unwrap_or_else(|e| panic!("create {base}: {}", crate::error::with_causes(&e)));
    let mut quota = opts();
    quota.storage_opt.insert("size".into(), "50M".into());
    match driver.create_read_write(rw, Some(base), &quota) {
        Ok(()) => {}
        Err(Error::NotSupported(reason)) if !required => {
            remove(driver, base);
            return Outcome::Skipped(format!("quota not supported: {reason}"));
        }
        Err(e) => panic!(
            "create {rw} with a quota: {}",
            crate::error::with_causes(&e)
        ),
    }
    with_layer(driver, rw, |dir| {
        fs::write(dir.join("small"), vec![0u8; 25 << 20]).expect("a 25 MiB file fits a 50M quota");
        let err = fs::write(dir.join("big"), vec![0u8; 50 << 20])
            .expect_err("a 50 MiB file must not fit");
        let code = err.raw_os_error();
        assert!(
            code == Some(122) || code == Some(28),
            "expected EDQUOT or ENOSPC, got {err}"
        );
    });
    remove(driver, rw);
    remove(driver, base);
    Outcome::Passed
}
