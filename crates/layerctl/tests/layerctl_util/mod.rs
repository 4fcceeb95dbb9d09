//! Helpers for the end-to-end tests: run the built binary, build layer tars and image
//! archives in memory, hash, and snapshot a root to prove nothing was left behind.
#![allow(dead_code)]

pub mod dockerd;
pub mod testuser;

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use sha2::{Digest as _, Sha256};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_layerctl"))
}

/// The binary on a root and driver, quiet, with no inherited `LAYERCTL_ROOT`.
pub fn ctl(root: &Path, driver: &str) -> Command {
    let mut c = bin();
    c.env_remove("LAYERCTL_ROOT")
        .env_remove("RUST_LOG")
        .arg("--root")
        .arg(root)
        .arg("--driver")
        .arg(driver);
    c
}

/// Runs and returns the output (stdin closed).
pub fn run(mut c: Command) -> Output {
    c.stdin(Stdio::null()).output().expect("run layerctl")
}

/// Runs with `input` on stdin.
pub fn run_with_stdin(mut c: Command, input: &[u8]) -> Output {
    let mut child = c
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn layerctl");
    let mut stdin = child.stdin.take().unwrap();
    let data = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

/// Asserts success and returns stdout as text.
pub fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// Asserts exit status 1 with a single `error: …` line on stderr; returns that line.
pub fn fails(out: Output) -> String {
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(1),
        "want exit 1\nstdout: {}\nstderr: {stderr}",
        String::from_utf8_lossy(&out.stdout)
    );
    let lines: Vec<&str> = stderr.lines().collect();
    assert_eq!(lines.len(), 1, "want one stderr line, got {stderr:?}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    lines[0].to_owned()
}

pub fn json(out: Output) -> serde_json::Value {
    serde_json::from_str(&ok(out)).expect("valid JSON")
}

pub fn sha256(data: &[u8]) -> String {
    let mut s = String::from("sha256:");
    for b in Sha256::digest(data) {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for d in diff_ids {
        let next = match out.last() {
            None => d.clone(),
            Some(p) => sha256(format!("{p} {d}").as_bytes()),
        };
        out.push(next);
    }
    out
}

/// The drivers to test: vfs always; overlay2 as root when the driver starts here (asked of
/// the binary itself, so a not-yet-loaded overlay module still counts). In CI (`CI=true`) as
/// root, overlay2 not starting is a failure, not a skip.
pub fn drivers() -> Vec<&'static str> {
    static OVERLAY: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    let overlay = OVERLAY.get_or_init(|| {
        if !rustix_is_root() {
            return Err("not root".into());
        }
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let mut c = ctl(dir.path(), "overlay2");
        c.arg("info");
        let out = run(c);
        if out.status.success() {
            Ok(())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).trim().to_owned())
        }
    });
    match overlay {
        Ok(()) => vec!["vfs", "overlay2"],
        Err(why) if rustix_is_root() && std::env::var("CI").as_deref() == Ok("true") => {
            panic!("CI runs as root but overlay2 does not start: {why}")
        }
        Err(why) => {
            eprintln!("skipping overlay2: {why}");
            vec!["vfs"]
        }
    }
}

pub fn rustix_is_root() -> bool {
    // SAFETY-free: read our own effective uid from /proc.
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// One entry of a layer tar.
#[derive(Debug, Clone)]
pub enum E {
    Dir(&'static str),
    File(&'static str, &'static [u8]),
    Symlink(&'static str, &'static str),
    Hardlink(&'static str, &'static str),
}

/// A ustar header with raw name (and link name) bytes: the `tar` crate refuses `..`, which
/// the breakout tests need.
fn raw_header(kind: tar::EntryType, name: &str, link: &str, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(0o644);
    h.set_mtime(1_700_000_000);
    h.set_size(size);
    let u = h.as_ustar_mut().unwrap();
    u.name[..name.len()].copy_from_slice(name.as_bytes());
    u.linkname[..link.len()].copy_from_slice(link.as_bytes());
    h.set_cksum();
    h
}

/// A deterministic layer tar (ustar, fixed owner and mtime).
pub fn layer_tar(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let raw = match e {
            E::File(p, data) if p.contains("..") => Some((
                raw_header(tar::EntryType::Regular, p, "", data.len() as u64),
                *data,
            )),
            E::Hardlink(p, t) if t.contains("..") => {
                Some((raw_header(tar::EntryType::Link, p, t, 0), &b""[..]))
            }
            E::Symlink(p, t) if t.contains("..") => {
                Some((raw_header(tar::EntryType::Symlink, p, t, 0), &b""[..]))
            }
            _ => None,
        };
        if let Some((h, data)) = raw {
            b.append(&h, data).unwrap();
            continue;
        }
        let mut h = tar::Header::new_ustar();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            E::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            E::File(p, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
            E::Symlink(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
            E::Hardlink(p, target) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, p, target).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// Three layers: a base, one with whiteouts (`.wh.` file and dir), one with an opaque dir.
pub fn three_layers() -> Vec<Vec<u8>> {
    vec![
        layer_tar(&[
            E::Dir("etc/"),
            E::File("etc/a.conf", b"alpha=1\n"),
            E::File("etc/b.conf", b"beta=2\n"),
            E::Dir("opt/"),
            E::Dir("opt/app/"),
            E::File("opt/app/x", b"x\n"),
            E::Dir("opt/app/sub/"),
            E::File("opt/app/sub/z", b"z\n"),
            E::Symlink("etc/a.link", "a.conf"),
            E::Hardlink("etc/a.hard", "etc/a.conf"),
        ]),
        layer_tar(&[
            E::Dir("etc/"),
            E::File("etc/.wh.b.conf", b""),
            E::File("etc/a.conf", b"alpha=changed\n"),
            E::Dir("opt/"),
            E::Dir("opt/app/"),
            E::File("opt/app/.wh.sub", b""),
        ]),
        layer_tar(&[
            E::Dir("opt/"),
            E::Dir("opt/app/"),
            E::File("opt/app/.wh..wh..opq", b""),
            E::File("opt/app/fresh", b"fresh\n"),
        ]),
    ]
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 1).unwrap()
}

/// An archive (tar) from `(name, bytes)` members.
pub fn archive(members: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, &data[..]).unwrap();
    }
    b.into_inner().unwrap()
}

pub fn config_json(diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

/// Layout of a `docker save` archive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveLayout {
    /// `<id>/layer.tar` (docker < 25).
    Legacy,
    /// `blobs/sha256/<hex>` plus `index.json` and `oci-layout` (docker ≥ 25).
    Blobs,
}

/// A `docker save` archive of `blobs` (layer files, maybe compressed) whose config lists
/// `diff_ids`.
pub fn docker_save(blobs: &[Vec<u8>], diff_ids: &[String], layout: SaveLayout) -> Vec<u8> {
    let config = config_json(diff_ids);
    let cfg_hex = sha256(&config)[7..].to_owned();
    let mut members = Vec::new();
    let mut layer_names = Vec::new();
    for (i, blob) in blobs.iter().enumerate() {
        let name = match layout {
            SaveLayout::Legacy => format!("{:064x}/layer.tar", i + 1),
            SaveLayout::Blobs => format!("blobs/sha256/{}", &sha256(blob)[7..]),
        };
        members.push((name.clone(), blob.clone()));
        layer_names.push(name);
    }
    let cfg_name = match layout {
        SaveLayout::Legacy => format!("{cfg_hex}.json"),
        SaveLayout::Blobs => format!("blobs/sha256/{cfg_hex}"),
    };
    members.push((cfg_name.clone(), config));
    let manifest = serde_json::json!([{
        "Config": cfg_name, "RepoTags": ["test:v1"], "Layers": layer_names,
    }]);
    members.push((
        "manifest.json".into(),
        serde_json::to_vec(&manifest).unwrap(),
    ));
    if layout == SaveLayout::Blobs {
        let (oci, _) = oci_members(blobs, diff_ids);
        for (name, data) in oci {
            if name == "index.json" || name == "oci-layout" {
                members.push((name, data));
            }
        }
    }
    archive(&members)
}

/// The members of an OCI layout for `blobs` (media type picked by magic).
pub fn oci_members(blobs: &[Vec<u8>], diff_ids: &[String]) -> (Vec<(String, Vec<u8>)>, String) {
    let config = config_json(diff_ids);
    let mut members = Vec::new();
    let mut layers = Vec::new();
    for blob in blobs {
        let media = if blob.starts_with(&[0x1f, 0x8b]) {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        } else if blob.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            "application/vnd.oci.image.layer.v1.tar+zstd"
        } else {
            "application/vnd.oci.image.layer.v1.tar"
        };
        let d = sha256(blob);
        layers.push(serde_json::json!({"mediaType": media, "digest": d, "size": blob.len()}));
        members.push((format!("blobs/sha256/{}", &d[7..]), blob.clone()));
    }
    let cd = sha256(&config);
    members.push((format!("blobs/sha256/{}", &cd[7..]), config.clone()));
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": layers,
    }))
    .unwrap();
    let md = sha256(&manifest);
    members.push((format!("blobs/sha256/{}", &md[7..]), manifest.clone()));
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": md, "size": manifest.len(),
            "annotations": {"org.opencontainers.image.ref.name": "v1"},
        }],
    }))
    .unwrap();
    members.push(("index.json".into(), index));
    members.push((
        "oci-layout".into(),
        br#"{"imageLayoutVersion":"1.0.0"}"#.to_vec(),
    ));
    (members, md)
}

/// Writes an OCI layout directory.
pub fn write_oci_dir(dir: &Path, blobs: &[Vec<u8>], diff_ids: &[String]) {
    let (members, _) = oci_members(blobs, diff_ids);
    for (name, data) in members {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, data).unwrap();
    }
}

/// Every path under a root except the lock file, for before/after comparisons. overlay2's
/// `committed` marker is left out: the driver writes it into a parent when a child is created
/// and, as in moby, keeps it when the child goes. So is the metadata store's own `tmp`
/// directory (made on first use; anything left inside it still shows).
pub fn snapshot(root: &Path) -> BTreeSet<PathBuf> {
    walkdir(root)
        .into_iter()
        .filter(|p| {
            !p.ends_with("layerstore.lock")
                && !p.ends_with("committed")
                && !p.ends_with("layerdb/tmp")
        })
        .map(|p| p.strip_prefix(root).unwrap().to_path_buf())
        .collect()
}

fn walkdir(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd {
        let e = e.unwrap();
        let p = e.path();
        out.push(p.clone());
        if e.file_type().unwrap().is_dir() {
            out.extend(walkdir(&p));
        }
    }
    out
}

/// `check` exits 0 and reports ok.
pub fn assert_check_clean(root: &Path, driver: &str) {
    let mut c = ctl(root, driver);
    c.arg("check");
    let out = ok(run(c));
    assert!(out.lines().any(|l| l == "ok"), "{out}");
}

/// The workspace's shared fixtures (`../shared/fixtures`).
pub fn shared_fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/fixtures")
}

/// This machine's architecture in OCI terms.
pub fn oci_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// What the busybox image's command prints.
pub const BUSYBOX_MARKER: &str = "layerctl-marker-42";

/// A runnable two-layer image from Debian's static busybox, as a `docker save` archive
/// tagged `tag`: layer 1 has `/bin/busybox` (and `sh`, `cat` links) and `/etc/removed`;
/// layer 2 whites out `/etc/removed` and adds `/etc/marker`. Its command prints the marker
/// and whether `/etc/removed` is `present` or `absent`. Returns the archive, the config and
/// the two layer tars.
pub fn busybox_image(tag: &str) -> (Vec<u8>, Vec<u8>, Vec<Vec<u8>>) {
    busybox_image_with(tag, Vec::new())
}

/// [`busybox_image`] with `extra` layers on top (each with a history entry of its own).
pub fn busybox_image_with(tag: &str, extra: Vec<Vec<u8>>) -> (Vec<u8>, Vec<u8>, Vec<Vec<u8>>) {
    let busybox = std::fs::read(dockerd::BUSYBOX).expect("read /bin/busybox");
    let mut b = tar::Builder::new(Vec::new());
    let add = |b: &mut tar::Builder<Vec<u8>>,
               kind: tar::EntryType,
               path: &str,
               mode: u32,
               data: &[u8],
               link: &str| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        if kind == tar::EntryType::Symlink {
            b.append_link(&mut h, path, link).unwrap();
        } else {
            b.append_data(&mut h, path, data).unwrap();
        }
    };
    use tar::EntryType::{Directory as D, Regular as F, Symlink as L};
    add(&mut b, D, "bin/", 0o755, b"", "");
    add(&mut b, F, "bin/busybox", 0o755, &busybox, "");
    for name in ["sh", "cat", "echo", "test", "["] {
        add(&mut b, L, &format!("bin/{name}"), 0o777, b"", "busybox");
    }
    add(&mut b, D, "etc/", 0o755, b"", "");
    add(&mut b, F, "etc/removed", 0o644, b"must not show\n", "");
    add(&mut b, D, "tmp/", 0o1777, b"", "");
    let l1 = b.into_inner().unwrap();
    let mut b = tar::Builder::new(Vec::new());
    add(&mut b, D, "etc/", 0o755, b"", "");
    add(&mut b, F, "etc/.wh.removed", 0o644, b"", "");
    add(
        &mut b,
        F,
        "etc/marker",
        0o644,
        format!("{BUSYBOX_MARKER}\n").as_bytes(),
        "",
    );
    let l2 = b.into_inner().unwrap();
    let n_extra = extra.len();
    let mut layers = vec![l1, l2];
    layers.extend(extra);
    let diffs: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let mut history = vec![
        serde_json::json!({"created": "2024-01-01T00:00:00Z", "created_by": "busybox"}),
        serde_json::json!({"created": "2024-01-01T00:00:00Z", "created_by": "marker"}),
    ];
    history.extend(
        (0..n_extra)
            .map(|i| serde_json::json!({"created": "2024-01-01T00:00:00Z", "created_by": format!("extra {i}")})),
    );
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": oci_arch(),
        "os": "linux",
        "created": "2024-01-01T00:00:00Z",
        "config": {
            "Env": ["PATH=/bin"],
            "Cmd": ["/bin/sh", "-c", "cat /etc/marker; if [ -e /etc/removed ]; then echo present; else echo absent; fi"],
        },
        "rootfs": {"type": "layers", "diff_ids": diffs},
        "history": history,
    }))
    .unwrap();
    let cfg = format!("{}.json", &sha256(&config)[7..]);
    let mut members = vec![(cfg.clone(), config.clone())];
    let mut names = Vec::new();
    for l in &layers {
        let name = format!("{}/layer.tar", &sha256(l)[7..]);
        members.push((name.clone(), l.clone()));
        names.push(name);
    }
    members.push((
        "manifest.json".into(),
        serde_json::to_vec(
            &serde_json::json!([{"Config": cfg, "RepoTags": [tag], "Layers": names}]),
        )
        .unwrap(),
    ));
    (archive(&members), config, layers)
}
