//! `cargo xtask fuzz [--secs N | --runs N] [--asan] [TARGET...]`: runs the cargo-fuzz targets
//! of `fuzz/`.
//!
//! Needs a nightly toolchain and `cargo install cargo-fuzz`; CI does not (it replays the seed
//! corpus on stable in `tests/fuzz_corpus.rs`). Each target runs for `--secs` seconds
//! (default 60) on a working corpus `fuzz/corpus-work/<target>` (git-ignored) seeded from the
//! committed `fuzz/corpus/<target>`, with libFuzzer's memory caps on (`-rss_limit_mb=2048`,
//! and the same cap per single allocation), so input that makes us buffer without bound is a
//! finding like a panic. Crashes land in `fuzz/artifacts/<target>/`; minimise one and copy it
//! into `fuzz/corpus/<target>/` once fixed so CI replays it forever.
//!
//! `--runs N` runs each target for exactly N executions instead (no time limit): how the
//! 10-million-executions figures in RELIABILITY.md were taken.
//!
//! Prints, per target: executions, seconds, executions per second, and how long 10 million
//! executions would take at that rate.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::workspace_root;

/// The targets, as in `fuzz/Cargo.toml` and `tests/fuzz_targets/mod.rs`.
const TARGETS: &[&str] = &[
    "tar_disassemble",
    "tarsplit_json",
    "archive_apply",
    "meta_readers",
    "image_load",
    "tar_differential",
];

pub fn run(args: &[String]) -> Result<()> {
    let mut secs = 60u64;
    let mut runs: Option<u64> = None;
    let mut asan = false;
    let mut targets: Vec<String> = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--secs" => secs = it.next().context("--secs N")?.parse()?,
            "--runs" => runs = Some(it.next().context("--runs N")?.parse()?),
            "--asan" => asan = true,
            t if TARGETS.contains(&t) => targets.push(t.to_owned()),
            other => bail!(
                "unknown argument {other:?}; usage: cargo xtask fuzz [--secs N | --runs N] [--asan] [{}]",
                TARGETS.join("|")
            ),
        }
    }
    if targets.is_empty() {
        targets = TARGETS.iter().map(|t| t.to_string()).collect();
    }
    let nightly = Command::new("cargo")
        .args(["+nightly", "fuzz", "--version"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    if !nightly.is_ok_and(|s| s.success()) {
        bail!(
            "cargo-fuzz on a nightly toolchain is needed: `rustup toolchain install nightly` and \
             `cargo install cargo-fuzz` (CI replays the seed corpus on stable instead)"
        );
    }
    let fuzz_dir = workspace_root().join("fuzz");
    let mut summary = Vec::new();
    for target in &targets {
        let seeds = fuzz_dir.join("corpus").join(target);
        let work = fuzz_dir.join("corpus-work").join(target);
        std::fs::create_dir_all(&work)?;
        copy_new_files(&seeds, &work)?;
        let mut cmd = Command::new("cargo");
        cmd.current_dir(&fuzz_dir)
            .args(["+nightly", "fuzz", "run", target])
            .args(["--sanitizer", if asan { "address" } else { "none" }])
            .arg(&work)
            .args([
                "--",
                &match runs {
                    Some(n) => format!("-runs={n}"),
                    None => format!("-max_total_time={secs}"),
                },
                "-rss_limit_mb=2048",
                "-timeout=60",
                "-print_final_stats=1",
            ])
            .stdout(Stdio::null());
        // libFuzzer's progress goes to a log file one can follow during a long run.
        let logs = fuzz_dir.join("logs");
        std::fs::create_dir_all(&logs)?;
        let log_path = logs.join(format!("{target}.log"));
        cmd.stderr(std::fs::File::create(&log_path)?);
        match runs {
            Some(n) => eprintln!("xtask: == fuzz {target} for {n} executions: {cmd:?}"),
            None => eprintln!("xtask: == fuzz {target} for {secs}s: {cmd:?}"),
        }
        let started = Instant::now();
        let status = cmd
            .status()
            .with_context(|| format!("running cargo fuzz {target}"))?;
        let wall = started.elapsed().as_secs_f64();
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        let stat = |key: &str| -> Option<u64> {
            log.lines()
                .find_map(|l| l.strip_prefix(&format!("stat::{key}:")))
                .and_then(|v| v.trim().parse().ok())
        };
        let execs = stat("number_of_executed_units").unwrap_or(0);
        let rss = stat("peak_rss_mb").unwrap_or(0);
        let fuzz_secs = log
            .lines()
            .rev()
            .find_map(|l| {
                let rest = l.strip_prefix("Done ")?;
                let (_, secs) = rest.split_once(" runs in ")?;
                secs.split_whitespace().next()?.parse::<f64>().ok()
            })
            .unwrap_or(wall);
        let rate = execs as f64 / fuzz_secs.max(1.0);
        let corpus = std::fs::read_dir(&work).map(|d| d.count()).unwrap_or(0);
        let line = format!(
            "fuzz {target}: {execs} execs in {fuzz_secs:.0}s ({rate:.0}/s), peak RSS {rss} MB, \
             corpus {corpus}; 10M execs would take {:.1} h; {}",
            1e7 / rate.max(1e-9) / 3600.0,
            if status.success() {
                "no crash".to_owned()
            } else {
                format!("FAILED ({})", status)
            }
        );
        println!("{line}");
        if !status.success() {
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            for l in tail.into_iter().rev() {
                eprintln!("  {l}");
            }
        }
        summary.push((line, status.success()));
    }
    if summary.iter().any(|(_, ok)| !ok) {
        bail!("a fuzz target failed; see fuzz/artifacts/");
    }
    Ok(())
}

/// Seeds the working corpus with the committed seeds it lacks.
fn copy_new_files(from: &Path, to: &Path) -> Result<()> {
    for entry in std::fs::read_dir(from).with_context(|| from.display().to_string())? {
        let entry = entry?;
        let dest = to.join(entry.file_name());
        if !dest.exists() {
            std::fs::copy(entry.path(), dest)?;
        }
    }
    Ok(())
}
