//! Shared helpers for the layer-store tests: a store per driver, tar builders, layer makers.
#![allow(dead_code)]

use std::io::Read;
use std::path::Path;

use layer_digest::ChainId;
use layer_store::{CreateRwOptions, LayerRef, Store, StoreOptions};

/// The drivers to run a test on here: vfs always; overlay2 when root with overlay support
/// (in CI, missing overlay support fails instead of skipping).
pub fn drivers() -> Vec<&'static str> {
    let mut v = vec!["vfs"];
    if overlay_usable() {
        v.push("overlay2");
    } else if std::env::var_os("CI").is_some() && rustix::process::geteuid().is_root() {
        panic!("CI runs as root and must have overlayfs, but overlay2 is unusable here");
    } else {
        eprintln!("skipping overlay2 variant: not root or no overlay in /proc/filesystems");
    }
    v
}

pub fn overlay_usable() -> bool {
    rustix::process::geteuid().is_root()
        && std::fs::read_to_string("/proc/filesystems")
            .is_ok_and(|s| s.lines().any(|l| l.ends_with("\toverlay")))
}

pub fn open(root: &Path, driver: &str) -> Store {
    let mut o = StoreOptions::new(root).driver(driver);
    o.durability = layer_meta::Durability::None;
    Store::open(o).unwrap_or_else(|e| panic!("open store on {driver}: {e}"))
}

/// A tar with the given regular files (`name`, `content`, `mode`).
pub fn tar_of(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, content, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(content.len() as u64);
        h.set_mode(*mode);
        h.set_mtime(1_600_000_000);
        h.set_entry_type(tar::EntryType::Regular);
        h.set_cksum();
        b.append_data(&mut h, name, *content).unwrap();
    }
    b.into_inner().unwrap()
}

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

pub fn rand_name() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

pub fn write(path: &Path, name: &str, content: &[u8], mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    let p = path.join(name.trim_start_matches('/'));
    if let Some(d) = p.parent() {
        std::fs::create_dir_all(d).unwrap();
    }
    std::fs::write(&p, content).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}
