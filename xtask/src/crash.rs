//! `cargo xtask crash [--runs N] [--driver vfs|overlay2|both] [--seed S] [--bin LAYERCTL]
//! [--userns-remap USER|new | --rootless USER|new] [--keep] [-v]`: the SIGKILL campaign on the
//! whole product.
//!
//! Builds `layerctl` (release) and drives it on one data-root per driver with the commands a
//! user runs: `import` of small generated layers with parents, `load` of a small `docker save`
//! image (its layers, config and tag) and `rmi` of it, `rm`, and the RW cycle `rw create` →
//! `rw mount` → (a file written into the mount) → `commit` → `rw unmount` → `rw rm`; half the
//! runs then end with a `gc` or a `check --repair --remove-broken` on what the run left, so
//! the destructive paths themselves are killed too (they may never remove a layer or RW
//! layer). Each command is SIGKILLed after a random delay drawn from 0..1.5× the command's
//! running average duration, so kills land anywhere from process
//! start-up to the final rename (and sometimes after the command finished: no kill).
//!
//! After every run: `check` (full content verification) may only report leftovers (and, after
//! a killed `rw rm`, that RW layer with directories already removed: moby's order removes the
//! directories first and the record last, so the user's retry of `rw rm`, which the harness
//! then runs, finishes it), then `gc`, then `check` again must be clean; and we check for
//! ourselves:
//!
//! * the ledger: a layer whose chain ID a command printed (import, load, commit) must still be
//!   there unless a `rm` that printed it as removed completed; an RW layer whose `rw create`
//!   printed its mount ID must be there unless its `rw rm` completed;
//! * images, old or new and never mixed: after gc, `images` lists either nothing or exactly
//!   the loaded image (its ID, its one tag `crash:latest`, every layer of it in the store); it
//!   is there after a completed `load`, gone after a completed `rmi`, and after a killed one
//!   either (gc rolls an interrupted load back or forward and finishes an interrupted rmi);
//!   when a run's load or rmi leaves no image, no layer of the image that the load registered
//!   (or, after an rmi, none at all) is left that nothing holds;
//! * no leftovers: no `layerdb/tmp/write-set-*`, no `-removing` dirs, no driver directory that
//!   no layer's `cache-id` nor any RW layer's `mount-id`/`init-id` names, no dangling overlay2
//!   `l/` link, no overlay mount under the root that no RW layer explains;
//! * nothing outside the root changed (a sentinel file beside it).
//!
//! Prints per driver: runs, kills, lost, corrupt, leftovers after gc, mixed images, escapes
//! and panics (a command that exits 101); fails if any of the last six is not zero.
//!
//! `--userns-remap USER` runs every command with `--userns-remap USER` (the store then lives in
//! `<root>/<uid>.<gid>/`; what the campaign writes into a mount is given to the remapped root,
//! as a container's root would write it). `--rootless USER` runs every command as USER (so
//! in layerctl's own user namespace, overlay2 included), the mount-and-write step inside
//! `layerctl unshare`, and the sentinel owned by USER so that an escape would have the rights
//! to change it. `new` makes a throwaway user with 65536 subordinate IDs and deletes it at the
//! end. Both need root.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sha2::{Digest, Sha256};

use crate::{cargo, step, workspace_root};

use testkit::testuser::TestUser;

/// How `layerctl` is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Plain,
    Remap,
    Rootless,
}

/// The binary and how to run it.
struct Invoke {
    bin: PathBuf,
    mode: Mode,
    user: Option<TestUser>,
}

impl Invoke {
    /// `layerctl --root R --driver D -q [--userns-remap U]`, as the user when rootless.
    fn command(&self, root: &Path, driver: &str) -> Command {
        let mut c = match (&self.user, self.mode) {
            (Some(u), Mode::Rootless) => u.command(&self.bin),
            _ => Command::new(&self.bin),
        };
        c.arg("--root").arg(root).args(["--driver", driver, "-q"]);
        if let (Some(u), Mode::Remap) = (&self.user, self.mode) {
            c.args(["--userns-remap", &u.name]);
        }
        c
    }

    /// Where the store is under `root`: `<root>/<uid>.<gid>` when remapped.
    fn store_root(&self, root: &Path) -> PathBuf {
        if self.mode != Mode::Remap {
            return root.to_path_buf();
        }
        fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.path())
            .find(|p| remapped_pair(p).is_some())
            .unwrap_or_else(|| root.to_path_buf())
    }
}

/// `(uid, gid)` from a remapped store dir's name `<uid>.<gid>`.
fn remapped_pair(dir: &Path) -> Option<(u32, u32)> {
    let name = dir.file_name()?.to_str()?;
    let (u, g) = name.split_once('.')?;
    Some((u.parse().ok()?, g.parse().ok()?))
}

/// xorshift64*: deterministic per seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        (!items.is_empty()).then(|| &items[self.below(items.len() as u64) as usize])
    }
}

fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Moby's chain ID: the DiffID for a base layer, else sha256 of `"<parent chain> <diff id>"`.
fn chain_of(parent: Option<&str>, diff_id: &str) -> String {
    match parent {
        None => diff_id.to_owned(),
        Some(p) => format!("sha256:{}", sha256_hex(format!("{p} {diff_id}").as_bytes())),
    }
}

/// One generated layer: a tar file and the chain it registers as.
struct GenLayer {
    path: PathBuf,
    chain: String,
    parent: Option<String>,
}

/// A layer tar: a few small files, one larger file (so register takes long enough to be
/// killed in the middle), a symlink, a hard link and a whiteout of the previous layer's file.
fn layer_tar(rng: &mut Rng, tag: &str, index: usize) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let add = |b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]| -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000 + index as u64);
        h.set_cksum();
        b.append_data(&mut h, name, data)?;
        Ok(())
    };
    let dir = format!("{tag}{index}");
    for f in 0..24 {
        let len = rng.below(32 << 10) as usize;
        let data: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        add(&mut b, &format!("{dir}/f{f}"), &data)?;
    }
    let big: Vec<u8> = (0..(3 << 20))
        .map(|i: usize| (i as u8) ^ (index as u8))
        .collect();
    add(&mut b, &format!("{dir}/big"), &big)?;
    add(&mut b, &format!("shared/from-{tag}{index}"), b"x")?;
    if index > 0 {
        add(&mut b, &format!("{tag}{}/.wh.f0", index - 1), b"")?;
    }
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Symlink);
    h.set_size(0);
    h.set_mode(0o777);
    b.append_link(&mut h, format!("{dir}/link"), "f1")?;
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Link);
    h.set_size(0);
    h.set_mode(0o644);
    b.append_link(&mut h, format!("{dir}/hard"), format!("{dir}/f2"))?;
    Ok(b.into_inner()?)
}

/// The import chain (`imp0` ← `imp1` ← …) and a `docker save` image of its own three layers.
fn generate_inputs(dir: &Path, rng: &mut Rng) -> Result<(Vec<GenLayer>, LoadImage)> {
    fs::create_dir_all(dir)?;
    let mut chain = Vec::new();
    let mut parent: Option<String> = None;
    for i in 0..5 {
        let tar = layer_tar(rng, "imp", i)?;
        let diff = format!("sha256:{}", sha256_hex(&tar));
        let id = chain_of(parent.as_deref(), &diff);
        let path = dir.join(format!("layer{i}.tar"));
        fs::write(&path, &tar)?;
        chain.push(GenLayer {
            path,
            chain: id.clone(),
            parent: parent.clone(),
        });
        parent = Some(id);
    }

    // docker save: manifest.json, <config>.json, <n>/layer.tar.
    let mut image = tar::Builder::new(Vec::new());
    let mut diff_ids = Vec::new();
    let mut layer_paths = Vec::new();
    let mut image_chain = Vec::new();
    let mut parent: Option<String> = None;
    let add = |image: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]| -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        image.append_data(&mut h, name, data)?;
        Ok(())
    };
    for i in 0..3 {
        let tar = layer_tar(rng, "img", i)?;
        let diff = format!("sha256:{}", sha256_hex(&tar));
        let id = chain_of(parent.as_deref(), &diff);
        image_chain.push(id.clone());
        parent = Some(id);
        let path = format!("{}/layer.tar", sha256_hex(&tar));
        add(&mut image, &path, &tar)?;
        diff_ids.push(diff);
        layer_paths.push(path);
    }
    let config = serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    })
    .to_string();
    let config_name = format!("{}.json", sha256_hex(config.as_bytes()));
    add(&mut image, &config_name, config.as_bytes())?;
    let manifest = serde_json::json!([{
        "Config": config_name,
        "RepoTags": ["crash:latest"],
        "Layers": layer_paths,
    }])
    .to_string();
    add(&mut image, "manifest.json", manifest.as_bytes())?;
    let image_path = dir.join("image.tar");
    fs::write(&image_path, image.into_inner()?)?;
    Ok((
        chain,
        LoadImage {
            path: image_path,
            id: format!("sha256:{}", sha256_hex(config.as_bytes())),
            chain: image_chain,
        },
    ))
}

/// The `docker save` archive the campaign loads and removes again.
struct LoadImage {
    path: PathBuf,
    /// Its image ID (the config's digest).
    id: String,
    /// Its layers' chain IDs, bottom first.
    chain: Vec<String>,
}

/// What the campaign knows of the loaded image.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum ImageState {
    #[default]
    Absent,
    Present,
    /// A killed `load` or `rmi`: either, settled by the next verification.
    Either,
}

/// What one command did.
struct Outcome {
    killed: bool,
    success: bool,
    /// Exited with Rust's panic status (101) instead of an error.
    panicked: bool,
    stdout: String,
    stderr: String,
}

/// Runs `layerctl` as the campaign does: killed after `kill_after` unless it is done by then.
fn run_ctl(
    ctl: &Invoke,
    root: &Path,
    driver: &str,
    args: &[&str],
    kill_after: Option<Duration>,
) -> Result<Outcome> {
    let mut child = ctl
        .command(root, driver)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("spawning {}", ctl.bin.display()))?;
    let start = Instant::now();
    let mut killed = false;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if kill_after.is_some_and(|d| start.elapsed() >= d) {
            child.kill()?; // SIGKILL
            killed = true;
            break child.wait()?;
        }
        std::thread::sleep(Duration::from_micros(300));
    };
    let mut stdout = String::new();
    let mut stderr = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout)?;
    child.stderr.take().unwrap().read_to_string(&mut stderr)?;
    Ok(Outcome {
        killed,
        success: !killed && status.success(),
        panicked: !killed && status.code() == Some(101),
        stdout,
        stderr,
    })
}

/// A `layerctl --json` command that must succeed, parsed.
fn ctl_json(
    ctl: &Invoke,
    root: &Path,
    driver: &str,
    args: &[&str],
) -> Result<(bool, serde_json::Value)> {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let out = run_ctl(ctl, root, driver, &full, None)?;
    let value = serde_json::from_str(&out.stdout).with_context(|| {
        format!(
            "layerctl {args:?}: not JSON: {:?} (stderr {:?})",
            out.stdout, out.stderr
        )
    })?;
    Ok((out.success, value))
}

/// What the campaign knows must be there.
#[derive(Default)]
struct Ledger {
    /// Layers that must exist.
    layers: BTreeSet<String>,
    /// RW layers that must exist.
    rw: BTreeSet<String>,
    /// Layers a killed `rm` may have removed (with their ancestors): forgiven if absent.
    maybe_removed: BTreeSet<String>,
    /// The loaded image.
    image: ImageState,
}

/// Counters of one driver's campaign.
#[derive(Default, Debug)]
struct Figures {
    runs: u64,
    commands: u64,
    kills: u64,
    lost: u64,
    corrupt: u64,
    leftovers_before_gc: u64,
    leftovers_after_gc: u64,
    /// RW layers a killed `rw rm` left with their record and some directories already
    /// removed (moby's order: directories first, record last), finished by running `rw rm`
    /// again.
    interrupted_rw_removals: u64,
    /// Images after gc that are neither the old state nor the new one: an untagged or
    /// wrongly tagged image, an image missing a layer, an image back after its rmi.
    mixed_images: u64,
    /// `load` and `rmi` runs killed (each leaves a journal record for gc, or nothing).
    image_kills: u64,
    /// Journal records of interrupted `load`/`rmi` runs that the verifying gc resolved
    /// (a killed command's own rollback resolves none; a killed gc may resolve some first).
    journal_resolved: u64,
    /// Killable `gc` and `check --repair --remove-broken` runs on what the run left (the
    /// destructive paths themselves under SIGKILL), and how many of them were killed.
    maintenance: u64,
    maintenance_kills: u64,
    escapes: u64,
    panics: u64,
}

/// The store as `ls`/`rw ls` see it.
struct Seen {
    layers: BTreeMap<String, Option<String>>,
    cache_ids: BTreeSet<String>,
    rw: BTreeMap<String, (String, Option<String>, Option<String>)>,
}

impl Seen {
    /// `start` and its ancestors, child first, as `ls` reported them.
    fn with_ancestors(&self, start: Option<&String>) -> Vec<String> {
        std::iter::successors(start.cloned(), |id| self.layers.get(id).cloned().flatten()).collect()
    }
}

fn observe(ctl: &Invoke, root: &Path, driver: &str) -> Result<Seen> {
    let (ok, ls) = ctl_json(ctl, root, driver, &["ls"])?;
    if !ok {
        bail!("ls failed");
    }
    let mut layers = BTreeMap::new();
    let mut cache_ids = BTreeSet::new();
    for l in ls.as_array().context("ls: array")? {
        let id = l["chain_id"].as_str().context("chain_id")?.to_owned();
        layers.insert(id, l["parent"].as_str().map(str::to_owned));
        cache_ids.insert(l["cache_id"].as_str().context("cache_id")?.to_owned());
    }
    let (ok, rw) = ctl_json(ctl, root, driver, &["rw", "ls"])?;
    if !ok {
        bail!("rw ls failed");
    }
    let mut rws = BTreeMap::new();
    for m in rw.as_array().context("rw ls: array")? {
        rws.insert(
            m["name"].as_str().context("name")?.to_owned(),
            (
                m["mount_id"].as_str().context("mount_id")?.to_owned(),
                m["init_id"].as_str().map(str::to_owned),
                m["parent"].as_str().map(str::to_owned),
            ),
        );
    }
    Ok(Seen {
        layers,
        cache_ids,
        rw: rws,
    })
}

/// Our own look at the directories: what no check should leave behind (testkit's scan, the
/// one every crash harness runs), against what `ls` and `rw ls` report.
fn leftovers_on_disk(root: &Path, driver: &str, seen: &Seen) -> Result<Vec<String>> {
    let mut driver_dirs: BTreeSet<String> = seen.cache_ids.clone();
    let mut mountable = BTreeSet::new();
    for (mount_id, init_id, _) in seen.rw.values() {
        driver_dirs.insert(mount_id.clone());
        driver_dirs.extend(init_id.clone());
        mountable.insert(mount_id.clone());
    }
    let expected = testkit::leftovers::Expected {
        layers: seen.layers.keys().cloned().collect(),
        rw_layers: seen.rw.keys().cloned().collect(),
        driver_dirs,
        mountable: Some(mountable),
    };
    Ok(testkit::leftovers::in_root(root, driver, &expected))
}

/// One driver's campaign.
struct Campaign<'a> {
    ctl: &'a Invoke,
    root: PathBuf,
    driver: &'a str,
    rng: Rng,
    chain: &'a [GenLayer],
    image: &'a LoadImage,
    ledger: Ledger,
    figures: Figures,
    /// Running mean duration of each command kind, to aim kills inside it.
    mean_ms: BTreeMap<&'static str, f64>,
    next_rw: u64,
    /// The RW layer whose `rw rm` was killed in this run, if one was.
    killed_rw_rm: Option<String>,
    /// The image operation of this run, if it was one.
    image_op: Option<ImageOp>,
    verbose: bool,
}

/// A `load` or `rmi` a run ran, for the check of what it may leave.
enum ImageOp {
    /// The image's layers that were there before it began (a rollback keeps them).
    Load {
        before: BTreeSet<String>,
    },
    Rmi,
}

impl Campaign<'_> {
    /// Runs one command with a random kill delay; records duration and the kill.
    fn cmd(&mut self, kind: &'static str, args: &[&str]) -> Result<Outcome> {
        let mean = *self.mean_ms.get(kind).unwrap_or(&80.0);
        // One command in three runs to completion, so the store grows and later steps of a
        // cycle get exercised too.
        let kill_after = (self.rng.below(3) != 0).then(|| {
            // An image operation commits at its end (layers, then config, then tags): half of
            // its kills are aimed at the last half of its running time.
            if matches!(kind, "load" | "reload" | "rmi") && self.rng.below(2) == 0 {
                let half = (mean * 500.0) as u64;
                Duration::from_micros(half + self.rng.below(half + 1))
            } else {
                Duration::from_micros(self.rng.below((mean * 1500.0) as u64 + 1))
            }
        });
        let start = Instant::now();
        let out = run_ctl(self.ctl, &self.root, self.driver, args, kill_after)?;
        self.figures.commands += 1;
        if out.panicked {
            self.figures.panics += 1;
            eprintln!(
                "crash: {} PANIC in {kind} {args:?}: {}",
                self.driver,
                out.stderr.trim()
            );
        }
        if out.killed {
            self.figures.kills += 1;
        } else {
            let ms = start.elapsed().as_secs_f64() * 1e3;
            self.mean_ms.insert(kind, mean * 0.7 + ms * 0.3);
            if !out.success && self.verbose {
                eprintln!("crash: {kind} {args:?} failed: {}", out.stderr.trim());
            }
        }
        Ok(out)
    }

    fn one_run(&mut self, seen: &Seen) -> Result<()> {
        let present = |id: &str| seen.layers.contains_key(id);
        let choice = self.rng.below(10);
        match choice {
            // Import the next layer of the chain whose parent is there.
            0..=2 => {
                let candidates: Vec<usize> = (0..self.chain.len())
                    .filter(|&i| self.chain[i].parent.as_deref().is_none_or(present))
                    .collect();
                let i = *self.rng.pick(&candidates).context("no importable layer")?;
                let layer = &self.chain[i];
                let path = layer.path.display().to_string();
                let mut args = vec!["import", path.as_str()];
                if let Some(p) = &layer.parent {
                    args.extend(["--parent", p.as_str()]);
                }
                let out = self.cmd("import", &args)?;
                let printed = out.stdout.trim();
                if !printed.is_empty() {
                    if printed != layer.chain {
                        bail!("import printed {printed}, expected {}", layer.chain);
                    }
                    self.ledger.layers.insert(printed.to_owned());
                }
            }
            // Remove the loaded image (untag, delete, release its layers) half the time it
            // is there; a killed rmi may have removed the image's layers.
            3..=4 if present(self.image.chain.last().unwrap()) && self.rng.below(2) == 0 => {
                self.image_op = Some(ImageOp::Rmi);
                let out = self.cmd("rmi", &["rmi", "crash:latest"])?;
                if out.success {
                    self.ledger.image = ImageState::Absent;
                    for line in out.stdout.lines() {
                        if let Some(id) = line.strip_prefix("Deleted: ") {
                            self.ledger.layers.remove(id.trim());
                        }
                    }
                } else if out.killed {
                    self.ledger.image = ImageState::Either;
                    self.figures.image_kills += 1;
                    self.ledger
                        .maybe_removed
                        .extend(self.image.chain.iter().cloned());
                }
            }
            3..=4 => {
                let image = self.image.path.display().to_string();
                self.image_op = Some(ImageOp::Load {
                    before: (self.image.chain.iter())
                        .filter(|l| present(l))
                        .cloned()
                        .collect(),
                });
                // A load of an image that is there registers nothing: timed apart, so that
                // the kills of a real load are aimed by a real load's running time.
                let kind = if present(self.image.chain.last().unwrap()) {
                    "reload"
                } else {
                    "load"
                };
                let out = self.cmd(kind, &["--json", "load", &image])?;
                if out.success {
                    self.ledger.image = ImageState::Present;
                } else if out.killed {
                    self.ledger.image = ImageState::Either;
                    self.figures.image_kills += 1;
                }
                if out
                    .stdout
                    .lines()
                    .any(|l| l.contains(self.image.chain.last().unwrap()))
                {
                    self.ledger.layers.extend(self.image.chain.iter().cloned());
                }
            }
            // rm a leaf that no RW layer uses.
            5..=6 => {
                let leaves: Vec<&String> = seen
                    .layers
                    .keys()
                    .filter(|id| {
                        !seen
                            .layers
                            .values()
                            .any(|p| p.as_deref() == Some(id.as_str()))
                    })
                    .filter(|id| {
                        !seen
                            .rw
                            .values()
                            .any(|(_, _, p)| p.as_deref() == Some(id.as_str()))
                    })
                    .collect();
                let Some(&target) = self.rng.pick(&leaves) else {
                    return Ok(());
                };
                let target = target.clone();
                let out = self.cmd("rm", &["rm", &target])?;
                if out.success {
                    for removed in out.stdout.lines() {
                        self.ledger.layers.remove(removed.trim());
                    }
                } else if out.killed {
                    // A killed rm may have removed the layer and some ancestors.
                    self.ledger
                        .maybe_removed
                        .extend(seen.with_ancestors(Some(&target)));
                }
            }
            // The RW cycle; each step may be the one killed, later steps then skipped.
            _ => {
                if let Some(name) = seen.rw.keys().next().cloned() {
                    // Finish off a leftover RW layer from an earlier killed cycle.
                    let _ = self.cmd("unmount", &["rw", "unmount", &name])?;
                    let out = self.cmd("rw-rm", &["rw", "rm", &name])?;
                    if out.killed {
                        self.killed_rw_rm = Some(name.clone());
                    }
                    if out.success || out.killed {
                        // Gone, or maybe gone (a killed rm may have finished).
                        self.ledger.rw.remove(&name);
                    }
                    return Ok(());
                }
                let ids: Vec<&String> = seen.layers.keys().collect();
                let Some(&parent) = self.rng.pick(&ids) else {
                    return Ok(());
                };
                let parent = parent.clone();
                let name = format!("crash{}", self.next_rw);
                self.next_rw += 1;
                let out = self.cmd("rw-create", &["rw", "create", &name, "--parent", &parent])?;
                if !out.stdout.trim().is_empty() {
                    self.ledger.rw.insert(name.clone());
                }
                if !out.success {
                    return Ok(());
                }
                if self.ctl.mode == Mode::Rootless {
                    // The mount is usable only in the namespace: mount and write in one.
                    let script = format!(
                        "p=$(\"$0\" --driver {} -q rw mount {name}) && echo {name} > \"$p/written-by-{name}\" && rm -f \"$p/shared/from-imp0\"",
                        self.driver
                    );
                    let bin = self.ctl.bin.display().to_string();
                    let out = self.cmd("mount", &["unshare", "--", "sh", "-c", &script, &bin])?;
                    if !out.success {
                        return Ok(());
                    }
                } else {
                    let out = self.cmd("mount", &["rw", "mount", &name])?;
                    if !out.success {
                        return Ok(());
                    }
                    let mount = PathBuf::from(out.stdout.trim());
                    let written = mount.join(format!("written-by-{name}"));
                    fs::write(&written, name.as_bytes())
                        .with_context(|| format!("writing into {}", mount.display()))?;
                    // A remapped container's root writes as the remapped root.
                    if let Some((uid, gid)) = remapped_pair(&self.ctl.store_root(&self.root)) {
                        std::os::unix::fs::lchown(&written, Some(uid), Some(gid))?;
                    }
                    let _ = fs::remove_file(mount.join("shared/from-imp0"));
                }
                let out = self.cmd("commit", &["commit", &name])?;
                let printed = out.stdout.trim();
                if !printed.is_empty() {
                    self.ledger.layers.insert(printed.to_owned());
                }
                if !out.success {
                    return Ok(());
                }
                let out = self.cmd("unmount", &["rw", "unmount", &name])?;
                if !out.success {
                    return Ok(());
                }
                let out = self.cmd("rw-rm", &["rw", "rm", &name])?;
                if out.killed {
                    self.killed_rw_rm = Some(name.clone());
                }
                if out.success || out.killed {
                    self.ledger.rw.remove(&name);
                }
            }
        }
        Ok(())
    }

    /// Half the runs end with a destructive command a user runs on what the run left
    /// (leftovers of a kill, an interrupted removal): `gc` or `check --repair
    /// --remove-broken`, killable like any other. Neither may ever remove a layer or RW layer
    /// (the ledger counts one as lost), and what a killed one leaves must be leftovers only.
    fn maintenance(&mut self) -> Result<()> {
        let out = match self.rng.below(4) {
            0 => self.cmd("gc", &["gc"])?,
            1 => self.cmd(
                "repair",
                &["check", "--repair", "--remove-broken", "--quick"],
            )?,
            _ => return Ok(()),
        };
        self.figures.maintenance += 1;
        if out.killed {
            self.figures.maintenance_kills += 1;
        }
        Ok(())
    }

    /// check → gc → check, the ledger and our own scan. Returns the state after gc.
    fn verify(&mut self, run: u64) -> Result<Seen> {
        let (_, first) = ctl_json(self.ctl, &self.root, self.driver, &["check"])?;
        let killed_rw_rm = self.killed_rw_rm.take();
        let mut unfinished_rw = None;
        for p in first["problems"].as_array().context("problems")? {
            let p = p.as_str().unwrap_or_default();
            if p.starts_with("leftover:") {
                self.figures.leftovers_before_gc += 1;
            } else if let Some(name) = killed_rw_rm.as_deref().filter(|n| {
                p.starts_with(&format!("rw layer {n}: driver directory")) && p.contains("missing")
            }) {
                // The killed `rw rm` had removed directories, not yet the record: the user's
                // retry finishes it (gc keeps records).
                unfinished_rw = Some(name.to_owned());
            } else {
                self.figures.corrupt += 1;
                eprintln!("crash: run {run}: {} CORRUPT (before gc): {p}", self.driver);
            }
        }
        if let Some(name) = unfinished_rw {
            self.figures.interrupted_rw_removals += 1;
            let out = run_ctl(
                self.ctl,
                &self.root,
                self.driver,
                &["rw", "rm", &name],
                None,
            )?;
            if !out.success {
                bail!(
                    "run {run}: rw rm {name} again failed: {}",
                    out.stderr.trim()
                );
            }
        }
        let (gc_ok, gc) = ctl_json(self.ctl, &self.root, self.driver, &["gc"])?;
        if !gc_ok {
            bail!("run {run}: gc failed");
        }
        if let Some(resolved) = gc["interrupted"].as_array() {
            self.figures.journal_resolved += resolved.len() as u64;
            if self.verbose {
                for r in resolved {
                    eprintln!("crash: run {run}: gc: {}", r.as_str().unwrap_or_default());
                }
            }
        }
        let (clean, second) = ctl_json(self.ctl, &self.root, self.driver, &["check"])?;
        for p in second["problems"].as_array().context("problems")? {
            self.figures.leftovers_after_gc += 1;
            eprintln!("crash: run {run}: {} NOT CLEAN after gc: {p}", self.driver);
        }
        if !clean && second["problems"].as_array().is_some_and(Vec::is_empty) {
            bail!("run {run}: check failed without problems");
        }
        let seen = observe(self.ctl, &self.root, self.driver)?;
        for id in &self.ledger.layers {
            if !seen.layers.contains_key(id) && !self.ledger.maybe_removed.contains(id) {
                self.figures.lost += 1;
                eprintln!("crash: run {run}: {} LOST layer {id}", self.driver);
            }
        }
        for name in &self.ledger.rw {
            if !seen.rw.contains_key(name) {
                self.figures.lost += 1;
                eprintln!("crash: run {run}: {} LOST RW layer {name}", self.driver);
            }
        }
        // Forgiven removals are settled now: whatever is absent is gone for good.
        let maybe = std::mem::take(&mut self.ledger.maybe_removed);
        self.ledger
            .layers
            .retain(|id| seen.layers.contains_key(id) || !maybe.contains(id));
        // A lost layer is counted once, then forgotten.
        self.ledger.layers.retain(|id| seen.layers.contains_key(id));
        self.ledger.rw.retain(|n| seen.rw.contains_key(n));
        for l in leftovers_on_disk(&self.ctl.store_root(&self.root), self.driver, &seen)? {
            self.figures.leftovers_after_gc += 1;
            eprintln!("crash: run {run}: {} LEFTOVER after gc: {l}", self.driver);
        }
        self.verify_images(run, &seen)?;
        Ok(seen)
    }

    /// After gc the loaded image is wholly there or wholly gone, as the ledger allows.
    fn verify_images(&mut self, run: u64, seen: &Seen) -> Result<()> {
        let (ok, list) = ctl_json(self.ctl, &self.root, self.driver, &["images"])?;
        if !ok {
            bail!("run {run}: images failed");
        }
        let list = list.as_array().context("images: array")?;
        let mut mixed = Vec::new();
        let mut present = false;
        for image in list {
            let id = image["id"].as_str().unwrap_or_default();
            let tags: Vec<&str> = image["repo_tags"]
                .as_array()
                .map(|t| t.iter().filter_map(|t| t.as_str()).collect())
                .unwrap_or_default();
            if id != self.image.id {
                mixed.push(format!("unknown image {id} (tags {tags:?})"));
                continue;
            }
            present = true;
            if tags != ["crash:latest"] {
                mixed.push(format!("image {id} has tags {tags:?}, not [crash:latest]"));
            }
            if image["top_layer"].as_str() != self.image.chain.last().map(String::as_str) {
                mixed.push(format!("image {id}: top layer {}", image["top_layer"]));
            }
            for layer in &self.image.chain {
                if !seen.layers.contains_key(layer) {
                    mixed.push(format!("image {id}: its layer {layer} is gone"));
                }
            }
        }
        // Old state after this run's load or rmi: what the load registered is gone, and after
        // an rmi every layer of the image is, but for those a layer or RW layer of the user's
        // (a commit on top of one) holds. (A killed `rm` may leave unheld layers of its own;
        // other runs are not judged by this.)
        let image_op = self.image_op.take();
        if let (false, Some(op)) = (present, &image_op) {
            let mut held = BTreeSet::new();
            for (id, parent) in &seen.layers {
                if !self.image.chain.contains(id) {
                    held.extend(seen.with_ancestors(parent.as_ref()));
                }
            }
            for (_, _, parent) in seen.rw.values() {
                held.extend(seen.with_ancestors(parent.as_ref()));
            }
            for layer in &self.image.chain {
                let kept_by_rollback =
                    matches!(op, ImageOp::Load { before } if before.contains(layer));
                if seen.layers.contains_key(layer) && !held.contains(layer) && !kept_by_rollback {
                    mixed.push(format!("no image, but its layer {layer} is left, unheld"));
                }
            }
        }
        match (self.ledger.image, present) {
            (ImageState::Present, false) => {
                self.figures.lost += 1;
                eprintln!(
                    "crash: run {run}: {} LOST image {}",
                    self.driver, self.image.id
                );
            }
            (ImageState::Absent, true) => mixed.push(format!(
                "image {} back after a completed rmi",
                self.image.id
            )),
            _ => {}
        }
        for m in &mixed {
            self.figures.mixed_images += 1;
            eprintln!(
                "crash: run {run}: {} MIXED images after gc: {m}",
                self.driver
            );
        }
        self.ledger.image = if present {
            ImageState::Present
        } else {
            ImageState::Absent
        };
        Ok(())
    }
}

fn sentinel_ok(path: &Path) -> bool {
    fs::read(path).is_ok_and(|c| c == b"outside the root")
}

/// Removes RW layers (unmounting), then detaches any mount still under the root (what a
/// finding may have leaked), so the work dir can be removed.
fn teardown(ctl: &Invoke, root: &Path, driver: &str) -> Result<()> {
    if let Ok(seen) = observe(ctl, root, driver) {
        for name in seen.rw.keys() {
            let _ = run_ctl(ctl, root, driver, &["rw", "unmount", name], None);
            let _ = run_ctl(ctl, root, driver, &["rw", "rm", name], None);
        }
    }
    let prefix = root.display().to_string();
    let mountinfo = fs::read_to_string("/proc/self/mountinfo")?;
    let mut leaked: Vec<&str> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .filter(|p| p.starts_with(&prefix))
        .collect();
    leaked.sort_by_key(|p| std::cmp::Reverse(p.len()));
    for point in leaked {
        eprintln!("crash: {driver}: detaching leaked mount {point}");
        let _ = Command::new("umount").args(["-l", point]).status();
    }
    Ok(())
}

pub fn run(args: &[String]) -> Result<()> {
    let mut runs = 100u64;
    let mut drivers = vec!["vfs", "overlay2"];
    let mut seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_nanos() as u64
        | 1;
    let mut keep = false;
    let mut verbose = false;
    let mut prebuilt: Option<PathBuf> = None;
    let mut userns: Option<(Mode, String)> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--runs" => runs = it.next().context("--runs N")?.parse()?,
            "--seed" => seed = it.next().context("--seed S")?.parse::<u64>()? | 1,
            "--keep" => keep = true,
            "--bin" => prebuilt = Some(it.next().context("--bin PATH")?.into()),
            "-v" | "--verbose" => verbose = true,
            "--userns-remap" => {
                userns = Some((
                    Mode::Remap,
                    it.next().context("--userns-remap USER|new")?.clone(),
                ))
            }
            "--rootless" => {
                userns = Some((
                    Mode::Rootless,
                    it.next().context("--rootless USER|new")?.clone(),
                ))
            }
            "--driver" => {
                drivers = match it.next().map(String::as_str) {
                    Some("vfs") => vec!["vfs"],
                    Some("overlay2") => vec!["overlay2"],
                    Some("both") => vec!["vfs", "overlay2"],
                    other => bail!("--driver vfs|overlay2|both, not {other:?}"),
                }
            }
            other => bail!(
                "unknown argument {other:?}; usage: cargo xtask crash [--runs N] \
                 [--driver vfs|overlay2|both] [--seed S] [--bin LAYERCTL] \
                 [--userns-remap USER|new | --rootless USER|new] [--keep] [-v]"
            ),
        }
    }
    if userns.is_some() && !rustix_is_root() {
        bail!("--userns-remap and --rootless need root (to set up and run as the user)");
    }
    if drivers.contains(&"overlay2") && !rustix_is_root() {
        eprintln!("crash: skipping overlay2: not root");
        drivers.retain(|d| *d != "overlay2");
    }

    let ctl = match prebuilt {
        Some(bin) => bin,
        None => {
            let mut build = cargo();
            build.args(["build", "--release", "-p", "layerstore-cli"]);
            step("build layerctl", build)?;
            let target_dir = std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace_root().join("target"));
            target_dir.join("release").join("layerctl")
        }
    };

    let (mode, user) = match &userns {
        None => (Mode::Plain, None),
        Some((mode, name)) if name == "new" => (*mode, Some(TestUser::create("lscr", Some(65536)))),
        Some((mode, name)) => (*mode, Some(TestUser::existing(name))),
    };
    let ctl = match (&user, mode) {
        // The user must be able to run it wherever the build is.
        (Some(u), Mode::Rootless) => u.copy_in(&ctl),
        _ => ctl,
    };
    let ctl = Invoke {
        bin: ctl,
        mode,
        user,
    };
    if let Some(u) = &ctl.user {
        eprintln!(
            "crash: {mode:?} as user {} (subordinate IDs from {:?})",
            u.name, u.subid_start
        );
    }
    let work = std::env::temp_dir().join(format!("layerctl-crash-{}", std::process::id()));
    let mut rng = Rng(seed);
    let (chain, image) = generate_inputs(&work.join("inputs"), &mut rng)?;
    eprintln!(
        "crash: seed {seed}, {runs} runs per driver, work dir {}",
        work.display()
    );

    let mut failed = false;
    for driver in drivers {
        let base = work.join(driver);
        let root = base.join("root");
        fs::create_dir_all(&root)?;
        let sentinel = base.join("sentinel");
        fs::write(&sentinel, b"outside the root")?;
        if let (Some(u), Mode::Rootless) = (&ctl.user, mode) {
            for p in [&base, &root, &sentinel] {
                std::os::unix::fs::chown(p, Some(u.uid), Some(u.gid))?;
            }
        }
        let mut c = Campaign {
            ctl: &ctl,
            root: root.clone(),
            driver,
            rng: Rng(seed ^ 0x9E37_79B9_7F4A_7C15),
            chain: &chain,
            image: &image,
            ledger: Ledger::default(),
            figures: Figures::default(),
            mean_ms: BTreeMap::new(),
            next_rw: 0,
            killed_rw_rm: None,
            image_op: None,
            verbose,
        };
        // `info` sets the new root up: `check` and the other read-only commands create
        // nothing, and a root no command has stored anything in has nothing to check.
        let setup = run_ctl(&ctl, &root, driver, &["info"], None)?;
        if !setup.success {
            bail!(
                "{driver}: layerctl info on the new root: {}",
                setup.stderr.trim()
            );
        }
        let started = Instant::now();
        let mut seen = c.verify(0)?;
        for run in 1..=runs {
            c.figures.runs += 1;
            c.one_run(&seen)
                .with_context(|| format!("{driver} run {run}"))?;
            c.maintenance()
                .with_context(|| format!("{driver} run {run}: gc/repair"))?;
            seen = c.verify(run)?;
            if !sentinel_ok(&sentinel) {
                c.figures.escapes += 1;
            }
            if run % 25 == 0 {
                eprintln!("crash: {driver}: {run}/{runs} runs, {:?}", c.figures);
            }
        }
        let f = &c.figures;
        println!(
            "crash {driver}: runs {} commands {} kills {} lost {} corrupt {} \
             leftovers-before-gc {} leftovers-after-gc {} interrupted-rw-removals {} \
             gc-or-repair {} (killed {}) load-or-rmi-killed {} (gc resolved {}) mixed-images {} escapes {} panics {} \
             ({:.0}s; layers now {}, seed {seed})",
            f.runs,
            f.commands,
            f.kills,
            f.lost,
            f.corrupt,
            f.leftovers_before_gc,
            f.leftovers_after_gc,
            f.interrupted_rw_removals,
            f.maintenance,
            f.maintenance_kills,
            f.image_kills,
            f.journal_resolved,
            f.mixed_images,
            f.escapes,
            f.panics,
            started.elapsed().as_secs_f64(),
            seen.layers.len(),
        );
        failed |=
            f.lost + f.corrupt + f.leftovers_after_gc + f.mixed_images + f.escapes + f.panics > 0;
        teardown(&ctl, &root, driver)?;
    }
    if !keep {
        let _ = fs::remove_dir_all(&work);
    }
    if failed {
        bail!("the crash campaign found lost, corrupt, mixed or leftover state (see above)");
    }
    Ok(())
}

fn rustix_is_root() -> bool {
    // xtask has no rustix; /proc tells the effective uid.
    fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}
