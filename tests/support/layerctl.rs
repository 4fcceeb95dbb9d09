//! The `layerctl` binary the workspace tests drive, as users run it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// `target/<profile>/layerctl` (`cargo test --workspace` builds it), or `$LAYERCTL_BIN`.
pub fn bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("LAYERCTL_BIN") {
        return PathBuf::from(bin);
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

/// Runs `layerctl --root <root> <args>`.
pub fn run(root: &Path, args: &[&str]) -> Output {
    Command::new(bin())
        .env_remove("LAYERCTL_ROOT")
        .arg("--root")
        .arg(root)
        .args(args)
        .output()
        .expect("run layerctl")
}

/// stdout of a run that must succeed.
pub fn ok(root: &Path, args: &[&str]) -> String {
    let out = run(root, args);
    assert!(
        out.status.success(),
        "layerctl {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// (stdout, stderr) of a run that must fail with exit status 1.
pub fn fails(root: &Path, args: &[&str]) -> (String, String) {
    let out = run(root, args);
    assert_eq!(
        out.status.code(),
        Some(1),
        "layerctl {args:?}: want exit 1: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
