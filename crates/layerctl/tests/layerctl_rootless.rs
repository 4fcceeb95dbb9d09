//! Rootless `layerctl`: run as unprivileged users the tests create (root creates them and
//! deletes them). With subordinate IDs the default driver is overlay2 in layerctl's own user
//! namespace; without, a single-ID namespace keeps owners in xattrs and tar-split; with too
//! few, a layer that needs more is refused as rootless Docker refuses it. The peer for
//! rootless overlay is containers/storage (rootless Podman's store), run in the same namespace.

use std::path::{Path, PathBuf};
use std::process::Command;

use testkit::digest::sha256;
use testkit::image::*;
use testkit::layerctl::*;
use testkit::testuser::{TestUser, can_create_users};

/// The Docker fixture's chain (l1, l2, l3) and the commit layer on top, as `docker save`.
const FIXTURE_IMAGE: &str = "docker-root/saved-committed.tar.gz";
const CHAIN: [&str; 3] = [
    "sha256:0c0c732fecfde8fe022171a4178c157432c24ca0bf5fa99e42c51e6ffcce3bba",
    "sha256:5543758fe7a4c752a0e73eb3082271bcddb3d99a8a4f90e46c46635d2a888c34",
    "sha256:e8926eb50b2368bbff0760f545fec1c0ff58fa5484644ce6c1309f2ed6e474b4",
];
const L3_DIFF_ID: &str = "sha256:7f514e461dadbea3c700cab36992a8e1a837ac6d0b584e6debf67894d99238e1";

struct Rootless {
    user: TestUser,
    bin: PathBuf,
    root: PathBuf,
}

impl Rootless {
    fn new(prefix: &str, subids: Option<u32>) -> Rootless {
        let user = TestUser::create(prefix, subids);
        let bin = user.copy_in(Path::new(env!("CARGO_BIN_EXE_layerctl")));
        let root = user.home.join("store");
        Rootless { user, bin, root }
    }

    /// `layerctl --root <store> ARGS` as the user.
    fn ctl(&self, args: &[&str]) -> Command {
        let mut c = self.user.command(&self.bin);
        c.arg("--root").arg(&self.root).args(args);
        c
    }

    /// A shell script as the user inside `layerctl unshare`, `$L` being layerctl.
    fn unshare_sh(&self, script: &str) -> Command {
        let mut c = self.ctl(&["unshare", "--", "sh", "-ec", script]);
        c.env("L", &self.bin);
        c
    }
}

fn owned_layer() -> Vec<u8> {
    owned_entries().build()
}

/// [`owned_layer`]'s entries, for a test to add more.
fn owned_entries() -> testkit::tar::Tar {
    testkit::tar::Tar::new()
        .mtime(1_700_000_000)
        .dir("etc/")
        .file("etc/passwd", b"root:x:0:0::/:/bin/sh\n")
        .owner(1000, 1000)
        .dir("home/u/")
        .file("home/u/f", b"user's\n")
        .owner(65534, 65534)
        .file("nobody", b"n\n")
}

fn owner(p: &Path) -> (u32, u32) {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.uid(), m.gid())
}

/// `(path, uid, gid, body)` of a tar's entries.
fn entries(tar: &[u8]) -> Vec<(String, u64, u64, Vec<u8>)> {
    let mut out = Vec::new();
    for e in tar::Archive::new(tar).entries().unwrap() {
        let mut e = e.unwrap();
        let mut body = Vec::new();
        std::io::Read::read_to_end(&mut e, &mut body).unwrap();
        let h = e.header();
        out.push((
            String::from_utf8_lossy(&e.path_bytes()).into_owned(),
            h.uid().unwrap(),
            h.gid().unwrap(),
            body,
        ));
    }
    out
}

fn warnings(out: &std::process::Output) -> usize {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with("warning: rootless"))
        .count()
}

#[test]
fn rootless_overlay2_loads_dockers_chain_and_runs_the_rw_cycle() {
    if !can_create_users("rootless_overlay2_loads_dockers_chain") {
        return;
    }
    let r = Rootless::new("lsrl", Some(65536));
    let image = r
        .user
        .copy_in(&testkit::gate::fixtures_dir().join(FIXTURE_IMAGE));
    let out = ok(run(r.ctl(&["load", image.to_str().unwrap()])));
    assert!(out.contains("Loaded image"), "{out}");

    // Docker's chain IDs, overlay2 as the default driver, no warning.
    let ls = json(run(r.ctl(&["--json", "ls"])));
    for chain in CHAIN {
        assert!(
            ls.as_array()
                .unwrap()
                .iter()
                .any(|l| l["chain_id"] == chain),
            "{chain} missing: {ls}"
        );
    }
    let info = run(r.ctl(&["info"]));
    assert_eq!(
        warnings(&info),
        0,
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    let info = ok(info);
    assert!(
        info.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Driver", "overlay2"]),
        "{info}"
    );
    assert!(
        info.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["userxattr", "true"]),
        "{info}"
    );
    // The store's files belong to the user (container root) on the host.
    assert_eq!(owner(&r.root.join("overlay2")), (r.user.uid, r.user.gid));

    // The layer exports to its DiffID.
    let out = run(r.ctl(&["export", CHAIN[2]]));
    assert!(out.status.success());
    assert_eq!(sha256(&out.stdout), L3_DIFF_ID);

    // An RW layer: `rw mount` outside `unshare` says where to run it.
    ok(run(r.ctl(&[
        "rw", "create", "c1", "--parent", CHAIN[2], "--init",
    ])));
    let line = fails(run(r.ctl(&["rw", "mount", "c1"])));
    assert!(line.contains("layerctl unshare"), "{line}");
    // unshare: root of the namespace, LAYERCTL_ROOT the store, the command's exit status.
    let out = run(r.ctl(&[
        "unshare",
        "--",
        "sh",
        "-c",
        r#"test "$(id -u):$(id -g)" = 0:0 && test "$LAYERCTL_ROOT" = "$1" && exit 3"#,
        "sh",
        r.root.to_str().unwrap(),
    ]));
    assert_eq!(
        out.status.code(),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = fails(run(r.ctl(&["unshare", "--", "/no/such/command"])));
    assert!(line.contains("/no/such/command"), "{line}");
    // Inside: the printed path is usable; a new file, a changed one, a deleted one.
    ok(run(r.unshare_sh(
        r#"p=$("$L" rw mount c1)
           test "$(stat -c %u:%g "$p")" = 0:0
           echo hello > "$p/new"
           chown 1000:1000 "$p/new"
           echo more >> "$p/etc/a.conf"
           rm "$p/etc/d.conf"
           "$L" rw unmount c1"#,
    )));
    let changes = ok(run(r.ctl(&["rw", "changes", "c1"])));
    for want in ["A /new", "C /etc/a.conf", "D /etc/d.conf"] {
        assert!(changes.lines().any(|l| l == want), "{want}: {changes}");
    }
    let diff = run(r.ctl(&["rw", "diff", "c1"]));
    assert!(diff.status.success());
    let committed = ok(run(r.ctl(&["commit", "c1"])));
    let out = run(r.ctl(&["export", committed.trim()]));
    assert!(out.status.success());
    assert_eq!(out.stdout, diff.stdout, "rw diff vs the commit's export");
    let tar = entries(&out.stdout);
    let new = tar
        .iter()
        .find(|e| e.0 == "new")
        .expect("the commit holds /new");
    assert_eq!(
        (new.1, new.2, new.3.as_slice()),
        (1000, 1000, &b"hello\n"[..])
    );
    assert!(tar.iter().any(|e| e.0 == "etc/.wh.d.conf"), "{tar:?}");
    // On the host, the container's 1000 is the user's subordinate ID 999 after its start.
    let sub = r.user.subid_start.unwrap();
    let cache = json(run(r.ctl(&["--json", "ls"])))
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["chain_id"] == committed.trim())
        .unwrap()["cache_id"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        owner(&r.root.join("overlay2").join(&cache).join("diff/new")),
        (sub + 999, sub + 999)
    );
    let check = ok(run(r.ctl(&["check"])));
    assert!(check.lines().any(|l| l == "ok"), "{check}");

    // Owners 0, 1000 and 65534 through the namespace, export byte-identical.
    let input = owned_layer();
    let chain = ok(run_with_stdin(r.ctl(&["import", "-"]), &input));
    let out = run(r.ctl(&["export", chain.trim()]));
    assert_eq!(out.stdout, input);
    let cache = json(run(r.ctl(&["--json", "ls"])))
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["chain_id"] == chain.trim())
        .unwrap()["cache_id"]
        .as_str()
        .unwrap()
        .to_string();
    let diff = r.root.join("overlay2").join(cache).join("diff");
    assert_eq!(owner(&diff.join("etc/passwd")), (r.user.uid, r.user.gid));
    assert_eq!(owner(&diff.join("home/u/f")), (sub + 999, sub + 999));
    assert_eq!(owner(&diff.join("nobody")), (sub + 65533, sub + 65533));

    // Whiteouts and an opaque directory, as rootless overlay keeps them: char 0/0 devices,
    // user.overlay.opaque (trusted.* is root's); a mount in unshare honours both.
    let mut parent: Option<String> = None;
    let mut caches = Vec::new();
    for layer in three_layers() {
        let mut args = vec!["import", "-"];
        if let Some(p) = &parent {
            args.extend(["--parent", p.as_str()]);
        }
        let chain = ok(run_with_stdin(r.ctl(&args), &layer)).trim().to_string();
        let out = run(r.ctl(&["export", &chain]));
        assert_eq!(out.stdout, layer, "byte-identical export");
        caches.push(
            json(run(r.ctl(&["--json", "ls"])))
                .as_array()
                .unwrap()
                .iter()
                .find(|l| l["chain_id"] == chain.as_str())
                .unwrap()["cache_id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
        parent = Some(chain);
    }
    let diff = |i: usize| r.root.join("overlay2").join(&caches[i]).join("diff");
    {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let wh = std::fs::symlink_metadata(diff(1).join("etc/b.conf")).unwrap();
        assert!(wh.file_type().is_char_device() && wh.rdev() == 0);
        assert_eq!((wh.uid(), wh.gid()), (r.user.uid, r.user.gid));
    }
    let xattr = |name: &str| {
        let mut buf = [0u8; 8];
        rustix::fs::lgetxattr(diff(2).join("opt/app"), name, &mut buf)
            .ok()
            .map(|n| buf[..n].to_vec())
    };
    assert_eq!(xattr("user.overlay.opaque").as_deref(), Some(&b"y"[..]));
    assert_eq!(xattr("trusted.overlay.opaque"), None);
    ok(run(r.ctl(&[
        "rw",
        "create",
        "c2",
        "--parent",
        parent.as_deref().unwrap(),
    ])));
    let seen = ok(run(r.unshare_sh(
        r#"p=$("$L" rw mount c2)
           (cd "$p" && ls -A etc opt/app)
           "$L" rw unmount c2"#,
    )));
    assert_eq!(seen, "etc:\na.conf\na.hard\na.link\n\nopt/app:\nfresh\n");
    ok(run(r.ctl(&["rw", "rm", "c2"])));

    // Everything else works without unshare, images included.
    let images = ok(run(r.ctl(&["images"])));
    assert!(images.contains("peerchain"), "{images}");
    let saved = r.user.home.join("saved.tar");
    ok(run(r.ctl(&[
        "save",
        "peerchain:committed",
        "-o",
        saved.to_str().unwrap(),
    ])));
    let mut second = r.user.command(&r.bin);
    second
        .arg("--root")
        .arg(r.user.home.join("store2"))
        .args(["load", saved.to_str().unwrap()]);
    let out = ok(run(second));
    assert!(out.contains("peerchain:committed"), "{out}");
    let out = ok(run(r.ctl(&["rmi", "peerchain:committed"])));
    assert!(out.contains("Untagged: peerchain:committed"), "{out}");
    ok(run(r.ctl(&["rw", "rm", "c1"])));
    ok(run(r.ctl(&["gc"])));
    let check = ok(run(r.ctl(&["check"])));
    assert!(check.lines().any(|l| l == "ok"), "{check}");
    // --userns-remap is root's.
    let line = fails(run(r.ctl(&["--userns-remap", "default", "ls"])));
    assert!(line.contains("--userns-remap needs root"), "{line}");
}

#[test]
fn rootless_without_subordinate_ids_keeps_owners_and_warns_once() {
    if !can_create_users("rootless_without_subordinate_ids") {
        return;
    }
    let r = Rootless::new("lsrs", None);
    let input = owned_layer();
    let out = run_with_stdin(r.ctl(&["import", "-"]), &input);
    assert_eq!(
        warnings(&out),
        1,
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no subordinate IDs"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let chain = ok(out);
    let chain = chain.trim();
    let out = run(r.ctl(&["export", chain]));
    assert_eq!(out.stdout, input, "byte-identical export");
    let info = ok(run(r.ctl(&["info"])));
    assert!(
        info.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Driver", "overlay2"]),
        "{info}"
    );

    // A container changes the user's file (a copy-up) and adds one as root: the commit keeps
    // 1000 for the first (recorded), 0 for the second.
    ok(run(r.ctl(&["rw", "create", "c1", "--parent", chain])));
    ok(run(r.unshare_sh(
        r#"p=$("$L" rw mount c1)
           echo more >> "$p/home/u/f"
           echo r > "$p/rootfile"
           "$L" rw unmount c1"#,
    )));
    let committed = ok(run(r.ctl(&["commit", "c1"])));
    let out = run(r.ctl(&["export", committed.trim()]));
    let tar = entries(&out.stdout);
    let get = |n: &str| {
        tar.iter()
            .find(|e| e.0 == n)
            .unwrap_or_else(|| panic!("{n}: {tar:?}"))
    };
    assert_eq!((get("home/u/f").1, get("home/u/f").2), (1000, 1000));
    assert_eq!((get("home/u/").1, get("home/u/").2), (1000, 1000));
    assert_eq!((get("rootfile").1, get("rootfile").2), (0, 0));
    let check = ok(run(r.ctl(&["check"])));
    assert!(check.lines().any(|l| l == "ok"), "{check}");
}

#[test]
fn rootless_ranges_too_small_for_a_layer_refuse_it_and_keep_nothing() {
    if !can_create_users("rootless_ranges_too_small") {
        return;
    }
    let r = Rootless::new("lsrt", Some(1000));
    ok(run(r.ctl(&["info"])));
    let before = snapshot(&r.root);
    let line = fails(run_with_stdin(r.ctl(&["import", "-"]), &owned_layer()));
    // Rootless Docker's behaviour: the chown fails (EINVAL), the layer is refused.
    assert!(
        line.contains("\"nobody\"")
            && line.contains("chown 65534:65534")
            && line.contains("not mapped in this user namespace"),
        "{line}"
    );
    assert_eq!(snapshot(&r.root), before, "nothing half-written");
    let check = ok(run(r.ctl(&["check"])));
    assert!(check.lines().any(|l| l == "ok"), "{check}");
}

/// Unmounts (lazily) on drop, also when an assertion failed.
struct Unmount(PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn rootless_falls_back_to_vfs_where_overlay_cannot_work_and_says_why_once() {
    use std::os::unix::fs::PermissionsExt;
    if !can_create_users("rootless_falls_back_to_vfs") {
        return;
    }
    // overlayfs cannot stack on overlayfs: a store root on an overlay mount is such a place.
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    for d in ["lower", "upper", "work", "merged"] {
        std::fs::create_dir(dir.path().join(d)).unwrap();
    }
    let mut r = Rootless::new("lsfb", Some(65536));
    let merged = dir.path().join("merged");
    let opts = format!(
        "lowerdir={},upperdir={},workdir={}",
        dir.path().join("lower").display(),
        dir.path().join("upper").display(),
        dir.path().join("work").display()
    );
    let mounted = Command::new("mount")
        .args(["-t", "overlay", "overlay", "-o", &opts])
        .arg(&merged)
        .status()
        .unwrap();
    if !mounted.success() {
        let _ = testkit::gate::skip(
            testkit::gate::Reason::NoOverlay,
            "cannot mount an overlayfs here",
        );
        return;
    }
    let _unmount = Unmount(merged.clone());
    std::os::unix::fs::chown(&merged, Some(r.user.uid), Some(r.user.gid)).unwrap();
    r.root = merged.join("store");

    // The first command says why, once, and the store is vfs from then on, silently.
    let input = owned_layer();
    let out = run_with_stdin(r.ctl(&["import", "-"]), &input);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let why: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("warning: rootless: overlay2 is not usable here"))
        .collect();
    assert_eq!(why.len(), 1, "{stderr}");
    assert!(
        why[0].contains("not supported over overlayfs") && why[0].ends_with("using vfs"),
        "{stderr}"
    );
    assert_eq!(warnings(&out), 1, "{stderr}");
    let chain = ok(out);
    let chain = chain.trim();
    assert!(
        !r.root.join("overlay2").exists(),
        "the failed driver's home is gone"
    );
    let info = run(r.ctl(&["info"]));
    assert_eq!(
        warnings(&info),
        0,
        "{}",
        String::from_utf8_lossy(&info.stderr)
    );
    let info = ok(info);
    assert!(
        info.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["Driver", "vfs"]),
        "{info}"
    );
    // Owners are set through the namespace on vfs too, and the export is the input.
    let out = run(r.ctl(&["export", chain]));
    assert!(out.status.success());
    assert_eq!(out.stdout, input, "byte-identical export");
    assert_eq!(warnings(&out), 0);
    let cache = json(run(r.ctl(&["--json", "ls"])))
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["chain_id"] == chain)
        .unwrap()["cache_id"]
        .as_str()
        .unwrap()
        .to_string();
    let sub = r.user.subid_start.unwrap();
    let files = r.root.join("vfs/dir").join(cache);
    assert_eq!(owner(&files.join("home/u/f")), (sub + 999, sub + 999));
    // The RW cycle on vfs in unshare.
    ok(run(r.ctl(&["rw", "create", "c1", "--parent", chain])));
    ok(run(r.unshare_sh(
        r#"p=$("$L" rw mount c1)
           echo hello > "$p/new"
           "$L" rw unmount c1"#,
    )));
    let changes = ok(run(r.ctl(&["rw", "changes", "c1"])));
    assert!(changes.lines().any(|l| l == "A /new"), "{changes}");
    ok(run(r.ctl(&["rw", "rm", "c1"])));
    let check = ok(run(r.ctl(&["check"])));
    assert!(check.lines().any(|l| l == "ok"), "{check}");
}

/// `(kind, uid, gid, mode, rdev, user.* xattrs)` of every path under `dir` ("" for itself).
fn tree_with_xattrs(dir: &Path) -> std::collections::BTreeMap<String, String> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let mut out = std::collections::BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let t = m.file_type();
        let kind = match () {
            _ if t.is_dir() => "dir",
            _ if t.is_symlink() => "symlink",
            _ if t.is_char_device() => "char",
            _ if t.is_file() => "file",
            _ => "other",
        };
        let mut names = vec![0u8; 4096];
        let n = rustix::fs::llistxattr(&p, &mut names).unwrap_or(0);
        let mut xattrs = Vec::new();
        for name in names[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
            let name = String::from_utf8_lossy(name).into_owned();
            let mut value = vec![0u8; 256];
            let len = rustix::fs::lgetxattr(&p, name.as_str(), &mut value).unwrap_or(0);
            xattrs.push(format!("{name}={}", String::from_utf8_lossy(&value[..len])));
        }
        xattrs.sort();
        let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
        out.insert(
            rel,
            format!(
                "{kind} {}:{} {:o} rdev {} {}",
                m.uid(),
                m.gid(),
                m.mode() & 0o7777,
                m.rdev(),
                xattrs.join(",")
            ),
        );
        if t.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
        }
    }
    out
}

/// The peer for rootless overlay: containers/storage (rootless Podman's store), run by the
/// same user inside `layerctl unshare` (so with the same ID map; `_CONTAINERS_USERNS_CONFIGURED`
/// tells it that it is rootless, as podman unshare does), applies the same layer. Every file
/// has the same kind, host owner, mode, device number and `user.*` xattrs in both (whiteouts
/// 0/0, `user.overlay.opaque`), and both export the input byte for byte. One documented
/// difference: a layer root the tar does not name is 0555 in containers/storage and 0755 in
/// moby and here (Docker's layout is the one we keep).
#[test]
fn rootless_overlay2_applies_as_rootless_containers_storage_does() {
    const CS: &str = "/usr/bin/containers-storage";
    if !can_create_users("rootless_overlay2_applies_as_rootless_containers_storage_does") {
        return;
    }
    if !Path::new(CS).exists() {
        let _ = testkit::gate::skip(
            testkit::gate::Reason::NoTool("containers-storage".into()),
            format!("{CS} missing (Debian: containers-storage)"),
        );
        return;
    }
    let r = Rootless::new("lscs", Some(65536));
    // A whiteout and an opaque dir too.
    let layer = owned_entries()
        .owner(0, 0)
        .dir("opq/")
        .opaque("opq/")
        .whiteout("gone")
        .build();
    let input = r.user.home.join("l.tar");
    std::fs::write(&input, &layer).unwrap();
    std::os::unix::fs::chown(&input, Some(r.user.uid), Some(r.user.gid)).unwrap();

    let chain = ok(run(r.ctl(&["import", input.to_str().unwrap()])));
    let chain = chain.trim();
    let out = run(r.ctl(&["export", chain]));
    assert_eq!(out.stdout, layer, "our export");
    let cs = r.user.home.join("cs");
    let theirs_tar = r.user.home.join("cs-out.tar");
    let script = format!(
        r#"CS="{CS} -g {g}/graph -R {g}/run -s overlay"
           $CS import-layer -f "{input}" --id L1 >/dev/null
           $CS diff -u -f "{out}" L1
           $CS shutdown >/dev/null"#,
        g = cs.display(),
        input = input.display(),
        out = theirs_tar.display(),
    );
    let mut c = r.unshare_sh(&script);
    c.env("_CONTAINERS_USERNS_CONFIGURED", "done");
    ok(run(c));
    assert_eq!(
        std::fs::read(&theirs_tar).unwrap(),
        layer,
        "containers/storage's export"
    );

    let cache = json(run(r.ctl(&["--json", "ls"])))
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["chain_id"] == chain)
        .unwrap()["cache_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut ours = tree_with_xattrs(&r.root.join("overlay2").join(cache).join("diff"));
    let mut theirs = tree_with_xattrs(&cs.join("graph/overlay/L1/diff"));
    let (our_root, their_root) = (ours.remove("").unwrap(), theirs.remove("").unwrap());
    assert_eq!(
        ours, theirs,
        "rootless overlay: ours vs containers/storage's"
    );
    let uid = format!("{}:{}", r.user.uid, r.user.gid);
    assert_eq!(our_root, format!("dir {uid} 755 rdev 0 "));
    assert_eq!(their_root, format!("dir {uid} 555 rdev 0 "));
    // Sanity: the comparison saw what it is about.
    let sub = r.user.subid_start.unwrap();
    assert!(
        ours["nobody"].starts_with(&format!("file {0}:{0} 644", sub + 65533)),
        "{ours:?}"
    );
    assert!(ours["gone"].starts_with("char"));
    assert!(ours["opq"].contains("user.overlay.opaque=y"));
}
