//! `cargo xtask demo [--root DIR]`: the README's main job, end to end, on an embedded image.
//!
//! 1. builds a three-layer image in memory (a base; a layer deleting a file and a directory
//!    with `.wh.` whiteouts; a layer making a directory opaque with `.wh..wh..opq`) and
//!    writes it as a `docker save` archive;
//! 2. builds `layerctl` and, with it, loads the archive into a fresh store under `./demo-root`
//!    (wiped first) with the best driver available: overlay2 as root, else vfs (`--driver`
//!    picks one);
//! 3. creates a container layer (with Docker's init layer), mounts it, adds, modifies and
//!    deletes files, and shows `rw changes`;
//! 4. commits it as a new layer, exports every layer and proves each export's sha256 equals
//!    its DiffID, runs `check`;
//! 5. where Debian's dockerd 20.10 is installed (and as root), starts a private daemon on the
//!    same root, which lists the loaded `demo:latest` and runs it (`--pull never`, no
//!    network; busybox bind-mounted from the host); elsewhere it says how. Then it prints a
//!    short report.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail, ensure};
use sha2::{Digest, Sha256};

pub fn run(args: &[String]) -> Result<()> {
    let mut root = PathBuf::from("demo-root");
    let mut driver: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--root" => root = PathBuf::from(it.next().context("--root needs a directory")?),
            "--driver" => driver = Some(it.next().context("--driver needs a name")?.clone()),
            other => bail!(
                "usage: cargo xtask demo [--root DIR] [--driver overlay2|vfs] (unexpected {other:?})"
            ),
        }
    }
    let root = std::path::absolute(&root).context("resolve --root")?;

    let layerctl = build_layerctl()?;
    // Timed from here: the build is cargo's business.
    let started = Instant::now();
    let ctl = Ctl {
        bin: layerctl,
        root: root.clone(),
        driver,
    };
    wipe(&ctl)?;
    std::fs::create_dir_all(&root).with_context(|| format!("create {}", root.display()))?;

    // 1. The image.
    let layers = image_layers()?;
    let diff_ids: Vec<String> = layers.iter().map(|l| sha256(l)).collect();
    let archive = root.join("demo-image.tar");
    std::fs::write(&archive, docker_save(&layers, &diff_ids)?)
        .with_context(|| format!("write {}", archive.display()))?;
    say(&format!(
        "built a {}-layer image ({} bytes of layers) as {}",
        layers.len(),
        layers.iter().map(Vec::len).sum::<usize>(),
        archive.display()
    ));

    // 2. Load it.
    let loaded: serde_json::Value = serde_json::from_str(&ctl.out(&[
        "--json",
        "load",
        archive.to_str().context("archive path")?,
    ])?)?;
    let top = loaded[0]["top_layer"]
        .as_str()
        .context("load reported no top layer")?
        .to_owned();
    let info: serde_json::Value = serde_json::from_str(&ctl.out(&["--json", "info"])?)?;
    let driver_used = info["driver"].as_str().unwrap_or("?").to_owned();
    say(&format!(
        "loaded with driver {driver_used}: top chain {top}"
    ));
    let want_top = chain_ids(&diff_ids).pop().context("no layers")?;
    ensure!(
        top == want_top,
        "top chain {top} is not the one computed from the DiffIDs ({want_top})"
    );

    // 3. A container layer: mount, change, show changes.
    let mount_id = ctl.out(&["rw", "create", "demo", "--parent", &top, "--init"])?;
    say(&format!(
        "created RW layer demo (mount id {})",
        mount_id.trim()
    ));
    let path = PathBuf::from(ctl.out(&["rw", "mount", "demo"])?.trim());
    say(&format!("mounted at {}", path.display()));
    // What the image layers did shows through: whiteouts and the opaque dir.
    ensure!(
        !path.join("etc/old.conf").exists(),
        "whiteout of etc/old.conf not applied"
    );
    ensure!(
        !path.join("var/cache").exists(),
        "whiteout of var/cache not applied"
    );
    ensure!(
        !path.join("srv/www/old.html").exists() && path.join("srv/www/index.html").exists(),
        "opaque srv/www not applied"
    );
    ensure!(
        path.join(".dockerenv").exists(),
        "init layer missing /.dockerenv"
    );
    let edit = || -> std::io::Result<()> {
        std::fs::write(
            path.join("srv/www/new.html"),
            "<p>added in the container</p>\n",
        )?;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(path.join("etc/app.conf"))?;
        f.write_all(b"tuned=yes\n")?;
        std::fs::remove_file(path.join("usr/bin/tool"))?;
        Ok(())
    };
    edit().context("change files in the mounted RW layer")?;
    ctl.out(&["rw", "unmount", "demo"])?;
    let changes = ctl.out(&["rw", "changes", "demo"])?;
    say("rw changes demo:");
    for line in changes.lines() {
        println!("      {line}");
    }
    for want in ["A /srv/www/new.html", "C /etc/app.conf", "D /usr/bin/tool"] {
        ensure!(
            changes.lines().any(|l| l == want),
            "missing change {want:?}"
        );
    }

    // 4. Commit, export every layer, verify, check.
    let committed = ctl.out(&["commit", "demo"])?;
    say(&format!("committed as {}", committed.trim()));
    let ls: serde_json::Value = serde_json::from_str(&ctl.out(&["--json", "ls"])?)?;
    let ls = ls.as_array().context("ls --json is an array")?;
    ensure!(
        ls.len() == layers.len() + 1,
        "want {} layers",
        layers.len() + 1
    );
    say("export of every layer, sha256 against its DiffID:");
    let mut verified = 0;
    for l in ls {
        let chain = l["chain_id"].as_str().context("chain_id")?;
        let diff = l["diff_id"].as_str().context("diff_id")?;
        let tar = ctl.bytes(&["export", chain])?;
        let got = sha256(&tar);
        ensure!(
            got == diff,
            "export of {chain} hashes to {got}, DiffID is {diff}"
        );
        println!(
            "      {}  {:>6} bytes  sha256 = DiffID {}  ok",
            short(chain),
            tar.len(),
            short(diff)
        );
        verified += 1;
    }
    let check = ctl.out(&["check"])?;
    say(&format!(
        "check: {}",
        check.lines().collect::<Vec<_>>().join("; ")
    ));

    // 5. The loaded image under Docker's own daemon (Debian's docker.io 20.10), when it is
    // here: listed with layerctl's ID and run, with busybox from the host bind-mounted in
    // (the demo image has files, no programs).
    let docker = run_under_dockerd(&root, &driver_used)?;

    println!();
    println!("demo report");
    println!("  root        {}", root.display());
    println!("  driver      {driver_used}");
    // Counted from what the steps above showed, not restated.
    let kinds = |k: char| changes.lines().filter(|l| l.starts_with(k)).count();
    println!(
        "  layers      {} loaded + {} committed; {verified} of {} exports hash to their DiffID",
        layers.len(),
        ls.len() - layers.len(),
        ls.len()
    );
    println!(
        "  container   {} changes seen by rw changes ({} added, {} changed, {} deleted), committed as {}",
        changes.lines().count(),
        kinds('A'),
        kinds('C'),
        kinds('D'),
        short(committed.trim())
    );
    println!(
        "  check       {}",
        check.lines().last().unwrap_or("(no output)")
    );
    println!("  dockerd     {docker}");
    println!("  time        {:.2} s", started.elapsed().as_secs_f64());
    Ok(())
}

/// Starts a private dockerd on the demo root, lists and runs `demo:latest`; says how to do
/// it by hand where dockerd (or busybox, or root) is missing. Returns a line for the report.
fn run_under_dockerd(root: &std::path::Path, driver: &str) -> Result<String> {
    let how = format!(
        "with the root's layerctl done: dockerd --data-root {} --storage-driver {driver} --bridge=none --iptables=false, \
         then docker run --rm --pull never --network none -v /bin/busybox:/busybox:ro --entrypoint /busybox demo:latest cat /srv/www/index.html",
        root.display()
    );
    let missing = testkit::dockerd::missing().or_else(|| {
        (!std::path::Path::new("/bin/busybox").exists())
            .then(|| "/bin/busybox missing (apt-get install busybox-static)".to_owned())
    });
    if let Some(why) = missing {
        say(&format!("dockerd step skipped: {why}"));
        say(&format!("to run the image under Docker: {how}"));
        return Ok(format!("skipped ({why})"));
    }
    let state = std::env::temp_dir().join(format!("layerctl-demo-dockerd-{}", std::process::id()));
    let d =
        testkit::dockerd::Dockerd::try_start(&state, root, driver).map_err(anyhow::Error::msg)?;
    let result = (|| -> Result<String> {
        let listed = d
            .out(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"])
            .map_err(anyhow::Error::msg)?;
        say(&format!("dockerd lists: {}", listed.trim()));
        ensure!(
            listed.lines().any(|l| l.starts_with("demo:latest ")),
            "dockerd does not list demo:latest"
        );
        let ran = d.out(&[
            "run",
            "--rm",
            "--pull",
            "never",
            "--network",
            "none",
            "-v",
            "/bin/busybox:/busybox:ro",
            "--entrypoint",
            "/busybox",
            "demo:latest",
            "sh",
            "-c",
            "cat /srv/www/index.html; test -e /etc/old.conf && echo 'etc/old.conf is back' || echo 'etc/old.conf: whited out'",
        ]).map_err(anyhow::Error::msg)?;
        say("docker run --pull never --network none demo:latest (busybox bind-mounted):");
        for line in ran.lines() {
            println!("      {line}");
        }
        ensure!(
            ran.contains("whited out"),
            "the whiteout does not hold under dockerd"
        );
        Ok("listed demo:latest and ran it (private daemon, no network, no registry)".into())
    })();
    d.stop();
    let _ = std::fs::remove_dir_all(&state);
    result
}

fn say(msg: &str) {
    println!("demo: {msg}");
}

fn short(id: &str) -> &str {
    &id[..id.len().min(19)]
}

/// `layerctl` on the demo root.
struct Ctl {
    bin: PathBuf,
    root: PathBuf,
    /// `None`: layerctl picks (overlay2 where it works, else vfs).
    driver: Option<String>,
}

impl Ctl {
    fn bytes(&self, args: &[&str]) -> Result<Vec<u8>> {
        let mut cmd = Command::new(&self.bin);
        cmd.env_remove("LAYERCTL_ROOT")
            .arg("--root")
            .arg(&self.root);
        if let Some(d) = &self.driver {
            cmd.args(["--driver", d]);
        }
        let out = cmd
            .args(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("run {}", self.bin.display()))?;
        if !out.status.success() {
            bail!(
                "layerctl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(out.stdout)
    }

    fn out(&self, args: &[&str]) -> Result<String> {
        Ok(String::from_utf8(self.bytes(args)?)?)
    }
}

/// Builds `layerctl` and returns the path cargo reports for it (whatever the target dir).
fn build_layerctl() -> Result<PathBuf> {
    let out = crate::cargo()
        .args([
            "build",
            "-p",
            "layerstore-cli",
            "--bin",
            "layerctl",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(Stdio::inherit())
        .output()
        .context("run cargo build -p layerstore-cli")?;
    if !out.status.success() {
        bail!("cargo build -p layerstore-cli failed");
    }
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact"
            && msg["target"]["name"] == "layerctl"
            && let Some(exe) = msg["executable"].as_str()
        {
            return Ok(PathBuf::from(exe));
        }
    }
    bail!("cargo did not report the layerctl executable")
}

/// Empties the demo root: RW layers are removed through layerctl first (an overlay2 mount
/// left by an earlier run must be unmounted before the files can go). Refuses a directory
/// that does not look like a layerctl root.
fn wipe(ctl: &Ctl) -> Result<()> {
    let root = &ctl.root;
    if !root.exists() {
        return Ok(());
    }
    let looks_like_root = root.join("layerstore.lock").exists() || root.join("image").is_dir();
    let empty = std::fs::read_dir(root)
        .map(|mut d| d.next().is_none())
        .unwrap_or(false);
    if !looks_like_root && !empty {
        bail!(
            "{} exists and is not a layerctl root; not wiping it",
            root.display()
        );
    }
    if looks_like_root && let Ok(list) = ctl.out(&["--json", "rw", "ls"]) {
        let list: serde_json::Value = serde_json::from_str(&list)?;
        for m in list.as_array().into_iter().flatten() {
            if let Some(name) = m["name"].as_str() {
                ctl.out(&["rw", "rm", name])?;
            }
        }
    }
    std::fs::remove_dir_all(root).with_context(|| format!("wipe {}", root.display()))
}

fn sha256(data: &[u8]) -> String {
    let mut s = String::from("sha256:");
    for b in Sha256::digest(data) {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn chain_ids(diff_ids: &[String]) -> Vec<String> {
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

/// A tar member for the demo image.
enum Entry {
    Dir(&'static str),
    File(&'static str, u32, &'static [u8]),
    Symlink(&'static str, &'static str),
}

fn layer(entries: &[Entry]) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_ustar();
        h.set_mtime(1_700_000_000);
        h.set_uid(0);
        h.set_gid(0);
        match e {
            Entry::Dir(p) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(0o755);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..])?;
            }
            Entry::File(p, mode, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data)?;
            }
            Entry::Symlink(p, target) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, target)?;
            }
        }
    }
    Ok(b.into_inner()?)
}

/// The embedded image: base, whiteouts, opaque directory.
fn image_layers() -> Result<Vec<Vec<u8>>> {
    use Entry::*;
    Ok(vec![
        layer(&[
            Dir("etc/"),
            File("etc/app.conf", 0o644, b"name=demo\n"),
            File("etc/old.conf", 0o644, b"obsolete=1\n"),
            Symlink("etc/app.link", "app.conf"),
            Dir("usr/"),
            Dir("usr/bin/"),
            File("usr/bin/tool", 0o755, b"#!/bin/sh\necho tool\n"),
            Dir("srv/"),
            Dir("srv/www/"),
            File("srv/www/old.html", 0o644, b"<p>old site</p>\n"),
            Dir("var/"),
            Dir("var/cache/"),
            File("var/cache/blob", 0o644, &[0x5a; 4096]),
        ])?,
        // Deletes a file and a whole directory, changes one file.
        layer(&[
            Dir("etc/"),
            File("etc/.wh.old.conf", 0o644, b""),
            File("etc/app.conf", 0o644, b"name=demo\nversion=2\n"),
            Dir("var/"),
            File("var/.wh.cache", 0o644, b""),
        ])?,
        // Replaces srv/www wholesale: nothing below shows through.
        layer(&[
            Dir("srv/"),
            Dir("srv/www/"),
            File("srv/www/.wh..wh..opq", 0o644, b""),
            File("srv/www/index.html", 0o644, b"<p>new site</p>\n"),
        ])?,
    ])
}

/// A `docker save` archive (manifest.json, config, `<n>/layer.tar`).
fn docker_save(layers: &[Vec<u8>], diff_ids: &[String]) -> Result<Vec<u8>> {
    let config = serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {"Cmd": ["/usr/bin/tool"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))?;
    let config_name = format!("{}.json", &sha256(&config)[7..]);
    let mut members: Vec<(String, Vec<u8>)> = Vec::new();
    let mut names = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let name = format!("{}/layer.tar", &diff_ids[i][7..]);
        members.push((name.clone(), l.clone()));
        names.push(name);
    }
    members.push((config_name.clone(), config));
    members.push((
        "manifest.json".into(),
        serde_json::to_vec(&serde_json::json!([{
            "Config": config_name, "RepoTags": ["demo:latest"], "Layers": names,
        }]))?,
    ));
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in members {
        let mut h = tar::Header::new_ustar();
        h.set_mode(0o644);
        h.set_mtime(1_700_000_000);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, &data[..])?;
    }
    Ok(b.into_inner()?)
}
