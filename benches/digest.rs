//! Chain ID and streaming SHA-256 throughput.
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use layer_digest::{DiffId, Digester, chain_ids};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let diffs: Vec<DiffId> = (0..125u32)
        .map(|i| DiffId::new(Digester::sha256_of(&i.to_le_bytes())))
        .collect();
    c.bench_function("chain_ids/125", |b| b.iter(|| chain_ids(black_box(&diffs))));

    let data = vec![0x5au8; 8 << 20];
    let mut g = c.benchmark_group("sha256");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("8MiB", |b| b.iter(|| Digester::sha256_of(black_box(&data))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
