//! The library half of `layerctl`, for the fuzzer and for programs that want to read image
//! archives the way `layerctl load` does: see [`image`]. The command-line tool itself is
//! `src/main.rs`.

#![warn(missing_docs, unreachable_pub)]

pub mod image;
