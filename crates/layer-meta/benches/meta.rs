//! Commit cost per durability mode, and read/list cost.
//!
//! Run briefly: `cargo bench -p layer-meta -- --warm-up-time 1 --measurement-time 3`.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use layer_digest::{ChainId, DiffId, Digester};
use layer_meta::{Durability, MetaOptions, MetaStore};

fn id(n: u64) -> DiffId {
    DiffId::new(Digester::sha256_of(&n.to_le_bytes()))
}

/// A tar-split-like JSON stream of about 64 KiB.
fn tar_split() -> Vec<u8> {
    let mut out = Vec::new();
    for pos in 0..600 {
        writeln!(out, "{{\"type\":1,\"name\":\"usr/lib/file{pos}\",\"size\":{pos},\"payload\":\"AAAAAAAAAAA=\",\"position\":{pos}}}")
            .unwrap();
    }
    out
}

fn commit(store: &MetaStore, n: u64, json: &[u8]) {
    let diff = id(n);
    let mut tx = store.start_transaction().unwrap();
    tx.set_diff_id(&diff).unwrap();
    tx.set_size(n).unwrap();
    tx.set_cache_id(Digester::sha256_of(&n.to_be_bytes()).hex())
        .unwrap();
    tx.set_parent(&ChainId::new(id((n + 1) << 32).into_digest()))
        .unwrap();
    tx.tar_split_writer().unwrap().write_all(json).unwrap();
    tx.commit(&ChainId::new(diff.into_digest())).unwrap();
}

fn bench_commit(c: &mut Criterion) {
    let json = tar_split();
    let counter = AtomicU64::new(0);
    let mut group = c.benchmark_group("commit_64k_tar_split");
    for (name, durability) in [
        ("full", Durability::Full),
        ("batch", Durability::Batch),
        ("none", Durability::None),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let store = MetaStore::open(
            &dir.path().join("layerdb"),
            MetaOptions {
                durability,
                ..Default::default()
            },
        )
        .unwrap();
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| commit(&store, counter.fetch_add(1, Ordering::Relaxed), &json))
        });
    }
    group.finish();
}

fn bench_read(c: &mut Criterion) {
    let json = tar_split();
    let dir = tempfile::tempdir().unwrap();
    let opts = MetaOptions {
        durability: Durability::None,
        ..Default::default()
    };
    let store = MetaStore::open(&dir.path().join("layerdb"), opts).unwrap();
    for n in 0..200 {
        commit(&store, n, &json);
    }
    let one = ChainId::new(id(7).into_digest());
    c.bench_function("layer_record", |b| b.iter(|| store.layer(&one).unwrap()));
    c.bench_function("list_200_layers", |b| {
        b.iter(|| store.list_layers().unwrap())
    });
    c.bench_function("read_64k_tar_split", |b| {
        b.iter(|| {
            std::io::copy(
                &mut store.tar_split_reader(&one).unwrap(),
                &mut std::io::sink(),
            )
            .unwrap()
        })
    });
}

criterion_group!(benches, bench_commit, bench_read);
criterion_main!(benches);
