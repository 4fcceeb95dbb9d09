//! A private Docker 20.10 daemon (Debian's `docker.io`) for the tests: its own data-root,
//! exec-root, pidfile and socket, no iptables, no bridge, its own containerd namespace, as
//! `../shared/peers/lib/dockerd.sh` runs it. Never stopped by name: [`Dockerd`]'s `Drop`
//! stops the daemon (and the containerd it started) by pid even when an assertion failed,
//! and unmounts whatever is left under its directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Debian's daemon (docker.io 20.10).
pub const DOCKERD: &str = "/usr/sbin/dockerd";
/// Debian's client (a newer CLI may be first in PATH).
pub const DOCKER: &str = "/usr/bin/docker";
/// The static busybox the test images run.
pub const BUSYBOX: &str = "/bin/busybox";

/// Why the dockerd tests cannot run here, if they cannot. Under `CI=true` a missing daemon
/// is a failure (CI installs `docker.io` and `busybox-static`).
pub fn unavailable() -> Option<String> {
    crate::gate::dockerd().err().map(|skip| skip.to_string())
}

/// A running private dockerd.
#[derive(Debug)]
pub struct Dockerd {
    dir: PathBuf,
    child: Option<Child>,
}

impl Dockerd {
    /// Starts dockerd on data-root `root` with `driver`; state (exec-root, socket, log)
    /// lives in `dir`. Waits until the API answers.
    pub fn start(dir: &Path, root: &Path, driver: &str) -> Dockerd {
        Dockerd::start_with(dir, root, driver, &[])
    }

    /// [`Dockerd::start`] with more daemon flags (`--userns-remap USER`).
    pub fn start_with(dir: &Path, root: &Path, driver: &str, extra: &[&str]) -> Dockerd {
        let mut c = Command::new(DOCKERD);
        c.arg("--data-root")
            .arg(root)
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .args(Dockerd::flags(dir, driver))
            .args(extra);
        Dockerd::launch(dir, c)
    }

    /// The flags every test daemon runs with, but for its data-root and pidfile: its
    /// exec-root and socket in `dir`, `driver`, no iptables, no bridge, its own containerd
    /// namespace.
    pub fn flags(dir: &Path, driver: &str) -> Vec<std::ffi::OsString> {
        let mut f: Vec<std::ffi::OsString> = vec!["--exec-root".into(), dir.join("exec").into()];
        f.push("-H".into());
        f.push(format!("unix://{}", dir.join("docker.sock").display()).into());
        for a in [
            "--storage-driver",
            driver,
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            "--ip-masq=false",
            "--userland-proxy=false",
            "--containerd-namespace",
            "layerctl-test",
            "--containerd-plugins-namespace",
            "layerctl-test-plugins",
        ] {
            f.push(a.into());
        }
        f
    }

    /// Runs `command`, a daemon with [`Dockerd::flags`]`(dir, ..)` (or a wrapper that
    /// `exec`s one, so that the child's pid is the daemon's), its output to `dir/dockerd.log`,
    /// and waits until its API answers.
    pub fn launch(dir: &Path, mut command: Command) -> Dockerd {
        std::fs::create_dir_all(dir).unwrap();
        let log = std::fs::File::create(dir.join("dockerd.log")).unwrap();
        let child = command
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("spawn dockerd");
        let mut d = Dockerd {
            dir: dir.to_owned(),
            child: Some(child),
        };
        let started = Instant::now();
        loop {
            if d.docker(&["version"]).status.success() {
                return d;
            }
            if let Some(status) = d.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("dockerd exited ({status}):\n{}", d.log_tail());
            }
            if started.elapsed() > Duration::from_secs(60) {
                panic!("dockerd did not come up:\n{}", d.log_tail());
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    /// The daemon's pid (the child [`Dockerd::launch`] spawned).
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// The client on this daemon.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(DOCKER);
        c.env(
            "DOCKER_HOST",
            format!("unix://{}", self.dir.join("docker.sock").display()),
        )
        .env("DOCKER_CONFIG", self.dir.join("client"))
        .args(args)
        .stdin(Stdio::null());
        c
    }

    /// Runs the client against this daemon and waits for it.
    pub fn docker(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run docker")
    }

    /// Runs the client; its stdout, or a panic with both streams and the daemon's log.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.docker(args);
        assert!(
            out.status.success(),
            "docker {args:?} failed: {}\n{}\ndaemon log:\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log_tail()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    }

    /// Stops the daemon (SIGTERM, then SIGKILL after 60 s) and everything it left.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        // The containerd dockerd supervises: stopped with it, or by pid if dockerd is killed.
        let containerd = std::fs::read_to_string(self.dir.join("exec/containerd/containerd.pid"))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok());
        let pid = child.id() as i32;
        // SAFETY: kill(2) on the pid of a child we spawned and have not reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let started = Instant::now();
        while child.try_wait().ok().flatten().is_none() {
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(c) = containerd {
            let started = Instant::now();
            // SAFETY: kill(2) with signal 0 only asks whether the pid exists.
            while unsafe { libc::kill(c, 0) } == 0 && started.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(100));
            }
            // SAFETY: kill(2) on the containerd our dockerd started, by its own pidfile, and
            // only while that pid is still a containerd.
            unsafe {
                if libc::kill(c, 0) == 0 && is_containerd(c) {
                    libc::kill(c, libc::SIGKILL);
                }
            }
        }
        unmount_under(&self.dir);
    }
}

fn is_containerd(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/comm")).is_ok_and(|c| c.trim() == "containerd")
}

/// Unmounts every mount point under `dir`, deepest first.
pub fn unmount_under(dir: &Path) {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    let mut points: Vec<&str> = mounts
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1))
        .filter(|m| Path::new(m).starts_with(dir))
        .collect();
    points.sort_by_key(|m| std::cmp::Reverse(m.len()));
    for m in points {
        let _ = Command::new("umount").arg("-l").arg(m).status();
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.shutdown();
    }
}
