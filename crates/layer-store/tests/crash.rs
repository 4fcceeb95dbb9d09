//! SIGKILL at random moments: a child process works on one data-root (register, release,
//! create RW layer, commit an RW layer, release RW layer, in a random loop) and is killed
//! 0–300 ms after it says it is ready. After each kill the root is opened and:
//!
//! * before any cleanup, check (with content verification) finds nothing broken, only
//!   leftovers of interrupted work;
//! * after cleanup (`collect_garbage` at open) check is clean and nothing is left over
//!   (driver dirs, layerdb entries, write-sets, orphans). Every other run the harness leaves
//!   the cleanup to the next worker's open instead, and that worker says it is ready before
//!   opening, so kills also land in the middle of collecting leftovers;
//! * every layer the worker reported committed (chain IDs appended to a log with fsync once
//!   `register` returned) is present unless the worker also reported releasing it (logged
//!   *before* the release), and the same for RW layers;
//! * reference counts equal children + RW layers (no process holds anything now).
//!
//! The worker is this test binary re-executed with `--exact worker --nocapture` and
//! `LAYERSTORE_CRASH_WORKER=1`; without that variable the `worker` test does nothing.
//! 50 kills per driver by default; `LAYERSTORE_CRASH_RUNS=N` runs N.

use testkit::store as common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use layer_digest::ChainId;
use layer_meta::Durability;
use layer_store::{
    CheckOptions, CreateRwOptions, InitFn, LayerRef, Problem, RwLayerRef, Store, StoreOptions,
};
use rand::Rng;
use testkit::store::{assert_consistent, assert_counts};

const READY: &str = "LAYERSTORE_CRASH_WORKER_READY";

fn options(root: &Path, driver: &str) -> StoreOptions {
    let mut o = StoreOptions::new(root).driver(driver);
    o.durability = Durability::Full;
    o
}

/// The worker's log: one line per fact, each fsynced before the worker goes on.
struct Log(std::fs::File);

impl Log {
    fn line(&mut self, s: &str) {
        self.0.write_all(format!("{s}\n").as_bytes()).unwrap();
        self.0.sync_data().unwrap();
    }
}

fn small_tar(rng: &mut impl Rng) -> Vec<u8> {
    // A few contents repeat, so duplicate registers (and their cleanup) get killed too.
    let n: u32 = rng.random_range(0..12);
    let body: Vec<u8> = if n < 4 {
        format!("shared content {n}\n").into_bytes()
    } else {
        let len = rng.random_range(1..20_000);
        (0..len).map(|_| rng.random::<u8>()).collect()
    };
    let name = format!("d{}/file{n}", n % 3);
    common::tar_of(&[(&name, &body, 0o644), ("etc/marker", b"m\n", 0o600)])
}

fn init_fn() -> &'static InitFn {
    &|root: &Path| {
        common::write(root, "etc/hostname", b"crash\n", 0o644);
        Ok(())
    }
}

/// The child: adopts what the root holds, then mutates it until killed.
#[test]
fn worker() {
    if std::env::var_os("LAYERSTORE_CRASH_WORKER").is_none() {
        return;
    }
    let root = PathBuf::from(std::env::var("LAYERSTORE_CRASH_ROOT").unwrap());
    let driver = std::env::var("LAYERSTORE_CRASH_DRIVER").unwrap();
    let log_path = std::env::var("LAYERSTORE_CRASH_LOG").unwrap();
    let mut log = Log(std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .unwrap());
    // Early: killable while opening, i.e. while collecting what the last kill left.
    let early = std::env::var_os("LAYERSTORE_CRASH_EARLY").is_some_and(|v| !v.is_empty());
    if early {
        println!("{READY}");
    }
    let mut opts = options(&root, &driver);
    opts.cleanup_on_open = true;
    let store = Store::open(opts).unwrap();
    let mut rng = rand::rng();
    let epoch: u64 = rng.random();
    // A new process holds nothing: log a new epoch, then take (and log) one reference on
    // every layer and RW layer, so that later releases are balanced by the log.
    log.line("E");
    let mut held: Vec<LayerRef> = Vec::new();
    for id in store.map().into_keys() {
        held.push(store.get(&id).unwrap());
        log.line(&format!("C {id}"));
    }
    let mut rws: Vec<RwLayerRef> = store
        .rw_layers()
        .into_keys()
        .map(|n| store.get_rw_layer(&n).unwrap())
        .collect();
    if !early {
        println!("{READY}");
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut n = 0u64;
    while Instant::now() < deadline {
        n += 1;
        let crowded = held.len() > 10 || rws.len() > 4;
        match rng.random_range(0..10) {
            0..=2 if !crowded || held.is_empty() => {
                let parent = if held.is_empty() || rng.random_bool(0.3) {
                    None
                } else {
                    let p = &held[rng.random_range(0..held.len())];
                    (p.depth() < 6).then(|| p.chain_id().clone())
                };
                let r = store
                    .register(&small_tar(&mut rng)[..], parent.as_ref())
                    .unwrap();
                log.line(&format!("C {}", r.chain_id()));
                held.push(r);
            }
            3..=5 if !held.is_empty() => {
                let r = held.swap_remove(rng.random_range(0..held.len()));
                log.line(&format!("R {}", r.chain_id()));
                store.release(r).unwrap();
            }
            6 if !held.is_empty() && !crowded => {
                let p = held[rng.random_range(0..held.len())].chain_id().clone();
                let name = format!("c{epoch:x}-{n}");
                let opts = CreateRwOptions {
                    init: rng.random_bool(0.5).then(init_fn),
                    ..Default::default()
                };
                let rw = store.create_rw_layer(&name, Some(&p), &opts).unwrap();
                log.line(&format!("M {name}"));
                rws.push(rw);
            }
            7 if !rws.is_empty() => {
                // Commit: change the RW layer through its mount, register its diff.
                let rw = &rws[rng.random_range(0..rws.len())];
                let parent = rw.parent().map(|p| p.chain_id().clone());
                if parent
                    .as_ref()
                    .is_some_and(|p| store.map().get(p).is_some_and(|l| l.depth() >= 6))
                {
                    continue;
                }
                let path = rw.mount("").unwrap();
                common::write(
                    &path,
                    &format!("work/{n}"),
                    format!("{n}\n").as_bytes(),
                    0o644,
                );
                let mut diff = Vec::new();
                rw.tar_stream().unwrap().read_to_end(&mut diff).unwrap();
                rw.unmount().unwrap();
                let r = store.register(&diff[..], parent.as_ref()).unwrap();
                log.line(&format!("C {}", r.chain_id()));
                held.push(r);
            }
            8..=9 if !rws.is_empty() => {
                let rw = rws.swap_remove(rng.random_range(0..rws.len()));
                log.line(&format!("U {}", rw.name()));
                store.release_rw_layer(rw).unwrap();
            }
            _ => {}
        }
    }
    panic!("worker ran 30 s without being killed");
}

/// What the log says must exist now: layers referenced in the last epoch, RW layers created
/// and never released.
/// What the log says must exist (committed layers still held, RW layers created and not
/// released) and which RW layers a release was asked for (a kill may have cut it short).
fn required(log: &str) -> (BTreeSet<ChainId>, BTreeSet<String>, BTreeSet<String>) {
    let mut outstanding: BTreeMap<String, i64> = BTreeMap::new();
    let mut mounts: BTreeSet<String> = BTreeSet::new();
    let mut released: BTreeSet<String> = BTreeSet::new();
    // A line cut by the kill has no newline: ignore it.
    let complete = &log[..log.rfind('\n').map_or(0, |i| i + 1)];
    for line in complete.lines() {
        let (kind, arg) = line.split_once(' ').unwrap_or((line, ""));
        match kind {
            "E" => outstanding.clear(),
            "C" => *outstanding.entry(arg.to_owned()).or_default() += 1,
            "R" => *outstanding.entry(arg.to_owned()).or_default() -= 1,
            "M" => {
                mounts.insert(arg.to_owned());
            }
            "U" => {
                mounts.remove(arg);
                released.insert(arg.to_owned());
            }
            other => panic!("bad log line {other:?}"),
        }
    }
    let layers = outstanding
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(id, _)| id.parse().unwrap())
        .collect();
    (layers, mounts, released)
}

fn runs() -> usize {
    std::env::var("LAYERSTORE_CRASH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50)
}

fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::tempdir_in(shm)
    {
        return d;
    }
    tempfile::tempdir().unwrap()
}

fn crash_loop(driver: &str) {
    let dir = scratch_dir();
    let root = dir.path().join("root");
    let log_path = dir.path().join("worker.log");
    let mut rng = rand::rng();
    let (mut kills, mut committed_seen, mut leftovers_seen) = (0, BTreeSet::new(), 0);
    let mut left_leftovers = false;
    for run in 0..runs() {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "worker", "--nocapture", "--test-threads=1"])
            .env("LAYERSTORE_CRASH_WORKER", "1")
            .env("LAYERSTORE_CRASH_ROOT", &root)
            .env("LAYERSTORE_CRASH_DRIVER", driver)
            .env("LAYERSTORE_CRASH_LOG", &log_path)
            .env(
                "LAYERSTORE_CRASH_EARLY",
                if left_leftovers { "1" } else { "" },
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        // Wait until it has opened the store (it holds the root's lock from then on).
        let mut out = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            let n = out.read_line(&mut line).unwrap();
            assert!(
                n > 0,
                "[{driver}] run {run}: worker exited before ready: {:?}",
                child.wait()
            );
            if line.contains(READY) {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..=300)));
        match child.try_wait().unwrap() {
            None => {
                child.kill().unwrap();
                kills += 1;
            }
            Some(status) => panic!("[{driver}] run {run}: worker died by itself: {status}"),
        }
        child.wait().unwrap();
        drop(out);

        let what = format!("[{driver}] after kill {run}");
        let log = std::fs::read_to_string(&log_path).unwrap();
        let (layers, mounts, released) = required(&log);
        // Before any cleanup: nothing is broken, only leftovers of interrupted work, and (as
        // in moby, which removes an RW layer's directories before its record) an RW layer
        // whose release was cut short after its directories went: a retry finishes it.
        let mut store =
            Store::open(options(&root, driver)).unwrap_or_else(|e| panic!("{what}: open: {e}"));
        let report = store.check(&CheckOptions::default()).unwrap();
        let mut unfinished: BTreeSet<String> = BTreeSet::new();
        let broken: Vec<&Problem> = report
            .problems
            .iter()
            .filter(|p| match p {
                Problem::Leftover { .. } => false,
                Problem::BrokenMount { name, reason }
                    if released.contains(name) && reason.contains("is missing") =>
                {
                    unfinished.insert(name.clone());
                    false
                }
                _ => true,
            })
            .collect();
        assert!(
            broken.is_empty(),
            "{what}: broken before cleanup: {broken:#?}"
        );
        if !unfinished.is_empty() {
            // The user's retry, with the layers held as a process using them holds them.
            let held: Vec<_> = store
                .map()
                .into_keys()
                .map(|id| store.get(&id).unwrap())
                .collect();
            for name in &unfinished {
                let rw = store.get_rw_layer(name).unwrap();
                store
                    .release_rw_layer(rw)
                    .unwrap_or_else(|e| panic!("{what}: retried release of {name}: {e}"));
            }
            // Counts live only in the process: close it and look again with a fresh one.
            drop(held);
            drop(store);
            store = Store::open(options(&root, driver))
                .unwrap_or_else(|e| panic!("{what}: reopen: {e}"));
        }
        leftovers_seen += usize::from(!report.is_clean());
        if std::env::var_os("LAYERSTORE_CRASH_DEBUG").is_some() {
            eprintln!("{what}: {:?}", report.problems);
        }
        assert_counts(&store, &BTreeMap::new(), &what);
        let map = store.map();
        for id in &layers {
            assert!(map.contains_key(id), "{what}: committed layer {id} is lost");
        }
        let rw = store.rw_layers();
        for name in &mounts {
            assert!(rw.contains_key(name), "{what}: RW layer {name} is lost");
        }
        drop(store);
        // Every other run the leftovers stay for the next worker's open to collect (and that
        // worker is killable while it does); otherwise clean up here and check it all.
        left_leftovers = run % 2 == 1;
        if !left_leftovers {
            let mut opts = options(&root, driver);
            opts.cleanup_on_open = true;
            let store = Store::open(opts).unwrap_or_else(|e| panic!("{what}: open: {e}"));
            assert_consistent(&store, &what);
            assert_counts(&store, &BTreeMap::new(), &what);
            let map = store.map();
            assert!(layers.iter().all(|id| map.contains_key(id)), "{what}");
        }
        committed_seen.extend(layers);
    }
    assert!(kills >= runs().min(50), "[{driver}] only {kills} kills");
    assert!(
        committed_seen.len() > 10,
        "[{driver}] the workers committed too little to mean anything: {}",
        committed_seen.len()
    );
    eprintln!(
        "[{driver}] {kills} kills, {} distinct layers required at some point, \
         {leftovers_seen} kills left something for cleanup",
        committed_seen.len()
    );

    // Finally give everything back: the root ends empty (and nothing stays mounted).
    let mut opts = options(&root, driver);
    opts.cleanup_on_open = true;
    let store = Store::open(opts).unwrap();
    for name in store.rw_layers().into_keys() {
        let rw = store.get_rw_layer(&name).unwrap();
        store.release_rw_layer(rw).unwrap();
    }
    while let Some((id, _)) = store.map().into_iter().find(|(id, _)| {
        store
            .map()
            .values()
            .all(|l| l.parent().map(|p| p.chain_id()) != Some(id))
    }) {
        let r = store.get(&id).unwrap();
        store.release(r).unwrap();
    }
    store.cleanup().unwrap();
    assert!(store.driver().list().unwrap().is_empty());
    assert_consistent(&store, &format!("[{driver}] emptied"));
}

#[test]
fn sigkill_during_work_on_vfs() {
    if std::env::var_os("LAYERSTORE_CRASH_WORKER").is_some() {
        return;
    }
    crash_loop("vfs");
}

#[test]
fn sigkill_during_work_on_overlay2() {
    if std::env::var_os("LAYERSTORE_CRASH_WORKER").is_some() {
        return;
    }
    if common::drivers().contains(&"overlay2") {
        crash_loop("overlay2");
    }
}
