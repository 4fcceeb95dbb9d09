//! A private Docker 20.10 daemon (Debian's `docker.io`) for the demo and the benchmark: its
//! own data-root, exec-root, pidfile and socket, no iptables or bridge, its own containerd
//! namespace (`../shared/peers/lib/dockerd.sh` runs it the same way). Stopped by pid when
//! the guard drops, also on error; the containerd it started goes with it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub const DOCKERD: &str = "/usr/sbin/dockerd";
/// Debian's client, by full path (a newer CLI may be first in PATH).
pub const DOCKER: &str = "/usr/bin/docker";

/// Why no private dockerd can run here, if it cannot.
pub fn unavailable() -> Option<String> {
    let root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    if !root {
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
pub struct Dockerd {
    dir: PathBuf,
    child: Option<Child>,
}

impl Dockerd {
    /// Starts dockerd on `root` with `driver`, its state under `dir`; waits for the API.
    pub fn start(dir: &Path, root: &Path, driver: &str) -> Result<Dockerd> {
        std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        let log = std::fs::File::create(dir.join("dockerd.log"))?;
        let child = Command::new(DOCKERD)
            .arg("--data-root")
            .arg(root)
            .arg("--exec-root")
            .arg(dir.join("exec"))
            .arg("--pidfile")
            .arg(dir.join("dockerd.pid"))
            .arg("-H")
            .arg(format!("unix://{}", dir.join("docker.sock").display()))
            .args(["--storage-driver", driver])
            .args([
                "--iptables=false",
                "--ip6tables=false",
                "--bridge=none",
                "--ip-masq=false",
                "--userland-proxy=false",
            ])
            .args(["--containerd-namespace", "layerctl-xtask"])
            .args(["--containerd-plugins-namespace", "layerctl-xtask-plugins"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("start dockerd")?;
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
            if let Some(status) = d.child.as_mut().expect("running").try_wait()? {
                bail!("dockerd exited ({status}):\n{}", d.log_tail());
            }
            if started.elapsed() > Duration::from_secs(60) {
                bail!("dockerd did not come up:\n{}", d.log_tail());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
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

    /// Runs the client; its stdout, or an error with its stderr.
    pub fn out(&self, args: &[&str]) -> Result<String> {
        let o: Output = self.cmd(args).output().context("run docker")?;
        if !o.status.success() {
            bail!(
                "docker {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&o.stdout).into_owned())
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Stops the daemon and what it left.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let containerd = std::fs::read_to_string(self.dir.join("exec/containerd/containerd.pid"))
            .ok()
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty());
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        let started = Instant::now();
        while child.try_wait().ok().flatten().is_none() {
            if started.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                let _ = child.wait();
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if let Some(pid) = containerd {
            let alive = || {
                std::fs::read_to_string(format!("/proc/{pid}/comm"))
                    .is_ok_and(|c| c.trim() == "containerd")
            };
            let started = Instant::now();
            while alive() && started.elapsed() < Duration::from_secs(10) {
                std::thread::sleep(Duration::from_millis(100));
            }
            if alive() {
                let _ = Command::new("kill").args(["-KILL", &pid]).status();
            }
        }
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let mut points: Vec<&str> = mounts
            .lines()
            .filter_map(|l| l.split_whitespace().nth(1))
            .filter(|m| Path::new(m).starts_with(&self.dir))
            .collect();
        points.sort_by_key(|m| std::cmp::Reverse(m.len()));
        for m in points {
            let _ = Command::new("umount").arg("-l").arg(m).status();
        }
    }
}

impl Drop for Dockerd {
    fn drop(&mut self) {
        self.shutdown();
    }
}
