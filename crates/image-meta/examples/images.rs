//! Lists a data-root's images like `docker images`: `cargo run -p layerstore-image-meta --example images
//! -- /var/lib/docker overlay2` (with the daemon stopped, or read-only while it runs).

use image_meta::ImageStore;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let root = args.next().unwrap_or_else(|| "/var/lib/docker".into());
    let driver = args.next().unwrap_or_else(|| "overlay2".into());
    let store = ImageStore::new(&root, &driver);
    let repos = store.repositories()?;
    let listing = store.images()?;
    for image in &listing.images {
        let tags: Vec<String> = repos
            .references(&image.id)
            .iter()
            .map(|r| r.familiar_string())
            .collect();
        let top = image.chain_id().map(|c| c.to_string()).unwrap_or_default();
        println!(
            "{}  {:<30}  layers={}  top={top}",
            image.id.short(),
            if tags.is_empty() {
                "<none>".to_owned()
            } else {
                tags.join(",")
            },
            image.config.diff_ids.len()
        );
    }
    for (id, err) in &listing.broken {
        eprintln!("{}: {err}", id.short());
    }
    Ok(())
}
