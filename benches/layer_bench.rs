//! `layer-bench`: our store driven exactly like `../shared/peers/moby-layer-bench` drives
//! moby's, printing the same lines, so `cargo xtask bench peers` times both the same way.
//!
//! `layer-bench --root DIR --driver overlay2|vfs [-n N] [--chain] [--drain] [--rw]
//! [--rw-apply TAR] [--reopen] [--release] TAR...`: the TARs are registered as one chain (N
//! times over; with `--chain` in one `Store::register_chain` call), every layer's tar stream
//! is hashed and checked against its DiffID (with `--drain`, streamed once more into a sink
//! without the harness's hash), then the optional RW, reopen and release steps run.
//!
//! `layer-bench --root DIR --driver D --open-many N`: registers N tiny one-file layers (chains
//! of at most 100, each a new base), then times `Store::open` of that root (`openmany` line).
//!
//! `layer-bench --root DIR --driver D --open-only`: times `Store::open` of an existing root
//! (median of 3; `openonly` line). `layer-bench --root DIR --driver D --parallel TAR...`:
//! registers every TAR as a base layer, all at once, one thread each, on one store (`parallel`
//! line: layers, errors, wall seconds); the scale bench's concurrency axis.

use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::time::Instant;

use layer_digest::{ChainId, Digester};
use layer_store::{CreateRwOptions, LayerRef, Store, StoreOptions};

struct Args {
    root: PathBuf,
    driver: String,
    n: usize,
    rw: bool,
    rw_apply: Option<PathBuf>,
    reopen: bool,
    release: bool,
    open_many: usize,
    chain: bool,
    drain: bool,
    open_only: bool,
    parallel: bool,
    tars: Vec<PathBuf>,
}

fn parse() -> Args {
    let mut a = Args {
        root: PathBuf::new(),
        driver: "overlay2".into(),
        n: 1,
        rw: false,
        rw_apply: None,
        reopen: false,
        release: false,
        open_many: 0,
        chain: false,
        drain: false,
        open_only: false,
        parallel: false,
        tars: Vec::new(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let arg = arg.trim_start_matches('-').to_owned();
        match arg.as_str() {
            "root" => a.root = it.next().expect("--root DIR").into(),
            "driver" => a.driver = it.next().expect("--driver NAME"),
            "n" => a.n = it.next().expect("-n N").parse().expect("-n takes a number"),
            "rw" => a.rw = true,
            "rw-apply" => a.rw_apply = Some(it.next().expect("--rw-apply TAR").into()),
            "reopen" => a.reopen = true,
            // Register the whole list with one `Store::register_chain` call (layers applied
            // at the same time where the driver allows it) instead of one register each.
            "chain" => a.chain = true,
            // Also stream every layer into a sink without hashing it (`drained` line).
            "drain" => a.drain = true,
            "release" => a.release = true,
            "open-only" => a.open_only = true,
            "parallel" => a.parallel = true,
            "open-many" => {
                a.open_many = it
                    .next()
                    .expect("--open-many N")
                    .parse()
                    .expect("--open-many takes a number")
            }
            _ => a.tars.push(arg.into()),
        }
    }
    assert!(
        !a.root.as_os_str().is_empty() && (!a.tars.is_empty() || a.open_many > 0 || a.open_only),
        "usage: layer-bench --root DIR --driver D TAR..."
    );
    a
}

fn mbps(bytes: u64, secs: f64) -> f64 {
    bytes as f64 / 1e6 / secs.max(1e-9)
}

fn open(root: &Path, driver: &str) -> Store {
    Store::open(StoreOptions::new(root).driver(driver))
        .unwrap_or_else(|e| die(&format!("open: {e}")))
}

fn die(msg: &str) -> ! {
    eprintln!("layer-bench: {msg}");
    std::process::exit(1)
}

fn digest_of(mut r: impl Read) -> io::Result<(String, u64)> {
    let mut d = Digester::sha256();
    let n = io::copy(&mut r, &mut d)?;
    Ok((d.finish().to_string(), n))
}

/// A one-file layer tar (`f-<i>` holding `<i>`), distinct per `i`.
fn tiny_tar(i: usize) -> Vec<u8> {
    let name = format!("f-{i}");
    let body = format!("{i}\n");
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..135].copy_from_slice(format!("{:011o}", body.len()).as_bytes());
    h[136..147].copy_from_slice(b"14707762000");
    h[156] = b'0';
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    let mut out = h.to_vec();
    let mut data = body.into_bytes();
    data.resize(512, 0);
    out.extend_from_slice(&data);
    out.resize(out.len() + 1024, 0);
    out
}

/// `--open-many N`: N tiny layers in chains of at most 100, then a timed `Store::open`.
fn open_many(args: &Args) {
    const CHAIN: usize = 100;
    let store = open(&args.root, &args.driver);
    let st = Instant::now();
    let mut parent: Option<LayerRef> = None;
    for i in 0..args.open_many {
        if i % CHAIN == 0 {
            parent = None;
        }
        let l = store
            .register(&tiny_tar(i)[..], parent.as_ref().map(|p| p.chain_id()))
            .unwrap_or_else(|e| die(&format!("register tiny layer {i}: {e}")));
        // The store keeps its own reference; holding only the chain tip keeps RSS flat.
        parent = Some(l);
    }
    drop(parent);
    println!(
        "manyreg   layers={} secs={:.3}",
        args.open_many,
        st.elapsed().as_secs_f64()
    );
    drop(store);
    // Three opens, the median reported: one open is a few milliseconds, easily disturbed.
    let mut times = Vec::new();
    let mut n = 0;
    for _ in 0..3 {
        let st = Instant::now();
        let store = open(&args.root, &args.driver);
        n = store.map().len();
        times.push(st.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    println!("openmany  layers={n} secs={:.4}", times[1]);
}

/// `--open-only`: the median of three `Store::open`s of an existing root.
fn open_only(args: &Args) {
    let mut times = Vec::new();
    let mut n = 0;
    for _ in 0..3 {
        let st = Instant::now();
        let store = open(&args.root, &args.driver);
        n = store.map().len();
        times.push(st.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    println!("openonly  layers={n} secs={:.6}", times[1]);
}

/// `--parallel`: every TAR registered as a base layer at the same time, one thread each.
fn parallel(args: &Args) {
    let store = open(&args.root, &args.driver);
    let st = Instant::now();
    let errors: usize = std::thread::scope(|s| {
        let handles: Vec<_> = args
            .tars
            .iter()
            .map(|tar| {
                let store = &store;
                s.spawn(move || {
                    let result = std::fs::File::open(tar)
                        .map_err(|e| e.to_string())
                        .and_then(|f| {
                            store
                                .register(io::BufReader::with_capacity(1 << 20, f), None)
                                .map_err(|e| e.to_string())
                        });
                    match result {
                        Ok(l) => {
                            println!("parallel  layer={} tar={}", l.chain_id(), tar.display());
                            // The layer stays: the store keeps it on disk.
                            std::mem::forget(l);
                            0
                        }
                        Err(e) => {
                            eprintln!("layer-bench: register {}: {e}", tar.display());
                            1
                        }
                    }
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap_or(1)).sum()
    });
    println!(
        "parallel  layers={} errors={errors} secs={:.6}",
        args.tars.len(),
        st.elapsed().as_secs_f64()
    );
}

/// glibc raises its mmap threshold each time a large block is freed; from then on the store's
/// 1 MiB chunks and buffers come from arenas that fragment, and a process registering
/// thousands of layers grew past 1 GB RSS (10,000 tiny layers: 1.3 GB; with a fixed
/// threshold 10 MB). A fixed threshold keeps large buffers in mmap and RSS flat.
fn fix_malloc_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only tunes the allocator; called first thing, before any thread.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 << 10);
    }
}

fn main() {
    fix_malloc_mmap_threshold();
    let args = parse();
    std::fs::create_dir_all(&args.root).unwrap_or_else(|e| die(&format!("{e}")));
    if args.open_many > 0 {
        open_many(&args);
        return;
    }
    if args.open_only {
        open_only(&args);
        return;
    }
    if args.parallel {
        parallel(&args);
        return;
    }
    let t0 = Instant::now();
    let mut store = open(&args.root, &args.driver);
    println!(
        "open      driver={} root={} secs={:.6}",
        store.driver_name(),
        args.root.display(),
        t0.elapsed().as_secs_f64()
    );

    let mut layers: Vec<LayerRef> = Vec::new();
    let (mut reg_bytes, mut reg_secs) = (0u64, 0f64);
    if args.chain {
        let mut files = Vec::new();
        for _ in 0..args.n {
            for tar in &args.tars {
                let f = std::fs::File::open(tar)
                    .unwrap_or_else(|e| die(&format!("{}: {e}", tar.display())));
                reg_bytes += f.metadata().map(|m| m.len()).unwrap_or(0);
                files.push(io::BufReader::with_capacity(1 << 20, f));
            }
        }
        let st = Instant::now();
        layers = store
            .register_chain(None, files)
            .unwrap_or_else(|e| die(&format!("register_chain: {e}")));
        reg_secs = st.elapsed().as_secs_f64();
        for (i, l) in layers.iter().enumerate() {
            println!(
                "register  {i} chain={} diff={} diff_size={} (one register_chain call)",
                l.chain_id(),
                l.diff_id(),
                l.diff_size()
            );
        }
    }
    for _ in 0..if args.chain { 0 } else { args.n } {
        for tar in &args.tars {
            let f = std::fs::File::open(tar)
                .unwrap_or_else(|e| die(&format!("{}: {e}", tar.display())));
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            let parent = layers.last().map(|l| l.chain_id().clone());
            let st = Instant::now();
            let l = store
                .register(io::BufReader::with_capacity(1 << 20, f), parent.as_ref())
                .unwrap_or_else(|e| die(&format!("register: {e}")));
            let secs = st.elapsed().as_secs_f64();
            println!(
                "register  {} chain={} diff={} tar_bytes={size} diff_size={} secs={secs:.3} MBps={:.1}",
                layers.len(),
                l.chain_id(),
                l.diff_id(),
                l.diff_size(),
                mbps(size, secs)
            );
            reg_bytes += size;
            reg_secs += secs;
            layers.push(l);
        }
    }
    println!(
        "register  total layers={} bytes={reg_bytes} secs={reg_secs:.3} MBps={:.1}",
        layers.len(),
        mbps(reg_bytes, reg_secs)
    );

    let (mut ts_bytes, mut ts_secs, mut bad) = (0u64, 0f64, 0);
    for (i, l) in layers.iter().enumerate() {
        let st = Instant::now();
        let (dg, nb) = l
            .tar_stream()
            .and_then(|s| {
                digest_of(s).map_err(|e| layer_store::Error::Io {
                    context: "tar stream".into(),
                    source: e,
                })
            })
            .unwrap_or_else(|e| die(&format!("tarstream: {e}")));
        let secs = st.elapsed().as_secs_f64();
        let ok = dg == l.diff_id().to_string();
        bad += usize::from(!ok);
        println!(
            "tarstream {i} digest={dg} bytes={nb} match={ok} secs={secs:.3} MBps={:.1}",
            mbps(nb, secs)
        );
        ts_bytes += nb;
        ts_secs += secs;
    }
    println!(
        "tarstream total bytes={ts_bytes} secs={ts_secs:.3} MBps={:.1} mismatches={bad}",
        mbps(ts_bytes, ts_secs)
    );
    if args.drain {
        // The stream written to nowhere, as `tar -c | cat > /dev/null` is: the store still
        // verifies the DiffID (a mismatch is an error), the harness does not hash again.
        let (mut bytes, mut secs) = (0u64, 0f64);
        for l in &layers {
            let st = Instant::now();
            bytes += l
                .tar_stream()
                .and_then(|mut s| {
                    io::copy(&mut s, &mut io::sink()).map_err(|e| layer_store::Error::Io {
                        context: "tar stream".into(),
                        source: e,
                    })
                })
                .unwrap_or_else(|e| die(&format!("tarstream: {e}")));
            secs += st.elapsed().as_secs_f64();
        }
        println!(
            "drained   total bytes={bytes} secs={secs:.3} MBps={:.1}",
            mbps(bytes, secs)
        );
    }

    if args.rw {
        let top = layers.last().map(|l| l.chain_id().clone());
        let st = Instant::now();
        let rw = store
            .create_rw_layer("peer-bench-rw", top.as_ref(), &CreateRwOptions::default())
            .unwrap_or_else(|e| die(&format!("create rw: {e}")));
        println!("rw        create secs={:.6}", st.elapsed().as_secs_f64());
        let st = Instant::now();
        let path = rw
            .mount("")
            .unwrap_or_else(|e| die(&format!("mount rw: {e}")));
        println!(
            "rw        mount path={} secs={:.6}",
            path.display(),
            st.elapsed().as_secs_f64()
        );
        std::fs::write(path.join("peer-bench-added"), b"added\n")
            .unwrap_or_else(|e| die(&format!("{e}")));
        if let Some(victim) = walkdir::WalkDir::new(&path)
            .sort_by_file_name()
            .into_iter()
            .filter_map(Result::ok)
            .find(|e| e.file_type().is_file() && e.file_name() != "peer-bench-added")
        {
            std::fs::remove_file(victim.path()).unwrap_or_else(|e| die(&format!("{e}")));
            println!(
                "rw        deleted {}",
                victim
                    .path()
                    .strip_prefix(&path)
                    .map(|p| format!("/{}", p.display()))
                    .unwrap_or_default()
            );
        }
        rw.unmount()
            .unwrap_or_else(|e| die(&format!("unmount: {e}")));
        if let Some(apply) = &args.rw_apply {
            let f = std::fs::File::open(apply).unwrap_or_else(|e| die(&format!("{e}")));
            let size = f.metadata().map(|m| m.len()).unwrap_or(0);
            let st = Instant::now();
            let sz = rw
                .apply_diff(&mut io::BufReader::with_capacity(1 << 20, f))
                .unwrap_or_else(|e| die(&format!("rw applydiff: {e}")));
            let secs = st.elapsed().as_secs_f64();
            println!(
                "rw        applydiff size={sz} secs={secs:.3} MBps={:.1}",
                mbps(size, secs)
            );
        }
        let st = Instant::now();
        let ch = rw
            .changes()
            .unwrap_or_else(|e| die(&format!("changes: {e}")));
        println!(
            "rw        changes n={} secs={:.6}",
            ch.len(),
            st.elapsed().as_secs_f64()
        );
        let st = Instant::now();
        let (dg, nb) = rw
            .tar_stream()
            .map_err(|e| e.to_string())
            .and_then(|s| digest_of(s).map_err(|e| e.to_string()))
            .unwrap_or_else(|e| die(&format!("rw tarstream: {e}")));
        let secs = st.elapsed().as_secs_f64();
        println!(
            "rw        tarstream digest={dg} bytes={nb} secs={secs:.6} MBps={:.1}",
            mbps(nb, secs)
        );
        store
            .release_rw_layer(rw)
            .unwrap_or_else(|e| die(&format!("release rw: {e}")));
    }

    if args.reopen {
        store
            .cleanup()
            .unwrap_or_else(|e| die(&format!("cleanup: {e}")));
        let ids: Vec<ChainId> = layers.iter().map(|l| l.chain_id().clone()).collect();
        drop(layers);
        drop(store);
        let st = Instant::now();
        store = open(&args.root, &args.driver);
        let m = store.map();
        println!(
            "reopen    layers={} secs={:.6}",
            m.len(),
            st.elapsed().as_secs_f64()
        );
        layers = ids
            .iter()
            .map(|id| {
                store
                    .get(id)
                    .unwrap_or_else(|e| die(&format!("get {id} after reopen: {e}")))
            })
            .collect();
    }

    if args.release {
        let st = Instant::now();
        let n = layers.len();
        for l in layers.drain(..).rev() {
            store
                .release(l)
                .unwrap_or_else(|e| die(&format!("release: {e}")));
        }
        println!(
            "release   layers={n} secs={:.3}",
            st.elapsed().as_secs_f64()
        );
    }
    store
        .cleanup()
        .unwrap_or_else(|e| die(&format!("cleanup: {e}")));
}
