//! tar-split disassembly and reassembly throughput on a generated ~6 MB archive: a mix of
//! larger files (where CRC and copying dominate) and many small ones (where header
//! parsing and JSON dominate), GNU long names and PAX records included.
use std::hint::black_box;
use std::io::Read;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use tarsplit::asm::{Disassembler, assemble};
use tarsplit::storage::{BufferFileGetPutter, DiscardFilePutter, JsonPacker, JsonUnpacker};

fn archive() -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for i in 0..2000u32 {
        let size = if i % 20 == 0 {
            40_000
        } else {
            (i as usize * 37) % 900
        };
        let body: Vec<u8> = (0..size).map(|j| (j as u32 ^ i) as u8).collect();
        let mut h = tar::Header::new_gnu();
        h.set_size(size as u64);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        if i % 50 == 0 {
            b.append_pax_extensions([("SCHILY.xattr.user.bench", &b"value"[..])])
                .unwrap();
        }
        let name = if i % 25 == 0 {
            format!("dir{}/{}/file-{i}", i % 7, "long".repeat(30))
        } else {
            format!("dir{}/file-{i}", i % 7)
        };
        b.append_data(&mut h, name, &body[..]).unwrap();
    }
    b.into_inner().unwrap()
}

fn bench(c: &mut Criterion) {
    let tar = archive();
    let mut json = Vec::new();
    let mut bodies = BufferFileGetPutter::new();
    Disassembler::new(&tar[..], JsonPacker::new(&mut json), &mut bodies)
        .read_to_end(&mut Vec::new())
        .unwrap();

    let mut g = c.benchmark_group("tarsplit");
    g.throughput(Throughput::Bytes(tar.len() as u64));
    g.sample_size(20);
    g.bench_function("disasm", |b| {
        let mut out = Vec::with_capacity(json.len());
        let mut sink = vec![0u8; 1 << 20];
        b.iter(|| {
            out.clear();
            let mut d = Disassembler::new(
                black_box(&tar[..]),
                JsonPacker::new(&mut out),
                DiscardFilePutter,
            );
            while d.read(&mut sink).unwrap() > 0 {}
        })
    });
    g.bench_function("asm", |b| {
        let mut out = Vec::with_capacity(tar.len());
        b.iter(|| {
            out.clear();
            assemble(
                JsonUnpacker::new(black_box(&json[..])),
                &mut bodies,
                &mut out,
            )
            .unwrap();
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
