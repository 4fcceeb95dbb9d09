//! `layerctl`: the command-line tool over the layer store.
fn main() {}
