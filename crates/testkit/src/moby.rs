//! moby 20.10's own layer store as the judge: `../shared/peers/moby-open` (moby's real
//! `layer` package and graph drivers, linked unchanged), built once per target directory with
//! its `build.sh` (offline once Debian's Go packages are installed) and run on a data-root.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The Debian packages `build.sh` needs (CI's `.ci/run` installs them).
const GO_PACKAGES: &[&str] = &[
    "golang-go",
    "golang-github-docker-docker-dev",
    "golang-github-vbatts-tar-split-dev",
    "dpkg-dev",
];

fn peer_dir() -> PathBuf {
    crate::gate::workspace_root().join("../shared/peers/moby-open")
}

/// Why moby-open cannot be built here, if it cannot, recorded as a testkit skip (a failure
/// under `CI=true`, which installs the Go packages).
pub fn unavailable() -> Option<String> {
    use crate::gate::{Reason, skip};
    if let Err(s) = crate::gate::root("moby's overlay2 driver and the fixture") {
        return Some(s.to_string());
    }
    if !peer_dir().join("build.sh").is_file() {
        let s = skip(
            Reason::NoFixtures,
            format!("{} is missing", peer_dir().display()),
        );
        return Some(s.to_string());
    }
    let why = {
        let missing: Vec<&str> = GO_PACKAGES
            .iter()
            .copied()
            .filter(|p| {
                !Command::new("dpkg")
                    .args(["-s", p])
                    .output()
                    .is_ok_and(|o| o.status.success())
            })
            .collect();
        (!missing.is_empty()).then(|| {
            format!(
                "Go packages missing to build moby-open: apt-get install {}",
                missing.join(" ")
            )
        })
    };
    why.map(|why| skip(Reason::NoGo, why).to_string())
}

/// The moby-open binary, built on first use into `target/tmp/moby-open` (serialized across
/// test processes by a lock file; rebuilt when its source is newer).
pub fn binary() -> PathBuf {
    // The test executable is target/<profile>/deps/<name>: cargo's CARGO_TARGET_TMPDIR is
    // target/tmp.
    let exe = std::env::current_exe().expect("test executable path");
    let target = exe
        .ancestors()
        .nth(3)
        .expect("target/<profile>/deps/<test>");
    let dir = target.join("tmp/moby-open");
    std::fs::create_dir_all(&dir).unwrap();
    let lock = std::fs::File::create(dir.join("build.lock")).unwrap();
    lock.lock().unwrap();
    let bin = dir.join("bin/moby-open");
    let source = peer_dir().join("main.go");
    let fresh = |b: &Path| {
        let built = std::fs::metadata(b).and_then(|m| m.modified());
        let src = std::fs::metadata(&source).and_then(|m| m.modified());
        matches!((built, src), (Ok(b), Ok(s)) if b >= s)
    };
    if !fresh(&bin) {
        let out = Command::new("bash")
            .arg(peer_dir().join("build.sh"))
            .arg(&bin)
            .env("MOBY_GOPATH", dir.join("gopath"))
            .env("GOCACHE", dir.join("gocache"))
            .output()
            .expect("run moby-open's build.sh");
        assert!(
            out.status.success() && bin.is_file(),
            "building moby-open failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    bin
}

/// Runs moby-open with `args`; its stdout as JSON (exit 0 or 3: "ran, found problems").
pub fn json(args: &[&str]) -> serde_json::Value {
    let out = Command::new(binary())
        .args(args)
        .output()
        .expect("run moby-open");
    assert!(
        matches!(out.status.code(), Some(0 | 3)),
        "moby-open {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "moby-open {args:?} printed no JSON ({e}):\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// moby's verdict on a whole data-root (`-open`): what it loads and verifies.
pub fn open(root: &Path, driver: &str) -> serde_json::Value {
    json(&["-open", "-root", root.to_str().unwrap(), "-driver", driver])
}
