//! `cargo xtask bench tarsplit`: our `layerctl tar-split` against Go's `tar-split` CLI on
//! the same archives, in one run.
//!
//! Inputs come from `../shared/peers/make-inputs.sh` (`big.tar` ≈350 MB of real files,
//! `small.tar` ≈110 MB of many small files); they are copied to a tmpfs scratch directory
//! (`/dev/shm` by default) and extracted there once, so the page cache and the disk play no
//! part. Each command runs `--runs` times, ours and Go's interleaved so both see the same
//! machine noise, under GNU `time` for the CPU time and the peak RSS. The table gives
//! medians: wall time, MB/s (10⁶ bytes of tar per second), CPU seconds (user + system),
//! peak RSS, and ours ÷ Go's speed-up by wall and by CPU time (CPU is the steadier number
//! on a shared machine). Before timing, both directions are checked to be byte-exact.
//!
//! Options: `--runs N` (5), `--inputs DIR` (/tmp/peer-inputs), `--scratch DIR`
//! (/dev/shm/tarsplit-bench), `--only big|small`, `--go PATH` (tar-split), `--out FILE`
//! (also write the table as markdown), `--keep` (keep the scratch directory).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{cargo, workspace_root};

struct Opts {
    runs: usize,
    inputs: PathBuf,
    scratch: PathBuf,
    only: Option<String>,
    go: PathBuf,
    out: Option<PathBuf>,
    keep: bool,
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        runs: 5,
        inputs: PathBuf::from("/tmp/peer-inputs"),
        scratch: PathBuf::from("/dev/shm/tarsplit-bench"),
        only: None,
        go: PathBuf::from("tar-split"),
        out: None,
        keep: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || it.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--runs" => o.runs = value()?.parse().context("--runs")?,
            "--inputs" => o.inputs = value()?.into(),
            "--scratch" => o.scratch = value()?.into(),
            "--only" => o.only = Some(value()?.clone()),
            "--go" => o.go = value()?.into(),
            "--out" => o.out = Some(value()?.into()),
            "--keep" => o.keep = true,
            other => bail!("unknown option {other:?} (see xtask/src/bench_tarsplit.rs)"),
        }
    }
    if o.runs == 0 {
        bail!("--runs must be at least 1");
    }
    Ok(o)
}

/// One timed run.
#[derive(Debug, Clone, Copy)]
struct Sample {
    wall: f64,
    cpu: f64,
    rss_kb: u64,
}

fn timed(program: &Path, args: &[&std::ffi::OsStr], scratch: &Path) -> Result<Sample> {
    let tf = scratch.join("time.out");
    let t0 = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "%U %S %M", "-o"])
        .arg(&tf)
        .arg(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .context("running /usr/bin/time (GNU time must be installed)")?;
    let wall = t0.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{} {:?} failed: {}",
            program.display(),
            args,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = std::fs::read_to_string(&tf)?;
    let f: Vec<&str> = text
        .lines()
        .last()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    Ok(Sample {
        wall,
        cpu: num(0) + num(1),
        rss_kb: num(2) as u64,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn run_ok(cmd: &mut Command) -> Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

fn same_file(a: &Path, b: &Path) -> Result<bool> {
    use std::io::Read;
    let (mut fa, mut fb) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
    loop {
        let n = fa.read(&mut ba)?;
        if n == 0 {
            return Ok(true);
        }
        fb.read_exact(&mut bb[..n])?;
        if ba[..n] != bb[..n] {
            return Ok(false);
        }
    }
}

fn layerctl_binary() -> Result<PathBuf> {
    run_ok(cargo().args(["build", "--release", "-p", "layerstore-cli"]))?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let bin = target.join("release/layerctl");
    if !bin.is_file() {
        bail!("{} not found after the build", bin.display());
    }
    Ok(bin)
}

/// Implementation under test: program plus the words before the tar-split subcommand.
struct Impl {
    label: &'static str,
    program: PathBuf,
    prefix: Vec<&'static str>,
}

impl Impl {
    fn args<'a>(&'a self, rest: &[&'a std::ffi::OsStr]) -> Vec<&'a std::ffi::OsStr> {
        self.prefix
            .iter()
            .map(std::ffi::OsStr::new)
            .chain(rest.iter().copied())
            .collect()
    }
}

struct Row {
    input: String,
    op: &'static str,
    bytes: u64,
    ours: Vec<Sample>,
    go: Vec<Sample>,
}

/// Runs the tar-split benchmark (see the module docs for the options).
pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    if !o.inputs.join("big.tar").is_file() || !o.inputs.join("small.tar").is_file() {
        let script = workspace_root().join("../shared/peers/make-inputs.sh");
        eprintln!("making inputs with {}", script.display());
        run_ok(Command::new("bash").arg(&script).arg(&o.inputs))?;
    }
    let ours = Impl {
        label: "ours",
        program: layerctl_binary()?,
        prefix: vec!["tar-split"],
    };
    let go = Impl {
        label: "go",
        program: o.go.clone(),
        prefix: vec![],
    };
    run_ok(
        Command::new(&go.program)
            .arg("--version")
            .stdout(Stdio::null()),
    )
    .with_context(|| format!("Go tar-split not runnable at {}", go.program.display()))?;

    std::fs::create_dir_all(&o.scratch)?;
    let mut rows = Vec::new();
    for name in ["big", "small"] {
        if o.only.as_deref().is_some_and(|only| only != name) {
            continue;
        }
        let tar = o.scratch.join(format!("{name}.tar"));
        std::fs::copy(o.inputs.join(format!("{name}.tar")), &tar)?;
        let bytes = std::fs::metadata(&tar)?.len();
        let tree = o.scratch.join(format!("{name}.x"));
        if tree.exists() {
            std::fs::remove_dir_all(&tree)?;
        }
        std::fs::create_dir_all(&tree)?;
        run_ok(
            Command::new("tar")
                .arg("-xf")
                .arg(&tar)
                .arg("-C")
                .arg(&tree),
        )?;

        // Correctness first: each side's metadata, rebuilt by the other side, is the tar.
        let meta = |who: &str| o.scratch.join(format!("{name}.{who}.json.gz"));
        let rebuilt = o.scratch.join(format!("{name}.rebuilt.tar"));
        for (disasm, asm) in [(&ours, &go), (&go, &ours)] {
            let m = meta(disasm.label);
            timed(
                &disasm.program,
                &disasm.args(&[
                    "disasm".as_ref(),
                    "--no-stdout".as_ref(),
                    "--output".as_ref(),
                    m.as_os_str(),
                    tar.as_os_str(),
                ]),
                &o.scratch,
            )?;
            timed(
                &asm.program,
                &asm.args(&[
                    "asm".as_ref(),
                    "--input".as_ref(),
                    m.as_os_str(),
                    "--path".as_ref(),
                    tree.as_os_str(),
                    "--output".as_ref(),
                    rebuilt.as_os_str(),
                ]),
                &o.scratch,
            )?;
            if !same_file(&rebuilt, &tar)? {
                bail!(
                    "{name}: {} disasm + {} asm did not reproduce the tar",
                    disasm.label,
                    asm.label
                );
            }
        }
        std::fs::remove_file(&rebuilt)?;

        let out_meta = o.scratch.join("bench.json.gz");
        let go_meta = meta("go");
        let disasm_args = [
            "disasm".as_ref(),
            "--no-stdout".as_ref(),
            "--output".as_ref(),
            out_meta.as_os_str(),
            tar.as_os_str(),
        ];
        let asm_args = [
            "asm".as_ref(),
            "--input".as_ref(),
            go_meta.as_os_str(),
            "--path".as_ref(),
            tree.as_os_str(),
            "--output".as_ref(),
            "/dev/null".as_ref(),
        ];
        for (op, rest) in [("disasm", &disasm_args[..]), ("asm", &asm_args[..])] {
            let mut row = Row {
                input: format!("{name}.tar"),
                op,
                bytes,
                ours: Vec::new(),
                go: Vec::new(),
            };
            for run in 0..o.runs {
                // Alternate who goes first so neither always meets a warmer machine.
                let order: [&Impl; 2] = if run % 2 == 0 {
                    [&ours, &go]
                } else {
                    [&go, &ours]
                };
                for imp in order {
                    let s = timed(&imp.program, &imp.args(rest), &o.scratch)?;
                    if imp.label == "ours" {
                        row.ours.push(s)
                    } else {
                        row.go.push(s)
                    }
                }
            }
            eprintln!("{name} {op}: done");
            rows.push(row);
        }
        if !o.keep {
            std::fs::remove_dir_all(&tree)?;
            std::fs::remove_file(&tar)?;
        }
    }
    let table = render(&rows, o.runs);
    println!("{table}");
    if let Some(out) = &o.out {
        std::fs::write(out, &table)?;
    }
    if !o.keep {
        let _ = std::fs::remove_dir_all(&o.scratch);
    }
    Ok(())
}

fn render(rows: &[Row], runs: usize) -> String {
    let mut t = String::new();
    let _ = writeln!(
        t,
        "tar-split: layerctl (ours) vs Go tar-split, medians of {runs} runs on tmpfs"
    );
    let _ = writeln!(t);
    let _ = writeln!(
        t,
        "| input | op | impl | wall s | MB/s | CPU s | peak RSS MiB | speed-up (wall) | speed-up (CPU) |"
    );
    let _ = writeln!(t, "|---|---|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let stat = |v: &[Sample]| {
            (
                median(v.iter().map(|s| s.wall).collect()),
                median(v.iter().map(|s| s.cpu).collect()),
                v.iter().map(|s| s.rss_kb).max().unwrap_or(0) as f64 / 1024.0,
            )
        };
        let (ow, oc, orss) = stat(&r.ours);
        let (gw, gc, grss) = stat(&r.go);
        let mbs = |w: f64| r.bytes as f64 / 1e6 / w;
        let _ = writeln!(
            t,
            "| {} | {} | go | {gw:.2} | {:.0} | {gc:.2} | {grss:.1} | | |",
            r.input,
            r.op,
            mbs(gw)
        );
        let _ = writeln!(
            t,
            "| {} | {} | ours | {ow:.2} | {:.0} | {oc:.2} | {orss:.1} | {:.1}× | {:.1}× |",
            r.input,
            r.op,
            mbs(ow),
            gw / ow,
            gc / oc.max(0.001)
        );
    }
    t
}
