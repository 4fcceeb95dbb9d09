//! Applying a layer tar (the register path), plain and overlay flavours, and exporting the
//! changes of a modified copy (the commit path of naive drivers).
//!
//! Compare with GNU tar: `examples/apply_layer.rs` applies a tar file from disk.
//! `cargo bench -p graphdriver --bench apply_layer`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use graphdriver::archive::changes::changes_dirs;
use graphdriver::archive::export::export_changes;
use graphdriver::archive::walk::WalkOptions;
use graphdriver::archive::writer::{TarHeader, TarWriter};
use graphdriver::archive::{ApplyOptions, WhiteoutFormat, apply_layer};

/// 2,000 files of 0–8 KiB in 40 directories, a few 1 MiB files, symlinks and whiteouts.
fn synthetic_layer() -> Vec<u8> {
    let mut w = TarWriter::new(Vec::new());
    let mut seed = 7u64;
    for d in 0..40 {
        w.append(&TarHeader::dir(format!("usr/share/d{d}/")), None)
            .unwrap();
        for f in 0..50 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (seed >> 51) as usize; // 0..8 KiB
            let data = graphdriver::graphtest::random_content(len, seed);
            w.append(
                &TarHeader::file(format!("usr/share/d{d}/f{f}"), len as u64),
                Some(&mut &data[..]),
            )
            .unwrap();
        }
        w.append(
            &TarHeader::symlink(format!("usr/share/d{d}/link"), "f0"),
            None,
        )
        .unwrap();
        w.append(
            &TarHeader::file(format!("usr/share/d{d}/.wh.gone"), 0),
            None,
        )
        .unwrap();
    }
    for b in 0..4 {
        let data = graphdriver::graphtest::random_content(1 << 20, b);
        w.append(
            &TarHeader::file(format!("opt/blob{b}"), data.len() as u64),
            Some(&mut &data[..]),
        )
        .unwrap();
    }
    w.finish().unwrap()
}

fn apply(c: &mut Criterion) {
    let layer = synthetic_layer();
    let mut group = c.benchmark_group("apply_layer");
    group.throughput(Throughput::Bytes(layer.len() as u64));
    group.sample_size(20);
    for (name, format) in [
        ("plain", WhiteoutFormat::Plain),
        ("overlay", WhiteoutFormat::Overlay),
    ] {
        if format == WhiteoutFormat::Overlay && !rustix::process::geteuid().is_root() {
            eprintln!("skipping overlay flavour: not root (mknod of whiteouts)");
            continue;
        }
        let opts = ApplyOptions {
            whiteouts: format,
            ..ApplyOptions::for_current_user().with_layer("bench")
        };
        group.bench_function(name, |b| {
            b.iter_batched(
                || tempfile::tempdir().unwrap(),
                |dir| {
                    black_box(apply_layer(dir.path(), &mut &layer[..], &opts).unwrap());
                    dir // removed outside the measurement
                },
                BatchSize::PerIteration,
            )
        });
    }
    group.finish();
}

fn export(c: &mut Criterion) {
    let layer = synthetic_layer();
    let tmp = tempfile::tempdir().unwrap();
    let (old, new) = (tmp.path().join("old"), tmp.path().join("new"));
    std::fs::create_dir(&old).unwrap();
    std::fs::create_dir(&new).unwrap();
    let opts = ApplyOptions::for_current_user();
    apply_layer(&old, &mut &layer[..], &opts).unwrap();
    graphdriver::copy::copy_dir(&old, &new).unwrap();
    for d in 0..40 {
        std::fs::write(new.join(format!("usr/share/d{d}/f1")), "changed").unwrap();
        std::fs::remove_file(new.join(format!("usr/share/d{d}/f2"))).unwrap();
    }
    let mut group = c.benchmark_group("naive_diff");
    group.sample_size(20);
    group.bench_function("changes_2000_files", |b| {
        b.iter(|| black_box(changes_dirs(&new, Some(&old)).unwrap()))
    });
    let changes = changes_dirs(&new, Some(&old)).unwrap();
    group.bench_function("export_80_changes", |b| {
        b.iter(|| {
            black_box(export_changes(&new, &changes, Vec::new(), &WalkOptions::default()).unwrap())
        })
    });
    group.finish();
}

criterion_group!(benches, apply, export);
criterion_main!(benches);
