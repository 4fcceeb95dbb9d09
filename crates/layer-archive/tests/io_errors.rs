//! I/O is not bad input: a full disk while applying is `Error::Io` naming the layer, the
//! operation and the file, with the OS error as its source and not in its message.

use testkit::archive as common_tree;

use std::error::Error as _;

use common_tree::tar_of;
use layer_archive::{ApplyOptions, Error, Header, apply_layer};
use rustix::mount::{MountFlags, UnmountFlags};

/// A tmpfs at `dir`, unmounted on drop. Mounting needs root: callers pass the root gate first.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, options: &std::ffi::CStr) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        rustix::mount::mount(c"tmpfs", dir, c"tmpfs", MountFlags::empty(), options)
            .unwrap_or_else(|e| panic!("mount a tmpfs at {}: {e}", dir.display()));
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, UnmountFlags::DETACH);
    }
}

fn check_io(err: &Error, op: &str, file: &str) {
    assert!(!err.is_bad_input(), "{err:?}");
    let Error::Io { op: got, path, .. } = err else {
        panic!("not Error::Io: {err:?}");
    };
    assert_eq!(*got, op);
    assert!(path.ends_with(file), "{}", path.display());
    let message = err.to_string();
    assert!(message.starts_with("layer full: "), "{message}");
    assert!(
        !message.contains("No space"),
        "the cause is repeated: {message}"
    );
    let source = err.source().expect("the OS error is the source");
    let source = source.downcast_ref::<std::io::Error>().unwrap();
    assert_eq!(source.raw_os_error(), Some(28), "{source}"); // ENOSPC
}

#[test]
fn no_space_is_io_not_bad_input() {
    testkit::require!(testkit::gate::root("mounting a small tmpfs"));
    let tmp = tempfile::tempdir().unwrap();
    let opts = ApplyOptions::for_current_user().with_layer("full");

    // Out of blocks while writing a payload.
    let _fs = Tmpfs::mount(&tmp.path().join("small"), c"size=1m");
    let big = vec![1u8; 4 << 20];
    let tar = tar_of(&[(Header::file("etc/big", big.len() as u64), &big[..])]);
    let err = apply_layer(&tmp.path().join("small"), &mut &tar[..], &opts).unwrap_err();
    check_io(&err, "write", "etc/big");

    // Out of inodes while creating a file.
    let _few = Tmpfs::mount(&tmp.path().join("few"), c"size=4m,nr_inodes=16");
    let entries: Vec<(Header, &[u8])> = (0..64)
        .map(|i| (Header::file(format!("f{i:02}"), 0), &b""[..]))
        .collect();
    let tar = tar_of(&entries);
    let err = apply_layer(&tmp.path().join("few"), &mut &tar[..], &opts).unwrap_err();
    assert!(!err.is_bad_input(), "{err:?}");
    assert!(
        matches!(
            &err,
            Error::Io {
                op: "create file",
                ..
            }
        ),
        "{err:?}"
    );
}

/// A reader that fails mid-stream is `Error::Read`, not a malformed tar.
#[test]
fn a_broken_input_stream_is_io_not_bad_input() {
    struct Broken<'a>(&'a [u8]);
    impl std::io::Read for Broken<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() {
                return Err(std::io::Error::from_raw_os_error(5)); // EIO
            }
            let n = buf.len().min(self.0.len());
            buf[..n].copy_from_slice(&self.0[..n]);
            self.0 = &self.0[n..];
            Ok(n)
        }
    }
    let body = vec![7u8; 100_000];
    let tar = tar_of(&[(Header::file("f", body.len() as u64), &body[..])]);
    for cut in [100, 512, 40_000] {
        let tmp = tempfile::tempdir().unwrap();
        let opts = ApplyOptions::for_current_user().with_layer("broken");
        let err = apply_layer(tmp.path(), &mut Broken(&tar[..cut]), &opts).unwrap_err();
        assert!(matches!(&err, Error::Read { .. }), "cut {cut}: {err:?}");
        assert!(!err.is_bad_input());
        assert_eq!(err.to_string(), "layer broken: reading the layer tar");
    }
}
