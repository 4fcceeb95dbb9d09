//! Defence in depth: register compares the entries the driver's applier read with the ones
//! tar-split's disassembler read, and refuses the layer when they differ, leaving the store
//! as it was. With one codec the two agree by construction, so a driver that misreports
//! its sequence stands in for "something between the two readers went wrong".

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use graphdriver::{CreateOpts, DiffDriver, Driver, ProtoDriver, Status, TarStream};
use layer_archive::change::Change;
use layer_archive::{EntrySequence, Header, TarWriter};
use layer_store::{Store, StoreOptions};

/// vfs, but the applier's entry sequence it reports can be altered.
#[derive(Debug)]
struct Misreporting {
    inner: Arc<dyn Driver>,
    lie: bool,
}

impl ProtoDriver for Misreporting {
    fn name(&self) -> &str {
        self.inner.name()
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

impl DiffDriver for Misreporting {
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
        let (size, entries) = self.inner.apply_diff_listed(id, parent, diff)?;
        let entries = entries.expect("vfs reports what its applier read");
        if !self.lie {
            return Ok((size, Some(entries)));
        }
        // One entry fewer, as if the applier had skipped one the disassembler saw.
        let mut lie = entries;
        lie.entries -= 1;
        Ok((size, Some(lie)))
    }
    fn diff_size(&self, id: &str, parent: Option<&str>) -> graphdriver::Result<u64> {
        self.inner.diff_size(id, parent)
    }
    fn payload_root(&self, id: &str) -> graphdriver::Result<Option<PathBuf>> {
        self.inner.payload_root(id)
    }
}

fn open(root: &Path, lie: bool) -> Store {
    let registry = graphdriver::Registry::with_builtin();
    let inner: Arc<dyn Driver> = Arc::from(registry.new_driver("vfs", root, &[]).unwrap());
    let driver: Arc<dyn Driver> = Arc::new(Misreporting { inner, lie });
    Store::open_with_driver(StoreOptions::new(root).driver("vfs"), driver).unwrap()
}

fn layer_tar() -> Vec<u8> {
    let mut w = TarWriter::new(Vec::new());
    w.append(&Header::dir("etc/"), None).unwrap();
    w.append(&Header::file("etc/motd", 3), Some(&mut &b"hi\n"[..]))
        .unwrap();
    w.finish().unwrap()
}

#[test]
fn differing_entry_sequences_refuse_the_layer_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let store = open(root, true);
    let err = match store.register(&layer_tar()[..], None) {
        Ok(_) => panic!("a layer whose readers disagree was registered"),
        Err(e) => e,
    };
    // The error and its causes, as layerctl prints them.
    let text = std::iter::successors(Some(&err as &dyn std::error::Error), |e| e.source())
        .map(|e| e.to_string())
        .collect::<Vec<_>>()
        .join(": ");
    assert!(text.contains("read different entries"), "{text}");
    assert!(store.map().is_empty());
    let gc = store.collect_garbage().unwrap();
    assert!(gc.is_empty(), "a refused register left something: {gc:?}");
    drop(store);

    // The same layer registers when both readers agree.
    let store = open(root, false);
    let layer = store.register(&layer_tar()[..], None).unwrap();
    assert_eq!(store.map().len(), 1);
    drop(layer);
}
