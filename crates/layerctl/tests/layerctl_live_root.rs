//! Commands that write refuse a data-root another engine uses, proven with a real Docker 20.10
//! daemon running a container on the root: `gc`, `rm`, `check --repair`, `import`, `rw` and
//! `rmi` are refused with an error that names the daemon and says to stop it, and leave the
//! root as it was; reading commands work; `--force` overrides; once the daemon is stopped,
//! everything works again. A foreign mount alone (what a live-restored container leaves) is
//! refused too, and `layerctl rw mount`'s own mounts are not. Docker's default pidfile guards
//! the default root (in a private mount namespace). `gc` goes on past what it cannot remove
//! and exits 1.
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
    if dockerd::unavailable().is_some() {
        return; // recorded by testkit's dockerd gate
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
    testkit::require!(testkit::gate::root("mounting"));
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

/// `gc` goes on past what it cannot remove, names each failure and exits 1. A tmpfs mounted
/// inside an unnamed driver directory makes its removal fail (EBUSY); that mount is also
/// foreign, so gc first refuses the root, and `--force` runs it: the other garbage (an
/// unnamed directory, a stale write-set) is still collected, the layer stays.
#[test]
fn gc_goes_on_past_a_failure_and_exits_1() {
    testkit::require!(testkit::gate::root("mounting a tmpfs"));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let l = dir.path().join("l.tar");
    std::fs::write(&l, &three_layers()[0]).unwrap();
    let chain = ok(layerctl(
        &root,
        &["--driver", "vfs", "import", l.to_str().unwrap()],
    ));
    let stuck = format!("{:0>64}", "1");
    let gone = format!("{:0>64}", "2");
    for id in [&stuck, &gone] {
        std::fs::create_dir_all(root.join("vfs/dir").join(id).join("m")).unwrap();
    }
    let write_set = root.join("image/vfs/layerdb/tmp/write-set-123456");
    std::fs::create_dir_all(&write_set).unwrap();
    let mnt = root.join("vfs/dir").join(&stuck).join("m");
    rustix::mount::mount(
        "tmpfs",
        &mnt,
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .unwrap();
    let refused = layerctl(&root, &["gc"]);
    let forced = layerctl(&root, &["--force", "gc"]);
    let unmounted = rustix::mount::unmount(&mnt, rustix::mount::UnmountFlags::DETACH);
    let err = fails(refused);
    assert!(err.contains("is mounted (tmpfs)"), "{err}");
    assert_eq!(forced.status.code(), Some(1), "{forced:?}");
    let stdout = String::from_utf8_lossy(&forced.stdout);
    let stderr = String::from_utf8_lossy(&forced.stderr);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with("failed: ") && l.contains(&stuck)),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("removed driver directory {gone}")),
        "{stdout}"
    );
    assert!(
        stderr.contains("gc could not remove 1 item(s)") && stderr.contains(&stuck),
        "{stderr}"
    );
    unmounted.unwrap();
    assert!(!root.join("vfs/dir").join(&gone).exists());
    assert!(!write_set.exists());
    assert!(root.join("vfs/dir").join(&stuck).exists());
    // The next gc finishes it; the layer was never at risk.
    let gc = ok(layerctl(&root, &["gc"]));
    assert!(gc.contains(&stuck), "{gc}");
    let ls = json(layerctl(&root, &["--json", "ls"]));
    assert_eq!(ls[0]["chain_id"].as_str().unwrap(), chain.trim());
    assert_check_clean(&root, "vfs");
}

/// Docker's default pidfile guards the default data-root: with `/var/lib/docker` being the
/// root and `/run/docker.pid` naming a live process, writing commands are refused, naming the
/// pidfile and the pid; a pidfile naming a dead process, or no pidfile, refuses nothing.
/// Proven in a private mount namespace (util-linux `unshare`), where a tmpfs over `/var/lib`
/// and `/run` holds a `docker` directory bound to a scratch root and the pidfile: the host's
/// own paths are never touched.
#[test]
fn dockers_default_pidfile_guards_the_default_root() {
    testkit::require!(testkit::gate::root("a mount namespace"));
    testkit::require!(testkit::gate::tool("unshare", "util-linux"));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let l = dir.path().join("l.tar");
    std::fs::write(&l, &three_layers()[0]).unwrap();
    ok(layerctl(
        &root,
        &["--driver", "vfs", "import", l.to_str().unwrap()],
    ));
    let write_set = root.join("image/vfs/layerdb/tmp/write-set-42");
    let mut live = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let dead = {
        let mut c = std::process::Command::new("true").spawn().unwrap();
        let pid = c.id();
        c.wait().unwrap();
        pid
    };
    // `layerctl ARGS` with /var/lib/docker being the root and /run/docker.pid holding `pid`.
    let as_default_root = |pid: Option<u32>, args: &[&str]| {
        let script = r#"set -e
mount -t tmpfs tmpfs /var/lib
mkdir /var/lib/docker
mount --bind "$ROOT" /var/lib/docker
mount -t tmpfs tmpfs /run
if [ -n "$PIDNR" ]; then echo "$PIDNR" > /run/docker.pid; fi
exec "$@""#;
        let mut c = std::process::Command::new("unshare");
        c.args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(env!("CARGO_BIN_EXE_layerctl"))
        .arg("--root")
        .arg(&root)
        .args(args)
        .env("ROOT", &root)
        .env("PIDNR", pid.map(|p| p.to_string()).unwrap_or_default())
        .env_remove("LAYERCTL_ROOT");
        run(c)
    };
    std::fs::create_dir_all(&write_set).unwrap();
    let refused = as_default_root(Some(live.id()), &["gc"]);
    let forced = as_default_root(Some(live.id()), &["--force", "gc"]);
    let _ = live.kill();
    let _ = live.wait();
    let err = fails(refused);
    assert!(
        err.contains(&format!("docker.pid names running process {}", live.id()))
            && err.contains("Stop the daemon")
            && err.contains("--force"),
        "{err}"
    );
    let gc = ok(forced);
    assert!(gc.contains("write-set-42"), "--force writes anyway: {gc}");
    // Reading is never refused.
    std::fs::create_dir_all(&write_set).unwrap();
    let mut sleeper = std::process::Command::new("sleep")
        .arg("600")
        .spawn()
        .unwrap();
    let listed = as_default_root(Some(sleeper.id()), &["ls"]);
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    ok(listed);
    // A stale pidfile (its process gone) or none: nothing uses the root.
    let gc = ok(as_default_root(Some(dead), &["gc"]));
    assert!(gc.contains("write-set-42"), "{gc}");
    std::fs::create_dir_all(&write_set).unwrap();
    let gc = ok(as_default_root(None, &["gc"]));
    assert!(gc.contains("write-set-42"), "{gc}");
}
