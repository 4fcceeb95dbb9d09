//! A real Docker 20.10 overlay2 data-root (`shared/fixtures/docker-root`) opened as-is.
//!
//! Expected views are built independently of the driver: image layers from the layer tars of
//! `docker save` (applied in order, whiteouts deleting), init layers from `listing.txt`, and
//! the container's changes from `docker diff` (`changes.txt`).

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use graphdriver::overlay2::{Overlay2, Overlay2Options};
use graphdriver::{CreateOpts, DiffDriver, ProtoDriver};

use overlay2_util::*;
use testkit::overlay2 as overlay2_util;

fn fixture_dir() -> PathBuf {
    // <workspace>/crates/graphdriver -> <workspace>/../shared
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures/docker-root")
}

struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    saved: PathBuf,
    /// Cache ids of the image chain, base first.
    chain: Vec<String>,
    /// Layer tars of `docker save`, base first.
    layer_tars: Vec<PathBuf>,
    ran: String,
    created: String,
    listing: String,
    changes_txt: String,
}

fn tar_x(args: &[&str], archive: &Path, into: &Path) {
    std::fs::create_dir_all(into).unwrap();
    let status = Command::new("tar")
        .args(args)
        .arg(archive)
        .arg("-C")
        .arg(into)
        .status()
        .expect("run tar");
    assert!(status.success(), "tar {args:?} {}", archive.display());
}

fn read_trim(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_string()
}

fn open_fixture() -> Option<Fixture> {
    if !can_run() {
        return None;
    }
    let dir = fixture_dir();
    if !dir.join("docker-root.tar.gz").exists() {
        panic!("fixture missing: {}", dir.display());
    }
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("r");
    tar_x(
        &["--xattrs", "--xattrs-include=*", "--numeric-owner", "-xpzf"],
        &dir.join("docker-root.tar.gz"),
        &root,
    );
    let saved = tmp.path().join("saved");
    tar_x(&["-xzf"], &dir.join("saved-committed.tar.gz"), &saved);

    // The image chain from layerdb: follow parent links from the base.
    let layerdb = root.join("image/overlay2/layerdb/sha256");
    let mut by_chain: BTreeMap<String, (String, Option<String>)> = BTreeMap::new();
    for entry in std::fs::read_dir(&layerdb).unwrap() {
        let p = entry.unwrap().path();
        let chain_id = format!("sha256:{}", p.file_name().unwrap().to_string_lossy());
        let parent = std::fs::read_to_string(p.join("parent"))
            .ok()
            .map(|s| s.trim().to_string());
        by_chain.insert(chain_id, (read_trim(&p.join("cache-id")), parent));
    }
    let mut chain = Vec::new();
    let mut current: Option<String> = None;
    while let Some((id, (cache, _))) = by_chain.iter().find(|(_, (_, parent))| *parent == current) {
        chain.push(cache.clone());
        current = Some(id.clone());
    }
    assert_eq!(chain.len(), 4, "expected a 4-layer chain, got {chain:?}");

    let manifest = std::fs::read_to_string(saved.join("manifest.json")).unwrap();
    let layers = manifest
        .split("\"Layers\":[")
        .nth(1)
        .unwrap()
        .split(']')
        .next()
        .unwrap();
    let layer_tars: Vec<PathBuf> = layers
        .split(',')
        .map(|s| saved.join(s.trim_matches('"')))
        .collect();
    assert_eq!(layer_tars.len(), 4);

    let readme = std::fs::read_to_string(dir.join("README.md")).unwrap();
    let id_after = |key: &str| {
        let start = readme
            .find(key)
            .unwrap_or_else(|| panic!("README has no {key}"))
            + key.len();
        readme[start..].split('`').next().unwrap().to_string()
    };
    Some(Fixture {
        root,
        saved,
        chain,
        layer_tars,
        ran: id_after("ran = `"),
        created: id_after("created = `"),
        listing: std::fs::read_to_string(dir.join("listing.txt")).unwrap(),
        changes_txt: std::fs::read_to_string(dir.join("changes.txt")).unwrap(),
        _tmp: tmp,
    })
}

impl Fixture {
    fn home(&self) -> PathBuf {
        self.root.join("overlay2")
    }
    fn mount(&self, container: &str) -> (String, String) {
        let m = self
            .root
            .join("image/overlay2/layerdb/mounts")
            .join(container);
        (
            read_trim(&m.join("mount-id")),
            read_trim(&m.join("init-id")),
        )
    }
}

/// A merged view as `tree(_, false)` describes it, computed by applying layer tars.
#[derive(Default, Clone)]
struct Model(BTreeMap<String, String>);

impl Model {
    fn remove_tree(&mut self, path: &str) {
        self.0.remove(path);
        let prefix = format!("{path}/");
        self.0.retain(|k, _| !k.starts_with(&prefix));
    }

    fn apply_tar(&mut self, tar_path: &Path) {
        let file = std::fs::File::open(tar_path).unwrap();
        let mut archive = tar::Archive::new(file);
        for entry in archive.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = String::from_utf8(entry.path_bytes().to_vec()).unwrap();
            let name = name
                .trim_start_matches("./")
                .trim_end_matches('/')
                .to_string();
            let (dir, base) = match name.rfind('/') {
                Some(i) => (name[..i].to_string(), name[i + 1..].to_string()),
                None => (String::new(), name.clone()),
            };
            let join = |b: &str| {
                if dir.is_empty() {
                    b.to_string()
                } else {
                    format!("{dir}/{b}")
                }
            };
            if base == ".wh..wh..opq" {
                let prefix = format!("{dir}/");
                self.0.retain(|k, _| !k.starts_with(&prefix));
                continue;
            }
            if let Some(hidden) = base.strip_prefix(".wh.") {
                self.remove_tree(&join(hidden));
                continue;
            }
            let h = entry.header().clone();
            let mode = h.mode().unwrap() & 0o7777;
            let owner = format!("uid={} gid={}", h.uid().unwrap(), h.gid().unwrap());
            let desc = match h.entry_type() {
                tar::EntryType::Directory => {
                    if self.0.get(&name).is_some_and(|d| !d.starts_with("mode=40")) {
                        self.remove_tree(&name);
                    }
                    format!("mode={:o} {owner}", 0o40000 | mode)
                }
                tar::EntryType::Regular => {
                    let mut data = Vec::new();
                    entry.read_to_end(&mut data).unwrap();
                    self.remove_tree(&name);
                    format!(
                        "mode={:o} {owner} size={} sum={:016x}",
                        0o100000 | mode,
                        data.len(),
                        fnv(&data)
                    )
                }
                tar::EntryType::Symlink => {
                    self.remove_tree(&name);
                    let target = String::from_utf8(h.link_name_bytes().unwrap().to_vec()).unwrap();
                    format!("mode={:o} {owner} -> {target}", 0o120000 | mode)
                }
                tar::EntryType::Link => {
                    let target = String::from_utf8(h.link_name_bytes().unwrap().to_vec()).unwrap();
                    self.0[target.trim_end_matches('/')].clone()
                }
                other => panic!("unexpected {other:?} in {}", tar_path.display()),
            };
            self.0.insert(name, desc);
        }
    }

    /// Adds the files `listing.txt` shows under `<prefix>` (a layer's diff dir).
    fn apply_listing(&mut self, listing: &str, prefix: &str) {
        for line in listing.lines() {
            let f: Vec<&str> = line.split(' ').collect();
            if f.len() < 6 || !f[5].starts_with(prefix) {
                continue;
            }
            let path = f[5][prefix.len()..].to_string();
            let mode = u32::from_str_radix(f[1], 8).unwrap();
            let (uid, gid) = f[2].split_once(':').unwrap();
            let owner = format!("uid={uid} gid={gid}");
            let desc = match f[0] {
                "d" => format!("mode={:o} {owner}", 0o40000 | mode),
                "-" => {
                    assert_eq!(f[3], "0", "init files are empty: {line}");
                    format!(
                        "mode={:o} {owner} size=0 sum={:016x}",
                        0o100000 | mode,
                        fnv(b"")
                    )
                }
                "l" => format!("mode={:o} {owner} -> {}", 0o120000 | mode, f[7]),
                other => panic!("unexpected type {other} in {line}"),
            };
            self.0.insert(path, desc);
        }
    }
}

fn assert_view(what: &str, got: &BTreeMap<String, String>, want: &Model) {
    assert!(
        got == &want.0,
        "{what}: merged view differs from the expected one:\n{}",
        tree_diff(got, &want.0)
    );
}

#[test]
fn docker_root_layers_and_containers_mount_with_the_expected_views() {
    let Some(fx) = open_fixture() else { return };
    let d = Guarded(Overlay2::new(fx.home(), Overlay2Options::default()).unwrap());
    let mut ids = d.list().unwrap();
    ids.sort();
    assert_eq!(ids.len(), 8, "4 image layers + 2 init + 2 RW: {ids:?}");

    let mut models = Vec::new();
    let mut model = Model::default();
    for (i, tar) in fx.layer_tars.iter().enumerate() {
        model.apply_tar(tar);
        models.push(model.clone());
        let view = d.get(&fx.chain[i], "").unwrap();
        assert_view(
            &format!("image layer {} ({})", i + 1, fx.chain[i]),
            &tree(&view, false),
            &model,
        );
        d.put(&fx.chain[i]).unwrap();
    }

    for (name, container) in [("created", &fx.created), ("ran", &fx.ran)] {
        let (mount_id, init_id) = fx.mount(container);
        let mut expect = models[2].clone();
        expect.apply_listing(&fx.listing, &format!("overlay2/{init_id}/diff/"));
        let view = d.get(&init_id, "").unwrap();
        assert_view(&format!("{name}: init layer"), &tree(&view, false), &expect);
        d.put(&init_id).unwrap();
        if name == "ran" {
            // The committed image layer is Docker's diff of this RW layer.
            expect.apply_tar(&fx.layer_tars[3]);
        }
        let view = d.get(&mount_id, "").unwrap();
        assert_eq!(view, fx.home().join(&mount_id).join("merged"));
        assert_view(&format!("{name}: RW layer"), &tree(&view, false), &expect);
        d.put(&mount_id).unwrap();
    }
    d.cleanup().unwrap();
    let _ = &fx.saved;
}

#[test]
fn docker_root_rw_layer_changes_equal_docker_diff() {
    let Some(fx) = open_fixture() else { return };
    let d = Guarded(Overlay2::new(fx.home(), Overlay2Options::default()).unwrap());
    let section = fx
        .changes_txt
        .split("## docker diff ran")
        .nth(1)
        .expect("ran section");
    let mut expected: Vec<String> = section
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    expected.sort();
    let created = fx
        .changes_txt
        .split("## docker diff created")
        .nth(1)
        .unwrap()
        .split("##")
        .next()
        .unwrap();
    assert!(created.trim().is_empty());

    let (mount_id, init_id) = fx.mount(&fx.ran);
    assert!(d.uses_native_diff());
    let mut got: Vec<String> = d
        .changes(&mount_id, Some(&init_id))
        .unwrap()
        .iter()
        .map(|c| c.to_string())
        .collect();
    got.sort();
    assert_eq!(got, expected);

    let (created_mount, created_init) = fx.mount(&fx.created);
    assert!(
        d.changes(&created_mount, Some(&created_init))
            .unwrap()
            .is_empty()
    );
    // Nothing stays mounted after changes.
    assert!(!is_mounted(&fx.home().join(&init_id).join("merged")));
}

/// Clears the link name of `.wh.` regular-file headers (re-computing the checksum); returns
/// how many there were. Walks headers by their sizes, so payload blocks are never touched.
fn blank_whiteout_link_names(tar: &mut [u8]) -> usize {
    let mut count = 0;
    let mut at = 0;
    while at + 512 <= tar.len() && tar[at..at + 512].iter().any(|&b| b != 0) {
        let block = &mut tar[at..at + 512];
        let name_end = block[..100].iter().position(|&b| b == 0).unwrap_or(100);
        let name = String::from_utf8_lossy(&block[..name_end]).into_owned();
        let size_text = String::from_utf8_lossy(&block[124..135])
            .trim_matches(char::from(0))
            .to_string();
        let size = u64::from_str_radix(size_text.trim(), 8).unwrap();
        let base = name.rsplit('/').next().unwrap_or("");
        if block[156] == b'0' && base.starts_with(".wh.") {
            count += 1;
            block[157..257].fill(0);
            block[148..156].fill(b' ');
            let sum: u64 = block.iter().map(|&b| u64::from(b)).sum();
            block[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        }
        at += 512 + size.div_ceil(512) as usize * 512;
    }
    count
}

#[test]
fn docker_root_rw_diff_is_dockers_committed_layer_and_applies_back() {
    let Some(fx) = open_fixture() else { return };
    let d = Guarded(Overlay2::new(fx.home(), Overlay2Options::default()).unwrap());
    let (mount_id, init_id) = fx.mount(&fx.ran);
    let mut ours = Vec::new();
    d.diff(&mount_id, Some(&init_id))
        .unwrap()
        .read_to_end(&mut ours)
        .unwrap();
    let mut docker = std::fs::read(&fx.layer_tars[3]).unwrap();
    // Docker's later whiteouts carry the first whiteout's path as a link name because the
    // kernel hard-links whiteouts to one inode; the captured data-root lost that link (GNU tar
    // does not keep device hard links), so that field alone cannot match. Blank it both sides.
    let whiteouts = blank_whiteout_link_names(&mut docker);
    assert_eq!(blank_whiteout_link_names(&mut ours), whiteouts);
    assert_eq!(
        whiteouts, 3,
        "etc/.wh.c.conf, opt/app/.wh.fresh and the opaque marker"
    );
    if ours != docker {
        let first = ours
            .iter()
            .zip(&docker)
            .position(|(a, b)| a != b)
            .unwrap_or(ours.len().min(docker.len()));
        let block = first / 512 * 512;
        panic!(
            "our diff differs from Docker's at byte {first} (lengths {} vs {}):\nours   {:?}\ndocker {:?}",
            ours.len(),
            docker.len(),
            String::from_utf8_lossy(&ours[block..(block + 512).min(ours.len())]),
            String::from_utf8_lossy(&docker[block..(block + 512).min(docker.len())]),
        );
    }

    // Applied natively on a new child of the image top, it reproduces the committed layer.
    let parent = &fx.chain[2];
    d.create("reapplied", Some(parent), &CreateOpts::default())
        .unwrap();
    let size = d
        .apply_diff("reapplied", Some(parent), &mut &ours[..])
        .unwrap();
    assert_eq!(size, d.diff_size(&fx.chain[3], Some(parent)).unwrap());
    let want = tree(&fx.home().join(&fx.chain[3]).join("diff"), true);
    let got = tree(&fx.home().join("reapplied/diff"), true);
    assert!(
        got == want,
        "reapplied layer differs from Docker's:\n{}",
        tree_diff(&got, &want)
    );
    d.remove("reapplied").unwrap();
}

/// `metadata()` gives what `docker inspect` showed as GraphDriver.Data for every image and
/// container of the fixture (with the data-root path substituted).
#[test]
fn docker_root_metadata_matches_docker_inspect() {
    let Some(fx) = open_fixture() else { return };
    let d = Guarded(Overlay2::new(fx.home(), Overlay2Options::default()).unwrap());
    let inspect_dir = fixture_dir().join("inspect");
    let mut checked = 0;
    for entry in std::fs::read_dir(&inspect_dir).unwrap() {
        let path = entry.unwrap().path();
        let json: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let object = json.as_array().map_or(&json, |a| &a[0]);
        let graph = &object["GraphDriver"];
        assert_eq!(graph["Name"], "overlay2", "{}", path.display());
        let data = graph["Data"].as_object().unwrap();
        let root = fx.root.to_str().unwrap();
        let want: BTreeMap<String, String> = data
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    v.as_str().unwrap().replace("$SCRATCH/d/root", root),
                )
            })
            .collect();
        let upper = Path::new(&want["UpperDir"]);
        let id = upper
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        assert_eq!(d.metadata(id).unwrap(), want, "{}", path.display());
        checked += 1;
    }
    assert_eq!(checked, 4);
}
