//! `cargo xtask <job>`: all project automation, in Rust (the rust-analyzer pattern).
//!
//! Jobs:
//! * `test`: the whole test suite, as CI runs it (fmt, clippy, tests, docs).
//! * `demo`: the README's main job on an embedded default image.
//! * `bench tarsplit`: our tar-split against Go's CLI, side by side.
//! * `bench peers`: our store against moby's, containers-storage and GNU tar, side by side.
//! * `bench scale`: how cost grows (files, layers, chain and tree depth, concurrency), ours
//!   beside moby and GNU tar, with SVG charts.

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

mod bench_peers;
mod bench_scale;
mod bench_tarsplit;
mod crash;
mod demo;
mod dockerd;
mod fuzz;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (job, rest) = args
        .split_first()
        .map(|(j, r)| (j.as_str(), r))
        .unwrap_or(("help", &[]));
    match job {
        "test" => test(rest),
        "demo" => demo::run(rest),
        "crash" => crash::run(rest),
        "fuzz" => fuzz::run(rest),
        "bench" => match rest.split_first() {
            Some((what, rest)) if what == "tarsplit" => bench_tarsplit::run(rest),
            Some((what, rest)) if what == "peers" => bench_peers::run(rest),
            Some((what, rest)) if what == "scale" => bench_scale::run(rest),
            _ => bail!("usage: cargo xtask bench tarsplit|peers|scale [ARGS]"),
        },
        "help" | "--help" | "-h" => {
            println!("usage: cargo xtask <test|bench tarsplit> [ARGS]");
            Ok(())
        }
        other => bail!("unknown job {other:?}; try `cargo xtask help`"),
    }
}

/// The workspace root (xtask lives one level below it).
fn workspace_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask is inside the workspace")
        .to_path_buf()
}

fn cargo() -> Command {
    let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    c.current_dir(workspace_root());
    c
}

fn step(name: &str, mut cmd: Command) -> Result<()> {
    eprintln!("xtask: == {name}: {cmd:?}");
    let status = cmd.status().with_context(|| format!("running {name}"))?;
    if !status.success() {
        bail!("{name} failed ({status})");
    }
    Ok(())
}

/// Runs every check CI runs. `--quick` skips clippy, docs and the scale bench's smoke run.
fn test(args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let shared = workspace_root().join("../shared");
    if !shared.join("fixtures").is_dir() {
        eprintln!(
            "xtask: warning: {} not found; fixture and peer tests will fail",
            shared.display()
        );
    }
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    step("fmt", fmt)?;
    if !quick {
        let mut clippy = cargo();
        clippy.args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]);
        step("clippy", clippy)?;
    }
    let mut t = cargo();
    t.args(["test", "--workspace", "--no-fail-fast"]);
    step("tests", t)?;
    if !quick {
        // The scale bench at the smallest size of every axis (debug binaries, ~1 min): the
        // harness keeps working and every step of ours succeeds; timings are not judged.
        eprintln!("xtask: == bench scale --smoke");
        bench_scale::run(&[
            "--smoke".to_owned(),
            "--out-dir".to_owned(),
            workspace_root()
                .join("target/bench-scale-smoke")
                .display()
                .to_string(),
        ])
        .context("bench scale --smoke")?;
    }
    if !quick {
        let mut doc = cargo();
        doc.args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings");
        step("docs", doc)?;
    }
    Ok(())
}
