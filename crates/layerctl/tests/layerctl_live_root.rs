//! Commands that write refuse a data-root another engine uses, proven with a real Docker 20.10
//! daemon running a container on the root: `gc`, `rm`, `check --repair`, `import`, `rw` and
//! `rmi` are refused with an error that names the daemon and says to stop it, and leave the
//! root as it was; reading commands work; `--force` overrides; once the daemon is stopped,
//! everything works again. Each way a daemon shows is proven on its own with a real daemon:
//! its command line (`--data-root`, `-g`, `--graph=` relative to its working directory), its
//! default pidfile on the default root (a daemon under another name, in a private mount
//! namespace, which only the pidfile reveals), and the mounts of a container a stopped
//! `--live-restore` daemon left running. A foreign mount alone is refused, and
//! `layerctl rw mount`'s own mounts are not. A stale pidfile refuses nothing. `gc` goes on
//! past what it cannot remove and exits 1.
//!
//! Skipped with a message without root or dockerd, except under `CI=true`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use testkit::dockerd::{self, Dockerd};
use testkit::image::*;
use testkit::layerctl::*;

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

/// A write-set as an interrupted `docker load` leaves it: what `gc` would take for garbage.
fn plant_write_set(root: &Path, driver: &str, n: u32) -> PathBuf {
    let ws = root.join(format!("image/{driver}/layerdb/tmp/write-set-{n}"));
    std::fs::create_dir_all(&ws).unwrap();
    ws
}

/// dockerd 20.10 still takes `-g` and `--graph` (hidden) for `--data-root`; a real daemon
/// started with `-g ROOT`, and one with `--graph=root` relative to its working directory,
/// makes writing commands refuse the root, naming the daemon and the flag, and leave a
/// write-set alone; once the daemon is stopped, gc collects it.
#[test]
fn dockerd_started_with_g_or_graph_is_found() {
    if dockerd::unavailable().is_some() {
        return; // recorded by testkit's dockerd gate
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let l = dir.path().join("l.tar");
    std::fs::write(&l, &three_layers()[0]).unwrap();
    ok(layerctl(
        &root,
        &["--driver", "vfs", "import", l.to_str().unwrap()],
    ));
    let cases = [
        (
            vec!["-g".to_owned(), root.display().to_string()],
            format!("-g {}", root.display()),
        ),
        (vec!["--graph=root".to_owned()], "--graph root".to_owned()),
    ];
    for (i, (flag, how)) in cases.iter().enumerate() {
        let state = dir.path().join(format!("d{i}"));
        let mut c = std::process::Command::new(dockerd::DOCKERD);
        c.current_dir(dir.path())
            .args(flag)
            .arg("--pidfile")
            .arg(state.join("dockerd.pid"))
            .args(Dockerd::flags(&state, "vfs"));
        let d = Dockerd::launch(&state, c);
        let ws = plant_write_set(&root, "vfs", 7);
        for args in [vec!["gc"], vec!["check", "--repair"]] {
            let err = fails(layerctl(&root, &args));
            assert!(
                err.contains(&format!("dockerd (pid {}) runs on it ({how})", d.pid()))
                    && err.contains("Stop the daemon")
                    && err.contains("--force"),
                "{flag:?} {args:?}: {err}"
            );
        }
        assert!(ws.exists(), "{flag:?}: the refused gc removed nothing");
        d.stop();
        let gc = ok(layerctl(&root, &["gc"]));
        assert!(gc.contains("write-set-7"), "{flag:?}: {gc}");
    }
}

/// Docker's default pidfile with a real daemon. In a private mount namespace where
/// `/var/lib/docker` is the scratch root and `/run` a tmpfs, dockerd runs with no flag that
/// names its root or its pidfile (its defaults: `/var/lib/docker`, `/var/run/docker.pid`);
/// layerctl runs in the daemon's namespace (`nsenter`). Started as `dockerd`, it is found as
/// an engine on its default root. Started under another name (a renamed or wrapped binary:
/// /proc's cmdline does not say it is dockerd) only its pidfile shows it, and that is enough:
/// writing commands are refused naming the pidfile and the daemon's pid; reading ones run;
/// `--force` writes.
#[test]
fn a_real_dockerd_on_the_default_root_is_found_by_its_pidfile() {
    if dockerd::unavailable().is_some() {
        return; // recorded by testkit's dockerd gate
    }
    testkit::require!(testkit::gate::tool("unshare", "util-linux"));
    testkit::require!(testkit::gate::tool("nsenter", "util-linux"));
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let l = dir.path().join("l.tar");
    std::fs::write(&l, &three_layers()[0]).unwrap();
    ok(layerctl(
        &root,
        &["--driver", "vfs", "import", l.to_str().unwrap()],
    ));
    let script = r#"set -e
mount -t tmpfs tmpfs /var/lib
mkdir /var/lib/docker
mount --bind "$ROOT" /var/lib/docker
mount -t tmpfs tmpfs /run
exec -a "$NAME" "$@""#;
    for name in ["dockerd", "engine-under-test"] {
        let state = dir.path().join(name);
        std::fs::create_dir_all(&state).unwrap();
        // Not the host's /etc/docker/daemon.json: it could name another data-root.
        let config = state.join("daemon.json");
        std::fs::write(&config, "{}").unwrap();
        let mut c = std::process::Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "bash", "-c", script])
            .arg("bash")
            .arg(dockerd::DOCKERD)
            .arg("--config-file")
            .arg(&config)
            .args(Dockerd::flags(&state, "vfs"))
            .env("ROOT", &root)
            .env("NAME", name);
        let d = Dockerd::launch(&state, c);
        let pid = d.pid();
        let in_ns = |args: &[&str]| {
            let mut c = std::process::Command::new("nsenter");
            c.arg("--target")
                .arg(pid.to_string())
                .arg("--mount")
                .arg("--")
                .arg(env!("CARGO_BIN_EXE_layerctl"))
                .arg("--root")
                .arg(&root)
                .args(args)
                .env_remove("LAYERCTL_ROOT");
            run(c)
        };
        let pidfile = ok(in_ns_cat(pid, "/var/run/docker.pid"));
        assert_eq!(
            pidfile.trim(),
            pid.to_string(),
            "{name}: dockerd's own pidfile"
        );
        let ws = plant_write_set(&root, "vfs", 8);
        let expect = if name == "dockerd" {
            format!("dockerd (pid {pid}) runs on it (default data-root)")
        } else {
            format!("/var/run/docker.pid names running process {pid}")
        };
        for args in [vec!["gc"], vec!["rw", "create", "c9"]] {
            let err = fails(in_ns(&args));
            assert!(
                err.contains(&expect) && err.contains("Stop the daemon") && err.contains("--force"),
                "{name} {args:?}: {err}"
            );
        }
        assert!(ws.exists(), "{name}: the refused gc removed nothing");
        ok(in_ns(&["ls"]));
        let gc = ok(in_ns(&["--force", "gc"]));
        assert!(gc.contains("write-set-8"), "{name}: --force writes: {gc}");
        d.stop();
    }
}

/// `cat PATH` in the mount namespace of process `pid`.
fn in_ns_cat(pid: u32, path: &str) -> std::process::Output {
    let mut c = std::process::Command::new("nsenter");
    c.arg("--target")
        .arg(pid.to_string())
        .arg("--mount")
        .args(["--", "cat", path]);
    run(c)
}

/// Kills a container a stopped `--live-restore` daemon left running (its init process and
/// its shim, by pid, only while they are still those processes) and unmounts whatever is
/// left under the root (its overlay mount, the root's own bind mount that dockerd keeps
/// under live-restore), even when the test failed half-way.
struct LeftRunning {
    init: u32,
    root: PathBuf,
}

impl Drop for LeftRunning {
    fn drop(&mut self) {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.init)).unwrap_or_default();
        let shim = stat
            .rsplit_once(") ")
            .and_then(|(_, rest)| rest.split(' ').nth(1))
            .and_then(|p| p.parse::<i32>().ok());
        let comm =
            |pid: i32| std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        // SAFETY: kill(2) on the container's processes, by the pids docker reported, checked
        // against their names just before.
        unsafe {
            if comm(self.init as i32).trim() == "busybox" {
                libc::kill(self.init as i32, libc::SIGKILL);
            }
            if let Some(shim) = shim.filter(|s| comm(*s).starts_with("containerd-shim")) {
                libc::kill(shim, libc::SIGKILL);
            }
        }
        dockerd::unmount_under(&self.root);
    }
}

/// The mounts of containers a daemon left running are enough on their own. With
/// `--live-restore`, a stopped dockerd leaves its containers running (no engine process
/// uses the root any more: its containerd is gone too, only the container's shim is left);
/// writing commands are still refused, naming the container's overlay mount and no
/// process, and change nothing; `--force gc` leaves the container's layers (its mount
/// record names them). A daemon started again takes the container back and removes it;
/// then the root is free.
#[test]
fn a_live_restored_container_keeps_its_root_refused_after_the_daemon_stops() {
    if dockerd::unavailable().is_some() {
        return; // recorded by testkit's dockerd gate
    }
    testkit::require!(testkit::gate::overlay());
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let (archive, _, _) = busybox_image("restored:v1");
    let input = dir.path().join("restored.tar");
    std::fs::write(&input, &archive).unwrap();
    ok(layerctl(
        &root,
        &["--driver", "overlay2", "load", input.to_str().unwrap()],
    ));
    let d = Dockerd::start_with(
        &dir.path().join("d1"),
        &root,
        "overlay2",
        &["--live-restore"],
    );
    d.ok(&[
        "run",
        "-d",
        "--name",
        "restored",
        "--pull",
        "never",
        "--network",
        "none",
        "restored:v1",
        "/bin/busybox",
        "sleep",
        "600",
    ]);
    let init: u32 = d
        .ok(&["inspect", "-f", "{{.State.Pid}}", "restored"])
        .trim()
        .parse()
        .unwrap();
    let _left = LeftRunning {
        init,
        root: root.clone(),
    };
    d.stop();
    assert!(
        Path::new(&format!("/proc/{init}")).exists(),
        "live-restore keeps the container running"
    );
    let ls = json(layerctl(&root, &["--json", "ls"]));
    let top = ls.as_array().unwrap().last().unwrap()["chain_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ws = plant_write_set(&root, "overlay2", 9);
    let before = state(&root, "overlay2");
    for args in [
        vec!["gc"],
        vec!["check", "--repair"],
        vec!["rm", &top],
        vec!["rw", "create", "c2"],
        vec!["rmi", "restored:v1"],
    ] {
        let err = fails(layerctl(&root, &args));
        assert!(
            err.contains("merged is mounted (overlay) and this store did not mount it")
                && !err.contains("(pid ")
                && err.contains("Stop the daemon")
                && err.contains("--force"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(
        state(&root, "overlay2"),
        before,
        "refused commands changed nothing"
    );
    let gc = ok(layerctl(&root, &["--force", "gc"]));
    assert!(gc.contains("write-set-9"), "{gc}");
    assert!(!ws.exists());
    let mut after = state(&root, "overlay2");
    after.insert(PathBuf::from("layerdb/tmp/write-set-9"));
    assert_eq!(after, before, "--force gc took only the write-set");

    // The same state directory: the shim answers on the containerd socket it was given.
    let d = Dockerd::start_with(
        &dir.path().join("d1"),
        &root,
        "overlay2",
        &["--live-restore"],
    );
    assert_eq!(
        d.ok(&["inspect", "-f", "{{.State.Running}}", "restored"])
            .trim(),
        "true",
        "the restarted daemon takes its container back"
    );
    d.ok(&["rm", "-f", "restored"]);
    d.stop();
    ok(layerctl(&root, &["gc"]));
    ok(layerctl(&root, &["check", "--repair"]));
}
