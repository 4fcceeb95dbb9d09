//! No sequence of `gc`, `check`, `check --repair` and `rm` on a damaged Docker root removes a
//! layer or container that moby would load, and the garbage is gone.
//!
//! The root is the real Docker 20.10 overlay2 data-root of `../shared/fixtures/docker-root`
//! (four layers, two containers, two images), damaged the ways real roots get damaged: an odd
//! but valid `size` (`00`, `+63`: Go's `strconv.ParseInt` reads them), a layer without its
//! `tar-split.json.gz` (it has children and both containers), a stale write-set, a driver
//! directory nothing names (with its `l/` link), an interrupted removal (`-removing` record
//! and its directory), and a BuildKit-style driver directory. moby 20.10's own layer store
//! (`../shared/peers/moby-open -open`) judges what loads before and after; the images are read
//! with `image-meta`, the crate layerctl itself uses. The commands run in three orders (gc
//! first, removals first, repairs and removals interleaved), each on a fresh damaged copy.
//!
//! Needs root, overlayfs and Debian's Go packages (to build moby-open); skipped with a message
//! otherwise, except under `CI=true`.

use testkit::layerctl::{fails_verbose, ok, on_root, run};
use testkit::moby;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

const L1: &str = "sha256:0c0c732fecfde8fe022171a4178c157432c24ca0bf5fa99e42c51e6ffcce3bba";
const L2: &str = "sha256:5543758fe7a4c752a0e73eb3082271bcddb3d99a8a4f90e46c46635d2a888c34";
const L3: &str = "sha256:e8926eb50b2368bbff0760f545fec1c0ff58fa5484644ce6c1309f2ed6e474b4";
const COMMITTED: &str = "sha256:2592871b4d224c41c4a6e7d9062857cae0dc936e517a14d53fafbb04a3ef0e4f";
const LAYERS: [&str; 4] = [L1, L2, L3, COMMITTED];
const CONTAINERS: [&str; 2] = [
    "8c2350f3cc55172ab267d2a61b0eec349e8dade4905c568bb7643a229e386d34",
    "dd8304d550fdf4c435359c0fcbb859897a4892a577bfea61caf38517673f680b",
];
const BUILDKIT_DIR: &str = "ekrl4ku7h7dxa8pxgy1hmpjm5";

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/docker-root")
}

fn hex(id: &str) -> &str {
    id.trim_start_matches("sha256:")
}

fn layerdb(root: &Path) -> PathBuf {
    root.join("image/overlay2/layerdb")
}

fn cache_id(root: &Path, chain: &str) -> String {
    std::fs::read_to_string(
        layerdb(root)
            .join("sha256")
            .join(hex(chain))
            .join("cache-id"),
    )
    .unwrap()
}

/// Extracts the fixture into `root` (as root, keeping whiteout devices and xattrs).
fn extract(root: &Path) {
    std::fs::create_dir_all(root).unwrap();
    let st = Command::new("tar")
        .args(["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpzf"])
        .arg(fixture().join("docker-root.tar.gz"))
        .arg("-C")
        .arg(root)
        .status()
        .unwrap();
    assert!(st.success(), "extract the fixture");
}

/// An overlay2 driver directory as Docker's driver makes one: `diff/` with a file, `link`,
/// `work/`, and its `l/` short link.
fn driver_dir(root: &Path, id: &str, link: &str) {
    let dir = root.join("overlay2").join(id);
    std::fs::create_dir_all(dir.join("diff")).unwrap();
    std::fs::create_dir_all(dir.join("work")).unwrap();
    std::fs::write(dir.join("diff/file"), id).unwrap();
    std::fs::write(dir.join("link"), link).unwrap();
    std::os::unix::fs::symlink(format!("../{id}/diff"), root.join("overlay2/l").join(link))
        .unwrap();
}

/// What `damage` planted that must be gone afterwards.
struct Garbage {
    paths: Vec<PathBuf>,
}

/// Damages `root` as the module docs say; returns the garbage it planted.
fn damage(root: &Path) -> Garbage {
    let db = layerdb(root);
    std::fs::write(db.join("sha256").join(hex(L2)).join("size"), "00").unwrap();
    std::fs::write(db.join("sha256").join(hex(COMMITTED)).join("size"), "+63").unwrap();
    std::fs::remove_file(db.join("sha256").join(hex(L3)).join("tar-split.json.gz")).unwrap();
    let ws = db.join("tmp/write-set-3141592653");
    std::fs::create_dir_all(&ws).unwrap();
    std::fs::write(ws.join("diff"), L1).unwrap();
    let unnamed = "1".repeat(64);
    driver_dir(root, &unnamed, "UNNAMEDUNNAMEDUNNAMEDUNNAM");
    let removed_cache = "2".repeat(64);
    driver_dir(root, &removed_cache, "REMOVINGREMOVINGREMOVINGRE");
    let removing = db.join(format!(
        "sha256/{}-{}-removing",
        "3".repeat(64),
        "4".repeat(64)
    ));
    std::fs::create_dir_all(&removing).unwrap();
    std::fs::write(removing.join("cache-id"), &removed_cache).unwrap();
    std::fs::write(removing.join("diff"), format!("sha256:{}", "3".repeat(64))).unwrap();
    std::fs::write(removing.join("size"), "0").unwrap();
    driver_dir(root, BUILDKIT_DIR, "BUILDKITBUILDKITBUILDKITBU");
    Garbage {
        paths: vec![
            ws,
            root.join("overlay2").join(&unnamed),
            root.join("overlay2/l/UNNAMEDUNNAMEDUNNAMEDUNNAM"),
            removing,
            root.join("overlay2").join(&removed_cache),
            root.join("overlay2/l/REMOVINGREMOVINGREMOVINGRE"),
        ],
    }
}

/// What moby's store makes of a root: loaded layers, layers it verified, RW layers it loads,
/// and the error per layer that did not verify.
fn moby_view(root: &Path) -> (BTreeSet<String>, BTreeSet<String>, usize, Vec<String>) {
    let v = moby::open(root, "overlay2");
    // moby-open lists every directory of `sha256/`; moby itself takes `-removing` ones for
    // interrupted removals, never for layers.
    let not_loaded: Vec<&str> = v["not_loaded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .filter(|n| !n.ends_with("-removing"))
        .collect();
    assert!(not_loaded.is_empty(), "{v:#}");
    assert_eq!(v["mounts_ok"], v["mounts_on_disk"], "{v:#}");
    let layers = v["layers"].as_array().unwrap();
    let loaded = layers
        .iter()
        .map(|l| l["chain_id"].as_str().unwrap().to_owned())
        .collect();
    let verified = layers
        .iter()
        .filter(|l| l["ok"] == true)
        .map(|l| l["chain_id"].as_str().unwrap().to_owned())
        .collect();
    let errors = layers
        .iter()
        .filter_map(|l| l["error"].as_str().map(str::to_owned))
        .collect();
    (
        loaded,
        verified,
        v["mounts_ok"].as_u64().unwrap() as usize,
        errors,
    )
}

#[test]
fn destructive_commands_on_a_damaged_docker_root_keep_what_moby_loads() {
    if moby::unavailable().is_some() {
        return; // recorded as a skip by moby::unavailable
    }
    testkit::require!(testkit::gate::overlay());
    let dir = tempfile::tempdir().unwrap();

    // moby's verdict on the damaged root, before we touch it (on a copy: moby's own open
    // writes nothing we care about, but the copy keeps the two runs independent).
    let before = dir.path().join("before");
    extract(&before);
    damage(&before);
    let (loaded, verified, mounts, errors) = moby_view(&before);
    let all: BTreeSet<String> = LAYERS.iter().map(|s| s.to_string()).collect();
    assert_eq!(loaded, all, "moby loads every layer of the damaged root");
    assert_eq!(mounts, 2, "and both containers");
    assert_eq!(
        verified,
        all.iter().filter(|l| *l != L3).cloned().collect(),
        "L3 has no tar-split: moby cannot export it ({errors:?})"
    );

    // The commands in the order a user repairing a root would run them, with what each says.
    let root = dir.path().join("root");
    let keep = prepare(&root);
    // Every destructive command, and again.
    let gc = ok(run(on_root(&root, &["gc"])));
    for g in ["tmp/write-set-3141592653", &"1".repeat(64), &"3".repeat(64)] {
        assert!(gc.contains(g), "gc collects {g}: {gc}");
    }
    let (check, _) = fails_verbose(run(on_root(&root, &["check"])));
    assert!(
        check.contains(&format!("layer {L3}: export defect")),
        "a missing tar-split is an export defect, not breakage: {check}"
    );
    assert!(!check.contains("broken"), "{check}");
    fails_verbose(run(on_root(&root, &["check", "--repair"])));
    let (repair, _) = fails_verbose(run(on_root(
        &root,
        &["check", "--repair", "--remove-broken"],
    )));
    assert!(!repair.contains("repaired: removed layer"), "{repair}");
    for l in LAYERS {
        let (_, err) = fails_verbose(run(on_root(&root, &["rm", l])));
        assert!(
            err.contains("in use") || err.contains("referenced"),
            "rm {l}: {err}"
        );
    }
    let gc = ok(run(on_root(&root, &["gc"])));
    assert!(gc.contains("nothing to remove"), "{gc}");

    end_state(&root, &keep, (&loaded, &verified, mounts));

    // The same commands in other orders: removal first, repair before gc, and each twice.
    let orders: [&[&[&str]]; 2] = [
        &[
            &["rm", L1],
            &["rm", L2],
            &["rm", L3],
            &["rm", COMMITTED],
            &["check", "--repair", "--remove-broken"],
            &["check", "--repair"],
            &["check"],
            &["gc"],
        ],
        &[
            &["check", "--repair", "--remove-broken"],
            &["gc"],
            &["rm", COMMITTED],
            &["check", "--repair", "--remove-broken"],
            &["rm", L3],
            &["gc"],
            &["rm", L1],
        ],
    ];
    for (i, order) in orders.iter().enumerate() {
        let root = dir.path().join(format!("order{i}"));
        let keep = prepare(&root);
        for args in order.iter() {
            // Each may succeed or fail (the damage is reported, every layer is in use); none
            // may remove what Docker had.
            let out = run(on_root(&root, args));
            assert!(
                matches!(out.status.code(), Some(0 | 1)),
                "order {i}: {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let gc = ok(run(on_root(&root, &["gc"])));
        assert!(gc.contains("nothing to remove"), "order {i}: {gc}");
        end_state(&root, &keep, (&loaded, &verified, mounts));
    }
}

/// Extracts the fixture into `root` and damages it; returns what must survive (every layer's
/// record and driver directory, each container's record and directories, the BuildKit
/// directory) and the garbage.
fn prepare(root: &Path) -> (Vec<PathBuf>, Garbage) {
    extract(root);
    let garbage = damage(root);
    let keep: Vec<PathBuf> = LAYERS
        .iter()
        .flat_map(|l| {
            [
                layerdb(root).join("sha256").join(hex(l)),
                root.join("overlay2").join(cache_id(root, l)),
            ]
        })
        .chain(CONTAINERS.iter().flat_map(|c| {
            let mount = layerdb(root).join("mounts").join(c);
            let id = std::fs::read_to_string(mount.join("mount-id")).unwrap();
            [
                mount,
                root.join("overlay2").join(&id),
                root.join("overlay2").join(format!("{id}-init")),
            ]
        }))
        .chain([root.join("overlay2").join(BUILDKIT_DIR)])
        .collect();

    (keep, garbage)
}

/// Everything Docker had is on disk, the garbage is gone, the images hold their layers, and
/// moby loads exactly what it loaded before.
fn end_state(
    root: &Path,
    (keep, garbage): &(Vec<PathBuf>, Garbage),
    (loaded, verified, mounts): (&BTreeSet<String>, &BTreeSet<String>, usize),
) {
    let all: BTreeSet<String> = LAYERS.iter().map(|s| s.to_string()).collect();
    for p in keep {
        assert!(p.exists(), "{} was removed", p.display());
    }
    for p in &garbage.paths {
        assert!(
            std::fs::symlink_metadata(p).is_err(),
            "{} is garbage and still there",
            p.display()
        );
    }
    let ls = ok(run(on_root(root, &["--json", "ls"])));
    let listed: BTreeSet<String> = serde_json::from_str::<serde_json::Value>(&ls)
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["chain_id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(listed, all);

    // The images still hold their layers (read as layerctl reads them).
    let images = image_meta::ImageStore::new(root, "overlay2")
        .images()
        .unwrap();
    assert!(images.broken.is_empty());
    let tops: BTreeSet<String> = images
        .images
        .iter()
        .filter_map(|i| i.chain_id())
        .map(|c| c.to_string())
        .collect();
    assert_eq!(
        tops,
        [L3, COMMITTED].iter().map(|s| s.to_string()).collect(),
        "peerchain:v1 and peerchain:committed"
    );

    // And moby loads exactly what it loaded before.
    let after = moby_view(root);
    assert_eq!((&after.0, &after.1, after.2), (loaded, verified, mounts));
}
