//! Applies an uncompressed layer tar under a directory, like `tar -xf`, and prints the
//! applied size and the time taken. Used to compare with GNU tar:
//!
//! ```text
//! cargo run --release -p layer-archive --example apply_layer -- layer.tar /tmp/dest [overlay]
//! ```

use std::time::Instant;

use layer_archive::{ApplyOptions, WhiteoutFormat, apply_layer};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() < 3 {
        eprintln!("usage: apply_layer <layer.tar> <dest-dir> [overlay]");
        std::process::exit(2);
    }
    let mut opts = ApplyOptions::for_current_user().with_layer(&args[1]);
    if args.get(3).map(String::as_str) == Some("overlay") {
        opts.whiteouts = WhiteoutFormat::Overlay;
    }
    let mut input = std::io::BufReader::with_capacity(1 << 20, std::fs::File::open(&args[1])?);
    let start = Instant::now();
    let size = apply_layer(std::path::Path::new(&args[2]), &mut input, &opts)?;
    println!(
        "applied {size} bytes in {:.3}s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
