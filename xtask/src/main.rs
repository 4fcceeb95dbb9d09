//! `cargo xtask <job>`: all project automation, in Rust (the rust-analyzer pattern).
//! `cargo xtask help` lists the jobs ([`JOBS`]).

use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail};

mod bench_peers;
mod bench_scale;
mod bench_tarsplit;
mod crash;
mod demo;
mod fuzz;
mod skips;

/// Where testkit's gates append skips (testkit's `gate::SKIP_LOG_ENV`).
const SKIP_LOG_ENV: &str = "LAYERSTORE_SKIP_LOG";

/// Every job with one line each, as `cargo xtask help` prints them.
const JOBS: &[(&str, &str)] = &[
    (
        "test [--quick]",
        "every check CI runs: fmt, clippy, all tests (skips counted and summarised), scale smoke, docs",
    ),
    (
        "demo [--root DIR] ...",
        "the README's main job: load, change, commit and export an embedded image",
    ),
    (
        "crash [ARGS]",
        "crash campaign: layerctl killed at random instants, then check, gc and a leftovers scan",
    ),
    (
        "fuzz [ARGS]",
        "the cargo-fuzz targets (nightly), a time budget each",
    ),
    (
        "bench tarsplit [ARGS]",
        "our tar-split against Go's CLI, side by side",
    ),
    (
        "bench peers [ARGS]",
        "our store against moby's, containers-storage and GNU tar, side by side",
    ),
    (
        "bench scale [ARGS]",
        "how cost grows (files, layers, depth, concurrency), with SVG charts",
    ),
    ("help", "this list"),
];

fn help() {
    println!("usage: cargo xtask <job> [ARGS]\n\njobs:");
    let width = JOBS.iter().map(|(j, _)| j.len()).max().unwrap_or(0);
    for (job, what) in JOBS {
        println!("  {job:<width$}  {what}");
    }
}

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
            help();
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
/// Every step runs even when an earlier one failed (the docs build is always checked); the
/// job fails at the end if any did. Tests that cannot run here are skipped through testkit's
/// gates, which append to a log; one summary line counts them by reason, and under `CI=true`
/// any skip of something CI must have fails the job.
fn test(args: &[String]) -> Result<()> {
    let quick = args.iter().any(|a| a == "--quick");
    let shared = workspace_root().join("../shared");
    if !shared.join("fixtures").is_dir() {
        eprintln!(
            "xtask: warning: {} not found; fixture and peer tests will be skipped (a failure under CI=true)",
            shared.display()
        );
    }
    let mut failed: Vec<String> = Vec::new();
    let mut record = |r: Result<()>| {
        if let Err(e) = r {
            eprintln!("xtask: error: {e:#}");
            failed.push(format!("{e:#}"));
        }
    };
    let mut fmt = cargo();
    fmt.args(["fmt", "--all", "--check"]);
    record(step("fmt", fmt));
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
        record(step("clippy", clippy));
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    std::fs::create_dir_all(&target).context("create the target directory")?;
    let skip_log = target.join("test-skips.log");
    std::fs::write(&skip_log, b"").context("reset the skip log")?;
    let mut t = cargo();
    t.args(["test", "--workspace", "--no-fail-fast"])
        .env(SKIP_LOG_ENV, &skip_log);
    record(step("tests", t));
    let skips = skips::read(&skip_log)?;
    if !quick {
        // The scale bench at the smallest size of every axis (debug binaries, ~1 min): the
        // harness keeps working and every step of ours succeeds; timings are not judged.
        eprintln!("xtask: == bench scale --smoke");
        record(
            bench_scale::run(&[
                "--smoke".to_owned(),
                "--out-dir".to_owned(),
                target.join("bench-scale-smoke").display().to_string(),
                // Inside the target dir: a fixed /tmp path another user ran in is not ours.
                "--scratch".to_owned(),
                target
                    .join("bench-scale-smoke/scratch")
                    .display()
                    .to_string(),
            ])
            .context("bench scale --smoke"),
        );
    }
    if !quick {
        let mut doc = cargo();
        doc.args(["doc", "--workspace", "--no-deps"])
            .env("RUSTDOCFLAGS", "-D warnings");
        record(step("docs", doc));
    }
    // The one summary line, last, where it is seen.
    eprintln!("{}", skips::summary(&skips, &skip_log));
    if std::env::var("CI").as_deref() == Ok("true") {
        let must: Vec<&skips::Skipped> = skips.iter().filter(|s| s.ci_must_have()).collect();
        if !must.is_empty() {
            for s in &must {
                eprintln!(
                    "xtask: CI must run: {} {} ({}: {})",
                    s.binary, s.test, s.reason, s.detail
                );
            }
            failed.push(format!("{} cases skipped that CI must run", must.len()));
        }
    }
    if !failed.is_empty() {
        bail!("{} step(s) failed: {}", failed.len(), failed.join("; "));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    /// Every job `run` dispatches (and every `bench` kind) is listed by `cargo xtask help`,
    /// and every listed job is dispatched: the list is checked against the code, not kept by
    /// hand beside it.
    #[test]
    fn help_lists_every_job_and_only_those() {
        let src = include_str!("main.rs");
        let start = src.find("\nfn run() ").expect("run()");
        let end = start + src[start..].find("\n}\n").expect("end of run()");
        let body = &src[start..end];
        let quoted = |s: &str| -> Option<String> {
            let s = s.trim_start();
            let rest = s.strip_prefix('"')?;
            Some(rest[..rest.find('"')?].to_owned())
        };
        let mut dispatched = Vec::new();
        for line in body.lines() {
            let t = line.trim_start();
            if let Some(name) = quoted(t).filter(|_| t.contains("=>")) {
                if !name.starts_with('-') && name != "bench" {
                    dispatched.push(name);
                }
            } else if let Some(i) = t.find("if what == ") {
                let kind = quoted(&t[i + "if what == ".len()..]).expect("bench kind");
                dispatched.push(format!("bench {kind}"));
            }
        }
        let listed: Vec<String> = super::JOBS
            .iter()
            .map(|(job, _)| {
                job.split(' ')
                    .take_while(|w| !w.starts_with('[') && !w.starts_with('-'))
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect();
        dispatched.sort();
        let mut sorted = listed.clone();
        sorted.sort();
        assert_eq!(dispatched, sorted, "run() dispatches vs. JOBS");
        assert!(
            dispatched.len() >= 8,
            "the scan found the jobs: {dispatched:?}"
        );
    }
}
