//! Walking the tar headers recorded in metadata, without the file bodies (Go
//! `asm.IterateHeaders`, which containers/storage uses to check tar-split against a
//! layer's table of contents).
//!
//! Segments are fed to the disassembly engine, and each file entry stands in for the body
//! the engine is waiting for. This works because segments keep Go's layout: a segment holds
//! the previous padding and every header block of one entry. Sparse files recorded by
//! [`super::SparseMode::Exact`] keep their physical bodies in segments and are walked like
//! the archive itself; Go-style expanded sparse metadata works too (unlike in Go for PAX
//! 1.0, whose map Go's metadata lost: the map is simply not looked at here).

use std::cell::Cell;
use std::rc::Rc;

use super::disassemble::{DisasmEngine, DisasmOptions, EntryVisitor, SparseMode};
use crate::error::{Error, Result};
use crate::storage::{DiscardFilePutter, Entry, EntryKind, Packer, Unpacker};

/// Counts the file entries the engine derives from the headers, and keeps nothing else.
struct CountingPacker(Rc<Cell<u64>>);

impl Packer for CountingPacker {
    fn add_entry(&mut self, entry: &Entry) -> Result<i64> {
        if entry.kind == EntryKind::File {
            self.0.set(self.0.get() + 1);
        }
        Ok(0)
    }
}

/// Calls `visitor` for every header recorded in the metadata, in archive order.
///
/// Fails when the metadata is inconsistent: a segment that does not parse as tar headers,
/// a file entry without a header before it, a header without its file entry.
pub fn iterate_headers<U: Unpacker, V: EntryVisitor>(mut unpacker: U, visitor: V) -> Result<()> {
    let derived = Rc::new(Cell::new(0u64));
    let opts = DisasmOptions {
        sparse: SparseMode::Exact,
        ..DisasmOptions::default()
    };
    let mut engine = DisasmEngine::new(
        CountingPacker(derived.clone()),
        DiscardFilePutter,
        visitor,
        opts,
    );
    let (mut index, mut recorded) = (0u64, 0u64);
    let inconsistent = |index, message: &str| Error::Metadata {
        index,
        message: message.into(),
    };
    while let Some(entry) = unpacker.next_entry()? {
        match entry.kind {
            EntryKind::Segment => {
                if engine.awaits_body() {
                    return Err(inconsistent(
                        index,
                        "a header announcing a body lacks its file entry",
                    ));
                }
                engine.feed(entry.payload.as_deref().unwrap_or_default())?;
            }
            EntryKind::File => {
                if entry.size > 0 {
                    // The body is not in the metadata: the file entry stands in for it.
                    engine.skip_body()?;
                }
                recorded += 1;
                if derived.get() < recorded {
                    return Err(inconsistent(
                        index,
                        "file entry without a tar header before it",
                    ));
                }
            }
            EntryKind::Other(kind) => return Err(Error::UnknownEntryType { index, kind }),
        }
        index += 1;
    }
    engine.finish()?;
    if derived.get() != recorded {
        return Err(inconsistent(
            index,
            "headers and file entries do not match up",
        ));
    }
    Ok(())
}
