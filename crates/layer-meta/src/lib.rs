//! Docker-compatible, crash-safe metadata store for image layers: moby's `layerdb`.
//!
//! A [`MetaStore`] is rooted at `<data-root>/image/<driver>/layerdb` and reads and writes
//! exactly the files dockerd does, so a data-root can move between dockerd and us:
//!
//! ```text
//! layerdb/                          0700
//!   tmp/write-set-<u32>/            0755 / 0700   a transaction being written
//!   sha256/<hex>/                   0755 / 0700   a committed layer (renamed write-set)
//!     diff  size  cache-id  parent  descriptor.json  tar-split.json.gz      (files 0644)
//!   sha256/<hex>-<64hex>-removing/                a layer being deleted
//!   mounts/<name>/                  0755 / 0755   mount-id  init-id  parent
//! ```
//!
//! File contents carry no trailing newline; readers trim whitespace except for `size` (as
//! moby). Every malformed value is a typed [`Error`] naming the file and the problem.
//!
//! # Writing a layer
//!
//! A [`Transaction`] fills a fresh write-set; [`Transaction::commit`] publishes it with one
//! `renameat2(RENAME_NOREPLACE)`, so a layer is either fully there or not there at all, and an
//! existing directory is never replaced ([`Error::LayerExists`], `EEXIST`, as Go's `os.Rename`).
//!
//! ```
//! use std::io::Write;
//! use layer_meta::{MetaOptions, MetaStore, MountRecord};
//! use layer_digest::{ChainId, DiffId};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let store = MetaStore::open(&dir.path().join("layerdb"), MetaOptions::default())?;
//!
//! let diff: DiffId = "sha256:0c0c732fecfde8fe022171a4178c157432c24ca0bf5fa99e42c51e6ffcce3bba".parse()?;
//! let chain = ChainId::new(diff.as_digest().clone()); // a base layer: chain ID = diff ID
//! let mut tx = store.start_transaction()?;
//! tx.set_diff_id(&diff)?;
//! tx.set_size(186928)?;
//! tx.set_cache_id("6751648a3fe3d48c497fddd21864dde0b08ebd8cbe61012810ee4289bab911f2")?;
//! let mut tar_split = tx.tar_split_writer()?;
//! tar_split.write_all(b"{\"type\":2,\"payload\":null,\"position\":0}\n")?;
//! tx.commit(&chain)?; // finishes the gzip stream, fsyncs, renames
//!
//! let layer = store.layer(&chain)?;
//! assert_eq!(layer.diff_id, diff);
//! assert_eq!(layer.parent, None);
//! assert_eq!(store.list_layers()?.ids(), vec![chain.clone()]);
//! // A second commit to the same ID is refused, never merged.
//! let tx = store.start_transaction()?;
//! assert!(tx.commit(&chain).unwrap_err().is_layer_exists());
//!
//! store.set_mount("c1", &MountRecord { mount_id: "a".repeat(64), init_id: None, parent: Some(chain) })?;
//! assert_eq!(store.mount("c1")?.mount_id, "a".repeat(64));
//! # Ok(()) }
//! ```
//!
//! # Durability
//!
//! [`Durability::Full`] (default) fsyncs files and the write-set before the rename and the
//! parent directory after it. [`Durability::Batch`] replaces that with one `syncfs` before the
//! rename (fewer syscalls, but it flushes the whole filesystem and the newest commits may roll
//! back after power loss, reappearing as stale write-sets). [`Durability::None`] never syncs
//! (after power loss a layer may have empty files, reported as corrupt). A process crash is
//! safe in every mode: the rename is atomic.
//!
//! # Removal and recovery
//!
//! [`MetaStore::remove_layer`] renames a layer to `<hex>-<64hex>-removing` (an [`Orphan`]); the
//! layer store removes the driver directory, then calls [`MetaStore::finish_removal`].
//! [`MetaStore::leftovers`] finds stale write-sets, half-written mounts, unloadable layer
//! directories that would block a commit, stray entries and `-removing` directories, logging each
//! as a warning; [`MetaStore::remove_leftover`] removes one. The store decides which.
//!
//! # How it is tested
//!
//! moby's `filestore_test.go` cases (`tests/filestore.rs`); the layerdb of a real dockerd
//! data-root read back exactly and rewritten byte-for-byte (`tests/docker_fixture.rs`); a
//! [`FaultInjector`] failing every disk-changing step of every operation in turn with
//! `ENOSPC`/`EIO`/`EEXIST` (`tests/fault_injection.rs`); and a child process SIGKILLed at random
//! points while committing (`tests/crash.rs`).
//!
//! # Deliberate differences from moby
//!
//! 1. **Mount records are atomic and durable.** moby writes `mount-id`, `init-id` and `parent`
//!    in place, one `os.WriteFile` each, without fsync; we write a write-set and rename (or
//!    `RENAME_EXCHANGE`) it into place. Same files and modes, never half-written.
//! 2. **`remove_mount` is atomic**: the directory is moved into `tmp/` first, then deleted.
//! 3. **Commit refuses any existing target with `EEXIST`**, including a regular file, where
//!    Go's rename would fail with `ENOTDIR` on a file (same on-disk outcome: nothing replaced).
//! 4. **Directories are fsynced** (write-set before, `sha256/` after the rename) by default;
//!    moby fsyncs files only. If the fsync after a rename fails, the rename is undone (commit,
//!    `set_mount`, `remove_mount`, `remove_layer`), so an error always means "nothing changed";
//!    a clean-up failure after a completed change is a warning, its garbage a stale write-set.
//! 5. **Leftovers are reported, not ignored**: moby never cleans `tmp/write-set-*` and skips
//!    unloadable layers with a debug log; we report both (warning logs and
//!    [`MetaStore::leftovers`], [`LayerListing::broken`]).
//! 6. **Orphans without a readable `cache-id` are reported** (`cache_id: None`); moby skips
//!    them forever. `finish_removal` deletes exactly the named directory, `cache-id` last;
//!    moby's `Remove` matches every `<hex>*-removing` with the same cache ID.
//! 7. **Reading is as lenient as moby's, writing as exact**: every reader accepts what moby's
//!    Go reader accepts (`size` through `strconv.ParseInt`: `+5`, `007`, `00`, `-1`; digests
//!    through `digest.Parse` after `TrimSpace`; `descriptor.json` through `json.Unmarshal`'s
//!    rules, see the `format` module). Two refusals remain, both reported and never acted on: a `cache-id`
//!    that is unsafe as one directory name (`/`, `..`, NUL, over 255 bytes) or not UTF-8
//!    (moby accepts any non-empty string; BuildKit IDs pass), and a `descriptor.json` digest
//!    that does not parse, which reads as no digest. Writers only produce Docker's canonical
//!    bytes; mount names may not contain `/`. Only sha256 chain IDs are stored (moby would
//!    write `sha512/<hex>` but never list it).
//! 8. **`remove_layer` reports rename errors** (moby ignores non-`EEXIST` rename errors and
//!    goes on deleting the driver directory).
//! 9. **Exact modes**: files and directories are `chmod`ed to Docker's modes whatever the
//!    umask (moby relies on running with umask 0).
//! 10. **Bounded reads**: small files over 4 KiB and `descriptor.json` over 1 MiB are corrupt.
//! 11. **Symlinks are not followed** below the layerdb root: a symlink at `tmp`, `sha256` or
//!     `mounts` makes writes fail with `ENOTDIR` and listings fail (moby's `MkdirAll` and
//!     `ReadDir` follow it), so nothing is ever written outside the root.
//! 12. The gzip *compressed* bytes of `tar-split.json.gz` differ from Go's (different deflate
//!     implementation); the header matches and the gunzipped content is identical.

#![warn(missing_docs, unreachable_pub)]

mod error;
mod format;
mod fsio;
mod layout;
mod mounts;
mod recovery;
mod seam;
mod store;
mod transaction;

pub use error::{Corruption, Error, Result};
pub use format::{Descriptor, Platform};
pub use layout::is_valid_mount_id;
pub use mounts::{BrokenMount, MountListing, MountRecord};
pub use recovery::{Leftover, LeftoverKind, Leftovers, Orphan};
pub use seam::{FaultInjector, FsOp};
pub use store::{
    BrokenLayer, Durability, LayerListing, LayerRecord, MetaOptions, MetaStore, Reference,
    TarSplitReader,
};
pub use transaction::{TarSplitWriter, Transaction};
