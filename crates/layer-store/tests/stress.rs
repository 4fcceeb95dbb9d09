//! Many threads on one store: registering overlapping chains (shared parents, the same tar
//! registered by several threads at once), getting and releasing layers, creating, writing
//! and releasing RW layers, reading tar streams, and a garbage collector running alongside.
//! At the end the reference counts and the disk (layerdb, driver directories) must agree with
//! what the threads still hold, and giving everything back must leave the store empty.

use testkit::store as common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};

use common::{drivers, read_all, tar_of};
use layer_digest::ChainId;
use layer_store::{CreateRwOptions, Error, InitFn, LayerRef, RwLayerRef, Store};
use rand::Rng;
use testkit::store::{assert_consistent, assert_counts, driver_dirs};

const THREADS: usize = 8;

fn base_tar(i: usize) -> Vec<u8> {
    tar_of(&[
        ("etc/base", format!("base {i}\n").as_bytes(), 0o644),
        ("usr/lib/data", &vec![i as u8; 4096 * (i + 1)], 0o644),
    ])
}

fn child_tar(i: usize) -> Vec<u8> {
    tar_of(&[
        ("etc/child", format!("child {i}\n").as_bytes(), 0o644),
        (&format!("opt/c{i}"), &vec![b'c'; 1000 + i], 0o600),
    ])
}

fn init_fn() -> &'static InitFn {
    &|root: &std::path::Path| {
        common::write(root, "etc/hostname", b"stress\n", 0o644);
        Ok(())
    }
}

/// What one thread still holds at the end.
#[derive(Default)]
struct Held {
    refs: Vec<LayerRef>,
    rws: Vec<RwLayerRef>,
}

fn worker(store: &Store, t: usize, iterations: usize, start: &Barrier) -> Held {
    let mut rng = rand::rng();
    let mut held = Held::default();
    start.wait();
    for i in 0..iterations {
        match rng.random_range(0..12) {
            // The same few bases and children everywhere: concurrent duplicates and shared
            // parents all the time.
            0..=1 => {
                let n = rng.random_range(0..3);
                let tar = base_tar(n);
                let r = store.register(&tar[..], None).unwrap();
                if rng.random_bool(0.2) {
                    assert_eq!(read_all(r.tar_stream().unwrap()), tar);
                }
                held.refs.push(r);
            }
            2..=4 if !held.refs.is_empty() => {
                let p = &held.refs[rng.random_range(0..held.refs.len())];
                if p.depth() >= 4 {
                    continue;
                }
                let p = p.chain_id().clone();
                let tar = child_tar(rng.random_range(0..4));
                let r = store.register(&tar[..], Some(&p)).unwrap();
                assert_eq!(r.parent().unwrap().chain_id(), &p);
                if rng.random_bool(0.2) {
                    assert_eq!(read_all(r.tar_stream().unwrap()), tar);
                }
                held.refs.push(r);
            }
            5 => {
                // Whatever exists right now; it may be deleted before the get.
                let map = store.map();
                if map.is_empty() {
                    continue;
                }
                let id = map
                    .keys()
                    .nth(rng.random_range(0..map.len()))
                    .unwrap()
                    .clone();
                match store.get(&id) {
                    Ok(r) => held.refs.push(r),
                    Err(Error::LayerDoesNotExist(_)) => {}
                    Err(e) => panic!("get {id}: {e}"),
                }
            }
            6..=8 if !held.refs.is_empty() => {
                let r = held.refs.swap_remove(rng.random_range(0..held.refs.len()));
                store.release(r).unwrap();
            }
            9 if !held.refs.is_empty() => {
                let p = held.refs[rng.random_range(0..held.refs.len())]
                    .chain_id()
                    .clone();
                let opts = CreateRwOptions {
                    init: rng.random_bool(0.5).then(init_fn),
                    ..Default::default()
                };
                let rw = store
                    .create_rw_layer(&format!("t{t}-{i}"), Some(&p), &opts)
                    .unwrap();
                let path = rw.mount("").unwrap();
                common::write(&path, "work/file", format!("{t} {i}\n").as_bytes(), 0o644);
                assert!(path.join("etc/base").exists(), "parent content visible");
                rw.unmount().unwrap();
                held.rws.push(rw);
            }
            10..=11 if !held.rws.is_empty() => {
                let rw = held.rws.swap_remove(rng.random_range(0..held.rws.len()));
                if rng.random_bool(0.3) {
                    // A second reference from another lookup: only the last release removes.
                    let again = store.get_rw_layer(rw.name()).unwrap();
                    assert!(store.release_rw_layer(again).unwrap().is_empty());
                    assert!(store.rw_layers().contains_key(rw.name()));
                }
                store.release_rw_layer(rw).unwrap();
            }
            _ => {}
        }
    }
    held
}

/// Steps per thread: 100, or `LAYERSTORE_STRESS_ITERS`.
fn iterations() -> usize {
    std::env::var("LAYERSTORE_STRESS_ITERS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100)
}

fn held_model(all: &[Held]) -> BTreeMap<ChainId, usize> {
    let mut m = BTreeMap::new();
    for h in all {
        for r in &h.refs {
            *m.entry(r.chain_id().clone()).or_default() += 1;
        }
    }
    m
}

fn give_back(store: &Store, all: Vec<Held>) {
    for h in all {
        for rw in h.rws {
            store.release_rw_layer(rw).unwrap();
        }
        for r in h.refs {
            store.release(r).unwrap();
        }
    }
}

/// A scratch root on tmpfs when there is one (the races, not the disk, are under test).
fn scratch_dir() -> tempfile::TempDir {
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::tempdir_in(shm)
    {
        return d;
    }
    tempfile::tempdir().unwrap()
}

fn mixed_load(driver: &str) {
    let dir = scratch_dir();
    let store = common::open(dir.path(), driver);
    let start = Arc::new(Barrier::new(THREADS + 1));
    let done = Arc::new(AtomicBool::new(false));
    // A collector alongside: it must never take what a running operation is making.
    let gc = {
        let (store, done, start) = (store.clone(), done.clone(), start.clone());
        std::thread::spawn(move || {
            start.wait();
            let (mut runs, mut found) = (0, Vec::new());
            while !done.load(Ordering::SeqCst) {
                let report = store.collect_garbage().unwrap();
                if !report.is_empty() {
                    found.push(report);
                }
                runs += 1;
            }
            // Nothing was left over by work that ran to completion, so nothing should be
            // collected; a rare report of a write-set finishing during the scan is harmless
            // (the workers' unwraps prove gc never took anything live), a pattern is not.
            assert!(found.len() <= 1, "gc collected mid-run: {found:?}");
            runs
        })
    };
    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let (store, start) = (store.clone(), start.clone());
            std::thread::spawn(move || worker(&store, t, iterations(), &start))
        })
        .collect();
    let all: Vec<Held> = threads.into_iter().map(|h| h.join().unwrap()).collect();
    done.store(true, Ordering::SeqCst);
    let gc_runs = gc.join().unwrap();
    eprintln!(
        "[{driver}] {} layers and {} RW layers left held, {gc_runs} gc runs",
        store.map().len(),
        store.rw_layers().len()
    );

    let held = held_model(&all);
    assert_counts(&store, &held, &format!("[{driver}] after the threads"));
    assert_consistent(&store, &format!("[{driver}] after the threads"));
    // Nothing is stored that nobody holds (directly or through a child or RW layer).
    let needed: BTreeSet<ChainId> = store
        .map()
        .values()
        .filter(|l| held.contains_key(l.chain_id()))
        .flat_map(|l| std::iter::successors(Some(l.clone()), |l| l.parent().cloned()))
        .chain(
            store
                .rw_layers()
                .values()
                .flat_map(|m| std::iter::successors(m.parent().cloned(), |l| l.parent().cloned())),
        )
        .map(|l| l.chain_id().clone())
        .collect();
    let stored: BTreeSet<ChainId> = store.map().into_keys().collect();
    assert_eq!(stored, needed, "[{driver}] stored layers vs held chains");

    give_back(&store, all);
    assert!(
        store.map().is_empty(),
        "[{driver}] layers left: {:?}",
        store.map()
    );
    assert!(store.rw_layers().is_empty());
    assert!(driver_dirs(&store).is_empty());
    assert_consistent(&store, &format!("[{driver}] emptied"));
    let meta = store.meta();
    assert!(meta.list_layers().unwrap().layers.is_empty());
    assert!(meta.list_mounts().unwrap().mounts.is_empty());
}

#[test]
fn eight_threads_mixed_load() {
    for d in drivers() {
        mixed_load(d);
    }
}

/// Every thread registers the same tar on the same parent at the same moment: one layer, one
/// driver directory, a count of one per thread (plus nothing else).
fn same_layer_at_once(driver: &str) {
    let dir = scratch_dir();
    let store = common::open(dir.path(), driver);
    let base = store.register(&base_tar(0)[..], None).unwrap();
    for round in 0..20 {
        let tar = child_tar(100 + round);
        let barrier = Arc::new(Barrier::new(THREADS));
        let refs: Vec<LayerRef> = (0..THREADS)
            .map(|_| {
                let (store, barrier, tar, p) = (
                    store.clone(),
                    barrier.clone(),
                    tar.clone(),
                    base.chain_id().clone(),
                );
                std::thread::spawn(move || {
                    barrier.wait();
                    store.register(&tar[..], Some(&p)).unwrap()
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        let id = refs[0].chain_id().clone();
        for r in &refs {
            assert_eq!(r.layer(), refs[0].layer(), "round {round}: one layer");
        }
        assert_eq!(store.map().len(), 2, "round {round}");
        assert_eq!(store.reference_count(&id), Some(THREADS), "round {round}");
        assert_eq!(
            store.reference_count(base.chain_id()),
            Some(2),
            "round {round}: base: its own reference + one child"
        );
        let want: BTreeSet<String> = [base.cache_id().to_owned(), refs[0].cache_id().to_owned()]
            .into_iter()
            .collect();
        assert_eq!(
            driver_dirs(&store),
            want,
            "round {round}: one driver dir per layer"
        );
        assert_consistent(&store, &format!("[{driver}] round {round}"));
        assert_eq!(read_all(refs[0].tar_stream().unwrap()), tar);
        // All but the last release keep it; the last deletes exactly it.
        let mut refs = refs;
        let last = refs.pop().unwrap();
        for r in refs {
            assert!(store.release(r).unwrap().is_empty());
        }
        let removed = store.release(last).unwrap();
        assert_eq!(removed.len(), 1);
        assert_eq!(removed[0].chain_id, id);
        assert_eq!(store.reference_count(base.chain_id()), Some(1));
    }
    store.release(base).unwrap();
    assert!(store.map().is_empty());
    assert!(driver_dirs(&store).is_empty());
    assert_consistent(&store, &format!("[{driver}] emptied"));
}

#[test]
fn same_layer_registered_by_all_threads_at_once() {
    for d in drivers() {
        same_layer_at_once(d);
    }
}

/// Every thread creates an RW layer of one name at the same moment: exactly one wins, the
/// others get a name conflict and leave nothing behind; then every thread takes its own
/// reference and all release at once: only the last release removes it.
fn same_rw_name_at_once(driver: &str) {
    let dir = scratch_dir();
    let store = common::open(dir.path(), driver);
    let base = store.register(&base_tar(1)[..], None).unwrap();
    for round in 0..20 {
        let name = format!("ctr-{round}");
        let barrier = Arc::new(Barrier::new(THREADS));
        let results: Vec<_> = (0..THREADS)
            .map(|t| {
                let (store, barrier, name, p) = (
                    store.clone(),
                    barrier.clone(),
                    name.clone(),
                    base.chain_id().clone(),
                );
                std::thread::spawn(move || {
                    let opts = CreateRwOptions {
                        init: (t % 2 == 0).then(init_fn),
                        ..Default::default()
                    };
                    barrier.wait();
                    store.create_rw_layer(&name, Some(&p), &opts)
                })
            })
            .collect::<Vec<_>>()
            .into_iter()
            .map(|h| h.join().unwrap())
            .collect();
        let mut won = Vec::new();
        for r in results {
            match r {
                Ok(rw) => won.push(rw),
                Err(Error::MountNameConflict(n)) => assert_eq!(n, name),
                Err(e) => panic!("round {round}: {e}"),
            }
        }
        assert_eq!(won.len(), 1, "round {round}: exactly one creation wins");
        let rw = won.pop().unwrap();
        assert_eq!(
            store.reference_count(base.chain_id()),
            Some(2),
            "round {round}"
        );
        let mut want: BTreeSet<String> = [base.cache_id(), rw.mount_id()]
            .into_iter()
            .map(str::to_owned)
            .collect();
        want.extend(rw.init_id().map(str::to_owned));
        assert_eq!(
            driver_dirs(&store),
            want,
            "round {round}: the losers left nothing"
        );
        assert_consistent(&store, &format!("[{driver}] round {round}"));

        let refs: Vec<RwLayerRef> = (0..THREADS)
            .map(|_| store.get_rw_layer(&name).unwrap())
            .chain(std::iter::once(rw))
            .collect();
        let barrier = Arc::new(Barrier::new(refs.len()));
        let handles: Vec<_> = refs
            .into_iter()
            .map(|r| {
                let (store, barrier) = (store.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    store.release_rw_layer(r).unwrap()
                })
            })
            .collect();
        for h in handles {
            assert!(h.join().unwrap().is_empty(), "the base is still held");
        }
        assert!(store.rw_layers().is_empty(), "round {round}");
        assert_eq!(store.reference_count(base.chain_id()), Some(1));
        assert_eq!(
            driver_dirs(&store),
            [base.cache_id().to_owned()].into_iter().collect()
        );
    }
    store.release(base).unwrap();
    assert_consistent(&store, &format!("[{driver}] emptied"));
}

#[test]
fn same_rw_layer_name_from_all_threads_at_once() {
    for d in drivers() {
        same_rw_name_at_once(d);
    }
}
