//! The `overlay2` graph driver: Docker's on-disk layout on kernel overlayfs.
//!
//! Each layer is a directory `<home>/<id>` whose `diff/` holds the layer's own files; a layer
//! with a parent also has a `lower` file naming its ancestors through short symlinks in
//! `<home>/l/`, and a `work/` dir. [`ProtoDriver::get`] mounts the chain read-write (or
//! read-only when the layer already has a child, `committed`) on `<id>/merged`; calls are
//! reference-counted and an existing mount left by an earlier process is adopted. A real
//! Docker data-root's `overlay2/` directory opens as-is.
//!
//! Diffs are native: [`DiffDriver::apply_diff`] unpacks straight into `diff/` in overlay form,
//! [`DiffDriver::diff`] tars `diff/` turning overlay whiteouts back into `.wh.` entries, and
//! [`DiffDriver::changes`] reads `diff/` and only looks up the paths it finds there in the
//! parent, so the cost follows the size of the change, not of the image. When the kernel
//! makes the upper dir unreadable as a diff (`redirect_dir`, `metacopy`) those fall back to
//! the naive tree comparison; [`ProtoDriver::status`] says which is in use.
//!
//! ```no_run
//! use graphdriver::overlay2::{Overlay2, Overlay2Options};
//! use graphdriver::{CreateOpts, ProtoDriver};
//!
//! let driver = Overlay2::new("/var/lib/docker/overlay2", Overlay2Options::default())?;
//! driver.create("base", None, &CreateOpts::default())?;
//! driver.create_read_write("rw", Some("base"), &CreateOpts::default())?;
//! let root = driver.get("rw", "")?; // an overlay mount of base + rw
//! std::fs::write(root.join("hello"), b"hi\n")?;
//! driver.put("rw")?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod changes;
mod entries;
mod export;
mod features;
mod layout;
mod lowers;
mod mount;
mod naive;
mod size;

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

pub use features::{Features, overlay_in_proc_filesystems};
pub use layout::{DEFAULT_MAX_DEPTH, KERNEL_MAX_DEPTH};
pub use mount::MountApi;

use crate::driver::{CreateOpts, DiffDriver, ProtoDriver, Status, TarStream};
use crate::error::{Error, Result};
use crate::ownership::Ownership;
use layer_archive::apply::apply_layer_report;
use layer_archive::change::Change;
use layer_archive::{ApplyOptions, EntrySequence, IdMapping, WhiteoutFormat};
use layout::{LINK_DIR, LayerPaths, mkdir_mode, validate_id, write_atomic};

/// Driver options, as `--storage-opt overlay2.<key>=<value>` strings or built directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overlay2Options {
    /// Longest chain of lowers a layer may have (Docker: 128; the kernel allows 500).
    pub max_depth: usize,
    /// How layers are mounted.
    pub mount_api: MountApi,
    /// Use the naive tree comparison for diff and changes even when native would work.
    pub force_naive_diff: bool,
    /// Owners' ID mapping (`--userns-remap`; not a `--storage-opt`): the home and layer dirs
    /// are owned as moby owns them (see [`crate::ownership`]), tars map owners.
    pub id_map: IdMapping,
}

impl Default for Overlay2Options {
    fn default() -> Self {
        Overlay2Options {
            max_depth: DEFAULT_MAX_DEPTH,
            mount_api: MountApi::Auto,
            force_naive_diff: false,
            id_map: IdMapping::identity(),
        }
    }
}

impl Overlay2Options {
    /// Parses `overlay2.max_depth=N` (1..=500), `overlay2.mount_api=auto|legacy` and
    /// `overlay2.naive_diff=true|false`. `overlay2.size` needs project quotas, which this
    /// driver does not implement; it and any unknown key are refused.
    pub fn parse<S: AsRef<str>>(options: &[S]) -> Result<Self> {
        let mut out = Overlay2Options::default();
        for option in options {
            let option = option.as_ref();
            let (key, value) = option.split_once('=').ok_or_else(|| {
                Error::InvalidOption(format!("unable to parse storage-opt key/value: {option}"))
            })?;
            let key = key.trim().to_ascii_lowercase();
            let value = value.trim();
            match key.as_str() {
                "overlay2.max_depth" => {
                    let depth: usize = value.parse().map_err(|_| {
                        Error::InvalidOption(format!("overlay2.max_depth: not a number: {value}"))
                    })?;
                    if depth == 0 || depth > KERNEL_MAX_DEPTH {
                        return Err(Error::InvalidOption(format!(
                            "overlay2.max_depth={depth}: must be 1..={KERNEL_MAX_DEPTH}"
                        )));
                    }
                    out.max_depth = depth;
                }
                "overlay2.mount_api" => {
                    out.mount_api = match value {
                        "auto" => MountApi::Auto,
                        "legacy" => MountApi::Legacy,
                        _ => {
                            return Err(Error::InvalidOption(format!(
                                "overlay2.mount_api={value}: expected auto or legacy"
                            )));
                        }
                    }
                }
                "overlay2.naive_diff" => {
                    out.force_naive_diff = value.parse().map_err(|_| {
                        Error::InvalidOption(format!(
                            "overlay2.naive_diff={value}: expected true or false"
                        ))
                    })?;
                }
                "overlay2.size" => {
                    return Err(Error::NotSupported(
                        "overlay2.size: limiting RW layers needs project quotas (overlay over xfs \
                         mounted with 'pquota'), which this overlay2 does not set up"
                            .into(),
                    ));
                }
                _ => {
                    return Err(Error::InvalidOption(format!(
                        "overlay2: unknown option {key}"
                    )));
                }
            }
        }
        Ok(out)
    }
}

/// Mount reference counts keyed by mount point, like moby's `RefCounter`: the first time a
/// path is seen, an existing mount there (left by an earlier process) counts as one reference.
#[derive(Debug, Default)]
struct MountRefs {
    counts: Mutex<HashMap<PathBuf, (i64, bool)>>,
}

impl MountRefs {
    fn add(&self, path: &Path, delta: i64) -> i64 {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        let entry = counts.entry(path.to_path_buf()).or_insert((0, false));
        if !entry.1 {
            entry.1 = true;
            if mount::is_mounted(path).unwrap_or(false) {
                entry.0 += 1;
            }
        }
        entry.0 += delta;
        let count = entry.0;
        if count <= 0 {
            counts.remove(path);
        }
        count
    }

    fn forget(&self, path: &Path) {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(path);
    }

    fn clear(&self) {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }
}

/// The overlay2 driver. See the [module documentation](self).
#[derive(Debug)]
pub struct Overlay2 {
    home: PathBuf,
    options: Overlay2Options,
    features: Arc<Features>,
    refs: MountRefs,
    id_locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
    ownership: Ownership,
}

impl Overlay2 {
    /// Opens (creating if needed) a driver home. The home's parent must exist, as with Docker.
    /// Fails with [`Error::NotSupported`] when overlay cannot work here.
    pub fn new(home: impl Into<PathBuf>, options: Overlay2Options) -> Result<Self> {
        let home: PathBuf = home.into();
        let _span = tracing::info_span!("overlay2_init", home = %home.display()).entered();
        if options.max_depth == 0 || options.max_depth > KERNEL_MAX_DEPTH {
            return Err(Error::InvalidOption(format!(
                "overlay2 max depth {} is outside 1..={KERNEL_MAX_DEPTH}",
                options.max_depth
            )));
        }
        if !features::overlay_in_proc_filesystems() {
            return Err(Error::NotSupported(
                "overlay is not in /proc/filesystems".into(),
            ));
        }
        let existed = home.is_dir();
        // Refuse an unusable filesystem before creating anything on it.
        let probe_at = if existed {
            home.as_path()
        } else {
            home.parent().unwrap_or(Path::new("/"))
        };
        features::check_backing_fs(probe_at)?;
        let ownership = Ownership::new(options.id_map.clone());
        mkdir_mode(&home, 0o710)?;
        ownership.chown_dir(&home, ownership.dir_id())?;
        // mountinfo lists absolute, resolved mount points: so must the home be, or a relative
        // or symlinked root never finds its own mounts (and removing a mounted layer fails
        // with EBUSY instead of unmounting it).
        let home = std::fs::canonicalize(&home).map_err(|e| Error::io("resolve", &home, e))?;
        let features = match features::probe(&home) {
            Ok(f) => f,
            Err(e) => {
                // Leave no empty home behind when overlay cannot work here (a caller trying
                // drivers in turn would otherwise find an `overlay2/` it never used).
                if !existed {
                    let _ = std::fs::remove_dir(&home);
                }
                return Err(e);
            }
        };
        if !existed {
            tracing::debug!("created overlay2 home {}", home.display());
        }
        mkdir_mode(&home.join(LINK_DIR), 0o700)?;
        Ok(Overlay2 {
            home,
            options,
            features,
            refs: MountRefs::default(),
            id_locks: Mutex::default(),
            ownership,
        })
    }

    /// The driver home.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// The probed features of this home.
    pub fn features(&self) -> &Features {
        &self.features
    }

    /// Whether diff and changes read the upper dir (`true`) or compare trees (`false`).
    pub fn uses_native_diff(&self) -> bool {
        self.features.native_diff.is_ok() && !self.options.force_naive_diff
    }

    fn use_fsconfig(&self) -> bool {
        self.options.mount_api == MountApi::Auto && self.features.lowerdir_plus
    }

    fn lock_id(&self, id: &str) -> Arc<Mutex<()>> {
        let mut locks = self.id_locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.entry(id.to_string()).or_default().clone()
    }

    fn paths(&self, id: &str) -> LayerPaths {
        LayerPaths::new(&self.home, id)
    }

    fn require(&self, id: &str) -> Result<LayerPaths> {
        validate_id(id)?;
        let paths = self.paths(id);
        match std::fs::symlink_metadata(&paths.dir) {
            Ok(m) if m.is_dir() => Ok(paths),
            Ok(_) => Err(Error::Other(format!(
                "overlay2: {} is not a directory",
                paths.dir.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Err(Error::NotFound(id.to_string()))
            }
            Err(e) => Err(Error::io("stat", &paths.dir, e)),
        }
    }

    /// `parent` is `id`'s direct parent (or both are "no parent"): the precondition for
    /// reading `id`'s upper dir as its diff against `parent`.
    fn is_parent(&self, id: &str, parent: Option<&str>) -> Result<bool> {
        let lowers = layout::read_lowers(&self.home, id)?;
        match parent {
            None => Ok(lowers.is_empty()),
            Some(parent) => {
                let Some(first) = lowers.first() else {
                    return Ok(false);
                };
                Ok(layout::read_link_id(&self.home, parent)? == *first)
            }
        }
    }

    fn create_layer(
        &self,
        id: &str,
        parent: Option<&str>,
        opts: &CreateOpts,
        rw: bool,
    ) -> Result<()> {
        let _span = tracing::info_span!("overlay2_create", id, parent, rw).entered();
        validate_id(id)?;
        if let Some(key) = opts.storage_opt.keys().next() {
            let key = key.to_ascii_lowercase();
            return Err(if key == "size" && !rw {
                Error::InvalidOption(
                    "--storage-opt size is only supported for ReadWrite Layers".into(),
                )
            } else if key == "size" {
                Error::NotSupported(
                    "size: limiting an RW layer needs project quotas (overlay over xfs mounted \
                     with 'pquota'), which this overlay2 does not set up"
                        .into(),
                )
            } else {
                Error::InvalidOption(format!("Unknown option {key}"))
            });
        }
        let lock = self.lock_id(id);
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let paths = self.paths(id);
        if paths.dir.exists() {
            return Err(Error::Other(format!("overlay2: layer {id} already exists")));
        }
        // Work out the lower chain before touching the disk, so a too-deep chain leaves nothing.
        let lower = match parent {
            None => None,
            Some(parent) => {
                self.require(parent)?;
                let mut links = vec![layout::read_link_id(&self.home, parent)?];
                links.extend(layout::read_lowers(&self.home, parent)?);
                if links.len() > self.options.max_depth {
                    return Err(Error::MaxDepthExceeded(format!(
                        "max depth exceeded: layer {id} on {parent} would have {} lowers, the limit is {}",
                        links.len(),
                        self.options.max_depth
                    )));
                }
                Some(layout::format_lower(&links))
            }
        };
        let mut link_made: Option<PathBuf> = None;
        let result = (|| {
            let own = &self.ownership;
            mkdir_mode(&paths.dir, 0o710)?;
            own.chown_dir(&paths.dir, own.dir_id())?;
            mkdir_mode(&paths.diff(), 0o755)?;
            own.chown_dir(&paths.diff(), own.root_pair())?;
            let link = loop {
                let link = layout::generate_link_id();
                let at = self.home.join(LINK_DIR).join(&link);
                match std::os::unix::fs::symlink(format!("../{id}/diff"), &at) {
                    Ok(()) => {
                        link_made = Some(at);
                        break link;
                    }
                    // 130 random bits: a clash means a stale symlink, so just draw again.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    Err(e) => return Err(Error::io("symlink", at, e)),
                }
            };
            write_atomic(&paths.link(), link.as_bytes(), 0o644)?;
            if let (Some(parent), Some(lower)) = (parent, &lower) {
                mkdir_mode(&paths.work(), 0o700)?;
                own.chown_dir(&paths.work(), own.root_pair())?;
                write_atomic(&self.paths(parent).committed(), b"", 0o600)?;
                write_atomic(&paths.lower(), lower.as_bytes(), 0o644)?;
            }
            Ok(())
        })();
        if result.is_err() {
            // Unlike Docker, also drop the l/ symlink so a failed create leaves nothing.
            if let Some(at) = link_made {
                let _ = std::fs::remove_file(at);
            }
            let _ = remove_tree(&paths.dir);
        }
        result
    }

    fn mount_spec<'a>(
        &'a self,
        id: &str,
        lowers: &[String],
        label: &'a str,
    ) -> mount::OverlaySpec<'a> {
        let paths = self.paths(id);
        let mut lower_rel: Vec<String> = lowers.iter().map(|l| format!("{LINK_DIR}/{l}")).collect();
        // A layer with a child is mounted read-only: its diff is a lower elsewhere, and
        // kernels ≥ 5.2 refuse an upper that is in use as a lower (moby#39475).
        let upper_work = if paths.committed().exists() {
            lower_rel.insert(0, format!("{id}/diff"));
            None
        } else {
            Some((format!("{id}/diff"), format!("{id}/work")))
        };
        let selinux = Path::new("/sys/fs/selinux/enforce").exists();
        mount::OverlaySpec {
            home: &self.home,
            lowers: lower_rel,
            upper_work,
            target: paths.merged(),
            index_off: self.features.index_off,
            userxattr: self.features.userxattr,
            label: (selinux && !label.is_empty()).then_some(label),
        }
    }

    /// Runs `f` with the parent's full view mounted (or `None` without a parent).
    fn with_parent_view<T>(
        &self,
        parent: Option<&str>,
        f: impl FnOnce(Option<&Path>) -> Result<T>,
    ) -> Result<T> {
        match parent {
            None => f(None),
            Some(parent) => {
                let view = self.get(parent, "")?;
                let result = f(Some(&view));
                let put = self.put(parent);
                let value = result?;
                put?;
                Ok(value)
            }
        }
    }
}

impl ProtoDriver for Overlay2 {
    fn name(&self) -> &str {
        "overlay2"
    }

    fn create(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()> {
        self.create_layer(id, parent, opts, false)
    }

    fn create_read_write(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()> {
        self.create_layer(id, parent, opts, true)
    }

    fn remove(&self, id: &str) -> Result<()> {
        let _span = tracing::info_span!("overlay2_remove", id).entered();
        validate_id(id)?;
        let lock = self.lock_id(id);
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let paths = self.paths(id);
        if !paths.dir.exists() {
            return Ok(());
        }
        match layout::read_link_id(&self.home, id) {
            Ok(link) => {
                let at = self.home.join(LINK_DIR).join(link);
                match std::fs::remove_file(&at) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(Error::io("remove", at, e)),
                }
            }
            Err(e) => {
                let e = crate::error::with_causes(&e);
                tracing::warn!("overlay2: removing layer {id} without its l/ link: {e}");
                // A create killed between the l/ symlink and the `link` file leaves a symlink
                // that only a scan of l/ finds.
                remove_links_to(&self.home, id);
            }
        }
        for mounted in mount::mounts_under(&paths.dir)? {
            mount::unmount(&mounted)?;
        }
        self.refs.forget(&paths.merged());
        remove_tree(&paths.dir).map_err(|e| Error::io("remove", &paths.dir, e))
    }

    fn get(&self, id: &str, mount_label: &str) -> Result<PathBuf> {
        let _span = tracing::info_span!("overlay2_get", id).entered();
        let paths = self.require(id)?;
        let lock = self.lock_id(id);
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        let lowers = layout::read_lowers(&self.home, id)?;
        if lowers.is_empty() {
            return Ok(paths.diff());
        }
        let merged = paths.merged();
        if self.refs.add(&merged, 1) > 1 {
            return Ok(merged);
        }
        let own = &self.ownership;
        let mounted = mkdir_mode(&merged, 0o700)
            .and_then(|()| own.chown_dir(&merged, own.root_pair()))
            .and_then(|()| {
                mount::mount_overlay(
                    &self.mount_spec(id, &lowers, mount_label),
                    self.use_fsconfig(),
                )
            })
            .and_then(|()| {
                // overlayfs makes work/work as the mounter; container root moves directories
                // from lower to upper through it (moby chowns it too).
                let work = paths.work().join("work");
                if paths.committed().exists() || !work.is_dir() {
                    return Ok(());
                }
                own.chown_dir(&work, own.root_pair())
            });
        if let Err(e) = mounted {
            if self.refs.add(&merged, -1) <= 0 {
                let _ = mount::unmount(&merged);
                let _ = std::fs::remove_dir(&merged);
            }
            return Err(e);
        }
        Ok(merged)
    }

    fn put(&self, id: &str) -> Result<()> {
        let _span = tracing::info_span!("overlay2_put", id).entered();
        let paths = self.require(id)?;
        let lock = self.lock_id(id);
        let _guard = lock.lock().unwrap_or_else(|p| p.into_inner());
        if !paths.lower().exists() {
            return Ok(());
        }
        let merged = paths.merged();
        if self.refs.add(&merged, -1) > 0 {
            return Ok(());
        }
        if let Err(e) = mount::unmount(&merged) {
            tracing::debug!("overlay2: put {id}: {}", crate::error::with_causes(&e));
        }
        // Removing the mount point also makes the kernel drop copies in other namespaces.
        let _ = std::fs::remove_dir(&merged);
        Ok(())
    }

    fn exists(&self, id: &str) -> bool {
        validate_id(id).is_ok() && self.paths(id).dir.is_dir()
    }

    fn status(&self) -> Status {
        let f = &self.features;
        let b = |v: bool| v.to_string();
        let native = self.uses_native_diff();
        let changes = match (&f.native_diff, self.options.force_naive_diff) {
            (Ok(()), false) => "native (reads the upper dir)".to_string(),
            (Ok(()), true) => "naive (forced by overlay2.naive_diff)".to_string(),
            (Err(reason), _) => format!("naive ({reason})"),
        };
        vec![
            ("Backing Filesystem".into(), f.backing_fs.clone()),
            ("Supports d_type".into(), b(f.d_type)),
            ("Using metacopy".into(), b(f.metacopy)),
            ("Native Overlay Diff".into(), b(native)),
            ("userxattr".into(), b(f.userxattr)),
            ("Changes".into(), changes),
            (
                "Mount API".into(),
                if self.use_fsconfig() {
                    "fsconfig lowerdir+"
                } else {
                    "mount(2)"
                }
                .into(),
            ),
            ("Max Depth".into(), self.options.max_depth.to_string()),
        ]
    }

    fn metadata(&self, id: &str) -> Result<BTreeMap<String, String>> {
        let paths = self.require(id)?;
        let s = |p: PathBuf| p.to_string_lossy().into_owned();
        let mut out = BTreeMap::new();
        out.insert("WorkDir".to_string(), s(paths.work()));
        out.insert("MergedDir".to_string(), s(paths.merged()));
        out.insert("UpperDir".to_string(), s(paths.diff()));
        let lowers = layout::read_lowers(&self.home, id)?;
        if !lowers.is_empty() {
            let mut resolved = Vec::with_capacity(lowers.len());
            for link in lowers {
                let at = self.home.join(LINK_DIR).join(&link);
                let target = std::fs::read_link(&at).map_err(|e| Error::io("readlink", &at, e))?;
                // "../<id>/diff" relative to l/ is "<home>/<id>/diff".
                let target = target.strip_prefix("..").unwrap_or(&target);
                resolved.push(s(self.home.join(target)));
            }
            out.insert("LowerDir".to_string(), resolved.join(":"));
        }
        Ok(out)
    }

    fn cleanup(&self) -> Result<()> {
        let _span = tracing::info_span!("overlay2_cleanup", home = %self.home.display()).entered();
        let mut first_error = None;
        for mounted in mount::mounts_under(&self.home)? {
            if let Err(e) = mount::unmount(&mounted) {
                first_error.get_or_insert(e);
            } else if mounted.file_name().is_some_and(|n| n == "merged") {
                let _ = std::fs::remove_dir(&mounted);
            }
        }
        self.refs.clear();
        first_error.map_or(Ok(()), Err)
    }

    fn list(&self) -> Result<Vec<String>> {
        let entries =
            std::fs::read_dir(&self.home).map_err(|e| Error::io("readdir", &self.home, e))?;
        let mut ids = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("readdir", &self.home, e))?;
            let Ok(name) = entry.file_name().into_string() else {
                continue;
            };
            if validate_id(&name).is_err() || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            ids.push(name);
        }
        ids.sort();
        Ok(ids)
    }
}

impl DiffDriver for Overlay2 {
    fn diff(&self, id: &str, parent: Option<&str>) -> Result<TarStream> {
        let _span = tracing::info_span!("overlay2_diff", id, parent).entered();
        let paths = self.require(id)?;
        if self.uses_native_diff() && self.is_parent(id, parent)? {
            let upper = paths.diff();
            let prefix = self.features.xattr_prefix();
            // A layer written elsewhere with redirect_dir/metacopy is not its own diff.
            if changes::upper_is_self_contained(&upper, prefix)? {
                return Ok(Box::new(export::UpperTar::new(
                    id,
                    &upper,
                    prefix,
                    &self.ownership,
                )?));
            }
            tracing::info!("overlay2: layer {id} has redirect/metacopy entries; using naive diff");
        }
        self.naive_diff(id, parent)
    }

    fn changes(&self, id: &str, parent: Option<&str>) -> Result<Vec<Change>> {
        let _span = tracing::info_span!("overlay2_changes", id, parent).entered();
        let paths = self.require(id)?;
        if self.uses_native_diff() && self.is_parent(id, parent)? {
            let upper = paths.diff();
            // The parent's view is the layer's own lower stack, read without mounting.
            let parent_layers: Vec<PathBuf> = layout::read_lowers(&self.home, id)?
                .iter()
                .map(|link| self.home.join(LINK_DIR).join(link))
                .collect();
            let native =
                changes::upper_changes(id, &upper, parent_layers, self.features.xattr_prefix())?;
            match native {
                Some(changes) => return Ok(changes),
                None => tracing::info!(
                    "overlay2: layer {id} has redirect/metacopy entries; using naive changes"
                ),
            }
        }
        self.naive_changes(id, parent)
    }

    fn apply_diff(&self, id: &str, parent: Option<&str>, diff: &mut dyn Read) -> Result<u64> {
        self.apply_diff_listed(id, parent, diff)
            .map(|(size, _)| size)
    }

    fn apply_diff_listed(
        &self,
        id: &str,
        parent: Option<&str>,
        diff: &mut dyn Read,
    ) -> Result<(u64, Option<EntrySequence>)> {
        let _span = tracing::info_span!("overlay2_apply", id, parent).entered();
        let paths = self.require(id)?;
        if self.uses_native_diff() && self.is_parent(id, parent)? {
            // Straight into the upper dir, whiteouts in overlay form; nothing is deleted.
            let opts = self
                .ownership
                .apply_options(ApplyOptions {
                    whiteouts: WhiteoutFormat::Overlay,
                    user_overlay_xattrs: self.features.userxattr,
                    ..ApplyOptions::for_current_user()
                })
                .with_layer(id);
            // The usage counted while applying saves walking the new tree again.
            let applied = apply_layer_report(&paths.diff(), diff, &opts)?;
            let size = match applied.usage {
                Some(usage) => usage,
                None => size::directory_size(&paths.diff())?,
            };
            return Ok((size, Some(applied.entries)));
        }
        self.naive_apply(id, diff)
    }

    fn apply_independent_of_parent(&self) -> bool {
        // Native apply writes the layer's own diff/ only; the naive fallback mounts the parent.
        self.uses_native_diff()
    }

    fn diff_size(&self, id: &str, parent: Option<&str>) -> Result<u64> {
        let paths = self.require(id)?;
        if self.uses_native_diff() && self.is_parent(id, parent)? {
            return size::directory_size(&paths.diff());
        }
        self.naive_diff_size(id, parent)
    }

    fn payload_root(&self, id: &str) -> Result<Option<PathBuf>> {
        Ok(Some(self.require(id)?.diff()))
    }
}

/// Removes the `l/` symlinks that point at layer `id`'s `diff`.
fn remove_links_to(home: &Path, id: &str) {
    let target = format!("../{id}/diff");
    let Ok(entries) = std::fs::read_dir(home.join(LINK_DIR)) else {
        return;
    };
    for entry in entries.flatten() {
        if std::fs::read_link(entry.path()).is_ok_and(|t| t.as_os_str() == target.as_str()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Removes the directory `path` and everything below it (a missing one is not an error),
/// fd-relative: an upper dir of any depth costs no path past `PATH_MAX` and a bounded number
/// of descriptors (`std::fs::remove_dir_all` fails on deep trees with `ENAMETOOLONG`/`EMFILE`).
fn remove_tree(path: &Path) -> std::io::Result<()> {
    use rustix::fs::{Mode, OFlags};
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::other("not a removable path"));
    };
    let parent = rustix::fs::open(
        parent,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let name = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(name))
        .map_err(std::io::Error::other)?;
    safe_root::remove_all_at(std::os::fd::AsFd::as_fd(&parent), &name)
}
