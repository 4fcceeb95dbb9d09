//! Is another program using a data-root? And the ledger of the mounts this store makes.
//!
//! `layerstore.lock` only keeps two of *our* processes apart. A Docker daemon (or containerd,
//! podman, BuildKit, CRI-O) using the same root knows nothing of it: a gc would take its
//! in-flight write-sets and directories for garbage, an `rm` would delete layers under its
//! running containers. [`live_users`] looks for such a user the ways one shows:
//!
//! * a running engine process whose data-root is this root: `dockerd --data-root`/`-g`/
//!   `--graph` (else `data-root` in its `daemon.json`, else `/var/lib/docker`, or the rootless
//!   default), `containerd`, `buildkitd`, `podman` and `crio` `--root` (else their defaults),
//!   compared by device and inode as the process itself sees the path
//!   (`/proc/<pid>/root/...`), so symlinks, bind mounts and mount namespaces do not hide it;
//! * Docker's default pidfile (`/var/run/docker.pid`) naming a live process, for the default
//!   root (when `/proc` does not show the daemon, e.g. from inside a container);
//! * a mount under the root that this store did not make: the overlay mounts of containers a
//!   daemon runs (they stay when the daemon stops with live-restore), shm and secrets tmpfs,
//!   bind mounts. This store's own mounts are the ones in its ledger, `<root>/layerstore.mounts`
//!   (an ID is added before the driver mounts it, removed once unmounted), and its overlay2
//!   probe directories.
//!
//! Writing commands refuse a root with any such user; reading ones are fine.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// The ledger's file under the data-root.
pub const LEDGER_FILE: &str = "layerstore.mounts";

/// Probe directories the overlay2 driver makes in its home (and may leave mounted if killed).
const PROBE_PREFIX: &str = "check-overlayfs-";

/// One sign that another program uses a data-root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LiveUse {
    /// A running engine whose data-root this is.
    Process {
        /// The process ID.
        pid: u32,
        /// The program (`dockerd`, `containerd`...).
        program: String,
        /// How its root was found (`--data-root /x`, `default /var/lib/docker`...).
        how: String,
    },
    /// A pidfile naming a live process.
    Pidfile {
        /// The pidfile.
        path: PathBuf,
        /// The process ID it names.
        pid: u32,
    },
    /// A mount under the root that this store did not make.
    Mount {
        /// The mount point.
        path: PathBuf,
        /// Its filesystem type.
        fstype: String,
    },
}

impl fmt::Display for LiveUse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LiveUse::Process { pid, program, how } => {
                write!(f, "{program} (pid {pid}) runs on it ({how})")
            }
            LiveUse::Pidfile { path, pid } => {
                write!(f, "{} names running process {pid}", path.display())
            }
            LiveUse::Mount { path, fstype } => write!(
                f,
                "{} is mounted ({fstype}) and this store did not mount it",
                path.display()
            ),
        }
    }
}

/// Device and inode of `path` (following symlinks).
fn identity(path: &Path) -> Option<(u64, u64)> {
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Everything that shows another program using `root` (empty when nothing does). `root`
/// need not exist.
pub fn live_users(root: &Path) -> Vec<LiveUse> {
    let Some(id) = identity(root) else {
        return Vec::new();
    };
    let mut uses = engine_processes(id);
    if identity(Path::new("/var/lib/docker")) == Some(id) {
        for pidfile in ["/var/run/docker.pid", "/run/docker.pid"] {
            let Some(pid) = fs::read_to_string(pidfile)
                .ok()
                .and_then(|s| s.trim().parse::<u32>().ok())
            else {
                continue;
            };
            let seen = uses.iter().any(|u| {
                matches!(u, LiveUse::Process { pid: p, .. } | LiveUse::Pidfile { pid: p, .. } if *p == pid)
            });
            if !seen && pid != std::process::id() && Path::new(&format!("/proc/{pid}")).exists() {
                uses.push(LiveUse::Pidfile {
                    path: pidfile.into(),
                    pid,
                });
            }
        }
    }
    uses.extend(foreign_mounts(root));
    uses
}

/// An engine: its program names, the flags that name its root, and where its root is
/// without them.
struct Engine {
    programs: &'static [&'static str],
    flags: &'static [&'static str],
}

const ENGINES: &[Engine] = &[
    Engine {
        programs: &["dockerd"],
        flags: &["--data-root", "-g", "--graph"],
    },
    Engine {
        programs: &["containerd"],
        flags: &["--root"],
    },
    Engine {
        programs: &["buildkitd"],
        flags: &["--root"],
    },
    Engine {
        programs: &["podman"],
        flags: &["--root"],
    },
    Engine {
        programs: &["crio"],
        flags: &["--root", "-r"],
    },
];

/// The last value of any of `flags` in `args` (Go's flag syntax: `--f v`, `--f=v`, and for a
/// one-letter flag also `-fv`).
fn flag_value(args: &[String], flags: &[&str]) -> Option<(String, String)> {
    let mut found = None;
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        for f in flags {
            if a == f {
                if let Some(v) = args.get(i + 1) {
                    found = Some((f.to_string(), v.clone()));
                    i += 1;
                }
            } else if let Some(v) = a.strip_prefix(&format!("{f}=")) {
                found = Some((f.to_string(), v.to_owned()));
            } else if f.len() == 2 && !f.starts_with("--") && a.starts_with(f) && a.len() > 2 {
                found = Some((f.to_string(), a[2..].to_owned()));
            }
        }
        i += 1;
    }
    found
}

/// Environment variable `name` of process `pid`, if readable.
fn environ(pid: u32, name: &str) -> Option<String> {
    let env = fs::read(format!("/proc/{pid}/environ")).ok()?;
    env.split(|b| *b == 0).find_map(|kv| {
        let kv = std::str::from_utf8(kv).ok()?;
        kv.strip_prefix(name)?.strip_prefix('=').map(str::to_owned)
    })
}

/// Where an engine process keeps its root when no flag says: its config file, then its
/// default.
fn default_root(pid: u32, program: &str, args: &[String]) -> (String, String) {
    let home = environ(pid, "HOME").unwrap_or_else(|| "/root".into());
    let rootless = environ(pid, "ROOTLESSKIT_STATE_DIR").is_some();
    match program {
        "dockerd" => {
            let config = flag_value(args, &["--config-file"])
                .map(|(_, v)| v)
                .unwrap_or_else(|| {
                    if rootless {
                        let base = environ(pid, "XDG_CONFIG_HOME")
                            .unwrap_or_else(|| format!("{home}/.config"));
                        format!("{base}/docker/daemon.json")
                    } else {
                        "/etc/docker/daemon.json".into()
                    }
                });
            let from_config = fs::read(proc_path(pid, Path::new(&config)))
                .ok()
                .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
                .and_then(|v| {
                    ["data-root", "graph"]
                        .iter()
                        .find_map(|k| v.get(k).and_then(|r| r.as_str()).map(str::to_owned))
                });
            match from_config {
                Some(r) => (r, format!("data-root in {config}")),
                None if rootless => {
                    let base = environ(pid, "XDG_DATA_HOME")
                        .unwrap_or_else(|| format!("{home}/.local/share"));
                    (format!("{base}/docker"), "rootless default".into())
                }
                None => ("/var/lib/docker".into(), "default data-root".into()),
            }
        }
        "containerd" => ("/var/lib/containerd".into(), "default root".into()),
        "buildkitd" => ("/var/lib/buildkit".into(), "default root".into()),
        _ if rootless || home != "/root" => (
            format!("{home}/.local/share/containers/storage"),
            "default root".into(),
        ),
        _ => ("/var/lib/containers/storage".into(), "default root".into()),
    }
}

/// `path` as process `pid` sees it (its root directory and, for a relative path, its working
/// directory).
fn proc_path(pid: u32, path: &Path) -> PathBuf {
    let base = if path.is_absolute() {
        PathBuf::from(format!("/proc/{pid}/root"))
    } else {
        PathBuf::from(format!("/proc/{pid}/cwd"))
    };
    base.join(path.strip_prefix("/").unwrap_or(path))
}

/// Engine processes whose root is the directory with identity `root`.
fn engine_processes(root: (u64, u64)) -> Vec<LiveUse> {
    let mut uses = Vec::new();
    let Ok(entries) = fs::read_dir("/proc") else {
        return uses;
    };
    let me = std::process::id();
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(cmdline) = fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let Some(argv0) = args.first() else {
            continue;
        };
        let program = Path::new(argv0)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // `docker daemon` is how dockerd was started before 1.13.
        let program = if program == "docker" && args.get(1).map(String::as_str) == Some("daemon") {
            "dockerd".to_owned()
        } else {
            program
        };
        let Some(engine) = ENGINES
            .iter()
            .find(|e| e.programs.contains(&program.as_str()))
        else {
            continue;
        };
        let (path, how) = match flag_value(&args[1..], engine.flags) {
            Some((flag, v)) => (v.clone(), format!("{flag} {v}")),
            None => default_root(pid, &program, &args[1..]),
        };
        let path = Path::new(&path);
        let seen = identity(&proc_path(pid, path)).or_else(|| identity(path));
        if seen == Some(root) {
            uses.push(LiveUse::Process { pid, program, how });
        }
    }
    uses
}

/// Undoes mountinfo's octal escapes (`\040` is a space).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Mounts strictly under `root` that this store did not make.
fn foreign_mounts(root: &Path) -> Vec<LiveUse> {
    let Ok(root) = fs::canonicalize(root) else {
        return Vec::new();
    };
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut ledgers: BTreeMap<PathBuf, BTreeSet<String>> = BTreeMap::new();
    let mut uses = Vec::new();
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(point) = fields.get(4).map(|f| PathBuf::from(unescape(f))) else {
            continue;
        };
        if point == root || !point.starts_with(&root) {
            continue; // the root itself being a mount point is normal
        }
        // `<store>/<driver>/<id>/merged` with `<id>` in that store's ledger (the store is the
        // data-root, or `<data-root>/<uid>.<gid>` under an ID mapping), or an overlay2 probe.
        let name = |p: &Path| p.file_name().map(|n| n.to_string_lossy().into_owned());
        let made_here = match (point.parent(), name(&point)) {
            (Some(id_dir), Some(last)) if last == "merged" => {
                let store = id_dir.parent().and_then(Path::parent);
                match (store, name(id_dir)) {
                    (Some(store), Some(id)) if store.starts_with(&root) => ledgers
                        .entry(store.to_path_buf())
                        .or_insert_with(|| MountLedger::new(store).ids())
                        .contains(&id),
                    _ => false,
                }
            }
            _ => false,
        } || point
            .ancestors()
            .take_while(|a| *a != root)
            .any(|a| name(a).is_some_and(|n| n.starts_with(PROBE_PREFIX)));
        if !made_here {
            let fstype = fields
                .iter()
                .position(|f| *f == "-")
                .and_then(|i| fields.get(i + 1))
                .unwrap_or(&"?");
            uses.push(LiveUse::Mount {
                path: point,
                fstype: (*fstype).to_owned(),
            });
        }
    }
    uses
}

/// The driver directories this store has mounted or is mounting, in `<root>/layerstore.mounts`
/// (one ID a line): an ID is added before the driver mounts it and removed once it is
/// unmounted, so a mount this store made is always in it, even after a crash. Whatever
/// else is mounted under the root was made by someone else ([`live_users`]).
#[derive(Debug)]
pub(crate) struct MountLedger {
    path: PathBuf,
    lock: Mutex<()>,
}

impl MountLedger {
    pub(crate) fn new(root: &Path) -> MountLedger {
        MountLedger {
            path: root.join(LEDGER_FILE),
            lock: Mutex::new(()),
        }
    }

    fn ids(&self) -> BTreeSet<String> {
        fs::read_to_string(&self.path)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    fn update(&self, f: impl FnOnce(&mut BTreeSet<String>)) -> io::Result<()> {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        let mut ids = self.ids();
        let before = ids.clone();
        f(&mut ids);
        if ids == before {
            return Ok(());
        }
        let tmp = self.path.with_extension("mounts.tmp");
        let mut text = String::new();
        for id in &ids {
            text.push_str(id);
            text.push('\n');
        }
        fs::write(&tmp, text)?;
        fs::rename(&tmp, &self.path)
    }

    /// Records `id` before it is mounted.
    pub(crate) fn add(&self, id: &str) -> io::Result<()> {
        self.update(|ids| {
            ids.insert(id.to_owned());
        })
    }

    /// Whether `id` is recorded as mounted by this store (in this process or an earlier one).
    pub(crate) fn contains(&self, id: &str) -> bool {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.ids().contains(id)
    }

    /// Forgets `id` once it is unmounted (best effort: a stale entry only means a mount of
    /// ours that is gone).
    pub(crate) fn remove(&self, id: &str) {
        if let Err(e) = self.update(|ids| {
            ids.remove(id);
        }) {
            tracing::warn!(id, error = %crate::error::with_causes(&e), "could not update the mount ledger");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_as_go_parses_them() {
        let args = |s: &str| s.split(' ').map(str::to_owned).collect::<Vec<_>>();
        let f = &["--data-root", "-g", "--graph"];
        assert_eq!(
            flag_value(&args("--data-root /a -H x"), f),
            Some(("--data-root".into(), "/a".into()))
        );
        assert_eq!(
            flag_value(&args("--data-root=/b"), f),
            Some(("--data-root".into(), "/b".into()))
        );
        assert_eq!(
            flag_value(&args("-g /c"), f),
            Some(("-g".into(), "/c".into()))
        );
        assert_eq!(
            flag_value(&args("-g/d"), f),
            Some(("-g".into(), "/d".into()))
        );
        assert_eq!(
            flag_value(&args("-g /c --graph=/e"), f),
            Some(("--graph".into(), "/e".into()))
        );
        assert_eq!(flag_value(&args("--debug -H unix:///x"), f), None);
    }

    #[test]
    fn mountinfo_escapes() {
        assert_eq!(unescape("/a\\040b\\011c\\134d"), "/a b\tc\\d");
        assert_eq!(unescape("/plain"), "/plain");
        assert_eq!(unescape("/end\\04"), "/end\\04");
    }

    #[test]
    fn ledger_adds_and_removes() {
        let dir = tempfile::tempdir().unwrap();
        let l = MountLedger::new(dir.path());
        l.add("a").unwrap();
        l.add("b").unwrap();
        l.add("a").unwrap();
        l.remove("a");
        assert_eq!(l.ids().into_iter().collect::<Vec<_>>(), ["b"]);
        assert_eq!(
            fs::read_to_string(dir.path().join(LEDGER_FILE)).unwrap(),
            "b\n"
        );
    }
}
