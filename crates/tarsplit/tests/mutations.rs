//! Corrupted archives and metadata never panic: every outcome is either a clean error or a
//! disassembly that reassembles to exactly the bytes it was given.

use std::io::Read;
use std::path::PathBuf;

use proptest::prelude::*;
use tarsplit::asm::{Disassembler, assemble};
use tarsplit::storage::{BufferFileGetPutter, JsonPacker, JsonUnpacker, Unpacker};

fn fixture(rel: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../../shared/fixtures/tar-split")
        .join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

const SEEDS: &[&str] = &[
    "generated/sample-pax.tar",
    "generated/sample-gnu.tar",
    "generated/sparse-gnu-old.tar",
    "generated/sparse-pax-1.0.tar",
    "archive-tar/sparse-formats.tar",
    "archive-tar/pax-global-records.tar",
    "archive-tar/gnu-multi-hdrs.tar",
    "archive-tar/xattrs.tar",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn corrupted_archives_error_or_round_trip(
        seed in 0..SEEDS.len(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..6),
        cut in proptest::option::of(any::<prop::sample::Index>()),
    ) {
        let mut tar = fixture(SEEDS[seed]);
        for (at, byte) in flips {
            let i = at.index(tar.len());
            tar[i] = byte;
        }
        if let Some(cut) = cut {
            let n = cut.index(tar.len() + 1);
            tar.truncate(n);
        }
        let mut json = Vec::new();
        let mut bodies = BufferFileGetPutter::new();
        let mut pass = Vec::new();
        let ok = Disassembler::new(&tar[..], JsonPacker::new(&mut json), &mut bodies).read_to_end(&mut pass).is_ok();
        if ok {
            prop_assert_eq!(&pass, &tar);
            let mut rebuilt = Vec::new();
            assemble(JsonUnpacker::new(&json[..]), &mut bodies, &mut rebuilt).unwrap();
            prop_assert_eq!(rebuilt, tar);
        }
    }

    #[test]
    fn corrupted_metadata_never_panics(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let tar = fixture("generated/sample-gnu.tar");
        let mut json = Vec::new();
        let mut bodies = BufferFileGetPutter::new();
        Disassembler::new(&tar[..], JsonPacker::new(&mut json), &mut bodies).read_to_end(&mut Vec::new()).unwrap();
        for (at, byte) in flips {
            let i = at.index(json.len());
            json[i] = byte;
        }
        let mut u = JsonUnpacker::new(&json[..]);
        while let Ok(Some(_)) = u.next_entry() {}
        let _ = assemble(JsonUnpacker::new(&json[..]), &mut bodies, &mut Vec::new());
    }
}
