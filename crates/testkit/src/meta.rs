//! Deterministic test layers for layer-meta's own tests (feature `meta`): diff IDs, cache
//! IDs, chains, tar-split JSON, and transactions filled and checked field by field.

use std::io::Write;

use layer_digest::{ChainId, DiffId, Digester, chain_id};
use layer_meta::{MetaStore, Transaction};

/// A deterministic diff ID for test layer `n`.
pub fn diff(n: u32) -> DiffId {
    DiffId::new(Digester::sha256_of(format!("layer {n}").as_bytes()))
}

/// A deterministic 64-hex cache ID for test layer `n`.
pub fn cache_id(n: u32) -> String {
    Digester::sha256_of(format!("cache {n}").as_bytes())
        .hex()
        .to_owned()
}

/// Chain IDs of a linear chain of `len` test layers.
pub fn chain(len: u32) -> Vec<ChainId> {
    let mut out: Vec<ChainId> = Vec::new();
    for n in 0..len {
        let id = chain_id(out.last(), &diff(n));
        out.push(id);
    }
    out
}

/// Deterministic tar-split JSON for test layer `n` (a few lines).
pub fn tar_split_json(n: u32) -> Vec<u8> {
    let mut out = Vec::new();
    for pos in 0..3 {
        writeln!(
            out,
            "{{\"type\":2,\"payload\":\"bGF5ZXIg{n}\",\"position\":{pos}}}"
        )
        .unwrap();
    }
    out
}

/// Fills a transaction with every field of test layer `n` (parent from `parent`).
pub fn fill(tx: &mut Transaction, n: u32, parent: Option<&ChainId>) -> layer_meta::Result<()> {
    tx.set_diff_id(&diff(n))?;
    tx.set_size(u64::from(n) * 1000)?;
    tx.set_cache_id(&cache_id(n))?;
    if let Some(parent) = parent {
        tx.set_parent(parent)?;
    }
    let mut w = tx.tar_split_writer()?;
    w.write_all(&tar_split_json(n))
        .map_err(|e| layer_meta::Error::Io {
            op: "write",
            path: "tar-split".into(),
            source: e,
        })?;
    Ok(())
}

/// Commits test layer `n` of a chain.
pub fn commit_layer(store: &MetaStore, chain: &[ChainId], n: u32) -> layer_meta::Result<()> {
    let mut tx = store.start_transaction()?;
    let parent = if n == 0 {
        None
    } else {
        Some(&chain[n as usize - 1])
    };
    fill(&mut tx, n, parent)?;
    tx.commit(&chain[n as usize])
}

/// Checks that layer `n` of `chain` is fully and correctly stored.
pub fn assert_layer_intact(store: &MetaStore, chain: &[ChainId], n: u32) {
    use std::io::Read;
    let id = &chain[n as usize];
    let record = store.layer(id).unwrap_or_else(|e| panic!("layer {n}: {e}"));
    assert_eq!(record.diff_id, diff(n));
    assert_eq!(record.size, i64::from(n) * 1000);
    assert_eq!(record.cache_id, cache_id(n));
    assert_eq!(
        record.parent.as_ref(),
        if n == 0 {
            None
        } else {
            Some(&chain[n as usize - 1])
        }
    );
    let mut json = Vec::new();
    store
        .tar_split_reader(id)
        .unwrap()
        .read_to_end(&mut json)
        .unwrap();
    assert_eq!(json, tar_split_json(n), "tar-split of layer {n}");
}

pub use crate::tree::{mode, names};
