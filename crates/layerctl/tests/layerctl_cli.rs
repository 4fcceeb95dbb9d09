//! End-to-end tests of the `layerctl` binary: every command, JSON shapes, exit codes, bad
//! input leaving nothing behind, on vfs and (as root with overlayfs) overlay2.

use std::path::Path;

use testkit::digest::{chain_ids, sha256};
use testkit::image::*;
use testkit::layerctl::*;
use testkit::tar::archive;

fn cmd(root: &Path, driver: &str, args: &[&str]) -> std::process::Command {
    let mut c = ctl(root, driver);
    c.args(args);
    c
}

fn driver_dirs(root: &Path, driver: &str) -> Vec<String> {
    let dir = match driver {
        "vfs" => root.join("vfs/dir"),
        _ => root.join(driver),
    };
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .filter(|n| n.len() >= 64)
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn usage_errors_exit_2() {
    for args in [
        &[][..],
        &["frobnicate"][..],
        &["import"][..],
        &["rw", "create"][..],
        &["--driver", "zfs", "ls"][..],
    ] {
        let out = run({
            let mut c = bin();
            c.args(args);
            c
        });
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let out = run({
        let mut c = bin();
        c.arg("--help");
        c
    });
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for sub in [
        "import",
        "load",
        "ls",
        "inspect",
        "export",
        "rm",
        "rw",
        "commit",
        "check",
        "gc",
        "info",
        "tar-split",
    ] {
        assert!(help.contains(sub), "help lists {sub}");
    }
}

#[test]
fn import_ls_inspect_export_rm() {
    for driver in drivers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let layers = three_layers();
        let diffs: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
        let chains = chain_ids(&diffs);

        // Plain from a file, gzip with a parent given as a prefix, zstd from stdin.
        let f0 = dir.path().join("l0.tar");
        std::fs::write(&f0, &layers[0]).unwrap();
        let c0 = ok(run(cmd(&root, driver, &["import", f0.to_str().unwrap()])));
        assert_eq!(c0.trim(), chains[0]);
        let f1 = dir.path().join("l1.tar.gz");
        std::fs::write(&f1, gzip(&layers[1])).unwrap();
        let c1 = ok(run(cmd(
            &root,
            driver,
            &[
                "import",
                "--parent",
                &chains[0][7..20],
                f1.to_str().unwrap(),
            ],
        )));
        assert_eq!(c1.trim(), chains[1]);
        let c2 = ok(run_with_stdin(
            cmd(&root, driver, &["import", "--parent", &chains[1], "-"]),
            &zstd(&layers[2]),
        ));
        assert_eq!(c2.trim(), chains[2]);

        // ls --json: exactly these keys and values.
        let ls = json(run(cmd(&root, driver, &["--json", "ls"])));
        let arr = ls.as_array().unwrap();
        assert_eq!(arr.len(), 3);
        for (i, chain) in chains.iter().enumerate() {
            let l = arr.iter().find(|l| l["chain_id"] == *chain).unwrap();
            let keys: Vec<&String> = l.as_object().unwrap().keys().collect();
            assert_eq!(
                keys,
                [
                    "cache_id",
                    "chain_id",
                    "diff_id",
                    "diff_size",
                    "parent",
                    "size"
                ]
            );
            assert_eq!(l["diff_id"], diffs[i]);
            if i == 0 {
                assert!(l["parent"].is_null());
            } else {
                assert_eq!(l["parent"], chains[i - 1]);
            }
            assert!(l["size"].as_u64().unwrap() >= l["diff_size"].as_u64().unwrap());
            assert_eq!(l["cache_id"].as_str().unwrap().len(), 64);
        }
        // The table names every layer (short IDs).
        let table = ok(run(cmd(&root, driver, &["ls"])));
        assert!(table.starts_with("CHAIN ID"));
        assert_eq!(table.lines().count(), 4);

        // inspect: the ls keys plus the driver's metadata.
        let ins = json(run(cmd(&root, driver, &["inspect", &chains[2]])));
        assert_eq!(ins["chain_id"], chains[2]);
        assert_eq!(ins["parent"], chains[1]);
        assert!(ins["metadata"].is_object());
        if driver == "overlay2" {
            assert!(ins["metadata"]["UpperDir"].is_string());
        }

        // export: the exact bytes, to stdout and to a file.
        for (i, chain) in chains.iter().enumerate() {
            let out = run(cmd(&root, driver, &["export", chain]));
            assert!(out.status.success());
            assert_eq!(sha256(&out.stdout), diffs[i]);
            assert!(out.stdout == layers[i]);
            let file = dir.path().join(format!("out{i}.tar"));
            ok(run(cmd(
                &root,
                driver,
                &["export", chain, "-o", file.to_str().unwrap()],
            )));
            assert!(std::fs::read(&file).unwrap() == layers[i]);
            // A FIFO (like /dev/null or /dev/stdout) is written into, not replaced.
            let fifo = dir.path().join(format!("fifo{i}"));
            assert!(
                std::process::Command::new("mkfifo")
                    .arg(&fifo)
                    .status()
                    .unwrap()
                    .success()
            );
            let reader = {
                let fifo = fifo.clone();
                std::thread::spawn(move || std::fs::read(fifo).unwrap())
            };
            ok(run(cmd(
                &root,
                driver,
                &["export", chain, "-o", fifo.to_str().unwrap()],
            )));
            // Checked first: a replaced FIFO would leave the reader blocked for good.
            use std::os::unix::fs::FileTypeExt;
            assert!(
                std::fs::symlink_metadata(&fifo)
                    .unwrap()
                    .file_type()
                    .is_fifo(),
                "{driver}: the FIFO is still a FIFO"
            );
            assert!(
                reader.join().unwrap() == layers[i],
                "{driver}: through a FIFO"
            );
        }

        // rm refuses a layer with a child, then removes the top and unused parents.
        let e = fails(run(cmd(&root, driver, &["rm", &chains[0]])));
        assert!(e.contains("in use"), "{e}");
        let removed = ok(run(cmd(&root, driver, &["rm", &chains[2]])));
        let removed: Vec<&str> = removed.lines().collect();
        assert_eq!(removed, [&chains[2], &chains[1], &chains[0]]);
        let ls = json(run(cmd(&root, driver, &["--json", "ls"])));
        assert_eq!(ls.as_array().unwrap().len(), 0);
        assert!(driver_dirs(&root, driver).is_empty(), "{driver}");
        assert_check_clean(&root, driver);
    }
}

#[test]
fn missing_layer_and_bad_arguments_fail_with_one_error_line() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let missing = format!("sha256:{}", "ab".repeat(32));
    ok(run(cmd(&root, "vfs", &["info"])));
    for args in [
        vec!["inspect", missing.as_str()],
        vec!["export", missing.as_str()],
        vec!["rm", missing.as_str()],
        vec!["import", "--parent", missing.as_str(), "/dev/null"],
        vec!["rw", "create", "c", "--parent", missing.as_str()],
    ] {
        let e = fails(run(cmd(&root, "vfs", &args)));
        assert!(e.contains("does not exist"), "{args:?}: {e}");
    }
    let e = fails(run(cmd(&root, "vfs", &["import", "/nonexistent/x.tar"])));
    assert_eq!(
        e,
        "error: open /nonexistent/x.tar: No such file or directory (os error 2)"
    );
    let e = fails(run(cmd(&root, "vfs", &["rw", "mount", "nope"])));
    if testkit::gate::is_root() {
        assert!(e.contains("mount does not exist: nope"), "{e}");
    } else {
        // Unprivileged, a mount lives in the command's own namespace: refused, saying how.
        assert!(e.contains("layerctl unshare"), "{e}");
    }
    let e = fails(run(cmd(&root, "vfs", &["inspect", "zz"])));
    assert!(e.contains("invalid layer ID"), "{e}");
    // Export to a file fails without leaving a partial file.
    let out_file = dir.path().join("never.tar");
    fails(run(cmd(
        &root,
        "vfs",
        &["export", &missing, "-o", out_file.to_str().unwrap()],
    )));
    assert!(!out_file.exists());
}

/// The top chain ID of the last image a `--json load` reports.
fn loaded_top(out: std::process::Output) -> String {
    let v = json(out);
    v.as_array().unwrap().last().unwrap()["top_layer"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Loads `input` into a fresh root; returns the top chain ID and the root's `ls --json`.
fn load_fresh(driver: &str, input: &Path) -> (String, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let top = loaded_top(run(cmd(
        &root,
        driver,
        &["--json", "load", input.to_str().unwrap()],
    )));
    let ls = json(run(cmd(&root, driver, &["--json", "ls"])));
    assert_check_clean(&root, driver);
    (top, ls)
}

#[test]
fn load_docker_save_and_oci_in_every_layout_and_compression() {
    let layers = three_layers();
    let diffs: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let chains = chain_ids(&diffs);
    let blob_sets: Vec<(&str, Vec<Vec<u8>>)> = vec![
        ("plain", layers.clone()),
        ("gzip", layers.iter().map(|l| gzip(l)).collect()),
        (
            "mixed",
            vec![zstd(&layers[0]), layers[1].clone(), gzip(&layers[2])],
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for driver in drivers() {
        for (what, blobs) in &blob_sets {
            let mut inputs = Vec::new();
            for layout in [SaveLayout::Legacy, SaveLayout::Blobs] {
                let p = dir.path().join(format!("{what}-{layout:?}.tar"));
                std::fs::write(&p, docker_save(blobs, &diffs, layout)).unwrap();
                inputs.push(p);
            }
            let oci_dir = dir.path().join(format!("{what}-oci"));
            write_oci_dir(&oci_dir, blobs, &diffs);
            inputs.push(oci_dir);
            let (members, _) = oci_members(blobs, &diffs);
            let oci_tar = dir.path().join(format!("{what}-oci.tar"));
            std::fs::write(&oci_tar, archive(&members)).unwrap();
            inputs.push(oci_tar);
            // A compressed archive is decompressed to a spool file first.
            let gz_save = dir.path().join(format!("{what}-save.tar.gz"));
            std::fs::write(
                &gz_save,
                gzip(&docker_save(blobs, &diffs, SaveLayout::Legacy)),
            )
            .unwrap();
            inputs.push(gz_save);
            for input in inputs {
                let (top, ls) = load_fresh(driver, &input);
                assert_eq!(top.trim(), chains[2], "{driver} {}", input.display());
                let mut got: Vec<String> = ls
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|l| l["chain_id"].as_str().unwrap().to_owned())
                    .collect();
                got.sort();
                let mut want = chains.clone();
                want.sort();
                assert_eq!(got, want, "{driver} {}", input.display());
            }
        }
        // From stdin.
        let dir2 = tempfile::tempdir().unwrap();
        let root = dir2.path().join("root");
        let top = ok(run_with_stdin(
            cmd(&root, driver, &["load", "-"]),
            &docker_save(&layers, &diffs, SaveLayout::Legacy),
        ));
        assert_eq!(top, "Loaded image: test:v1\n");
        // Loading again is a no-op that prints the same chain.
        let f = dir2.path().join("img.tar");
        std::fs::write(&f, docker_save(&layers, &diffs, SaveLayout::Blobs)).unwrap();
        let top = loaded_top(run(cmd(
            &root,
            driver,
            &["--json", "load", f.to_str().unwrap()],
        )));
        assert_eq!(top, chains[2]);
        assert_eq!(
            json(run(cmd(&root, driver, &["--json", "ls"])))
                .as_array()
                .unwrap()
                .len(),
            3
        );
        // No spool files are left under the root.
        let strays: Vec<_> = std::fs::read_dir(&root)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .filter(|n| n.to_string_lossy().starts_with(".tmp"))
            .collect();
        assert!(strays.is_empty(), "{strays:?}");
    }
}

#[test]
fn failed_loads_leave_the_store_as_it_was() {
    let layers = three_layers();
    let diffs: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    for driver in drivers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        // A layer already there (a leaf nothing holds: the easiest to delete by mistake).
        let f0 = dir.path().join("l0.tar");
        std::fs::write(&f0, &layers[0]).unwrap();
        ok(run(cmd(&root, driver, &["import", f0.to_str().unwrap()])));
        let before = snapshot(&root);
        let before_ls = ok(run(cmd(&root, driver, &["--json", "ls"])));

        let mut bad_diffs = diffs.clone();
        bad_diffs[2] = format!("sha256:{}", "0".repeat(64));
        let mut wrong_blob_oci = layers.clone();
        wrong_blob_oci[1] = gzip(&layers[1]);
        let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "diffid-mismatch",
                docker_save(&layers, &bad_diffs, SaveLayout::Legacy),
                "DiffID mismatch",
            ),
            (
                "truncated",
                docker_save(&layers, &diffs, SaveLayout::Legacy)[..3000].to_vec(),
                "",
            ),
            ("garbage", vec![0x42; 4096], ""),
            (
                "missing-layer",
                {
                    let full = docker_save(&layers, &diffs, SaveLayout::Legacy);
                    // Rename the last layer member so the manifest names nothing.
                    let mut b = full.clone();
                    let needle = format!("{:064x}/layer.tar", 3);
                    let pos = b
                        .windows(needle.len())
                        .position(|w| w == needle.as_bytes())
                        .unwrap();
                    b[pos + 64] = b'X';
                    // Fix the header checksum of that member.
                    let hdr = pos - pos % 512;
                    b[hdr + 148..hdr + 156].copy_from_slice(b"        ");
                    let sum: u32 = b[hdr..hdr + 512].iter().map(|&x| x as u32).sum();
                    b[hdr + 148..hdr + 156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
                    b
                },
                "missing",
            ),
            (
                "layer-count",
                docker_save(&layers[..2], &diffs, SaveLayout::Legacy),
                "diff_ids",
            ),
            (
                "escaping-path",
                archive(&[(
                    "manifest.json".into(),
                    br#"[{"Config":"../../etc/passwd","Layers":[]}]"#.to_vec(),
                )]),
                "escapes",
            ),
            (
                "huge-json",
                archive(&[("manifest.json".into(), vec![b' '; (4 << 20) + 10])]),
                "limit",
            ),
            (
                "not-an-image",
                archive(&[("hello.txt".into(), b"hi".to_vec())]),
                "not a docker-save archive or OCI layout",
            ),
        ];
        // An OCI archive whose layer blob does not hash to its descriptor digest.
        let (mut members, _) = oci_members(&wrong_blob_oci, &diffs);
        let l1 = format!("blobs/sha256/{}", &sha256(&wrong_blob_oci[1])[7..]);
        for m in &mut members {
            if m.0 == l1 {
                // Same uncompressed content, different gzip bytes.
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
                std::io::Write::write_all(&mut e, &layers[1]).unwrap();
                m.1 = e.finish().unwrap();
            }
        }
        cases.push(("oci-blob-digest", archive(&members), "digest mismatch"));

        for (name, bytes, want) in cases {
            let p = dir.path().join(format!("{name}.tar"));
            std::fs::write(&p, &bytes).unwrap();
            let e = fails(run(cmd(&root, driver, &["load", p.to_str().unwrap()])));
            assert!(e.contains(want), "{driver} {name}: {e}");
            assert_eq!(snapshot(&root), before, "{driver} {name}: root changed");
            assert_eq!(
                ok(run(cmd(&root, driver, &["--json", "ls"]))),
                before_ls,
                "{driver} {name}"
            );
        }
        assert_check_clean(&root, driver);
    }
}

#[test]
fn breakout_tars_never_write_outside_the_layer() {
    for driver in drivers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        // `info` sets a new root up (read-only commands such as `ls` create nothing).
        ok(run(cmd(&root, driver, &["info"])));
        let before = snapshot(&root);
        let rejected = [
            layer_tar(&[E::File("ok", b"x"), E::File("../escape", b"evil")]),
            layer_tar(&[E::Hardlink("h", "../../../../etc/passwd")]),
        ];
        for (i, t) in rejected.iter().enumerate() {
            let p = dir.path().join(format!("bad{i}.tar"));
            std::fs::write(&p, t).unwrap();
            let e = fails(run(cmd(&root, driver, &["import", p.to_str().unwrap()])));
            assert!(e.contains("breakout"), "{e}");
            assert_eq!(snapshot(&root), before, "{driver} case {i}");
        }
        // Symlinks out of the layer are resolved inside it (as in moby's chrooted apply):
        // the file lands in the layer, never in `outside`.
        let target: &'static str = Box::leak(outside.to_str().unwrap().to_owned().into_boxed_str());
        let escapes = [
            layer_tar(&[E::Symlink("link", target), E::File("link/evil", b"evil")]),
            layer_tar(&[
                E::Symlink("up", "../../../../../../../../.."),
                E::File("up/evil2", b"evil"),
            ]),
        ];
        for (i, t) in escapes.iter().enumerate() {
            let p = dir.path().join(format!("esc{i}.tar"));
            std::fs::write(&p, t).unwrap();
            let out = run(cmd(&root, driver, &["import", p.to_str().unwrap()]));
            if out.status.success() {
                let chain = String::from_utf8(out.stdout).unwrap();
                let exported = run(cmd(&root, driver, &["export", chain.trim()]));
                assert!(exported.stdout == *t, "export is the exact input");
            } else {
                fails(out);
            }
            assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
            assert!(!Path::new("/evil2").exists());
        }
        assert_check_clean(&root, driver);
    }
}

fn mounted(path: &str) -> bool {
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(path))
}

#[test]
fn rw_layers_mount_change_commit_and_remove() {
    // Unprivileged, `rw mount` works only inside `layerctl unshare` (layerctl_rootless).
    testkit::require!(testkit::gate::root("rw mount outside `layerctl unshare`"));
    let layers = three_layers();
    let diffs: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let chains = chain_ids(&diffs);
    for driver in drivers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let img = dir.path().join("img.tar");
        std::fs::write(&img, docker_save(&layers, &diffs, SaveLayout::Legacy)).unwrap();
        ok(run(cmd(&root, driver, &["load", img.to_str().unwrap()])));

        let mount_id = ok(run(cmd(
            &root,
            driver,
            &["rw", "create", "c1", "--parent", &chains[2], "--init"],
        )));
        let mount_id = mount_id.trim().to_owned();
        assert_eq!(mount_id.len(), 64);
        ok(run(cmd(&root, driver, &["rw", "create", "bare"])));
        let e = fails(run(cmd(&root, driver, &["rw", "create", "c1"])));
        assert!(e.contains("already exists"), "{e}");

        let rw = json(run(cmd(&root, driver, &["--json", "rw", "ls"])));
        let rw = rw.as_array().unwrap();
        assert_eq!(rw.len(), 2);
        let c1 = rw.iter().find(|m| m["name"] == "c1").unwrap();
        let keys: Vec<&String> = c1.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["init_id", "mount_id", "name", "parent"]);
        assert_eq!(c1["mount_id"], mount_id.as_str());
        assert_eq!(c1["init_id"], format!("{mount_id}-init"));
        assert_eq!(c1["parent"], chains[2]);
        let bare = rw.iter().find(|m| m["name"] == "bare").unwrap();
        assert!(bare["parent"].is_null() && bare["init_id"].is_null());

        // The mount outlives the command; a later process unmounts it.
        let path = ok(run(cmd(&root, driver, &["rw", "mount", "c1"])));
        let path = path.trim().to_owned();
        let p = Path::new(&path);
        if driver == "overlay2" {
            assert!(mounted(&path), "mounted after the command exits");
        }
        // The image and the init layer show through.
        assert_eq!(
            std::fs::read_to_string(p.join("etc/a.conf")).unwrap(),
            "alpha=changed\n"
        );
        assert!(!p.join("etc/b.conf").exists());
        assert!(!p.join("opt/app/x").exists());
        assert!(p.join("opt/app/fresh").exists());
        assert!(p.join(".dockerenv").is_file() && p.join("etc/hosts").is_file());
        std::fs::write(p.join("new-file"), "hello\n").unwrap();
        std::fs::write(p.join("etc/a.conf"), "alpha=3\n").unwrap();
        std::fs::remove_file(p.join("opt/app/fresh")).unwrap();
        ok(run(cmd(&root, driver, &["rw", "unmount", "c1"])));
        if driver == "overlay2" {
            assert!(!mounted(&path), "unmounted by a later process");
        }

        // Changes exclude the init layer's files.
        let changes = ok(run(cmd(&root, driver, &["rw", "changes", "c1"])));
        let lines: Vec<&str> = changes.lines().collect();
        for want in [
            "A /new-file",
            "C /etc/a.conf",
            "D /opt/app/fresh",
            "C /etc",
            "C /opt/app",
        ] {
            assert!(lines.contains(&want), "{want} in {lines:?}");
        }
        assert!(!changes.contains("dockerenv") && !changes.contains("hosts"));
        let cj = json(run(cmd(&root, driver, &["--json", "rw", "changes", "c1"])));
        let first = &cj.as_array().unwrap()[0];
        let keys: Vec<&String> = first.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["kind", "path"]);
        assert_eq!(cj.as_array().unwrap().len(), lines.len());

        // diff → a layer tar with the whiteout.
        let diff_file = dir.path().join("c1.tar");
        ok(run(cmd(
            &root,
            driver,
            &["rw", "diff", "c1", "-o", diff_file.to_str().unwrap()],
        )));
        let mut names = Vec::new();
        let mut a = tar::Archive::new(std::fs::File::open(&diff_file).unwrap());
        for e in a.entries().unwrap() {
            names.push(e.unwrap().path().unwrap().to_string_lossy().into_owned());
        }
        assert!(names.iter().any(|n| n == "opt/app/.wh.fresh"), "{names:?}");
        assert!(names.iter().any(|n| n == "new-file"), "{names:?}");

        // commit registers the diff on the parent; its export hashes to its DiffID.
        let committed = ok(run(cmd(&root, driver, &["commit", "c1"])));
        let committed = committed.trim().to_owned();
        let ins = json(run(cmd(&root, driver, &["inspect", &committed])));
        assert_eq!(ins["parent"], chains[2]);
        let exported = run(cmd(&root, driver, &["export", &committed]));
        assert_eq!(sha256(&exported.stdout), ins["diff_id"].as_str().unwrap());

        // rw rm keeps the image layers, even after a fresh open where nothing counts them.
        ok(run(cmd(&root, driver, &["rw", "rm", "c1"])));
        ok(run(cmd(&root, driver, &["rw", "rm", "bare"])));
        let ls = json(run(cmd(&root, driver, &["--json", "ls"])));
        assert_eq!(ls.as_array().unwrap().len(), 4);
        assert!(
            json(run(cmd(&root, driver, &["--json", "rw", "ls"])))
                .as_array()
                .unwrap()
                .is_empty()
        );
        assert!(
            !driver_dirs(&root, driver)
                .iter()
                .any(|d| d.starts_with(&mount_id))
        );
        assert_check_clean(&root, driver);
    }
}

#[test]
fn rm_refuses_layers_under_rw_layers() {
    let layers = three_layers();
    for driver in drivers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let f = dir.path().join("l0.tar");
        std::fs::write(&f, &layers[0]).unwrap();
        let c = ok(run(cmd(&root, driver, &["import", f.to_str().unwrap()])));
        ok(run(cmd(
            &root,
            driver,
            &["rw", "create", "c", "--parent", c.trim()],
        )));
        let e = fails(run(cmd(&root, driver, &["rm", c.trim()])));
        assert!(e.contains("RW layer") && e.contains(" c"), "{e}");
        ok(run(cmd(&root, driver, &["rw", "rm", "c"])));
        let removed = ok(run(cmd(&root, driver, &["rm", c.trim()])));
        assert_eq!(removed.trim(), c.trim());
        assert_check_clean(&root, driver);
    }
}

#[test]
fn check_reports_repairs_and_gc_collects() {
    let layers = three_layers();
    for driver in drivers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let f = dir.path().join("l0.tar");
        std::fs::write(&f, &layers[0]).unwrap();
        let c = ok(run(cmd(&root, driver, &["import", f.to_str().unwrap()])));
        let c = c.trim().to_owned();
        let ins = json(run(cmd(&root, driver, &["inspect", &c])));
        let cache = ins["cache_id"].as_str().unwrap().to_owned();
        let layer_dir = match driver {
            "vfs" => root.join("vfs/dir").join(&cache),
            _ => root.join("overlay2").join(&cache).join("diff"),
        };
        // Tamper with a file: content no longer matches the DiffID.
        std::fs::write(layer_dir.join("etc/a.conf"), "tampered!\n").unwrap();
        // And leave an orphan driver directory.
        let orphan = "f".repeat(64);
        let orphan_dir = match driver {
            "vfs" => root.join("vfs/dir").join(&orphan),
            _ => root.join("overlay2").join(&orphan),
        };
        std::fs::create_dir_all(orphan_dir.join("diff")).unwrap();

        let out = run(cmd(&root, driver, &["check"]));
        assert_eq!(out.status.code(), Some(1));
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            report.contains(&c) && report.contains("problem:"),
            "{report}"
        );
        let js = run(cmd(&root, driver, &["--json", "check"]));
        assert_eq!(js.status.code(), Some(1));
        let js: serde_json::Value = serde_json::from_slice(&js.stdout).unwrap();
        assert_eq!(js["clean"], false);
        assert!(!js["problems"].as_array().unwrap().is_empty());

        // Repair collects the garbage and keeps the layer: changed files break only its
        // export (containers on it still run).
        let out = run(cmd(&root, driver, &["check", "--repair"]));
        assert_eq!(out.status.code(), Some(1), "wrong before repair");
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            report.contains("repaired: removed driver directory"),
            "{report}"
        );
        assert!(report.contains("export defect"), "{report}");
        assert!(!orphan_dir.exists());
        let ls = json(run(cmd(&root, driver, &["--json", "ls"])));
        assert_eq!(ls.as_array().unwrap().len(), 1, "the layer stays");

        // Without its driver directory the layer is broken: listed, removed only with
        // --remove-broken (nothing holds it).
        let layer_home = match driver {
            "vfs" => root.join("vfs/dir").join(&cache),
            _ => root.join("overlay2").join(&cache),
        };
        std::fs::remove_dir_all(&layer_home).unwrap();
        let out = run(cmd(&root, driver, &["check", "--repair"]));
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            report.contains(&format!("would remove broken layer {c}")),
            "{report}"
        );
        assert_eq!(
            json(run(cmd(&root, driver, &["--json", "ls"])))
                .as_array()
                .unwrap()
                .len(),
            1
        );
        let out = run(cmd(
            &root,
            driver,
            &["check", "--repair", "--remove-broken"],
        ));
        assert_eq!(out.status.code(), Some(1), "wrong before repair");
        let report = String::from_utf8_lossy(&out.stdout);
        assert!(
            report.contains(&format!("repaired: removed layer {c}")),
            "{report}"
        );
        assert_check_clean(&root, driver);
        assert!(
            json(run(cmd(&root, driver, &["--json", "ls"])))
                .as_array()
                .unwrap()
                .is_empty()
        );
        let usage = run(cmd(&root, driver, &["check", "--remove-broken"]));
        assert_eq!(
            usage.status.code(),
            Some(2),
            "--remove-broken needs --repair"
        );

        // gc alone collects an orphan directory.
        std::fs::create_dir_all(orphan_dir.join("diff")).unwrap();
        let gc = ok(run(cmd(&root, driver, &["gc"])));
        assert!(gc.contains(&orphan), "{gc}");
        assert!(!orphan_dir.exists());
        let gc = ok(run(cmd(&root, driver, &["gc"])));
        assert!(gc.contains("nothing to remove"));
    }
}

#[test]
fn info_reports_driver_counts_and_root() {
    for driver in drivers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let info = json(run(cmd(&root, driver, &["--json", "info"])));
        assert_eq!(info["driver"], driver);
        assert_eq!(info["layers"], 0);
        assert_eq!(info["rw_layers"], 0);
        assert_eq!(info["root"], root.to_str().unwrap());
        assert!(info["status"].is_object());
        let table = ok(run(cmd(&root, driver, &["info"])));
        assert!(table.contains(driver) && table.contains("Layers"));
        // Without --driver, the root's driver is found again.
        let mut again = bin();
        again.arg("--root").arg(&root).args(["--json", "info"]);
        assert_eq!(json(run(again))["driver"], driver);
    }
    // LAYERCTL_ROOT is the default root.
    let dir = tempfile::tempdir().unwrap();
    let mut c = bin();
    c.env("LAYERCTL_ROOT", dir.path())
        .args(["--driver", "vfs", "--json", "info"]);
    assert_eq!(json(run(c))["root"], dir.path().to_str().unwrap());
}

#[test]
fn concurrent_imports_wait_for_the_root_lock() {
    for driver in drivers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        ok(run(cmd(&root, driver, &["ls"])));
        // Two big-ish distinct layers so the imports overlap.
        let mut files = Vec::new();
        for i in 0..2u8 {
            let data: Vec<u8> = (0..4_000_000u32).map(|x| (x % 251) as u8 ^ i).collect();
            let mut t = testkit::tar::Tar::new();
            for n in 0..8 {
                t = t.file(&format!("f{n}"), &data);
            }
            let p = dir.path().join(format!("big{i}.tar"));
            std::fs::write(&p, t.build()).unwrap();
            files.push(p);
        }
        let children: Vec<_> = files
            .iter()
            .map(|f| {
                cmd(&root, driver, &["import", f.to_str().unwrap()])
                    .stdout(std::process::Stdio::piped())
                    .stderr(std::process::Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut ids = Vec::new();
        for c in children {
            ids.push(ok(c.wait_with_output().unwrap()).trim().to_owned());
        }
        let ls = json(run(cmd(&root, driver, &["--json", "ls"])));
        let mut got: Vec<String> = ls
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["chain_id"].as_str().unwrap().to_owned())
            .collect();
        got.sort();
        ids.sort();
        assert_eq!(got, ids);
        assert_check_clean(&root, driver);
    }
}

#[test]
fn load_follows_symlinked_members_and_picks_the_host_platform() {
    let layers = three_layers();
    let diffs: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let chains = chain_ids(&diffs);
    let dir = tempfile::tempdir().unwrap();

    // docker ≥ 25 style: legacy `<id>/layer.tar` names that are symlinks to blobs.
    let config = config_json(&diffs);
    let mut t = testkit::tar::Tar::new();
    let mut names = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let blob = format!("blobs/sha256/{}", &sha256(l)[7..]);
        let legacy = format!("{:064x}/layer.tar", i + 1);
        t = t.file(&blob, l).symlink(&legacy, &format!("../{blob}"));
        names.push(legacy);
    }
    for (name, data) in [
        ("cfg.json".to_owned(), config),
        (
            "manifest.json".to_owned(),
            serde_json::to_vec(&serde_json::json!([{"Config": "cfg.json", "Layers": names}]))
                .unwrap(),
        ),
    ] {
        t = t.file(&name, &data);
    }
    let p = dir.path().join("symlinked.tar");
    std::fs::write(&p, t.build()).unwrap();
    let (top, _) = load_fresh("vfs", &p);
    assert_eq!(top.trim(), chains[2]);

    // An OCI index listing another platform first (whose blobs are absent) and then ours.
    let (mut members, manifest_digest) = oci_members(&layers, &diffs);
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let manifest_len = members
        .iter()
        .find(|m| m.0.ends_with(&manifest_digest[7..]))
        .unwrap()
        .1
        .len();
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": format!("sha256:{}", "1".repeat(64)), "size": 1,
             "platform": {"os": "linux", "architecture": "s390x-not-here"}},
            {"mediaType": "application/vnd.oci.image.manifest.v1+json",
             "digest": manifest_digest, "size": manifest_len,
             "platform": {"os": "linux", "architecture": arch}},
        ],
    });
    for m in &mut members {
        if m.0 == "index.json" {
            m.1 = serde_json::to_vec(&index).unwrap();
        }
    }
    let p = dir.path().join("multi.tar");
    std::fs::write(&p, archive(&members)).unwrap();
    let (top, ls) = load_fresh("vfs", &p);
    assert_eq!(top.trim(), chains[2]);
    assert_eq!(ls.as_array().unwrap().len(), 3);
}

#[test]
fn verbose_logs_and_quiet() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let f = dir.path().join("l.tar");
    std::fs::write(&f, &three_layers()[0]).unwrap();
    let out = run(cmd(&root, "vfs", &["-v", "import", f.to_str().unwrap()]));
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        log.contains("INFO") && log.contains("registered layer"),
        "{log}"
    );
    let out = run(cmd(&root, "vfs", &["-q", "import", f.to_str().unwrap()]));
    assert!(out.status.success());
    assert!(out.stderr.is_empty());
    let out = run(cmd(&root, "vfs", &["-vv", "ls"]));
    assert!(String::from_utf8_lossy(&out.stderr).contains("DEBUG") || out.stderr.is_empty());
}

#[test]
fn rw_rm_of_a_mounted_layer_unmounts_it() {
    testkit::require!(testkit::gate::root("rw mount outside `layerctl unshare`"));
    let layers = three_layers();
    for driver in drivers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let f = dir.path().join("l0.tar");
        std::fs::write(&f, &layers[0]).unwrap();
        let c = ok(run(cmd(&root, driver, &["import", f.to_str().unwrap()])));
        ok(run(cmd(
            &root,
            driver,
            &["rw", "create", "m", "--parent", c.trim()],
        )));
        let path = ok(run(cmd(&root, driver, &["rw", "mount", "m"])));
        // A second mount in another process reuses the first.
        assert_eq!(ok(run(cmd(&root, driver, &["rw", "mount", "m"]))), path);
        let path = path.trim().to_owned();
        assert!(Path::new(&path).join("etc/a.conf").exists());
        if driver == "overlay2" {
            assert!(mounted(&path));
        }
        ok(run(cmd(&root, driver, &["rw", "rm", "m"])));
        assert!(!mounted(&path));
        assert!(!Path::new(&path).exists());
        assert_eq!(
            json(run(cmd(&root, driver, &["--json", "ls"])))
                .as_array()
                .unwrap()
                .len(),
            1
        );
        assert_check_clean(&root, driver);
    }
}

#[test]
fn rm_keeps_a_parent_that_other_layers_still_use() {
    let layers = three_layers();
    for driver in drivers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let f0 = dir.path().join("l0.tar");
        let f1 = dir.path().join("l1.tar");
        let f2 = dir.path().join("l2.tar");
        std::fs::write(&f0, &layers[0]).unwrap();
        std::fs::write(&f1, &layers[1]).unwrap();
        std::fs::write(&f2, &layers[2]).unwrap();
        let base = ok(run(cmd(&root, driver, &["import", f0.to_str().unwrap()])));
        let base = base.trim();
        let a = ok(run(cmd(
            &root,
            driver,
            &["import", "--parent", base, f1.to_str().unwrap()],
        )));
        let b = ok(run(cmd(
            &root,
            driver,
            &["import", "--parent", base, f2.to_str().unwrap()],
        )));
        assert_eq!(
            ok(run(cmd(&root, driver, &["rm", a.trim()]))).trim(),
            a.trim()
        );
        let ls = json(run(cmd(&root, driver, &["--json", "ls"])));
        let mut ids: Vec<&str> = ls
            .as_array()
            .unwrap()
            .iter()
            .map(|l| l["chain_id"].as_str().unwrap())
            .collect();
        ids.sort();
        let mut want = vec![base, b.trim()];
        want.sort();
        assert_eq!(ids, want);
        // The last child takes the now-unused base with it.
        let removed = ok(run(cmd(&root, driver, &["rm", b.trim()])));
        assert_eq!(removed.lines().collect::<Vec<_>>(), [b.trim(), base]);
        assert_check_clean(&root, driver);
    }
}

#[test]
fn oci_layout_dir_blobs_cannot_point_outside() {
    let layers = three_layers();
    let diffs: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let oci = dir.path().join("oci");
    write_oci_dir(&oci, &layers, &diffs);
    // The top layer's blob becomes a symlink to a file outside the layout.
    let outside = dir.path().join("outside.tar");
    std::fs::write(&outside, &layers[2]).unwrap();
    let blob = oci.join("blobs/sha256").join(&sha256(&layers[2])[7..]);
    std::fs::remove_file(&blob).unwrap();
    std::os::unix::fs::symlink(&outside, &blob).unwrap();
    ok(run(cmd(&root, "vfs", &["info"])));
    let before = snapshot(&root);
    let e = fails(run(cmd(&root, "vfs", &["load", oci.to_str().unwrap()])));
    assert!(e.contains("escapes"), "{e}");
    assert_eq!(snapshot(&root), before);
    assert_check_clean(&root, "vfs");
}

/// Runs `c` to completion, or kills it after `limit` and fails: a hang is the bug.
fn run_or_kill(mut c: std::process::Command, limit: std::time::Duration) -> std::process::Output {
    let mut child = c
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn layerctl");
    let start = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > limit {
            child.kill().unwrap();
            let out = child.wait_with_output().unwrap();
            panic!(
                "layerctl still running after {limit:?}: stderr {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// A blob of an OCI layout that is a FIFO (or a device) is refused before it is read, naming
/// the member; opening it must not wait for a writer that never comes.
#[test]
fn oci_layout_fifo_blob_is_refused_not_waited_for() {
    let layers = three_layers();
    let diffs: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let (members, _) = oci_members(&layers, &diffs);
    let config_blob = members
        .iter()
        .find(|(_, data)| data.starts_with(b"{") && data.windows(8).any(|w| w == b"diff_ids"))
        .map(|(name, _)| name.clone())
        .expect("config blob");
    let layer_blob = format!("blobs/sha256/{}", &sha256(&layers[1])[7..]);
    for (what, victim) in [("layer", layer_blob), ("config", config_blob)] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let oci = dir.path().join("oci");
        write_oci_dir(&oci, &layers, &diffs);
        let blob = oci.join(&victim);
        std::fs::remove_file(&blob).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            &blob,
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        ok(run(cmd(&root, "vfs", &["info"])));
        let before = snapshot(&root);
        let out = run_or_kill(
            cmd(&root, "vfs", &["load", oci.to_str().unwrap()]),
            std::time::Duration::from_secs(120),
        );
        let e = fails(out);
        assert!(
            e.contains(&victim) && e.contains("not a regular file but a FIFO"),
            "{what}: {e}"
        );
        assert_eq!(snapshot(&root), before, "{what}");
        assert_check_clean(&root, "vfs");
    }
}

/// A FIFO named on the command line is a stream the user chose (`load <(zcat x.tar.gz)`): it
/// is read as stdin is, waiting for its writer.
#[test]
fn load_reads_a_named_fifo_as_a_stream() {
    let layers = three_layers();
    let diffs: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let archive = docker_save(&layers, &diffs, SaveLayout::Legacy);
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let fifo = dir.path().join("image.fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::write(fifo, archive).unwrap())
    };
    let out = run_or_kill(
        cmd(&root, "vfs", &["load", fifo.to_str().unwrap()]),
        std::time::Duration::from_secs(120),
    );
    ok(out);
    writer.join().unwrap();
    let chains = chain_ids(&diffs);
    let ls = json(run(cmd(&root, "vfs", &["--json", "ls"])));
    assert_eq!(ls.as_array().unwrap().len(), chains.len());
}

/// RW size limits (moby's `size` storage option) need kernel project quotas, which the
/// drivers do not set up: refused with that reason, on `rw create` (with and without an init
/// layer) and as a driver option, leaving nothing behind.
#[test]
fn size_limits_are_refused_naming_project_quotas() {
    for driver in drivers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("r");
        let chain = ok(run_with_stdin(
            cmd(&root, driver, &["import", "-"]),
            &three_layers()[0],
        ));
        let chain = chain.trim();
        let before = snapshot(&root);
        for init in [false, true] {
            let mut args = vec!["rw", "create", "c1", "--parent", chain];
            if init {
                args.push("--init");
            }
            args.extend(["--storage-opt", "size=10G"]);
            let line = fails(run(cmd(&root, driver, &args)));
            assert!(
                line.contains("size") && line.contains("project quotas"),
                "{driver}: {line}"
            );
            assert_eq!(
                snapshot(&root),
                before,
                "{driver} init={init}: nothing left"
            );
        }
        let ls = json(run(cmd(&root, driver, &["--json", "rw", "ls"])));
        assert!(ls.as_array().unwrap().is_empty(), "{driver}: {ls}");
        // A malformed option is a usage error of its own.
        let line = fails(run(cmd(
            &root,
            driver,
            &[
                "rw",
                "create",
                "c1",
                "--parent",
                chain,
                "--storage-opt",
                "size",
            ],
        )));
        assert!(line.contains("--storage-opt"), "{line}");
        assert_check_clean(&root, driver);
    }
    // As a driver option (dockerd's --storage-opt overlay2.size=…).
    if drivers().contains(&"overlay2") {
        let dir = tempfile::tempdir().unwrap();
        let line = fails(run(cmd(
            dir.path(),
            "overlay2",
            &["--storage-opt", "overlay2.size=10G", "info"],
        )));
        assert!(line.contains("project quotas"), "{line}");
    }
}

/// `rw rm` of a mounted RW layer unmounts it also when `--root` is relative or reached
/// through a symlink: the driver compares its mounts with mountinfo's resolved paths (before,
/// it never found them, and `rw rm` failed with EBUSY, keeping everything).
#[test]
fn rw_rm_of_a_mounted_layer_under_a_relative_or_symlinked_root() {
    testkit::require!(testkit::gate::overlay());
    let driver = "overlay2";
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("real")).unwrap();
    std::os::unix::fs::symlink("real", dir.path().join("link")).unwrap();
    let l = dir.path().join("l.tar");
    std::fs::write(&l, &three_layers()[0]).unwrap();
    for root in ["root", "link/root"] {
        let in_dir = |args: &[&str]| {
            let mut c = cmd(Path::new(root), driver, args);
            c.current_dir(dir.path());
            run(c)
        };
        let chain = ok(in_dir(&["import", l.to_str().unwrap()]));
        let chain = chain.trim();
        let mount_id = ok(in_dir(&["rw", "create", "c1", "--parent", chain]));
        let merged = ok(in_dir(&["rw", "mount", "c1"]));
        let merged = dir.path().join(merged.trim());
        assert!(
            mounted(&std::fs::canonicalize(&merged).unwrap().to_string_lossy()),
            "{root}"
        );
        ok(in_dir(&["rw", "rm", "c1"]));
        assert!(!merged.exists(), "{root}");
        let real = std::fs::canonicalize(dir.path().join(root)).unwrap();
        assert!(!real.join("overlay2").join(mount_id.trim()).exists());
        assert_eq!(ok(in_dir(&["rm", chain])).trim(), chain);
        assert_check_clean(&real, driver);
    }
}
