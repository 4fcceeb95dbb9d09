//! Generated archives (ustar/GNU/v7 headers, PAX records and xattrs, GNU long names and
//! links, hard links with and without a size, symlinks, trailing garbage, missing end
//! marker) must round-trip byte for byte, through the `Read` adaptors in both directions.

use testkit::tarsplit as support;

use std::io::Read;

use proptest::prelude::*;
use support::{archive_strategy, build_archive};
use tarsplit::asm::{Assembler, Disassembler};
use tarsplit::storage::{BufferFileGetPutter, JsonPacker, JsonUnpacker};

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn generated_archives_round_trip(spec in archive_strategy(), read_size in 1usize..70_000) {
        let tar = build_archive(&spec);
        let mut json = Vec::new();
        let mut bodies = BufferFileGetPutter::new();
        let mut passthrough = Vec::new();
        {
            let mut d = Disassembler::new(&tar[..], JsonPacker::new(&mut json), &mut bodies);
            // Odd read sizes exercise every state boundary of the engine.
            let mut buf = vec![0u8; read_size];
            loop {
                let n = d.read(&mut buf).unwrap();
                if n == 0 { break; }
                passthrough.extend_from_slice(&buf[..n]);
            }
            prop_assert!(d.is_finished());
        }
        prop_assert_eq!(&passthrough, &tar);
        let mut rebuilt = Vec::new();
        Assembler::new(JsonUnpacker::new(&json[..]), &mut bodies).read_to_end(&mut rebuilt).unwrap();
        prop_assert_eq!(rebuilt, tar);
    }
}
