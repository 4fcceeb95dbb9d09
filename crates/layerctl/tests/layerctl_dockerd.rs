//! The real client decides: images `layerctl load` writes run under Debian's Docker 20.10
//! daemon, images dockerd commits are seen by layerctl, `layerctl rmi` removes them for
//! dockerd, and `layerctl save` goes through `docker load`. On both drivers; and the same
//! with `--userns-remap` on both sides (a user the test creates), down to who owns each file.
//!
//! Each daemon is private (own data-root, exec-root, socket; no iptables, no bridge; its own
//! containerd namespace), never reaches a registry (`--pull never`, `--network none`) and is
//! stopped by pid by a guard, also when an assertion fails. Skipped with a message where
//! dockerd, busybox-static or root is missing, except under `CI=true`.

use std::path::Path;

use testkit::digest::{chain_ids, sha256};
use testkit::dockerd::{self, Dockerd};
use testkit::image::*;
use testkit::layerctl::*;

fn layerctl(root: &Path, driver: &str, args: &[&str]) -> String {
    let mut c = ctl(root, driver);
    c.args(args);
    ok(run(c))
}

#[test]
fn images_loaded_by_layerctl_run_under_dockerd_and_back() {
    if dockerd::unavailable().is_some() {
        return; // recorded by testkit's dockerd gate
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
    // With a journal record beside its metadata, as a load killed just after writing its
    // tags leaves it: dockerd ignores the file, and `gc` later finishes that load.
    let record = interrupted_load_record(&root, driver, &id, "lsbox:v1", &layers);
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
    // Docker's own size and creation time of both images, for `layerctl images` to match.
    let docker_facts: Vec<(String, String)> = ["lsbox:v1", "lsbox:committed"]
        .iter()
        .map(|name| {
            let out = d.ok(&["image", "inspect", "-f", "{{.ID}} {{.Size}}", name]);
            let (id, size) = out.trim().split_once(' ').unwrap();
            (id.to_owned(), size.to_owned())
        })
        .collect();
    d.stop();
    assert!(
        record.exists(),
        "{driver}: dockerd touched the journal record"
    );
    let out = layerctl(&root, driver, &["gc"]);
    assert!(out.contains("finished interrupted load"), "{driver}: {out}");
    assert!(!record.exists(), "{driver}: gc left the journal record");

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
    for (docker_id, docker_size) in &docker_facts {
        let ours = images
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["id"] == docker_id.as_str())
            .unwrap_or_else(|| panic!("{driver}: layerctl does not list {docker_id}"));
        assert_eq!(
            ours["size"].to_string(),
            *docker_size,
            "{driver}: size of {docker_id}, layerctl vs docker image inspect"
        );
    }
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

    // The committed image names lsbox:v1 as parent. As `docker rmi` (checked against
    // dockerd 20.10): removing the parent's last tag only untags it (exit 0, the image stays,
    // dangling); removing it by ID is refused, even forced, and changes nothing.
    let out = layerctl(&root, driver, &["rmi", "lsbox:v1"]);
    assert_eq!(out, "Untagged: lsbox:v1\n", "{driver}");
    let listed = layerctl(&root, driver, &["--json", "images"]);
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert!(
        listed
            .as_array()
            .unwrap()
            .iter()
            .any(|i| i["id"] == id.as_str() && i["repo_tags"] == serde_json::json!([])),
        "{driver}: {listed}"
    );
    let before = snapshot(&root);
    for args in [
        vec!["rmi", id.as_str()],
        vec!["rmi", "--force", id.as_str()],
    ] {
        let mut c = ctl(&root, driver);
        c.args(&args);
        let e = fails(run(c));
        assert!(e.contains("image has dependent child images"), "{e}");
        assert_eq!(
            snapshot(&root),
            before,
            "{driver}: {args:?} changed the store"
        );
    }
    layerctl(&root, driver, &["tag", &id, "lsbox:v1"]);

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

/// Writes the journal record of a load of image `id` (tag `tag`, `layers`) killed after its
/// tags were written but before its record was marked committed; returns the record's path.
fn interrupted_load_record(
    root: &Path,
    driver: &str,
    id: &str,
    tag: &str,
    layers: &[Vec<u8>],
) -> std::path::PathBuf {
    use image_meta::journal::LoadRecord;
    let image: image_meta::ImageId = id.parse().unwrap();
    let diffs: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let record = LoadRecord {
        created_images: vec![image.clone()],
        registered_layers: chain_ids(&diffs)
            .iter()
            .map(|c| c.parse().unwrap())
            .collect(),
        tags: vec![(image_meta::Reference::parse_normalized(tag).unwrap(), image)],
        committed: false,
    };
    let in_flight = image_meta::ImageStore::new(root, driver)
        .journal()
        .begin(&image_meta::Operation::Load(record))
        .unwrap();
    // Dropped unfinished: the record stays on disk, as a kill leaves it.
    let path = in_flight.path().to_path_buf();
    drop(in_flight);
    path
}

/// A layer whose entries are owned by 0, 1000 and 65534.
fn owners_layer() -> Vec<u8> {
    testkit::tar::Tar::new()
        .dir("home/")
        .owner(1000, 1000)
        .entry(tar::EntryType::Directory, "home/u/", "", 0o750, b"")
        .file_mode("home/u/f", b"user's\n", 0o640)
        .symlink("home/u/l", "f")
        .owner(65534, 65534)
        .file_mode("nobody", b"n\n", 0o600)
        .build()
}

/// `(kind, uid, gid, mode)` of every path under `dir` (itself as ""), symlinks not followed.
/// Targets, sizes and times are left out: what is compared is who owns what.
type Tree = std::collections::BTreeMap<String, (char, u32, u32, u32)>;

fn ownership_tree(dir: &Path) -> Tree {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let t = m.file_type();
        let kind = if t.is_dir() {
            'd'
        } else if t.is_symlink() {
            'l'
        } else if t.is_char_device() {
            'c'
        } else if t.is_file() {
            'f'
        } else {
            '?'
        };
        let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
        out.insert(rel, (kind, m.uid(), m.gid(), m.mode() & 0o7777));
        if t.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out
}

/// Where a layer lives in a store: its driver dir and its layerdb dir.
fn layer_dirs(store: &Path, driver: &str, chain: &str) -> [std::path::PathBuf; 2] {
    let meta = store
        .join("image")
        .join(driver)
        .join("layerdb/sha256")
        .join(chain.trim_start_matches("sha256:"));
    let cache = std::fs::read_to_string(meta.join("cache-id"))
        .unwrap_or_else(|e| panic!("{}: {e}", meta.display()));
    let dir = match driver {
        "vfs" => store.join("vfs/dir").join(cache.trim()),
        _ => store.join("overlay2").join(cache.trim()),
    };
    [dir, meta]
}

/// `--userns-remap`: what `layerctl --userns-remap USER load` writes runs under dockerd
/// `--userns-remap USER` (the container sees the layer's owners, not the overflow ID), a
/// container dockerd commits there exports from layerctl with Docker's DiffID and the
/// container's owners, and the store is, path by path, owned as dockerd owns the same image
/// after its own `docker load`.
#[test]
fn remapped_images_run_under_dockerd_userns_remap() {
    use testkit::testuser::{TestUser, can_create_users};
    if dockerd::unavailable().is_some() {
        return; // recorded by testkit's dockerd gate
    }
    if !can_create_users("remapped_images_run_under_dockerd_userns_remap") {
        return;
    }
    let user = TestUser::create("lsdk", Some(65536));
    let base = user.subid_start.unwrap();
    for driver in drivers() {
        remapped_one_driver(&user, base, driver);
    }
}

fn remapped_one_driver(user: &testkit::testuser::TestUser, base: u32, driver: &str) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    // dockerd refuses a data-root whose ancestors the remapped root cannot traverse.
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let (root, docker_root) = (dir.path().join("root"), dir.path().join("docker-root"));
    let (archive, config, layers) = busybox_image_with("lsremap:v1", vec![owners_layer()]);
    let input = dir.path().join("lsremap.tar");
    std::fs::write(&input, &archive).unwrap();
    let id = sha256(&config);
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let chains = chain_ids(&diff_ids);
    let remap = |root: &Path, args: &[&str]| {
        let mut c = ctl(root, driver);
        c.arg("--userns-remap").arg(&user.name).args(args);
        c
    };
    let remap_flag = ["--userns-remap", user.name.as_str()];
    let store = |root: &Path| root.join(format!("{base}.{base}"));

    // 1. layerctl loads it into the remapped store.
    let out = ok(run(remap(&root, &["load", input.to_str().unwrap()])));
    assert_eq!(out, "Loaded image: lsremap:v1\n", "{driver}");

    // 2. dockerd --userns-remap runs it: the container sees its image's owners.
    let d = Dockerd::start_with(&dir.path().join("d"), &root, driver, &remap_flag);
    let listed = d.ok(&[
        "images",
        "--no-trunc",
        "--format",
        "{{.Repository}}:{{.Tag}} {{.ID}}",
    ]);
    assert_eq!(listed.trim(), format!("lsremap:v1 {id}"), "{driver}");
    let run_args = ["run", "--rm", "--pull", "never", "--network", "none"];
    let ran = d.ok(&[&run_args[..], &["lsremap:v1"]].concat());
    assert_eq!(ran, format!("{BUSYBOX_MARKER}\nabsent\n"), "{driver}");
    let stat = d.ok(&[
        &run_args[..],
        &[
            "lsremap:v1",
            "/bin/busybox",
            "stat",
            "-c",
            "%u:%g %a %n",
            "/bin/busybox",
            "/etc/marker",
            "/home",
            "/home/u",
            "/home/u/f",
            "/home/u/l",
            "/nobody",
        ],
    ]
    .concat());
    assert_eq!(
        stat,
        "0:0 755 /bin/busybox\n0:0 644 /etc/marker\n0:0 755 /home\n\
         1000:1000 750 /home/u\n1000:1000 640 /home/u/f\n1000:1000 777 /home/u/l\n\
         65534:65534 600 /nobody\n",
        "{driver}: owners as the container sees them"
    );

    // 3. dockerd commits a container whose user 1000 wrote a file.
    d.ok(&[
        "run",
        "--name",
        "c1",
        "--pull",
        "never",
        "--network",
        "none",
        "lsremap:v1",
        "/bin/sh",
        "-c",
        "echo new > /home/u/new && /bin/busybox chown 1000:1000 /home/u/new",
    ]);
    d.ok(&["commit", "c1", "lsremap:committed"]);
    d.ok(&["rm", "c1"]);
    let docker_layers = d.ok(&[
        "image",
        "inspect",
        "-f",
        "{{json .RootFS.Layers}}",
        "lsremap:committed",
    ]);
    let docker_layers: Vec<String> = serde_json::from_str(docker_layers.trim()).unwrap();
    assert_eq!(docker_layers.len(), 4, "{driver}");
    d.stop();
    let top = chain_ids(&docker_layers)[3].clone();
    // dockerd wrote the file as host base+1000, as layerctl would.
    let [top_dir, _] = layer_dirs(&store(&root), driver, &top);
    let new = match driver {
        "vfs" => top_dir.join("home/u/new"),
        _ => top_dir.join("diff/home/u/new"),
    };
    {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::symlink_metadata(&new).unwrap();
        assert_eq!((m.uid(), m.gid()), (base + 1000, base + 1000), "{driver}");
    }
    let exported = run(remap(&root, &["export", &top]));
    assert!(exported.status.success(), "{driver}");
    assert_eq!(
        sha256(&exported.stdout),
        docker_layers[3],
        "{driver}: layerctl's export of dockerd's commit vs Docker's DiffID"
    );
    let mut seen = false;
    for e in tar::Archive::new(&exported.stdout[..]).entries().unwrap() {
        let e = e.unwrap();
        if e.path().unwrap().to_str() == Some("home/u/new") {
            assert_eq!(
                (e.header().uid().unwrap(), e.header().gid().unwrap()),
                (1000, 1000)
            );
            seen = true;
        }
    }
    assert!(seen, "{driver}: the commit holds home/u/new");
    let check = ok(run(remap(&root, &["check"])));
    assert!(check.lines().any(|l| l == "ok"), "{driver}: {check}");
    for (chain, diff) in chains.iter().zip(&diff_ids) {
        let out = run(remap(&root, &["export", chain]));
        assert_eq!(sha256(&out.stdout), *diff, "{driver}: export of {chain}");
    }

    // 4. The same image through dockerd's own `docker load` on a fresh remapped root: the
    // homes and every layer's files are owned (and moded) as layerctl owns them.
    let d = Dockerd::start_with(&dir.path().join("d2"), &docker_root, driver, &remap_flag);
    let loaded = d.ok(&["load", "-i", input.to_str().unwrap()]);
    assert!(loaded.contains("Loaded image: lsremap:v1"), "{loaded}");
    d.stop();
    let (ours, theirs) = (store(&root), store(&docker_root));
    let home = match driver {
        "vfs" => "vfs/dir",
        _ => "overlay2",
    };
    let mut differences = Vec::new();
    let mut compare = |what: String, mut a: Tree, b: Tree| {
        // overlay2's `committed` marker exists in a parent once a child was made on it.
        if !b.contains_key("committed") {
            a.remove("committed");
        }
        for k in a
            .keys()
            .chain(b.keys())
            .collect::<std::collections::BTreeSet<_>>()
        {
            if a.get(k) != b.get(k) {
                differences.push(format!(
                    "{what} {k:?}: ours {:?}, dockerd's {:?}",
                    a.get(k),
                    b.get(k)
                ));
            }
        }
    };
    for rel in ["", "image", "image/{d}", "image/{d}/layerdb", home] {
        let rel = rel.replace("{d}", driver);
        let top = |t: Tree| t.into_iter().filter(|(k, _)| k.is_empty()).collect();
        compare(
            format!("{driver} <store>/{rel}"),
            top(ownership_tree(&ours.join(&rel))),
            top(ownership_tree(&theirs.join(&rel))),
        );
    }
    for chain in &chains {
        let [a_dir, a_meta] = layer_dirs(&ours, driver, chain);
        let [b_dir, b_meta] = layer_dirs(&theirs, driver, chain);
        compare(
            format!("{driver} layer {chain}"),
            ownership_tree(&a_dir),
            ownership_tree(&b_dir),
        );
        compare(
            format!("{driver} layerdb of {chain}"),
            ownership_tree(&a_meta),
            ownership_tree(&b_meta),
        );
    }
    assert!(
        differences.is_empty(),
        "ours vs dockerd's:\n{}",
        differences.join("\n")
    );
}

/// `dockremap` as the host's files hold it: its passwd entry without the UID/GID numbers
/// (name, shell, home, comment), whether it is a system user, its group, and its subuid and
/// subgid lines.
fn dockremap_entry() -> Option<Vec<String>> {
    let passwd = std::fs::read_to_string("/etc/passwd").unwrap();
    let line = passwd.lines().find(|l| l.starts_with("dockremap:"))?;
    let f: Vec<&str> = line.split(':').collect();
    let uid: u32 = f[2].parse().unwrap();
    let group = std::fs::read_to_string("/etc/group")
        .unwrap()
        .lines()
        .any(|l| l.starts_with("dockremap:") && l.split(':').nth(2) == Some(f[3]));
    let sub = |file: &str| {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.starts_with("dockremap:"))
            .collect::<Vec<_>>()
            .join(";")
    };
    Some(vec![
        format!("{}:{}:{}:{}", f[0], f[4], f[5], f[6]),
        format!("system user: {}", uid < 1000),
        format!("own group: {group}"),
        format!("subuid {}", sub("/etc/subuid")),
        format!("subgid {}", sub("/etc/subgid")),
    ])
}

/// Deletes `dockremap` on drop (with its group and ranges), when this test made it.
struct DeleteDockremap(bool);

impl Drop for DeleteDockremap {
    fn drop(&mut self) {
        if self.0 && dockremap_entry().is_some() {
            let _ = std::process::Command::new("userdel")
                .arg("dockremap")
                .status();
        }
    }
}

/// `--userns-remap default`: the `dockremap` user layerctl creates is the one dockerd creates
/// (same account kind, same subordinate ranges), and the store lands where dockerd `default`
/// looks, so dockerd runs the image. The host's accounts are left as they were: dockremap is
/// deleted again when the test made it; where it existed already, it is used as it is and the
/// creation comparison is skipped (said on stderr).
#[test]
fn remap_default_creates_dockremap_as_dockerd_does() {
    use std::os::unix::fs::PermissionsExt;
    use testkit::testuser::can_create_users;
    if dockerd::unavailable().is_some() {
        return; // recorded by testkit's dockerd gate
    }
    if !can_create_users("remap_default_creates_dockremap_as_dockerd_does") {
        return;
    }
    let existed = dockremap_entry().is_some();
    let _cleanup = DeleteDockremap(!existed);
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711)).unwrap();
    let root = dir.path().join("root");
    let default = |args: &[&str]| {
        let mut c = ctl(&root, "vfs");
        c.args(["--userns-remap", "default"]).args(args);
        c
    };
    if existed {
        eprintln!(
            "note: dockremap exists on this host: used as it is; layerctl's and dockerd's creation of it not compared"
        );
    } else {
        // layerctl creates it, and it goes again; then dockerd creates it.
        let scratch = dir.path().join("scratch");
        let mut c = ctl(&scratch, "vfs");
        c.args(["--userns-remap", "default", "ls"]);
        let out = run(c);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ours = dockremap_entry().expect("layerctl created dockremap");
        let gone = std::process::Command::new("userdel")
            .arg("dockremap")
            .status()
            .unwrap();
        assert!(gone.success());
        assert_eq!(dockremap_entry(), None, "userdel removed dockremap");
        let d = Dockerd::start_with(
            &dir.path().join("d0"),
            &dir.path().join("docker-root"),
            "vfs",
            &["--userns-remap", "default"],
        );
        d.stop();
        let theirs = dockremap_entry().expect("dockerd created dockremap");
        assert_eq!(ours, theirs, "dockremap: layerctl's vs dockerd's");
    }

    // dockerd `default` and layerctl `default` meet in one <uid>.<gid>/.
    let d = Dockerd::start_with(
        &dir.path().join("d"),
        &root,
        "vfs",
        &["--userns-remap", "default"],
    );
    d.stop();
    let (archive, config, _) = busybox_image("lsdefault:v1");
    let input = dir.path().join("lsdefault.tar");
    std::fs::write(&input, &archive).unwrap();
    let out = ok(run(default(&["load", input.to_str().unwrap()])));
    assert_eq!(out, "Loaded image: lsdefault:v1\n");
    let remapped: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains('.'))
        .collect();
    assert_eq!(remapped.len(), 1, "one remapped root: {remapped:?}");
    let d = Dockerd::start_with(
        &dir.path().join("d"),
        &root,
        "vfs",
        &["--userns-remap", "default"],
    );
    let listed = d.ok(&["images", "--no-trunc", "--format", "{{.ID}}"]);
    assert_eq!(listed.trim(), sha256(&config));
    let ran = d.ok(&[
        "run",
        "--rm",
        "--pull",
        "never",
        "--network",
        "none",
        "lsdefault:v1",
    ]);
    assert_eq!(ran, format!("{BUSYBOX_MARKER}\nabsent\n"));
    d.stop();
}
