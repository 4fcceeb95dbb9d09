//! A private Docker 20.10 daemon (Debian's `docker.io`) for the tests and for `cargo xtask`'s
//! demo and peer benchmark: its own data-root, exec-root, pidfile and socket, no iptables, no
//! bridge, its own containerd namespace, as `../shared/peers/lib/dockerd.sh` runs it. Never
//! stopped by name: [`Dockerd`]'s `Drop` stops the daemon (and the containerd it started) by
//! pid even when an assertion failed, and unmounts whatever is left under its directory.
//!
//! Tests use the panicking calls ([`Dockerd::start`], [`Dockerd::ok`]) and the counted gate
//! [`unavailable`]; xtask, which reports errors instead, uses [`missing`] (records no skip),
//! [`Dockerd::try_start`] and [`Dockerd::out`].

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

/// Why no private dockerd can run here (not root, or Debian's daemon or client missing), if
/// it cannot. Unlike [`unavailable`] this is not a test gate: it records no skip.
pub fn missing() -> Option<String> {
    if !crate::gate::is_root() {
        Some("not root (dockerd needs root)".into())
    } else if !Path::new(DOCKERD).exists() || !Path::new(DOCKER).exists() {
        Some(format!(
            "{DOCKERD} or {DOCKER} missing (apt-get install docker.io)"
        ))
    } else {
        None
    }
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
        Dockerd::launch(dir, Dockerd::command(dir, root, driver, extra))
    }

    /// [`Dockerd::start`], but a daemon that exits or does not come up within 60 s is an
    /// error (with the tail of its log) instead of a panic.
    pub fn try_start(dir: &Path, root: &Path, driver: &str) -> Result<Dockerd, String> {
        Dockerd::try_launch(dir, Dockerd::command(dir, root, driver, &[]))
    }

    fn command(dir: &Path, root: &Path, driver: &str, extra: &[&str]) -> Command {
        let mut c = Command::new(DOCKERD);
        c.arg("--data-root")
            .arg(root)
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .args(Dockerd::flags(dir, driver))
            .args(extra);
        c
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
    pub fn launch(dir: &Path, command: Command) -> Dockerd {
        Dockerd::try_launch(dir, command).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`Dockerd::launch`], but what goes wrong is an error, not a panic.
    pub fn try_launch(dir: &Path, mut command: Command) -> Result<Dockerd, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
        let log = std::fs::File::create(dir.join("dockerd.log"))
            .and_then(|log| Ok((log.try_clone()?, log)))
            .map_err(|e| format!("create {}: {e}", dir.join("dockerd.log").display()))?;
        let child = command
            .stdin(Stdio::null())
            .stdout(log.0)
            .stderr(log.1)
            .spawn()
            .map_err(|e| format!("start dockerd: {e}"))?;
        let mut d = Dockerd {
            dir: dir.to_owned(),
            child: Some(child),
        };
        let started = Instant::now();
        loop {
            if d.cmd(&["version"])
                .output()
                .is_ok_and(|o| o.status.success())
            {
                return Ok(d);
            }
            match d.child.as_mut().expect("running").try_wait() {
                Ok(Some(status)) => {
                    return Err(format!("dockerd exited ({status}):\n{}", d.log_tail()));
                }
                Ok(None) => {}
                Err(e) => return Err(format!("wait for dockerd: {e}")),
            }
            if started.elapsed() > Duration::from_secs(60) {
                // Dropping `d` stops what did start.
                return Err(format!("dockerd did not come up:\n{}", d.log_tail()));
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

    /// Runs the client; its stdout, or an error with its stderr.
    pub fn out(&self, args: &[&str]) -> Result<String, String> {
        let o = self
            .cmd(args)
            .output()
            .map_err(|e| format!("run {DOCKER}: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "docker {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
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
