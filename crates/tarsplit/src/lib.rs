//! Byte-exact tar disassembly and reassembly, interchangeable with Go's
//! [`vbatts/tar-split`](https://github.com/vbatts/tar-split).
//!
//! A container runtime that extracts a layer tar throws the tar itself away, yet must later
//! produce the *same* bytes again (its sha256 is the layer's DiffID). tar-split solves this
//! by splitting the stream, while it is extracted, into:
//!
//! * **segments**: every raw byte that is not file content (headers, PAX and GNU extension
//!   records, padding, end-of-archive blocks, trailing data), kept verbatim;
//! * **file entries**: for each file body only its name, size and CRC-64.
//!
//! The metadata is a stream of JSON lines (usually gzip-compressed). Reassembly walks the
//! entries, copies segments and reads each body back from the extracted tree, checking its
//! size and checksum.
//!
//! ```
//! use std::io::Read;
//! use tarsplit::asm::{Disassembler, assemble};
//! use tarsplit::storage::{BufferFileGetPutter, JsonPacker, JsonUnpacker};
//!
//! // A small archive.
//! let mut builder = tar::Builder::new(Vec::new());
//! let mut header = tar::Header::new_gnu();
//! header.set_size(5);
//! header.set_cksum();
//! builder.append_data(&mut header, "hello.txt", &b"hello"[..]).unwrap();
//! let archive = builder.into_inner().unwrap();
//!
//! // Disassemble while reading the archive through: the reader yields the very same bytes.
//! let mut metadata = Vec::new();
//! let mut bodies = BufferFileGetPutter::new();
//! let mut passthrough = Vec::new();
//! Disassembler::new(&archive[..], JsonPacker::new(&mut metadata), &mut bodies)
//!     .read_to_end(&mut passthrough)
//!     .unwrap();
//! assert_eq!(passthrough, archive);
//! assert!(String::from_utf8_lossy(&metadata).contains(r#""name":"hello.txt","size":5"#));
//!
//! // Reassemble from the metadata and the stored bodies.
//! let mut rebuilt = Vec::new();
//! assemble(JsonUnpacker::new(&metadata[..]), &mut bodies, &mut rebuilt).unwrap();
//! assert_eq!(rebuilt, archive);
//! ```
//!
//! For the common case there is one call each way: [`split_while_reading`] records the
//! gzip-compressed metadata while a caller reads (extracts) the archive, and
//! [`reassemble_from_dir`] rebuilds the archive from that metadata and the extracted
//! directory (both with the default `gzip` feature).
//!
//! Modules:
//!
//! * [`storage`]: [`storage::Entry`], the [`storage::Packer`]/[`storage::Unpacker`] traits
//!   and their Go-compatible JSON implementations; where bodies go
//!   ([`storage::FilePutter`]) and come from ([`storage::FileGetter`], including the
//!   root-confined [`storage::PathFileGetter`]).
//! * [`asm`]: the [`asm::Disassembler`] `Read` adaptor (and the push-style
//!   [`asm::DisasmEngine`] underneath, driven by [`asm::disassemble_to`] or, with the
//!   archive read on a second thread, [`asm::disassemble_parallel`]), the [`asm::Assembler`] `Read` adaptor,
//!   [`asm::assemble`] (and, from a tree on Linux, [`asm::assemble_parallel`], which decodes
//!   on a second thread that also takes a share of the file reads), and [`asm::iterate_headers`] (walk the headers in
//!   metadata).
//!
//! Tar headers are decoded by the workspace's one codec, [`layer_archive::codec`] (without
//! its filesystem part), exactly as Go's `archive/tar` reads them; a visitor that extracts
//! sparse files maps their bodies with [`layer_archive::codec::sparse::BodyMapper`].
//!
//! Where Go tar-split is wrong, this crate is stricter or exact, and says so in the error:
//! header groups (chains of PAX/GNU extension headers) are capped instead of buffered
//! without bound; an archive truncated anywhere, padding included, is an error; GNU sparse
//! files are recorded so that they reassemble byte for byte; hard-link headers that carry a
//! size reassemble from an extracted tree; [`storage::PathFileGetter`] (Linux) cannot leave its root.
//!
//! Go's duplicate-path rule (packer and unpacker refuse a second file entry with the same
//! cleaned name) is kept in fixed memory per name: a 128-bit SipHash of each cleaned name
//! under a random per-process key, about 20 bytes per entry instead of the name itself.
//! Equal names always collide, so no duplicate Go refuses is ever accepted; two different
//! names would have to collide by chance (probability below n²/2¹²⁹ for n names, under
//! 10⁻²¹ for 10⁹) to be refused where Go accepts, and the secret key keeps an archive from
//! aiming for that.

#![warn(missing_docs, unreachable_pub)]

pub mod asm;
mod clean;
pub mod crc;
mod error;
#[cfg(feature = "gzip")]
mod oneshot;
mod seen;
pub mod storage;

pub use clean::clean_path;
pub use error::{EntryName, Error, Result};
#[cfg(all(feature = "gzip", target_os = "linux"))]
pub use oneshot::reassemble_from_dir;
#[cfg(feature = "gzip")]
pub use oneshot::{SplittingReader, split_while_reading};
