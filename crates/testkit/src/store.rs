//! Whole-store invariants over layer-store's API (feature `store`): what "clean" means after
//! any failure, crash or race, and moby's reference-count rule.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::Path;

use layer_digest::ChainId;
use layer_store::{CheckOptions, CreateRwOptions, LayerRef, Store, StoreOptions};

pub use crate::gate::drivers;
pub use crate::tar::files as tar_of;

use crate::leftovers::{self, Expected};

/// Every driver directory, as a sorted set.
pub fn driver_dirs(store: &Store) -> BTreeSet<String> {
    store
        .driver()
        .list()
        .unwrap_or_else(|e| panic!("list driver directories: {e}"))
        .into_iter()
        .collect()
}

/// The driver directories the store's layers and RW layers name.
pub fn named_dirs(store: &Store) -> BTreeSet<String> {
    let mut named: BTreeSet<String> = store
        .map()
        .values()
        .map(|l| l.cache_id().to_owned())
        .collect();
    for m in store.rw_layers().values() {
        named.insert(m.mount_id().to_owned());
        if let Some(i) = m.init_id() {
            named.insert(i.to_owned());
        }
    }
    named
}

/// Entries of `<layerdb>/tmp` (write-sets of finished or interrupted work).
pub fn tmp_entries(store: &Store) -> Vec<String> {
    match std::fs::read_dir(store.meta().root().join("tmp")) {
        Ok(d) => d
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => panic!("read layerdb tmp: {e}"),
    }
}

/// Disk and memory agree and nothing is left over: `check` (with content verification) is
/// clean, nothing is broken, the driver holds exactly the directories the store names, the
/// layerdb lists exactly the store's layers and RW layers, and no orphan, leftover or
/// write-set remains. `what` names the situation in panic messages.
pub fn assert_consistent(store: &Store, what: &str) {
    let report = store
        .check(&CheckOptions::default())
        .unwrap_or_else(|e| panic!("{what}: check failed: {e}"));
    assert!(
        report.is_clean(),
        "{what}: check found problems: {:#?}",
        report.problems
    );
    let (bl, bm) = store.broken();
    assert!(
        bl.is_empty() && bm.is_empty(),
        "{what}: broken {bl:?} {bm:?}"
    );
    assert_eq!(
        driver_dirs(store),
        named_dirs(store),
        "{what}: driver directories (left) vs the ones layers and RW layers name (right)"
    );
    let meta = store.meta();
    let listing = meta.list_layers().unwrap();
    assert!(listing.broken.is_empty(), "{what}: {:?}", listing.broken);
    let on_disk: BTreeSet<ChainId> = listing.ids().into_iter().collect();
    let in_map: BTreeSet<ChainId> = store.map().into_keys().collect();
    assert_eq!(on_disk, in_map, "{what}: layerdb layers vs the store's map");
    let mounts = meta.list_mounts().unwrap();
    assert!(mounts.broken.is_empty(), "{what}: {:?}", mounts.broken);
    let mount_names: BTreeSet<String> = mounts.mounts.iter().map(|(n, _)| n.clone()).collect();
    let rw_names: BTreeSet<String> = store.rw_layers().into_keys().collect();
    assert_eq!(mount_names, rw_names, "{what}: layerdb mounts vs RW layers");
    assert!(meta.orphans().unwrap().is_empty(), "{what}: orphans left");
    let leftovers = meta.leftovers().unwrap();
    assert!(leftovers.is_empty(), "{what}: leftovers {leftovers:#?}");
    assert!(
        tmp_entries(store).is_empty(),
        "{what}: layerdb tmp/ not empty: {:?}",
        tmp_entries(store)
    );
    let found = leftovers_on_disk(store);
    assert!(found.is_empty(), "{what}: leftovers on disk: {found:#?}");
}

/// What the store holds, as the on-disk scan expects it.
pub fn expected(store: &Store) -> Expected {
    Expected {
        layers: store.map().keys().map(|id| id.to_string()).collect(),
        rw_layers: store.rw_layers().into_keys().collect(),
        driver_dirs: named_dirs(store),
        mountable: None,
    }
}

/// The [`leftovers`] scan of the store's layerdb and driver home against what it holds.
pub fn leftovers_on_disk(store: &Store) -> Vec<String> {
    let expected = expected(store);
    let mut found = leftovers::in_layerdb(store.meta().root(), &expected);
    // The driver home is `<root>/<driver>` (vfs keeps its layers in `dir/`).
    found.extend(leftovers::in_driver(
        store.root(),
        store.driver_name(),
        &expected,
    ));
    found
}

/// Every layer's count is what moby's rules give: the references `held` by the caller, plus
/// one per child layer, plus one per RW layer on it.
pub fn assert_counts(store: &Store, held: &BTreeMap<ChainId, usize>, what: &str) {
    let map = store.map();
    let mut want: BTreeMap<ChainId, usize> = map.keys().map(|k| (k.clone(), 0)).collect();
    for (id, n) in held {
        *want
            .get_mut(id)
            .unwrap_or_else(|| panic!("{what}: held layer {id} is not in the store")) += n;
    }
    for l in map.values() {
        if let Some(p) = l.parent() {
            *want.get_mut(p.chain_id()).expect("parent in map") += 1;
        }
    }
    for m in store.rw_layers().values() {
        if let Some(p) = m.parent() {
            *want.get_mut(p.chain_id()).expect("RW parent in map") += 1;
        }
    }
    for (id, n) in &want {
        assert_eq!(
            store.reference_count(id),
            Some(*n),
            "{what}: reference count of {id}"
        );
    }
}

/// Opens a store on `root` with `driver`, without fsyncs (tests do not survive power cuts).
pub fn open(root: &Path, driver: &str) -> Store {
    let mut o = StoreOptions::new(root).driver(driver);
    o.durability = layer_meta::Durability::None;
    Store::open(o).unwrap_or_else(|e| panic!("open store on {driver}: {e}"))
}

/// Everything a reader yields.
pub fn read_all(mut r: impl Read) -> Vec<u8> {
    let mut v = Vec::new();
    r.read_to_end(&mut v).unwrap();
    v
}

/// moby's `createLayer`: an RW layer on `parent`, changed by `f` through its mount, then its
/// diff registered as a new layer.
pub fn create_layer(store: &Store, parent: Option<&ChainId>, f: impl FnOnce(&Path)) -> LayerRef {
    let name = format!("tmp-{}", rand_name());
    let rw = store
        .create_rw_layer(&name, parent, &CreateRwOptions::default())
        .unwrap();
    let path = rw.mount("").unwrap();
    f(&path);
    let diff = read_all(rw.tar_stream().unwrap());
    rw.unmount().unwrap();
    let layer = store.register(&diff[..], parent).unwrap();
    store.release_rw_layer(rw).unwrap();
    layer
}

/// A name unique in this process (and across processes: it starts with the pid).
pub fn rand_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Writes `content` at `name` under `path` (parents made) with `mode`.
pub fn write(path: &Path, name: &str, content: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let p = path.join(name.trim_start_matches('/'));
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}
