//! The `layerctl` binary as users run it: find it, run it on a root and driver, judge its
//! exit and output, the drivers it starts on here, and before/after snapshots of a root.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// The `layerctl` binary under test: `$LAYERCTL_BIN`, else `$CARGO_BIN_EXE_layerctl`, else
/// `target/<profile>/layerctl` beside the test executable's `deps/` (`cargo test` builds it
/// for layerstore-cli's tests and, as a dependency, for the workspace's).
pub fn path() -> PathBuf {
    for var in ["LAYERCTL_BIN", "CARGO_BIN_EXE_layerctl"] {
        if let Some(bin) = std::env::var_os(var) {
            return PathBuf::from(bin);
        }
    }
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .join("layerctl");
    assert!(
        bin.is_file(),
        "{} not built: run `cargo build -p layerstore-cli` (cargo test --workspace builds it) or set LAYERCTL_BIN",
        bin.display()
    );
    bin
}

/// A command running [`path`].
pub fn bin() -> Command {
    Command::new(path())
}

/// The binary on a root and driver, quiet, with no inherited `LAYERCTL_ROOT`.
pub fn ctl(root: &Path, driver: &str) -> Command {
    let mut c = bin();
    c.env_remove("LAYERCTL_ROOT")
        .env_remove("RUST_LOG")
        .arg("--root")
        .arg(root)
        .arg("--driver")
        .arg(driver);
    c
}

/// Runs and returns the output (stdin closed).
pub fn run(mut c: Command) -> Output {
    c.stdin(Stdio::null()).output().expect("run layerctl")
}

/// Runs with `input` on stdin.
pub fn run_with_stdin(mut c: Command, input: &[u8]) -> Output {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn layerctl");
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// Asserts success and returns stdout as text.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Asserts exit status 1 with a single `error: …` line on stderr, with no OS error told
/// twice; returns that line.
pub fn fails(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "want exit 1\nstdout: {}\nstderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "want one stderr line, got {stderr:?}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    // The line is the error's chain joined with ": "; no message repeats its cause.
    assert!(
        lines[0].matches("(os error").count() <= 1,
        "a cause is repeated: {stderr}"
    );
    lines[0].to_owned()
}

/// (stdout, stderr) of a run that must fail with exit status 1, whatever it prints.
pub fn fails_verbose(out: Output) -> (String, String) {
    assert_eq!(
        out.status.code(),
        Some(1),
        "want exit 1\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `layerctl --root <root> <args>` on the root's own driver (no `--driver`).
pub fn on_root(root: &Path, args: &[&str]) -> Command {
    let mut c = bin();
    c.env_remove("LAYERCTL_ROOT")
        .env_remove("RUST_LOG")
        .arg("--root")
        .arg(root)
        .args(args);
    c
}

/// stdout parsed as JSON, of a run that must succeed.
pub fn json(out: Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).expect("valid JSON")
}

/// The drivers to test: vfs always; overlay2 as root when the driver starts here (asked of
/// the binary itself, so a not-yet-loaded overlay module still counts). Otherwise the
/// overlay2 variant is a recorded skip (testkit), and under `CI=true` a failure.
pub fn drivers() -> Vec<&'static str> {
    use crate::gate::{Reason, is_root, skip_variant};
    static OVERLAY: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    if !is_root() {
        let _ = skip_variant(
            Some("overlay2"),
            Reason::NotRoot,
            "overlayfs mounts, whiteout devices and trusted.* xattrs need root",
        );
        return vec!["vfs"];
    }
    let overlay = OVERLAY.get_or_init(|| {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut c = ctl(dir.path(), "overlay2");
        c.arg("info");
        let out = run(c);
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    });
    match overlay {
        Ok(()) => vec!["vfs", "overlay2"],
        Err(why) => {
            let _ = skip_variant(
                Some("overlay2"),
                Reason::NoOverlay,
                format!("overlay2 does not start: {why}"),
            );
            vec!["vfs"]
        }
    }
}

/// Every path under a root except the lock file, for before/after comparisons. overlay2's
/// `committed` marker is left out: the driver writes it into a parent when a child is created
/// and, as in moby, keeps it when the child goes. So is the metadata store's own `tmp`
/// directory (made on first use; anything left inside it still shows).
pub fn snapshot(root: &Path) -> BTreeSet<PathBuf> {
    walkdir(root)
        .into_iter()
        .filter(|p| {
            !p.ends_with("layerstore.lock")
                && !p.ends_with("committed")
                && !p.ends_with("layerdb/tmp")
        })
        .map(|p| p.strip_prefix(root).unwrap().to_path_buf())
        .collect()
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let e = e.unwrap();
        let p = e.path();
        out.push(p.clone());
        if e.file_type().unwrap().is_dir() {
            out.extend(walkdir(&p));
        }
    }
    out
}

/// `check` exits 0 and reports ok.
pub fn assert_check_clean(root: &Path, driver: &str) {
    let mut c = ctl(root, driver);
    c.arg("check");
    let out = ok(run(c));
    assert!(out.lines().any(|l| l == "ok"), "{out}");
}
