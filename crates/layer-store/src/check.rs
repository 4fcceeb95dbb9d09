//! The integrity check: is every layer and RW layer whole, and is anything left over?

use std::collections::BTreeSet;
use std::fmt;
use std::io;

use layer_digest::ChainId;

use crate::error::{Error, Result};
use crate::store::Store;

/// What [`Store::check`] does.
#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Reassemble every layer's tar from tar-split and its files and compare with the DiffID
    /// (reads every byte; off for a quick metadata-only check).
    pub verify_content: bool,
    /// Remove what is broken (children first, RW layers on them included) and collect
    /// leftovers.
    pub repair: bool,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            verify_content: true,
            repair: false,
        }
    }
}

/// One thing found wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A layer directory whose metadata does not load, or whose parent is missing.
    BrokenLayer {
        /// Chain ID.
        layer: String,
        /// Why.
        reason: String,
    },
    /// A layer's driver directory is gone.
    MissingDriverDir {
        /// Chain ID.
        layer: String,
        /// The driver directory.
        cache_id: String,
    },
    /// A layer's content does not reassemble to its DiffID.
    BadContent {
        /// Chain ID.
        layer: String,
        /// Why.
        reason: String,
    },
    /// An RW layer whose metadata or directories are broken.
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
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::BrokenLayer { layer, reason } => write!(f, "layer {layer}: broken: {reason}"),
            Problem::MissingDriverDir { layer, cache_id } => {
                write!(f, "layer {layer}: driver directory {cache_id} is missing")
            }
            Problem::BadContent { layer, reason } => write!(f, "layer {layer}: content: {reason}"),
            Problem::BrokenMount { name, reason } => write!(f, "rw layer {name}: {reason}"),
            Problem::Leftover { what } => write!(f, "leftover: {what}"),
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
    /// What repair removed.
    pub repaired: Vec<String>,
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
    /// layer, and reports leftovers. With `repair`, removes broken layers children first (and
    /// RW layers on them), then collects leftovers.
    pub fn check(&self, opts: &CheckOptions) -> Result<CheckReport> {
        let _span = tracing::info_span!("check").entered();
        let mut report = CheckReport::default();
        let driver = self.driver();
        let meta = self.meta();

        let mut bad: BTreeSet<ChainId> = BTreeSet::new();
        let mut bad_unloaded: Vec<ChainId> = Vec::new();
        for b in self
            .inner
            .broken_layers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            if let Ok(c) = b.id.parse::<ChainId>() {
                bad_unloaded.push(c);
            }
            report.problems.push(Problem::BrokenLayer {
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
                reason: b.reason.clone(),
            });
        }

        for (id, layer) in self.map() {
            report.layers_checked += 1;
            if !driver.exists(layer.cache_id()) {
                report.problems.push(Problem::MissingDriverDir {
                    layer: id.to_string(),
                    cache_id: layer.cache_id().to_owned(),
                });
                bad.insert(id);
                continue;
            }
            if opts.verify_content {
                let result = layer.tar_stream().and_then(|mut s| {
                    io::copy(&mut s, &mut io::sink()).map_err(|e| Error::io("read tar stream", e))
                });
                if let Err(e) = result {
                    report.problems.push(Problem::BadContent {
                        layer: id.to_string(),
                        reason: e.to_string(),
                    });
                    bad.insert(id);
                }
            }
        }

        for (name, m) in self.rw_layers() {
            report.mounts_checked += 1;
            for id in std::iter::once(m.mount_id()).chain(m.init_id()) {
                if !driver.exists(id) {
                    report.problems.push(Problem::BrokenMount {
                        name: name.clone(),
                        reason: format!("driver directory {id} is missing"),
                    });
                }
            }
        }

        let leftovers = meta.leftovers()?;
        for l in leftovers.all() {
            // Unloadable layers are already reported as broken layers.
            if l.kind != layer_meta::LeftoverKind::BlockingLayer {
                report.problems.push(Problem::Leftover {
                    what: format!("{} ({})", l.rel_path, l.reason),
                });
            }
        }
        for o in &leftovers.removing {
            report.problems.push(Problem::Leftover {
                what: format!("{} (interrupted removal)", o.name),
            });
        }
        for id in self.unnamed_driver_dirs()? {
            report.problems.push(Problem::Leftover {
                what: format!("driver directory {id} (no layer or RW layer names it)"),
            });
        }

        if opts.repair {
            self.repair(&bad, &bad_unloaded, &mut report)?;
        }
        Ok(report)
    }

    fn repair(
        &self,
        bad: &BTreeSet<ChainId>,
        bad_unloaded: &[ChainId],
        report: &mut CheckReport,
    ) -> Result<()> {
        // Everything built on a bad layer goes with it.
        let map = self.map();
        let mut doomed: Vec<(usize, ChainId)> = Vec::new();
        for (id, layer) in &map {
            let mut cur = Some(layer);
            while let Some(l) = cur {
                if bad.contains(l.chain_id()) {
                    doomed.push((layer.depth(), id.clone()));
                    break;
                }
                cur = l.parent();
            }
        }
        let doomed_set: BTreeSet<ChainId> = doomed.iter().map(|(_, id)| id.clone()).collect();
        for (name, m) in self.rw_layers() {
            let on_bad = m
                .parent()
                .is_some_and(|p| doomed_set.contains(p.chain_id()));
            let missing = std::iter::once(m.mount_id())
                .chain(m.init_id())
                .any(|id| !self.driver().exists(id));
            if on_bad || missing {
                self.force_remove_rw(&name)?;
                report.repaired.push(format!("rw layer {name}"));
            }
        }
        // Children first: deepest layers go before their parents.
        doomed.sort_by_key(|d| std::cmp::Reverse(d.0));
        for (_, id) in doomed {
            self.force_remove_layer(&id)?;
            report.repaired.push(format!("layer {id}"));
        }
        // Layers that never loaded but whose metadata reads (a parent was missing).
        for id in bad_unloaded {
            if let Ok(rec) = self.meta().layer(id) {
                let orphan = self.meta().remove_layer(id)?;
                self.driver().remove(&rec.cache_id)?;
                self.meta().finish_removal(&orphan)?;
                report.repaired.push(format!("layer {id}"));
            }
        }
        let gc = self.collect_garbage()?;
        report.repaired.extend(
            gc.finished_removals
                .into_iter()
                .map(|s| format!("removal {s}")),
        );
        report
            .repaired
            .extend(gc.leftovers.into_iter().map(|s| format!("leftover {s}")));
        report.repaired.extend(
            gc.driver_dirs
                .into_iter()
                .map(|s| format!("driver dir {s}")),
        );
        Ok(())
    }
}
