//! `Store::register_chain`: a chain registered in one call equals the same layers registered
//! one by one (IDs, tar streams, the mounted view with whiteouts), runs its layers at the same
//! time where the driver allows it, and leaves nothing behind when any layer fails.

use testkit::store as common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use common::{drivers, open, read_all};
use layer_digest::ChainId;
use layer_store::{CreateRwOptions, Error, Layer, LayerRef, Store};
use testkit::store::{assert_consistent, assert_counts, driver_dirs};

/// A tar entry: a directory, a regular file, or an empty marker (whiteouts are files).
enum E<'a> {
    Dir(&'a str),
    File(&'a str, &'a [u8]),
}

fn tar(entries: &[E<'_>]) -> Vec<u8> {
    let mut t = testkit::tar::Tar::new().gnu().mtime(1_600_000_000);
    for e in entries {
        t = match e {
            E::Dir(name) => t.dir(name),
            E::File(name, content) => t.file(name, content),
        };
    }
    t.build()
}

/// Three layers: a base, one that deletes a file and makes a directory opaque, one that
/// changes a file.
fn image() -> Vec<Vec<u8>> {
    vec![
        tar(&[
            E::Dir("etc/"),
            E::File("etc/a", b"A"),
            E::File("etc/b", b"B"),
            E::Dir("data/"),
            E::File("data/x", b"X"),
        ]),
        tar(&[
            E::Dir("etc/"),
            E::File("etc/.wh.a", b""),
            E::Dir("data/"),
            E::File("data/.wh..wh..opq", b""),
            E::File("data/y", b"Y"),
            E::File("c", b"C"),
        ]),
        tar(&[E::Dir("etc/"), E::File("etc/b", b"B2"), E::File("z", b"Z")]),
    ]
}

/// Every path under `root` with its content (directories as `/`).
fn tree(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            if path.is_dir() {
                out.insert(format!("{rel}/"), Vec::new());
                stack.push(path);
            } else {
                out.insert(rel, std::fs::read(&path).unwrap());
            }
        }
    }
    out
}

/// What a container on `top` sees.
fn view(store: &Store, top: &ChainId) -> BTreeMap<String, Vec<u8>> {
    let name = format!("view-{}", common::rand_name());
    let rw = store
        .create_rw_layer(&name, Some(top), &CreateRwOptions::default())
        .unwrap();
    let seen = tree(&rw.mount("").unwrap());
    rw.unmount().unwrap();
    store.release_rw_layer(rw).unwrap();
    seen
}

fn expected_view() -> BTreeMap<String, Vec<u8>> {
    [
        ("c", &b"C"[..]),
        ("data/", b""),
        ("data/y", b"Y"),
        ("etc/", b""),
        ("etc/b", b"B2"),
        ("z", b"Z"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_vec()))
    .collect()
}

fn ids(refs: &[LayerRef]) -> Vec<ChainId> {
    refs.iter().map(|r| r.chain_id().clone()).collect()
}

#[test]
fn chain_equals_one_by_one_registration() {
    for driver in drivers() {
        let layers = image();
        let one = tempfile::tempdir().unwrap();
        let one_store = open(one.path(), driver);
        let mut parent: Option<ChainId> = None;
        let mut singles = Vec::new();
        for tar in &layers {
            let r = one_store.register(&tar[..], parent.as_ref()).unwrap();
            parent = Some(r.chain_id().clone());
            singles.push(r);
        }

        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), driver);
        let refs = store
            .register_chain(None, layers.iter().map(|t| &t[..]).collect())
            .unwrap();
        assert_eq!(ids(&refs), ids(&singles), "{driver}: chain IDs");
        for (i, (r, s)) in refs.iter().zip(&singles).enumerate() {
            assert_eq!(r.diff_id(), s.diff_id(), "{driver}: layer {i} DiffID");
            assert_eq!(r.diff_size(), s.diff_size(), "{driver}: layer {i} size");
            assert_eq!(
                read_all(r.tar_stream().unwrap()),
                layers[i],
                "{driver}: layer {i} tar stream"
            );
        }
        let top = refs[2].chain_id().clone();
        assert_eq!(
            view(&store, &top),
            expected_view(),
            "{driver}: mounted view"
        );
        assert_eq!(
            view(&one_store, singles[2].chain_id()),
            expected_view(),
            "{driver}: one-by-one view"
        );
        let held: BTreeMap<ChainId, usize> = ids(&refs).into_iter().map(|c| (c, 1)).collect();
        assert_counts(&store, &held, driver);
        assert_consistent(&store, driver);

        // The records survive a reopen.
        drop(store);
        let store = open(dir.path(), driver);
        assert_eq!(
            store.map().into_keys().collect::<BTreeSet<_>>(),
            ids(&singles).into_iter().collect(),
            "{driver}: after reopen"
        );
        assert_consistent(&store, driver);
    }
}

#[test]
fn chain_on_a_parent_counts_like_register() {
    for driver in drivers() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), driver);
        let mut layers = image();
        let base = store.register(&layers.remove(0)[..], None).unwrap();
        let refs = store
            .register_chain(
                Some(base.chain_id()),
                layers.iter().map(|t| &t[..]).collect(),
            )
            .unwrap();
        assert_eq!(
            refs[0].parent().map(|p| p.chain_id().clone()),
            Some(base.chain_id().clone())
        );
        let mut held: BTreeMap<ChainId, usize> = ids(&refs).into_iter().map(|c| (c, 1)).collect();
        held.insert(base.chain_id().clone(), 1);
        assert_counts(&store, &held, driver);
        assert_eq!(
            view(&store, refs[1].chain_id()),
            expected_view(),
            "{driver}: view"
        );

        // The same chain again: the existing layers are handed out, nothing new is made.
        let dirs = driver_dirs(&store);
        let again = store
            .register_chain(
                Some(base.chain_id()),
                layers.iter().map(|t| &t[..]).collect(),
            )
            .unwrap();
        assert_eq!(ids(&again), ids(&refs), "{driver}: same chain");
        assert_eq!(driver_dirs(&store), dirs, "{driver}: no new directory");
        for (c, n) in held.iter_mut() {
            if ids(&again).contains(c) {
                *n += 1;
            }
        }
        assert_counts(&store, &held, driver);

        // Releasing everything deletes everything.
        for r in again.into_iter().chain(refs.into_iter().rev()) {
            store.release(r).unwrap();
        }
        store.release(base).unwrap();
        assert!(store.map().is_empty(), "{driver}: all released");
        assert_consistent(&store, driver);
    }
}

#[test]
fn a_failing_layer_leaves_nothing() {
    for driver in drivers() {
        for bad in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let store = open(dir.path(), driver);
            let base = store.register(&image()[0][..], None).unwrap();
            let before_dirs = driver_dirs(&store);
            let mut layers: Vec<Vec<u8>> = image()[1..].to_vec();
            layers.push(tar(&[E::File("top", b"T")]));
            // Truncated in the middle of a body: a tar-split error.
            let cut = layers[bad].len() / 2 - 100;
            layers[bad].truncate(cut);
            let err = store
                .register_chain(
                    Some(base.chain_id()),
                    layers.iter().map(|t| &t[..]).collect(),
                )
                .expect_err("a truncated layer must fail the chain");
            match &err {
                Error::RegisterChain { index, count, .. } => {
                    assert_eq!((*index, *count), (bad, 3), "{driver}: {err}")
                }
                other => panic!("{driver}: unexpected error {other}"),
            }
            let what = format!("{driver}, layer {bad} bad");
            assert_eq!(store.map().len(), 1, "{what}: only the base is left");
            assert_eq!(
                driver_dirs(&store),
                before_dirs,
                "{what}: no directory left"
            );
            let held = BTreeMap::from([(base.chain_id().clone(), 1)]);
            assert_counts(&store, &held, &what);
            assert_consistent(&store, &what);
        }
    }
}

#[test]
fn depth_is_checked_before_anything_is_made() {
    for driver in drivers() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = layer_store::StoreOptions::new(dir.path()).driver(driver);
        o.max_depth = 3;
        o.durability = layer_meta::Durability::None;
        let store = Store::open(o).unwrap();
        let layers: Vec<Vec<u8>> = (0..4)
            .map(|i| tar(&[E::File(&format!("f{i}"), b"x")]))
            .collect();
        let err = store
            .register_chain(None, layers.iter().map(|t| &t[..]).collect())
            .expect_err("4 layers over a maximum depth of 3");
        assert!(matches!(err, Error::InvalidArgument(_)), "{driver}: {err}");
        assert!(driver_dirs(&store).is_empty());
        let refs = store
            .register_chain(None, layers[..3].iter().map(|t| &t[..]).collect())
            .unwrap();
        let err = store
            .register_chain(Some(refs[2].chain_id()), vec![&layers[3][..]])
            .expect_err("a fourth layer on a chain of 3");
        assert!(
            matches!(err, Error::MaxDepthExceeded { .. }),
            "{driver}: {err}"
        );
        assert_consistent(&store, driver);
    }
}

/// Shared by the readers of [`Gated`]: which layers have started reading.
#[derive(Default)]
struct Started {
    layers: Mutex<BTreeSet<usize>>,
    changed: Condvar,
}

/// A layer tar whose first read records that layer `index` started; layer 0 then waits (up
/// to `patience`) for layer 1 to start too, and records whether it did.
struct Gated<'a> {
    index: usize,
    bytes: &'a [u8],
    started: Arc<Started>,
    patience: Duration,
    overlapped: Arc<Mutex<Option<bool>>>,
}

impl Read for Gated<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut set = self.started.layers.lock().unwrap();
        if set.insert(self.index) {
            self.started.changed.notify_all();
            if self.index == 0 {
                let (set_after, _) = self
                    .started
                    .changed
                    .wait_timeout_while(set, self.patience, |s| !s.contains(&1))
                    .unwrap();
                *self.overlapped.lock().unwrap() = Some(set_after.contains(&1));
            }
        }
        self.bytes.read(buf)
    }
}

/// On overlay2 (native diff) layer 1 is read while layer 0 is still being read; on vfs,
/// whose create copies the parent, strictly after.
#[test]
fn layers_run_at_the_same_time_where_the_driver_allows() {
    for driver in drivers() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), driver);
        let parallel = store.driver().apply_independent_of_parent();
        assert_eq!(parallel, driver == "overlay2", "{driver}: capability");
        let layers = image();
        let started = Arc::new(Started::default());
        let overlapped = Arc::new(Mutex::new(None));
        let patience = Duration::from_secs(if parallel { 60 } else { 1 });
        let gated: Vec<Gated<'_>> = layers
            .iter()
            .enumerate()
            .map(|(index, bytes)| Gated {
                index,
                bytes,
                started: started.clone(),
                patience,
                overlapped: overlapped.clone(),
            })
            .collect();
        let refs = store.register_chain(None, gated).unwrap();
        assert_eq!(
            *overlapped.lock().unwrap(),
            Some(parallel),
            "{driver}: layer 1 read while layer 0 was"
        );
        assert_eq!(
            view(&store, refs[2].chain_id()),
            expected_view(),
            "{driver}"
        );
        assert_consistent(&store, driver);
    }
}

/// A chain whose first layers exist already (an image sharing its base with one loaded
/// before) hands those out, exactly as `register` would, and builds the rest on them: no
/// error, no retry, and the same layers as one-by-one registration.
#[test]
fn an_existing_prefix_is_handed_out_and_built_on() {
    for driver in drivers() {
        for existing in 1..=2 {
            let dir = tempfile::tempdir().unwrap();
            let store = open(dir.path(), driver);
            let layers = image();
            let mut parent: Option<ChainId> = None;
            let mut before = Vec::new();
            for tar in &layers[..existing] {
                let r = store.register(&tar[..], parent.as_ref()).unwrap();
                parent = Some(r.chain_id().clone());
                before.push(r);
            }
            let refs = store
                .register_chain(None, layers.iter().map(|t| &t[..]).collect())
                .unwrap_or_else(|e| panic!("{driver}, {existing} existing: {e}"));
            let what = format!("{driver}, {existing} existing");
            assert_eq!(ids(&refs[..existing]), ids(&before), "{what}: prefix");
            for (i, r) in refs.iter().enumerate() {
                assert_eq!(read_all(r.tar_stream().unwrap()), layers[i], "{what}: {i}");
            }
            assert_eq!(
                refs[existing].parent().map(Layer::chain_id),
                Some(before[existing - 1].chain_id()),
                "{what}: built on the existing layer"
            );
            assert_eq!(view(&store, refs[2].chain_id()), expected_view(), "{what}");
            let mut held: BTreeMap<ChainId, usize> =
                ids(&refs).into_iter().map(|c| (c, 1)).collect();
            for b in &before {
                *held.get_mut(b.chain_id()).unwrap() += 1;
            }
            assert_counts(&store, &held, &what);
            assert_consistent(&store, &what);
            // A single register of existing content is the same call.
            let again = store.register(&layers[0][..], None).unwrap();
            assert_eq!(again.chain_id(), before[0].chain_id(), "{what}");
        }
    }
}

/// Several threads registering the same image at once: every call succeeds with the same
/// layers (a layer that appears mid-chain from another call is built on), and the store ends
/// consistent with the counts of every reference handed out.
#[test]
fn concurrent_registers_of_one_image_all_succeed() {
    for driver in drivers() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), driver);
        let layers = image();
        for round in 0..4 {
            let results: Vec<Vec<LayerRef>> = std::thread::scope(|s| {
                let handles: Vec<_> = (0..3)
                    .map(|_| {
                        s.spawn(|| {
                            store.register_chain(None, layers.iter().map(|t| &t[..]).collect())
                        })
                    })
                    .collect();
                handles
                    .into_iter()
                    .map(|h| {
                        h.join()
                            .unwrap()
                            .unwrap_or_else(|e| panic!("{driver}: {e}"))
                    })
                    .collect()
            });
            let first = ids(&results[0]);
            for r in &results {
                assert_eq!(ids(r), first, "{driver}, round {round}");
            }
            let mut held: BTreeMap<ChainId, usize> = BTreeMap::new();
            for r in results.iter().flatten() {
                *held.entry(r.chain_id().clone()).or_default() += 1;
            }
            assert_counts(&store, &held, driver);
            assert_consistent(&store, driver);
            for r in results.into_iter().flatten().rev() {
                store.release(r).unwrap();
            }
            assert!(store.map().is_empty(), "{driver}: all released");
        }
    }
}

/// Reads `bytes`, but first runs `before` (once) when it is layer `index` of the chain.
struct Hooked<'a> {
    bytes: &'a [u8],
    before: Option<Box<dyn FnOnce() + Send + 'a>>,
}

impl Read for Hooked<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(f) = self.before.take() {
            f();
        }
        self.bytes.read(buf)
    }
}

/// The genuine race: while a chain is being registered, another register makes its first
/// layer appear after this call made its own copy and built the next layer on it. The call
/// still succeeds: it hands out the layer that won and registers the rest again on it.
#[test]
fn a_layer_that_appears_mid_chain_is_built_on() {
    for driver in drivers() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), driver);
        let layers = image();
        let other: Mutex<Option<LayerRef>> = Mutex::new(None);
        let inputs: Vec<Hooked<'_>> = layers
            .iter()
            .enumerate()
            .map(|(i, bytes)| Hooked {
                bytes,
                before: (i == 2).then(|| {
                    Box::new(|| {
                        // Layer 0 is applied by now (vfs: one after another; overlay2: every
                        // layer reads on its own worker, and layer 2 waits here meanwhile).
                        let r = std::thread::scope(|s| {
                            s.spawn(|| store.register(&layers[0][..], None).unwrap())
                                .join()
                                .unwrap()
                        });
                        *other.lock().unwrap() = Some(r);
                    }) as Box<dyn FnOnce() + Send>
                }),
            })
            .collect();
        let refs = store
            .register_chain(None, inputs)
            .unwrap_or_else(|e| panic!("{driver}: {e}"));
        let winner = other.lock().unwrap().take().unwrap();
        assert_eq!(refs[0].chain_id(), winner.chain_id(), "{driver}");
        assert_eq!(
            refs[0].cache_id(),
            winner.cache_id(),
            "{driver}: the layer that won is handed out"
        );
        assert_eq!(
            refs[1].parent().map(|p| p.cache_id().to_owned()),
            Some(winner.cache_id().to_owned()),
            "{driver}: built on the layer that won"
        );
        assert_eq!(
            view(&store, refs[2].chain_id()),
            expected_view(),
            "{driver}"
        );
        let mut held: BTreeMap<ChainId, usize> = ids(&refs).into_iter().map(|c| (c, 1)).collect();
        *held.get_mut(winner.chain_id()).unwrap() += 1;
        assert_counts(&store, &held, driver);
        assert_consistent(&store, driver);
    }
}

/// Fails the commit of one layer and the rollback of the one below it.
#[derive(Debug)]
struct FailCommitAndRollback {
    commit_of: String,
    rollback_of: String,
    armed: std::sync::atomic::AtomicBool,
}

impl layer_meta::FaultInjector for FailCommitAndRollback {
    fn before(&self, op: &layer_meta::FsOp<'_>) -> io::Result<()> {
        if !self.armed.load(std::sync::atomic::Ordering::SeqCst) {
            return Ok(());
        }
        match op {
            layer_meta::FsOp::Rename { to, .. } if *to == self.commit_of => Err(
                io::Error::from_raw_os_error(rustix::io::Errno::NOSPC.raw_os_error()),
            ),
            layer_meta::FsOp::Rename { from, to }
                if *from == self.rollback_of && to.ends_with("-removing") =>
            {
                Err(io::Error::from_raw_os_error(
                    rustix::io::Errno::IO.raw_os_error(),
                ))
            }
            _ => Ok(()),
        }
    }
}

/// A chain whose third commit fails and whose rollback then cannot remove the second layer
/// keeps the first two, complete and with their parent link, in the map and on disk: never a
/// layer without its parent. Registering the chain again builds the third on them.
#[test]
fn a_failed_rollback_never_leaves_a_layer_without_its_parent() {
    for driver in drivers() {
        let layers = image();
        let mut chains: Vec<ChainId> = Vec::new();
        for l in &layers {
            let diff = layer_digest::DiffId::new(layer_digest::Digester::sha256_of(l));
            chains.push(layer_digest::chain_id(chains.last(), &diff));
        }
        let dir = tempfile::tempdir().unwrap();
        let mut opts = layer_store::StoreOptions::new(dir.path()).driver(driver);
        opts.durability = layer_meta::Durability::None;
        let faults = Arc::new(FailCommitAndRollback {
            commit_of: format!("sha256/{}", chains[2].hex()),
            rollback_of: format!("sha256/{}", chains[1].hex()),
            armed: true.into(),
        });
        opts.fault_injector = Some(faults.clone());
        let store = Store::open(opts).unwrap();
        let err = store
            .register_chain(None, layers.iter().map(|t| &t[..]).collect())
            .unwrap_err();
        assert!(
            matches!(err, Error::RegisterChain { index: 2, .. }),
            "{driver}: {err}"
        );
        let map = store.map();
        assert_eq!(
            map.keys().cloned().collect::<Vec<_>>(),
            {
                let mut v = chains[..2].to_vec();
                v.sort();
                v
            },
            "{driver}: the layers the rollback could not remove stay"
        );
        assert_eq!(
            map[&chains[1]].parent().map(Layer::chain_id),
            Some(&chains[0]),
            "{driver}"
        );
        assert_counts(&store, &BTreeMap::new(), driver);
        faults
            .armed
            .store(false, std::sync::atomic::Ordering::SeqCst);
        store.collect_garbage().unwrap();
        assert_consistent(&store, driver);
        let refs = store
            .register_chain(None, layers.iter().map(|t| &t[..]).collect())
            .unwrap();
        assert_eq!(ids(&refs), chains, "{driver}");
        assert_eq!(view(&store, &chains[2]), expected_view(), "{driver}");
        drop(store);
        let store = open(dir.path(), driver);
        assert_consistent(&store, driver);
    }
}
