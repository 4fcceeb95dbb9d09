//! The scale bench's inputs: layer tars made from a seed, so every run (and every machine)
//! registers the same bytes.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use anyhow::Result;

/// Every entry's mtime (2020-09-13): fixed, so the tars are byte-for-byte reproducible.
const MTIME: u64 = 1_600_000_000;

/// Size of each small file (the "files of 1 KiB each").
pub const SMALL_FILE: usize = 1024;

/// A small, fast, seedable generator (splitmix64): the content of every file.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

/// Writes a layer tar entry by entry (ustar headers; names too long for ustar get a GNU
/// long-name entry, which moby, GNU tar and our tarsplit all read).
pub struct TarWriter {
    builder: tar::Builder<BufWriter<File>>,
}

impl TarWriter {
    pub fn create(path: &Path) -> Result<TarWriter> {
        let file = File::create(path)?;
        Ok(TarWriter {
            builder: tar::Builder::new(BufWriter::with_capacity(1 << 20, file)),
        })
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_mtime(MTIME);
        h.set_uid(0);
        h.set_gid(0);
        h
    }

    pub fn dir(&mut self, name: &str) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Directory, 0o755, 0);
        self.builder.append_data(&mut h, name, io::empty())?;
        Ok(())
    }

    pub fn file(&mut self, name: &str, data: &[u8]) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Regular, 0o644, data.len() as u64);
        self.builder.append_data(&mut h, name, data)?;
        Ok(())
    }

    /// A file of `size` bytes read from `data` (which must yield exactly that many).
    pub fn file_from(&mut self, name: &str, size: u64, data: impl io::Read) -> Result<()> {
        let mut h = Self::header(tar::EntryType::Regular, 0o644, size);
        self.builder.append_data(&mut h, name, data)?;
        Ok(())
    }

    pub fn finish(self) -> Result<()> {
        let mut w = self.builder.into_inner()?;
        w.flush()?;
        Ok(())
    }
}

/// `n` files of 1 KiB in directories of 1,000 (`d0000/f000` …), seeded content.
pub fn many_files(path: &Path, n: u64, seed: u64) -> Result<()> {
    let mut t = TarWriter::create(path)?;
    let mut rng = Rng::new(seed);
    let mut body = vec![0u8; SMALL_FILE];
    for i in 0..n {
        let (d, f) = (i / 1000, i % 1000);
        if f == 0 {
            t.dir(&format!("d{d:04}/"))?;
        }
        rng.fill(&mut body);
        t.file(&format!("d{d:04}/f{f:03}"), &body)?;
    }
    t.finish()
}

/// One file of `size` bytes (`big.bin`), seeded content: a 1 MiB random block, each copy
/// stamped with its index so no two MiB are alike.
pub fn one_big_file(path: &Path, size: u64, seed: u64) -> Result<()> {
    struct Gen {
        block: Vec<u8>,
        left: u64,
        pos: usize,
        index: u64,
    }
    impl io::Read for Gen {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.left == 0 {
                return Ok(0);
            }
            if self.pos == self.block.len() {
                self.index += 1;
                self.block[..8].copy_from_slice(&self.index.to_le_bytes());
                self.pos = 0;
            }
            let n = buf
                .len()
                .min(self.block.len() - self.pos)
                .min(usize::try_from(self.left).unwrap_or(usize::MAX));
            buf[..n].copy_from_slice(&self.block[self.pos..self.pos + n]);
            self.pos += n;
            self.left -= n as u64;
            Ok(n)
        }
    }
    let mut block = vec![0u8; 1 << 20];
    Rng::new(seed).fill(&mut block);
    let mut t = TarWriter::create(path)?;
    t.file_from(
        "big.bin",
        size,
        Gen {
            block,
            left: size,
            pos: 0,
            index: 0,
        },
    )?;
    t.finish()
}

/// A tree `depth` directories deep (`d/d/d/…`), one small file `f` in each but the deepest:
/// 2 × depth - 1 entries. At 2,048 levels the deepest name is 4,096 bytes, PATH_MAX: the
/// longest name our tar reader accepts (a file in it would be one byte more).
pub fn deep_tree(path: &Path, depth: u64, seed: u64) -> Result<()> {
    let mut t = TarWriter::create(path)?;
    let mut rng = Rng::new(seed);
    let mut body = [0u8; 16];
    let mut dir = String::new();
    for level in 1..=depth {
        dir.push_str("d/");
        t.dir(&dir)?;
        if level < depth {
            rng.fill(&mut body);
            t.file(&format!("{dir}f"), &body)?;
        }
    }
    t.finish()
}

/// The flat tree with the same entry count as [`deep_tree`]: `count` directories side by side
/// (`d0000/` …), one small file in each but the last.
pub fn flat_tree(path: &Path, count: u64, seed: u64) -> Result<()> {
    let mut t = TarWriter::create(path)?;
    let mut rng = Rng::new(seed);
    let mut body = [0u8; 16];
    for i in 0..count {
        let dir = format!("d{i:04}/");
        t.dir(&dir)?;
        if i + 1 < count {
            rng.fill(&mut body);
            t.file(&format!("{dir}f"), &body)?;
        }
    }
    t.finish()
}

/// One layer of a chain: `files` files of 1 KiB under `<dir>/` plus `shared/f`, which every
/// layer of the chain rewrites.
pub fn chain_layer(path: &Path, dir: &str, files: u64, seed: u64) -> Result<()> {
    let mut t = TarWriter::create(path)?;
    let mut rng = Rng::new(seed);
    let mut body = vec![0u8; SMALL_FILE];
    t.dir(&format!("{dir}/"))?;
    for j in 0..files {
        rng.fill(&mut body);
        t.file(&format!("{dir}/f{j:03}"), &body)?;
    }
    t.dir("shared/")?;
    rng.fill(&mut body);
    t.file("shared/f", &body)?;
    t.finish()
}

/// The one-file layer `layer-bench --open-many` registers as its `i`-th layer, byte for byte
/// (`f-<i>` holding `<i>\n`), so moby's store can be filled with the very same layers.
pub fn tiny_layer(i: u64) -> Vec<u8> {
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
