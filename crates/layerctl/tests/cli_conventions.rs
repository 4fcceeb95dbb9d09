//! The conventions docker, podman and skopeo users expect of a CLI, end to end through the
//! binary: completions and a man page, `--json` and `--format`, binary output refused on a
//! terminal, a closed pipe, `-o` modes, unmount of what is not mounted, interrupted work
//! pointed out, errors that echo neither input contents nor internal IDs, a `--driver` that
//! does not match the root, and read-only commands that create nothing.

use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use testkit::digest::sha256;
use testkit::image::*;
use testkit::layerctl::*;
use testkit::tar::archive;

fn vfs(root: &Path, args: &[&str]) -> Command {
    let mut c = ctl(root, "vfs");
    c.args(args);
    c
}

/// `rw mount` as a user runs it: as root directly; unprivileged inside `layerctl unshare`,
/// since outside one `rw mount` refuses (the mount would end with layerctl's own namespace).
/// On vfs the path it prints is a plain directory, usable outside the namespace too, and the
/// root's mount ledger remembers the mount for a later `rw unmount`.
fn vfs_mount(root: &Path, args: &[&str]) -> Command {
    if testkit::gate::is_root() {
        return vfs(root, args);
    }
    let mut c = vfs(root, &["unshare", "--", env!("CARGO_BIN_EXE_layerctl")]);
    c.arg("--root")
        .arg(root)
        .args(["--driver", "vfs"])
        .args(args);
    c
}

/// A root with one layer (`etc/`, `etc/motd`), returned with its chain ID.
fn root_with_layer(dir: &Path) -> (PathBuf, String) {
    let root = dir.join("root");
    let tar = layer_tar(&[E::Dir("etc/"), E::File("etc/motd", b"hello\n")]);
    let out = run_with_stdin(vfs(&root, &["import", "-"]), &tar);
    let chain = ok(out).trim().to_owned();
    (root, chain)
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn completion_scripts_and_the_man_page_come_from_the_cli_definition() {
    let out = |args: &[&str]| {
        let mut c = bin();
        c.args(args);
        ok(run(c))
    };
    let bash = out(&["completion", "bash"]);
    assert!(
        bash.contains("_layerctl()") && bash.contains("complete -F"),
        "{bash}"
    );
    // Subcommands and their flags are completed.
    assert!(bash.contains("tar-split") && bash.contains("--no-trunc"));
    assert!(out(&["completion", "zsh"]).starts_with("#compdef layerctl"));
    assert!(out(&["completion", "fish"]).contains("complete -c layerctl"));
    let man = out(&["man"]);
    assert!(man.contains(".TH layerctl 1"), "{man}");
    assert!(man.contains("completion") && man.contains("images"));
    // An unknown shell is a usage error.
    let mut c = bin();
    c.args(["completion", "tcsh"]);
    assert_eq!(run(c).status.code(), Some(2));
}

#[test]
fn every_printing_command_has_json() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let base = layer_tar(&[E::Dir("etc/"), E::File("etc/motd", b"hello\n")]);
    let diff_id = sha256(&base);

    let imported = json(run_with_stdin(
        vfs(&root, &["--json", "import", "-"]),
        &base,
    ));
    assert_eq!(imported["diff_id"], diff_id);
    let chain = imported["chain_id"].as_str().unwrap().to_owned();
    assert_eq!(chain, diff_id, "a base layer's chain ID is its DiffID");
    assert_eq!(
        json(run(vfs(&root, &["--json", "ls"])))[0]["chain_id"],
        chain
    );
    assert_eq!(
        json(run(vfs(&root, &["--json", "inspect", &chain])))["chain_id"],
        chain
    );

    let created = json(run(vfs(
        &root,
        &["--json", "rw", "create", "c1", "--parent", &chain],
    )));
    assert_eq!(created["name"], "c1");
    assert_eq!(created["parent"], chain.as_str());
    let mounted = json(run(vfs_mount(&root, &["--json", "rw", "mount", "c1"])));
    assert_eq!(mounted["name"], "c1");
    let path = PathBuf::from(mounted["path"].as_str().unwrap());
    std::fs::write(path.join("etc/new"), b"x").unwrap();
    ok(run(vfs(&root, &["rw", "unmount", "c1"])));
    assert_eq!(
        json(run(vfs(&root, &["--json", "rw", "ls"])))[0]["name"],
        "c1"
    );
    let changes = json(run(vfs(&root, &["--json", "rw", "changes", "c1"])));
    assert!(
        changes
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["path"] == "/etc/new")
    );
    let committed = json(run(vfs(&root, &["--json", "commit", "c1"])));
    let top = committed["chain_id"].as_str().unwrap().to_owned();
    assert_eq!(committed["parent"], chain.as_str());
    ok(run(vfs(&root, &["rw", "rm", "c1"])));
    let removed = json(run(vfs(&root, &["--json", "rm", &top])));
    assert_eq!(removed[0]["chain_id"], top.as_str());

    assert!(
        json(run(vfs(&root, &["--json", "check"])))["clean"]
            .as_bool()
            .unwrap()
    );
    assert!(json(run(vfs(&root, &["--json", "gc"]))).is_object());
    assert_eq!(json(run(vfs(&root, &["--json", "info"])))["driver"], "vfs");

    // Images: load, images, rmi.
    let archive = dir.path().join("image.tar");
    std::fs::write(
        &archive,
        docker_save(
            std::slice::from_ref(&base),
            std::slice::from_ref(&diff_id),
            SaveLayout::Legacy,
        ),
    )
    .unwrap();
    let loaded = json(run(vfs(
        &root,
        &["--json", "load", archive.to_str().unwrap()],
    )));
    assert_eq!(loaded[0]["top_layer"], chain.as_str());
    let images = json(run(vfs(&root, &["--json", "images"])));
    assert_eq!(images[0]["repo_tags"][0], "test:v1");
    let rmi = json(run(vfs(&root, &["--json", "rmi", "test:v1"])));
    assert_eq!(rmi[0]["Untagged"], "test:v1");
    assert!(
        rmi.as_array()
            .unwrap()
            .iter()
            .any(|r| r["Deleted"] == images[0]["id"])
    );
}

#[test]
fn ls_and_images_take_a_format() {
    let dir = tempfile::tempdir().unwrap();
    let (root, chain) = root_with_layer(dir.path());
    let size = json(run(vfs(&root, &["--json", "ls"])))[0]["diff_size"].clone();

    let line = ok(run(vfs(
        &root,
        &["ls", "--format", "{{.ChainID}} {{ .DiffSize }}"],
    )));
    assert_eq!(line, format!("{chain} {size}\n"));
    let line = ok(run(vfs(
        &root,
        &["ls", "--format", "{{.chain_id}}|{{json .Parent}}"],
    )));
    assert_eq!(line, format!("{chain}|null\n"));
    // `json`: one object a line, the `--json` fields.
    let line = ok(run(vfs(&root, &["ls", "--format", "json"])));
    let row: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert_eq!(row["chain_id"], chain.as_str());
    assert_eq!(line.lines().count(), 1);
    // `table`: a header, then aligned columns.
    let table = ok(run(vfs(
        &root,
        &["ls", "--format", "table {{.ChainID}}\\t{{.Size}}"],
    )));
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("CHAINID") && lines[0].ends_with("SIZE"),
        "{table}"
    );
    assert!(lines[1].starts_with(&chain));
    // A field that does not exist: an error naming the ones that do, and nothing printed.
    let out = run(vfs(&root, &["ls", "--format", "{{.Nope}}"]));
    assert!(out.stdout.is_empty());
    let err = fails(out);
    assert!(err.contains("Nope") && err.contains("chain_id"), "{err}");
    assert!(fails(run(vfs(&root, &["ls", "--format", "{{.ChainID"]))).contains("unclosed"));

    let archive = dir.path().join("image.tar");
    let base = layer_tar(&[E::Dir("etc/"), E::File("etc/motd", b"hello\n")]);
    std::fs::write(
        &archive,
        docker_save(
            std::slice::from_ref(&base),
            &[sha256(&base)],
            SaveLayout::Legacy,
        ),
    )
    .unwrap();
    ok(run(vfs(&root, &["load", archive.to_str().unwrap()])));
    let id = json(run(vfs(&root, &["--json", "images"])))[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let line = ok(run(vfs(
        &root,
        &[
            "images",
            "--format",
            "{{.Repository}}:{{.Tag}} {{.ID}} {{.TopLayer}}",
        ],
    )));
    assert_eq!(line, format!("test:v1 {id} {chain}\n"));
}

/// A pseudo-terminal: the parent side and the path of the terminal side.
fn pty() -> (std::fs::File, PathBuf) {
    use std::os::fd::FromRawFd;
    // SAFETY: plain libc calls on a descriptor we own; ptsname_r writes into our buffer.
    unsafe {
        let fd = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY);
        assert!(fd >= 0, "posix_openpt: {}", std::io::Error::last_os_error());
        assert_eq!(libc::grantpt(fd), 0);
        assert_eq!(libc::unlockpt(fd), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(fd, name.as_mut_ptr(), name.len()), 0);
        let path = std::ffi::CStr::from_ptr(name.as_ptr());
        (
            std::fs::File::from_raw_fd(fd),
            PathBuf::from(path.to_str().unwrap()),
        )
    }
}

#[test]
fn export_save_and_diff_refuse_to_write_a_tar_to_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let (root, chain) = root_with_layer(dir.path());
    let archive = dir.path().join("image.tar");
    let base = layer_tar(&[E::Dir("etc/"), E::File("etc/motd", b"hello\n")]);
    std::fs::write(
        &archive,
        docker_save(
            std::slice::from_ref(&base),
            &[sha256(&base)],
            SaveLayout::Legacy,
        ),
    )
    .unwrap();
    ok(run(vfs(&root, &["load", archive.to_str().unwrap()])));
    ok(run(vfs(&root, &["rw", "create", "c1", "--parent", &chain])));
    let (_parent, tty) = pty();
    for args in [
        vec!["export", chain.as_str()],
        vec!["save", "test:v1"],
        vec!["save", "test:v1", "-o", "-"],
        vec!["rw", "diff", "c1"],
    ] {
        let mut c = vfs(&root, &args);
        c.stdout(std::fs::OpenOptions::new().write(true).open(&tty).unwrap());
        let out = c
            .stdin(Stdio::null())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let err = fails(out);
        assert!(
            err.contains("terminal") && err.contains("-o FILE"),
            "{args:?}: {err}"
        );
    }
    // Redirected, the same commands write.
    let out = ok(run(vfs(&root, &["export", &chain])));
    assert_eq!(sha256(out.as_bytes()), chain);
}

#[test]
fn a_closed_pipe_ends_the_command_quietly() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    // Larger than a pipe's buffer, so the writer meets the closed pipe.
    let big: Vec<u8> = (0..4u32 << 20).map(|i| (i % 251) as u8).collect();
    let big: &'static [u8] = Box::leak(big.into_boxed_slice());
    let tar = layer_tar(&[E::File("big", big)]);
    let chain = ok(run_with_stdin(vfs(&root, &["import", "-"]), &tar))
        .trim()
        .to_owned();
    // `layerctl export … | head -c 100`.
    let mut child = vfs(&root, &["export", &chain])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut head = [0u8; 100];
    child
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut head)
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "exit {:?}: {}",
        out.status,
        stderr(&out)
    );
    assert_eq!(stderr(&out), "", "nothing said about the closed pipe");
}

#[test]
fn output_files_are_0644() {
    let dir = tempfile::tempdir().unwrap();
    let (root, chain) = root_with_layer(dir.path());
    let archive = dir.path().join("image.tar");
    let base = layer_tar(&[E::Dir("etc/"), E::File("etc/motd", b"hello\n")]);
    std::fs::write(
        &archive,
        docker_save(
            std::slice::from_ref(&base),
            &[sha256(&base)],
            SaveLayout::Legacy,
        ),
    )
    .unwrap();
    ok(run(vfs(&root, &["load", archive.to_str().unwrap()])));
    ok(run(vfs(&root, &["rw", "create", "c1", "--parent", &chain])));
    let out = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    ok(run(vfs(
        &root,
        &["export", &chain, "-o", &out("layer.tar")],
    )));
    ok(run(vfs(
        &root,
        &["save", "test:v1", "-o", &out("saved.tar")],
    )));
    ok(run(vfs(
        &root,
        &["rw", "diff", "c1", "-o", &out("diff.tar")],
    )));
    for name in ["layer.tar", "saved.tar", "diff.tar"] {
        let mode = std::fs::metadata(out(name)).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o644, "{name}: {mode:o}");
    }
}

#[test]
fn unmount_of_a_layer_that_is_not_mounted_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let (root, chain) = root_with_layer(dir.path());
    ok(run(vfs(&root, &["rw", "create", "c1", "--parent", &chain])));
    let err = fails(run(vfs(&root, &["rw", "unmount", "c1"])));
    assert!(err.contains("c1 is not mounted"), "{err}");
    ok(run(vfs_mount(&root, &["rw", "mount", "c1"])));
    ok(run(vfs(&root, &["rw", "unmount", "c1"])));
    let err = fails(run(vfs(&root, &["rw", "unmount", "c1"])));
    assert!(err.contains("not mounted"), "{err}");
}

#[test]
fn after_an_interrupt_the_next_command_points_at_gc() {
    let dir = tempfile::tempdir().unwrap();
    let (root, _) = root_with_layer(dir.path());
    // An import that stalls mid-layer: its input is a pipe we keep open. In a process group
    // of its own, as a shell's foreground job, which Ctrl-C signals as a whole (unprivileged,
    // layerctl runs as two processes: itself and its re-executed child in a namespace).
    let mut import = vfs(&root, &["import", "-"]);
    // A shell also resets Ctrl-C to its default in the job it starts: this test may itself
    // run with SIGINT ignored (a script's background job), which the child would inherit.
    // SAFETY: between fork and exec only signal(2), which is async-signal-safe.
    unsafe {
        import.pre_exec(|| {
            libc::signal(libc::SIGINT, libc::SIG_DFL);
            Ok(())
        });
    }
    let mut child = import
        .process_group(0)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let big: Vec<u8> = (0..1u32 << 20).map(|i| (i % 253) as u8).collect();
    let big: &'static [u8] = Box::leak(big.into_boxed_slice());
    let tar = layer_tar(&[E::Dir("data/"), E::File("data/blob", big)]);
    let mut stdin = child.stdin.take().unwrap();
    std::io::Write::write_all(&mut stdin, &tar[..tar.len() / 2]).unwrap();
    // Wait until the import has work on disk (its write-set), then Ctrl-C it.
    let tmp = root.join("image/vfs/layerdb/tmp");
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::fs::read_dir(&tmp).map_or(0, |d| d.count()) == 0 {
        assert!(Instant::now() < deadline, "the import never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: kill(2) of our own child's process group, by its ID (the child's pid).
    assert_eq!(unsafe { libc::kill(-(child.id() as i32), libc::SIGINT) }, 0);
    let status = child.wait().unwrap();
    assert!(!status.success());
    drop(stdin);

    let out = run(vfs(&root, &["ls"]));
    assert!(out.status.success());
    assert!(
        stderr(&out).contains("interrupted work found: run `layerctl gc`"),
        "{}",
        stderr(&out)
    );
    // gc itself does not say it, and after it nothing does.
    let out = run(vfs(&root, &["gc"]));
    assert!(
        out.status.success() && !stderr(&out).contains("interrupted"),
        "{}",
        stderr(&out)
    );
    let out = run(vfs(&root, &["ls"]));
    assert_eq!(stderr(&out), "");
}

/// Every 64-hex-digit word of `text`.
fn hex_ids(text: &str) -> Vec<String> {
    text.split(|c: char| !c.is_ascii_hexdigit())
        .filter(|w| w.len() == 64)
        .map(str::to_owned)
        .collect()
}

#[test]
fn errors_echo_neither_input_contents_nor_internal_ids() {
    let dir = tempfile::tempdir().unwrap();
    let (root, chain) = root_with_layer(dir.path());
    let secret = "hunter2-SECRET-do-not-print";

    // Input files that are not what they should be: their bytes never reach the message.
    let not_tar = dir.path().join("not-a-tar");
    std::fs::write(&not_tar, format!("{secret}\n").repeat(40)).unwrap();
    let bad_json = dir.path().join("bad-manifest.tar");
    std::fs::write(
        &bad_json,
        archive(&[(
            "manifest.json".into(),
            format!("[{{\"Config\": \"{secret}").into_bytes(),
        )]),
    )
    .unwrap();
    let bad_config = dir.path().join("bad-config.tar");
    std::fs::write(
        &bad_config,
        archive(&[
            (
                "manifest.json".into(),
                br#"[{"Config":"c.json","RepoTags":["x:y"],"Layers":[]}]"#.to_vec(),
            ),
            ("c.json".into(), format!("{{\"{secret}\": ").into_bytes()),
        ]),
    )
    .unwrap();
    let mut errors = Vec::new();
    for args in [
        vec!["import", not_tar.to_str().unwrap()],
        vec!["load", not_tar.to_str().unwrap()],
        vec!["load", bad_json.to_str().unwrap()],
        vec!["load", bad_config.to_str().unwrap()],
        vec![
            "tar-split",
            "asm",
            "--input",
            not_tar.to_str().unwrap(),
            "--path",
            ".",
        ],
    ] {
        let out = run(vfs(&root, &args));
        assert!(!out.status.success(), "{args:?}");
        let err = stderr(&out);
        assert!(
            !err.contains("hunter2") && !err.contains("SECRET"),
            "{args:?}: {err}"
        );
        errors.push(err);
    }

    // Internal random IDs (cache IDs, mount and init IDs) stay out of errors about the
    // layers and RW layers they belong to.
    ok(run(vfs(
        &root,
        &["rw", "create", "c1", "--parent", &chain, "--init"],
    )));
    let rw = json(run(vfs(&root, &["--json", "rw", "ls"])));
    let layer = json(run(vfs(&root, &["--json", "inspect", &chain])));
    let internal = [
        rw[0]["mount_id"].as_str().unwrap().to_owned(),
        rw[0]["init_id"].as_str().unwrap().to_owned(),
        layer["cache_id"].as_str().unwrap().to_owned(),
    ];
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"x").unwrap();
    for args in [
        vec!["rm", chain.as_str()],
        vec!["rw", "create", "c1", "--parent", &chain],
        vec!["rw", "unmount", "c1"],
        vec!["rw", "rm", "nope"],
        vec!["commit", "nope"],
        vec!["inspect", "sha256:0000"],
        vec!["export", &chain, "-o", "/nonexistent-dir/x.tar"],
        vec!["import", "--parent", "c1", file.to_str().unwrap()],
    ] {
        let out = run(vfs(&root, &args));
        assert!(!out.status.success(), "{args:?}");
        errors.push(stderr(&out));
    }
    for err in &errors {
        for id in hex_ids(err) {
            assert!(
                !internal.iter().any(|i| i.contains(&id)),
                "an internal ID in an error: {err}"
            );
        }
    }
}

#[test]
fn a_driver_other_than_the_roots_is_refused_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (root, _) = root_with_layer(dir.path());
    let before = snapshot(&root);
    for args in [vec!["ls"], vec!["info"], vec!["gc"]] {
        let mut c = ctl(&root, "overlay2");
        c.args(&args);
        let err = fails(run(c));
        assert!(
            err.contains("uses the vfs driver, not overlay2"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(snapshot(&root), before);
    assert!(!root.join("overlay2").exists() && !root.join("image/overlay2").exists());
}

#[test]
fn read_only_commands_create_nothing() {
    let dir = tempfile::tempdir().unwrap();
    // A root that does not exist: lists are empty, the rest says there is no store.
    let fresh = dir.path().join("fresh");
    assert_eq!(
        json(run(vfs(&fresh, &["--json", "ls"]))),
        serde_json::json!([])
    );
    assert_eq!(
        json(run(vfs(&fresh, &["--json", "images"]))),
        serde_json::json!([])
    );
    assert_eq!(
        json(run(vfs(&fresh, &["--json", "rw", "ls"]))),
        serde_json::json!([])
    );
    assert!(ok(run(vfs(&fresh, &["ls"]))).starts_with("CHAIN ID"));
    for args in [
        vec!["inspect", "sha256:00"],
        vec!["export", "sha256:00"],
        vec!["check"],
        vec!["save", "x:y", "-o", "/dev/null"],
        vec!["rw", "changes", "c1"],
    ] {
        let err = fails(run(vfs(&fresh, &args)));
        assert!(err.contains("no layer store at"), "{args:?}: {err}");
    }
    assert!(!fresh.exists(), "a read-only command created the root");

    // A root with a store: read-only commands leave it exactly as it was.
    let (root, chain) = root_with_layer(dir.path());
    ok(run(vfs(&root, &["rw", "create", "c1", "--parent", &chain])));
    let before = snapshot(&root);
    let sink = dir.path().join("out.tar");
    for args in [
        vec!["ls"],
        vec!["--json", "ls"],
        vec!["images"],
        vec!["inspect", chain.as_str()],
        vec!["export", chain.as_str(), "-o", sink.to_str().unwrap()],
        vec!["rw", "ls"],
        vec!["rw", "changes", "c1"],
        vec!["check"],
        vec!["info"],
    ] {
        ok(run(vfs(&root, &args)));
        assert_eq!(snapshot(&root), before, "{args:?} changed the root");
    }
}
