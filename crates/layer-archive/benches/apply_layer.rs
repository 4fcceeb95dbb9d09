//! Applying a layer tar (the register path), plain and overlay flavours, and exporting the
//! changes of a modified copy (the commit path of naive drivers).
//!
//! Compare with GNU tar: `examples/apply_layer.rs` applies a tar file from disk.
//! `cargo bench -p layer-archive --bench apply_layer`

use std::hint::black_box;

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use layer_archive::changes::changes_dirs;
use layer_archive::export::export_changes;
use layer_archive::walk::WalkOptions;
use layer_archive::{ApplyOptions, WhiteoutFormat, apply_layer};
use layer_archive::{Header, TarWriter};

/// `len` bytes from a splitmix64 stream: incompressible, the same every run.
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// 2,000 files of 0–8 KiB in 40 directories, a few 1 MiB files, symlinks and whiteouts.
fn synthetic_layer() -> Vec<u8> {
    let mut w = TarWriter::new(Vec::new());
    let mut seed = 7u64;
    for d in 0..40 {
        w.append(&Header::dir(format!("usr/share/d{d}/")), None)
            .unwrap();
        for f in 0..50 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (seed >> 51) as usize; // 0..8 KiB
            let data = content(len, seed);
            w.append(
                &Header::file(format!("usr/share/d{d}/f{f}"), len as u64),
                Some(&mut &data[..]),
            )
            .unwrap();
        }
        w.append(&Header::symlink(format!("usr/share/d{d}/link"), "f0"), None)
            .unwrap();
        w.append(&Header::file(format!("usr/share/d{d}/.wh.gone"), 0), None)
            .unwrap();
    }
    for b in 0..4 {
        let data = content(1 << 20, b);
        w.append(
            &Header::file(format!("opt/blob{b}"), data.len() as u64),
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
    // `new` starts equal to `old` (same entries, same times), as a vfs copy of it would.
    apply_layer(&old, &mut &layer[..], &opts).unwrap();
    apply_layer(&new, &mut &layer[..], &opts).unwrap();
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
