//! The in-flight journal of multi-step image operations.
//!
//! Each file write of this crate is atomic, but `load` (layers, then configs, parent links,
//! then `repositories.json`), `rmi` (tags, then configs, then layers) and `save` (a temporary
//! archive renamed at the end) take several steps. Before its first step such an operation
//! writes a record of what it will create or remove ([`Operation`]), atomically, as
//! `image/<driver>/layerctl-journal-<op>-<pid>-<nonce>.json`; after its last step it removes
//! the record ([`InFlight::finish`]). A record that is still there when no process holds the
//! data-root's lock is an interrupted operation: whoever resolves it (`layerctl gc`) reads in
//! it what to roll back or finish.
//!
//! Docker 20.10's daemon reads only `imagedb/`, `layerdb/`, `distribution/` and
//! `repositories.json` under `image/<driver>/`, so it ignores these files.
//!
//! ```text
//! {"op":"load","pid":4242,"created_images":["sha256:…"],"registered_layers":["sha256:…"],
//!  "tags":[["docker.io/library/busybox:latest","sha256:…"]],"committed":false}
//! {"op":"rmi","pid":4243,"images":["sha256:…"],"layers":["sha256:…"],"force":false}
//! {"op":"save","pid":4244,"temp":"/home/me/.layerctl-save-Xq3…"}
//! ```

use std::fmt;
use std::path::{Path, PathBuf};

use layer_digest::ChainId;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::fsio;
use crate::imagedb::ImageId;
use crate::reference::Reference;

/// Every journal record's file name starts so.
pub const RECORD_PREFIX: &str = "layerctl-journal-";
const RECORD_SUFFIX: &str = ".json";
/// A record is a few IDs per image or layer; anything this large is not one.
const MAX_RECORD: u64 = 16 << 20;

/// What an operation in flight will change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Operation {
    /// `load`: new images, new layers, tags.
    Load(LoadRecord),
    /// `rmi`: images and the layers they hold.
    Remove(RemoveRecord),
    /// `save -o FILE`: the temporary archive beside FILE.
    Save(SaveRecord),
}

/// What a `load` will create.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LoadRecord {
    /// Images that did not exist before the load.
    pub created_images: Vec<ImageId>,
    /// Layers (chain IDs) that did not exist before the load and that it registers.
    pub registered_layers: Vec<ChainId>,
    /// The tags it sets, and the image each names.
    pub tags: Vec<(Reference, ImageId)>,
    /// Set once `repositories.json` holds the tags: from then on the load is done, whatever
    /// later tag moves do to them.
    pub committed: bool,
}

/// What an `rmi` will remove.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RemoveRecord {
    /// Images deleted once untagged.
    pub images: Vec<ImageId>,
    /// Every layer of their chains: released, so deleted where nothing else holds them.
    pub layers: Vec<ChainId>,
    /// `rmi --force`: the images go even with an RW layer built on them.
    pub force: bool,
}

/// What a `save` writes before its final rename.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveRecord {
    /// The temporary archive.
    pub temp: PathBuf,
}

impl Operation {
    /// The command's name: `load`, `rmi`, `save`.
    pub fn name(&self) -> &'static str {
        match self {
            Operation::Load(_) => "load",
            Operation::Remove(_) => "rmi",
            Operation::Save(_) => "save",
        }
    }

    fn to_wire(&self) -> Wire {
        let ids = |v: &[ImageId]| v.iter().map(ToString::to_string).collect();
        let chains = |v: &[ChainId]| v.iter().map(ToString::to_string).collect();
        let mut w = Wire {
            op: self.name().to_owned(),
            pid: std::process::id(),
            ..Wire::default()
        };
        match self {
            Operation::Load(l) => {
                w.created_images = ids(&l.created_images);
                w.registered_layers = chains(&l.registered_layers);
                w.tags = l
                    .tags
                    .iter()
                    .map(|(r, id)| (r.to_string(), id.to_string()))
                    .collect();
                w.committed = l.committed;
            }
            Operation::Remove(r) => {
                w.images = ids(&r.images);
                w.layers = chains(&r.layers);
                w.force = r.force;
            }
            Operation::Save(s) => w.temp = Some(s.temp.clone()),
        }
        w
    }

    fn from_wire(w: Wire) -> std::result::Result<Operation, String> {
        fn ids(v: &[String]) -> std::result::Result<Vec<ImageId>, String> {
            v.iter()
                .map(|s| s.parse().map_err(|e| format!("image ID {s:?}: {e}")))
                .collect()
        }
        fn chains(v: &[String]) -> std::result::Result<Vec<ChainId>, String> {
            v.iter()
                .map(|s| s.parse().map_err(|e| format!("chain ID {s:?}: {e}")))
                .collect()
        }
        match w.op.as_str() {
            "load" => {
                let mut tags = Vec::with_capacity(w.tags.len());
                for (r, id) in &w.tags {
                    let r =
                        Reference::parse_normalized(r).map_err(|e| format!("tag {r:?}: {e}"))?;
                    let id = id.parse().map_err(|e| format!("image ID {id:?}: {e}"))?;
                    tags.push((r, id));
                }
                Ok(Operation::Load(LoadRecord {
                    created_images: ids(&w.created_images)?,
                    registered_layers: chains(&w.registered_layers)?,
                    tags,
                    committed: w.committed,
                }))
            }
            "rmi" => Ok(Operation::Remove(RemoveRecord {
                images: ids(&w.images)?,
                layers: chains(&w.layers)?,
                force: w.force,
            })),
            "save" => Ok(Operation::Save(SaveRecord {
                temp: w.temp.ok_or("no temp path")?,
            })),
            other => Err(format!("unknown operation {other:?}")),
        }
    }
}

impl fmt::Display for Operation {
    /// A one-line summary: `load of 1 new image (crash:latest) and 3 new layers`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = |count: usize, what: &str| {
            format!("{count} {what}{}", if count == 1 { "" } else { "s" })
        };
        match self {
            Operation::Load(l) => {
                write!(
                    f,
                    "load of {} and {}",
                    n(l.created_images.len(), "new image"),
                    n(l.registered_layers.len(), "new layer")
                )?;
                if !l.tags.is_empty() {
                    let tags: Vec<String> =
                        l.tags.iter().map(|(r, _)| r.familiar_string()).collect();
                    write!(f, " tagged {}", tags.join(", "))?;
                }
                if l.committed {
                    f.write_str(" (tags written)")?;
                }
                Ok(())
            }
            Operation::Remove(r) => write!(
                f,
                "rmi of {} and {}",
                n(r.images.len(), "image"),
                n(r.layers.len(), "layer")
            ),
            Operation::Save(s) => write!(f, "save into {}", s.temp.display()),
        }
    }
}

/// The record as stored (strings, checked on read).
#[derive(Debug, Default, Serialize, Deserialize)]
struct Wire {
    op: String,
    pid: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    created_images: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    registered_layers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    tags: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    committed: bool,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    images: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    layers: Vec<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    force: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    temp: Option<PathBuf>,
}

/// One record found on disk.
#[derive(Debug, Clone)]
pub struct Record {
    /// The record's file.
    pub path: PathBuf,
    /// The process that wrote it (gone, if no process holds the root's lock).
    pub pid: u32,
    /// What the operation was to change.
    pub operation: Operation,
}

/// Every record of a journal: those that read, and those that did not (with why; they are
/// reported and kept, never acted on).
#[derive(Debug, Default)]
pub struct JournalListing {
    /// Readable records, by file name.
    pub records: Vec<Record>,
    /// Records that do not parse.
    pub unreadable: Vec<(PathBuf, Error)>,
}

impl JournalListing {
    /// Whether no record, readable or not, is there.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.unreadable.is_empty()
    }
}

/// The journal of one driver's image metadata (`<root>/image/<driver>`).
#[derive(Debug, Clone)]
pub struct Journal {
    dir: PathBuf,
}

impl Journal {
    /// The journal kept in `dir` (`<root>/image/<driver>`).
    pub fn new(dir: impl Into<PathBuf>) -> Journal {
        Journal { dir: dir.into() }
    }

    /// Writes `op`'s record (atomically, durably) before the operation's first step.
    pub fn begin(&self, op: &Operation) -> Result<InFlight> {
        fsio::mkdir_all(&self.dir, 0o700)?;
        let path = self.dir.join(format!(
            "{RECORD_PREFIX}{}-{}-{:08x}{RECORD_SUFFIX}",
            op.name(),
            std::process::id(),
            rand::random::<u32>()
        ));
        let entry = InFlight { path };
        entry.update(op)?;
        tracing::debug!(record = %entry.path.display(), op = op.name(), "journal: begin");
        Ok(entry)
    }

    /// Every record in the journal (none when the directory does not exist).
    pub fn records(&self) -> Result<JournalListing> {
        let mut listing = JournalListing::default();
        for path in self.record_paths()? {
            match read_record(&path) {
                Ok(r) => listing.records.push(r),
                // Gone meanwhile: resolved by someone else.
                Err(e) if e.is_not_found() => {}
                Err(e) => listing.unreadable.push((path, e)),
            }
        }
        Ok(listing)
    }

    /// Whether any record is there (without parsing them).
    pub fn has_records(&self) -> Result<bool> {
        Ok(!self.record_paths()?.is_empty())
    }

    /// Removes a resolved record (durably).
    pub fn remove(&self, record: &Record) -> Result<()> {
        remove_record(&record.path)
    }

    fn record_paths(&self) -> Result<Vec<PathBuf>> {
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(Error::io("read directory", &self.dir, e)),
        };
        let mut out = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io("read directory", &self.dir, e))?;
            let named = entry
                .file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(RECORD_PREFIX) && n.ends_with(RECORD_SUFFIX));
            if named {
                out.push(entry.path());
            }
        }
        out.sort();
        Ok(out)
    }
}

fn read_record(path: &Path) -> Result<Record> {
    let data = fsio::read_optional(path, MAX_RECORD)?.ok_or_else(|| {
        Error::io(
            "read",
            path,
            std::io::Error::from(std::io::ErrorKind::NotFound),
        )
    })?;
    let bad = |reason: String| Error::BadFile {
        path: path.to_owned(),
        reason,
    };
    let wire: Wire = serde_json::from_slice(&data).map_err(|e| bad(e.to_string()))?;
    let pid = wire.pid;
    let operation = Operation::from_wire(wire).map_err(bad)?;
    Ok(Record {
        path: path.to_owned(),
        pid,
        operation,
    })
}

fn remove_record(path: &Path) -> Result<()> {
    fsio::remove_file(path)?;
    fsio::sync_dir(path.parent().unwrap_or(Path::new(".")))
}

/// The record of an operation in flight. Dropping it without [`finish`](Self::finish) leaves
/// the record on disk, as a crash would: the operation is then resolved by whoever resolves
/// the journal (`layerctl gc`).
#[derive(Debug)]
#[must_use = "an operation's record stays on disk until finish() removes it"]
pub struct InFlight {
    path: PathBuf,
}

impl InFlight {
    /// The record's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rewrites the record (atomically), e.g. to mark a load committed.
    pub fn update(&self, op: &Operation) -> Result<()> {
        let mut data = serde_json::to_vec(&op.to_wire()).expect("a record serializes");
        data.push(b'\n');
        fsio::atomic_write(&self.path, &data, 0o600)
    }

    /// The operation's last step is done: the record goes.
    pub fn finish(self) -> Result<()> {
        tracing::debug!(record = %self.path.display(), "journal: finish");
        remove_record(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ImageId {
        ImageId::of_config(&[n])
    }

    #[test]
    fn records_round_trip_and_finish_removes_them() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path().join("image/vfs"));
        assert!(!journal.has_records().unwrap());
        let load = Operation::Load(LoadRecord {
            created_images: vec![id(1)],
            registered_layers: vec![format!("sha256:{}", "a".repeat(64)).parse().unwrap()],
            tags: vec![(Reference::parse_normalized("app:v1").unwrap(), id(1))],
            committed: false,
        });
        let save = Operation::Save(SaveRecord {
            temp: dir.path().join(".layerctl-save-x"),
        });
        let a = journal.begin(&load).unwrap();
        let b = journal.begin(&save).unwrap();
        let listing = journal.records().unwrap();
        assert!(listing.unreadable.is_empty());
        let mut ops: Vec<Operation> = listing.records.into_iter().map(|r| r.operation).collect();
        ops.sort_by_key(|o| o.name());
        assert_eq!(ops, vec![load.clone(), save]);

        let Operation::Load(mut l) = load else {
            unreachable!()
        };
        l.committed = true;
        a.update(&Operation::Load(l.clone())).unwrap();
        let again = journal.records().unwrap();
        assert!(
            again
                .records
                .iter()
                .any(|r| r.operation == Operation::Load(l.clone()))
        );
        assert_eq!(
            Operation::Load(l).to_string(),
            "load of 1 new image and 1 new layer tagged app:v1 (tags written)"
        );

        a.finish().unwrap();
        b.finish().unwrap();
        assert!(!journal.has_records().unwrap());
        // Only the directory's own entries remain: no temporary file either.
        assert_eq!(
            std::fs::read_dir(dir.path().join("image/vfs"))
                .unwrap()
                .count(),
            0
        );
    }

    #[test]
    fn an_unreadable_record_is_reported_not_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::new(dir.path());
        let path = dir
            .path()
            .join(format!("{RECORD_PREFIX}load-1-0{RECORD_SUFFIX}"));
        std::fs::write(
            &path,
            b"{\"op\":\"load\",\"pid\":1,\"created_images\":[\"nope\"]}",
        )
        .unwrap();
        std::fs::write(dir.path().join("unrelated.json"), b"{}").unwrap();
        let listing = journal.records().unwrap();
        assert!(listing.records.is_empty());
        assert_eq!(listing.unreadable.len(), 1);
        assert_eq!(listing.unreadable[0].0, path);
        assert!(!listing.unreadable[0].1.is_io());
        assert!(path.exists());
    }
}
