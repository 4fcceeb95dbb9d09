//! `layerctl` against real Docker output: the overlay2 data-root fixture made by Docker 20.10,
//! and the `docker save` of the peer chain image (chain IDs must equal Docker's).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::digest::{chain_ids, sha256};
use testkit::image::*;
use testkit::layerctl::*;

const L1: &str = "sha256:0c0c732fecfde8fe022171a4178c157432c24ca0bf5fa99e42c51e6ffcce3bba";
const L2: &str = "sha256:5543758fe7a4c752a0e73eb3082271bcddb3d99a8a4f90e46c46635d2a888c34";
const L3: &str = "sha256:e8926eb50b2368bbff0760f545fec1c0ff58fa5484644ce6c1309f2ed6e474b4";
/// The `docker commit` layer of the fixture, on l3.
const COMMITTED: &str = "sha256:2592871b4d224c41c4a6e7d9062857cae0dc936e517a14d53fafbb04a3ef0e4f";

fn fixture_dir() -> PathBuf {
    testkit::gate::fixtures_dir().join("docker-root")
}

/// Backticked cells of the README's table rows that start with `prefix`.
fn readme_rows(prefix: &str) -> Vec<Vec<String>> {
    let readme = std::fs::read_to_string(fixture_dir().join("README.md")).unwrap();
    readme
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| {
            l.split('|')
                .map(|c| c.trim().trim_matches('`').to_owned())
                .filter(|c| !c.is_empty())
                .collect()
        })
        .collect()
}

fn in_root(root: &Path, args: &[&str]) -> Command {
    let mut c = bin();
    c.env_remove("LAYERCTL_ROOT")
        .arg("--root")
        .arg(root)
        .args(args);
    c
}

#[test]
fn docker_data_root_fixture() {
    // The fixture holds whiteout devices and trusted.* xattrs; its layers are overlay2's.
    testkit::require!(testkit::gate::overlay());
    if !drivers().contains(&"overlay2") {
        return; // drivers() recorded why overlay2 does not start
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("r");
    std::fs::create_dir(&root).unwrap();
    let st = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpzf"])
        .arg(fixture_dir().join("docker-root.tar.gz"))
        .arg("-C")
        .arg(&root)
        .status()
        .unwrap();
    assert!(st.success());

    // Layers: exactly the README's rows (chain, diff, cache-id, parent prefix, own size).
    let rows = readme_rows("| `sha256:");
    assert_eq!(rows.len(), 4);
    let ls = json(run(in_root(&root, &["--json", "ls"])));
    let ls = ls.as_array().unwrap();
    assert_eq!(ls.len(), rows.len());
    for row in &rows {
        let l = ls
            .iter()
            .find(|l| l["chain_id"] == row[0].as_str())
            .unwrap_or_else(|| panic!("{} listed", row[0]));
        assert_eq!(l["diff_id"], row[1].as_str());
        assert_eq!(l["cache_id"], row[2].as_str());
        if row[3] == "(base)" {
            assert!(l["parent"].is_null());
        } else {
            let want = row[3].trim_end_matches('…');
            assert!(l["parent"].as_str().unwrap().starts_with(want), "{row:?}");
        }
        assert_eq!(l["diff_size"].as_u64().unwrap().to_string(), row[4]);
        // export reassembles the exact tar Docker registered.
        let out = run(in_root(&root, &["export", &row[0]]));
        assert!(out.status.success());
        assert_eq!(sha256(&out.stdout), row[1], "export of {}", row[0]);
    }
    let info = json(run(in_root(&root, &["--json", "info"])));
    assert_eq!(info["driver"], "overlay2");

    // RW layers: the two containers.
    let containers = readme_rows("| `");
    let containers: Vec<&Vec<String>> = containers
        .iter()
        .filter(|r| !r[0].starts_with("sha256:"))
        .collect();
    assert_eq!(containers.len(), 2);
    let rw = json(run(in_root(&root, &["--json", "rw", "ls"])));
    let rw = rw.as_array().unwrap();
    assert_eq!(rw.len(), 2);
    for row in containers {
        let m = rw.iter().find(|m| m["name"] == row[0].as_str()).unwrap();
        assert_eq!(m["mount_id"], row[1].as_str());
        assert_eq!(m["init_id"], row[2].as_str());
        assert_eq!(m["parent"], row[3].as_str());
    }

    // `rw changes` of the container that ran equals `docker diff` of it.
    let ran = "8c2350f3cc55172ab267d2a61b0eec349e8dade4905c568bb7643a229e386d34";
    let ours = ok(run(in_root(&root, &["rw", "changes", ran])));
    let mut ours: Vec<&str> = ours.lines().collect();
    ours.sort();
    let docker = std::fs::read_to_string(fixture_dir().join("changes.txt")).unwrap();
    let mut theirs: Vec<&str> = docker
        .split("## docker diff ran")
        .nth(1)
        .unwrap()
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    theirs.sort();
    assert_eq!(ours, theirs);
    let created = "dd8304d550fdf4c435359c0fcbb859897a4892a577bfea61caf38517673f680b";
    assert_eq!(ok(run(in_root(&root, &["rw", "changes", created]))), "");

    // The Docker root checks clean, and mounting a container works on it.
    let out = ok(run(in_root(&root, &["check"])));
    assert!(out.lines().any(|l| l == "ok"), "{out}");
    let path = ok(run(in_root(&root, &["rw", "mount", ran])));
    let path = Path::new(path.trim());
    assert_eq!(
        std::fs::read_to_string(path.join("usr/share/data/new")).unwrap(),
        "new\n"
    );
    assert!(path.join(".dockerenv").exists());
    ok(run(in_root(&root, &["rw", "unmount", ran])));
    // commit, load and gc work on Docker's root too. Loading Docker's own save of the
    // committed image finds every layer already there.
    let committed = ok(run(in_root(&root, &["commit", ran])));
    let ins = json(run(in_root(&root, &["inspect", committed.trim()])));
    assert_eq!(ins["parent"], L3);
    let out = run(in_root(&root, &["export", committed.trim()]));
    assert_eq!(sha256(&out.stdout), ins["diff_id"].as_str().unwrap());
    let saved = fixture_dir().join("saved-committed.tar.gz");
    // Docker's images are read from its imagedb: both listed, and their layers held.
    let images = json(run(in_root(&root, &["--json", "images"])));
    let mut tags: Vec<(String, String)> = images
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["repo_tags"][0].as_str().unwrap().to_owned(),
                i["top_layer"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    tags.sort();
    assert_eq!(
        tags,
        [
            ("peerchain:committed".to_owned(), COMMITTED.to_owned()),
            ("peerchain:v1".to_owned(), L3.to_owned())
        ]
    );
    let e = fails(run(in_root(&root, &["rm", L1])));
    assert!(e.contains("peerchain:"), "{e}");
    let top = ok(run(in_root(&root, &["load", saved.to_str().unwrap()])));
    assert_eq!(top, "Loaded image: peerchain:committed\n");
    assert_eq!(ok(run(in_root(&root, &["gc"]))).trim(), "nothing to remove");
    // Removing a container keeps the image layers.
    ok(run(in_root(&root, &["rw", "rm", created])));
    assert_eq!(
        json(run(in_root(&root, &["--json", "ls"])))
            .as_array()
            .unwrap()
            .len(),
        5
    );
    let out = ok(run(in_root(&root, &["check"])));
    assert!(out.lines().any(|l| l == "ok"), "{out}");
}

/// The layer tars of a `docker save` archive, in manifest order.
fn layers_of_save(archive: &[u8]) -> Vec<Vec<u8>> {
    let mut files = std::collections::HashMap::new();
    let mut a = tar::Archive::new(archive);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        let name = e.path().unwrap().to_string_lossy().into_owned();
        let mut data = Vec::new();
        e.read_to_end(&mut data).unwrap();
        files.insert(name, data);
    }
    let manifest: serde_json::Value = serde_json::from_slice(&files["manifest.json"]).unwrap();
    manifest[0]["Layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| files[l.as_str().unwrap()].clone())
        .collect()
}

#[test]
fn peer_chain_gets_dockers_chain_ids() {
    // `docker save peerchain:committed` from the fixture run: l1..l3 plus the commit layer.
    let saved = fixture_dir().join("saved-committed.tar.gz");
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(&saved).unwrap())
        .read_to_end(&mut plain)
        .unwrap();
    let layers = layers_of_save(&plain);
    assert_eq!(layers.len(), 4);
    let diffs: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let want = [L1, L2, L3, COMMITTED];
    assert_eq!(chain_ids(&diffs), want);

    let dir = tempfile::tempdir().unwrap();
    let oci = dir.path().join("oci");
    write_oci_dir(&oci, &layers[..3], &diffs[..3]);
    let mut inputs = vec![(saved.clone(), COMMITTED), (oci, L3)];
    // make-inputs.sh's hand-made archives, when they were generated on this machine.
    let peer = Path::new("/tmp/peer-inputs/images");
    if peer.join("peerchain-docker.tar").exists() {
        inputs.push((peer.join("peerchain-docker.tar"), L3));
        inputs.push((peer.join("peerchain-oci"), L3));
    } else {
        eprintln!("note: /tmp/peer-inputs not generated; using the fixture's archive only");
    }
    for driver in drivers() {
        for (input, top) in &inputs {
            let root = tempfile::tempdir().unwrap();
            let out = json(run({
                let mut c = ctl(root.path(), driver);
                c.args(["--json", "load"]).arg(input);
                c
            }));
            assert_eq!(
                out[0]["top_layer"].as_str().unwrap(),
                *top,
                "{driver} {}",
                input.display()
            );
            let ls = json(run({
                let mut c = ctl(root.path(), driver);
                c.args(["--json", "ls"]);
                c
            }));
            for (i, chain) in want.iter().enumerate() {
                let found = ls
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|l| l["chain_id"] == *chain);
                if *top == COMMITTED || i < 3 {
                    let l = found.unwrap_or_else(|| panic!("{driver}: {chain} missing"));
                    assert_eq!(l["diff_id"], diffs[i]);
                    let exported = run({
                        let mut c = ctl(root.path(), driver);
                        c.args(["export", chain]);
                        c
                    });
                    assert!(exported.stdout == layers[i], "{driver}: export of {chain}");
                }
            }
            assert_check_clean(root.path(), driver);
        }
    }
}
