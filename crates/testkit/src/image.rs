//! Image inputs for `layerctl load`, built in memory: layer tars, `docker save` archives
//! (both layouts), OCI layouts, and a runnable busybox image.

use std::io::Write;
use std::path::Path;

use crate::digest::sha256;
use crate::tar::archive;

/// One entry of a layer tar.
#[derive(Debug, Clone)]
pub enum E {
    /// A directory (name ends in `/`).
    Dir(&'static str),
    /// A regular file and its content.
    File(&'static str, &'static [u8]),
    /// A symbolic link and its target.
    Symlink(&'static str, &'static str),
    /// A hard link and the earlier entry it names.
    Hardlink(&'static str, &'static str),
}

/// A deterministic layer tar (ustar, owner 0:0, fixed mtime), through testkit's builder
/// (which writes `..` names raw, as the breakout tests need).
pub fn layer_tar(entries: &[E]) -> Vec<u8> {
    let mut t = crate::tar::Tar::new();
    for e in entries {
        t = match e {
            E::Dir(p) => t.dir(p),
            E::File(p, data) => t.file(p, data),
            E::Symlink(p, target) => t.symlink(p, target),
            E::Hardlink(p, target) => t.hardlink(p, target),
        };
    }
    t.build()
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

/// `data` gzipped (fast level).
pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// `data` zstd-compressed (level 1).
pub fn zstd(data: &[u8]) -> Vec<u8> {
    zstd::stream::encode_all(data, 1).unwrap()
}

/// A minimal image config (amd64, linux) whose rootfs lists `diff_ids`.
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
    let busybox = std::fs::read(crate::dockerd::BUSYBOX).expect("read /bin/busybox");
    let mut t = crate::tar::Tar::new()
        .dir("bin/")
        .file_mode("bin/busybox", &busybox, 0o755);
    for name in ["sh", "cat", "echo", "test", "["] {
        t = t.symlink(&format!("bin/{name}"), "busybox");
    }
    let l1 = t
        .dir("etc/")
        .file("etc/removed", b"must not show\n")
        .entry(tar::EntryType::Directory, "tmp/", "", 0o1777, b"")
        .build();
    let l2 = crate::tar::Tar::new()
        .dir("etc/")
        .whiteout("etc/removed")
        .file("etc/marker", format!("{BUSYBOX_MARKER}\n").as_bytes())
        .build();
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
