//! `cargo xtask bench peers`: our store and the peers on the same inputs, in one run.
//!
//! Peers (installed by `../shared/peers/install.sh`, built by `../shared/peers/moby-layer-bench/build.sh`):
//! moby 20.10's own layer store (`/tmp/moby-layer-bench`), containers-storage, GNU tar as the
//! floor. Inputs: `../shared/peers/make-inputs.sh` (`big.tar`, `small.tar`). Everything runs on a
//! private tmpfs (as root) or `/dev/shm`, several runs each; the table shows medians, the
//! ratio ours ÷ theirs (below 1 is faster) and peak RSS.
//!
//! Options: `--runs N` (3), `--inputs DIR` (/tmp/peer-inputs), `--scratch DIR`, `--disk`
//! (use a directory on disk instead of tmpfs), `--only big|small|docker-load`, `--out FILE` (markdown table),
//! `--many N` (layers for the "store open" row, 10000; 0 skips it: moby's harness has no
//! such mode, so the row is ours only).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

use crate::{cargo, workspace_root};

/// One timed process: wall seconds, peak RSS, its stdout.
struct Measured {
    wall: f64,
    rss_kb: u64,
    stdout: String,
}

fn measure(cmd: &mut Command, scratch: &Path) -> Result<Measured> {
    let tf = scratch.join("time.out");
    let mut full = Command::new("/usr/bin/time");
    full.arg("-f")
        .arg("%M")
        .arg("-o")
        .arg(&tf)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    if let Some(d) = cmd.get_current_dir() {
        full.current_dir(d);
    }
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => full.env(k, v),
            None => full.env_remove(k),
        };
    }
    let t0 = Instant::now();
    let out = full
        .output()
        .with_context(|| format!("running {cmd:?} (is GNU time installed?)"))?;
    let wall = t0.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rss_kb = std::fs::read_to_string(&tf)?
        .lines()
        .last()
        .unwrap_or("0")
        .trim()
        .parse()
        .unwrap_or(0);
    Ok(Measured {
        wall,
        rss_kb,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
    })
}

/// `secs=` of the first stdout line starting with `prefix` (the harness format).
fn harness_secs(stdout: &str, prefix: &str) -> Option<f64> {
    let line = stdout.lines().find(|l| l.starts_with(prefix))?;
    let v = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("secs="))?;
    v.parse().ok()
}

/// (step, input, driver).
type RowKey = (String, String, String);
/// implementation -> samples (secs, peak RSS KiB).
type Samples = BTreeMap<String, Vec<(f64, u64)>>;

#[derive(Default)]
struct Table {
    rows: BTreeMap<RowKey, Samples>,
    order: Vec<RowKey>,
}

impl Table {
    fn add(&mut self, step: &str, input: &str, driver: &str, imp: &str, secs: f64, rss: u64) {
        let key = (step.to_owned(), input.to_owned(), driver.to_owned());
        if !self.rows.contains_key(&key) {
            self.order.push(key.clone());
        }
        self.rows
            .entry(key)
            .or_default()
            .entry(imp.to_owned())
            .or_default()
            .push((secs, rss));
    }

    fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "| step | input | driver | ours s | moby s | c/storage s | GNU tar s | ours ÷ moby | ours ÷ c/s | ours ÷ tar | ours RSS MiB | moby RSS MiB |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|---|");
        for key in &self.order {
            let imps = &self.rows[key];
            let med = |imp: &str| {
                imps.get(imp)
                    .map(|v| median(v.iter().map(|x| x.0).collect()))
            };
            let rss = |imp: &str| {
                imps.get(imp)
                    .map(|v| v.iter().map(|x| x.1).max().unwrap_or(0) as f64 / 1024.0)
            };
            // Sub-millisecond steps (overlay2 RW changes) need more digits to show a ratio.
            let f = |v: Option<f64>| {
                v.map(|x| {
                    if x >= 0.1 || x == 0.0 {
                        format!("{x:.3}")
                    } else {
                        format!("{x:.6}")
                    }
                })
                .unwrap_or_else(|| "–".into())
            };
            let r = |a: Option<f64>, b: Option<f64>| match (a, b) {
                (Some(a), Some(b)) if b > 0.0 && a / b >= 0.1 => format!("{:.2}", a / b),
                (Some(a), Some(b)) if b > 0.0 => format!("{:.5}", a / b),
                _ => "–".into(),
            };
            let ours = med("ours");
            let _ = writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                key.0,
                key.1,
                key.2,
                f(ours),
                f(med("moby")),
                f(med("cstorage")),
                f(med("tar")),
                r(ours, med("moby")),
                r(ours, med("cstorage")),
                r(ours, med("tar")),
                rss("ours")
                    .map(|x| format!("{x:.1}"))
                    .unwrap_or_else(|| "–".into()),
                rss("moby")
                    .map(|x| format!("{x:.1}"))
                    .unwrap_or_else(|| "–".into()),
            );
        }
        s
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct Opts {
    runs: usize,
    inputs: PathBuf,
    scratch: PathBuf,
    disk: bool,
    only: Option<String>,
    out: Option<PathBuf>,
    many: usize,
}

fn parse(args: &[String]) -> Result<Opts> {
    let mut o = Opts {
        runs: 3,
        inputs: "/tmp/peer-inputs".into(),
        scratch: "/tmp/xtask-bench".into(),
        disk: false,
        only: None,
        out: None,
        many: 10_000,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut val = || {
            it.next()
                .cloned()
                .with_context(|| format!("{a} needs a value"))
        };
        match a.as_str() {
            "--runs" => o.runs = val()?.parse()?,
            "--inputs" => o.inputs = val()?.into(),
            "--scratch" => o.scratch = val()?.into(),
            "--disk" => o.disk = true,
            "--only" => o.only = Some(val()?),
            "--out" => o.out = Some(val()?.into()),
            "--many" => o.many = val()?.parse()?,
            other => bail!("unknown option {other}"),
        }
    }
    Ok(o)
}

fn is_root() -> bool {
    // SAFETY-free check: /proc/self/status Uid line.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

fn run_cmd(cmd: &mut Command) -> Result<()> {
    let st = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !st.success() {
        bail!("{cmd:?} failed: {st}");
    }
    Ok(())
}

fn rm_rf(p: &Path) {
    if p.exists() {
        // Unmount anything a failed run left (overlay merged dirs) before deleting.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!("grep -F ' {} ' /proc/self/mountinfo >/dev/null 2>&1; for m in $(awk '{{print $5}}' /proc/self/mountinfo | grep -F '{}' | sort -r); do umount -l \"$m\"; done", p.display(), p.display()))
            .status();
        let _ = std::fs::remove_dir_all(p);
    }
}

pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    let shared = workspace_root().join("../shared/peers");
    if !o.inputs.join("big.tar").is_file() {
        eprintln!(
            "xtask: making inputs with {}/make-inputs.sh",
            shared.display()
        );
        run_cmd(
            Command::new("bash")
                .arg(shared.join("make-inputs.sh"))
                .arg(&o.inputs),
        )?;
    }
    let moby = PathBuf::from("/tmp/moby-layer-bench");
    if !moby.is_file() {
        eprintln!("xtask: building the moby harness");
        run_cmd(Command::new("bash").arg(shared.join("moby-layer-bench/build.sh")))?;
    }
    let have_cs = Command::new("containers-storage")
        .arg("version")
        .output()
        .is_ok_and(|o| o.status.success());

    let mut build = cargo();
    build.args([
        "build",
        "--release",
        "-p",
        "layer-benches",
        "--bin",
        "layer-bench",
        "-p",
        "layerstore-cli",
        "--bin",
        "layerctl",
    ]);
    run_cmd(&mut build)?;
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let ours = target.join("release/layer-bench");

    std::fs::create_dir_all(&o.scratch)?;
    let scratch = o.scratch.canonicalize()?;
    let mut mounted = false;
    if !o.disk && is_root() {
        run_cmd(
            Command::new("mount")
                .args(["-t", "tmpfs", "-o", "size=8g", "xtask-bench"])
                .arg(&scratch),
        )?;
        mounted = true;
    }
    let result = run_all(&o, &scratch, &moby, &ours, have_cs);
    if mounted {
        let _ = Command::new("umount").arg("-l").arg(&scratch).status();
    }
    let table = result?;
    let md = format!(
        "Machine: {} cores, {}; storage: {}; {} runs each, medians.\n\n{}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(
                |c| c.lines().find(|l| l.starts_with("model name")).map(|l| l
                    .split(':')
                    .nth(1)
                    .unwrap_or("")
                    .trim()
                    .to_owned())
            )
            .unwrap_or_default(),
        if o.disk { "disk" } else { "tmpfs" },
        o.runs,
        table.render()
    );
    println!("{md}");
    if let Some(out) = &o.out {
        std::fs::write(out, &md)?;
    }
    Ok(())
}

fn run_all(o: &Opts, scratch: &Path, moby: &Path, ours: &Path, have_cs: bool) -> Result<Table> {
    let mut t = Table::default();
    let inputs: Vec<&str> = ["big", "small"]
        .into_iter()
        .filter(|n| o.only.as_deref().is_none_or(|x| x == *n))
        .collect();
    // A 10-file change for the RW changes/diff rows.
    let ten = scratch.join("ten-files.tar");
    make_ten_file_tar(&ten)?;
    for name in &inputs {
        let tar = o.inputs.join(format!("{name}.tar"));
        let _ = std::fs::read(&tar)?; // warm the page cache
        for r in 0..o.runs {
            // The floor: GNU tar extract and create.
            let dir = scratch.join("floor");
            rm_rf(&dir);
            std::fs::create_dir_all(&dir)?;
            let m = measure(
                Command::new("tar").arg("-xf").arg(&tar).arg("-C").arg(&dir),
                scratch,
            )?;
            t.add("register / extract", name, "-", "tar", m.wall, m.rss_kb);
            let m = measure(
                Command::new("sh").arg("-c").arg(format!(
                    "tar -cf - -C {} . | cat > /dev/null",
                    dir.display()
                )),
                scratch,
            )?;
            t.add("tar stream / export", name, "-", "tar", m.wall, m.rss_kb);
            t.add(
                "tar stream drained (no harness hash)",
                name,
                "-",
                "tar",
                m.wall,
                m.rss_kb,
            );
            rm_rf(&dir);
            for driver in ["vfs", "overlay2"] {
                for (imp, bin) in [("ours", ours), ("moby", moby)] {
                    let root = scratch.join(format!("{imp}-{driver}"));
                    rm_rf(&root);
                    let mut cmd = Command::new(bin);
                    cmd.args(["-root"])
                        .arg(&root)
                        .args(["-driver", driver, "-rw", "-rw-apply"])
                        .arg(&ten)
                        .args(["-reopen", "-release"]);
                    if imp == "ours" {
                        cmd.arg("-drain");
                    }
                    cmd.arg(&tar);
                    let m = measure(&mut cmd, scratch)
                        .with_context(|| format!("{imp} {driver} {name} run {r}"))?;
                    if !m.stdout.contains("mismatches=0") {
                        bail!("{imp} {driver} {name}: tar stream mismatch\n{}", m.stdout);
                    }
                    for (step, prefix) in [
                        ("register / extract", "register  total"),
                        ("tar stream / export", "tarstream total"),
                        ("tar stream drained (no harness hash)", "drained   total"),
                        ("RW layer create", "rw        create"),
                        ("RW changes (10 files + 2)", "rw        changes"),
                        ("RW diff (10 files + 2)", "rw        tarstream"),
                        ("store open", "reopen"),
                        ("release", "release"),
                    ] {
                        if let Some(s) = harness_secs(&m.stdout, prefix) {
                            t.add(step, name, driver, imp, s, m.rss_kb);
                        }
                    }
                    t.add("whole harness process", name, driver, imp, m.wall, m.rss_kb);
                    rm_rf(&root);
                }
                if have_cs {
                    let cs_driver = if driver == "overlay2" {
                        "overlay"
                    } else {
                        "vfs"
                    };
                    let g = scratch.join(format!("cs-{driver}"));
                    rm_rf(&g);
                    let m = measure(
                        Command::new("containers-storage")
                            .arg("-g")
                            .arg(g.join("graph"))
                            .arg("-R")
                            .arg(g.join("run"))
                            .args(["-s", cs_driver, "import-layer", "-f"])
                            .arg(&tar)
                            .args(["--id", "L1"]),
                        scratch,
                    )?;
                    t.add(
                        "register / extract",
                        name,
                        driver,
                        "cstorage",
                        m.wall,
                        m.rss_kb,
                    );
                    let _ = Command::new("containers-storage")
                        .arg("-g")
                        .arg(g.join("graph"))
                        .arg("-R")
                        .arg(g.join("run"))
                        .args(["-s", cs_driver, "shutdown"])
                        .output();
                    rm_rf(&g);
                }
            }
        }
    }
    if o.only.is_none() {
        chain_rows(o, scratch, moby, ours, &mut t)?;
    }
    if o.only.is_none() || o.only.as_deref() == Some("docker-load") {
        load_vs_docker_rows(o, scratch, ours, &mut t)?;
    }
    if o.many > 0 {
        // Store open with many layers: ours only (the moby harness cannot register without
        // a tar file per layer, and has no open-only mode).
        for driver in ["overlay2", "vfs"] {
            let root = scratch.join(format!("many-{driver}"));
            rm_rf(&root);
            let m = measure(
                Command::new(ours)
                    .arg("--root")
                    .arg(&root)
                    .args(["--driver", driver, "--open-many"])
                    .arg(o.many.to_string()),
                scratch,
            )
            .with_context(|| format!("ours {driver} open-many"))?;
            let step = format!("store open ({} layers)", o.many);
            if let Some(s) = harness_secs(&m.stdout, "openmany") {
                t.add(&step, "tiny", driver, "ours", s, m.rss_kb);
            }
            if let Some(s) = harness_secs(&m.stdout, "manyreg") {
                let step = format!("register {} tiny layers", o.many);
                t.add(&step, "tiny", driver, "ours", s, m.rss_kb);
            }
            rm_rf(&root);
        }
    }
    Ok(t)
}

/// The 3-layer image of the chain rows: small, big, small (574 MB, 135k entries).
const CHAIN: [&str; 3] = ["small", "big", "small"];

/// A 3-layer image registered four ways, per driver: ours in one `register_chain` call
/// (layers applied at the same time on overlay2), ours one register after another, moby's
/// harness (one Register after another, as `docker load` does), and `layerctl load` of the
/// same layers as a docker-save archive, parallel and with `--parallel-layers 1`. The floor is
/// GNU tar extracting the three tars one after another.
fn chain_rows(o: &Opts, scratch: &Path, moby: &Path, ours: &Path, t: &mut Table) -> Result<()> {
    let tars: Vec<PathBuf> = CHAIN
        .iter()
        .map(|n| o.inputs.join(format!("{n}.tar")))
        .collect();
    let layerctl = ours.with_file_name("layerctl");
    let image = scratch.join("chain-image.tar");
    make_docker_save(&image, &tars)?;
    let input = CHAIN.join("+");
    for r in 0..o.runs {
        let dir = scratch.join("floor");
        rm_rf(&dir);
        std::fs::create_dir_all(&dir)?;
        let script = tars
            .iter()
            .map(|t| format!("tar -xf {} -C {}", t.display(), dir.display()))
            .collect::<Vec<_>>()
            .join(" && ");
        let m = measure(Command::new("sh").arg("-c").arg(script), scratch)?;
        for step in [
            "register chain of 3, one call",
            "register chain of 3, one by one",
        ] {
            t.add(step, &input, "-", "tar", m.wall, m.rss_kb);
        }
        rm_rf(&dir);
        for driver in ["vfs", "overlay2"] {
            for (imp, chain_flag) in [("ours", true), ("ours-seq", false), ("moby", false)] {
                let root = scratch.join(format!("chain-{imp}-{driver}"));
                rm_rf(&root);
                let bin = if imp == "moby" { moby } else { ours };
                let mut cmd = Command::new(bin);
                cmd.arg("-root").arg(&root).args(["-driver", driver]);
                if chain_flag {
                    cmd.arg("-chain");
                }
                cmd.args(&tars);
                let m = measure(&mut cmd, scratch)
                    .with_context(|| format!("{imp} {driver} chain run {r}"))?;
                if !m.stdout.contains("mismatches=0") {
                    bail!("{imp} {driver} chain: tar stream mismatch\n{}", m.stdout);
                }
                let secs =
                    harness_secs(&m.stdout, "register  total").context("no register total line")?;
                match imp {
                    "ours" => t.add(
                        "register chain of 3, one call",
                        &input,
                        driver,
                        "ours",
                        secs,
                        m.rss_kb,
                    ),
                    "ours-seq" => t.add(
                        "register chain of 3, one by one",
                        &input,
                        driver,
                        "ours",
                        secs,
                        m.rss_kb,
                    ),
                    _ => {
                        for step in [
                            "register chain of 3, one call",
                            "register chain of 3, one by one",
                        ] {
                            t.add(step, &input, driver, "moby", secs, m.rss_kb);
                        }
                    }
                }
                rm_rf(&root);
            }
            for (step, extra) in [
                ("layerctl load (docker-save, 3 layers)", None),
                ("layerctl load --parallel-layers 1", Some("1")),
            ] {
                let root = scratch.join(format!("load-{driver}"));
                rm_rf(&root);
                let mut cmd = Command::new(&layerctl);
                cmd.arg("--root")
                    .arg(&root)
                    .args(["--driver", driver, "load"])
                    .arg(&image);
                if let Some(n) = extra {
                    cmd.args(["--parallel-layers", n]);
                }
                let m = measure(&mut cmd, scratch)
                    .with_context(|| format!("layerctl load {driver} run {r}"))?;
                t.add(step, &input, driver, "ours", m.wall, m.rss_kb);
                rm_rf(&root);
            }
        }
    }
    rm_rf(&image);
    Ok(())
}

/// `layerctl load` against `docker load` (Debian's dockerd 20.10) of the same docker-save
/// archives (`make-inputs.sh`'s `images/peer*-docker.tar`), each into an empty root on the
/// same tmpfs. Docker's time is the client's `docker load -i` (archive sent over the socket,
/// unpacked, registered and tagged by the daemon), with the daemon started before and
/// stopped after the timing. Its RSS column is the client's, not the daemon's.
fn load_vs_docker_rows(o: &Opts, scratch: &Path, ours: &Path, t: &mut Table) -> Result<()> {
    if let Some(why) = testkit::dockerd::missing() {
        eprintln!("xtask: load vs docker load rows skipped: {why}");
        return Ok(());
    }
    let layerctl = ours.with_file_name("layerctl");
    for name in ["peerbig", "peersmall", "peerchain"] {
        let image = o.inputs.join(format!("images/{name}-docker.tar"));
        if !image.is_file() {
            eprintln!("xtask: {} missing; row skipped", image.display());
            continue;
        }
        let _ = std::fs::read(&image)?; // warm the page cache
        let step = "load vs docker load (docker-save)";
        for r in 0..o.runs {
            for driver in ["vfs", "overlay2"] {
                let root = scratch.join(format!("ld-ours-{driver}"));
                rm_rf(&root);
                let m = measure(
                    Command::new(&layerctl)
                        .arg("--root")
                        .arg(&root)
                        .args(["--driver", driver, "-q", "load"])
                        .arg(&image),
                    scratch,
                )
                .with_context(|| format!("layerctl load {name} {driver} run {r}"))?;
                t.add(step, name, driver, "ours", m.wall, m.rss_kb);
                rm_rf(&root);

                let state = scratch.join(format!("ld-docker-{driver}"));
                rm_rf(&state);
                let d = testkit::dockerd::Dockerd::try_start(&state, &state.join("root"), driver)
                    .map_err(anyhow::Error::msg)?;
                let mut load = d.cmd(&["load", "-q", "-i"]);
                load.arg(&image);
                let m = measure(&mut load, scratch)
                    .with_context(|| format!("docker load {name} {driver} run {r}"))?;
                d.stop();
                t.add(step, name, driver, "moby", m.wall, m.rss_kb);
                rm_rf(&state);
            }
        }
    }
    Ok(())
}

/// A docker-save archive (legacy layout) of `layers`, for `layerctl load`.
fn make_docker_save(out: &Path, layers: &[PathBuf]) -> Result<()> {
    use sha2::Digest as _;
    let mut diff_ids = Vec::new();
    for l in layers {
        let mut h = sha2::Sha256::new();
        let mut f = std::fs::File::open(l)?;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = std::io::Read::read(&mut f, &mut buf)?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        diff_ids.push(format!("sha256:{hex}"));
    }
    let config = serde_json::json!({
        "architecture": std::env::consts::ARCH.replace("x86_64", "amd64").replace("aarch64", "arm64"),
        "os": "linux",
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    });
    let members: Vec<String> = (0..layers.len())
        .map(|i| format!("{i}/layer.tar"))
        .collect();
    let manifest = serde_json::json!([{
        "Config": "config.json",
        "RepoTags": ["bench-chain:3"],
        "Layers": members,
    }]);
    let mut b = tar::Builder::new(std::io::BufWriter::new(std::fs::File::create(out)?));
    let mut add = |name: &str, bytes: &[u8]| -> Result<()> {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, bytes)?;
        Ok(())
    };
    add("config.json", serde_json::to_vec(&config)?.as_slice())?;
    add("manifest.json", serde_json::to_vec(&manifest)?.as_slice())?;
    for (l, name) in layers.iter().zip(&members) {
        b.append_path_with_name(l, name)?;
    }
    b.into_inner()?.into_inner().map_err(|e| e.into_error())?;
    Ok(())
}

/// A layer tar changing 10 files, for the RW-layer changes/diff rows.
fn make_ten_file_tar(path: &Path) -> Result<()> {
    let mut out = Vec::new();
    for i in 0..10 {
        let name = format!("bench-changed/file-{i}");
        let body = format!("changed file {i}\n");
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        let size = format!("{:011o}", body.len());
        h[124..135].copy_from_slice(size.as_bytes());
        h[136..147].copy_from_slice(b"14707762000");
        h[156] = b'0';
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend_from_slice(&h);
        let mut data = body.into_bytes();
        data.resize(512, 0);
        out.extend_from_slice(&data);
    }
    out.resize(out.len() + 1024, 0);
    std::fs::write(path, out)?;
    Ok(())
}
