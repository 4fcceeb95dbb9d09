//! libFuzzer entry for `tar_differential`; the body (and the properties it checks) is in
//! `tests/fuzz_targets/mod.rs`, shared with the stable corpus replay in `tests/fuzz_corpus.rs`.
#![no_main]

#[path = "../../tests/fuzz_targets/mod.rs"]
mod targets;

libfuzzer_sys::fuzz_target!(|data: &[u8]| targets::tar_differential(data));
