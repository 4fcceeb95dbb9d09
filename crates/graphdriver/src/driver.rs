//! The driver traits: what every graph driver offers the layer store.
//!
//! This is moby's `ProtoDriver` / `DiffDriver` / `Driver` split in Rust form:
//!
//! * [`ProtoDriver`] manages directories: create, remove, get (mount) and put (unmount).
//! * [`DiffDriver`] turns a layer into a tar of its changes and back.
//! * [`Driver`] is both. A driver that only implements [`ProtoDriver`] gets a [`DiffDriver`]
//!   from [`crate::naive::NaiveDiffDriver`], which walks and compares trees.
//!
//! Identifiers are opaque strings chosen by the caller (the layer store uses 64 random hex
//! characters, with `-init` for init layers). `parent` is `None` for a base layer.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::PathBuf;

use crate::error::Result;
use layer_archive::EntrySequence;
use layer_archive::change::Change;

/// Options for creating a layer, as moby's `CreateOpts`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CreateOpts {
    /// SELinux mount label applied when the layer is mounted ("" for none).
    pub mount_label: String,
    /// Per-layer storage options (`size=10G`, …); a driver rejects keys it does not know.
    pub storage_opt: BTreeMap<String, String>,
}

/// Status rows, as `docker info` shows them: `(key, value)`.
pub type Status = Vec<(String, String)>;

/// A tar stream produced by a driver. Dropping it releases whatever the driver holds for it
/// (mounts are put back).
pub type TarStream = Box<dyn Read + Send>;

/// Directory management: the part every driver implements itself.
pub trait ProtoDriver: Send + Sync + std::fmt::Debug {
    /// The driver's name (`"overlay2"`, `"vfs"`).
    fn name(&self) -> &str;

    /// Creates a read-only layer `id` on top of `parent`.
    fn create(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()>;

    /// Creates a read-write layer `id` on top of `parent` (a container's layer or an init layer).
    fn create_read_write(&self, id: &str, parent: Option<&str>, opts: &CreateOpts) -> Result<()>;

    /// Removes layer `id` and everything the driver keeps for it. Removing a layer that does not
    /// exist is not an error.
    fn remove(&self, id: &str) -> Result<()>;

    /// Makes the layer's full filesystem view available and returns its path. Calls are
    /// reference-counted per id: each `get` needs a matching [`ProtoDriver::put`].
    fn get(&self, id: &str, mount_label: &str) -> Result<PathBuf>;

    /// Releases one reference taken by [`ProtoDriver::get`]; the last one unmounts.
    fn put(&self, id: &str) -> Result<()>;

    /// Whether layer `id` exists.
    fn exists(&self, id: &str) -> bool;

    /// Status rows for `docker info`-like output.
    fn status(&self) -> Status;

    /// Driver-specific metadata about a layer (overlay2: `LowerDir`, `UpperDir`, `WorkDir`,
    /// `MergedDir`; vfs: nothing).
    fn metadata(&self, id: &str) -> Result<BTreeMap<String, String>>;

    /// Releases everything the driver holds (unmounts what it left mounted under its home).
    fn cleanup(&self) -> Result<()>;

    /// The ids of every layer directory the driver has on disk, for orphan detection.
    fn list(&self) -> Result<Vec<String>>;

    /// A directory holding layer `id`'s complete tree, readable without [`ProtoDriver::get`]
    /// (vfs: the layer directory itself). `None` when the driver has none (overlay2 keeps
    /// only the layer's own changes in its `diff/`). [`crate::naive::NaiveDiffDriver`]
    /// offers it as [`DiffDriver::payload_root`].
    fn full_tree_dir(&self, id: &str) -> Result<Option<PathBuf>> {
        let _ = id;
        Ok(None)
    }
}

/// Diff operations: tar export, changes, apply.
pub trait DiffDriver: Send + Sync {
    /// An uncompressed tar (AUFS whiteout form: `.wh.` entries) of layer `id`'s changes against
    /// `parent`.
    fn diff(&self, id: &str, parent: Option<&str>) -> Result<TarStream>;

    /// The changes of layer `id` against `parent`, sorted by path. With no parent every path
    /// is an addition.
    fn changes(&self, id: &str, parent: Option<&str>) -> Result<Vec<Change>>;

    /// Applies an uncompressed layer tar onto layer `id` (whose parent is `parent`) and returns
    /// the applied size.
    fn apply_diff(&self, id: &str, parent: Option<&str>, diff: &mut dyn Read) -> Result<u64>;

    /// [`DiffDriver::apply_diff`], also returning the sequence of tar entries the driver's
    /// applier read ([`EntrySequence`]), so that the caller can check it against another
    /// reader of the same stream (the layer store compares it with tar-split's). `None`
    /// when the driver cannot tell (the default); every driver of this crate can.
    fn apply_diff_listed(
        &self,
        id: &str,
        parent: Option<&str>,
        diff: &mut dyn Read,
    ) -> Result<(u64, Option<EntrySequence>)> {
        self.apply_diff(id, parent, diff).map(|size| (size, None))
    }

    /// Whether [`DiffDriver::apply_diff`] reads nothing of the parent layer's content, so that
    /// the layers of a chain can be applied at the same time once each one's directory has
    /// been created (in chain order, before any apply). overlay2 with native diff: yes, each
    /// layer is extracted into its own `diff/` alone. A driver that copies the parent when it
    /// creates a layer (vfs) or applies onto the parent's merged tree (naive diff): no.
    fn apply_independent_of_parent(&self) -> bool {
        false
    }

    /// The size of layer `id`'s changes against `parent`.
    fn diff_size(&self, id: &str, parent: Option<&str>) -> Result<u64>;

    /// A directory holding layer `id`'s own file payloads under their tar names, readable
    /// without mounting, for tar-split reassembly. `None` when the driver cannot offer one; the
    /// caller then reads through [`ProtoDriver::get`].
    fn payload_root(&self, id: &str) -> Result<Option<PathBuf>> {
        let _ = id;
        Ok(None)
    }
}

/// A complete graph driver.
pub trait Driver: ProtoDriver + DiffDriver {}

impl<T: ProtoDriver + DiffDriver> Driver for T {}
