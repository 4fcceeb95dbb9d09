//! `cargo xtask <job>`: all project automation, in Rust.
fn main() {}
