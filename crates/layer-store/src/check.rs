//! The integrity check: is every layer and RW layer whole, and is anything left over? And the
//! repair, which removes garbage and, only when asked, broken layers nothing holds.
//!
//! Defects are told apart by what they cost a user:
//!
//! * an **unloadable** record (a metadata file moby would not read either) is reported and
//!   kept, with everything it names;
//! * an **export defect** (tar-split metadata missing or corrupt, files changed) breaks only
//!   `export`, `save` and push: containers on the layer still run, so it is never removed;
//! * a **missing driver directory** makes a layer unusable: it is *broken*. Repair lists the
//!   broken layers nothing holds and removes them only with
//!   [`CheckOptions::remove_broken`]; one that anything holds (a reference, a child, an RW
//!   layer, an unloadable record) is kept;
//! * RW layers are never removed by repair, whatever their state;
//! * **leftovers** are garbage, collected by [`Store::collect_garbage`].

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;

use layer_digest::ChainId;
use layer_meta::LeftoverKind;

use crate::error::{Error, Result};
use crate::store::Store;

/// What [`Store::check`] does.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Reassemble every layer's tar from tar-split and its files and compare with the DiffID
    /// (reads every byte; off for a quick metadata-only check).
    pub verify_content: bool,
    /// Collect leftovers (as [`Store::collect_garbage`]) and list the broken layers nothing
    /// holds ([`CheckReport::removable`]).
    pub repair: bool,
    /// With `repair`, also remove those broken layers (children first; their parents only
    /// lose a count and stay).
    pub remove_broken: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            verify_content: true,
            repair: false,
            remove_broken: false,
        }
    }
}

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A layer directory whose metadata does not load, or whose parent is missing or
    /// unloadable. Kept: it still names its driver directory and its parent.
    Unloadable {
        /// Chain ID.
        layer: String,
        /// Why.
        reason: String,
    },
    /// A layer's driver directory is gone: it can be neither mounted nor exported.
    MissingDriverDir {
        /// Chain ID.
        layer: String,
        /// The driver directory.
        cache_id: String,
    },
    /// A layer's original tar cannot be reproduced (tar-split metadata missing or corrupt,
    /// files changed): export fails, containers on it still run. Kept.
    ExportDefect {
        /// Chain ID.
        layer: String,
        /// Why.
        reason: String,
    },
    /// An RW layer whose metadata or directories are broken. Kept.
    BrokenMount {
        /// Name.
        name: String,
        /// Why.
        reason: String,
    },
    /// Something interrupted work left behind (collected by gc).
    Leftover {
        /// What and where.
        what: String,
    },
    /// An entry in the layerdb this store never creates. Kept.
    Unknown {
        /// What and where.
        what: String,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Unloadable { layer, reason } => {
                write!(f, "layer {layer}: unloadable (kept): {reason}")
            }
            Problem::MissingDriverDir { layer, cache_id } => {
                write!(
                    f,
                    "layer {layer}: broken: driver directory {cache_id} is missing"
                )
            }
            Problem::ExportDefect { layer, reason } => write!(
                f,
                "layer {layer}: export defect (containers still run; export fails): {reason}"
            ),
            Problem::BrokenMount { name, reason } => write!(f, "rw layer {name}: {reason}"),
            Problem::Leftover { what } => write!(f, "leftover: {what}"),
            Problem::Unknown { what } => write!(f, "unknown entry (kept): {what}"),
        }
    }
}

/// The result of [`Store::check`].
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    /// Layers looked at.
    pub layers_checked: usize,
    /// RW layers looked at.
    pub mounts_checked: usize,
    /// What is wrong (before any repair).
    pub problems: Vec<Problem>,
    /// Broken layers nothing holds, which a repair with
    /// [`CheckOptions::remove_broken`] removes (listed whether or not it does).
    pub removable: Vec<String>,
    /// What the repair removed.
    pub repaired: Vec<String>,
    /// What the repair kept although it is broken or looks like garbage, and why.
    pub kept: Vec<String>,
    /// What the repair failed to remove (it went on with the rest).
    pub failures: Vec<String>,
}

impl CheckReport {
    /// True when nothing is wrong.
    pub fn is_clean(&self) -> bool {
        self.problems.is_empty()
    }
}

impl Store {
    /// Verifies every layer (metadata loads, parent chain present, driver directory there,
    /// and with `verify_content` the tar-split and files reassemble to the DiffID) and every RW
    /// layer, and reports leftovers. With `repair`, collects the leftovers and lists the
    /// broken layers nothing holds; with `remove_broken` too, removes those (see the module
    /// docs for what is never removed).
    pub fn check(&self, opts: &CheckOptions) -> Result<CheckReport> {
        let _span = tracing::info_span!("check").entered();
        let mut report = CheckReport::default();
        let driver = self.driver();
        let meta = self.meta();

        for b in self
            .inner
            .broken_layers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            report.problems.push(Problem::Unloadable {
                layer: b.id.clone(),
                reason: b.reason.clone(),
            });
        }
        for b in self
            .inner
            .broken_mounts
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            report.problems.push(Problem::BrokenMount {
                name: b.id.clone(),
                reason: format!("does not load (kept): {}", b.reason),
            });
        }

        let mut broken: BTreeSet<ChainId> = BTreeSet::new();
        for (id, layer) in self.map() {
            report.layers_checked += 1;
            if !driver.exists(layer.cache_id()) {
                report.problems.push(Problem::MissingDriverDir {
                    layer: id.to_string(),
                    cache_id: layer.cache_id().to_owned(),
                });
                broken.insert(id);
                continue;
            }
            let result = if opts.verify_content {
                layer.tar_stream().and_then(|mut s| {
                    io::copy(&mut s, &mut io::sink())
                        .map(drop)
                        .map_err(|e| Error::io("read tar stream", e))
                })
            } else {
                meta.tar_split_reader(&id).map(drop).map_err(Error::from)
            };
            if let Err(e) = result {
                report.problems.push(Problem::ExportDefect {
                    layer: id.to_string(),
                    reason: crate::error::with_causes(&e),
                });
            }
        }

        for (name, m) in self.rw_layers() {
            report.mounts_checked += 1;
            for id in std::iter::once(m.mount_id()).chain(m.init_id()) {
                if !driver.exists(id) {
                    report.problems.push(Problem::BrokenMount {
                        name: name.clone(),
                        reason: format!("driver directory {id} is missing (kept)"),
                    });
                }
            }
        }

        // Unloadable layers were reported above: no second load of every layer.
        let leftovers = meta.interrupted()?;
        for l in leftovers.all() {
            match l.kind {
                // Reported above as unloadable layers.
                LeftoverKind::BlockingLayer => {}
                LeftoverKind::StaleWriteSet => report.problems.push(Problem::Leftover {
                    what: format!("{} ({})", l.rel_path, l.reason),
                }),
                // Reported above as RW layers that do not load.
                LeftoverKind::HalfMount => {}
                LeftoverKind::Stray => report.problems.push(Problem::Unknown {
                    what: format!("{} ({})", l.rel_path, l.reason),
                }),
            }
        }
        for o in &leftovers.removing {
            report.problems.push(Problem::Leftover {
                what: format!("{} (interrupted removal)", o.name),
            });
        }
        for id in self.unnamed_driver_dirs()?.ids {
            report.problems.push(Problem::Leftover {
                what: format!("driver directory {id} (no record names it)"),
            });
        }

        if opts.repair {
            self.repair(&broken, opts.remove_broken, &mut report)?;
        }
        Ok(report)
    }

    fn repair(
        &self,
        broken: &BTreeSet<ChainId>,
        remove: bool,
        report: &mut CheckReport,
    ) -> Result<()> {
        // Broken layers nothing holds but other removable broken layers (their children):
        // grown to a fixed point, then taken children first.
        let map = self.map();
        let children_of = |id: &ChainId, among: &BTreeSet<ChainId>| {
            among
                .iter()
                .filter(|c| {
                    map.get(*c)
                        .and_then(|l| l.parent())
                        .is_some_and(|p| p.chain_id() == id)
                })
                .count()
        };
        let mut removable: BTreeSet<ChainId> = BTreeSet::new();
        loop {
            let more: Vec<ChainId> = broken
                .iter()
                .filter(|id| !removable.contains(*id))
                .filter(|id| {
                    self.reference_count(id)
                        .is_some_and(|n| n == children_of(id, &removable))
                })
                .cloned()
                .collect();
            if more.is_empty() {
                break;
            }
            removable.extend(more);
        }
        let depth: BTreeMap<ChainId, usize> = removable
            .iter()
            .map(|id| (id.clone(), map.get(id).map_or(0, |l| l.depth())))
            .collect();
        let mut order: Vec<ChainId> = removable.iter().cloned().collect();
        order.sort_by_key(|id| std::cmp::Reverse(depth[id]));
        for id in broken.difference(&removable) {
            let users = self.users(id).unwrap_or_default();
            report
                .kept
                .push(format!("layer {id} (broken): held by {users}"));
        }
        report.removable = order.iter().map(|id| format!("layer {id}")).collect();
        if remove {
            for id in &order {
                match self.delete_unheld(id) {
                    Ok(()) => report.repaired.push(format!("layer {id}")),
                    Err(e) => report.failures.push(format!("layer {id}: {e}")),
                }
            }
        }

        let gc = self.collect_garbage()?;
        report.repaired.extend(
            gc.finished_removals
                .into_iter()
                .map(|s| format!("interrupted removal of {s}")),
        );
        report
            .repaired
            .extend(gc.leftovers.into_iter().map(|s| format!("leftover {s}")));
        report.repaired.extend(
            gc.driver_dirs
                .into_iter()
                .map(|s| format!("driver directory {s}")),
        );
        report.kept.extend(gc.kept);
        report.failures.extend(gc.failures);
        Ok(())
    }
}
