//! The one-pass register pipeline: hash, split and apply a layer tar together.

use std::io::{self, BufWriter, Read, Write};

use graphdriver::Driver;
use layer_digest::{DiffId, DigestReader};
use layer_meta::Transaction;
use tarsplit::asm::Disassembler;
use tarsplit::storage::{DiscardFilePutter, JsonPacker};

use crate::error::{Error, Result};

/// What applying a layer produced.
pub(crate) struct Applied {
    pub(crate) diff_id: DiffId,
    pub(crate) size: u64,
}

/// Reads `tar` once: a [`DigestReader`] hashes every byte (the DiffID), the tar-split
/// [`Disassembler`] records headers and payload CRCs into the transaction's
/// `tar-split.json.gz`, and the driver applies the very bytes the disassembler passes on.
///
/// The driver may stop reading at the end-of-archive blocks; whatever follows is drained so
/// that it reaches the digest and the tar-split metadata too (the DiffID covers every byte up
/// to EOF, as moby's).
pub(crate) fn apply_and_split<R: Read>(
    driver: &dyn Driver,
    tx: &mut Transaction,
    cache_id: &str,
    parent_cache: Option<&str>,
    tar: R,
) -> Result<Applied> {
    let tar_split = tx.tar_split_writer()?;
    let packer = JsonPacker::new(BufWriter::with_capacity(256 << 10, tar_split));
    let hashed = DigestReader::new(tar);
    let mut disasm = Disassembler::new(hashed, packer, DiscardFilePutter);

    let applied = {
        let _span = tracing::info_span!("apply", cache = cache_id).entered();
        driver.apply_diff(cache_id, parent_cache, &mut disasm)
    };
    let drained = io::copy(&mut disasm, &mut io::sink());
    let size = applied?;
    drained.map_err(|e| split_error(cache_id, e))?;

    let (hashed, packer, _, _) = disasm.into_parts();
    let mut buffered = packer.into_inner();
    buffered
        .flush()
        .map_err(|e| Error::io(format!("layer {cache_id}: write tar-split metadata"), e))?;
    let tar_split = buffered.into_inner().map_err(|e| {
        Error::io(
            format!("layer {cache_id}: write tar-split metadata"),
            e.into_error(),
        )
    })?;
    tar_split.finish()?;
    Ok(Applied {
        diff_id: DiffId::new(hashed.digest()),
        size,
    })
}

/// Turns an I/O error from the disassembler back into the tar-split error it carries.
fn split_error(layer: &str, e: io::Error) -> Error {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<tarsplit::Error>())
    {
        Some(_) => {
            let inner = e
                .into_inner()
                .expect("checked above")
                .downcast::<tarsplit::Error>()
                .expect("checked above");
            Error::TarSplit {
                layer: layer.to_owned(),
                source: *inner,
            }
        }
        None => Error::io(format!("layer {layer}: read layer tar"), e),
    }
}
