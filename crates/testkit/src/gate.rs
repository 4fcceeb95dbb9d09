//! Gates: what a test needs from the machine, handed back, or a recorded [`Skip`].
//!
//! A skip is never silent. It is printed once per test and reason on stderr
//! (`skipped: <test>: <reason>: <detail>`) and, when [`SKIP_LOG_ENV`] names a file (as
//! `cargo xtask test` does), appended there as one tab-separated line
//! (`reason \t binary \t test \t detail`) for the run's summary. Under `CI=true` a skip of
//! something CI installs (everything but [`Reason::Lacking`], a kernel or filesystem
//! feature) panics: CI must run every case.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

/// The environment variable naming the file skips are appended to.
pub const SKIP_LOG_ENV: &str = "LAYERSTORE_SKIP_LOG";

/// Why a case does not run here.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Reason {
    /// The case needs root (mknod, chown to other IDs, mounts, trusted.* xattrs).
    NotRoot,
    /// Root, but the kernel has no overlayfs (or it does not start).
    NoOverlay,
    /// No `go` toolchain (Debian: golang-go).
    NoGo,
    /// No Go `tar-split` CLI on PATH (Debian: tar-split).
    NoTarSplit,
    /// No Debian Docker 20.10 daemon and client (Debian: docker.io).
    NoDockerd,
    /// A tool is missing (the name says which).
    NoTool(String),
    /// `../shared/fixtures` is not beside the repository.
    NoFixtures,
    /// The kernel or filesystem lacks a feature (the text says which). Allowed under CI.
    Lacking(String),
}

impl Reason {
    /// The short text the summary groups by.
    pub fn label(&self) -> String {
        match self {
            Reason::NotRoot => "not root".into(),
            Reason::NoOverlay => "no overlayfs".into(),
            Reason::NoGo => "no Go".into(),
            Reason::NoTarSplit => "no Go tar-split".into(),
            Reason::NoDockerd => "no dockerd".into(),
            Reason::NoTool(t) => format!("no {t}"),
            Reason::NoFixtures => "no ../shared fixtures".into(),
            Reason::Lacking(f) => format!("kernel/fs lacks {f}"),
        }
    }

    /// Whether CI (root, `.ci/run`'s packages) must have it: a skip for it fails there.
    pub fn ci_must_have(&self) -> bool {
        !matches!(self, Reason::Lacking(_))
    }
}

/// A case (or one variant of it) that does not run here. Recorded when made.
#[derive(Debug, Clone)]
#[must_use = "a Skip means the case must not go on"]
pub struct Skip {
    /// Why.
    pub reason: Reason,
    /// What exactly is missing, for the message.
    pub detail: String,
}

impl std::fmt::Display for Skip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason.label(), self.detail)
    }
}

/// Whether this is a CI run (`CI=true`).
pub fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// The running test's name: libtest runs each test on a thread named after it.
pub fn current_test() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_owned(),
        _ => "?".to_owned(),
    }
}

fn binary() -> String {
    let exe = std::env::current_exe().ok();
    let stem = exe
        .as_deref()
        .and_then(Path::file_stem)
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    // Cargo names test binaries `<name>-<16 hex>`.
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name.to_owned()
        }
        _ => stem,
    }
}

/// Records a skip of the running test (or of `variant` of it, when given): printed once,
/// logged for the summary, and a panic under `CI=true` when CI must have what is missing.
pub fn skip(reason: Reason, detail: impl Into<String>) -> Skip {
    skip_variant(None, reason, detail)
}

/// [`skip`] for one variant of a test (e.g. its overlay2 run) while the rest runs.
pub fn skip_variant(variant: Option<&str>, reason: Reason, detail: impl Into<String>) -> Skip {
    let detail = detail.into();
    let mut test = current_test();
    if let Some(v) = variant {
        test = format!("{test} [{v}]");
    }
    let label = reason.label();
    if in_ci() && reason.ci_must_have() {
        panic!("CI=true: {test} cannot run here ({label}: {detail}); CI must run every case");
    }
    static SEEN: Mutex<BTreeSet<(String, String)>> = Mutex::new(BTreeSet::new());
    let first = SEEN
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert((test.clone(), label.clone()));
    if first {
        eprintln!("skipped: {test}: {label}: {detail}");
        if let Some(log) = std::env::var_os(SKIP_LOG_ENV) {
            let line = format!(
                "{label}\t{}\t{test}\t{}\n",
                binary(),
                detail.replace(['\t', '\n'], " ")
            );
            // One append of one short line: lines of concurrent tests do not interleave.
            let _ = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .and_then(|mut f| f.write_all(line.as_bytes()));
        }
    }
    Skip { reason, detail }
}

/// Whether this process runs as root (effective UID 0).
pub fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// Root, or a skip saying what needs it (`needs` e.g. "mknod of devices").
pub fn root(needs: &str) -> Result<(), Skip> {
    if is_root() {
        Ok(())
    } else {
        Err(skip(Reason::NotRoot, format!("{needs} needs root")))
    }
}

/// Whether the kernel lists overlay in `/proc/filesystems`.
pub fn overlay_in_proc_filesystems() -> bool {
    std::fs::read_to_string("/proc/filesystems").is_ok_and(|s| {
        s.lines()
            .any(|l| l.split_whitespace().last() == Some("overlay"))
    })
}

/// Root with overlayfs (what the overlay2 driver and overlay whiteouts need).
pub fn overlay() -> Result<(), Skip> {
    overlay_variant(None)
}

/// [`overlay`] for one variant of a test (see [`skip_variant`]).
pub fn overlay_variant(variant: Option<&str>) -> Result<(), Skip> {
    if !is_root() {
        return Err(skip_variant(
            variant,
            Reason::NotRoot,
            "overlayfs mounts, whiteout devices and trusted.* xattrs need root",
        ));
    }
    if !overlay_in_proc_filesystems() {
        return Err(skip_variant(
            variant,
            Reason::NoOverlay,
            "overlay is not in /proc/filesystems (modprobe overlay)",
        ));
    }
    Ok(())
}

/// The drivers a test runs on here: vfs always, overlay2 where [`overlay`] allows (its
/// absence recorded as a skip of the test's `overlay2` variant).
pub fn drivers() -> Vec<&'static str> {
    match overlay_variant(Some("overlay2")) {
        Ok(()) => vec!["vfs", "overlay2"],
        Err(_) => vec!["vfs"],
    }
}

/// The first executable `name` on PATH.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| {
            std::fs::metadata(p).is_ok_and(|m| {
                use std::os::unix::fs::PermissionsExt;
                m.is_file() && m.permissions().mode() & 0o111 != 0
            })
        })
}

/// A tool on PATH (`package` says where Debian has it).
pub fn tool(name: &str, package: &str) -> Result<PathBuf, Skip> {
    on_path(name).ok_or_else(|| {
        skip(
            Reason::NoTool(name.to_owned()),
            format!("`{name}` is not on PATH (Debian: {package})"),
        )
    })
}

/// The Go toolchain (`go` on PATH).
pub fn go() -> Result<PathBuf, Skip> {
    on_path("go").ok_or_else(|| skip(Reason::NoGo, "`go` is not on PATH (Debian: golang-go)"))
}

/// Go's `tar-split` CLI (vbatts/tar-split), the interop peer.
pub fn tar_split() -> Result<PathBuf, Skip> {
    on_path("tar-split").ok_or_else(|| {
        skip(
            Reason::NoTarSplit,
            "Go `tar-split` is not on PATH (Debian: tar-split)",
        )
    })
}

/// Debian's Docker 20.10 daemon and client, and the static busybox test images are made of.
#[derive(Debug, Clone)]
pub struct Docker {
    /// `/usr/sbin/dockerd`.
    pub dockerd: PathBuf,
    /// `/usr/bin/docker` (Debian's client; a newer CLI may be first on PATH).
    pub docker: PathBuf,
    /// `/bin/busybox` (busybox-static).
    pub busybox: PathBuf,
}

/// Root with Debian's dockerd, docker and busybox-static.
pub fn dockerd() -> Result<Docker, Skip> {
    let d = Docker {
        dockerd: "/usr/sbin/dockerd".into(),
        docker: "/usr/bin/docker".into(),
        busybox: "/bin/busybox".into(),
    };
    if !is_root() {
        return Err(skip(Reason::NotRoot, "a private dockerd needs root"));
    }
    if !d.dockerd.exists() || !d.docker.exists() {
        return Err(skip(
            Reason::NoDockerd,
            "/usr/sbin/dockerd or /usr/bin/docker missing (Debian: docker.io)",
        ));
    }
    if !d.busybox.exists() {
        return Err(skip(
            Reason::NoTool("busybox".into()),
            "/bin/busybox missing (Debian: busybox-static)",
        ));
    }
    Ok(d)
}

/// Root with the shadow tools and `newuidmap`: what tests that create users need.
pub fn user_admin() -> Result<(), Skip> {
    root("creating a test user")?;
    for (t, pkg) in [
        ("useradd", "passwd"),
        ("usermod", "passwd"),
        ("userdel", "passwd"),
        ("newuidmap", "uidmap"),
        ("newgidmap", "uidmap"),
    ] {
        tool(t, pkg)?;
    }
    Ok(())
}

/// The workspace root (testkit sits in `crates/testkit`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("crates/testkit is two levels below the workspace")
        .to_path_buf()
}

/// Where `../shared/fixtures` is expected, whether or not it is there (see [`fixtures`]).
pub fn fixtures_dir() -> PathBuf {
    workspace_root().join("../shared/fixtures")
}

/// `../shared/fixtures` beside the repository (CI lays a copy of `shared/` there).
pub fn fixtures() -> Result<PathBuf, Skip> {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(fixtures_dir);
    if dir.is_dir() {
        Ok(dir.clone())
    } else {
        Err(skip(
            Reason::NoFixtures,
            format!("{} not found", dir.display()),
        ))
    }
}

/// A kernel or filesystem feature the test found missing (allowed under CI, still counted).
pub fn lacking(feature: &str, detail: impl Into<String>) -> Skip {
    skip(Reason::Lacking(feature.to_owned()), detail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_the_summary_words() {
        assert_eq!(Reason::NotRoot.label(), "not root");
        assert_eq!(Reason::NoTool("mkfs.ext4".into()).label(), "no mkfs.ext4");
        assert!(!Reason::Lacking("x".into()).ci_must_have());
        assert!(Reason::NoGo.ci_must_have());
    }

    #[test]
    fn the_path_search_finds_sh() {
        assert!(on_path("sh").is_some());
        assert!(on_path("no-such-tool-anywhere").is_none());
    }
}
