//! `layerctl --userns-remap USER[:GROUP]` end to end, as root, on both drivers, with users
//! the tests create (and delete): where the store lives, who owns what, byte-identical
//! exports, RW layers with an init layer, commits, and every bad input with nothing written.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use testkit::digest::sha256;
use testkit::layerctl::*;
use testkit::testuser::{TestUser, can_create_users};

/// A layer whose entries are owned by 0, 1000 and 65534 (a dir, files, a symlink).
fn owned_layer() -> Vec<u8> {
    testkit::tar::Tar::new()
        .mtime(1_700_000_000)
        .dir("etc/")
        .file("etc/passwd", b"root:x:0:0::/:/bin/sh\n")
        .owner(1000, 1000)
        .dir("home/u/")
        .file("home/u/f", b"user's\n")
        .symlink("home/u/l", "f")
        .owner(65534, 65534)
        .file("nobody", b"n\n")
        .build()
}

fn remap_cmd(data: &Path, driver: &str, spec: &str, args: &[&str]) -> std::process::Command {
    let mut c = ctl(data, driver);
    c.arg("--userns-remap").arg(spec).args(args);
    c
}

/// A data-root the remapped root may traverse.
fn data_root() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = tempfile::tempdir().unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    d
}

fn owner(p: &Path) -> (u32, u32) {
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.uid(), m.gid())
}

/// Where a layer's files are: vfs's layer dir, overlay2's `diff/`.
fn payload(store: &Path, driver: &str, cache_id: &str) -> PathBuf {
    match driver {
        "vfs" => store.join("vfs/dir").join(cache_id),
        _ => store.join("overlay2").join(cache_id).join("diff"),
    }
}

fn cache_id(data: &Path, driver: &str, spec: &str, chain: &str) -> String {
    let v = json(run(remap_cmd(data, driver, spec, &["--json", "ls"])));
    v.as_array()
        .unwrap()
        .iter()
        .find(|l| l["chain_id"] == chain)
        .unwrap_or_else(|| panic!("{chain} not listed: {v}"))["cache_id"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn remapped_layers_are_owned_by_host_ids_and_export_byte_identical() {
    if !can_create_users("remapped_layers_are_owned_by_host_ids") {
        return;
    }
    let user = TestUser::create("lsrm", Some(65536));
    let base = user.subid_start.unwrap();
    for driver in drivers() {
        let data = data_root();
        let spec = user.name.as_str();
        let input = owned_layer();
        let chain = ok(run_with_stdin(
            remap_cmd(data.path(), driver, spec, &["import", "-"]),
            &input,
        ));
        let chain = chain.trim().to_string();
        assert_eq!(
            chain,
            sha256(&input),
            "{driver}: a base layer's chain ID is its DiffID"
        );

        // dockerd's layout: <data-root>/<uid>.<gid>/, nothing of the store outside it.
        let store = data.path().join(format!("{base}.{base}"));
        assert!(
            store.join("image").join(driver).join("layerdb").is_dir(),
            "{driver}"
        );
        assert!(!data.path().join("image").exists(), "{driver}");
        assert_eq!(owner(data.path()), (0, base), "{driver}: data-root");
        assert_eq!(owner(&store), (0, base), "{driver}: remapped root");

        let files = payload(&store, driver, &cache_id(data.path(), driver, spec, &chain));
        let host = |id: u32| (base + id, base + id);
        assert_eq!(owner(&files), host(0), "{driver}: layer root");
        assert_eq!(owner(&files.join("etc/passwd")), host(0), "{driver}");
        assert_eq!(owner(&files.join("home")), host(0), "{driver}: implied dir");
        assert_eq!(owner(&files.join("home/u")), host(1000), "{driver}");
        assert_eq!(owner(&files.join("home/u/f")), host(1000), "{driver}");
        assert_eq!(owner(&files.join("home/u/l")), host(1000), "{driver}");
        assert_eq!(owner(&files.join("nobody")), host(65534), "{driver}");

        // The export is the input, byte for byte.
        let out = run(remap_cmd(data.path(), driver, spec, &["export", &chain]));
        assert!(out.status.success(), "{driver}");
        assert_eq!(out.stdout, input, "{driver}: export");

        // A container: --init, mounted, its root the remapped root's.
        let mount_id = ok(run(remap_cmd(
            data.path(),
            driver,
            spec,
            &["rw", "create", "c1", "--parent", &chain, "--init"],
        )));
        let init_files = match driver {
            "vfs" => store
                .join("vfs/dir")
                .join(format!("{}-init", mount_id.trim())),
            _ => store
                .join("overlay2")
                .join(format!("{}-init", mount_id.trim()))
                .join("diff"),
        };
        assert_eq!(
            owner(&init_files.join(".dockerenv")),
            host(0),
            "{driver}: init layer"
        );
        assert_eq!(
            owner(&init_files.join("etc/mtab")),
            host(0),
            "{driver}: init layer"
        );
        let mnt = ok(run(remap_cmd(
            data.path(),
            driver,
            spec,
            &["rw", "mount", "c1"],
        )));
        let mnt = PathBuf::from(mnt.trim());
        assert_eq!(owner(&mnt), host(0), "{driver}: the RW layer's root");
        assert_eq!(owner(&mnt.join("home/u/f")), host(1000), "{driver}");
        // The container's user 1000 writes a file.
        std::fs::write(mnt.join("home/u/new"), "new\n").unwrap();
        std::os::unix::fs::lchown(mnt.join("home/u/new"), Some(base + 1000), Some(base + 1000))
            .unwrap();
        ok(run(remap_cmd(
            data.path(),
            driver,
            spec,
            &["rw", "unmount", "c1"],
        )));
        let changes = ok(run(remap_cmd(
            data.path(),
            driver,
            spec,
            &["rw", "changes", "c1"],
        )));
        assert!(
            changes.lines().any(|l| l == "A /home/u/new"),
            "{driver}: {changes}"
        );
        // `rw diff` maps owners back too: it is the tar the commit registers, byte for byte.
        let diff = run(remap_cmd(data.path(), driver, spec, &["rw", "diff", "c1"]));
        assert!(diff.status.success(), "{driver}");
        let committed = ok(run(remap_cmd(data.path(), driver, spec, &["commit", "c1"])));
        let out = run(remap_cmd(
            data.path(),
            driver,
            spec,
            &["export", committed.trim()],
        ));
        assert!(out.status.success());
        assert_eq!(
            out.stdout, diff.stdout,
            "{driver}: rw diff vs the commit's export"
        );
        let mut seen = false;
        for e in tar::Archive::new(&out.stdout[..]).entries().unwrap() {
            let e = e.unwrap();
            if e.path().unwrap().to_str() == Some("home/u/new") {
                assert_eq!(
                    (e.header().uid().unwrap(), e.header().gid().unwrap()),
                    (1000, 1000)
                );
                seen = true;
            }
        }
        assert!(seen, "{driver}: the commit holds the new file");
        let check = ok(run(remap_cmd(data.path(), driver, spec, &["check"])));
        assert!(check.lines().any(|l| l == "ok"), "{driver}: {check}");

        // The same store by numeric UID, and by USER:GROUP.
        for other in [user.uid.to_string(), format!("{}:{}", user.name, user.name)] {
            let ls = json(run(remap_cmd(
                data.path(),
                driver,
                &other,
                &["--json", "ls"],
            )));
            assert_eq!(ls.as_array().unwrap().len(), 2, "{driver} {other}: {ls}");
        }
        ok(run(remap_cmd(
            data.path(),
            driver,
            spec,
            &["rw", "rm", "c1"],
        )));
    }
}

#[test]
fn bad_remap_input_is_a_clear_error_and_writes_nothing() {
    if !can_create_users("bad_remap_input_is_a_clear_error") {
        return;
    }
    let no_ranges = TestUser::create("lsnr", None);
    let small = TestUser::create("lssm", Some(1000));
    for driver in drivers() {
        let data = data_root();
        let input = owned_layer();
        // An unknown user: nothing is created at all.
        let root = data.path().join("r");
        let line = fails(run_with_stdin(
            remap_cmd(&root, driver, "no-such-user-lsrm", &["import", "-"]),
            &input,
        ));
        assert!(line.contains("no-such-user-lsrm"), "{line}");
        assert!(!root.exists(), "{driver}: {line}");
        // A user without ranges: moby's "no subuid ranges found", with how to add some.
        let line = fails(run_with_stdin(
            remap_cmd(&root, driver, &no_ranges.name, &["import", "-"]),
            &input,
        ));
        assert!(line.contains("no subuid ranges found for user"), "{line}");
        assert!(line.contains("usermod --add-subuids"), "{line}");
        assert!(!root.exists(), "{driver}");
        // Ranges too small for the layer's IDs: moby refuses the layer (its "Container ID
        // 1000 cannot be mapped to a host ID"); nothing of it is kept.
        let spec = small.name.as_str();
        ok(run(remap_cmd(&root, driver, spec, &["info"])));
        let store = root.join(format!(
            "{}.{}",
            small.subid_start.unwrap(),
            small.subid_start.unwrap()
        ));
        let before = snapshot(&store);
        let line = fails(run_with_stdin(
            remap_cmd(&root, driver, spec, &["import", "-"]),
            &input,
        ));
        assert!(
            line.contains("home/u/")
                && line.contains("container ID 1000 cannot be mapped to a host ID"),
            "{driver}: {line}"
        );
        assert_eq!(snapshot(&store), before, "{driver}: nothing half-written");
        let ls = json(run(remap_cmd(&root, driver, spec, &["--json", "ls"])));
        assert!(ls.as_array().unwrap().is_empty(), "{driver}: {ls}");
        let check = ok(run(remap_cmd(&root, driver, spec, &["check"])));
        assert!(check.lines().any(|l| l == "ok"), "{check}");
        // A malformed spec.
        let line = fails(run(remap_cmd(&root, driver, "a:b:c", &["ls"])));
        assert!(line.contains("invalid user/group specification"), "{line}");
    }
}

#[test]
fn remap_root_turns_remapping_off_as_dockerd_does() {
    testkit::require!(testkit::gate::root("--userns-remap"));
    let data = data_root();
    let out = run(remap_cmd(data.path(), "vfs", "root", &["info"]));
    assert!(out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("root cannot be remapped with itself"),
        "{stderr}"
    );
    assert!(data.path().join("image/vfs/layerdb").is_dir());
}

#[test]
fn remap_default_is_the_dockremap_user_created_as_dockerd_creates_it() {
    if !can_create_users("remap_default_is_the_dockremap_user") {
        return;
    }
    let existed = std::process::Command::new("id")
        .arg("dockremap")
        .output()
        .unwrap()
        .status
        .success();
    let data = data_root();
    let out = run(remap_cmd(data.path(), "vfs", "default", &["info"]));
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let result = || {
        assert!(out.status.success(), "{stderr}");
        if !existed {
            assert!(
                stderr.contains("created the system user dockremap"),
                "{stderr}"
            );
        }
        let subuid = std::fs::read_to_string("/etc/subuid").unwrap();
        let line = subuid
            .lines()
            .find(|l| l.starts_with("dockremap:"))
            .expect("dockremap has a subuid range");
        let start: u32 = line.split(':').nth(1).unwrap().parse().unwrap();
        let gid_line = std::fs::read_to_string("/etc/subgid").unwrap();
        let gstart: u32 = gid_line
            .lines()
            .find(|l| l.starts_with("dockremap:"))
            .and_then(|l| l.split(':').nth(1))
            .unwrap()
            .parse()
            .unwrap();
        assert!(
            data.path()
                .join(format!("{start}.{gstart}/image/vfs"))
                .is_dir()
        );
    };
    let outcome = std::panic::catch_unwind(result);
    if !existed {
        // Leave the host as it was.
        let _ = std::process::Command::new("userdel")
            .arg("dockremap")
            .status();
    }
    if let Err(p) = outcome {
        std::panic::resume_unwind(p);
    }
}
