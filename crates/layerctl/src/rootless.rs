//! Rootless: an unprivileged user runs every command inside a user and mount namespace of
//! its own, as rootless Podman does, so overlay2 works (overlayfs with `userxattr`, opaque
//! directories as `user.overlay.opaque`, whiteouts as char 0/0 devices) and files keep their
//! owners.
//!
//! How a command runs: the process (the *parent*) re-executes itself (`/proc/self/exe`, same
//! arguments); the *child* unshares a user and a mount namespace first thing in `main`, while
//! it has one thread, and waits; the parent writes its ID maps and lets it go; the child then
//! runs the command as root of that namespace, and the parent waits and exits with its status.
//! The child dies with the parent (`PR_SET_PDEATHSIG`), so killing `layerctl` kills the work
//! too. The maps, as rootless Docker and Podman make them:
//!
//! * container 0 is the user's own UID (GID), and 1.. are the user's ranges in `/etc/subuid`
//!   (`/etc/subgid`), one after another, written by the setuid `newuidmap`/`newgidmap`
//!   (Debian's `uidmap` package);
//! * without ranges (or without those tools) the namespace maps the user's own ID alone, with a
//!   warning: no other owner can be set there, so the applier records owners in
//!   `user.containers.override_stat` (see `layer_archive::override_stat`) and exports come from
//!   the tar-split metadata as always, byte-identical;
//! * where no user namespace can be made at all, the command runs as it is (vfs, owners not
//!   set) and says why.
//!
//! The namespace lives as long as the command. `layerctl unshare -- CMD` runs `CMD` in one (as
//! `podman unshare`), with `LAYERCTL_ROOT` set to the store's root; `layerctl` run inside it
//! works in that namespace, so the path `rw mount` prints is usable there. Outside, `rw mount`
//! refuses and says to use `unshare`.

use std::ffi::OsString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context as _, Result, bail};
use layer_archive::idmap::{SubIdFile, SubIdRange, parse_subid_ranges};

use crate::users::{Key, lookup_user};

/// Set in a process that runs in layerctl's namespace (and inherited by what it runs).
pub const ENV_IN_NAMESPACE: &str = "_LAYERCTL_USERNS";
/// Set for the child only: `<read fd>,<write fd>,<parent pid>` of its sync pipes.
const ENV_SYNC: &str = "_LAYERCTL_USERNS_SYNC";
/// The child's exit status when it could not make its namespace (the parent then says why).
const EXIT_NO_NAMESPACE: i32 = 125;

/// Whether this process must move into a user namespace before touching a store: it is not
/// root, and not in layerctl's namespace already.
pub fn needed() -> bool {
    !rustix::process::geteuid().is_root()
}

/// Whether this process runs in the namespace layerctl made for it.
pub fn in_our_namespace() -> bool {
    std::env::var_os(ENV_IN_NAMESPACE).is_some() && layer_archive::owners::in_user_namespace()
}

/// First thing in `main`: a re-executed child unshares its namespaces and waits for its maps.
/// Returns normally in every other process.
pub fn enter_if_child() {
    let Some(sync) = std::env::var_os(ENV_SYNC) else {
        return;
    };
    // SAFETY: called first thing in main, before any other thread exists.
    unsafe { std::env::remove_var(ENV_SYNC) };
    let fields: Vec<i32> = sync
        .to_string_lossy()
        .split(',')
        .filter_map(|f| f.parse().ok())
        .collect();
    let [rfd, wfd, parent] = fields[..] else {
        eprintln!("error: malformed {ENV_SYNC}");
        std::process::exit(EXIT_NO_NAMESPACE);
    };
    // SAFETY: the parent passed these two descriptors open, for us alone.
    let (mut from_parent, mut to_parent) = unsafe {
        (
            std::fs::File::from(OwnedFd::from_raw_fd(rfd)),
            std::fs::File::from(OwnedFd::from_raw_fd(wfd)),
        )
    };
    // SAFETY: single-threaded; no file descriptor table is unshared.
    let unshared = unsafe {
        rustix::thread::unshare_unsafe(
            rustix::thread::UnshareFlags::NEWUSER | rustix::thread::UnshareFlags::NEWNS,
        )
    };
    if let Err(e) = unshared {
        let _ = write!(to_parent, "e{e}");
        std::process::exit(EXIT_NO_NAMESPACE);
    }
    // Die with the parent, also if it died before the flag was set.
    let _ = rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL));
    if rustix::process::getppid().map(|p| p.as_raw_nonzero().get()) != Some(parent) {
        std::process::exit(EXIT_NO_NAMESPACE);
    }
    if to_parent.write_all(b"u").is_err() {
        std::process::exit(EXIT_NO_NAMESPACE);
    }
    let mut go = [0u8; 1];
    if from_parent.read_exact(&mut go).is_err() || go[0] != b'g' {
        std::process::exit(EXIT_NO_NAMESPACE);
    }
    // Supplementary groups of the host mean nothing here (they show as nogroup); newgidmap
    // allows dropping them, a single-ID map does not (setgroups is denied there).
    let _ = rustix::thread::set_thread_groups(&[]);
    // Our mounts stay ours: nothing propagates out of a namespace like this one anyway, but
    // nothing should come in either.
    if let Err(e) = rustix::mount::mount_change(
        "/",
        rustix::mount::MountPropagationFlags::PRIVATE | rustix::mount::MountPropagationFlags::REC,
    ) {
        tracing::debug!("making / private in the mount namespace: {e}");
    }
    // SAFETY: still single-threaded.
    unsafe { std::env::set_var(ENV_IN_NAMESPACE, "1") };
}

/// How the namespace's IDs are mapped.
#[derive(Debug)]
enum Plan {
    /// 0 → the user, 1.. → the subordinate ranges, through newuidmap/newgidmap.
    Subordinate {
        newuidmap: PathBuf,
        newgidmap: PathBuf,
        uids: Vec<SubIdRange>,
        gids: Vec<SubIdRange>,
    },
    /// 0 → the user alone; why there is nothing more.
    Single(String),
}

fn plan() -> Plan {
    let uid = rustix::process::geteuid().as_raw();
    let user = match lookup_user(Key::Id(uid)) {
        Ok(u) => u.name,
        Err(_) => return Plan::Single(format!("uid {uid} has no passwd entry")),
    };
    let ranges = |path: &str| -> Vec<SubIdRange> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let file = SubIdFile { path, text: &text };
        // newuidmap accepts a line naming the user or its UID.
        let by_name = parse_subid_ranges(&file, &user).unwrap_or_default();
        if by_name.is_empty() {
            parse_subid_ranges(&file, &uid.to_string()).unwrap_or_default()
        } else {
            by_name
        }
    };
    let (uids, gids) = (ranges("/etc/subuid"), ranges("/etc/subgid"));
    if uids.is_empty() || gids.is_empty() {
        return Plan::Single(format!(
            "no subordinate IDs for {user} in /etc/subuid and /etc/subgid"
        ));
    }
    match (find_tool("newuidmap"), find_tool("newgidmap")) {
        (Some(newuidmap), Some(newgidmap)) => Plan::Subordinate {
            newuidmap,
            newgidmap,
            uids,
            gids,
        },
        _ => Plan::Single("newuidmap/newgidmap are not installed (Debian: uidmap)".into()),
    }
}

fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin".into(), "/usr/sbin".into(), "/bin".into()])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `0 <own> 1 1 <start> <len> …` for newuidmap/newgidmap.
fn map_args(own: u32, ranges: &[SubIdRange]) -> Vec<String> {
    let mut args = vec!["0".to_string(), own.to_string(), "1".to_string()];
    let mut next: u64 = 1;
    for r in ranges {
        let room = (1u64 << 32) - 1 - next;
        let len = u64::from(r.length).min(room);
        if len == 0 {
            break;
        }
        args.extend([next.to_string(), r.start.to_string(), len.to_string()]);
        next += len;
    }
    args
}

/// Why a command runs without a namespace.
#[derive(Debug)]
pub struct Unavailable(pub String);

/// Runs this same command line again in a new user and mount namespace and returns its exit
/// status; `Err(Unavailable)` when no namespace could be made (nothing was run then).
pub fn run_in_namespace() -> Result<std::result::Result<ExitCode, Unavailable>> {
    let plan = plan();
    let (child_read, parent_write) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).context("pipe")?;
    let (parent_read, child_write) =
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).context("pipe")?;
    let (cr, cw) = (child_read.as_raw_fd(), child_write.as_raw_fd());
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| OsString::from("layerctl"));
    let mut cmd = Command::new("/proc/self/exe");
    cmd.arg0(arg0)
        .args(args)
        .env(ENV_SYNC, format!("{cr},{cw},{}", std::process::id()));
    // SAFETY: only async-signal-safe calls (fcntl, prctl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            for fd in [cr, cw] {
                let fd = std::os::fd::BorrowedFd::borrow_raw(fd);
                rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty())?;
            }
            rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("start layerctl in a user namespace")?;
    drop((child_read, child_write));
    let mut from_child = std::fs::File::from(parent_read);
    let mut to_child = std::fs::File::from(parent_write);
    let mut first = Vec::new();
    let _ = (&mut from_child).take(1).read_to_end(&mut first);
    if first.as_slice() != b"u" {
        let mut why = String::new();
        let _ = from_child.read_to_string(&mut why);
        let status = child.wait().context("wait for layerctl")?;
        if first.as_slice() == b"e" || status.code() == Some(EXIT_NO_NAMESPACE) {
            let why = if why.is_empty() {
                "the namespaced process exited before it was set up".to_string()
            } else {
                why
            };
            return Ok(Err(Unavailable(format!("unshare: {why}"))));
        }
        return Ok(Ok(exit_code(status)));
    }
    let pid = child.id();
    let mapped = match &plan {
        Plan::Subordinate {
            newuidmap,
            newgidmap,
            uids,
            gids,
        } => {
            let uid = rustix::process::geteuid().as_raw();
            let gid = rustix::process::getegid().as_raw();
            let tool = |bin: &Path, args: Vec<String>| -> std::result::Result<(), String> {
                let out = Command::new(bin)
                    .arg(pid.to_string())
                    .args(args)
                    .output()
                    .map_err(|e| format!("{}: {e}", bin.display()))?;
                if out.status.success() {
                    Ok(())
                } else {
                    Err(format!(
                        "{}: {}",
                        bin.display(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ))
                }
            };
            tool(newuidmap, map_args(uid, uids)).and_then(|()| tool(newgidmap, map_args(gid, gids)))
        }
        Plan::Single(_) => Err(String::new()),
    };
    if let Err(failure) = mapped {
        let why = match &plan {
            Plan::Single(why) => why.clone(),
            Plan::Subordinate { .. } => failure,
        };
        if let Err(e) = write_single_maps(pid) {
            let _ = to_child.write_all(b"x");
            let _ = child.wait();
            return Ok(Err(Unavailable(format!("writing its ID map: {e}"))));
        }
        eprintln!(
            "warning: rootless: {why}: a user namespace with your own ID only; owners other than root are kept in user.containers.override_stat xattrs and in each layer's tar-split metadata"
        );
    }
    to_child
        .write_all(b"g")
        .context("start the namespaced layerctl")?;
    drop(to_child);
    let status = child.wait().context("wait for layerctl")?;
    Ok(Ok(exit_code(status)))
}

/// The single-ID maps an unprivileged process may write for its child: its own IDs as 0.
fn write_single_maps(pid: u32) -> std::io::Result<()> {
    let uid = rustix::process::geteuid().as_raw();
    let gid = rustix::process::getegid().as_raw();
    std::fs::write(format!("/proc/{pid}/setgroups"), "deny")?;
    std::fs::write(format!("/proc/{pid}/gid_map"), format!("0 {gid} 1\n"))?;
    std::fs::write(format!("/proc/{pid}/uid_map"), format!("0 {uid} 1\n"))
}

fn exit_code(status: std::process::ExitStatus) -> ExitCode {
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        (None, Some(sig)) => ExitCode::from(128u8.saturating_add(sig as u8)),
        _ => ExitCode::FAILURE,
    }
}

/// `layerctl unshare -- CMD [ARGS]`: runs `CMD` (default `$SHELL`, else `/bin/sh`) in this
/// process's namespace, with `LAYERCTL_ROOT` set to `root`. Returns only on failure.
pub fn exec(root: &Path, command: &[OsString]) -> anyhow::Error {
    let shell = std::env::var_os("SHELL").unwrap_or_else(|| "/bin/sh".into());
    let (program, args) = match command.split_first() {
        Some((p, a)) => (p.clone(), a),
        None => (shell, &[][..]),
    };
    let root = std::path::absolute(root).unwrap_or_else(|_| root.to_path_buf());
    let err = Command::new(&program)
        .args(args)
        .env("LAYERCTL_ROOT", root)
        .exec();
    anyhow::anyhow!("unshare: {}: {err}", Path::new(&program).display())
}

/// Refuses a command that needs to stay in the namespace after layerctl exits.
pub fn refuse_outside(what: &str) -> Result<()> {
    bail!(
        "{what}: unprivileged, layerctl works in a user and mount namespace of its own, and a mount made there is gone when the command ends; run it inside one: layerctl unshare -- sh -c '...'"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_put_the_user_at_0_and_the_ranges_after_it() {
        let r = |start, length| SubIdRange { start, length };
        assert_eq!(
            map_args(1000, &[r(100000, 65536)]),
            ["0", "1000", "1", "1", "100000", "65536"]
        );
        assert_eq!(
            map_args(1000, &[r(100000, 10), r(300000, 5)]),
            ["0", "1000", "1", "1", "100000", "10", "11", "300000", "5"]
        );
    }
}
