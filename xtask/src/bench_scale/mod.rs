//! `cargo xtask bench scale`: how cost grows with size, ours beside the peers, in one run.
//!
//! Five axes (issue #17), each measured at several sizes, every step a process of its own
//! timed for wall seconds and peak RSS (its whole process tree):
//!
//! * `files`: one layer of N files of 1 KiB (10³ … 10⁶). Register, export, check, and after
//!   10 changes in an RW layer on it, `rw changes` and `rw diff`.
//! * `bigfile`: one layer holding one file of N bytes (16 MiB, 256 MiB, 4 GiB). Register,
//!   export, check.
//! * `layers`: a store of N tiny layers (10 … 10⁴, chains of 100). Open, ls, register one
//!   more, gc, check (metadata only).
//! * `chain`: a chain N layers deep (1, 32, 125). Register the top, `rw create --init` +
//!   mount, export the top, changes.
//! * `tree`: one layer N directories deep (16, 256, 2,048; a file in each but the deepest,
//!   whose path is then PATH_MAX long), and the flat tree with the same entry count. Register
//!   and export.
//! * `concurrency`: N registers of different layers at once (1, 2, 4, 8), as threads of one
//!   process and as N separate processes on one root.
//!
//! Peers, wherever they do the same work: moby 20.10's own layer store through
//! `../shared/peers/moby-open` (built on first use when Go is there) and GNU tar (`-x`, `-c`,
//! `-d` for extract, create and compare). Inputs come from a seed; everything runs on a
//! private tmpfs (as root), cleaned between steps. Writes `scale.md` (the machine and a table
//! per axis), `scale.json` (every sample) and `<axis>.svg` into `--out-dir`.
//!
//! Options: `--axis A[,B]` (repeatable; default all), `--max N` / `--min N` (sizes kept; `1e5`,
//! `4g` accepted), `--sizes a,b` (exact sizes), `--runs N` (3), `--smoke` (the smallest size
//! of each axis, one run, debug binaries: what `cargo xtask test` runs), `--out-dir DIR`
//! (`target/bench-scale`), `--scratch DIR`, `--tmpfs-size SIZE` (`14g`), `--no-tmpfs`,
//! `--driver overlay2|vfs`, `--no-moby`, `--seed N`, `--per-layer-files N` (concurrency axis,
//! 10⁴), `--from FILE` (repeatable: no run, the report and charts redrawn from saved
//! `scale.json` files, merged).

mod axes;
mod inputs;
mod measure;
mod report;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{cargo, workspace_root};
use report::Results;

/// What is measured against what.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Axis {
    Files,
    Bigfile,
    Layers,
    Chain,
    Tree,
    Concurrency,
}

impl Axis {
    const ALL: [Axis; 6] = [
        Axis::Files,
        Axis::Bigfile,
        Axis::Layers,
        Axis::Chain,
        Axis::Tree,
        Axis::Concurrency,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Axis::Files => "files",
            Axis::Bigfile => "bigfile",
            Axis::Layers => "layers",
            Axis::Chain => "chain",
            Axis::Tree => "tree",
            Axis::Concurrency => "concurrency",
        }
    }

    pub fn title(self) -> &'static str {
        match self {
            Axis::Files => "Files per layer",
            Axis::Bigfile => "One big file",
            Axis::Layers => "Layers in the store",
            Axis::Chain => "Chain depth",
            Axis::Tree => "Tree depth",
            Axis::Concurrency => "Concurrent registers",
        }
    }

    pub fn unit(self) -> &'static str {
        match self {
            Axis::Files => "files of 1 KiB",
            Axis::Bigfile => "file bytes",
            Axis::Layers => "layers",
            Axis::Chain => "layers deep",
            Axis::Tree => "directories deep",
            Axis::Concurrency => "registers at once",
        }
    }

    /// The sizes.
    fn sizes(self) -> Vec<u64> {
        match self {
            Axis::Files => vec![1_000, 10_000, 100_000, 1_000_000],
            Axis::Bigfile => vec![16 << 20, 256 << 20, 4 << 30],
            Axis::Layers => vec![10, 100, 1_000, 10_000],
            Axis::Chain => vec![1, 32, 125],
            Axis::Tree => vec![16, 256, 2_048],
            Axis::Concurrency => vec![1, 2, 4, 8],
        }
    }

    pub fn fmt_size(self, n: u64) -> String {
        if self == Axis::Bigfile {
            return match n {
                n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{} GiB", n >> 30),
                n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{} MiB", n >> 20),
                n => n.to_string(),
            };
        }
        // Powers of ten as 1e3 … 1e6; anything else as it is.
        let mut k = 0;
        let mut m = n;
        while m >= 10 && m.is_multiple_of(10) {
            m /= 10;
            k += 1;
        }
        if m == 1 && k >= 3 {
            format!("1e{k}")
        } else {
            n.to_string()
        }
    }

    pub fn parse(s: &str) -> Result<Axis> {
        Axis::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .with_context(|| {
                format!("unknown axis {s:?}: files, bigfile, layers, chain, tree, concurrency")
            })
    }
}

/// The options of one run.
#[derive(Debug)]
pub struct Opts {
    pub axes: Vec<Axis>,
    pub min: Option<u64>,
    pub max: Option<u64>,
    pub sizes: Option<Vec<u64>>,
    pub runs: usize,
    pub smoke: bool,
    pub out_dir: PathBuf,
    pub scratch: PathBuf,
    pub tmpfs_size: String,
    pub tmpfs: bool,
    pub driver: String,
    pub moby: bool,
    pub seed: u64,
    pub per_layer_files: u64,
    /// `--from FILE`: no run; the report is redrawn from saved `scale.json` files (merged).
    pub from: Vec<PathBuf>,
}

/// `1e5`, `100000`, `4g`, `256m`, `16k` (binary suffixes).
fn parse_size(s: &str) -> Result<u64> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mult) = match s.chars().last() {
        Some('k') => (&s[..s.len() - 1], 1u64 << 10),
        Some('m') => (&s[..s.len() - 1], 1 << 20),
        Some('g') => (&s[..s.len() - 1], 1 << 30),
        _ => (&s[..], 1),
    };
    let v: f64 = num.parse().with_context(|| format!("bad size {s:?}"))?;
    if !(v.is_finite() && v >= 0.0) {
        bail!("bad size {s:?}");
    }
    Ok((v * mult as f64).round() as u64)
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        axes: Vec::new(),
        min: None,
        max: None,
        sizes: None,
        runs: 3,
        smoke: false,
        out_dir: workspace_root().join("target/bench-scale"),
        scratch: PathBuf::from("/tmp/xtask-scale"),
        tmpfs_size: "14g".into(),
        tmpfs: true,
        driver: String::new(),
        moby: true,
        seed: 17,
        per_layer_files: 10_000,
        from: Vec::new(),
    };
    let mut runs_given = false;
    let mut scratch_given = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .with_context(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--axis" => {
                for name in val()?.split(',') {
                    o.axes.push(Axis::parse(name)?);
                }
            }
            "--max" => o.max = Some(parse_size(&val()?)?),
            "--min" => o.min = Some(parse_size(&val()?)?),
            "--sizes" => {
                o.sizes = Some(
                    val()?
                        .split(',')
                        .map(parse_size)
                        .collect::<Result<Vec<_>>>()?,
                )
            }
            "--runs" => {
                o.runs = val()?.parse()?;
                runs_given = true;
            }
            "--smoke" => o.smoke = true,
            "--out-dir" => o.out_dir = val()?.into(),
            "--scratch" => {
                o.scratch = val()?.into();
                scratch_given = true;
            }
            "--tmpfs-size" => o.tmpfs_size = val()?,
            "--no-tmpfs" => o.tmpfs = false,
            "--driver" => o.driver = val()?,
            "--no-moby" => o.moby = false,
            "--seed" => o.seed = val()?.parse()?,
            "--per-layer-files" => o.per_layer_files = parse_size(&val()?)?,
            "--from" => o.from.push(val()?.into()),
            "-h" | "--help" => {
                println!(
                    "usage: cargo xtask bench scale [--axis A] [--max N] [--runs N] [--smoke] [...]\n(see xtask/src/bench_scale/mod.rs)"
                );
                std::process::exit(0);
            }
            other => bail!("unknown option {other}"),
        }
    }
    if o.axes.is_empty() {
        o.axes = Axis::ALL.to_vec();
    }
    o.axes.sort();
    o.axes.dedup();
    if o.smoke {
        if !runs_given {
            o.runs = 1;
        }
        o.per_layer_files = o.per_layer_files.min(1_000);
        o.tmpfs_size = "2g".into();
        if !scratch_given {
            // Not the full run's directory: a smoke run (CI) never mounts over a bench.
            o.scratch = PathBuf::from("/tmp/xtask-scale-smoke");
        }
    }
    if o.runs == 0 {
        bail!("--runs must be at least 1");
    }
    Ok(o)
}

impl Opts {
    /// The sizes of `axis` this run measures.
    pub fn sizes(&self, axis: Axis) -> Vec<u64> {
        if self.smoke {
            return match axis {
                // Two, so that the concurrent path runs in CI too.
                Axis::Concurrency => vec![1, 2],
                _ => vec![axis.sizes()[0]],
            };
        }
        let all = self.sizes.clone().unwrap_or_else(|| axis.sizes());
        all.into_iter()
            .filter(|&n| self.min.is_none_or(|m| n >= m) && self.max.is_none_or(|m| n <= m))
            .collect()
    }
}

/// The programs a run drives.
#[derive(Debug)]
pub struct Bins {
    pub layerctl: PathBuf,
    pub layer_bench: PathBuf,
    /// moby 20.10's store (`moby-open`), when available.
    pub moby: Option<PathBuf>,
}

fn is_root() -> bool {
    rustix_free_euid() == 0
}

fn rustix_free_euid() -> u32 {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() }
}

fn build_ours(smoke: bool) -> Result<Bins> {
    let mut build = cargo();
    build.args([
        "build",
        "-p",
        "layerstore-cli",
        "--bin",
        "layerctl",
        "-p",
        "layer-benches",
        "--bin",
        "layer-bench",
    ]);
    if !smoke {
        build.arg("--release");
    }
    let st = build.status().context("cargo build")?;
    if !st.success() {
        bail!("building layerctl and layer-bench failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let dir = target.join(if smoke { "debug" } else { "release" });
    Ok(Bins {
        layerctl: dir.join("layerctl"),
        layer_bench: dir.join("layer-bench"),
        moby: None,
    })
}

/// moby-open: used if built; built with `../shared/peers/moby-open/build.sh` when Go is there
/// (not in smoke runs: CI does not install moby's sources).
fn find_moby(o: &Opts) -> Option<PathBuf> {
    if !o.moby {
        eprintln!("xtask: skipped: moby peer (--no-moby)");
        return None;
    }
    if !is_root() {
        // moby's drivers chown their home to root: its store runs only as root.
        eprintln!("xtask: skipped: moby peer: not root");
        return None;
    }
    let bin = PathBuf::from(
        std::env::var_os("MOBY_OPEN").unwrap_or_else(|| "/tmp/moby-open/bin/moby-open".into()),
    );
    if bin.is_file() {
        return Some(bin);
    }
    let script = workspace_root().join("../shared/peers/moby-open/build.sh");
    if !o.smoke && script.is_file() && is_root() {
        eprintln!("xtask: building the moby peer with {}", script.display());
        let ok = Command::new("bash")
            .arg(&script)
            .arg(&bin)
            .status()
            .is_ok_and(|s| s.success());
        if ok && bin.is_file() {
            return Some(bin);
        }
    }
    eprintln!(
        "xtask: skipped: moby peer: {} is not built (run {} as root)",
        bin.display(),
        script.display()
    );
    None
}

/// Unmounts every mount at or below `dir` (deepest first, lazily).
pub fn unmount_under(dir: &Path) {
    let Ok(info) = std::fs::read_to_string("/proc/self/mountinfo") else {
        return;
    };
    let prefix = dir.to_string_lossy().into_owned();
    let mut points: Vec<String> = info
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| p.replace("\\040", " "))
        .filter(|p| *p == prefix || p.starts_with(&format!("{prefix}/")))
        .collect();
    points.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for p in points {
        let _ = Command::new("umount").arg("-l").arg(&p).status();
    }
}

/// Removes `dir` after unmounting whatever is mounted below it. By `rm -rf` in a process of
/// its own: removing a 2,048-level tree in the harness (a `DIR` buffer per level) raised its
/// high-water mark, which every later child's peak RSS then includes.
pub fn clean(dir: &Path) {
    if dir.exists() {
        unmount_under(dir);
        let _ = Command::new("rm")
            .args(["-rf", "--one-file-system", "--"])
            .arg(dir)
            .status();
        if dir.exists() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// The private tmpfs, unmounted when dropped (errors included).
struct Scratch {
    dir: PathBuf,
    mounted: bool,
    fs: String,
}

impl Scratch {
    fn new(o: &Opts) -> Result<Scratch> {
        std::fs::create_dir_all(&o.scratch)?;
        let dir = o.scratch.canonicalize()?;
        unmount_under(&dir);
        let mut mounted = false;
        let fs;
        if o.tmpfs && is_root() {
            let st = Command::new("mount")
                .args(["-t", "tmpfs", "-o"])
                .arg(format!("size={},mode=0755", o.tmpfs_size))
                .arg("xtask-scale")
                .arg(&dir)
                .status()?;
            if !st.success() {
                bail!("mounting a tmpfs on {}", dir.display());
            }
            mounted = true;
            fs = format!("private tmpfs (size={})", o.tmpfs_size);
        } else {
            fs = format!("{} (no private tmpfs: not root or --no-tmpfs)", fs_of(&dir));
        }
        Ok(Scratch { dir, mounted, fs })
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.mounted {
            unmount_under(&self.dir);
        } else {
            clean(&self.dir);
        }
    }
}

/// The filesystem type `path` is on (the longest mount point that is a prefix).
fn fs_of(path: &Path) -> String {
    let p = path.to_string_lossy();
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split(' ');
            let (_, point, kind) = (f.next()?, f.next()?, f.next()?);
            (p == point || p.starts_with(&format!("{}/", point.trim_end_matches('/'))))
                .then(|| (point.len(), kind.to_owned()))
        })
        .max()
        .map(|(_, k)| k)
        .unwrap_or_else(|| "?".into())
}

fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "?".into())
}

fn machine(o: &Opts, args: &[String], fs: &str, driver: &str, load_start: &str) -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<f64>().ok())
        })
        .map_or(0.0, |k| k / 1024.0 / 1024.0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let commit = first_line(
        "git",
        &[
            "-C",
            &workspace_root().to_string_lossy(),
            "describe",
            "--always",
            "--dirty",
        ],
    );
    let load_end = loadavg();
    let date = first_line("date", &["-u", "+%Y-%m-%d %H:%M UTC"]);
    let tar = first_line("tar", &["--version"]);
    format!(
        "`cargo xtask bench scale {}` at {date}, commit `{commit}`.\n\n\
         | machine | |\n|---|---|\n\
         | CPU | {cpu}, {cores} cores |\n| memory | {mem_gib:.1} GiB |\n| kernel | {kernel} |\n\
         | scratch | {fs} |\n| driver | {driver} |\n| GNU tar | {tar} |\n\
         | moby | {} |\n| load average (1, 5, 15 min) | start {load_start}; end {load_end} |\n\
         | runs | {} per size (medians; peak RSS is the largest of the runs) |\n\
         | harness peak RSS | {:.1} MiB (a floor under every RSS figure: Linux counts the parent's \
         high-water mark in a child's peak) |\n\n",
        args.join(" "),
        if o.moby {
            "20.10.24 `layer` package + graph drivers (`../shared/peers/moby-open`)"
        } else {
            "not run"
        },
        o.runs,
        measure::harness_hwm_kib() as f64 / 1024.0
    )
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// Everything an axis needs.
pub struct Env<'a> {
    pub o: &'a Opts,
    pub bins: &'a Bins,
    pub scratch: &'a Path,
    pub driver: &'a str,
}

pub fn run(args: &[String]) -> Result<()> {
    let mut o = parse(args)?;
    if !o.from.is_empty() {
        return redraw(&o);
    }
    if which("tar").is_none() {
        bail!("GNU tar is needed (apt-get install tar)");
    }
    let root = is_root();
    if o.driver.is_empty() {
        o.driver = if root { "overlay2" } else { "vfs" }.into();
    }
    if o.driver == "overlay2" && !root {
        eprintln!("xtask: skipped: overlay2 needs root; using vfs");
        o.driver = "vfs".into();
    }
    let mut bins = build_ours(o.smoke)?;
    bins.moby = find_moby(&o);
    o.moby = bins.moby.is_some();
    let load_start = loadavg();
    let scratch = Scratch::new(&o)?;
    let fs = scratch.fs.clone();
    let env = Env {
        o: &o,
        bins: &bins,
        scratch: &scratch.dir,
        driver: &o.driver,
    };
    let mut results = Results::default();
    let mut outcome = Ok(());
    for &axis in &o.axes {
        let sizes = o.sizes(axis);
        if sizes.is_empty() {
            continue;
        }
        eprintln!("xtask: == scale axis {} at {:?}", axis.name(), sizes);
        if let Err(e) = axes::run(&env, axis, &sizes, &mut results) {
            outcome = Err(e.context(format!("axis {}", axis.name())));
            break;
        }
    }
    drop(scratch);

    std::fs::create_dir_all(&o.out_dir)?;
    let header = machine(&o, args, &fs, &o.driver, &load_start);
    let md = format!("{header}{}", results.markdown(&o.axes));
    std::fs::write(o.out_dir.join("scale.md"), &md)?;
    std::fs::write(
        o.out_dir.join("scale.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "machine": header,
            "samples": results.to_json(),
        }))?,
    )?;
    let charts = results.charts(&o.axes, &o.out_dir)?;
    println!("{md}");
    eprintln!(
        "xtask: wrote {} and {}",
        o.out_dir.join("scale.md").display(),
        charts.join(", ")
    );
    outcome?;
    let failures = results.our_failures();
    if !failures.is_empty() {
        bail!(
            "{} of our steps failed:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    Ok(())
}

/// `--from`: merges saved runs into one report (tables and charts), each run's machine
/// section kept.
fn redraw(o: &Opts) -> Result<()> {
    let mut results = Results::default();
    let mut headers = String::new();
    for f in &o.from {
        let text = std::fs::read_to_string(f).with_context(|| f.display().to_string())?;
        let v: serde_json::Value =
            serde_json::from_str(&text).with_context(|| f.display().to_string())?;
        // The first runs wrote the bare sample array.
        results.add_json(if v.is_array() { &v } else { &v["samples"] })?;
        headers.push_str(v["machine"].as_str().unwrap_or(""));
    }
    let axes = results.axes();
    std::fs::create_dir_all(&o.out_dir)?;
    let md = format!("{headers}{}", results.markdown(&axes));
    std::fs::write(o.out_dir.join("scale.md"), &md)?;
    std::fs::write(
        o.out_dir.join("scale.json"),
        serde_json::to_string_pretty(&serde_json::json!({
            "machine": headers,
            "samples": results.to_json(),
        }))?,
    )?;
    let charts = results.charts(&axes, &o.out_dir)?;
    eprintln!(
        "xtask: redrew {} charts into {}",
        charts.len(),
        o.out_dir.display()
    );
    Ok(())
}

fn which(prog: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(prog))
            .find(|f| f.is_file())
    })
}
