//! Fault injection at every step of register, release, create RW layer (with and without an
//! init layer) and release RW layer.
//!
//! For each scenario a dry run counts the steps: the layer-meta [`FaultInjector`] sees every
//! disk-changing metadata step, and a wrapping [`Driver`] sees every create,
//! create_read_write, apply_diff, remove, get and put. Then the scenario runs once per step
//! with that one step failing (ENOSPC, EIO and EEXIST rotating over the steps;
//! `LAYERSTORE_FAULT_ALL_ERRNOS=1` tries all three at every step). Driver steps fail either
//! before doing anything or after doing their work (a driver failing part-way); apply_diff
//! fails mid-stream. After each run:
//!
//! * the operation returned an error;
//! * nothing in memory is a phantom: every layer and RW layer the store lists has its
//!   metadata and driver directories, and reference counts equal held refs + children + RW
//!   layers (a failed register or RW creation is not visible at all);
//! * check reports nothing left over right away, except past a removal's point of no return
//!   (metadata marked `-removing`, RW record gone) or where removing garbage was what failed;
//! * after the store's own garbage collection the store is clean ([`assert_consistent`]):
//!   check (with content verification) reports nothing, no driver directory, layerdb entry
//!   or write-set is left that nothing names;
//! * the operation succeeds when retried without the fault, and a reopened store is clean.

use testkit::store as common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use common::{drivers, tar_of, write};
use graphdriver::{Change, CreateOpts, DiffDriver, Driver, ProtoDriver, Status, TarStream};
use layer_digest::ChainId;
use layer_meta::{Durability, FaultInjector, FsOp};
use layer_store::{
    CheckOptions, CreateRwOptions, InitFn, LayerRef, RwLayerRef, Store, StoreOptions,
};
use rustix::io::Errno;
use testkit::store::{assert_consistent, assert_counts};

const ERRNOS: [Errno; 3] = [Errno::NOSPC, Errno::IO, Errno::EXIST];

/// Counts steps while armed and fails exactly the `fail_at`-th (0-based) one.
#[derive(Debug)]
struct Fault {
    armed: AtomicBool,
    seen: AtomicUsize,
    fail_at: usize,
    errno: Errno,
    /// Driver steps: do the work, then report the failure (a driver that fails part-way).
    after: bool,
    fired: AtomicBool,
    log: Mutex<Vec<String>>,
}

impl Fault {
    fn new(fail_at: usize, errno: Errno) -> Arc<Fault> {
        Arc::new(Fault {
            armed: AtomicBool::new(false),
            seen: AtomicUsize::new(0),
            fail_at,
            errno,
            after: false,
            fired: AtomicBool::new(false),
            log: Mutex::default(),
        })
    }

    fn new_after(fail_at: usize, errno: Errno) -> Arc<Fault> {
        let mut f = Fault::new(fail_at, errno);
        Arc::get_mut(&mut f).unwrap().after = true;
        f
    }

    fn arm(&self, on: bool) {
        self.armed.store(on, Ordering::SeqCst);
    }

    /// Whether this step fails.
    fn hit(&self, what: impl FnOnce() -> String) -> bool {
        if !self.armed.load(Ordering::SeqCst) {
            return false;
        }
        let n = self.seen.fetch_add(1, Ordering::SeqCst);
        self.log.lock().unwrap().push(what());
        if n == self.fail_at {
            self.fired.store(true, Ordering::SeqCst);
            true
        } else {
            false
        }
    }

    fn count(&self) -> usize {
        self.seen.load(Ordering::SeqCst)
    }

    fn step(&self) -> String {
        self.log
            .lock()
            .unwrap()
            .get(self.fail_at)
            .cloned()
            .unwrap_or_default()
    }
}

impl FaultInjector for Fault {
    fn before(&self, op: &FsOp<'_>) -> io::Result<()> {
        if self.hit(|| format!("{op:?}")) {
            Err(self.errno.into())
        } else {
            Ok(())
        }
    }
}

/// A driver that fails the Nth create/create_read_write/apply_diff/remove/get/put.
#[derive(Debug)]
struct FaultDriver {
    inner: Arc<dyn Driver>,
    fault: Arc<Fault>,
}

impl FaultDriver {
    /// Runs `work` unless this step fails; with `after`, a failing step runs it first.
    fn step<T>(
        &self,
        op: &'static str,
        id: &str,
        work: impl FnOnce() -> graphdriver::Result<T>,
    ) -> graphdriver::Result<T> {
        if !self.fault.hit(|| format!("driver {op} {id}")) {
            return work();
        }
        if self.fault.after {
            work()?;
        }
        Err(graphdriver::Error::io(
            op,
            PathBuf::from(id),
            self.fault.errno.into(),
        ))
    }
}

/// Passes the first `left` bytes, then fails: a tar stream that breaks mid-apply.
struct BreakAfter<'a> {
    inner: &'a mut dyn Read,
    left: usize,
    errno: Errno,
}

impl Read for BreakAfter<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Err(self.errno.into());
        }
        let n = buf.len().min(self.left);
        let n = self.inner.read(&mut buf[..n])?;
        if n == 0 {
            return Err(self.errno.into());
        }
        self.left -= n;
        Ok(n)
    }
}

impl ProtoDriver for FaultDriver {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn create(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> graphdriver::Result<()> {
        self.step("create", id, || self.inner.create(id, parent, opts))
    }
    fn create_read_write(
        &self,
        id: &str,
        parent: Option<&str>,
        opts: &CreateOpts,
    ) -> graphdriver::Result<()> {
        self.step("create_read_write", id, || {
            self.inner.create_read_write(id, parent, opts)
        })
    }
    fn remove(&self, id: &str) -> graphdriver::Result<()> {
        self.step("remove", id, || self.inner.remove(id))
    }
    fn get(&self, id: &str, mount_label: &str) -> graphdriver::Result<PathBuf> {
        self.step("get", id, || self.inner.get(id, mount_label))
    }
    fn put(&self, id: &str) -> graphdriver::Result<()> {
        self.step("put", id, || self.inner.put(id))
    }
    fn exists(&self, id: &str) -> bool {
        self.inner.exists(id)
    }
    fn status(&self) -> Status {
        self.inner.status()
    }
    fn metadata(&self, id: &str) -> graphdriver::Result<BTreeMap<String, String>> {
        self.inner.metadata(id)
    }
    fn cleanup(&self) -> graphdriver::Result<()> {
        self.inner.cleanup()
    }
    fn list(&self) -> graphdriver::Result<Vec<String>> {
        self.inner.list()
    }
}

impl DiffDriver for FaultDriver {
    fn diff(&self, id: &str, parent: Option<&str>) -> graphdriver::Result<TarStream> {
        self.inner.diff(id, parent)
    }
    fn changes(&self, id: &str, parent: Option<&str>) -> graphdriver::Result<Vec<Change>> {
        self.inner.changes(id, parent)
    }
    fn apply_diff(
        &self,
        id: &str,
        parent: Option<&str>,
        diff: &mut dyn Read,
    ) -> graphdriver::Result<u64> {
        if self.fault.hit(|| format!("driver apply_diff {id}")) {
            // Break the stream after the first entry: the driver has written part of the layer.
            let mut broken = BreakAfter {
                inner: diff,
                left: 1024,
                errno: self.fault.errno,
            };
            return match self.inner.apply_diff(id, parent, &mut broken) {
                Ok(_) => Err(graphdriver::Error::Other(format!(
                    "injected failure after applying {id}"
                ))),
                Err(e) => Err(e),
            };
        }
        self.inner.apply_diff(id, parent, diff)
    }
    fn diff_size(&self, id: &str, parent: Option<&str>) -> graphdriver::Result<u64> {
        self.inner.diff_size(id, parent)
    }
    fn payload_root(&self, id: &str) -> graphdriver::Result<Option<PathBuf>> {
        self.inner.payload_root(id)
    }
    fn apply_independent_of_parent(&self) -> bool {
        self.inner.apply_independent_of_parent()
    }
}

fn real_driver(name: &str, root: &Path) -> Arc<dyn Driver> {
    let mut registry = graphdriver::Registry::with_builtin();
    if !registry.is_registered("overlay2") {
        registry
            .register("overlay2", |root, options, _| {
                let opts = graphdriver::overlay2::Overlay2Options::parse(options)?;
                Ok(Box::new(graphdriver::overlay2::Overlay2::new(
                    root.join("overlay2"),
                    opts,
                )?))
            })
            .unwrap();
    }
    Arc::from(registry.new_driver(name, root, &[]).unwrap())
}

/// Where the fault goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    Meta,
    Driver,
    /// The driver does the work, then reports a failure.
    DriverAfter,
}

/// A store whose metadata and driver steps go through one [`Fault`] each.
struct Rig {
    store: Store,
    meta_fault: Arc<Fault>,
    driver_fault: Arc<Fault>,
    /// References the test holds, per layer (the model for reference counts).
    held: BTreeMap<ChainId, usize>,
    refs: Vec<LayerRef>,
    rws: Vec<RwLayerRef>,
}

fn open_rig(root: &Path, driver: &str, meta_fault: Arc<Fault>, driver_fault: Arc<Fault>) -> Rig {
    let inner = real_driver(driver, root);
    let wrapped: Arc<dyn Driver> = Arc::new(FaultDriver {
        inner,
        fault: driver_fault.clone(),
    });
    let mut opts = StoreOptions::new(root).driver(driver);
    opts.durability = Durability::Full;
    opts.fault_injector = Some(meta_fault.clone());
    let store = Store::open_with_driver(opts, wrapped).expect("open store");
    Rig {
        store,
        meta_fault,
        driver_fault,
        held: BTreeMap::new(),
        refs: Vec::new(),
        rws: Vec::new(),
    }
}

impl Rig {
    fn hold(&mut self, r: LayerRef) -> ChainId {
        let id = r.chain_id().clone();
        *self.held.entry(id.clone()).or_default() += 1;
        self.refs.push(r);
        id
    }

    fn take(&mut self, id: &ChainId) -> LayerRef {
        let i = self
            .refs
            .iter()
            .position(|r| r.chain_id() == id)
            .expect("held");
        let n = self.held.get_mut(id).unwrap();
        *n -= 1;
        if *n == 0 {
            self.held.remove(id);
        }
        self.refs.remove(i)
    }

    fn take_rw(&mut self, name: &str) -> RwLayerRef {
        let i = self
            .rws
            .iter()
            .position(|r| r.name() == name)
            .expect("held");
        self.rws.remove(i)
    }

    fn arm(&self, on: bool) {
        self.meta_fault.arm(on);
        self.driver_fault.arm(on);
    }
}

fn tar_a() -> Vec<u8> {
    tar_of(&[
        ("etc/base.conf", b"base\n", 0o644),
        ("usr/bin/tool", &[7u8; 3000], 0o755),
    ])
}

fn tar_b() -> Vec<u8> {
    tar_of(&[
        ("etc/app.conf", b"app\n", 0o644),
        ("opt/app/data", &[9u8; 5000], 0o600),
        ("opt/app/more", b"more", 0o644),
    ])
}

fn init_fn() -> &'static InitFn {
    &|root: &Path| {
        write(root, "etc/hostname", b"container\n", 0o644);
        Ok(())
    }
}

fn rw_opts(init: bool) -> CreateRwOptions<'static> {
    CreateRwOptions {
        init: init.then(init_fn),
        ..Default::default()
    }
}

/// One scenario: `setup` builds the state (faults off), `run` is the operation under test
/// (faults on), `retry` repeats it after a failure (faults off), `done` checks the end state.
struct Scenario {
    name: &'static str,
    setup: fn(&mut Rig),
    run: fn(&mut Rig) -> layer_store::Result<()>,
    retry: fn(&mut Rig),
    done: fn(&Rig),
}

fn base(rig: &Rig) -> ChainId {
    let map = rig.store.map();
    map.values()
        .find(|l| l.parent().is_none())
        .map(|l| l.chain_id().clone())
        .expect("base layer")
}

fn setup_base(rig: &mut Rig) {
    let b = rig.store.register(&tar_a()[..], None).unwrap();
    rig.hold(b);
}

fn setup_child(rig: &mut Rig) {
    setup_base(rig);
    let p = base(rig);
    let c = rig.store.register(&tar_b()[..], Some(&p)).unwrap();
    rig.hold(c);
}

fn child_id(rig: &Rig) -> ChainId {
    let map = rig.store.map();
    map.values()
        .find(|l| l.parent().is_some())
        .map(|l| l.chain_id().clone())
        .expect("child layer")
}

fn register_child(rig: &mut Rig) -> layer_store::Result<()> {
    let p = base(rig);
    let r = rig.store.register(&tar_b()[..], Some(&p))?;
    rig.hold(r);
    Ok(())
}

/// Two layers on the base in one call (on overlay2 they are applied at the same time).
fn register_chain(rig: &mut Rig) -> layer_store::Result<()> {
    let p = base(rig);
    let refs = rig
        .store
        .register_chain(Some(&p), vec![&tar_b()[..], &tar_a()[..]])?;
    for r in refs {
        rig.hold(r);
    }
    Ok(())
}

/// A chain whose first layer exists already (the base): it is handed out and the rest built
/// on it (one after another: on the existing layer; in parallel: registered again from this
/// call's own copy).
fn register_chain_on_existing(rig: &mut Rig) -> layer_store::Result<()> {
    let refs = rig
        .store
        .register_chain(None, vec![&tar_a()[..], &tar_b()[..], &tar_a()[..]])?;
    for r in refs {
        rig.hold(r);
    }
    Ok(())
}

fn release_child(rig: &mut Rig) -> layer_store::Result<()> {
    let id = child_id(rig);
    let r = rig.take(&id);
    rig.store.release(r).map(drop)
}

/// Retry of a release: if the layer is still there, take a fresh reference and release it.
fn retry_release_child(rig: &mut Rig) {
    let map = rig.store.map();
    if let Some(l) = map.values().find(|l| l.parent().is_some()) {
        let r = rig.store.get(l.chain_id()).unwrap();
        rig.store.release(r).unwrap();
    }
}

fn setup_rw(rig: &mut Rig, init: bool) {
    setup_base(rig);
    let p = base(rig);
    let rw = rig
        .store
        .create_rw_layer("ctr", Some(&p), &rw_opts(init))
        .unwrap();
    rig.rws.push(rw);
}

fn create_rw(rig: &mut Rig, init: bool) -> layer_store::Result<()> {
    let p = base(rig);
    let rw = rig.store.create_rw_layer("ctr", Some(&p), &rw_opts(init))?;
    rig.rws.push(rw);
    Ok(())
}

fn release_rw(rig: &mut Rig) -> layer_store::Result<()> {
    let rw = rig.take_rw("ctr");
    rig.store.release_rw_layer(rw).map(drop)
}

fn retry_release_rw(rig: &mut Rig) {
    if rig.store.rw_layers().contains_key("ctr") {
        let rw = rig.store.get_rw_layer("ctr").unwrap();
        rig.store.release_rw_layer(rw).unwrap();
    }
}

fn done_rw(rig: &Rig, init: bool) {
    let rw = &rig.rws[0];
    assert_eq!(rw.init_id().is_some(), init);
    let p = rw.mount("").unwrap();
    assert_eq!(std::fs::read(p.join("etc/base.conf")).unwrap(), b"base\n");
    assert_eq!(p.join("etc/hostname").exists(), init);
    rw.unmount().unwrap();
    assert!(rw.changes().unwrap().is_empty());
}

fn random_hex() -> String {
    rand::random::<[u8; 32]>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Leaves one of each kind of garbage an interrupted process leaves: a stale write-set, an
/// interrupted layer removal (with its driver directory) and a driver directory nothing
/// names.
fn setup_leftovers(rig: &mut Rig) {
    setup_child(rig);
    let layerdb = rig.store.meta().root().to_path_buf();
    let ws = layerdb.join("tmp/write-set-4242");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(ws.join("diff"), "sha256:00").unwrap();
    let driver = rig.store.driver();
    let orphan_cache = random_hex();
    driver
        .create(&orphan_cache, None, &CreateOpts::default())
        .unwrap();
    let hex = base(rig).as_str().trim_start_matches("sha256:").to_owned();
    let orphan = layerdb.join(format!("sha256/{hex}-{}-removing", random_hex()));
    std::fs::create_dir_all(&orphan).unwrap();
    std::fs::write(orphan.join("cache-id"), &orphan_cache).unwrap();
    driver
        .create(&random_hex(), None, &CreateOpts::default())
        .unwrap();
}

fn scenarios() -> Vec<Scenario> {
    vec![
        Scenario {
            name: "collect garbage",
            setup: setup_leftovers,
            run: |rig| {
                let report = rig.store.collect_garbage()?;
                if let Some(f) = report.failures.first() {
                    return Err(layer_store::Error::InvalidArgument(f.clone()));
                }
                assert_eq!(report.finished_removals.len(), 1, "{report:?}");
                assert_eq!(report.leftovers.len(), 1, "{report:?}");
                assert_eq!(report.driver_dirs.len(), 1, "{report:?}");
                assert!(report.kept.is_empty(), "{report:?}");
                Ok(())
            },
            retry: |rig| {
                rig.store.collect_garbage().unwrap();
            },
            done: |rig| assert_eq!(rig.store.map().len(), 2),
        },
        Scenario {
            name: "register a base layer",
            setup: |_| {},
            run: |rig| {
                let r = rig.store.register(&tar_a()[..], None)?;
                rig.hold(r);
                Ok(())
            },
            retry: |rig| {
                let r = rig.store.register(&tar_a()[..], None).unwrap();
                rig.hold(r);
            },
            done: |rig| {
                let r = &rig.refs[0];
                assert_eq!(common::read_all(r.tar_stream().unwrap()), tar_a());
            },
        },
        Scenario {
            name: "register on a parent",
            setup: setup_base,
            run: register_child,
            retry: |rig| register_child(rig).unwrap(),
            done: |rig| {
                let id = child_id(rig);
                let r = rig.refs.iter().find(|r| r.chain_id() == &id).unwrap();
                assert_eq!(common::read_all(r.tar_stream().unwrap()), tar_b());
            },
        },
        Scenario {
            name: "register a chain on a parent",
            setup: setup_base,
            run: register_chain,
            retry: |rig| register_chain(rig).unwrap(),
            done: |rig| {
                assert_eq!(rig.store.map().len(), 3);
                let top = rig.refs.last().unwrap();
                assert_eq!(common::read_all(top.tar_stream().unwrap()), tar_a());
            },
        },
        Scenario {
            name: "register a chain whose first layer exists",
            setup: setup_base,
            run: register_chain_on_existing,
            retry: |rig| register_chain_on_existing(rig).unwrap(),
            done: |rig| {
                assert_eq!(rig.store.map().len(), 3);
                let top = rig.refs.last().unwrap();
                assert_eq!(common::read_all(top.tar_stream().unwrap()), tar_a());
                assert_eq!(top.depth(), 3);
            },
        },
        Scenario {
            name: "register existing content",
            setup: setup_child,
            run: register_child,
            retry: |rig| register_child(rig).unwrap(),
            done: |rig| assert_eq!(rig.store.map().len(), 2),
        },
        Scenario {
            name: "release a layer",
            setup: setup_child,
            run: release_child,
            retry: retry_release_child,
            done: |rig| assert_eq!(rig.store.map().len(), 1),
        },
        Scenario {
            name: "release a chain (child, then its parent)",
            setup: |rig| {
                setup_child(rig);
                let b = base(rig);
                let r = rig.take(&b);
                rig.store.release(r).unwrap();
            },
            run: release_child,
            retry: |rig| {
                // Whatever is left nobody holds: a fresh reference and its release finishes it.
                let map = rig.store.map();
                let top = map.values().max_by_key(|l| l.depth()).cloned();
                if let Some(l) = top {
                    let r = rig.store.get(l.chain_id()).unwrap();
                    rig.store.release(r).unwrap();
                }
            },
            done: |rig| assert!(rig.store.map().is_empty()),
        },
        Scenario {
            name: "create RW layer",
            setup: setup_base,
            run: |rig| create_rw(rig, false),
            retry: |rig| create_rw(rig, false).unwrap(),
            done: |rig| done_rw(rig, false),
        },
        Scenario {
            name: "create RW layer with init",
            setup: setup_base,
            run: |rig| create_rw(rig, true),
            retry: |rig| create_rw(rig, true).unwrap(),
            done: |rig| done_rw(rig, true),
        },
        Scenario {
            name: "release RW layer",
            setup: |rig| setup_rw(rig, false),
            run: release_rw,
            retry: retry_release_rw,
            done: |rig| assert!(rig.store.rw_layers().is_empty()),
        },
        Scenario {
            name: "release RW layer with init",
            setup: |rig| setup_rw(rig, true),
            run: release_rw,
            retry: retry_release_rw,
            done: |rig| assert!(rig.store.rw_layers().is_empty()),
        },
    ]
}

/// Nothing the store lists is a phantom: metadata loads and driver directories exist. After a
/// failed RW release (moby's order: directories first, then the record) the RW layer stays
/// with its record, and a directory the driver removed before failing may be gone until the
/// release is retried (`rw_dirs_may_be_gone`).
fn assert_no_phantoms(rig: &Rig, what: &str, rw_dirs_may_be_gone: bool) {
    let store = &rig.store;
    let driver = store.driver();
    for (id, l) in store.map() {
        let rec = store
            .meta()
            .layer(&id)
            .unwrap_or_else(|e| panic!("{what}: layer {id} listed but its metadata: {e}"));
        assert_eq!(rec.cache_id, l.cache_id(), "{what}");
        assert!(
            driver.exists(l.cache_id()),
            "{what}: {id} has no driver dir"
        );
    }
    for (name, m) in store.rw_layers() {
        let rec = store
            .meta()
            .mount(&name)
            .unwrap_or_else(|e| panic!("{what}: RW layer {name} listed but its record: {e}"));
        assert_eq!(rec.mount_id, m.mount_id(), "{what}");
        assert_eq!(rec.init_id.as_deref(), m.init_id(), "{what}");
        for id in std::iter::once(m.mount_id()).chain(m.init_id()) {
            assert!(
                rw_dirs_may_be_gone || driver.exists(id),
                "{what}: RW layer {name} has no dir {id}"
            );
        }
    }
    assert_counts(store, &rig.held, what);
}

fn layers_and_mounts(store: &Store) -> (BTreeSet<ChainId>, BTreeSet<String>) {
    (
        store.map().into_keys().collect(),
        store.rw_layers().into_keys().collect(),
    )
}

/// A scratch root on tmpfs when there is one: thousands of runs with full durability would
/// otherwise spend minutes in fsync.
fn scratch_dir() -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    if shm.is_dir()
        && let Ok(d) = tempfile::tempdir_in(shm)
    {
        return d;
    }
    tempfile::tempdir().unwrap()
}

/// Runs one scenario with the fault at `fail_at` of `target`; returns the steps counted.
fn run_once(
    driver: &str,
    sc: &Scenario,
    target: Target,
    fail_at: usize,
    errno: Errno,
) -> (usize, usize) {
    let dir = scratch_dir();
    let root = dir.path();
    let (mf, df) = match target {
        Target::Meta => (Fault::new(fail_at, errno), Fault::new(usize::MAX, errno)),
        Target::Driver => (Fault::new(usize::MAX, errno), Fault::new(fail_at, errno)),
        Target::DriverAfter => (
            Fault::new(usize::MAX, errno),
            Fault::new_after(fail_at, errno),
        ),
    };
    let mut rig = open_rig(root, driver, mf.clone(), df.clone());
    (sc.setup)(&mut rig);
    if sc.name != "collect garbage" {
        assert_consistent(&rig.store, "after setup");
    }
    let before = layers_and_mounts(&rig.store);
    rig.arm(true);
    let result = (sc.run)(&mut rig);
    rig.arm(false);
    let counted = (mf.count(), df.count());
    let fault = match target {
        Target::Meta => &mf,
        Target::Driver | Target::DriverAfter => &df,
    };
    let what = format!(
        "[{driver}] {}: {errno:?} at {target:?} step {fail_at} ({})",
        sc.name,
        fault.step()
    );
    if !fault.fired.load(Ordering::SeqCst) {
        // The dry run (or a step count past the end): the operation must just work.
        result.unwrap_or_else(|e| panic!("{what}: failed without a fault: {e}"));
        assert_consistent(&rig.store, &what);
        (sc.done)(&rig);
        return counted;
    }
    let step = fault.step();
    // Failures the store may absorb: EEXIST on mkdir (a directory that must exist does, or a
    // write-set name is taken and another one is drawn),
    // removing garbage in tmp/ after the change is done, and removing a duplicate register's
    // directory, or this call's own copy of a layer that exists (logged; gc below must find
    // it). EEXIST on a rename to a freshly drawn name
    // (a removal marker, a move into tmp/) draws another name. The fsync after a removal is
    // done only logs: a lost removal reappears as an orphan and is finished again.
    let absorbable = (step.starts_with("CreateDir ") && errno == Errno::EXIST)
        || step.starts_with("Remove { path: \"tmp/")
        || (step.starts_with("SyncDir ")
            && (sc.name.starts_with("release") && fault.fail_at > 1
                || sc.name == "collect garbage"))
        || (step.starts_with("Rename ")
            && errno == Errno::EXIST
            && (step.contains("-removing\"") || step.contains("to: \"tmp/")))
        || ((sc.name == "register existing content"
            || sc.name == "register a chain whose first layer exists")
            && step.starts_with("driver remove"));
    let err = match result {
        Ok(()) if absorbable => None,
        Ok(()) => panic!("{what}: the injected failure was not reported"),
        Err(e) => Some(e),
    };
    if let Some(e) = &err {
        assert!(!e.to_string().is_empty(), "{what}");
        // A failed register or RW creation is not visible at all.
        if sc.name.starts_with("register") || sc.name.starts_with("create") {
            assert_eq!(layers_and_mounts(&rig.store), before, "{what}: {e}");
        }
    }
    let rw_release_failed = err.is_some() && sc.name.starts_with("release RW");
    if rw_release_failed {
        // Nothing is forgotten: the RW layer and its record stay.
        assert_eq!(layers_and_mounts(&rig.store), before, "{what}");
        assert!(rig.store.meta().mount("ctr").is_ok(), "{what}: record gone");
    }
    assert_no_phantoms(
        &rig,
        &format!("{what} (right after; error: {err:?})"),
        rw_release_failed,
    );
    // Nor is anything left over, except after the point of no return of a removal (the
    // layer's metadata marked `-removing`, or an RW layer's record gone), which gc finishes.
    let report = rig.store.check(&CheckOptions::default()).unwrap();
    let marked = rig.store.meta().orphans().unwrap().len();
    let unexpected: Vec<_> = report
        .problems
        .iter()
        .filter(|p| {
            let s = p.to_string();
            let removal_marked = sc.name.starts_with("release")
                && (s.contains("interrupted removal") || s.contains("driver directory"));
            // A duplicate register whose own directory could not be removed still hands out
            // the existing layer; the directory waits for gc.
            let duplicate_dir = err.is_none() && s.contains("driver directory");
            // Removing garbage in tmp/ failed: the garbage stays for gc.
            let garbage = step.starts_with("Remove { path: \"tmp/") && s.contains("tmp/");
            // A failed collection leaves some of what it was collecting.
            let collecting = sc.name == "collect garbage";
            !(removal_marked || duplicate_dir || garbage || collecting)
        })
        .collect();
    assert!(
        unexpected.is_empty(),
        "{what}: right after (error: {err:?}, {marked} marked): {unexpected:#?}"
    );

    // The store's own recovery leaves it clean (but for an RW layer whose directories its
    // failed release removed, which the retry finishes); then the operation works.
    let gc = rig.store.collect_garbage().unwrap();
    assert!(gc.failures.is_empty(), "{what}: gc: {gc:?}");
    if rw_release_failed {
        assert!(
            rig.store.meta().mount("ctr").is_ok(),
            "{what}: gc removed the record"
        );
    } else {
        assert_consistent(&rig.store, &format!("{what}: after gc"));
    }
    assert_counts(&rig.store, &rig.held, &format!("{what}: after gc"));
    if err.is_some() {
        (sc.retry)(&mut rig);
    }
    assert_consistent(&rig.store, &format!("{what}: after retry"));
    assert_counts(&rig.store, &rig.held, &format!("{what}: after retry"));
    (sc.done)(&rig);

    // A reopened store agrees.
    let names = layers_and_mounts(&rig.store);
    drop(rig);
    let rig = open_rig(
        root,
        driver,
        Fault::new(usize::MAX, errno),
        Fault::new(usize::MAX, errno),
    );
    assert_eq!(layers_and_mounts(&rig.store), names, "{what}: reopened");
    assert_consistent(&rig.store, &format!("{what}: reopened"));
    assert_counts(&rig.store, &BTreeMap::new(), &format!("{what}: reopened"));
    counted
}

fn run_all(driver: &str, target: Target) {
    let mut total = 0;
    for sc in scenarios() {
        let (m, d) = run_once(driver, &sc, target, usize::MAX, Errno::IO);
        let steps = match target {
            Target::Meta => m,
            Target::Driver | Target::DriverAfter => d,
        };
        assert!(
            steps > 0,
            "[{driver}] {}: no {target:?} steps counted",
            sc.name
        );
        for i in 0..steps {
            // One errno per step, rotating (all three on every scenario); the
            // LAYERSTORE_FAULT_ALL_ERRNOS knob runs every errno at every step.
            let errnos: &[Errno] = if std::env::var_os("LAYERSTORE_FAULT_ALL_ERRNOS").is_some() {
                &ERRNOS
            } else {
                std::slice::from_ref(&ERRNOS[i % ERRNOS.len()])
            };
            for &errno in errnos {
                run_once(driver, &sc, target, i, errno);
                total += 1;
            }
        }
        eprintln!("[{driver}] {}: {steps} {target:?} steps", sc.name);
    }
    eprintln!("[{driver}] {total} injected {target:?} failures");
}

#[test]
fn metadata_failures_on_vfs() {
    run_all("vfs", Target::Meta);
}

#[test]
fn driver_failures_on_vfs() {
    run_all("vfs", Target::Driver);
}

#[test]
fn driver_failures_after_the_work_on_vfs() {
    run_all("vfs", Target::DriverAfter);
}

#[test]
fn driver_failures_after_the_work_on_overlay2() {
    if drivers().contains(&"overlay2") {
        run_all("overlay2", Target::DriverAfter);
    }
}

#[test]
fn metadata_failures_on_overlay2() {
    if drivers().contains(&"overlay2") {
        run_all("overlay2", Target::Meta);
    }
}

#[test]
fn driver_failures_on_overlay2() {
    if drivers().contains(&"overlay2") {
        run_all("overlay2", Target::Driver);
    }
}

/// The input itself breaks: a reader that fails (a dropped download) or ends early (a
/// truncated tar) at many offsets. Each register fails, names the cause, and leaves
/// nothing: no layer, no directory, no write-set; the parent's count is unchanged.
fn broken_input(driver: &str) {
    let dir = scratch_dir();
    let store = common::open(dir.path(), driver);
    let base = store.register(&tar_a()[..], None).unwrap();
    let tar = tar_b();
    let cuts = [
        0,
        1,
        100,
        511,
        512,
        513,
        1024,
        2048,
        4000,
        tar.len() - 1024 - 1,
    ];
    for &cut in &cuts {
        for fail in [true, false] {
            let what = format!(
                "[{driver}] input {} at byte {cut}",
                if fail { "fails" } else { "ends" }
            );
            let mut inner = &tar[..];
            let reader: Box<dyn Read + Send> = if fail {
                Box::new(FailingInput {
                    inner: tar[..cut].to_vec(),
                    pos: 0,
                })
            } else {
                inner = &inner[..cut];
                Box::new(inner)
            };
            let err = match store.register(reader, Some(base.chain_id())) {
                // As in moby (Go's tar reader), an input that ends cleanly at an entry
                // boundary is a shorter layer, not an error: its exact bytes are the layer.
                Ok(r) if !fail => {
                    assert!(cut == 0 || cut % 512 == 0, "{what}: accepted mid-block");
                    assert_eq!(common::read_all(r.tar_stream().unwrap()), &tar[..cut]);
                    assert_eq!(
                        r.diff_id().as_digest(),
                        &layer_digest::Digester::sha256_of(&tar[..cut]),
                        "{what}"
                    );
                    store.release(r).unwrap();
                    assert_consistent(&store, &what);
                    continue;
                }
                Ok(r) => panic!("{what}: registered {}", r.chain_id()),
                Err(e) => e,
            };
            assert!(!err.to_string().is_empty());
            assert_eq!(store.map().len(), 1, "{what}: {err}");
            assert_eq!(store.reference_count(base.chain_id()), Some(1), "{what}");
            assert_consistent(&store, &format!("{what}: {err}"));
        }
    }
    // The whole tar still registers.
    let r = store.register(&tar[..], Some(base.chain_id())).unwrap();
    assert_eq!(common::read_all(r.tar_stream().unwrap()), tar);
}

/// Yields its bytes, then an I/O error.
struct FailingInput {
    inner: Vec<u8>,
    pos: usize,
}

impl Read for FailingInput {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos == self.inner.len() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "download dropped",
            ));
        }
        let n = buf.len().min(self.inner.len() - self.pos).min(300);
        buf[..n].copy_from_slice(&self.inner[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[test]
fn register_from_broken_input_leaves_nothing() {
    for d in drivers() {
        broken_input(d);
    }
}
