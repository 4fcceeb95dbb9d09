//! The naive fallback: compare the mounted layer with its mounted parent.
//!
//! Used when the upper dir cannot be read as the layer's diff (the kernel writes redirect or
//! metacopy xattrs, or the caller asks for a diff against something that is not the layer's
//! parent). Built on the archive module's tree comparison and change export.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use rustix::fs::{Mode, OFlags};

use super::Overlay2;
use crate::driver::{ProtoDriver, TarStream};
use crate::error::{Error, Result};
use layer_archive::apply::apply_layer_report;
use layer_archive::change::Change;
use layer_archive::walk::{NoConversion, WalkOptions, tar_directory};
use layer_archive::{ApplyOptions, EntrySequence, WhiteoutFormat, changes, export};

/// Moby's archiver writes whole seconds and only `security.capability`.
fn walk_options() -> WalkOptions {
    WalkOptions {
        mtime: layer_archive::walk::MtimePrecision::Seconds,
        xattrs: layer_archive::walk::XattrPolicy::CapabilityOnly,
    }
}

impl Overlay2 {
    /// Runs `f` with `id` and `parent` mounted, putting both back whatever happens.
    fn with_views<T>(
        &self,
        id: &str,
        parent: Option<&str>,
        f: impl FnOnce(&Path, Option<&Path>) -> Result<T>,
    ) -> Result<T> {
        let layer = self.get(id, "")?;
        let result = self.with_parent_view(parent, |view| f(&layer, view));
        let put = self.put(id);
        let value = result?;
        put?;
        Ok(value)
    }

    pub(super) fn naive_changes(&self, id: &str, parent: Option<&str>) -> Result<Vec<Change>> {
        self.with_views(id, parent, |layer, view| {
            changes::changes_dirs(layer, view)
                .map_err(|e| Error::Other(format!("overlay2: changes of layer {id}: {e}")))
        })
    }

    pub(super) fn naive_diff_size(&self, id: &str, parent: Option<&str>) -> Result<u64> {
        self.with_views(id, parent, |layer, view| {
            let list = changes::changes_dirs(layer, view)
                .map_err(|e| Error::Other(format!("overlay2: changes of layer {id}: {e}")))?;
            changes::changes_size(layer, &list)
                .map_err(|e| Error::Other(format!("overlay2: size of layer {id}: {e}")))
        })
    }

    /// The diff tar, spooled to an unnamed temporary file in the home so memory stays bounded
    /// and no mount outlives the call.
    pub(super) fn naive_diff(&self, id: &str, parent: Option<&str>) -> Result<TarStream> {
        let spool = rustix::fs::open(
            self.home(),
            OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| Error::io("open O_TMPFILE", self.home(), e.into()))?;
        let spool = File::from(spool);
        let mut spool = self.with_views(id, parent, |layer, view| {
            let mut owners = self.ownership.converter(NoConversion);
            let written = match view {
                None => tar_directory(layer, spool, &walk_options(), &mut owners),
                Some(view) => changes::changes_dirs(layer, Some(view)).and_then(|list| {
                    export::export_changes_with(layer, &list, spool, &walk_options(), &mut owners)
                }),
            };
            written.map_err(|e| Error::Other(format!("overlay2: diff of layer {id}: {e}")))
        })?;
        spool
            .seek(SeekFrom::Start(0))
            .map_err(|e| Error::io("seek", self.home(), e))?;
        Ok(Box::new(spool))
    }

    pub(super) fn naive_apply(
        &self,
        id: &str,
        diff: &mut dyn Read,
    ) -> Result<(u64, Option<EntrySequence>)> {
        let layer = self.get(id, "")?;
        let opts = self
            .ownership
            .apply_options(ApplyOptions {
                whiteouts: WhiteoutFormat::Plain,
                ..ApplyOptions::for_current_user()
            })
            .with_layer(id);
        let result = apply_layer_report(&layer, diff, &opts);
        let put = self.put(id);
        let applied = result?;
        put?;
        Ok((applied.size, Some(applied.entries)))
    }
}
