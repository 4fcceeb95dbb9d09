//! Throwaway users for the userns tests: created with `useradd`, given subordinate ID ranges
//! of our choosing (in free space, never touching an existing line), and deleted with them
//! on drop. Root only.
//!
//! Used by layerctl's rootless and remap tests, the workspace's hostile-input suite and
//! `cargo xtask crash` to run as such a user.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

/// useradd/usermod/userdel take a lock on /etc/passwd; one at a time within this process.
static ACCOUNTS: Mutex<()> = Mutex::new(());

/// A user the test created; deleted (with its group and subordinate IDs) on drop.
#[derive(Debug)]
pub struct TestUser {
    /// Its name.
    pub name: String,
    /// Its UID.
    pub uid: u32,
    /// Its primary GID.
    pub gid: u32,
    /// The first host ID of its subordinate UID and GID range, when it has one.
    pub subid_start: Option<u32>,
    /// A directory the user owns (mode 0755), removed on drop.
    pub home: PathBuf,
    /// Created here (and so deleted on drop), not an existing user.
    created: bool,
}

fn run(cmd: &mut Command) -> Result<(), String> {
    // The shadow tools fail when another process holds the lock: retry a few times.
    for attempt in 0..20 {
        let out = cmd.output().map_err(|e| format!("{cmd:?}: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        if !err.contains("lock") || attempt == 19 {
            return Err(format!("{cmd:?}: {}", err.trim()));
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    unreachable!()
}

/// A start for `len` IDs at or above `floor` that no line of /etc/subuid or /etc/subgid
/// touches.
fn free_range(len: u64, floor: u64) -> u64 {
    let mut taken: Vec<(u64, u64)> = Vec::new();
    for file in ["/etc/subuid", "/etc/subgid"] {
        for line in std::fs::read_to_string(file).unwrap_or_default().lines() {
            let f: Vec<&str> = line.trim().split(':').collect();
            if let [_, s, l] = f[..]
                && let (Ok(s), Ok(l)) = (s.parse::<u64>(), l.parse::<u64>())
            {
                taken.push((s, s + l));
            }
        }
    }
    taken.sort_unstable();
    let mut start = floor;
    for (lo, hi) in taken {
        if lo < start + len && start < hi {
            start = hi;
        }
    }
    start
}

impl TestUser {
    /// Creates `<prefix><pid><n>` with `subids` subordinate UIDs and GIDs (none for `None`)
    /// from a free block at or above 2 000 000.
    pub fn create(prefix: &str, subids: Option<u32>) -> TestUser {
        use std::sync::atomic::{AtomicU32, Ordering};
        static N: AtomicU32 = AtomicU32::new(0);
        let _lock = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
        let name = format!(
            "{prefix}{}{}",
            std::process::id() % 100_000,
            N.fetch_add(1, Ordering::Relaxed)
        );
        assert!(name.len() <= 32, "{name}: too long for a user name");
        // No automatic ranges: ours are chosen below.
        run(Command::new("useradd").args([
            "-K",
            "SUB_UID_COUNT=0",
            "-K",
            "SUB_GID_COUNT=0",
            "-M",
            "-U",
            "-s",
            "/bin/sh",
            &name,
        ]))
        .unwrap_or_else(|e| panic!("create test user: {e}"));
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, &name]).output().unwrap();
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        let mut user = TestUser {
            name: name.clone(),
            uid,
            gid,
            subid_start: None,
            home: PathBuf::new(),
            created: true,
        };
        if let Some(len) = subids {
            let start = free_range(u64::from(len), 2_000_000);
            let range = format!("{start}-{}", start + u64::from(len) - 1);
            run(Command::new("usermod").args([
                "--add-subuids",
                &range,
                "--add-subgids",
                &range,
                &name,
            ]))
            .unwrap_or_else(|e| panic!("give {name} subordinate IDs: {e}"));
            user.subid_start = Some(start as u32);
        }
        user.home = own_dir(&name, uid, gid);
        user
    }

    /// An existing user (kept on drop; only the directory made for it goes).
    pub fn existing(name: &str) -> TestUser {
        let id = |flag: &str| -> u32 {
            let out = Command::new("id").args([flag, name]).output().unwrap();
            assert!(out.status.success(), "no user {name}");
            String::from_utf8_lossy(&out.stdout).trim().parse().unwrap()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        let subid_start = std::fs::read_to_string("/etc/subuid")
            .unwrap_or_default()
            .lines()
            .find(|l| l.split(':').next() == Some(name))
            .and_then(|l| l.split(':').nth(1)?.parse().ok());
        TestUser {
            name: name.to_string(),
            uid,
            gid,
            subid_start,
            home: own_dir(name, uid, gid),
            created: false,
        }
    }

    /// A command run as this user (no supplementary groups), `HOME` its directory, with an
    /// environment of its own (PATH, HOME, USER, LOGNAME; no LAYERCTL_* of ours).
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        use std::os::unix::process::CommandExt;
        let mut c = Command::new(program);
        c.uid(self.uid)
            .gid(self.gid)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin")
            .env("HOME", &self.home)
            .env("USER", &self.name)
            .env("LOGNAME", &self.name)
            .current_dir(&self.home);
        c
    }

    /// Copies `src` into the user's directory (readable by them) and returns the copy's path:
    /// the test binary and fixtures may sit where the user cannot reach (a clone under /root).
    ///
    /// `cp` writes the copy, not this process: a test thread holding the copy open for
    /// writing is inherited by every child another thread forks meanwhile, and running the
    /// copy fails with ETXTBSY ("Text file busy") until those children exec (seen once in CI).
    pub fn copy_in(&self, src: &Path) -> PathBuf {
        let dst = self.home.join(src.file_name().unwrap());
        let cp = std::process::Command::new("cp")
            .arg("--")
            .arg(src)
            .arg(&dst)
            .status()
            .unwrap_or_else(|e| panic!("run cp: {e}"));
        assert!(cp.success(), "cp {} {}: {cp}", src.display(), dst.display());
        std::os::unix::fs::chown(&dst, Some(self.uid), Some(self.gid)).unwrap();
        dst
    }
}

/// `<tmp>/layerctl-<name>`, 0755, owned by the user.
fn own_dir(name: &str, uid: u32, gid: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let home = std::env::temp_dir().join(format!("layerctl-{name}"));
    std::fs::create_dir_all(&home).unwrap();
    std::os::unix::fs::chown(&home, Some(uid), Some(gid)).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    home
}

impl Drop for TestUser {
    fn drop(&mut self) {
        let _lock = ACCOUNTS.lock().unwrap_or_else(|p| p.into_inner());
        if !self.created {
            let _ = std::fs::remove_dir_all(&self.home);
            return;
        }
        // Its processes are ours and finished; its files go with its directory. Mounts made
        // in its namespaces died with them.
        let _ = std::fs::remove_dir_all(&self.home);
        // userdel also removes the user's group and any subordinate ranges left.
        if let Err(e) = run(Command::new("userdel").arg(&self.name)) {
            eprintln!("warning: could not delete test user {}: {e}", self.name);
        }
        for file in ["/etc/subuid", "/etc/subgid"] {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            if text
                .lines()
                .any(|l| l.split(':').next() == Some(self.name.as_str()))
            {
                eprintln!("warning: {file} still names test user {}", self.name);
            }
        }
    }
}

pub use crate::gate::is_root;

/// Whether user-creating tests can run: as root with the shadow tools and uidmap. Otherwise
/// testkit records the skip (counted; under CI=true, where they must run, a failure).
pub fn can_create_users(_test: &str) -> bool {
    crate::gate::user_admin().is_ok()
}
