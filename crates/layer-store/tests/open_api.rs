//! The supported entry points a downstream project uses: `Store::try_open` (never waits
//! for another process) and `Store::open_with_driver` (a driver of one's own, checked with
//! graphdriver's `graphtest` conformance suite).

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use graphdriver::graphtest::{self, Outcome, TempHome};
use graphdriver::{CreateOpts, DiffDriver, Driver, ProtoDriver, Status, TarStream};
use layer_archive::change::Change;
use layer_archive::{EntrySequence, Header, TarWriter};
use layer_store::{Error, Store, StoreOptions};

/// A driver of one's own, named `mine` (it keeps its layers with vfs's code).
#[derive(Debug)]
struct Mine {
    inner: Arc<dyn Driver>,
}

impl ProtoDriver for Mine {
    fn name(&self) -> &str {
        "mine"
    }
    fn create(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> graphdriver::Result<()> {
        self.inner.create(id, parent, opts)
    }
    fn create_read_write(
        &self,
        id: &str,
        parent: Option<&str>,
        opts: &CreateOpts,
    ) -> graphdriver::Result<()> {
        self.inner.create_read_write(id, parent, opts)
    }
    fn remove(&self, id: &str) -> graphdriver::Result<()> {
        self.inner.remove(id)
    }
    fn get(&self, id: &str, mount_label: &str) -> graphdriver::Result<PathBuf> {
        self.inner.get(id, mount_label)
    }
    fn put(&self, id: &str) -> graphdriver::Result<()> {
        self.inner.put(id)
    }
    fn exists(&self, id: &str) -> bool {
        self.inner.exists(id)
    }
    fn status(&self) -> Status {
        self.inner.status()
    }
    fn metadata(
        &self,
        id: &str,
    ) -> graphdriver::Result<std::collections::BTreeMap<String, String>> {
        self.inner.metadata(id)
    }
    fn cleanup(&self) -> graphdriver::Result<()> {
        self.inner.cleanup()
    }
    fn list(&self) -> graphdriver::Result<Vec<String>> {
        self.inner.list()
    }
    fn full_tree_dir(&self, id: &str) -> graphdriver::Result<Option<PathBuf>> {
        self.inner.full_tree_dir(id)
    }
}

impl DiffDriver for Mine {
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
        self.inner.apply_diff(id, parent, diff)
    }
    fn apply_diff_listed(
        &self,
        id: &str,
        parent: Option<&str>,
        diff: &mut dyn Read,
    ) -> graphdriver::Result<(u64, Option<EntrySequence>)> {
        self.inner.apply_diff_listed(id, parent, diff)
    }
    fn diff_size(&self, id: &str, parent: Option<&str>) -> graphdriver::Result<u64> {
        self.inner.diff_size(id, parent)
    }
    fn payload_root(&self, id: &str) -> graphdriver::Result<Option<PathBuf>> {
        self.inner.payload_root(id)
    }
}

fn mine(root: &std::path::Path) -> Arc<dyn Driver> {
    let inner: Arc<dyn Driver> = Arc::new(graphdriver::vfs::init(root, &[]).unwrap());
    Arc::new(Mine { inner })
}

fn layer_tar() -> Vec<u8> {
    let mut w = TarWriter::new(Vec::new());
    w.append(&Header::dir("etc/"), None).unwrap();
    w.append(&Header::file("etc/motd", 6), Some(&mut &b"hello\n"[..]))
        .unwrap();
    w.finish().unwrap()
}

#[test]
fn try_open_fails_at_once_while_another_process_holds_the_root() {
    let dir = tempfile::tempdir().unwrap();
    drop(Store::open(StoreOptions::new(dir.path()).driver("vfs")).unwrap());
    // Another process's hold on the root: its lock file, locked through a descriptor of
    // its own (flock locks belong to the open file, so this conflicts like a process).
    let other = std::fs::File::open(dir.path().join("layerstore.lock")).unwrap();
    other.lock().unwrap();
    match Store::try_open(StoreOptions::new(dir.path()).driver("vfs")) {
        Err(Error::Locked { path, .. }) => assert_eq!(path, dir.path()),
        other => panic!("expected Error::Locked, got {other:?}"),
    }
    other.unlock().unwrap();
    let store = Store::try_open(StoreOptions::new(dir.path()).driver("vfs")).unwrap();
    assert_eq!(store.driver_name(), "vfs");
}

#[test]
fn a_driver_of_ones_own_passes_graphtest_and_backs_a_store() {
    // The conformance cases a new driver runs first. Base and snap chown to 1:2: graphtest
    // skips them unprivileged (counted here), as root they must run.
    for (name, case) in [
        (
            "create empty",
            graphtest::driver_test_create_empty as fn(&dyn Driver) -> Outcome,
        ),
        ("create base", graphtest::driver_test_create_base),
        ("create snap", graphtest::driver_test_create_snap),
        ("changes", graphtest::driver_test_changes),
    ] {
        let home = TempHome::new("mine").unwrap();
        if let Outcome::Skipped(why) = case(&*mine(home.path())) {
            assert!(
                !testkit::gate::is_root(),
                "{name}: a vfs-backed driver must not skip as root: {why}"
            );
            let _ = testkit::gate::skip_variant(Some(name), testkit::gate::Reason::NotRoot, why);
        }
    }
    graphtest::driver_test_diff_apply(&*mine(TempHome::new("mine").unwrap().path()), 20);

    // A store over it keeps its metadata under the driver's name.
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open_with_driver(StoreOptions::new(dir.path()), mine(dir.path())).unwrap();
    assert_eq!(store.driver_name(), "mine");
    let tar = layer_tar();
    let layer = store.register(&tar[..], None).unwrap();
    assert!(
        dir.path()
            .join("image/mine/layerdb/sha256")
            .join(layer.chain_id().hex())
            .is_dir()
    );
    let mut back = Vec::new();
    layer.tar_stream().unwrap().read_to_end(&mut back).unwrap();
    assert_eq!(back, tar);
    store.release(layer).unwrap();
}
