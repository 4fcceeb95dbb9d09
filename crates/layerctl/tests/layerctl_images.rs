//! Images: `load` records them in Docker's imagedb and `repositories.json`, `images`, `tag`,
//! `rmi` and `save` work on them, `rm` refuses their layers, and bad input changes nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use testkit::digest::{chain_ids, sha256};
use testkit::image::*;
use testkit::layerctl::*;
use testkit::tar::archive;

fn cmd(root: &Path, driver: &str, args: &[&str]) -> std::process::Command {
    let mut c = ctl(root, driver);
    c.args(args);
    c
}

/// An image config over `diff_ids`, made distinct by `cmd`.
fn config(diff_ids: &[String], cmd: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {"Cmd": [cmd]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

/// One image of a hand-made `docker save` archive.
struct Img {
    config: Vec<u8>,
    tags: Vec<&'static str>,
    layers: Vec<Vec<u8>>,
}

/// A legacy `docker save` archive of `images` (layer members named by DiffID).
fn save_archive(images: &[Img]) -> Vec<u8> {
    let mut members: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut manifest = Vec::new();
    for img in images {
        let cfg = format!("{}.json", &sha256(&img.config)[7..]);
        members.insert(cfg.clone(), img.config.clone());
        let mut names = Vec::new();
        for l in &img.layers {
            let name = format!("{}/layer.tar", &sha256(l)[7..]);
            members.insert(name.clone(), l.clone());
            names.push(name);
        }
        manifest.push(serde_json::json!({"Config": cfg, "RepoTags": img.tags, "Layers": names}));
    }
    members.insert(
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    );
    archive(&members.into_iter().collect::<Vec<_>>())
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// Every path under the root and the bytes of every regular file in it (image metadata,
/// layer metadata and layer contents alike): "the store as before" means byte for byte.
fn state(
    root: &Path,
) -> (
    std::collections::BTreeSet<PathBuf>,
    BTreeMap<PathBuf, Vec<u8>>,
) {
    let paths = snapshot(root);
    let files = paths
        .iter()
        .filter(|p| std::fs::symlink_metadata(root.join(p)).is_ok_and(|m| m.file_type().is_file()))
        .map(|p| (p.clone(), std::fs::read(root.join(p)).unwrap()))
        .collect();
    (paths, files)
}

fn images_json(root: &Path, driver: &str) -> Vec<serde_json::Value> {
    json(run(cmd(root, driver, &["--json", "images"])))
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn load_records_images_tags_and_moves_a_retag() {
    let layers = three_layers();
    let diffs: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let chains = chain_ids(&diffs);
    let c1 = config(&diffs, "one");
    let c2 = config(&diffs[..2], "two");
    for driver in drivers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let a = write(
            dir.path(),
            "a.tar",
            &save_archive(&[Img {
                config: c1.clone(),
                tags: vec!["app:v1", "docker.io/library/app:stable"],
                layers: layers.clone(),
            }]),
        );
        let out = ok(run(cmd(&root, driver, &["load", a.to_str().unwrap()])));
        assert_eq!(out, "Loaded image: app:v1\nLoaded image: app:stable\n");
        let id1 = sha256(&c1);
        // Docker's files, Docker's bytes.
        let image_dir = root.join("image").join(driver);
        assert_eq!(
            std::fs::read(image_dir.join("imagedb/content/sha256").join(&id1[7..])).unwrap(),
            c1
        );
        assert_eq!(
            std::fs::read_to_string(image_dir.join("repositories.json")).unwrap(),
            format!(r#"{{"Repositories":{{"app":{{"app:stable":"{id1}","app:v1":"{id1}"}}}}}}"#)
        );
        let list = images_json(&root, driver);
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["id"], id1);
        assert_eq!(list[0]["top_layer"], chains[2]);
        assert_eq!(
            list[0]["repo_tags"],
            serde_json::json!(["app:stable", "app:v1"])
        );
        assert_eq!(list[0]["created"], "2024-01-01T00:00:00Z");
        let table = ok(run(cmd(&root, driver, &["images"])));
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("app") && l.contains(&id1[7..19])),
            "{table}"
        );

        // Re-tagging moves the tag; the first image keeps its other tag. An image without
        // tags is reported by ID.
        let b = write(
            dir.path(),
            "b.tar",
            &save_archive(&[
                Img {
                    config: c2.clone(),
                    tags: vec!["app:v1"],
                    layers: layers[..2].to_vec(),
                },
                Img {
                    config: config(&diffs[..1], "three"),
                    tags: vec![],
                    layers: layers[..1].to_vec(),
                },
            ]),
        );
        let out = ok(run(cmd(&root, driver, &["load", b.to_str().unwrap()])));
        let id2 = sha256(&c2);
        let id3 = sha256(&config(&diffs[..1], "three"));
        assert_eq!(
            out,
            format!(
                "The image app:v1 already exists, renaming the old one with ID {id1} to empty string\nLoaded image: app:v1\nLoaded image ID: {id3}\n"
            )
        );
        let list = images_json(&root, driver);
        let tags_of = |id: &str| list.iter().find(|i| i["id"] == id).unwrap()["repo_tags"].clone();
        assert_eq!(tags_of(&id1), serde_json::json!(["app:stable"]));
        assert_eq!(tags_of(&id2), serde_json::json!(["app:v1"]));
        assert_eq!(tags_of(&id3), serde_json::json!([]));

        // rm refuses a layer any image holds, anywhere in its chain, and names the images.
        let e = fails(run(cmd(&root, driver, &["rm", &chains[0]])));
        assert!(
            e.contains("app:stable") && e.contains("app:v1") && e.contains(&id3[7..19]),
            "{e}"
        );

        // rmi of a tag with others left only untags; of the last tag deletes the image and
        // the layers no other image holds.
        let out = ok(run(cmd(&root, driver, &["rmi", "app:stable"])));
        assert_eq!(
            out,
            format!(
                "Untagged: app:stable\nDeleted: {id1}\nDeleted: {}\n",
                chains[2]
            )
        );
        let out = ok(run(cmd(&root, driver, &["rmi", &id3[7..20]])));
        assert_eq!(out, format!("Deleted: {id3}\n"));
        // tag by ID prefix, then rmi by full ID (two tags in one repository: no force needed).
        ok(run(cmd(&root, driver, &["tag", &id2[7..14], "app:latest"])));
        ok(run(cmd(&root, driver, &["tag", "app", "other/app:x"])));
        let e = fails(run(cmd(&root, driver, &["rmi", &id2])));
        assert!(e.contains("referenced in multiple repositories"), "{e}");
        ok(run(cmd(&root, driver, &["rmi", "other/app:x"])));
        let out = ok(run(cmd(&root, driver, &["rmi", &id2[7..]])));
        assert_eq!(
            out,
            format!(
                "Untagged: app:latest\nUntagged: app:v1\nDeleted: {id2}\nDeleted: {}\nDeleted: {}\n",
                chains[1], chains[0]
            )
        );
        assert!(images_json(&root, driver).is_empty());
        assert!(
            json(run(cmd(&root, driver, &["--json", "ls"])))
                .as_array()
                .unwrap()
                .is_empty()
        );
        assert_eq!(
            std::fs::read_to_string(image_dir.join("repositories.json")).unwrap(),
            r#"{"Repositories":{}}"#
        );
        assert_check_clean(&root, driver);

        // An image whose every tag moves to another stays, untagged (docker's dangling
        // image), listed and reported by ID; rmi by ID then removes it.
        ok(run(cmd(&root, driver, &["load", a.to_str().unwrap()])));
        let c = write(
            dir.path(),
            "c.tar",
            &save_archive(&[Img {
                config: c2.clone(),
                tags: vec!["app:v1", "app:stable"],
                layers: layers[..2].to_vec(),
            }]),
        );
        ok(run(cmd(&root, driver, &["load", c.to_str().unwrap()])));
        let list = images_json(&root, driver);
        let tags_of = |id: &str| list.iter().find(|i| i["id"] == id).unwrap()["repo_tags"].clone();
        assert_eq!(tags_of(&id1), serde_json::json!([]), "{driver}");
        assert_eq!(
            tags_of(&id2),
            serde_json::json!(["app:stable", "app:v1"]),
            "{driver}"
        );
        let table = ok(run(cmd(&root, driver, &["images"])));
        assert!(
            table
                .lines()
                .any(|l| l.starts_with("<none>") && l.contains(&id1[7..19])),
            "{table}"
        );
        let out = ok(run(cmd(&root, driver, &["rmi", &id1])));
        assert_eq!(out, format!("Deleted: {id1}\nDeleted: {}\n", chains[2]));
        assert_check_clean(&root, driver);

        // `tag` onto a tag another image holds moves it, as `docker tag` does; the image it
        // leaves keeps its other tags.
        ok(run(cmd(&root, driver, &["load", a.to_str().unwrap()])));
        ok(run(cmd(&root, driver, &["tag", &id2, "app:v1"])));
        let list = images_json(&root, driver);
        let tags_of = |id: &str| list.iter().find(|i| i["id"] == id).unwrap()["repo_tags"].clone();
        assert_eq!(tags_of(&id1), serde_json::json!(["app:stable"]), "{driver}");
        assert_eq!(tags_of(&id2), serde_json::json!(["app:v1"]), "{driver}");
        assert_check_clean(&root, driver);
    }
}

#[test]
fn rmi_refuses_an_image_under_an_rw_layer_unless_forced() {
    let layers = three_layers();
    let diffs: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let chains = chain_ids(&diffs);
    for driver in drivers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let a = write(
            dir.path(),
            "a.tar",
            &save_archive(&[Img {
                config: config(&diffs, "x"),
                tags: vec!["app:v1"],
                layers: layers.clone(),
            }]),
        );
        ok(run(cmd(&root, driver, &["load", a.to_str().unwrap()])));
        ok(run(cmd(
            &root,
            driver,
            &["rw", "create", "c1", "--parent", &chains[2]],
        )));
        let before = state(&root);
        let e = fails(run(cmd(&root, driver, &["rmi", "app:v1"])));
        assert!(e.contains("RW layer") && e.contains("c1"), "{e}");
        assert_eq!(state(&root), before);
        // Forced: the image goes, its layers stay under the RW layer.
        ok(run(cmd(&root, driver, &["rmi", "--force", "app:v1"])));
        assert!(images_json(&root, driver).is_empty());
        assert_eq!(
            json(run(cmd(&root, driver, &["--json", "ls"])))
                .as_array()
                .unwrap()
                .len(),
            3
        );
    }
}

#[test]
fn save_round_trips_with_layer_tars_equal_to_exports() {
    let layers = three_layers();
    let diffs: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let chains = chain_ids(&diffs);
    let c1 = config(&diffs, "one");
    let c2 = config(&diffs[..2], "two");
    for driver in drivers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let a = write(
            dir.path(),
            "a.tar",
            &save_archive(&[
                Img {
                    config: c1.clone(),
                    tags: vec!["app:v1", "app:v2"],
                    layers: layers.clone(),
                },
                Img {
                    config: c2.clone(),
                    tags: vec!["base:1"],
                    layers: layers[..2].to_vec(),
                },
            ]),
        );
        ok(run(cmd(&root, driver, &["load", a.to_str().unwrap()])));
        let out = dir.path().join("out.tar");
        // A repository name means all its tags; a second name for the same image adds nothing.
        ok(run(cmd(
            &root,
            driver,
            &[
                "save",
                "app",
                "base:1",
                &sha256(&c1),
                "-o",
                out.to_str().unwrap(),
            ],
        )));
        let bytes = std::fs::read(&out).unwrap();
        let mut ar = tar::Archive::new(&bytes[..]);
        let mut members: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        for e in ar.entries().unwrap() {
            let mut e = e.unwrap();
            let name = e.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            members.insert(name, data);
        }
        let manifest: serde_json::Value =
            serde_json::from_slice(&members["manifest.json"]).unwrap();
        assert_eq!(manifest.as_array().unwrap().len(), 2);
        assert_eq!(
            manifest[0]["RepoTags"],
            serde_json::json!(["app:v1", "app:v2"])
        );
        assert_eq!(manifest[1]["RepoTags"], serde_json::json!(["base:1"]));
        assert_eq!(members[&format!("{}.json", &sha256(&c1)[7..])], c1);
        for (i, chain) in chains.iter().enumerate() {
            let path = manifest[0]["Layers"][i].as_str().unwrap();
            let export = run(cmd(&root, driver, &["export", chain])).stdout;
            assert_eq!(members[path], export, "layer {i}");
            assert_eq!(export, layers[i]);
        }
        // To stdout: the same archive.
        let piped = run(cmd(
            &root,
            driver,
            &["save", "app", "base:1", &sha256(&c1), "-o", "-"],
        ));
        assert_eq!(piped.stdout, bytes);

        // Loaded elsewhere: the same IDs, tags and layers.
        let root2 = dir.path().join("root2");
        let out2 = ok(run(cmd(&root2, driver, &["load", out.to_str().unwrap()])));
        assert_eq!(
            out2,
            "Loaded image: app:v1\nLoaded image: app:v2\nLoaded image: base:1\n"
        );
        let strip = |v: Vec<serde_json::Value>| -> Vec<(String, String)> {
            v.iter()
                .map(|i| (i["id"].to_string(), i["repo_tags"].to_string()))
                .collect()
        };
        assert_eq!(
            strip(images_json(&root2, driver)),
            strip(images_json(&root, driver))
        );
        // Unknown names are refused before anything is written.
        let e = fails(run(cmd(
            &root,
            driver,
            &[
                "save",
                "app",
                "nope:1",
                "-o",
                dir.path().join("x.tar").to_str().unwrap(),
            ],
        )));
        assert!(e.contains("nope:1"), "{e}");
        assert!(!dir.path().join("x.tar").exists());
    }
}

#[test]
fn oci_load_records_blob_digests_for_pull_reuse() {
    let layers = three_layers();
    let diffs: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let blobs: Vec<Vec<u8>> = layers.iter().map(|l| gzip(l)).collect();
    for driver in drivers() {
        let dir = tempfile::tempdir().unwrap();
        let (mut members, _) = oci_members(&blobs, &diffs);
        // Name the image as containerd does.
        for (name, data) in members.iter_mut() {
            if name == "index.json" {
                let mut v: serde_json::Value = serde_json::from_slice(data).unwrap();
                v["manifests"][0]["annotations"] =
                    serde_json::json!({"io.containerd.image.name": "docker.io/library/oci:1"});
                *data = serde_json::to_vec(&v).unwrap();
            }
        }
        let p = write(dir.path(), "oci.tar", &archive(&members));
        let root = dir.path().join("root");
        let out = ok(run(cmd(&root, driver, &["load", p.to_str().unwrap()])));
        assert_eq!(out, "Loaded image: oci:1\n");
        let dist = root.join("image").join(driver).join("distribution");
        for (blob, diff) in blobs.iter().zip(&diffs) {
            let hex = &sha256(blob)[7..];
            assert_eq!(
                std::fs::read_to_string(dist.join("diffid-by-digest/sha256").join(hex)).unwrap(),
                *diff
            );
            assert_eq!(
                std::fs::read_to_string(dist.join("v2metadata-by-diffid/sha256").join(&diff[7..]))
                    .unwrap(),
                format!(
                    r#"[{{"Digest":"{}","SourceRepository":"docker.io/library/oci","HMAC":""}}]"#,
                    sha256(blob)
                )
            );
        }
    }
}

/// Bad input: exit 1, one `error:` line, and the store exactly as it was.
#[test]
fn bad_images_and_names_change_nothing() {
    let layers = three_layers();
    let diffs: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let good = config(&diffs, "good");
    for driver in drivers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let a = write(
            dir.path(),
            "a.tar",
            &save_archive(&[Img {
                config: config(&diffs[..1], "base"),
                tags: vec!["app:v1"],
                layers: layers[..1].to_vec(),
            }]),
        );
        ok(run(cmd(&root, driver, &["load", a.to_str().unwrap()])));
        let img = |config: Vec<u8>, tags: Vec<&'static str>, layers: Vec<Vec<u8>>| Img {
            config,
            tags,
            layers,
        };
        let other = |s: &str| config(&diffs, s);
        // A layer that is not the one the config promises (same count).
        let mut swapped = layers.clone();
        swapped.swap(1, 2);
        let mut cases: Vec<(&str, Vec<u8>, &str)> = vec![
            (
                "diff_ids disagree",
                save_archive(&[img(good.clone(), vec!["x:1"], swapped)]),
                "DiffID mismatch",
            ),
            (
                "layer count",
                save_archive(&[img(good.clone(), vec!["x:1"], layers[..2].to_vec())]),
                "diff_ids",
            ),
            (
                "invalid tag",
                save_archive(&[img(good.clone(), vec!["Bad:Tag"], layers.clone())]),
                "invalid tag",
            ),
            (
                "tag without tag",
                save_archive(&[img(good.clone(), vec!["x"], layers.clone())]),
                "invalid tag",
            ),
            (
                "digest as tag",
                save_archive(&[img(
                    good.clone(),
                    vec![
                        "x@sha256:0c0c732fecfde8fe022171a4178c157432c24ca0bf5fa99e42c51e6ffcce3bba",
                    ],
                    layers.clone(),
                )]),
                "invalid tag",
            ),
            (
                "duplicate tag",
                save_archive(&[img(good.clone(), vec!["x:1", "x:1"], layers.clone())]),
                "claimed twice",
            ),
            (
                "two images one tag",
                save_archive(&[
                    img(good.clone(), vec!["x:1"], layers.clone()),
                    img(
                        other("second"),
                        vec!["docker.io/library/x:1"],
                        layers.clone(),
                    ),
                ]),
                "claimed twice",
            ),
            (
                "windows image",
                save_archive(&[img(
                    String::from_utf8(good.clone())
                        .unwrap()
                        .replace("\"linux\"", "\"windows\"")
                        .into_bytes(),
                    vec!["x:1"],
                    layers.clone(),
                )]),
                "windows",
            ),
            (
                "no rootfs",
                save_archive(&[img(br#"{"os":"linux"}"#.to_vec(), vec!["x:1"], vec![])]),
                "RootFS",
            ),
            (
                "bad created",
                save_archive(&[img(
                    String::from_utf8(good.clone())
                        .unwrap()
                        .replace("2024-01-01T00:00:00Z", "yesterday")
                        .into_bytes(),
                    vec!["x:1"],
                    layers.clone(),
                )]),
                "created",
            ),
        ];
        // A config over Docker's 4 MiB cap (valid JSON, right digest, right diff_ids).
        let mut big: serde_json::Value = serde_json::from_slice(&good).unwrap();
        big["padding"] = serde_json::Value::String("x".repeat(4 << 20));
        cases.push((
            "config over 4 MiB",
            save_archive(&[img(
                serde_json::to_vec(&big).unwrap(),
                vec!["x:1"],
                layers.clone(),
            )]),
            "byte limit",
        ));
        // A config whose name says one digest and whose bytes hash to another.
        let mut tampered = save_archive(&[img(good.clone(), vec!["x:1"], layers.clone())]);
        let pos = tampered.windows(7).position(|w| w == b"\"good\"]").unwrap();
        tampered[pos + 1] = b'G';
        // The tar header checksum does not cover the data: the archive still reads.
        cases.push(("tampered config digest", tampered, "digest mismatch"));
        // A manifest naming a layer member that is not there.
        let mut members: Vec<(String, Vec<u8>)> =
            vec![(format!("{}.json", &sha256(&good)[7..]), good.clone())];
        members.push((
            "manifest.json".into(),
            serde_json::to_vec(&serde_json::json!([{"Config": format!("{}.json", &sha256(&good)[7..]), "RepoTags": ["x:1"], "Layers": ["a/layer.tar", "b/layer.tar", "c/layer.tar"]}])).unwrap(),
        ));
        cases.push(("missing member", archive(&members), "missing"));

        for (what, data, want) in cases {
            let p = write(dir.path(), "bad.tar", &data);
            let before = state(&root);
            let e = fails(run(cmd(&root, driver, &["load", p.to_str().unwrap()])));
            assert!(e.contains(want), "{what}: {e}");
            assert_eq!(state(&root), before, "{what}: store changed");
        }
        let before = state(&root);
        for args in [
            vec!["rmi", "nope:1"],
            vec!["rmi", "app:v1", "nope:1"],
            vec!["rmi", "0000000"],
            vec!["tag", "nope:1", "y:1"],
            vec!["tag", "app:v1", "Bad"],
            vec![
                "tag",
                "app:v1",
                "y@sha256:0c0c732fecfde8fe022171a4178c157432c24ca0bf5fa99e42c51e6ffcce3bba",
            ],
            vec!["tag", "app:v1", "sha256:abc"],
            vec!["images", "--no-such-flag"],
        ] {
            let out = run(cmd(&root, driver, &args));
            if args[0] == "images" {
                assert_eq!(out.status.code(), Some(2));
            } else {
                fails(out);
            }
            assert_eq!(state(&root), before, "{args:?}: store changed");
        }
        // An ID prefix two images share names neither: refused, nothing changes.
        let base_id = sha256(&config(&diffs[..1], "base"));
        let twin = (0..)
            .map(|n| config(&diffs[..1], &format!("twin{n}")))
            .find(|c| sha256(c)[7..8] == base_id[7..8])
            .unwrap();
        let t = write(
            dir.path(),
            "twin.tar",
            &save_archive(&[img(twin.clone(), vec![], layers[..1].to_vec())]),
        );
        ok(run(cmd(&root, driver, &["load", t.to_str().unwrap()])));
        let before = state(&root);
        let prefix = &base_id[7..8];
        for args in [
            vec!["rmi", prefix],
            vec!["tag", prefix, "y:1"],
            vec!["save", prefix, "-o", "-"],
        ] {
            let e = fails(run(cmd(&root, driver, &args)));
            assert!(e.contains("ambiguous"), "{args:?}: {e}");
            assert_eq!(state(&root), before, "{args:?}: store changed");
        }
        // The longer prefix that tells them apart names one.
        let n = (8..71)
            .find(|&n| sha256(&twin)[7..n] != base_id[7..n])
            .unwrap();
        let out = ok(run(cmd(&root, driver, &["rmi", &sha256(&twin)[7..n]])));
        assert_eq!(out, format!("Deleted: {}\n", sha256(&twin)), "{driver}");
    }
}

/// What a kill during an image-metadata write can leave (`.tmp-*` beside the target; the
/// target itself is old or new, never half) is reported by `check`, removed by `gc`, and
/// the images read as before. An image whose config no longer matches its ID is reported
/// and kept, even by `check --repair`.
#[test]
fn interrupted_image_writes_are_found_by_check_and_removed_by_gc() {
    let layers = three_layers();
    let diffs: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let c1 = config(&diffs, "one");
    for driver in drivers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let a = write(
            dir.path(),
            "a.tar",
            &save_archive(&[Img {
                config: c1.clone(),
                tags: vec!["app:v1"],
                layers: layers.clone(),
            }]),
        );
        ok(run(cmd(&root, driver, &["load", a.to_str().unwrap()])));
        let image_dir = root.join("image").join(driver);
        let tmp_repos = image_dir.join(".tmp-repositories.json1234");
        let tmp_config = image_dir.join("imagedb/content/sha256/.tmp-abcd5678");
        std::fs::write(&tmp_repos, b"{\"Repositories\":{").unwrap();
        std::fs::write(&tmp_config, b"{").unwrap();
        let listed = images_json(&root, driver);
        assert_eq!(listed.len(), 1);
        let mut c = cmd(&root, driver, &["check"]);
        c.arg("--quick");
        let out = run(c);
        assert_eq!(out.status.code(), Some(1));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(".tmp-repositories.json1234") && text.contains(".tmp-abcd5678"),
            "{text}"
        );
        let out = ok(run(cmd(&root, driver, &["gc"])));
        assert_eq!(
            out.lines()
                .filter(|l| l.contains("image metadata leftover"))
                .count(),
            2,
            "{out}"
        );
        assert!(!tmp_repos.exists() && !tmp_config.exists());
        assert_check_clean(&root, driver);
        assert_eq!(images_json(&root, driver), listed);

        // A config changed on disk: reported, never deleted.
        let content = image_dir
            .join("imagedb/content/sha256")
            .join(&sha256(&c1)[7..]);
        let mut bytes = c1.clone();
        bytes.push(b'\n');
        std::fs::write(&content, &bytes).unwrap();
        let out = run(cmd(&root, driver, &["check", "--repair"]));
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stdout).contains("does not read"));
        assert!(content.exists());
    }
}

/// Image ID → its sorted tags.
type Tagged = BTreeMap<String, Vec<String>>;

/// The images and their tags as `images --json` lists them.
fn tagged(root: &Path, driver: &str) -> Tagged {
    images_json(root, driver)
        .iter()
        .map(|i| {
            let mut tags: Vec<String> = i["repo_tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t.as_str().unwrap().to_owned())
                .collect();
            tags.sort();
            (i["id"].as_str().unwrap().to_owned(), tags)
        })
        .collect()
}

/// SIGKILL during `load`, `tag`, `rmi` (and a `load` that moves a tag): after every kill the
/// tags are the state before the command or the state after it, never a mix (a dangling
/// image may sit beside them); `check` reports nothing but leftovers, and after `gc`
/// (which resolves the killed command's journal record) the images and tags are exactly the
/// old or the new state; the command, run again, finishes the job. Kills land anywhere from start-up to the last rename (0..1.5× the
/// command's measured duration).
#[test]
fn sigkill_during_load_tag_rmi_leaves_old_or_new_images() {
    let layers = three_layers();
    let diffs: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let ca = config(&diffs, "a");
    let cb = config(&diffs[..2], "b");
    let (ida, idb) = (sha256(&ca), sha256(&cb));
    // LAYERCTL_CRASH_SEED replays a failure's kill delays.
    let mut seed = std::env::var("LAYERCTL_CRASH_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
        | 1;
    eprintln!("LAYERCTL_CRASH_SEED={seed}");
    let mut next = move |bound: u64| {
        // xorshift64*
        seed ^= seed >> 12;
        seed ^= seed << 25;
        seed ^= seed >> 27;
        seed.wrapping_mul(0x2545_F491_4F6C_DD1D) % bound.max(1)
    };
    for driver in drivers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let a = write(
            dir.path(),
            "a.tar",
            &save_archive(&[Img {
                config: ca.clone(),
                tags: vec!["app:v1", "app:stable"],
                layers: layers.clone(),
            }]),
        );
        let b = write(
            dir.path(),
            "b.tar",
            &save_archive(&[Img {
                config: cb.clone(),
                tags: vec!["app:v1"],
                layers: layers[..2].to_vec(),
            }]),
        );
        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
        let s = |v: &[(&str, &[&str])]| -> Tagged {
            v.iter()
                .map(|(id, tags)| (id.to_string(), tags.iter().map(|t| t.to_string()).collect()))
                .collect()
        };
        // One cycle: each step's command and the images after it.
        let steps: Vec<(Vec<&str>, Tagged)> = vec![
            (vec!["load", a], s(&[(&ida, &["app:stable", "app:v1"])])),
            (
                vec!["tag", "app:v1", "other:1"],
                s(&[(&ida, &["app:stable", "app:v1", "other:1"])]),
            ),
            (
                vec!["load", b],
                s(&[(&ida, &["app:stable", "other:1"]), (&idb, &["app:v1"])]),
            ),
            (
                vec!["rmi", "other:1"],
                s(&[(&ida, &["app:stable"]), (&idb, &["app:v1"])]),
            ),
            (vec!["rmi", "app:stable"], s(&[(&idb, &["app:v1"])])),
            (vec!["rmi", &idb[7..19]], s(&[])),
        ];
        let mut mean_us: Vec<f64> = vec![0.0; steps.len()];
        let (mut kills, mut old_seen, mut new_seen, mut dangling_seen) = (0, 0, 0, 0);
        let mut before = s(&[]);
        for round in 0..10 {
            for (i, (args, after)) in steps.iter().enumerate() {
                let what = format!("{driver} round {round} {args:?}");
                let mut child = cmd(&root, driver, args)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .unwrap();
                let started = std::time::Instant::now();
                // The first round measures each command; the others kill it somewhere in
                // 0..1.5× that time.
                let killed = round > 0 && {
                    std::thread::sleep(std::time::Duration::from_micros(next(
                        (mean_us[i] * 1.5) as u64 + 1,
                    )));
                    child.try_wait().unwrap().is_none()
                };
                if killed {
                    child.kill().unwrap();
                    kills += 1;
                }
                let status = child.wait().unwrap();
                if round == 0 {
                    mean_us[i] = started.elapsed().as_micros() as f64;
                }
                if !killed {
                    assert!(status.success(), "{what}: {status}");
                }
                // The tags are the old ones or the new ones, in one piece (one atomic
                // `repositories.json`). Images follow Docker's order: a loaded config is
                // written before the tags naming it and a removed one deleted after its last
                // tag, so a kill between may leave such an image untagged (Docker's dangling
                // image, as a killed `docker load` or `docker rmi` leaves it); never a tag
                // naming a missing image, never any other image.
                let now = tagged(&root, driver);
                let tags = |m: &Tagged| -> Tagged {
                    m.iter()
                        .filter(|(_, t)| !t.is_empty())
                        .map(|(i, t)| (i.clone(), t.clone()))
                        .collect()
                };
                let target = if tags(&now) == tags(&before) {
                    &before
                } else {
                    assert_eq!(
                        tags(&now),
                        tags(after),
                        "{what}: neither the old nor the new tags"
                    );
                    after
                };
                for (id, t) in &now {
                    assert!(
                        target.get(id) == Some(t)
                            || (t.is_empty()
                                && (before.contains_key(id) || after.contains_key(id))),
                        "{what}: image {id} {t:?}: now {now:?}, before {before:?}, after {after:?}"
                    );
                }
                for id in target.keys() {
                    assert!(now.contains_key(id), "{what}: image {id} lost: {now:?}");
                }
                if now == before {
                    old_seen += 1;
                } else if &now == after {
                    new_seen += 1;
                } else {
                    dangling_seen += 1;
                }
                // Exit 1 when it finds anything; its report is on stdout.
                let report: serde_json::Value =
                    serde_json::from_slice(&run(cmd(&root, driver, &["--json", "check"])).stdout)
                        .unwrap();
                for p in report["problems"].as_array().unwrap() {
                    assert!(
                        p.as_str().unwrap().starts_with("leftover:"),
                        "{what}: check after the kill: {p}"
                    );
                }
                ok(run(cmd(&root, driver, &["gc"])));
                assert_check_clean(&root, driver);
                // gc resolves the killed command's journal record: a dangling image is rolled
                // back (load) or deleted (rmi), so the images are exactly the old or the new.
                let settled = tagged(&root, driver);
                assert!(
                    settled == before || &settled == after,
                    "{what}: after gc, neither old nor new: {settled:?}, before {before:?}, after {after:?}"
                );
                if settled == before && &settled != after {
                    // The user runs it again; it does the whole job.
                    ok(run(cmd(&root, driver, args)));
                }
                assert_eq!(&tagged(&root, driver), after, "{what}: after the retry");
                before = after.clone();
            }
        }
        // Every image is gone at the end of a cycle, and so is every layer: none that a
        // killed load registered or a killed rmi had still to release survives gc.
        assert_eq!(layer_ids(&root, driver), Vec::<String>::new(), "{driver}");
        eprintln!(
            "{driver}: {kills} kills; {old_seen} left the old images, {new_seen} the new, \
             {dangling_seen} the old or new tags with a dangling image"
        );
        assert!(kills >= 10, "{driver}: only {kills} kills");
        assert_check_clean(&root, driver);
    }
}

/// An image's layer that breaks (its driver directory gone) is reported and kept: neither
/// `check --repair --remove-broken` nor `gc` removes it, and the image stays listed.
#[test]
fn repair_and_gc_keep_a_broken_layer_an_image_holds() {
    let layers = three_layers();
    let diffs: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let chains = chain_ids(&diffs);
    for driver in drivers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let a = write(
            dir.path(),
            "a.tar",
            &save_archive(&[Img {
                config: config(&diffs, "x"),
                tags: vec!["app:v1"],
                layers: layers.clone(),
            }]),
        );
        ok(run(cmd(&root, driver, &["load", a.to_str().unwrap()])));
        let listed = images_json(&root, driver);
        let layerdb = root.join("image").join(driver).join("layerdb/sha256");
        for chain in [&chains[0], &chains[2]] {
            let cache =
                std::fs::read_to_string(layerdb.join(&chain[7..]).join("cache-id")).unwrap();
            let home = match driver {
                "vfs" => root.join("vfs/dir").join(cache.trim()),
                _ => root.join("overlay2").join(cache.trim()),
            };
            std::fs::remove_dir_all(&home).unwrap();
        }
        let out = run(cmd(
            &root,
            driver,
            &["check", "--repair", "--remove-broken"],
        ));
        assert_eq!(out.status.code(), Some(1));
        let report = String::from_utf8_lossy(&out.stdout);
        for chain in [&chains[0], &chains[2]] {
            assert!(
                report.contains(&format!("kept: layer {chain} (broken)")),
                "{driver}: {report}"
            );
        }
        assert!(!report.contains("repaired: removed layer"), "{report}");
        ok(run(cmd(&root, driver, &["gc"])));
        assert_eq!(
            json(run(cmd(&root, driver, &["--json", "ls"])))
                .as_array()
                .unwrap()
                .len(),
            3,
            "{driver}: layers kept"
        );
        assert_eq!(images_json(&root, driver), listed, "{driver}");
    }
}

/// Leaves the journal record of `op` under the root, as a kill during it would.
fn leave_record(root: &Path, driver: &str, op: image_meta::Operation) -> PathBuf {
    let in_flight = image_meta::ImageStore::new(root, driver)
        .journal()
        .begin(&op)
        .unwrap();
    // Dropped unfinished: the record stays, as after a kill.
    let path = in_flight.path().to_path_buf();
    drop(in_flight);
    path
}

fn image_id(hex_id: &str) -> image_meta::ImageId {
    hex_id.parse().unwrap()
}

fn chain(id: &str) -> layer_digest::ChainId {
    id.parse().unwrap()
}

fn layer_ids(root: &Path, driver: &str) -> Vec<String> {
    let mut ids: Vec<String> = json(run(cmd(root, driver, &["--json", "ls"])))
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["chain_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    ids
}

/// Journal records left under the root.
fn records(root: &Path, driver: &str) -> Vec<String> {
    std::fs::read_dir(root.join("image").join(driver))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(image_meta::journal::RECORD_PREFIX))
        .collect()
}

const HINT: &str = "interrupted work found: run `layerctl gc`";

/// The state a `load` killed after writing its config, before its tags, leaves: a dangling
/// image, its new layers, and its journal record. Every command then points at `gc`,
/// `check` reports it as a leftover, and `gc` rolls it back: the image goes, the layers it
/// registered go unless something holds them (an RW layer here), and a layer that existed
/// before the load stays although nothing holds it.
#[test]
fn an_interrupted_load_is_rolled_back_by_gc_keeping_what_others_hold() {
    let layers = three_layers();
    let diffs: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let chains = chain_ids(&diffs);
    let ca = config(&diffs, "a");
    let ida = sha256(&ca);
    for driver in drivers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let base = write(dir.path(), "base.tar", &layers[0]);
        let untagged = write(
            dir.path(),
            "untagged.tar",
            &save_archive(&[Img {
                config: ca.clone(),
                tags: vec![],
                layers: layers.clone(),
            }]),
        );
        // A layer imported before the load: nothing holds it, it is not the load's.
        ok(run(cmd(&root, driver, &["import", base.to_str().unwrap()])));
        let interrupted = || {
            image_meta::Operation::Load(image_meta::journal::LoadRecord {
                created_images: vec![image_id(&ida)],
                registered_layers: vec![chain(&chains[1]), chain(&chains[2])],
                tags: vec![(
                    image_meta::Reference::parse_normalized("app:v1").unwrap(),
                    image_id(&ida),
                )],
                committed: false,
            })
        };

        for rw_on_middle in [false, true] {
            let what = format!("{driver} (RW layer on the middle layer: {rw_on_middle})");
            ok(run(cmd(
                &root,
                driver,
                &["load", untagged.to_str().unwrap()],
            )));
            if rw_on_middle {
                ok(run(cmd(
                    &root,
                    driver,
                    &["rw", "create", "c1", "--parent", &chains[1]],
                )));
            }
            let record = leave_record(&root, driver, interrupted());

            // Any command points at gc; check calls it a leftover.
            let out = run(cmd(&root, driver, &["images"]));
            assert!(out.status.success(), "{what}");
            assert!(
                String::from_utf8_lossy(&out.stderr).contains(HINT),
                "{what}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // Exit 1 (a leftover); the report is on stdout.
            let out = run(cmd(&root, driver, &["--json", "check", "--quick"]));
            assert_eq!(out.status.code(), Some(1), "{what}");
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let problems: Vec<&str> = report["problems"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| p.as_str().unwrap())
                .collect();
            assert_eq!(problems.len(), 1, "{what}: {problems:?}");
            assert!(
                problems[0].starts_with(
                    "leftover: interrupted load of 1 new image and 2 new layers tagged app:v1"
                ) && problems[0].ends_with("run `layerctl gc`"),
                "{what}: {}",
                problems[0]
            );

            let out = ok(run(cmd(&root, driver, &["gc"])));
            assert!(
                out.contains("rolled back interrupted load"),
                "{what}: {out}"
            );
            assert!(
                out.contains(&format!("removed image {ida}")),
                "{what}: {out}"
            );
            assert!(
                !record.exists() && records(&root, driver).is_empty(),
                "{what}"
            );
            assert!(images_json(&root, driver).is_empty(), "{what}");
            let mut kept = vec![chains[0].clone()];
            if rw_on_middle {
                kept.push(chains[1].clone());
                kept.sort();
            }
            assert_eq!(layer_ids(&root, driver), kept, "{what}");
            let out = run(cmd(&root, driver, &["images"]));
            assert!(
                !String::from_utf8_lossy(&out.stderr).contains(HINT),
                "{what}: hint after gc"
            );
            if rw_on_middle {
                ok(run(cmd(&root, driver, &["rw", "rm", "c1"])));
            }
            assert_check_clean(&root, driver);
        }
    }
}

/// A load whose tags were written is done: `gc` drops its record and keeps its image. An
/// rmi killed before its untag left the image tagged: `gc` keeps it too. An rmi killed past
/// the untag (the image dangling, or already deleted with its layers not yet released) is
/// finished by `gc`: image and layers go.
#[test]
fn gc_finishes_a_committed_load_and_an_interrupted_rmi() {
    let layers = three_layers();
    let diffs: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let chains = chain_ids(&diffs);
    let ca = config(&diffs, "a");
    let ida = sha256(&ca);
    let all_chains = || chains.iter().map(|c| chain(c)).collect::<Vec<_>>();
    for driver in drivers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let tagged_tar = write(
            dir.path(),
            "a.tar",
            &save_archive(&[Img {
                config: ca.clone(),
                tags: vec!["app:v1"],
                layers: layers.clone(),
            }]),
        );
        let untagged_tar = write(
            dir.path(),
            "u.tar",
            &save_archive(&[Img {
                config: ca.clone(),
                tags: vec![],
                layers: layers.clone(),
            }]),
        );
        ok(run(cmd(
            &root,
            driver,
            &["load", tagged_tar.to_str().unwrap()],
        )));
        let before = tagged(&root, driver);

        // Killed after its tags, before its record was marked: finished.
        leave_record(
            &root,
            driver,
            image_meta::Operation::Load(image_meta::journal::LoadRecord {
                created_images: vec![image_id(&ida)],
                registered_layers: all_chains(),
                tags: vec![(
                    image_meta::Reference::parse_normalized("app:v1").unwrap(),
                    image_id(&ida),
                )],
                committed: false,
            }),
        );
        let rmi = || {
            image_meta::Operation::Remove(image_meta::journal::RemoveRecord {
                images: vec![image_id(&ida)],
                layers: all_chains(),
                force: false,
            })
        };
        // Killed before its untag: nothing to do.
        leave_record(&root, driver, rmi());
        let out = ok(run(cmd(&root, driver, &["gc"])));
        assert!(out.contains("finished interrupted load"), "{driver}: {out}");
        assert!(out.contains("finished interrupted rmi"), "{driver}: {out}");
        assert_eq!(tagged(&root, driver), before, "{driver}");
        assert_eq!(layer_ids(&root, driver).len(), 3, "{driver}");
        assert!(records(&root, driver).is_empty(), "{driver}");

        // Killed past the untag: the image is dangling.
        ok(run(cmd(&root, driver, &["rmi", "app:v1"])));
        ok(run(cmd(
            &root,
            driver,
            &["load", untagged_tar.to_str().unwrap()],
        )));
        leave_record(&root, driver, rmi());
        let out = ok(run(cmd(&root, driver, &["gc"])));
        assert!(
            out.contains(&format!("removed image {ida}")),
            "{driver}: {out}"
        );
        assert!(images_json(&root, driver).is_empty(), "{driver}");
        assert!(layer_ids(&root, driver).is_empty(), "{driver}");

        // Killed after deleting the image, before releasing its layers.
        ok(run(cmd(
            &root,
            driver,
            &["load", untagged_tar.to_str().unwrap()],
        )));
        image_meta::ImageStore::new(&root, driver)
            .delete_image(&image_id(&ida))
            .unwrap();
        leave_record(&root, driver, rmi());
        let out = ok(run(cmd(&root, driver, &["gc"])));
        assert!(out.contains("finished interrupted rmi"), "{driver}: {out}");
        assert!(layer_ids(&root, driver).is_empty(), "{driver}: {out}");
        assert!(records(&root, driver).is_empty(), "{driver}");
        assert_check_clean(&root, driver);
    }
}

/// `save -o FILE` writes a temporary archive beside FILE and renames it at the end (0644);
/// a killed save's temporary archive is removed by `gc`, which removes nothing else a record
/// names.
#[test]
fn a_killed_saves_temporary_archive_is_removed_by_gc() {
    use std::os::unix::fs::PermissionsExt;
    let layers = three_layers();
    let diffs: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    for driver in drivers() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root");
        let out_dir = dir.path().join("out");
        std::fs::create_dir(&out_dir).unwrap();
        let a = write(
            dir.path(),
            "a.tar",
            &save_archive(&[Img {
                config: config(&diffs, "a"),
                tags: vec!["app:v1"],
                layers: layers.clone(),
            }]),
        );
        ok(run(cmd(&root, driver, &["load", a.to_str().unwrap()])));
        let target = out_dir.join("saved.tar");
        ok(run(cmd(
            &root,
            driver,
            &["save", "app:v1", "-o", target.to_str().unwrap()],
        )));
        let names: Vec<String> = std::fs::read_dir(&out_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["saved.tar".to_owned()], "{driver}");
        assert_eq!(
            std::fs::metadata(&target).unwrap().permissions().mode() & 0o777,
            0o644
        );
        assert!(records(&root, driver).is_empty(), "{driver}");

        let temp = out_dir.join(".layerctl-save-1-0badf00d");
        std::fs::write(&temp, b"half an archive").unwrap();
        let save = |p: &Path| {
            image_meta::Operation::Save(image_meta::journal::SaveRecord {
                temp: p.to_path_buf(),
            })
        };
        leave_record(&root, driver, save(&temp));
        // A record naming something that is not a save's temporary archive: kept.
        leave_record(&root, driver, save(&target));
        let out = run(cmd(&root, driver, &["images"]));
        assert!(String::from_utf8_lossy(&out.stderr).contains(HINT));
        let out = ok(run(cmd(&root, driver, &["gc"])));
        assert!(out.contains("removed temporary archive"), "{driver}: {out}");
        assert!(
            out.contains(&format!("kept: {} (not a temporary", target.display())),
            "{driver}: {out}"
        );
        assert!(!temp.exists() && target.exists(), "{driver}");
        assert!(records(&root, driver).is_empty(), "{driver}");
        assert_check_clean(&root, driver);
    }
}
