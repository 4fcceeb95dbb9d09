//! The axes: inputs, set-up and the timed steps for ours, moby and GNU tar.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result};

use super::measure::{self, Run};
use super::report::{Results, Sample};
use super::{Axis, Env, clean, inputs};

pub fn run(env: &Env<'_>, axis: Axis, sizes: &[u64], res: &mut Results) -> Result<()> {
    match axis {
        Axis::Files => files(env, sizes, res),
        Axis::Bigfile => bigfile(env, sizes, res),
        Axis::Layers => layers(env, sizes, res),
        Axis::Chain => chain(env, sizes, res),
        Axis::Tree => tree(env, sizes, res),
        Axis::Concurrency => concurrency(env, sizes, res),
    }
}

impl Env<'_> {
    /// `layerctl --root ROOT --driver D -q ARGS`.
    fn ours(&self, root: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bins.layerctl);
        c.arg("--root")
            .arg(root)
            .args(["--driver", self.driver, "-q"])
            .args(args);
        c
    }

    /// `layer-bench --root ROOT --driver D ARGS`.
    fn bench(&self, root: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(&self.bins.layer_bench);
        c.arg("--root")
            .arg(root)
            .args(["--driver", self.driver])
            .args(args);
        c
    }

    /// `moby-open -root ROOT -driver D ARGS` (moby 20.10's store), if built.
    fn moby(&self, root: &Path, args: &[&str]) -> Option<Command> {
        let bin = self.bins.moby.as_ref()?;
        let mut c = Command::new(bin);
        c.arg("-root")
            .arg(root)
            .args(["-driver", self.driver])
            .args(args);
        Some(c)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.scratch.join(name)
    }

    fn seed(&self, salt: u64) -> u64 {
        self.o.seed.wrapping_mul(0x100_0000_01B3) ^ salt
    }
}

/// Records `run` as one sample; a run that exited 0 but failed `check` is a failure too.
#[allow(clippy::too_many_arguments)]
fn rec(
    res: &mut Results,
    axis: Axis,
    size: u64,
    step: &str,
    imp: &'static str,
    run: &Run,
    check: Result<(), String>,
    note: String,
) -> bool {
    let (ok, note) = match (run.ok, check) {
        (false, _) => (false, run.why()),
        (true, Err(why)) => (false, why),
        (true, Ok(())) => (true, note),
    };
    res.add(Sample {
        axis,
        size,
        step: step.to_owned(),
        imp,
        secs: run.wall,
        rss_kb: run.rss_kb,
        ok,
        note,
    });
    ok
}

fn ok() -> Result<(), String> {
    Ok(())
}

/// The export wrote exactly the input's bytes (both stores verify the DiffID themselves).
fn same_len(run: &Run, want: u64) -> Result<(), String> {
    if run.out_bytes == want {
        Ok(())
    } else {
        Err(format!(
            "exported {} bytes, the input has {want}",
            run.out_bytes
        ))
    }
}

fn len(p: &Path) -> Result<u64> {
    Ok(std::fs::metadata(p)
        .with_context(|| p.display().to_string())?
        .len())
}

/// `key=value` from the first stdout line starting with `prefix`.
fn field(stdout: &str, prefix: &str, key: &str) -> Option<String> {
    let line = stdout.lines().find(|l| l.starts_with(prefix))?;
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(key)?.strip_prefix('='))
        .map(str::to_owned)
}

fn fresh(dir: &Path) -> Result<()> {
    clean(dir);
    std::fs::create_dir_all(dir)?;
    Ok(())
}

/// Ten changes in a mounted RW layer: four files appended to, three deleted (whiteouts),
/// three added.
fn ten_changes(mount: &Path, dir: &str) -> Result<()> {
    use std::io::Write as _;
    for j in 0..4 {
        let p = mount.join(format!("{dir}/f{j:03}"));
        std::fs::OpenOptions::new()
            .append(true)
            .open(&p)
            .and_then(|mut f| f.write_all(b"changed\n"))
            .with_context(|| format!("change {}", p.display()))?;
    }
    for j in 4..7 {
        let p = mount.join(format!("{dir}/f{j:03}"));
        std::fs::remove_file(&p).with_context(|| format!("delete {}", p.display()))?;
    }
    for j in 0..3 {
        std::fs::write(mount.join(format!("added-{j}")), b"added\n")?;
    }
    Ok(())
}

fn tar_x(tar: &Path, dir: &Path) -> Command {
    let mut c = Command::new("tar");
    c.arg("-xf").arg(tar).arg("-C").arg(dir);
    c
}

/// `tar -cf - -C DIR .` into a pipe (into /dev/null GNU tar would skip reading the files).
fn tar_c(dir: &Path) -> Command {
    let mut c = Command::new("tar");
    c.arg("-cf").arg("-").arg("-C").arg(dir).arg(".");
    c
}

fn tar_d(tar: &Path, dir: &Path) -> Command {
    let mut c = Command::new("tar");
    c.arg("-df").arg(tar).arg("-C").arg(dir);
    c
}

/// GNU tar's floor for one layer tar: extract, create, compare.
fn tar_floor(
    env: &Env<'_>,
    res: &mut Results,
    axis: Axis,
    size: u64,
    tar: &Path,
    steps: [Option<&str>; 3],
) -> Result<()> {
    let dir = env.path("tar-x");
    fresh(&dir)?;
    let x = measure::run(&mut tar_x(tar, &dir))?;
    if let Some(step) = steps[0] {
        rec(res, axis, size, step, "tar", &x, ok(), String::new());
    }
    if x.ok {
        if let Some(step) = steps[1] {
            let c = measure::run(&mut tar_c(&dir))?;
            rec(res, axis, size, step, "tar", &c, ok(), String::new());
        }
        if let Some(step) = steps[2] {
            if super::is_root() {
                let d = measure::run(&mut tar_d(tar, &dir))?;
                rec(res, axis, size, step, "tar", &d, ok(), String::new());
            } else {
                // `tar -d` compares owners too, and unprivileged every extracted file is ours.
                eprintln!(
                    "xtask: skipped: {axis:?} {size} {step} (tar -d): not root, owners differ"
                );
            }
        }
    }
    clean(&dir);
    Ok(())
}

/// Register, export, check of one layer tar, ours then moby; with `rw`, also `rw changes` and
/// `rw diff` after ten changes under `rw` (a directory of the layer).
fn layer_steps(
    env: &Env<'_>,
    res: &mut Results,
    axis: Axis,
    size: u64,
    tar: &Path,
    rw: Option<&str>,
) -> Result<()> {
    let want = len(tar)?;
    // Ours.
    let root = env.path("ours");
    fresh(&root)?;
    let tar_s = tar.to_string_lossy();
    let reg = measure::run(&mut env.ours(&root, &["import", &tar_s]))?;
    if rec(
        res,
        axis,
        size,
        "register",
        "ours",
        &reg,
        ok(),
        String::new(),
    ) {
        let chain = reg.last_line().to_owned();
        let ex = measure::run(&mut env.ours(&root, &["export", &chain]))?;
        rec(
            res,
            axis,
            size,
            "export",
            "ours",
            &ex,
            same_len(&ex, want),
            String::new(),
        );
        let ck = measure::run(&mut env.ours(&root, &["check"]))?;
        rec(res, axis, size, "check", "ours", &ck, ok(), String::new());
        if let Some(dir) = rw {
            ours_rw(env, res, axis, size, &root, &chain, dir)?;
        }
    }
    clean(&root);
    // moby.
    let root = env.path("moby");
    fresh(&root)?;
    if let Some(mut cmd) = env.moby(&root, &["-no-stream", "-q", &tar_s]) {
        let reg = measure::run(&mut cmd)?;
        if rec(
            res,
            axis,
            size,
            "register",
            "moby",
            &reg,
            ok(),
            String::new(),
        ) {
            let chain = reg.last_line().to_owned();
            let ex = measure::run(&mut env.moby(&root, &["-export", &chain]).expect("moby"))?;
            rec(
                res,
                axis,
                size,
                "export",
                "moby",
                &ex,
                same_len(&ex, want),
                String::new(),
            );
            // moby has no check: its open mode re-reads every layer and verifies its DiffID,
            // which is what our check does.
            let ck = measure::run(&mut env.moby(&root, &["-open", "-no-verify"]).expect("moby"))?;
            rec(
                res,
                axis,
                size,
                "check",
                "moby",
                &ck,
                ok(),
                "open + verify every layer".into(),
            );
            if let Some(dir) = rw {
                moby_rw(env, res, axis, size, &root, &chain, dir)?;
            }
        }
    }
    clean(&root);
    Ok(())
}

fn ours_rw(
    env: &Env<'_>,
    res: &mut Results,
    axis: Axis,
    size: u64,
    root: &Path,
    chain: &str,
    dir: &str,
) -> Result<()> {
    if !super::is_root() {
        // Unprivileged, a mount lives in the command's own namespace (`layerctl unshare`).
        eprintln!(
            "xtask: skipped: {axis:?} {size} rw changes: unprivileged, rw mount works only inside `layerctl unshare`"
        );
        return Ok(());
    }
    let c = measure::run(&mut env.ours(root, &["rw", "create", "c", "--parent", chain]))?;
    let m = measure::run(&mut env.ours(root, &["rw", "mount", "c"]))?;
    if !(c.ok && m.ok) {
        let why = if c.ok { m.why() } else { c.why() };
        rec(
            res,
            axis,
            size,
            "rw changes (10)",
            "ours",
            &m,
            Err(why),
            String::new(),
        );
        return Ok(());
    }
    ten_changes(Path::new(m.last_line()), dir)?;
    let u = measure::run(&mut env.ours(root, &["rw", "unmount", "c"]))?;
    if !u.ok {
        rec(
            res,
            axis,
            size,
            "rw changes (10)",
            "ours",
            &u,
            ok(),
            String::new(),
        );
        return Ok(());
    }
    let ch = measure::run(&mut env.ours(root, &["rw", "changes", "c"]))?;
    let n = ch.stdout.lines().count();
    rec(
        res,
        axis,
        size,
        "rw changes (10)",
        "ours",
        &ch,
        ok(),
        format!("{n} lines"),
    );
    let df = measure::run(&mut env.ours(root, &["rw", "diff", "c"]))?;
    rec(
        res,
        axis,
        size,
        "rw diff (10)",
        "ours",
        &df,
        ok(),
        String::new(),
    );
    Ok(())
}

fn moby_rw(
    env: &Env<'_>,
    res: &mut Results,
    axis: Axis,
    size: u64,
    root: &Path,
    chain: &str,
    dir: &str,
) -> Result<()> {
    let moby = |args: &[&str]| env.moby(root, args).expect("moby");
    let c = measure::run(&mut moby(&["-rw-create", "c", "-parent", chain]))?;
    let m = measure::run(&mut moby(&["-rw-mount", "c"]))?;
    if !(c.ok && m.ok) {
        let why = if c.ok { m.why() } else { c.why() };
        rec(
            res,
            axis,
            size,
            "rw changes (10)",
            "moby",
            &m,
            Err(why),
            String::new(),
        );
        return Ok(());
    }
    ten_changes(Path::new(m.last_line()), dir)?;
    let u = measure::run(&mut moby(&["-rw-unmount", "c"]))?;
    if !u.ok {
        rec(
            res,
            axis,
            size,
            "rw changes (10)",
            "moby",
            &u,
            ok(),
            String::new(),
        );
        return Ok(());
    }
    let ch = measure::run(&mut moby(&["-changes", "c"]))?;
    rec(
        res,
        axis,
        size,
        "rw changes (10)",
        "moby",
        &ch,
        ok(),
        String::new(),
    );
    let df = measure::run(&mut moby(&["-rw-diff", "c"]))?;
    rec(
        res,
        axis,
        size,
        "rw diff (10)",
        "moby",
        &df,
        ok(),
        String::new(),
    );
    Ok(())
}

fn files(env: &Env<'_>, sizes: &[u64], res: &mut Results) -> Result<()> {
    for &n in sizes {
        let tar = env.path(&format!("files-{n}.tar"));
        inputs::many_files(&tar, n, env.seed(n))?;
        for _ in 0..env.o.runs {
            tar_floor(
                env,
                res,
                Axis::Files,
                n,
                &tar,
                [Some("register"), Some("export"), Some("check")],
            )?;
            layer_steps(env, res, Axis::Files, n, &tar, Some("d0000"))?;
        }
        std::fs::remove_file(&tar)?;
    }
    Ok(())
}

fn bigfile(env: &Env<'_>, sizes: &[u64], res: &mut Results) -> Result<()> {
    for &n in sizes {
        let tar = env.path(&format!("bigfile-{n}.tar"));
        inputs::one_big_file(&tar, n, env.seed(n))?;
        for _ in 0..env.o.runs {
            tar_floor(
                env,
                res,
                Axis::Bigfile,
                n,
                &tar,
                [Some("register"), Some("export"), Some("check")],
            )?;
            layer_steps(env, res, Axis::Bigfile, n, &tar, None)?;
        }
        std::fs::remove_file(&tar)?;
    }
    Ok(())
}

/// Layers per chain when filling a store (as `layer-bench --open-many`).
const FILL_CHAIN: u64 = 100;

fn layers(env: &Env<'_>, sizes: &[u64], res: &mut Results) -> Result<()> {
    let ax = Axis::Layers;
    for &n in sizes {
        // Ours: one process registers the N tiny layers (chains of 100).
        let ours = env.path("ours");
        fresh(&ours)?;
        let fill = measure::run(&mut env.bench(&ours, &["--open-many", &n.to_string()]))?;
        let fill_secs = field(&fill.stdout, "manyreg", "secs").and_then(|s| s.parse().ok());
        let mut fill_run = fill;
        if let Some(s) = fill_secs {
            fill_run.wall = s;
        }
        rec(
            res,
            ax,
            n,
            "fill: register all (setup)",
            "ours",
            &fill_run,
            ok(),
            "one process".into(),
        );
        // moby: the same layers, byte for byte, one process per chain of 100.
        let moby = env.path("moby");
        fresh(&moby)?;
        let tiny = env.path("tiny");
        if env.bins.moby.is_some() {
            fresh(&tiny)?;
            let (mut wall, mut rss, mut failed) = (0.0, 0, None);
            for start in (0..n).step_by(FILL_CHAIN as usize) {
                let mut args: Vec<String> = vec!["-no-stream".into(), "-q".into()];
                for i in start..(start + FILL_CHAIN).min(n) {
                    let p = tiny.join(format!("t-{i}.tar"));
                    std::fs::write(&p, inputs::tiny_layer(i))?;
                    args.push(p.to_string_lossy().into_owned());
                }
                let a: Vec<&str> = args.iter().map(String::as_str).collect();
                let r = measure::run(&mut env.moby(&moby, &a).expect("moby"))?;
                wall += r.wall;
                rss = rss.max(r.rss_kb);
                if !r.ok {
                    failed = Some(r);
                    break;
                }
            }
            let mut total = failed.unwrap_or(Run {
                wall,
                rss_kb: rss,
                ok: true,
                stdout: String::new(),
                out_bytes: 0,
                counted: 0,
                stderr: String::new(),
            });
            total.wall = wall;
            rec(
                res,
                ax,
                n,
                "fill: register all (setup)",
                "moby",
                &total,
                ok(),
                "one process per chain of 100".into(),
            );
            clean(&tiny);
        }
        let count_ok = |got: Option<usize>, want: u64| match got {
            Some(g) if g as u64 == want => Ok(()),
            g => Err(format!("{g:?} layers listed, want {want}")),
        };
        for r in 0..env.o.runs as u64 {
            // Open: the in-process timer (ours: median of 3 opens; moby: one).
            let mut op = measure::run(&mut env.bench(&ours, &["--open-only"]))?;
            let loaded = field(&op.stdout, "openonly", "layers").and_then(|s| s.parse().ok());
            if let Some(s) = field(&op.stdout, "openonly", "secs").and_then(|s| s.parse().ok()) {
                op.wall = s;
            }
            rec(
                res,
                ax,
                n,
                "open",
                "ours",
                &op,
                count_ok(loaded, n + r),
                "in-process timer".into(),
            );
            // moby's open mode limited to a chain that does not exist: opens, streams nothing,
            // and exits 3 ("not everything verified"), which is expected here.
            let bogus = format!("sha256:{}", "0".repeat(64));
            if let Some(mut cmd) = env.moby(&moby, &["-open", "-no-verify", "-only", &bogus]) {
                let mut op = measure::run(&mut cmd)?;
                let json: Option<serde_json::Value> = serde_json::from_str(&op.stdout).ok();
                let secs = json.as_ref().and_then(|j| j["open_secs"].as_f64());
                let loaded = json
                    .as_ref()
                    .and_then(|j| j["loaded"].as_u64())
                    .map(|v| v as usize);
                op.ok = secs.is_some();
                if let Some(s) = secs {
                    op.wall = s;
                }
                rec(
                    res,
                    ax,
                    n,
                    "open",
                    "moby",
                    &op,
                    count_ok(loaded, n + r),
                    "in-process timer".into(),
                );
            }
            // ls.
            let ls = measure::run_counting(&mut env.ours(&ours, &["--json", "ls"]))?;
            let listed = ls.counted;
            rec(
                res,
                ax,
                n,
                "ls",
                "ours",
                &ls,
                count_ok(Some(listed), n + r),
                String::new(),
            );
            if let Some(mut cmd) = env.moby(&moby, &["-ls"]) {
                let ls = measure::run_counting(&mut cmd)?;
                let listed = ls.counted;
                rec(
                    res,
                    ax,
                    n,
                    "ls",
                    "moby",
                    &ls,
                    count_ok(Some(listed), n + r),
                    String::new(),
                );
            }
            // Register one more (a new base layer, different in every run).
            let extra = env.path(&format!("extra-{r}.tar"));
            std::fs::write(&extra, inputs::tiny_layer(n + 1_000_000 + r))?;
            let extra_s = extra.to_string_lossy().into_owned();
            let reg = measure::run(&mut env.ours(&ours, &["import", &extra_s]))?;
            rec(
                res,
                ax,
                n,
                "register one more",
                "ours",
                &reg,
                ok(),
                String::new(),
            );
            if let Some(mut cmd) = env.moby(&moby, &["-no-stream", "-q", &extra_s]) {
                let reg = measure::run(&mut cmd)?;
                rec(
                    res,
                    ax,
                    n,
                    "register one more",
                    "moby",
                    &reg,
                    ok(),
                    String::new(),
                );
            }
            std::fs::remove_file(&extra)?;
            // gc and the metadata-only check: ours only (moby has neither).
            let gc = measure::run(&mut env.ours(&ours, &["gc"]))?;
            rec(res, ax, n, "gc", "ours", &gc, ok(), String::new());
            let ck = measure::run(&mut env.ours(&ours, &["check", "--quick"]))?;
            rec(
                res,
                ax,
                n,
                "check --quick (metadata)",
                "ours",
                &ck,
                ok(),
                String::new(),
            );
        }
        clean(&ours);
        clean(&moby);
    }
    Ok(())
}

/// Files per chain layer.
const CHAIN_FILES: u64 = 100;

fn chain(env: &Env<'_>, sizes: &[u64], res: &mut Results) -> Result<()> {
    let ax = Axis::Chain;
    for &d in sizes {
        let dir = env.path("chain-in");
        fresh(&dir)?;
        let mut below = Vec::new();
        for k in 0..d.saturating_sub(1) {
            let p = dir.join(format!("l{k:03}.tar"));
            inputs::chain_layer(&p, &format!("l{k:03}"), CHAIN_FILES, env.seed(k))?;
            below.push(p.to_string_lossy().into_owned());
        }
        // Set-up: the d-1 layers below the top, untimed.
        let ours = env.path("ours");
        fresh(&ours)?;
        let mut parent_ours: Option<String> = None;
        for p in &below {
            let mut args = vec!["import", p.as_str()];
            if let Some(par) = &parent_ours {
                args.extend(["--parent", par.as_str()]);
            }
            let r = measure::run(&mut env.ours(&ours, &args))?;
            if !r.ok {
                anyhow::bail!("set-up: import {p}: {}", r.why());
            }
            parent_ours = Some(r.last_line().to_owned());
        }
        let moby = env.path("moby");
        fresh(&moby)?;
        let mut parent_moby: Option<String> = None;
        let mut moby_ok = env.bins.moby.is_some();
        if moby_ok && !below.is_empty() {
            let mut args = vec!["-no-stream", "-q"];
            args.extend(below.iter().map(String::as_str));
            let r = measure::run(&mut env.moby(&moby, &args).expect("moby"))?;
            if r.ok {
                parent_moby = Some(r.last_line().to_owned());
                if parent_moby != parent_ours {
                    anyhow::bail!(
                        "set-up: moby's chain {parent_moby:?} is not ours {parent_ours:?}"
                    );
                }
            } else {
                eprintln!("xtask: moby set-up of a {d}-deep chain failed: {}", r.why());
                moby_ok = false;
            }
        }
        for r in 0..env.o.runs {
            let top = dir.join(format!("top{r}.tar"));
            let top_dir = format!("top{r}");
            inputs::chain_layer(&top, &top_dir, CHAIN_FILES, env.seed(1_000 + r as u64))?;
            let want = len(&top)?;
            let top_s = top.to_string_lossy().into_owned();
            tar_floor(env, res, ax, d, &top, [Some("register top"), None, None])?;
            // Each run's RW layer stays until the end: releasing it in moby's one-shot process
            // would release its parent, whose count is then zero, and delete the whole chain.
            let name = format!("c{r}");
            // Ours.
            let mut args = vec!["import", top_s.as_str()];
            if let Some(p) = &parent_ours {
                args.extend(["--parent", p.as_str()]);
            }
            let reg = measure::run(&mut env.ours(&ours, &args))?;
            if rec(
                res,
                ax,
                d,
                "register top",
                "ours",
                &reg,
                ok(),
                String::new(),
            ) {
                let top_id = reg.last_line().to_owned();
                let c = measure::run(&mut env.ours(
                    &ours,
                    &["rw", "create", &name, "--parent", &top_id, "--init"],
                ))?;
                let m = measure::run(&mut env.ours(&ours, &["rw", "mount", &name]))?;
                let both = Run {
                    wall: c.wall + m.wall,
                    rss_kb: c.rss_kb.max(m.rss_kb),
                    ok: c.ok && m.ok,
                    stdout: m.stdout.clone(),
                    out_bytes: 0,
                    counted: 0,
                    stderr: if c.ok {
                        m.stderr.clone()
                    } else {
                        c.stderr.clone()
                    },
                };
                if !super::is_root() {
                    eprintln!(
                        "xtask: skipped: chain {d} rw create --init + mount: unprivileged, rw mount works only inside `layerctl unshare`"
                    );
                } else if rec(
                    res,
                    ax,
                    d,
                    "rw create --init + mount",
                    "ours",
                    &both,
                    ok(),
                    String::new(),
                ) {
                    ten_changes(Path::new(m.last_line()), &top_dir)?;
                    let u = measure::run(&mut env.ours(&ours, &["rw", "unmount", &name]))?;
                    let ex = measure::run(&mut env.ours(&ours, &["export", &top_id]))?;
                    rec(
                        res,
                        ax,
                        d,
                        "export top",
                        "ours",
                        &ex,
                        same_len(&ex, want),
                        String::new(),
                    );
                    if u.ok {
                        let ch = measure::run(&mut env.ours(&ours, &["rw", "changes", &name]))?;
                        let n = ch.stdout.lines().count();
                        rec(
                            res,
                            ax,
                            d,
                            "rw changes (10)",
                            "ours",
                            &ch,
                            ok(),
                            format!("{n} lines"),
                        );
                    }
                }
            }
            // moby.
            if moby_ok {
                let mo = |args: &[&str]| env.moby(&moby, args).expect("moby");
                let mut args = vec!["-no-stream", "-q"];
                if let Some(p) = &parent_moby {
                    args.extend(["-parent", p.as_str()]);
                }
                args.push(top_s.as_str());
                let reg = measure::run(&mut mo(&args))?;
                if rec(
                    res,
                    ax,
                    d,
                    "register top",
                    "moby",
                    &reg,
                    ok(),
                    String::new(),
                ) {
                    let top_id = reg.last_line().to_owned();
                    let c =
                        measure::run(&mut mo(&["-rw-create", &name, "-parent", &top_id, "-init"]))?;
                    let m = measure::run(&mut mo(&["-rw-mount", &name]))?;
                    let both = Run {
                        wall: c.wall + m.wall,
                        rss_kb: c.rss_kb.max(m.rss_kb),
                        ok: c.ok && m.ok,
                        stdout: m.stdout.clone(),
                        out_bytes: 0,
                        counted: 0,
                        stderr: if c.ok {
                            m.stderr.clone()
                        } else {
                            c.stderr.clone()
                        },
                    };
                    if rec(
                        res,
                        ax,
                        d,
                        "rw create --init + mount",
                        "moby",
                        &both,
                        ok(),
                        String::new(),
                    ) {
                        ten_changes(Path::new(m.last_line()), &top_dir)?;
                        let u = measure::run(&mut mo(&["-rw-unmount", &name]))?;
                        let ex = measure::run(&mut mo(&["-export", &top_id]))?;
                        rec(
                            res,
                            ax,
                            d,
                            "export top",
                            "moby",
                            &ex,
                            same_len(&ex, want),
                            String::new(),
                        );
                        if u.ok {
                            let ch = measure::run(&mut mo(&["-changes", &name]))?;
                            rec(
                                res,
                                ax,
                                d,
                                "rw changes (10)",
                                "moby",
                                &ch,
                                ok(),
                                String::new(),
                            );
                        }
                    }
                }
            }
        }
        clean(&ours);
        clean(&moby);
        clean(&dir);
    }
    Ok(())
}

fn tree(env: &Env<'_>, sizes: &[u64], res: &mut Results) -> Result<()> {
    let ax = Axis::Tree;
    for &d in sizes {
        let deep = env.path(&format!("tree-deep-{d}.tar"));
        let flat = env.path(&format!("tree-flat-{d}.tar"));
        inputs::deep_tree(&deep, d, env.seed(d))?;
        inputs::flat_tree(&flat, d, env.seed(d))?;
        for _ in 0..env.o.runs {
            for (variant, tar) in [("deep", &deep), ("flat", &flat)] {
                let reg = format!("register ({variant})");
                let exp = format!("export ({variant})");
                tar_floor(env, res, ax, d, tar, [Some(&reg), Some(&exp), None])?;
                let want = len(tar)?;
                let tar_s = tar.to_string_lossy().into_owned();
                let ours = env.path("ours");
                fresh(&ours)?;
                let r = measure::run(&mut env.ours(&ours, &["import", &tar_s]))?;
                if rec(res, ax, d, &reg, "ours", &r, ok(), String::new()) {
                    let ex = measure::run(&mut env.ours(&ours, &["export", r.last_line()]))?;
                    rec(
                        res,
                        ax,
                        d,
                        &exp,
                        "ours",
                        &ex,
                        same_len(&ex, want),
                        String::new(),
                    );
                }
                clean(&ours);
                let moby = env.path("moby");
                fresh(&moby)?;
                if let Some(mut cmd) = env.moby(&moby, &["-no-stream", "-q", &tar_s]) {
                    let r = measure::run(&mut cmd)?;
                    if rec(res, ax, d, &reg, "moby", &r, ok(), String::new()) {
                        let ex = measure::run(
                            &mut env.moby(&moby, &["-export", r.last_line()]).expect("moby"),
                        )?;
                        rec(
                            res,
                            ax,
                            d,
                            &exp,
                            "moby",
                            &ex,
                            same_len(&ex, want),
                            String::new(),
                        );
                    }
                }
                clean(&moby);
            }
        }
        std::fs::remove_file(&deep)?;
        std::fs::remove_file(&flat)?;
    }
    Ok(())
}

fn concurrency(env: &Env<'_>, sizes: &[u64], res: &mut Results) -> Result<()> {
    let ax = Axis::Concurrency;
    let per = env.o.per_layer_files;
    for &k in sizes {
        let tars: Vec<PathBuf> = (0..k).map(|i| env.path(&format!("conc-{i}.tar"))).collect();
        for (i, t) in tars.iter().enumerate() {
            inputs::many_files(t, per, env.seed(5_000 + i as u64))?;
        }
        let tar_args: Vec<String> = tars
            .iter()
            .map(|t| t.to_string_lossy().into_owned())
            .collect();
        let note = |secs: f64, errors: usize| {
            format!("{:.2} layers/s, {errors} errors", k as f64 / secs.max(1e-9))
        };
        let steps = [
            "registers, threads of one process",
            "registers, separate processes",
        ];
        for _ in 0..env.o.runs {
            // GNU tar: k extractions at once, each into its own directory.
            let dirs: Vec<PathBuf> = (0..k).map(|i| env.path(&format!("tar-x{i}"))).collect();
            for d in &dirs {
                fresh(d)?;
            }
            let mut cmds: Vec<Command> = tars.iter().zip(&dirs).map(|(t, d)| tar_x(t, d)).collect();
            let (wall, runs) = measure::run_all(&mut cmds)?;
            let errors = runs.iter().filter(|r| !r.ok).count();
            let all = summary(wall, &runs);
            rec(res, ax, k, steps[1], "tar", &all, ok(), note(wall, errors));
            for d in &dirs {
                clean(d);
            }
            // Ours, threads: `layer-bench --parallel` (its own timer, store open excluded).
            let root = env.path("ours");
            fresh(&root)?;
            let mut args = vec!["--parallel"];
            args.extend(tar_args.iter().map(String::as_str));
            let mut r = measure::run(&mut env.bench(&root, &args))?;
            let errors: usize = field(&r.stdout, "parallel  layers=", "errors")
                .and_then(|e| e.parse().ok())
                .unwrap_or(usize::MAX);
            if let Some(s) =
                field(&r.stdout, "parallel  layers=", "secs").and_then(|s| s.parse().ok())
            {
                r.wall = s;
            }
            let check = if errors == 0 {
                listed(env, &root, k)
            } else {
                Err(format!("{errors} registers failed"))
            };
            rec(
                res,
                ax,
                k,
                steps[0],
                "ours",
                &r,
                check,
                note(r.wall, errors),
            );
            clean(&root);
            // Ours, processes: k × `layerctl import` on one root at once.
            fresh(&root)?;
            let mut cmds: Vec<Command> = tar_args
                .iter()
                .map(|t| env.ours(&root, &["import", t]))
                .collect();
            let (wall, runs) = measure::run_all(&mut cmds)?;
            let errors = runs.iter().filter(|r| !r.ok).count();
            let all = summary(wall, &runs);
            let check = if errors == 0 {
                listed(env, &root, k)
            } else {
                Err(all.why())
            };
            rec(
                res,
                ax,
                k,
                steps[1],
                "ours",
                &all,
                check,
                note(wall, errors),
            );
            clean(&root);
            // moby, processes: moby has no lock on a root, so k processes really run at once.
            let root = env.path("moby");
            fresh(&root)?;
            if env.bins.moby.is_some() {
                let mut cmds: Vec<Command> = tar_args
                    .iter()
                    .map(|t| env.moby(&root, &["-no-stream", "-q", t]).expect("moby"))
                    .collect();
                let (wall, runs) = measure::run_all(&mut cmds)?;
                let errors = runs.iter().filter(|r| !r.ok).count();
                let all = summary(wall, &runs);
                rec(res, ax, k, steps[1], "moby", &all, ok(), note(wall, errors));
            }
            clean(&root);
        }
        for t in &tars {
            std::fs::remove_file(t)?;
        }
    }
    Ok(())
}

/// Several runs as one: the wall time of all, the largest RSS, ok if all were, the first
/// failure's stderr.
fn summary(wall: f64, runs: &[Run]) -> Run {
    let failed = runs.iter().find(|r| !r.ok);
    Run {
        wall,
        rss_kb: runs.iter().map(|r| r.rss_kb).max().unwrap_or(0),
        ok: failed.is_none(),
        stdout: String::new(),
        out_bytes: 0,
        counted: 0,
        stderr: failed.map(|r| r.stderr.clone()).unwrap_or_default(),
    }
}

/// `layerctl ls` lists exactly `want` layers.
fn listed(env: &Env<'_>, root: &Path, want: u64) -> Result<(), String> {
    let ls =
        measure::run_counting(&mut env.ours(root, &["--json", "ls"])).map_err(|e| e.to_string())?;
    let n = ls.counted as u64;
    if ls.ok && n == want {
        Ok(())
    } else {
        Err(format!("{n} layers in the store after {want} registers"))
    }
}
