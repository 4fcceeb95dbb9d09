//! Where this crate is deliberately better than Go tar-split, and the error and visitor
//! contracts. Each test names the Go defect it guards against.

use std::io::Read;
use std::path::PathBuf;

use layer_archive::codec::sparse::{BodyError, BodyMapper};
use layer_archive::codec::{EntryKind as TarKind, Header};
use tarsplit::asm::{DisasmEngine, DisasmOptions, Disassembler, EntryVisitor, NoVisitor, assemble};
use tarsplit::storage::{
    BufferFileGetPutter, DiscardFilePutter, Entry, EntryKind, JsonPacker, JsonUnpacker, VecPacker,
};
use tarsplit::{Error, crc::crc64};

fn fixture(rel: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/tar-split")
        .join(rel);
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    if raw.starts_with(&[0x1f, 0x8b]) {
        let mut v = Vec::new();
        flate2::read::MultiGzDecoder::new(&raw[..])
            .read_to_end(&mut v)
            .unwrap();
        v
    } else {
        raw
    }
}

/// A header block with a valid checksum.
fn header(name: &str, typeflag: u8, size: u64, gnu: bool) -> [u8; 512] {
    let mut h = if gnu {
        tar::Header::new_gnu()
    } else {
        tar::Header::new_ustar()
    };
    h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    h.set_size(size);
    h.set_mode(0o644);
    h.set_entry_type(tar::EntryType::new(typeflag));
    h.set_cksum();
    *h.as_bytes()
}

fn padded(body: &[u8]) -> Vec<u8> {
    let mut v = body.to_vec();
    v.resize(body.len().div_ceil(512) * 512, 0);
    v
}

fn disasm(tar: &[u8]) -> Result<(Vec<Entry>, BufferFileGetPutter), Error> {
    let mut packer = VecPacker::default();
    let mut bodies = BufferFileGetPutter::new();
    let mut engine = DisasmEngine::new(
        &mut packer,
        &mut bodies,
        NoVisitor,
        DisasmOptions::default(),
    );
    tarsplit::asm::disassemble_to(tar, std::io::sink(), &mut engine)?;
    drop(engine);
    Ok((packer.entries, bodies))
}

fn reassemble(entries: Vec<Entry>, bodies: &mut BufferFileGetPutter) -> Result<Vec<u8>, Error> {
    let mut out = Vec::new();
    assemble(entries.into_iter(), bodies, &mut out)?;
    Ok(out)
}

#[test]
fn chained_gnu_long_names_are_capped() {
    // Go caps each body at 1 MiB but buffers the whole chain in one segment.
    let mut tar = Vec::new();
    for _ in 0..12 {
        let body = vec![b'a'; 900 << 10];
        tar.extend_from_slice(&header("././@LongLink", b'L', body.len() as u64, true));
        tar.extend_from_slice(&padded(&body));
    }
    tar.extend_from_slice(&header("f", b'0', 0, true));
    // The codec's chain cap (8 extension headers) stops it first.
    let err = disasm(&tar).unwrap_err();
    assert!(
        matches!(&err, Error::Limit { what, .. } if what.contains("chained extension headers")),
        "{err}"
    );
    // With a looser chain cap, the raw header group cap still bounds the segment.
    let mut opts = DisasmOptions::default();
    opts.limits.max_extension_headers = 100;
    let mut engine = DisasmEngine::new(VecPacker::default(), DiscardFilePutter, NoVisitor, opts);
    let err = tarsplit::asm::disassemble_to(&tar[..], std::io::sink(), &mut engine).unwrap_err();
    assert!(
        matches!(err, Error::HeaderGroupTooLarge { offset: 0, .. }),
        "{err}"
    );
}

#[test]
fn one_oversized_extension_body_is_field_too_long() {
    let body = vec![b'a'; (1 << 20) + 1];
    let mut tar = header("././@LongLink", b'L', body.len() as u64, true).to_vec();
    tar.extend_from_slice(&padded(&body));
    let err = disasm(&tar).unwrap_err();
    assert!(
        err.to_string()
            .contains("archive/tar: header field too long"),
        "{err}"
    );
}

#[test]
fn old_gnu_sparse_extension_chain_is_capped() {
    // CVE-2026-32288: an endless chain of sparse extension blocks.
    let mut first = header("s", b'S', 0, true);
    first[482] = 1; // isextended
    // realsize 0
    first[483..495].copy_from_slice(b"00000000000\0");
    let mut h = tar::Header::from_byte_slice(&first).clone();
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    let mut ext = [0u8; 512];
    ext[504] = 1;
    for _ in 0..20_000 {
        tar.extend_from_slice(&ext);
    }
    let err = disasm(&tar).unwrap_err();
    assert!(matches!(err, Error::HeaderGroupTooLarge { .. }), "{err}");
}

#[test]
fn sparse_bombs_reassemble_exactly_without_expanding() {
    // Go would CRC (and its buffer putter store) 60 GB of logical zeros for each.
    for f in [
        "archive-tar/gnu-sparse-big.tar",
        "archive-tar/pax-sparse-big.tar",
        "generated/sparse-pax-1.0.tar",
    ] {
        let tar = fixture(f);
        let started = std::time::Instant::now();
        let (entries, mut bodies) = disasm(&tar).unwrap();
        let rebuilt = reassemble(entries.clone(), &mut bodies).unwrap();
        assert!(rebuilt == tar, "{f}");
        assert!(
            started.elapsed().as_secs() < 30,
            "{f} took {:?}",
            started.elapsed()
        );
        // Sparse files are recorded with size 0: their physical bytes live in segments.
        for e in entries.iter().filter(|e| e.kind == EntryKind::File) {
            assert!(e.size < 1 << 30, "{f}: {e:?}");
        }
    }
}

#[test]
fn partial_end_block_and_partial_header_are_errors() {
    let tar = fixture("generated/exact512.tar");
    // Inside the header, the body, the first and the second end block.
    for cut in [100usize, 511, 600, 1024 + 100, 1536 + 7] {
        let err = disasm(&tar[..cut]).unwrap_err();
        assert!(
            err.to_string().contains("unexpected EOF"),
            "cut {cut}: {err}"
        );
    }
}

#[test]
fn trailing_data_is_chunked_like_go_whatever_the_read_sizes() {
    // The golden was made from a regular file (1 MiB reads); a pipe gives Go 64 KiB
    // pieces. We always fill 1 MiB chunks, so odd feed sizes give the golden exactly.
    let tar = fixture("generated/bigtrail.tar.gz");
    let mut golden = Vec::new();
    flate2::read::MultiGzDecoder::new(
        &std::fs::read(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(
            "../../../shared/fixtures/tar-split/golden/generated/bigtrail.tar.gz.v0.12.1.jsonl.gz",
        ))
        .unwrap()[..],
    )
    .read_to_end(&mut golden)
    .unwrap();
    let mut json = Vec::new();
    let mut engine = DisasmEngine::new(
        JsonPacker::new(&mut json),
        DiscardFilePutter,
        NoVisitor,
        DisasmOptions::default(),
    );
    for chunk in tar.chunks(4093) {
        engine.feed(chunk).unwrap();
    }
    engine.finish().unwrap();
    drop(engine);
    assert!(json == golden);
}

#[derive(Default)]
struct Collect {
    headers: Vec<Header>,
    bodies: Vec<Vec<u8>>,
    ended: usize,
}

impl EntryVisitor for Collect {
    fn header(&mut self, h: &Header, _offset: u64) -> tarsplit::Result<()> {
        self.headers.push(h.clone());
        self.bodies.push(Vec::new());
        Ok(())
    }
    fn body(&mut self, data: &[u8]) -> tarsplit::Result<()> {
        self.bodies.last_mut().unwrap().extend_from_slice(data);
        Ok(())
    }
    fn end_body(&mut self) -> tarsplit::Result<()> {
        self.ended += 1;
        Ok(())
    }
}

#[test]
fn visitor_sees_every_header_and_body_in_the_same_pass() {
    let tar = fixture("generated/sample-pax.tar");
    let mut visitor = Collect::default();
    let mut json = Vec::new();
    let mut pass = Vec::new();
    Disassembler::with_visitor(
        &tar[..],
        JsonPacker::new(&mut json),
        DiscardFilePutter,
        &mut visitor,
        DisasmOptions::default(),
    )
    .read_to_end(&mut pass)
    .unwrap();
    assert_eq!(pass, tar);
    let names: Vec<String> = visitor
        .headers
        .iter()
        .map(|h| String::from_utf8_lossy(&h.name).into_owned())
        .collect();
    assert_eq!(names.len(), 8, "{names:?}");
    assert_eq!(visitor.ended, 8);
    let hello = visitor
        .headers
        .iter()
        .position(|h| h.name == b"dir/hardlink")
        .unwrap();
    assert_eq!(visitor.bodies[hello], b"hello world\n");
    let link = visitor
        .headers
        .iter()
        .find(|h| h.name == b"dir/hello.txt")
        .unwrap();
    assert_eq!(
        (link.kind, link.link_name.as_slice()),
        (TarKind::HardLink, &b"dir/hardlink"[..])
    );
    let latin1 = visitor
        .headers
        .iter()
        .find(|h| h.name == b"dir/caf\xe9.txt")
        .unwrap();
    assert_eq!(latin1.pax.get(b"path"), Some(&b"dir/caf\xe9.txt"[..]));

    // Sparse files: the visitor gets the map and the physical body.
    let mut visitor = Collect::default();
    let tar = fixture("generated/sparse-gnu-old.tar");
    Disassembler::with_visitor(
        &tar[..],
        VecPacker::default(),
        DiscardFilePutter,
        &mut visitor,
        DisasmOptions::default(),
    )
    .read_to_end(&mut Vec::new())
    .unwrap();
    let sparse = visitor.headers.iter().find(|h| h.is_sparse()).unwrap();
    assert_eq!(sparse.size, 1 << 20);
    assert!(!sparse.sparse.as_ref().unwrap().is_empty());
}

#[test]
fn read_adaptor_errors_carry_the_typed_error() {
    let tar = fixture("generated/dup.tar");
    let mut d = Disassembler::new(&tar[..], VecPacker::default(), DiscardFilePutter);
    let err = d.read_to_end(&mut Vec::new()).unwrap_err();
    let err = Error::from_io(err, "disasm");
    assert!(
        matches!(&err, Error::DuplicatePath { name } if name.0 == b"a.txt"),
        "{err}"
    );
}

#[test]
fn reassembly_checks_crc_size_and_names_the_file() {
    let tar = fixture("generated/sample-gnu.tar");
    let (entries, bodies) = disasm(&tar).unwrap();

    let mut wrong_crc = entries.clone();
    let i = wrong_crc
        .iter()
        .position(|e| e.name == b"dir/hardlink")
        .unwrap();
    wrong_crc[i].payload = Some(crc64(b"something else").to_vec());
    let mut b = BufferFileGetPutter::new();
    b.insert(
        "dir/hardlink",
        bodies.body(b"dir/hardlink").unwrap().to_vec(),
    );
    for e in &entries {
        if let Some(body) = bodies.body(&e.name) {
            b.insert(e.name.clone(), body.to_vec());
        }
    }
    let err = reassemble(wrong_crc, &mut b).unwrap_err();
    assert_eq!(
        err.to_string(),
        "file integrity checksum failed for \"dir/hardlink\""
    );

    let mut short = BufferFileGetPutter::new();
    for e in &entries {
        if let Some(body) = bodies.body(&e.name) {
            short.insert(e.name.clone(), body[..body.len() - 1].to_vec());
        }
    }
    let err = reassemble(entries.clone(), &mut short).unwrap_err();
    assert!(matches!(err, Error::SizeMismatch { .. }), "{err}");
    assert!(err.to_string().contains("dir/"), "{err}");

    let err = reassemble(entries.clone(), &mut BufferFileGetPutter::new()).unwrap_err();
    assert!(err.to_string().starts_with("getting file "), "{err}");
    let cause = std::error::Error::source(&err).expect("the getter's error is the source");
    assert!(cause.to_string().contains("no such file"), "{cause}");

    let mut odd = entries;
    odd.insert(
        1,
        Entry {
            kind: EntryKind::Other(3),
            name: Vec::new(),
            size: 0,
            payload: None,
            position: 1,
        },
    );
    let err = reassemble(odd, &mut b).unwrap_err();
    assert!(
        matches!(err, Error::UnknownEntryType { kind: 3, .. }),
        "{err}"
    );
}

#[test]
fn json_unpacker_streams_through_the_assembler_read_adaptor() {
    let tar = fixture("generated/sample-pax.tar");
    let mut json = Vec::new();
    let mut bodies = BufferFileGetPutter::new();
    Disassembler::new(&tar[..], JsonPacker::new(&mut json), &mut bodies)
        .read_to_end(&mut Vec::new())
        .unwrap();
    let mut out = Vec::new();
    let mut asm = tarsplit::asm::Assembler::new(JsonUnpacker::new(&json[..]), &mut bodies);
    let mut buf = [0u8; 333];
    loop {
        let n = asm.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    assert_eq!(out, tar);
    assert_eq!(asm.bytes_written(), tar.len() as u64);
}

/// Expands every sparse file of an archive with the codec's [`BodyMapper`].
#[derive(Default)]
struct Expand {
    mapper: Option<BodyMapper>,
    current: Vec<u8>,
    files: Vec<(Vec<u8>, Vec<u8>)>,
    name: Vec<u8>,
}

impl EntryVisitor for Expand {
    fn header(&mut self, h: &Header, _offset: u64) -> tarsplit::Result<()> {
        self.mapper = BodyMapper::new(h, &Default::default());
        self.current.clear();
        self.name = h.name.clone();
        Ok(())
    }
    fn body(&mut self, data: &[u8]) -> tarsplit::Result<()> {
        let current = &mut self.current;
        match &mut self.mapper {
            Some(m) => m
                .feed(data, |at, piece| {
                    let end = at as usize + piece.len();
                    if current.len() < end {
                        current.resize(end, 0);
                    }
                    current[at as usize..end].copy_from_slice(piece);
                    Ok::<(), std::convert::Infallible>(())
                })
                .map_err(|e| match e {
                    BodyError::Tar(e) => panic!("{e}"),
                    BodyError::Sink(never) => match never {},
                }),
            None => Ok(()),
        }
    }
    fn end_body(&mut self) -> tarsplit::Result<()> {
        if let Some(m) = self.mapper.take() {
            let size = m.finish().unwrap() as usize;
            self.current.resize(size, 0);
            self.files
                .push((self.name.clone(), std::mem::take(&mut self.current)));
        }
        Ok(())
    }
}

#[test]
fn sparse_mapper_expands_to_what_go_checksums() {
    // Go's goldens record the CRC of the expanded content: ours must match it.
    let cases: &[(&str, &[(&str, &str)])] = &[
        (
            "generated/sparse-gnu-old.tar",
            &[("sparse", "wc5b7o40kNs=")],
        ),
        (
            "generated/sparse-pax-0.1.tar",
            &[("sparse", "wc5b7o40kNs=")],
        ),
        (
            "generated/sparse-pax-1.0.tar",
            &[("sparse", "wc5b7o40kNs=")],
        ),
        (
            "archive-tar/sparse-formats.tar",
            &[
                ("sparse-gnu", "jES0gpy8hz8="),
                ("sparse-posix-0.0", "jES0gpy8hz8="),
                ("sparse-posix-0.1", "jES0gpy8hz8="),
                ("sparse-posix-1.0", "jES0gpy8hz8="),
            ],
        ),
    ];
    use base64::Engine as _;
    for (file, want) in cases {
        let tar = fixture(file);
        let mut v = Expand::default();
        Disassembler::with_visitor(
            &tar[..],
            VecPacker::default(),
            DiscardFilePutter,
            &mut v,
            DisasmOptions::default(),
        )
        .read_to_end(&mut Vec::new())
        .unwrap();
        assert_eq!(v.files.len(), want.len(), "{file}");
        for ((name, body), (want_name, want_crc)) in v.files.iter().zip(want.iter()) {
            assert_eq!(name, want_name.as_bytes(), "{file}");
            let crc = base64::engine::general_purpose::STANDARD.encode(crc64(body));
            assert_eq!(&crc, want_crc, "{file}: {want_name}");
        }
    }
}

#[test]
fn iterate_headers_walks_our_metadata_and_gos() {
    // The headers seen while walking metadata equal those seen while disassembling.
    let names = |v: &Collect| {
        v.headers
            .iter()
            .map(|h| (h.name.clone(), h.size))
            .collect::<Vec<_>>()
    };
    let goldens =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/tar-split/golden");
    for f in [
        "generated/sample-pax.tar",
        "generated/sample-gnu.tar",
        "archive-tar/pax-global-records.tar",
        "archive-tar/gnu-multi-hdrs.tar",
        "generated/hardlink-size.tar",
        "generated/sparse-gnu-old.tar",
        "generated/sparse-pax-0.1.tar",
        "archive-tar/sparse-formats.tar",
        "generated/concat.tar",
    ] {
        let tar = fixture(f);
        let mut seen = Collect::default();
        let mut json = Vec::new();
        Disassembler::with_visitor(
            &tar[..],
            JsonPacker::new(&mut json),
            DiscardFilePutter,
            &mut seen,
            DisasmOptions::default(),
        )
        .read_to_end(&mut Vec::new())
        .unwrap();
        let mut walked = Collect::default();
        tarsplit::asm::iterate_headers(JsonUnpacker::new(&json[..]), &mut walked)
            .unwrap_or_else(|e| panic!("{f}: {e}"));
        assert_eq!(names(&walked), names(&seen), "{f}: our metadata");

        // Go's own metadata (sparse files expanded, PAX 1.0 maps lost) walks too.
        let golden = std::fs::read(goldens.join(format!("{f}.v0.12.1.jsonl"))).unwrap();
        let mut walked = Collect::default();
        tarsplit::asm::iterate_headers(JsonUnpacker::new(&golden[..]), &mut walked)
            .unwrap_or_else(|e| panic!("{f}: Go metadata: {e}"));
        assert_eq!(names(&walked), names(&seen), "{f}: Go's metadata");
    }
}

#[test]
fn iterate_headers_rejects_inconsistent_metadata() {
    let lone_file = vec![Entry::file("x", 5, Some([0; 8]))];
    assert!(tarsplit::asm::iterate_headers(lone_file.into_iter(), NoVisitor).is_err());
    // A header announcing 12 bytes, then straight the next segment: the file entry is missing.
    let tar = fixture("generated/sample-gnu.tar");
    let (entries, _) = disasm(&tar).unwrap();
    let pos = entries
        .iter()
        .position(|e| e.name == b"dir/hardlink")
        .unwrap();
    let mut missing = entries.clone();
    missing.remove(pos);
    let err = tarsplit::asm::iterate_headers(missing.into_iter(), NoVisitor).unwrap_err();
    assert!(err.to_string().contains("lacks its file entry"), "{err}");
    let garbage = vec![Entry::segment(vec![7; 512])];
    let err = tarsplit::asm::iterate_headers(garbage.into_iter(), NoVisitor).unwrap_err();
    assert!(err.to_string().contains("invalid tar header"), "{err}");
}
