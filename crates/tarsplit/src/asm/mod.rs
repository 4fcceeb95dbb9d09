//! Disassembly of tar streams into metadata + bodies, and reassembly back to the bytes.

mod assemble;
mod disassemble;
mod iterate;
#[cfg(target_os = "linux")]
mod parallel;

pub use assemble::{Assembler, assemble};
pub use disassemble::{
    DisasmEngine, DisasmOptions, Disassembler, EntryVisitor, NoVisitor, SparseMode, TRAILING_CHUNK,
    disassemble, disassemble_parallel, disassemble_to,
};
pub use iterate::iterate_headers;
#[cfg(target_os = "linux")]
pub use parallel::assemble_parallel;
