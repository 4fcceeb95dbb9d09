//! Hostile input, end to end: every applicable row of `shared/docs/anchors.md` §5 and the
//! resource bombs, fed to the real `layerctl` binary (`import`, `load`, `rw create --init`),
//! and the image metadata `load` writes (tags, config names and sizes).
//!
//! Each case runs in its own sandbox `<base>/{root, victim/hello, sentinel, root-evil/secret}`
//! on every driver available (vfs always, overlay2 as root) and checks:
//!
//! * bounded: the child is killed (and the case fails) past a time limit, and its peak RSS
//!   (`VmHWM`, polled from `/proc/<pid>/status`) stays under a cap far below the input's
//!   expanded size;
//! * outcome: a clear error naming the cause (the words the case expects), or success where
//!   the input is valid but awkward; never a panic (exit status 101) or a signal;
//! * zero escapes: everything outside the root (sentinel, victim, `root-evil`) is unchanged,
//!   and nothing new appeared beside the root;
//! * `layerctl check` (full content verification) is clean afterwards, so a refused input
//!   left nothing half-done.
//!
//! `cargo test --workspace` builds `layerctl` next to this test (`target/<profile>/layerctl`);
//! `LAYERCTL_BIN` overrides it (a release build makes the big variants quick).
//! `LAYERCTL_HOSTILE_BIG=1` scales the bombs up to the issue's sizes (8 GiB of zero blocks,
//! 100 MB PAX header, 1M sparse regions, 2 GiB manifest.json, 1M entries, 20k-deep tree).
//!
//! `LAYERCTL_HOSTILE_USERNS=remap` runs every case on a remapped store (`--userns-remap`, a
//! user with 65536 subordinate IDs made per sandbox); `=rootless` runs `layerctl` as such a
//! user (overlay2 in its user namespace), the sandbox around the root owned by that user so
//! that an escape would have the rights to write there. Both need root (to make the users).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use testkit::testuser::TestUser;

/// How `layerctl` runs (`LAYERCTL_HOSTILE_USERNS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Userns {
    /// As the test runs (root in CI).
    Plain,
    /// `--userns-remap <user>`.
    Remap,
    /// As an unprivileged user.
    Rootless,
}

fn userns() -> Userns {
    match std::env::var("LAYERCTL_HOSTILE_USERNS").as_deref() {
        Err(_) | Ok("") => Userns::Plain,
        Ok("remap") => Userns::Remap,
        Ok("rootless") => Userns::Rootless,
        Ok(other) => panic!("LAYERCTL_HOSTILE_USERNS={other}: remap or rootless"),
    }
}

/// The `layerctl` binary (testkit finds it beside this test executable).
fn layerctl() -> PathBuf {
    testkit::layerctl::path()
}

fn big() -> bool {
    std::env::var_os("LAYERCTL_HOSTILE_BIG").is_some_and(|v| v != "0")
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

fn drivers() -> Vec<&'static str> {
    testkit::gate::drivers()
}

/// What a run of the child did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    peak_rss_kib: u64,
    elapsed: Duration,
}

impl Run {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }
}

/// Peak RSS so far of a live process, from `/proc/<pid>/status`.
fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The largest peak RSS among a process and its descendants (rootless, the work runs in a
/// re-executed child).
fn vm_hwm_tree_kib(pid: u32) -> Option<u64> {
    let mut peak = vm_hwm_kib(pid);
    for task in fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let children = fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for child in children.split_whitespace().filter_map(|c| c.parse().ok()) {
            peak = peak.max(vm_hwm_tree_kib(child));
        }
    }
    peak
}

/// Runs `layerctl --root <root> --driver <driver> -q <args>` with `stdin` as input, killing it
/// after `limit`; polls its peak RSS while it runs. Remapped or rootless as the sandbox is
/// (rootless, `rw mount` runs inside `layerctl unshare`, the only place it works).
fn run_ctl(
    sb: &Sandbox,
    driver: &str,
    args: &[&str],
    stdin: Option<&Path>,
    limit: Duration,
) -> Run {
    let root = &sb.root;
    let mut cmd = match (&sb.user, sb.userns) {
        (Some(user), Userns::Rootless) => user.command(&sb.bin),
        _ => Command::new(&sb.bin),
    };
    let global = |cmd: &mut Command| {
        cmd.arg("--root").arg(root).args(["--driver", driver, "-q"]);
        if let (Some(user), Userns::Remap) = (&sb.user, sb.userns) {
            cmd.args(["--userns-remap", &user.name]);
        }
    };
    global(&mut cmd);
    if sb.userns == Userns::Rootless && args.starts_with(&["rw", "mount"]) {
        cmd.args(["unshare", "--"]).arg(&sb.bin);
        global(&mut cmd);
    }
    cmd.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    cmd.stdin(match stdin {
        Some(p) => Stdio::from(fs::File::open(p).expect("open stdin file")),
        None => Stdio::null(),
    });
    let start = Instant::now();
    let mut child = cmd.spawn().expect("spawn layerctl");
    let pid = child.id();
    // Drain the pipes on threads so a chatty child cannot block.
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out_pipe.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err_pipe.read_to_string(&mut s);
        s
    });
    let mut peak = 0;
    let status = loop {
        if let Some(kib) = vm_hwm_tree_kib(pid) {
            peak = peak.max(kib);
        }
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "layerctl {args:?} ran past {limit:?} (peak RSS {peak} KiB): not bounded in time"
            );
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let run = Run {
        code: status.code(),
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
        peak_rss_kib: peak,
        elapsed: start.elapsed(),
    };
    assert!(
        run.code.is_some(),
        "layerctl {args:?} died of a signal: {status:?}; stderr {}",
        run.stderr
    );
    assert_ne!(
        run.code,
        Some(101),
        "layerctl {args:?} panicked: {}",
        run.stderr
    );
    run
}

/// One sandbox: the root and what surrounds it.
struct Sandbox {
    // The user goes after the directory it owns files in.
    _dir: tempfile::TempDir,
    base: PathBuf,
    root: PathBuf,
    victim: PathBuf,
    before: BTreeMap<PathBuf, (u32, u64, i64, u32, Vec<u8>)>,
    userns: Userns,
    user: Option<TestUser>,
    bin: PathBuf,
}

fn snapshot(base: &Path, root: &Path) -> BTreeMap<PathBuf, (u32, u64, i64, u32, Vec<u8>)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![base.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap().flatten() {
            let p = e.path();
            if p == root || p.file_name().is_some_and(|n| n == "inputs") {
                continue;
            }
            let md = fs::symlink_metadata(&p).unwrap();
            let content = if md.is_file() {
                fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            out.insert(
                p.clone(),
                (md.mode(), md.size(), md.mtime(), md.uid(), content),
            );
            if md.is_dir() {
                stack.push(p);
            }
        }
    }
    out
}

impl Sandbox {
    fn new() -> Sandbox {
        let dir = tempfile::Builder::new()
            .prefix("hostile-")
            .tempdir()
            .unwrap();
        let base = dir.path().to_path_buf();
        let root = base.join("root");
        let victim = base.join("victim");
        fs::create_dir(&victim).unwrap();
        fs::write(victim.join("hello"), b"host file").unwrap();
        fs::set_permissions(victim.join("hello"), fs::Permissions::from_mode(0o600)).unwrap();
        fs::create_dir(base.join("root-evil")).unwrap();
        fs::write(base.join("root-evil/secret"), b"sibling").unwrap();
        fs::write(base.join("sentinel"), b"do not touch").unwrap();
        fs::create_dir(base.join("inputs")).unwrap();
        let userns = userns();
        let user = (userns != Userns::Plain).then(|| {
            assert!(
                is_root(),
                "LAYERCTL_HOSTILE_USERNS needs root, to make the users"
            );
            TestUser::create("lsho", Some(65536))
        });
        let mut bin = layerctl();
        if let (Some(user), Userns::Rootless) = (&user, userns) {
            bin = user.copy_in(&bin);
            fs::create_dir(&root).unwrap();
            // Everything around the root is the user's: an escape would have the rights.
            let mut stack = vec![base.clone()];
            while let Some(p) = stack.pop() {
                std::os::unix::fs::chown(&p, Some(user.uid), Some(user.gid)).unwrap();
                if p.is_dir() {
                    stack.extend(fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
                }
            }
        }
        let before = snapshot(&base, &root);
        Sandbox {
            _dir: dir,
            base,
            root,
            victim,
            before,
            userns,
            user,
            bin,
        }
    }

    fn input(&self, name: &str) -> PathBuf {
        self.base.join("inputs").join(name)
    }

    /// Nothing outside the root changed; `check` is clean.
    fn assert_contained(&self, driver: &str, case: &str) {
        let after = snapshot(&self.base, &self.root);
        let changed: Vec<_> = after
            .keys()
            .chain(self.before.keys())
            .filter(|k| self.before.get(*k) != after.get(*k))
            .collect();
        assert!(
            changed.is_empty(),
            "{case} on {driver}: ESCAPE: changed outside the root: {changed:?}"
        );
        let check = run_ctl(self, driver, &["check"], None, Duration::from_secs(120));
        assert!(
            check.ok(),
            "{case} on {driver}: check not clean after: {}{}",
            check.stdout,
            check.stderr
        );
    }
}

/// Limits for one case.
struct Bounds {
    secs: u64,
    rss_mib: u64,
}

const SMALL: Bounds = Bounds {
    secs: 60,
    rss_mib: 128,
};

/// How a case must end.
enum Expect {
    /// Refused; stderr holds every one of these words (case-insensitive).
    Error(&'static [&'static str]),
    /// Accepted (valid but awkward).
    Ok,
    /// Either (contained either way); the escape check is the point.
    Either,
}

/// Imports (or loads, for `load`) the input on every driver and checks everything.
fn case(
    name: &str,
    command: &str,
    build: impl Fn(&Sandbox) -> PathBuf,
    expect: Expect,
    bounds: Bounds,
) {
    for driver in drivers() {
        let sb = Sandbox::new();
        let input = build(&sb);
        let path = input.display().to_string();
        let run = run_ctl(
            &sb,
            driver,
            &[command, &path],
            None,
            Duration::from_secs(bounds.secs),
        );
        eprintln!(
            "{name} on {driver}: exit {:?} in {:.2}s, peak RSS {} KiB; {}",
            run.code,
            run.elapsed.as_secs_f64(),
            run.peak_rss_kib,
            run.stderr.trim()
        );
        assert!(
            run.peak_rss_kib <= bounds.rss_mib << 10,
            "{name} on {driver}: peak RSS {} KiB over {} MiB",
            run.peak_rss_kib,
            bounds.rss_mib
        );
        match expect {
            Expect::Ok => assert!(run.ok(), "{name} on {driver}: refused: {}", run.stderr),
            Expect::Error(words) => {
                assert!(!run.ok(), "{name} on {driver}: accepted, expected an error");
                let err = run.stderr.to_lowercase();
                assert!(
                    err.starts_with("error: "),
                    "{name}: not a one-line error: {err}"
                );
                for w in words {
                    assert!(
                        err.contains(&w.to_lowercase()),
                        "{name}: error lacks {w:?}: {err}"
                    );
                }
            }
            Expect::Either => {
                if !run.ok() {
                    assert!(
                        run.stderr.starts_with("error: "),
                        "{name}: unclear failure: {}",
                        run.stderr
                    );
                }
            }
        }
        sb.assert_contained(driver, name);
    }
}

// ---- tar building, by hand so that any field can lie ----

fn octal(field: &mut [u8], value: u64) {
    let s = format!("{:0width$o}", value, width = field.len() - 1);
    field[..s.len()].copy_from_slice(s.as_bytes());
}

/// A ustar header block.
fn header(name: &str, size: u64, typeflag: u8, link: &str, mode: u32) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut h[100..108], mode as u64);
    octal(&mut h[108..116], 0);
    octal(&mut h[116..124], 0);
    octal(&mut h[124..136], size);
    octal(&mut h[136..148], 1_700_000_000);
    h[156] = typeflag;
    h[157..157 + link.len()].copy_from_slice(link.as_bytes());
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    finish_checksum(&mut h);
    h
}

/// Turns a ustar header into an old-GNU one (magic `ustar  \0`), as sparse `S` entries need.
fn gnu_magic(h: &mut [u8; 512]) {
    h[257..265].copy_from_slice(b"ustar  \0");
    finish_checksum(h);
}

fn finish_checksum(h: &mut [u8; 512]) {
    h[148..156].copy_from_slice(b"        ");
    let sum: u64 = h.iter().map(|&b| b as u64).sum();
    let s = format!("{sum:06o}\0 ");
    h[148..156].copy_from_slice(s.as_bytes());
}

/// Appends an entry (header, body, padding).
fn entry(out: &mut Vec<u8>, name: &str, typeflag: u8, link: &str, body: &[u8], mode: u32) {
    out.extend_from_slice(&header(name, body.len() as u64, typeflag, link, mode));
    out.extend_from_slice(body);
    out.resize(out.len().next_multiple_of(512), 0);
}

fn end(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0u8; 1024]);
}

/// A tar of (name, typeflag, link, body) entries.
fn tar(entries: &[(&str, u8, &str, &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, t, link, body) in entries {
        let mode = if *t == b'5' { 0o755 } else { 0o644 };
        entry(&mut out, name, *t, link, body, mode);
    }
    end(&mut out);
    out
}

fn write(path: &Path, data: &[u8]) -> PathBuf {
    fs::write(path, data).unwrap();
    path.to_path_buf()
}

/// `count` gzip members, each `member` bytes of `byte`: a stream that expands
/// `count × member` bytes from a few hundred bytes per member.
fn gzip_members(path: &Path, prefix: &[u8], byte: u8, member: usize, count: u64) -> PathBuf {
    let mut first = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    first.write_all(prefix).unwrap();
    let first = first.finish().unwrap();
    let mut one = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    one.write_all(&vec![byte; member]).unwrap();
    let one = one.finish().unwrap();
    let mut f = std::io::BufWriter::new(fs::File::create(path).unwrap());
    f.write_all(&first).unwrap();
    for _ in 0..count {
        f.write_all(&one).unwrap();
    }
    f.flush().unwrap();
    path.to_path_buf()
}

// ---- CVE rows: link breakouts (2014-6407, 2014-9356, 2021-41089, 2021-32760, 2025-47290,
// ---- 2026-17106) ----

#[test]
fn cve_2014_6407_symlink_then_write_through_it() {
    case(
        "CVE-2014-6407 symlink",
        "import",
        |sb| {
            let victim = sb.victim.display().to_string();
            write(
                &sb.input("l.tar"),
                &tar(&[("a", b'2', &victim, b""), ("a/hello", b'0', "", b"pwned")]),
            )
        },
        Expect::Either,
        SMALL,
    );
}

#[test]
fn cve_2014_6407_hardlink_out_of_root() {
    case(
        "CVE-2014-6407 hardlink",
        "import",
        |sb| {
            write(
                &sb.input("l.tar"),
                &tar(&[("x", b'1', "../../victim/hello", b"")]),
            )
        },
        Expect::Error(&["\"x\""]),
        SMALL,
    );
}

#[test]
fn cve_2014_9356_absolute_symlink_as_path_component() {
    case(
        "CVE-2014-9356",
        "import",
        |sb| {
            let through = format!("d/lnk{}/hello", sb.victim.display());
            write(
                &sb.input("l.tar"),
                &tar(&[
                    ("d/", b'5', "", b""),
                    ("d/lnk", b'2', "/", b""),
                    (&through, b'0', "", b"pwned"),
                ]),
            )
        },
        Expect::Either,
        SMALL,
    );
}

#[test]
fn cve_2021_41089_missing_parent_through_symlink() {
    case(
        "CVE-2021-41089",
        "import",
        |sb| {
            let victim = sb.victim.display().to_string();
            write(
                &sb.input("l.tar"),
                &tar(&[
                    ("lnk", b'2', &victim, b""),
                    ("lnk/newdir/deeper/file", b'0', "", b"x"),
                ]),
            )
        },
        Expect::Either,
        SMALL,
    );
}

#[test]
fn cve_2021_32760_hardlink_to_outside_symlink_then_chmod() {
    case(
        "CVE-2021-32760",
        "import",
        |sb| {
            let target = sb.victim.join("hello").display().to_string();
            let mut t = Vec::new();
            // A hard link to a symlink that leads out; the link's own header asks for a mode
            // that must never reach the host file (tar-split refuses a second header for the
            // same path, so the mode rides on the link entry itself).
            entry(&mut t, "sym", b'2', &target, b"", 0o777);
            entry(&mut t, "hl", b'1', "sym", b"", 0o7777);
            entry(&mut t, "dir/", b'5', "", b"", 0o755);
            entry(&mut t, "dir/hl2", b'1', "hl", b"", 0o4777);
            end(&mut t);
            write(&sb.input("l.tar"), &t)
        },
        Expect::Either,
        SMALL,
    );
}

#[test]
fn cve_2025_47290_directory_replaced_by_symlink_to_root_mid_archive() {
    case(
        "CVE-2025-47290",
        "import",
        |sb| {
            let through = format!("d{}/hello", sb.victim.display());
            write(
                &sb.input("l.tar"),
                &tar(&[
                    ("d/", b'5', "", b""),
                    ("d/file", b'0', "", b"inside"),
                    ("d", b'2', "/", b""),
                    (&through, b'0', "", b"pwned"),
                ]),
            )
        },
        Expect::Either,
        SMALL,
    );
}

#[test]
fn cve_2026_17106_two_hop_and_sibling_prefix() {
    case(
        "CVE-2026-17106",
        "import",
        |sb| {
            let _ = sb;
            write(
                &sb.input("l.tar"),
                &tar(&[
                    ("go_up", b'2', "..", b""),
                    ("escape", b'2', "go_up/../victim", b""),
                    ("escape/hello", b'0', "", b"pwned"),
                    ("evil", b'2', "../root-evil", b""),
                    ("evil/secret", b'0', "", b"pwned"),
                    ("../root-evil/secret2", b'0', "", b"pwned"),
                ]),
            )
        },
        Expect::Either,
        SMALL,
    );
}

/// go-archive v0.3.0 broke valid images while fixing the above: absolute symlinks and
/// hardlinks through them must resolve inside the root and work.
#[test]
fn valid_absolute_links_still_work() {
    case(
        "absolute links (valid)",
        "import",
        |sb| {
            write(
                &sb.input("l.tar"),
                &tar(&[
                    ("usr/", b'5', "", b""),
                    ("usr/lib/", b'5', "", b""),
                    ("usr/lib/real", b'0', "", b"payload"),
                    ("lib", b'2', "/usr/lib", b""),
                    ("lib/through-abs", b'0', "", b"written via absolute symlink"),
                    ("hard", b'1', "/usr/lib/real", b""),
                ]),
            )
        },
        Expect::Ok,
        SMALL,
    );
}

// ---- Decompression and identity rows ----

/// CVE-2014-9357, 2021-20291: corrupt or truncated compressed streams fail fast, in process.
#[test]
fn cve_2021_20291_corrupt_and_truncated_streams() {
    let layer = tar(&[("f", b'0', "", &[7u8; 100_000][..])]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&layer).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&layer[..], 1).unwrap();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("gzip truncated", gz[..gz.len() / 2].to_vec()),
        ("gzip corrupt", {
            let mut c = gz.clone();
            let mid = c.len() / 2;
            c[mid..mid + 16].fill(0xAA);
            c
        }),
        ("zstd truncated", zst[..zst.len() / 2].to_vec()),
        ("zstd corrupt", {
            let mut c = zst.clone();
            let mid = c.len() / 2;
            c[mid..mid + 16].fill(0xAA);
            c
        }),
        // xz is not a format we decompress: it must be refused, never handed to a binary.
        (
            "xz",
            b"\xfd7zXZ\0\0\x04\xe6\xd6\xb4\x46\x02\x00\x21\x01".to_vec(),
        ),
    ];
    for (name, data) in cases {
        case(
            name,
            "import",
            |sb| write(&sb.input("l"), &data),
            Expect::Error(&[]),
            SMALL,
        );
    }
}

/// CVE-2019-14271, 2026-41567, 2014-9357: no exec or dynamic loading from layer content. A
/// layer full of tempting decompressors and NSS modules is imported (gzip'd); none may run.
#[test]
fn cve_2019_14271_no_exec_from_layer_content() {
    for driver in drivers() {
        let sb = Sandbox::new();
        let marker = sb.base.join("inputs").join("executed");
        let script = format!("#!/bin/sh\ntouch {}\n", marker.display());
        let mut t = Vec::new();
        for name in [
            "usr/bin/xz",
            "usr/bin/unpigz",
            "bin/gzip",
            "usr/bin/zstd",
            "lib/x86_64-linux-gnu/libnss_files.so.2",
        ] {
            entry(&mut t, name, b'0', "", script.as_bytes(), 0o755);
        }
        entry(
            &mut t,
            "etc/nsswitch.conf",
            b'0',
            "",
            b"passwd: files\n",
            0o644,
        );
        end(&mut t);
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&t).unwrap();
        let input = write(&sb.input("l.tar.gz"), &gz.finish().unwrap());
        let run = run_ctl(
            &sb,
            driver,
            &["import", &input.display().to_string()],
            None,
            Duration::from_secs(60),
        );
        assert!(run.ok(), "{}", run.stderr);
        let chain = run.stdout.trim().to_owned();
        // The init layer writes /etc files of its own on top: still nothing may run.
        let run = run_ctl(
            &sb,
            driver,
            &["rw", "create", "--init", "c", "--parent", &chain],
            None,
            Duration::from_secs(60),
        );
        assert!(run.ok(), "{}", run.stderr);
        let run = run_ctl(
            &sb,
            driver,
            &["rw", "rm", "c"],
            None,
            Duration::from_secs(60),
        );
        assert!(run.ok(), "{}", run.stderr);
        assert!(!marker.exists(), "a binary from the layer was executed");
        sb.assert_contained(driver, "CVE-2019-14271");
    }
}

/// CVE-2014-8178, 2024-24557: identity comes from digests, never from the input's claims.
/// A `docker save` whose config lists DiffIDs that do not match its layers is refused whole.
#[test]
fn cve_2014_8178_forged_diff_ids_are_refused() {
    case(
        "CVE-2014-8178",
        "load",
        |sb| {
            let layer = tar(&[("f", b'0', "", b"real content")]);
            let forged = format!("sha256:{}", "ab".repeat(32));
            let config = format!(
                r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{forged}"]}}}}"#
            );
            let manifest = r#"[{"Config":"config.json","RepoTags":["forged:latest"],"Layers":["l1/layer.tar"]}]"#;
            let mut img = Vec::new();
            entry(&mut img, "l1/layer.tar", b'0', "", &layer, 0o644);
            entry(&mut img, "config.json", b'0', "", config.as_bytes(), 0o644);
            entry(
                &mut img,
                "manifest.json",
                b'0',
                "",
                manifest.as_bytes(),
                0o644,
            );
            end(&mut img);
            write(&sb.input("img.tar"), &img)
        },
        Expect::Error(&[]),
        SMALL,
    );
}

/// CVE-2023-25153: a huge `manifest.json` in a `docker load` archive: refused at the cap,
/// without reading it into memory. Gzip'd so the archive itself stays small.
#[test]
fn cve_2023_25153_huge_manifest_json() {
    let size: u64 = if big() { 2 << 30 } else { 64 << 20 };
    case(
        "CVE-2023-25153",
        "load",
        |sb| {
            let hdr = header("manifest.json", size, b'0', "", 0o644);
            gzip_members(&sb.input("img.tar.gz"), &hdr, b' ', 1 << 20, size >> 20)
        },
        Expect::Error(&["manifest.json"]),
        Bounds {
            secs: 120,
            rss_mib: 48,
        },
    );
}

// ---- Bombs: CVE-2017-14992 zero padding, 2022-2879 PAX, 2025-58183 sparse maps ----

/// CVE-2017-14992: an empty tar followed by a flood of zero blocks, gzip'd (a decompression
/// bomb: ~1000× expansion). It must stream: accepted (the bytes are kept for the DiffID) with
/// bounded memory.
#[test]
fn cve_2017_14992_gzip_bomb_of_zero_blocks() {
    let gib_or_mib: u64 = if big() { 8 << 10 } else { 64 };
    case(
        "CVE-2017-14992 gzip",
        "import",
        |sb| {
            let mut empty = Vec::new();
            end(&mut empty);
            gzip_members(&sb.input("l.tar.gz"), &empty, 0, 1 << 20, gib_or_mib)
        },
        Expect::Either,
        // Below the 64 MiB the input expands to: only streaming fits.
        Bounds {
            secs: if big() { 3600 } else { 120 },
            rss_mib: 48,
        },
    );
}

/// The same bomb as zstd frames (a zstd frame of 1 MiB of zeros is a few dozen bytes).
#[test]
fn zstd_bomb_of_zero_blocks() {
    let mib: u64 = if big() { 8 << 10 } else { 64 };
    case(
        "zstd bomb",
        "import",
        |sb| {
            let mut empty = Vec::new();
            end(&mut empty);
            let path = sb.input("l.tar.zst");
            let mut f = std::io::BufWriter::new(fs::File::create(&path).unwrap());
            f.write_all(&zstd::encode_all(&empty[..], 1).unwrap())
                .unwrap();
            let frame = zstd::encode_all(&vec![0u8; 1 << 20][..], 19).unwrap();
            for _ in 0..mib {
                f.write_all(&frame).unwrap();
            }
            f.flush().unwrap();
            path
        },
        Expect::Either,
        // Below the 64 MiB the input expands to: only streaming fits.
        Bounds {
            secs: if big() { 3600 } else { 120 },
            rss_mib: 48,
        },
    );
}

/// A gzip bomb whose expansion is file *content* (one huge file of zeros): extracted by
/// streaming, never buffered.
#[test]
fn gzip_bomb_one_huge_file() {
    let mib: u64 = if big() { 4 << 10 } else { 64 };
    case(
        "gzip bomb file",
        "import",
        |sb| {
            let hdr = header("big", mib << 20, b'0', "", 0o644);
            let path = gzip_members(&sb.input("l.tar.gz"), &hdr, 0, 1 << 20, mib);
            // The end-of-archive blocks as a last member.
            let mut tail = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            tail.write_all(&[0u8; 1024]).unwrap();
            let mut f = fs::OpenOptions::new().append(true).open(&path).unwrap();
            f.write_all(&tail.finish().unwrap()).unwrap();
            path
        },
        Expect::Ok,
        // Below the 64 MiB the input expands to: only streaming fits.
        Bounds {
            secs: if big() { 3600 } else { 120 },
            rss_mib: 48,
        },
    );
}

/// CVE-2022-2879: a PAX header far over the cap (16 MiB; 100 MB with the knob).
#[test]
fn cve_2022_2879_giant_pax_header() {
    let size: u64 = if big() { 100_000_000 } else { 16 << 20 };
    case(
        "CVE-2022-2879 PAX",
        "import",
        |sb| {
            // One record "<len> path=aaaa…\n" of the whole size.
            let body_len = size as usize;
            let mut rec = Vec::with_capacity(body_len);
            let prefix_guess = format!("{body_len} path=");
            rec.extend_from_slice(prefix_guess.as_bytes());
            rec.resize(body_len - 1, b'a');
            rec.push(b'\n');
            let mut t = Vec::new();
            entry(&mut t, "PaxHeaders/x", b'x', "", &rec, 0o644);
            entry(&mut t, "x", b'0', "", b"x", 0o644);
            end(&mut t);
            write(&sb.input("l.tar"), &t)
        },
        Expect::Error(&[]),
        Bounds {
            secs: 120,
            rss_mib: 128,
        },
    );
}

/// CVE-2022-2879: a long chain of GNU long-name headers.
#[test]
fn cve_2022_2879_long_name_chain() {
    case(
        "CVE-2022-2879 long-name chain",
        "import",
        |sb| {
            let mut t = Vec::new();
            let long = vec![b'n'; 4000];
            for _ in 0..if big() { 200_000 } else { 20_000 } {
                entry(&mut t, "././@LongLink", b'L', "", &long, 0o644);
            }
            entry(&mut t, "x", b'0', "", b"x", 0o644);
            end(&mut t);
            write(&sb.input("l.tar"), &t)
        },
        Expect::Error(&[]),
        Bounds {
            secs: 120,
            rss_mib: 48,
        },
    );
}

/// CVE-2025-58183: an old-GNU sparse file with a huge chain of extension blocks (1M regions
/// with the knob, 200k otherwise).
#[test]
fn cve_2025_58183_sparse_map_bomb() {
    let regions: u64 = if big() { 1_000_000 } else { 200_000 };
    case(
        "CVE-2025-58183 sparse",
        "import",
        |sb| {
            // The size field is the stored data: one byte per region.
            let mut h = header("sparse", regions, b'S', "", 0o644);
            // Real size: one byte per region, every other byte a hole.
            octal(&mut h[483..495], regions * 2);
            // Four regions in the header (offset 12 + numbytes 12 each from 386), extended.
            for i in 0..4u64 {
                let at = 386 + i as usize * 24;
                octal(&mut h[at..at + 12], i * 2);
                octal(&mut h[at + 12..at + 24], 1);
            }
            h[482] = 1;
            gnu_magic(&mut h);
            let path = sb.input("l.tar");
            let mut f = std::io::BufWriter::new(fs::File::create(&path).unwrap());
            f.write_all(&h).unwrap();
            let mut next = 4u64;
            while next < regions {
                let mut ext = [0u8; 512];
                for i in 0..21usize {
                    if next >= regions {
                        break;
                    }
                    octal(&mut ext[i * 24..i * 24 + 12], next * 2);
                    octal(&mut ext[i * 24 + 12..i * 24 + 24], 1);
                    next += 1;
                }
                ext[504] = (next < regions) as u8;
                f.write_all(&ext).unwrap();
            }
            f.flush().unwrap();
            drop(f);
            // Bodies: one byte per region, padded; then the end.
            let mut rest = vec![b'z'; regions as usize];
            rest.resize(rest.len().next_multiple_of(512), 0);
            end(&mut rest);
            fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .unwrap()
                .write_all(&rest)
                .unwrap();
            path
        },
        Expect::Either,
        Bounds {
            secs: 120,
            rss_mib: 128,
        },
    );
}

/// A GNU sparse file announcing a huge logical size (a hole bomb): 60 GiB of holes, one block
/// of data. Refused, as moby's applier refuses an old-GNU sparse entry (`unhandled tar header
/// type 83`); never written out.
#[test]
fn sparse_hole_bomb() {
    case(
        "sparse hole bomb",
        "import",
        |sb| {
            let mut h = header("holes", 512, b'S', "", 0o644);
            octal(&mut h[386..398], 60 << 30);
            octal(&mut h[398..410], 512);
            octal(&mut h[483..495], (60 << 30) + 512);
            gnu_magic(&mut h);
            let mut t = h.to_vec();
            t.extend_from_slice(&[b'd'; 512]);
            end(&mut t);
            write(&sb.input("l.tar"), &t)
        },
        Expect::Error(&["header type 83"]),
        Bounds {
            secs: 60,
            rss_mib: 128,
        },
    );
}

// ---- Shape bombs: many entries, deep trees ----

/// 100k entries (empty files in 100 directories): accepted, bounded memory.
#[test]
fn many_entries_layer() {
    let n: usize = if big() { 1_000_000 } else { 100_000 };
    case(
        "100k entries",
        "import",
        |sb| {
            let path = sb.input("l.tar");
            let mut f = std::io::BufWriter::new(fs::File::create(&path).unwrap());
            for d in 0..100 {
                f.write_all(&header(&format!("d{d}/"), 0, b'5', "", 0o755))
                    .unwrap();
            }
            for i in 0..n {
                f.write_all(&header(&format!("d{}/f{i}", i % 100), 0, b'0', "", 0o644))
                    .unwrap();
            }
            f.write_all(&[0u8; 1024]).unwrap();
            f.flush().unwrap();
            path
        },
        Expect::Ok,
        Bounds {
            secs: if big() { 3600 } else { 300 },
            rss_mib: 256,
        },
    );
}

/// A tree 1000 levels deep, named through PAX path records (20 000 with the knob: refused at
/// the 4096-byte name cap, after creating the 2048 levels below it).
#[test]
fn deep_directory_nesting() {
    // Names are capped at 4096 bytes, so "d/" × 2048 is the deepest accepted: CI stays under
    // it (a valid deep layer must work); the knob goes far past it (refused at the cap).
    let depth: usize = if big() { 20_000 } else { 1_000 };
    case(
        "deep nesting",
        "import",
        |sb| {
            let mut t = Vec::new();
            let mut path = String::new();
            for _ in 0..depth {
                path.push_str("d/");
                let rec_body = format!(" path={path}\n");
                // PAX record length includes its own digits.
                let mut len = rec_body.len() + 1;
                while format!("{len}{rec_body}").len() != len {
                    len += 1;
                }
                let rec = format!("{len}{rec_body}");
                entry(&mut t, "PaxHeaders/d", b'x', "", rec.as_bytes(), 0o644);
                entry(&mut t, "d/", b'5', "", b"", 0o755);
            }
            end(&mut t);
            write(&sb.input("l.tar"), &t)
        },
        if big() { Expect::Either } else { Expect::Ok },
        Bounds {
            secs: 300,
            rss_mib: 256,
        },
    );
}

/// CVE-2024-9676: `/etc/hosts` and friends planted as links to host files and as FIFOs; the
/// init layer (`rw create --init`) writes those paths and must neither follow the links nor
/// hang on the FIFO.
#[test]
fn cve_2024_9676_init_layer_over_hostile_etc() {
    for driver in drivers() {
        let sb = Sandbox::new();
        let hello = sb.victim.join("hello").display().to_string();
        let mut t = Vec::new();
        entry(&mut t, "etc/", b'5', "", b"", 0o755);
        entry(&mut t, "etc/hosts", b'2', &hello, b"", 0o777);
        entry(
            &mut t,
            "etc/hostname",
            b'2',
            "../../victim/hello",
            b"",
            0o777,
        );
        entry(&mut t, "etc/resolv.conf", b'6', "", b"", 0o644);
        entry(&mut t, ".dockerenv", b'2', "/proc/self/fd/0", b"", 0o777);
        entry(
            &mut t,
            "dev",
            b'2',
            &sb.victim.display().to_string(),
            b"",
            0o777,
        );
        end(&mut t);
        let input = write(&sb.input("l.tar"), &t);
        let run = run_ctl(
            &sb,
            driver,
            &["import", &input.display().to_string()],
            None,
            Duration::from_secs(60),
        );
        // Links that lead out are valid in a layer; it is using them that must stay inside.
        assert!(run.ok(), "{driver}: import refused: {}", run.stderr);
        let chain = run.stdout.trim().to_owned();
        let run = run_ctl(
            &sb,
            driver,
            &["rw", "create", "--init", "c", "--parent", &chain],
            None,
            Duration::from_secs(60),
        );
        eprintln!(
            "CVE-2024-9676 on {driver}: rw create --init: {:?} {}",
            run.code,
            run.stderr.trim()
        );
        // Unprivileged, `rw mount` works only inside `layerctl unshare`.
        let can_mount = testkit::gate::is_root();
        if !can_mount {
            let _ = testkit::gate::skip_variant(
                Some("rw mount"),
                testkit::gate::Reason::NotRoot,
                "rw mount outside `layerctl unshare` needs root",
            );
        }
        if run.ok() {
            if can_mount {
                let m = run_ctl(
                    &sb,
                    driver,
                    &["rw", "mount", "c"],
                    None,
                    Duration::from_secs(60),
                );
                assert!(m.ok(), "{}", m.stderr);
                let u = run_ctl(
                    &sb,
                    driver,
                    &["rw", "unmount", "c"],
                    None,
                    Duration::from_secs(60),
                );
                assert!(u.ok(), "{}", u.stderr);
            }
            let r = run_ctl(
                &sb,
                driver,
                &["rw", "rm", "c"],
                None,
                Duration::from_secs(60),
            );
            assert!(r.ok(), "{}", r.stderr);
        }
        sb.assert_contained(driver, "CVE-2024-9676");
    }
}

/// CVE-2021-41091, 2021-21284: a setuid binary in a layer is not reachable by other host
/// users: some directory between `/` and it denies search to "others".
#[test]
fn cve_2021_41091_setuid_not_reachable_by_others() {
    for driver in drivers() {
        let sb = Sandbox::new();
        let mut t = Vec::new();
        entry(&mut t, "bin/", b'5', "", b"", 0o755);
        entry(&mut t, "bin/suid", b'0', "", b"#!/bin/sh\n", 0o4755);
        end(&mut t);
        let input = write(&sb.input("l.tar"), &t);
        let run = run_ctl(
            &sb,
            driver,
            &["import", &input.display().to_string()],
            None,
            Duration::from_secs(60),
        );
        assert!(run.ok(), "{}", run.stderr);
        let mut found = 0;
        let mut stack = vec![sb.root.clone()];
        while let Some(dir) = stack.pop() {
            for e in fs::read_dir(&dir).unwrap().flatten() {
                let p = e.path();
                let md = fs::symlink_metadata(&p).unwrap();
                if md.is_dir() {
                    stack.push(p);
                } else if md.is_file() && md.mode() & 0o4000 != 0 {
                    found += 1;
                    let guarded = p
                        .ancestors()
                        .skip(1)
                        .take_while(|a| a.starts_with(&sb.root))
                        .any(|a| fs::metadata(a).is_ok_and(|m| m.mode() & 0o001 == 0));
                    assert!(
                        guarded,
                        "{driver}: setuid {} is reachable by other users",
                        p.display()
                    );
                }
            }
        }
        assert!(
            found > 0,
            "{driver}: the setuid file was not extracted with its bit"
        );
        sb.assert_contained(driver, "CVE-2021-41091");
    }
}

// ---- Image metadata (#15): what `load` writes into Docker's imagedb and repositories.json ----

/// A `docker save` archive with one member per (name, bytes) and this manifest.
fn save_archive(members: &[(&str, &[u8])], manifest: &str) -> Vec<u8> {
    let mut img = Vec::new();
    for (name, data) in members {
        entry(&mut img, name, b'0', "", data, 0o644);
    }
    entry(
        &mut img,
        "manifest.json",
        b'0',
        "",
        manifest.as_bytes(),
        0o644,
    );
    end(&mut img);
    img
}

fn hex_of(data: &[u8]) -> String {
    layer_digest::Digester::sha256_of(data).hex().to_owned()
}

/// One layer and its config, for the image cases.
fn one_layer_image() -> (Vec<u8>, String, Vec<u8>) {
    let layer = tar(&[("f", b'0', "", b"image content")]);
    let diff = layer_digest::Digester::sha256_of(&layer).to_string();
    let config = format!(
        r#"{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":["{diff}"]}}}}"#
    )
    .into_bytes();
    (layer, diff, config)
}

/// Tags docker's grammar refuses, names that try to climb out of the image directory, a tag
/// claimed twice, a config whose name is not its digest, and a config over the 4 MiB cap:
/// each refused before anything is written.
#[test]
fn image_metadata_attacks_are_refused() {
    let (layer, _, config) = one_layer_image();
    let cfg = format!("{}.json", hex_of(&config));
    let with_tags = |tags: &str| {
        save_archive(
            &[("l1/layer.tar", &layer), (&cfg, &config)],
            &format!(r#"[{{"Config":"{cfg}","RepoTags":{tags},"Layers":["l1/layer.tar"]}}]"#),
        )
    };
    let cases: Vec<(&str, Vec<u8>, &'static [&'static str])> = vec![
        (
            "tag climbing out",
            with_tags(r#"["../../etc:passwd"]"#),
            &["invalid tag"],
        ),
        (
            "tag with NUL",
            with_tags(r#"["a\u0000b:1"]"#),
            &["invalid tag"],
        ),
        (
            "uppercase repository",
            with_tags(r#"["Evil:1"]"#),
            &["lowercase"],
        ),
        (
            "64-hex repository",
            with_tags(&format!(r#"["{}"]"#, "a".repeat(64))),
            &["hexadecimal"],
        ),
        (
            "name too long",
            with_tags(&format!(r#"["{}:1"]"#, "a/".repeat(130) + "a")),
            &["255"],
        ),
        (
            "tag too long",
            with_tags(&format!(r#"["a:{}"]"#, "t".repeat(129))),
            &["invalid tag"],
        ),
        (
            "duplicate tag",
            with_tags(r#"["a:1","docker.io/library/a:1"]"#),
            &["claimed twice"],
        ),
        (
            "digest as tag",
            with_tags(&format!(r#"["a@sha256:{}"]"#, "0".repeat(64))),
            &["invalid tag"],
        ),
        (
            "config name is not its digest",
            save_archive(
                &[
                    ("l1/layer.tar", &layer),
                    (&format!("{}.json", "ab".repeat(32)), &config),
                ],
                &format!(
                    r#"[{{"Config":"{}.json","RepoTags":["a:1"],"Layers":["l1/layer.tar"]}}]"#,
                    "ab".repeat(32)
                ),
            ),
            &["digest mismatch"],
        ),
        (
            "config path climbing out",
            save_archive(
                &[("l1/layer.tar", &layer)],
                r#"[{"Config":"../../../etc/passwd","RepoTags":["a:1"],"Layers":["l1/layer.tar"]}]"#,
            ),
            &["escapes"],
        ),
        (
            "missing layer member",
            save_archive(
                &[(&cfg, &config)],
                &format!(r#"[{{"Config":"{cfg}","RepoTags":["a:1"],"Layers":["l1/layer.tar"]}}]"#),
            ),
            &["missing"],
        ),
        (
            "config over the cap",
            {
                let mut big = config.clone();
                big.truncate(big.len() - 1);
                big.extend(format!(r#","pad":"{}"}}"#, " ".repeat(4 << 20)).bytes());
                let name = format!("{}.json", hex_of(&big));
                save_archive(
                    &[("l1/layer.tar", &layer), (&name, &big)],
                    &format!(
                        r#"[{{"Config":"{name}","RepoTags":["a:1"],"Layers":["l1/layer.tar"]}}]"#
                    ),
                )
            },
            &["limit"],
        ),
    ];
    for (name, data, words) in cases {
        case(
            name,
            "load",
            |sb| write(&sb.input("img.tar"), &data),
            Expect::Error(words),
            SMALL,
        );
    }
}

/// Issue #13's smuggling layer: a 512-byte file whose size field reads `NUL, spaces,
/// "1000", NUL` (512 to Go, tar-split and the DiffID; 0 to a reader that cuts at the first
/// NUL before trimming) and whose content is a header for a setuid `etc/smuggled`; the
/// second variant ends with a hard link back to the visible file, which once kept
/// `export` byte-identical and `check` clean. Through `layerctl import` on both drivers it
/// must be extracted as Go reads it: one 512-byte `etc/visible` (the "header" is its
/// content), its hard link, no `etc/smuggled` anywhere; `export` gives the input back.
#[test]
fn issue_13_smuggled_setuid_file_is_not_extracted() {
    for hardlink in [false, true] {
        for driver in drivers() {
            let sb = Sandbox::new();
            let mut inner = header("etc/smuggled", 0, b'0', "", 0o4755);
            finish_checksum(&mut inner);
            let mut tar = header("etc/", 0, b'5', "", 0o755).to_vec();
            let mut visible = header("etc/visible", 512, b'0', "", 0o644);
            visible[124..136].copy_from_slice(b"\0   1000\0\0\0\0");
            finish_checksum(&mut visible);
            tar.extend(visible);
            tar.extend(inner);
            if hardlink {
                tar.extend(header("etc/visible-link", 0, b'1', "etc/visible", 0o644));
            }
            tar.extend([0u8; 1024]);
            let input = write(&sb.input("smuggle.tar"), &tar);
            let path = input.display().to_string();
            let limit = Duration::from_secs(SMALL.secs);
            let run = run_ctl(&sb, driver, &["import", &path], None, limit);
            assert!(run.ok(), "smuggling layer on {driver}: {}", run.stderr);
            let chain = run.stdout.trim().to_owned();
            let smuggled: Vec<_> = walkdir::WalkDir::new(&sb.root)
                .into_iter()
                .filter_map(|e| e.ok())
                .filter(|e| e.file_name() == "smuggled")
                .map(|e| e.path().display().to_string())
                .collect();
            assert!(
                smuggled.is_empty(),
                "{driver}: smuggled file extracted: {smuggled:?}"
            );
            let out = sb.input("export.tar").display().to_string();
            let run = run_ctl(&sb, driver, &["export", &chain, "-o", &out], None, limit);
            assert!(run.ok(), "export on {driver}: {}", run.stderr);
            assert!(
                fs::read(&out).unwrap() == tar,
                "{driver}: export differs from the input"
            );
            sb.assert_contained(driver, "issue 13 smuggling");
        }
    }
}
