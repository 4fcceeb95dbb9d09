//! Changes and diff of a container (RW) layer with one added and one deleted file, on top of
//! images of growing size: native (reads the upper dir) against naive (compares trees).
//! Native should stay flat as the image grows; naive grows with it.
//!
//! Needs root and kernel overlayfs; prints why and does nothing otherwise.
//! `cargo bench -p graphdriver --bench overlay2_rw_diff`

use std::hint::black_box;
use std::io::Read;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use graphdriver::overlay2::{MountApi, Overlay2, Overlay2Options};
use graphdriver::{CreateOpts, DiffDriver, ProtoDriver};

/// Image sizes in files (spread over directories of 100 files, 1 KiB each).
const IMAGE_FILES: &[usize] = &[1_000, 10_000, 40_000];

fn can_run() -> bool {
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipping overlay2 bench: not root");
        return false;
    }
    if !graphdriver::overlay2::overlay_in_proc_filesystems() {
        eprintln!("skipping overlay2 bench: overlay is not in /proc/filesystems");
        return false;
    }
    true
}

/// An image layer of `files` files, an init-like layer on it, and an RW layer with one file
/// added and one deleted. Returns (rw id, parent id).
fn build(d: &Overlay2, files: usize) -> (String, String) {
    let image = format!("image-{files}");
    let init = format!("{image}-init");
    let rw = format!("rw-{files}");
    let opts = CreateOpts::default();
    d.create(&image, None, &opts).unwrap();
    let root = d.get(&image, "").unwrap();
    let payload = vec![b'x'; 1024];
    for i in 0..files {
        let dir = root.join(format!("usr/share/d{:04}", i / 100));
        if i % 100 == 0 {
            std::fs::create_dir_all(&dir).unwrap();
        }
        std::fs::write(dir.join(format!("f{i}")), &payload).unwrap();
    }
    d.put(&image).unwrap();
    d.create_read_write(&init, Some(&image), &opts).unwrap();
    d.create_read_write(&rw, Some(&init), &opts).unwrap();
    let merged = d.get(&rw, "").unwrap();
    std::fs::write(merged.join("usr/share/d0000/added"), b"new file\n").unwrap();
    std::fs::remove_file(merged.join("usr/share/d0000/f1")).unwrap();
    d.put(&rw).unwrap();
    (rw, init)
}

fn read_all(mut r: impl Read) -> u64 {
    std::io::copy(&mut r, &mut std::io::sink()).unwrap()
}

fn bench(c: &mut Criterion) {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("overlay2");
    let native = Overlay2::new(&home, Overlay2Options::default()).unwrap();
    let naive = Overlay2::new(
        &home,
        Overlay2Options {
            force_naive_diff: true,
            ..Overlay2Options::default()
        },
    )
    .unwrap();
    assert!(
        native.uses_native_diff(),
        "kernel does not allow native diff here"
    );
    let layers: Vec<(usize, String, String)> = IMAGE_FILES
        .iter()
        .map(|&n| {
            let (rw, parent) = build(&native, n);
            (n, rw, parent)
        })
        .collect();
    for (_, rw, parent) in &layers {
        assert_eq!(
            native.changes(rw, Some(parent)).unwrap(),
            naive.changes(rw, Some(parent)).unwrap()
        );
    }

    let mut group = c.benchmark_group("rw_layer_1_add_1_delete");
    group.sample_size(10);
    group.measurement_time(std::time::Duration::from_secs(3));
    group.warm_up_time(std::time::Duration::from_millis(500));
    for (n, rw, parent) in &layers {
        group.bench_with_input(BenchmarkId::new("native_changes", n), n, |b, _| {
            b.iter(|| black_box(native.changes(rw, Some(parent)).unwrap()))
        });
        group.bench_with_input(BenchmarkId::new("native_diff", n), n, |b, _| {
            b.iter(|| black_box(read_all(native.diff(rw, Some(parent)).unwrap())))
        });
        group.bench_with_input(BenchmarkId::new("naive_changes", n), n, |b, _| {
            b.iter(|| black_box(naive.changes(rw, Some(parent)).unwrap()))
        });
        group.bench_with_input(BenchmarkId::new("naive_diff", n), n, |b, _| {
            b.iter(|| black_box(read_all(naive.diff(rw, Some(parent)).unwrap())))
        });
    }
    group.finish();
    native.cleanup().unwrap();
}

/// Mounting the top of a 128-layer chain (Docker's limit) and unmounting it: the new mount
/// API against `mount(2)` with home-relative paths (the absolute options exceed a page).
fn deep_mount(c: &mut Criterion) {
    if !can_run() {
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp
        .path()
        .join("a-home-path-long-enough-that-128-absolute-lowers-exceed-a-page")
        .join("overlay2");
    std::fs::create_dir_all(home.parent().unwrap()).unwrap();
    let auto = Overlay2::new(&home, Overlay2Options::default()).unwrap();
    let legacy = Overlay2::new(
        &home,
        Overlay2Options {
            mount_api: MountApi::Legacy,
            ..Overlay2Options::default()
        },
    )
    .unwrap();
    let opts = CreateOpts::default();
    auto.create("layer0", None, &opts).unwrap();
    for i in 1..=128 {
        auto.create(
            &format!("layer{i}"),
            Some(&format!("layer{}", i - 1)),
            &opts,
        )
        .unwrap();
    }
    let mut group = c.benchmark_group("mount_128_lowers");
    group.sample_size(20);
    group.measurement_time(std::time::Duration::from_secs(3));
    for (name, driver) in [
        ("fsconfig_lowerdir_plus", &auto),
        ("mount2_relative", &legacy),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| {
                black_box(driver.get("layer128", "").unwrap());
                driver.put("layer128").unwrap();
            })
        });
    }
    group.finish();
    auto.cleanup().unwrap();
}

criterion_group!(benches, bench, deep_mount);
criterion_main!(benches);
