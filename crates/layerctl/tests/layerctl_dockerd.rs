//! The real client decides: images `layerctl load` writes run under Debian's Docker 20.10
//! daemon, images dockerd commits are seen by layerctl, `layerctl rmi` removes them for
//! dockerd, and `layerctl save` goes through `docker load`. On both drivers.
//!
//! Each daemon is private (own data-root, exec-root, socket; no iptables, no bridge; its own
//! containerd namespace), never reaches a registry (`--pull never`, `--network none`) and is
//! stopped by pid by a guard, also when an assertion fails. Skipped with a message where
//! dockerd, busybox-static or root is missing, except under `CI=true`.

mod layerctl_util;

use std::path::Path;

use layerctl_util::dockerd::{self, Dockerd};
use layerctl_util::*;

fn layerctl(root: &Path, driver: &str, args: &[&str]) -> String {
    let mut c = ctl(root, driver);
    c.args(args);
    ok(run(c))
}

#[test]
fn images_loaded_by_layerctl_run_under_dockerd_and_back() {
    if let Some(why) = dockerd::unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    for driver in drivers() {
        one_driver(driver);
    }
}

fn one_driver(driver: &str) {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let state = dir.path().join("d");
    let (archive, config, layers) = busybox_image("lsbox:v1");
    let input = dir.path().join("lsbox.tar");
    std::fs::write(&input, &archive).unwrap();
    let id = sha256(&config);

    // 1. layerctl loads it offline.
    let out = layerctl(&root, driver, &["load", input.to_str().unwrap()]);
    assert_eq!(out, "Loaded image: lsbox:v1\n", "{driver}");

    // 2. dockerd lists it with our ID and runs it: the marker shows, the whiteout holds.
    let d = Dockerd::start(&state, &root, driver);
    let listed = d.ok(&[
        "images",
        "--no-trunc",
        "--format",
        "{{.Repository}}:{{.Tag}} {{.ID}}",
    ]);
    assert_eq!(listed.trim(), format!("lsbox:v1 {id}"), "{driver}");
    let ran = d.ok(&[
        "run",
        "--rm",
        "--pull",
        "never",
        "--network",
        "none",
        "lsbox:v1",
    ]);
    assert_eq!(ran, format!("{BUSYBOX_MARKER}\nabsent\n"), "{driver}");

    // 3. dockerd commits a container; its image and layer are layerctl's to see.
    d.ok(&[
        "run",
        "--name",
        "c1",
        "--pull",
        "never",
        "--network",
        "none",
        "lsbox:v1",
        "/bin/sh",
        "-c",
        "echo committed > /etc/new",
    ]);
    d.ok(&["commit", "c1", "lsbox:committed"]);
    d.ok(&["rm", "c1"]);
    let committed_id = d.ok(&["image", "inspect", "-f", "{{.ID}}", "lsbox:committed"]);
    let committed_id = committed_id.trim().to_owned();
    let docker_layers = d.ok(&[
        "image",
        "inspect",
        "-f",
        "{{json .RootFS.Layers}}",
        "lsbox:committed",
    ]);
    let docker_layers: Vec<String> = serde_json::from_str(docker_layers.trim()).unwrap();
    assert_eq!(docker_layers.len(), 3);
    d.stop();

    let images = json(run({
        let mut c = ctl(&root, driver);
        c.args(["--json", "images"]);
        c
    }));
    let committed = images
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["repo_tags"] == serde_json::json!(["lsbox:committed"]))
        .unwrap_or_else(|| panic!("{driver}: layerctl does not list lsbox:committed: {images}"));
    assert_eq!(committed["id"], committed_id);
    assert_eq!(
        committed["parent"], id,
        "{driver}: docker commit records the parent image"
    );
    let top = committed["top_layer"].as_str().unwrap();
    assert_eq!(top, chain_ids(&docker_layers)[2]);
    let exported = run({
        let mut c = ctl(&root, driver);
        c.args(["export", top]);
        c
    });
    assert!(exported.status.success());
    assert_eq!(
        sha256(&exported.stdout),
        docker_layers[2],
        "{driver}: export vs Docker's DiffID"
    );
    // The image layers are refused to rm; the committed image holds them.
    let mut c = ctl(&root, driver);
    c.args(["rm", top]);
    let e = fails(run(c));
    assert!(e.contains("lsbox:committed"), "{e}");

    // 4. layerctl saves lsbox:v1, then removes both images: dockerd lists neither.
    let saved = dir.path().join("saved.tar");
    layerctl(
        &root,
        driver,
        &["save", "lsbox:v1", "-o", saved.to_str().unwrap()],
    );
    let out = layerctl(&root, driver, &["rmi", "lsbox:committed"]);
    assert!(out.starts_with("Untagged: lsbox:committed\n"), "{out}");
    let out = layerctl(&root, driver, &["rmi", "lsbox:v1"]);
    assert!(out.contains(&format!("Deleted: {id}")), "{out}");
    assert_eq!(
        layerctl(&root, driver, &["ls"]).lines().count(),
        1,
        "{driver}: layers left"
    );

    // 5. dockerd: nothing listed; docker load takes layerctl's save, and it runs.
    let d = Dockerd::start(&state, &root, driver);
    let listed = d.ok(&["images", "-q"]);
    assert_eq!(listed.trim(), "", "{driver}: dockerd still lists images");
    let loaded = d.ok(&["load", "-i", saved.to_str().unwrap()]);
    assert!(loaded.contains("Loaded image: lsbox:v1"), "{loaded}");
    let listed = d.ok(&[
        "images",
        "--no-trunc",
        "--format",
        "{{.Repository}}:{{.Tag}} {{.ID}}",
    ]);
    assert_eq!(listed.trim(), format!("lsbox:v1 {id}"), "{driver}");
    let ran = d.ok(&[
        "run",
        "--rm",
        "--pull",
        "never",
        "--network",
        "none",
        "lsbox:v1",
    ]);
    assert_eq!(ran, format!("{BUSYBOX_MARKER}\nabsent\n"), "{driver}");
    // Docker's own save of it has our layer tars, byte for byte.
    let docker_saved = d.cmd(&["save", "lsbox:v1"]).output().unwrap();
    assert!(docker_saved.status.success());
    d.stop();
    let mut ar = tar::Archive::new(&docker_saved.stdout[..]);
    let mut tars = Vec::new();
    for e in ar.entries().unwrap() {
        let mut e = e.unwrap();
        if e.path().unwrap().ends_with("layer.tar") && e.header().entry_type().is_file() {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            tars.push(sha256(&data));
        }
    }
    tars.sort();
    let mut want: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    want.sort();
    assert_eq!(tars, want, "{driver}: docker save's layer tars");
}
