//! Commands that write refuse a data-root another engine uses, proven with a real Docker 20.10
//! daemon running a container on the root: `gc`, `rm`, `check --repair`, `import`, `rw` and
//! `rmi` are refused with an error that names the daemon and says to stop it, and leave the
//! root as it was; reading commands work; `--force` overrides; once the daemon is stopped,
//! everything works again. A foreign mount alone (what a live-restored container leaves) is
//! refused too, and `layerctl rw mount`'s own mounts are not.
//!
//! Skipped with a message without root or dockerd, except under `CI=true`.

mod layerctl_util;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use layerctl_util::dockerd::{self, Dockerd};
use layerctl_util::*;

fn layerctl(root: &Path, args: &[&str]) -> std::process::Output {
    let mut c = bin();
    c.env_remove("LAYERCTL_ROOT")
        .arg("--root")
        .arg(root)
        .args(args);
    run(c)
}

/// Every path under the layerdb and the driver home (what a refused command must not touch).
fn state(root: &Path, driver: &str) -> BTreeSet<PathBuf> {
    let mut all = snapshot(&root.join("image").join(driver));
    all.extend(
        std::fs::read_dir(root.join(driver))
            .unwrap()
            .map(|e| e.unwrap().path()),
    );
    all
}

#[test]
fn writing_commands_refuse_a_root_dockerd_runs_on() {
    if let Some(why) = dockerd::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let driver = if drivers().contains(&"overlay2") {
        "overlay2"
    } else {
        "vfs"
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let (archive, _, layers) = busybox_image("live:v1");
    let input = dir.path().join("live.tar");
    std::fs::write(&input, &archive).unwrap();
    ok(layerctl(
        &root,
        &["--driver", driver, "load", input.to_str().unwrap()],
    ));
    let extra = dir.path().join("extra.tar");
    std::fs::write(&extra, &layers[1]).unwrap();

    let d = Dockerd::start(&dir.path().join("d"), &root, driver);
    let pid = std::fs::read_to_string(dir.path().join("d/dockerd.pid")).unwrap();
    let pid = pid.trim();
    d.ok(&[
        "run",
        "-d",
        "--name",
        "busy",
        "--pull",
        "never",
        "--network",
        "none",
        "live:v1",
        "/bin/busybox",
        "sleep",
        "600",
    ]);
    let ls = json(layerctl(&root, &["--json", "ls"]));
    let top = ls.as_array().unwrap().last().unwrap()["chain_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = state(&root, driver);

    for args in [
        vec!["gc"],
        vec!["check", "--repair"],
        vec!["rm", &top],
        vec!["import", extra.to_str().unwrap()],
        vec!["rw", "create", "c2"],
        vec!["rmi", "live:v1"],
    ] {
        let out = layerctl(&root, &args);
        let err = fails(out);
        assert!(
            err.contains(&format!("dockerd (pid {pid})"))
                && err.contains(root.to_str().unwrap())
                && err.contains("Stop the daemon")
                && err.contains("--force"),
            "{args:?}: {err}"
        );
        if driver == "overlay2" {
            assert!(
                err.contains("merged is mounted (overlay)"),
                "{args:?}: the running container's mount is named too: {err}"
            );
        }
    }
    assert_eq!(
        state(&root, driver),
        before,
        "refused commands changed nothing"
    );

    // Reading works beside the daemon.
    ok(layerctl(&root, &["ls"]));
    ok(layerctl(&root, &["images"]));
    // --force writes anyway; the daemon's container is not touched (it is named by its
    // mount record) and keeps running.
    ok(layerctl(&root, &["--force", "gc"]));
    assert_eq!(
        d.ok(&["inspect", "-f", "{{.State.Running}}", "busy"])
            .trim(),
        "true"
    );
    d.ok(&["rm", "-f", "busy"]);
    d.stop();

    // Stopped: nothing uses the root any more.
    ok(layerctl(&root, &["gc"]));
    ok(layerctl(&root, &["check", "--repair"]));
}

#[test]
fn foreign_mounts_are_refused_and_our_own_are_not() {
    if !rustix_is_root() {
        eprintln!("skipped: mounting needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    for driver in drivers() {
        let root = root.join(driver);
        let l = dir.path().join("l.tar");
        std::fs::write(&l, &three_layers()[0]).unwrap();
        let chain = ok(layerctl(
            &root,
            &["--driver", driver, "import", l.to_str().unwrap()],
        ));
        // Our own mount (it outlives the command) does not make the root "in use".
        ok(layerctl(
            &root,
            &["rw", "create", "c1", "--parent", chain.trim(), "--init"],
        ));
        ok(layerctl(&root, &["rw", "mount", "c1"]));
        ok(layerctl(&root, &["gc"]));
        ok(layerctl(&root, &["rw", "unmount", "c1"]));

        // What a container a daemon left running (live-restore) mounts: refused.
        let shm = root.join("containers/abc/mounts/shm");
        std::fs::create_dir_all(&shm).unwrap();
        rustix::mount::mount(
            "shm",
            &shm,
            "tmpfs",
            rustix::mount::MountFlags::empty(),
            None,
        )
        .unwrap();
        let err = fails(layerctl(&root, &["rw", "rm", "c1"]));
        let result = rustix::mount::unmount(&shm, rustix::mount::UnmountFlags::DETACH);
        assert!(
            err.contains(&format!("{} is mounted (tmpfs)", shm.display())),
            "{driver}: {err}"
        );
        result.unwrap();
        ok(layerctl(&root, &["rw", "rm", "c1"]));
    }
}
