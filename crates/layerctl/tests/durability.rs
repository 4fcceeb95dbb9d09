//! Durability and real-filesystem faults, end to end through the `layerctl` binary.
//!
//! The policy (RELIABILITY.md): layer *metadata* is durable by default
//! (`layer_meta::Durability::Full`: every file fsynced before the commit rename, the parent
//! directory after it), so a layer whose `import` returned survives power loss as metadata.
//! Layer *data* (the driver directory) is not synced by the store: like moby, it relies on
//! the kernel's writeback.
//!
//! * [`export_identical_after_drop_caches`]: after `sync` and `drop_caches`, every layer is
//!   read back from disk and exports byte-identical to what was imported.
//! * [`survives_unmount_and_remount`]: a loop-mounted ext4 holding the root is unmounted and
//!   mounted again; the store is intact.
//! * [`power_cut_image_keeps_committed_metadata`]: a copy of the loop device's backing file
//!   taken *while mounted, without sync* is what a power cut leaves; mounted (journal replay),
//!   every layer whose import returned is listed with its DiffID.
//!   [`power_cut_image_keeps_layer_data`] asks the same of the layer *content* when the
//!   imports ran with `--sync-data` (by default only metadata is synced, as in moby).
//! * [`enospc_on_a_full_tmpfs`]: a real ENOSPC (a 4 MiB tmpfs) mid-import is a clear error
//!   and leaves nothing behind; a smaller import then works.
//!
//! All need root (mount, drop_caches) and are skipped through testkit's gates otherwise.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// `sha256:<hex>`, testkit's oracle.
use testkit::digest::sha256 as sha256_hex;

fn layerctl() -> PathBuf {
    testkit::layerctl::path()
}

fn root_or_skip(what: &str) -> bool {
    testkit::gate::root(what).is_ok()
}

fn drivers() -> Vec<&'static str> {
    testkit::gate::drivers()
}

struct Out {
    ok: bool,
    stdout: Vec<u8>,
    stderr: String,
}

fn ctl(root: &Path, driver: &str, args: &[&str]) -> Out {
    let out = Command::new(layerctl())
        .arg("--root")
        .arg(root)
        .args(["--driver", driver, "-q"])
        .args(args)
        .output()
        .expect("run layerctl");
    Out {
        ok: out.status.success(),
        stdout: out.stdout,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn sh(cmd: &str, args: &[&str]) {
    let st = Command::new(cmd).args(args).status().expect(cmd);
    assert!(st.success(), "{cmd} {args:?}: {st}");
}

/// A mount that is undone on drop.
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

/// A small deterministic layer tar: `files` files of `size` bytes under `dir/`.
fn layer(dir: &str, files: usize, size: usize, seed: u8) -> Vec<u8> {
    let mut t = testkit::tar::Tar::new().gnu().mtime(1_700_000_000);
    for i in 0..files {
        let data: Vec<u8> = (0..size)
            .map(|j| (j as u8).wrapping_mul(31) ^ seed ^ i as u8)
            .collect();
        t = t.file(&format!("{dir}/f{i}"), &data);
    }
    t.build()
}

/// Imports three chained layers; returns (chain ID, input tar) per layer.
fn import_chain(
    root: &Path,
    driver: &str,
    inputs: &Path,
    sync_data: bool,
) -> Vec<(String, Vec<u8>)> {
    let mut parent: Option<String> = None;
    let mut out = Vec::new();
    for i in 0..3u8 {
        let tar = layer(&format!("l{i}"), 8, 256 << 10, i);
        let path = inputs.join(format!("l{i}.tar"));
        fs::write(&path, &tar).unwrap();
        let p = path.display().to_string();
        let mut args = vec!["import", p.as_str()];
        if sync_data {
            args.push("--sync-data");
        }
        if let Some(parent) = &parent {
            args.extend(["--parent", parent.as_str()]);
        }
        let run = ctl(root, driver, &args);
        assert!(run.ok, "import: {}", run.stderr);
        let chain = String::from_utf8(run.stdout).unwrap().trim().to_owned();
        parent = Some(chain.clone());
        out.push((chain, tar));
    }
    out
}

fn assert_store_intact(root: &Path, driver: &str, layers: &[(String, Vec<u8>)], what: &str) {
    let check = ctl(root, driver, &["check"]);
    assert!(
        check.ok,
        "{what} on {driver}: check: {}{}",
        String::from_utf8_lossy(&check.stdout),
        check.stderr
    );
    for (chain, tar) in layers {
        let out = ctl(root, driver, &["export", chain]);
        assert!(out.ok, "{what}: export {chain}: {}", out.stderr);
        assert_eq!(
            sha256_hex(&out.stdout),
            sha256_hex(tar),
            "{what} on {driver}: layer {chain} exports different bytes"
        );
    }
}

#[test]
fn export_identical_after_drop_caches() {
    if !root_or_skip("drop_caches") {
        return;
    }
    for driver in drivers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let layers = import_chain(&root, driver, dir.path(), false);
        sh("sync", &[]);
        fs::write("/proc/sys/vm/drop_caches", "3").expect("drop caches");
        assert_store_intact(&root, driver, &layers, "after drop_caches");
    }
}

/// A loop-mounted ext4 of `mib` MiB at `<dir>/mnt`, backed by `<dir>/disk.img`.
fn loop_ext4(dir: &Path, mib: u64) -> Option<(PathBuf, Mounted)> {
    testkit::gate::tool("mkfs.ext4", "e2fsprogs").ok()?;
    let img = dir.join("disk.img");
    let f = fs::File::create(&img).unwrap();
    f.set_len(mib << 20).unwrap();
    drop(f);
    sh("mkfs.ext4", &["-q", "-F", img.to_str().unwrap()]);
    let mnt = dir.join("mnt");
    fs::create_dir(&mnt).unwrap();
    let st = Command::new("mount")
        .args(["-o", "loop"])
        .arg(&img)
        .arg(&mnt)
        .status()
        .unwrap();
    if !st.success() {
        let _ = testkit::gate::lacking("loop devices", "mount -o loop failed here");
        return None;
    }
    Some((img, Mounted(mnt)))
}

#[test]
fn survives_unmount_and_remount() {
    if !root_or_skip("loop mount") {
        return;
    }
    for driver in drivers() {
        let dir = tempfile::tempdir().unwrap();
        let Some((img, mounted)) = loop_ext4(dir.path(), 128) else {
            return;
        };
        let root = mounted.0.join("root");
        let layers = import_chain(&root, driver, dir.path(), false);
        let mnt = mounted.0.clone();
        drop(mounted);
        sh(
            "mount",
            &["-o", "loop", img.to_str().unwrap(), mnt.to_str().unwrap()],
        );
        let _again = Mounted(mnt);
        assert_store_intact(&root, driver, &layers, "after remount");
    }
}

/// What a power cut right after the imports leaves, mounted.
struct PowerCut {
    _dir: tempfile::TempDir,
    root: PathBuf,
    layers: Vec<(String, Vec<u8>)>,
    _mounted: Mounted,
}

/// Mounts what a power cut right after the imports would leave: a copy of the backing file,
/// taken while the filesystem is mounted and nothing was synced beyond what the store syncs.
fn power_cut_image(driver: &str, sync_data: bool) -> Option<PowerCut> {
    let dir = tempfile::tempdir().unwrap();
    let (img, mounted) = loop_ext4(dir.path(), 128)?;
    let root = mounted.0.join("root");
    let layers = import_chain(&root, driver, dir.path(), sync_data);
    let crash = dir.path().join("crash.img");
    fs::copy(&img, &crash).unwrap();
    drop(mounted);
    let mnt2 = dir.path().join("mnt2");
    fs::create_dir(&mnt2).unwrap();
    sh(
        "mount",
        &[
            "-o",
            "loop",
            crash.to_str().unwrap(),
            mnt2.to_str().unwrap(),
        ],
    );
    Some(PowerCut {
        _dir: dir,
        root: mnt2.join("root"),
        layers,
        _mounted: Mounted(mnt2),
    })
}

#[test]
fn power_cut_image_keeps_committed_metadata() {
    if !root_or_skip("loop mount") {
        return;
    }
    for driver in drivers() {
        // Bound whole: the tempdir and the mount must live to the end of the iteration.
        let Some(cut) = power_cut_image(driver, false) else {
            return;
        };
        let (root, layers) = (&cut.root, &cut.layers);
        let ls = ctl(root, driver, &["--json", "ls"]);
        assert!(ls.ok, "ls on the power-cut image: {}", ls.stderr);
        let listed = String::from_utf8(ls.stdout).unwrap();
        let ls_err = ls.stderr;
        for (chain, tar) in layers {
            assert!(
                listed.contains(chain.as_str()),
                "{driver}: layer {chain} lost by the power cut; ls: {listed} {}",
                ls_err
            );
            assert!(
                listed.contains(&sha256_hex(tar)),
                "{driver}: DiffID of {chain} lost"
            );
        }
        let check = ctl(root, driver, &["check", "--quick"]);
        eprintln!(
            "{driver}: power-cut image, metadata check: {}",
            String::from_utf8_lossy(&check.stdout).trim()
        );
        assert!(
            check.ok,
            "{driver}: metadata of the power-cut image: {}",
            check.stderr
        );
        let full = ctl(root, driver, &["check"]);
        eprintln!(
            "{driver}: power-cut image, full content check: ok={} {}",
            full.ok,
            String::from_utf8_lossy(&full.stdout).trim()
        );
    }
}

/// With `--sync-data` (a `syncfs` of the driver's filesystem before each metadata commit),
/// a power cut keeps the layers' files too, not only their metadata.
#[test]
fn power_cut_image_keeps_layer_data() {
    if !root_or_skip("loop mount") {
        return;
    }
    for driver in drivers() {
        // Bound whole: the tempdir and the mount must live to the end of the iteration.
        let Some(cut) = power_cut_image(driver, true) else {
            return;
        };
        let (root, layers) = (&cut.root, &cut.layers);
        assert_store_intact(root, driver, layers, "power-cut image");
    }
}

/// One tmpfs-full case: a filesystem of `opts` (`size=…`, `nr_inodes=…`), a base layer (which
/// may itself not fit) and a layer that cannot fit. Every failure must be a clear ENOSPC error
/// that leaves `check` clean without gc; what did fit must export byte-identical.
fn enospc_case(driver: &str, opts: &str, big: &[u8]) -> (bool, bool) {
    let dir = tempfile::tempdir().unwrap();
    let mnt = dir.path().join("small");
    fs::create_dir(&mnt).unwrap();
    sh(
        "mount",
        &["-t", "tmpfs", "-o", opts, "tmpfs", mnt.to_str().unwrap()],
    );
    let _m = Mounted(mnt.clone());
    let root = mnt.join("root");
    let inputs = dir.path();
    let small = layer("small", 2, 4096, 1);
    fs::write(inputs.join("small.tar"), &small).unwrap();
    fs::write(inputs.join("big.tar"), big).unwrap();
    let assert_clean_failure = |run: &Out, what: &str| {
        let err = run.stderr.to_lowercase();
        assert!(
            err.contains("no space left") || err.contains("disk quota"),
            "{driver} {opts}: {what}: ENOSPC not named: {}",
            run.stderr
        );
        let check = ctl(&root, driver, &["check"]);
        // A root whose very first directories did not fit has nothing to check (and `check`,
        // read-only, does not create a store to check); a store that opened must be clean.
        let stderr = check.stderr.to_lowercase();
        if !stderr.contains("no space left") && !stderr.contains("no layer store at") {
            assert!(
                check.ok,
                "{driver} {opts}: after a failed {what}: {}{}",
                String::from_utf8_lossy(&check.stdout),
                check.stderr
            );
        }
    };
    let run = ctl(
        &root,
        driver,
        &["import", inputs.join("small.tar").to_str().unwrap()],
    );
    if !run.ok {
        assert_clean_failure(&run, "base import");
        return (true, false);
    }
    let base = String::from_utf8(run.stdout).unwrap().trim().to_owned();
    let run = ctl(
        &root,
        driver,
        &[
            "import",
            inputs.join("big.tar").to_str().unwrap(),
            "--parent",
            &base,
        ],
    );
    assert!(!run.ok, "{driver} {opts}: the big import fit?");
    assert_clean_failure(&run, "big import");
    let ls = ctl(&root, driver, &["--json", "ls"]);
    let listed = String::from_utf8(ls.stdout).unwrap();
    assert_eq!(
        listed.matches("chain_id").count(),
        1,
        "{driver} {opts}: {listed}"
    );
    assert_store_intact(
        &root,
        driver,
        &[(base, small)],
        &format!("after ENOSPC ({opts})"),
    );
    (false, true)
}

/// Real ENOSPC (bytes, then inodes) at many points of an import: the tmpfs size is swept so the
/// filesystem fills during metadata writes, during extraction of small files, of a big file,
/// and in the driver's own directories.
#[test]
fn enospc_on_a_full_tmpfs() {
    if !root_or_skip("tmpfs mount") {
        return;
    }
    let big = layer("big", 24, 256 << 10, 2);
    let many = {
        let mut t = testkit::tar::Tar::new().gnu();
        for i in 0..3000 {
            t = t.file(&format!("d{}/f{i}", i % 30), b"x");
        }
        t.build()
    };
    for driver in drivers() {
        let (mut base_failed, mut big_failed) = (0, 0);
        for kib in (16..=4096).step_by(160) {
            let (b, g) = enospc_case(driver, &format!("size={kib}k"), &big);
            base_failed += b as u32;
            big_failed += g as u32;
        }
        for inodes in (8..=2000).step_by(150) {
            let (b, g) = enospc_case(driver, &format!("size=64m,nr_inodes={inodes}"), &many);
            base_failed += b as u32;
            big_failed += g as u32;
        }
        eprintln!(
            "{driver}: ENOSPC sweep: {base_failed} failed base imports, {big_failed} failed big imports, all clean"
        );
        assert!(
            base_failed > 0 && big_failed > 0,
            "{driver}: the sweep missed a phase"
        );
    }
}
