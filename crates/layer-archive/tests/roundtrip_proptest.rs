//! Property: for random trees `parent` and `child = parent + random edits`, exporting the
//! changes of `child` against `parent` and applying them onto a copy of `parent` gives
//! `child` exactly (types, contents, link targets, modes, owners, nanosecond mtimes).

use testkit::archive as common_tree;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use common_tree::{copy_tree, describe};
use layer_archive::changes::changes_dirs;
use layer_archive::export::export_changes;
use layer_archive::walk::WalkOptions;
use layer_archive::{ApplyOptions, apply_layer};
use proptest::prelude::*;

/// One edit of a tree. Paths are indexes into a tiny name space, so edits collide often.
#[derive(Debug, Clone)]
enum Op {
    File(Vec<u8>, Vec<u8>, u32),
    Dir(Vec<u8>, u32),
    Symlink(Vec<u8>, Vec<u8>),
    Hardlink(Vec<u8>, Vec<u8>),
    Remove(Vec<u8>),
    Touch(Vec<u8>, i64, u32),
}

const NAMES: [&str; 4] = ["a", "b", "c", ".wh-ish"];

fn path_strategy() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0u8..NAMES.len() as u8, 1..4)
}

fn op_strategy() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (path_strategy(), prop::collection::vec(any::<u8>(), 0..64), prop::sample::select(vec![0o644u32, 0o600, 0o755, 0o4755, 0o444]))
            .prop_map(|(p, c, m)| Op::File(p, c, m)),
        2 => (path_strategy(), prop::sample::select(vec![0o755u32, 0o700, 0o1777])).prop_map(|(p, m)| Op::Dir(p, m)),
        1 => (path_strategy(), path_strategy()).prop_map(|(p, t)| Op::Symlink(p, t)),
        1 => (path_strategy(), path_strategy()).prop_map(|(p, t)| Op::Hardlink(p, t)),
        2 => path_strategy().prop_map(Op::Remove),
        1 => (path_strategy(), 0i64..2_000_000_000, 0u32..1_000_000_000).prop_map(|(p, s, n)| Op::Touch(p, s, n)),
    ]
}

fn rel(p: &[u8]) -> PathBuf {
    p.iter().map(|&i| NAMES[i as usize]).collect()
}

fn remove_any(p: &Path) {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            let _ = fs::set_permissions(p, fs::Permissions::from_mode(0o755));
            fs::remove_dir_all(p).unwrap()
        }
        Ok(_) => fs::remove_file(p).unwrap(),
        Err(_) => {}
    }
}

/// Applies `op` under `root`, best effort (an edit that cannot apply is skipped), making
/// parents as directories when needed.
fn apply_op(root: &Path, op: &Op) {
    let ensure_parent = |p: &Path| {
        let parent = p.parent().unwrap();
        let mut cur = root.to_path_buf();
        for comp in parent.strip_prefix(root).unwrap().components() {
            cur.push(comp);
            match fs::symlink_metadata(&cur) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    remove_any(&cur);
                    fs::create_dir(&cur).unwrap();
                }
                Err(_) => fs::create_dir(&cur).unwrap(),
            }
        }
    };
    match op {
        Op::File(p, content, mode) => {
            let path = root.join(rel(p));
            ensure_parent(&path);
            remove_any(&path);
            fs::write(&path, content).unwrap();
            fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap();
        }
        Op::Dir(p, mode) => {
            let path = root.join(rel(p));
            ensure_parent(&path);
            if !fs::symlink_metadata(&path)
                .map(|m| m.is_dir())
                .unwrap_or(false)
            {
                remove_any(&path);
                fs::create_dir(&path).unwrap();
            }
            fs::set_permissions(&path, fs::Permissions::from_mode(*mode)).unwrap();
        }
        Op::Symlink(p, target) => {
            let path = root.join(rel(p));
            ensure_parent(&path);
            remove_any(&path);
            std::os::unix::fs::symlink(rel(target), &path).unwrap();
        }
        Op::Hardlink(p, target) => {
            let (path, target) = (root.join(rel(p)), root.join(rel(target)));
            let is_file = fs::symlink_metadata(&target)
                .map(|m| m.is_file())
                .unwrap_or(false);
            if is_file && path != target && !target.starts_with(&path) {
                ensure_parent(&path);
                remove_any(&path);
                // Making the parent may have replaced the target itself.
                if fs::symlink_metadata(&target)
                    .map(|m| m.is_file())
                    .unwrap_or(false)
                {
                    fs::hard_link(&target, &path).unwrap();
                }
            }
        }
        Op::Remove(p) => remove_any(&root.join(rel(p))),
        Op::Touch(p, sec, nsec) => {
            let path = root.join(rel(p));
            if fs::symlink_metadata(&path)
                .map(|m| m.is_file())
                .unwrap_or(false)
            {
                let t = rustix::fs::Timestamps {
                    last_access: rustix::fs::Timespec {
                        tv_sec: *sec,
                        tv_nsec: i64::from(*nsec) as _,
                    },
                    last_modification: rustix::fs::Timespec {
                        tv_sec: *sec,
                        tv_nsec: i64::from(*nsec) as _,
                    },
                };
                rustix::fs::utimensat(
                    rustix::fs::CWD,
                    &path,
                    &t,
                    rustix::fs::AtFlags::SYMLINK_NOFOLLOW,
                )
                .unwrap();
            }
        }
    }
}

fn check_round_trip(base_ops: &[Op], edit_ops: &[Op]) {
    let tmp = tempfile::tempdir().unwrap();
    let (parent, child, replay) = (
        tmp.path().join("parent"),
        tmp.path().join("child"),
        tmp.path().join("replay"),
    );
    for d in [&parent, &child, &replay] {
        fs::create_dir(d).unwrap();
    }
    for op in base_ops {
        apply_op(&parent, op);
    }
    copy_tree(&parent, &child);
    assert!(
        changes_dirs(&child, Some(&parent)).unwrap().is_empty(),
        "a fresh copy has no changes"
    );
    for op in edit_ops {
        apply_op(&child, op);
    }
    let changes = changes_dirs(&child, Some(&parent)).unwrap();
    let tar = export_changes(&child, &changes, Vec::new(), &WalkOptions::default()).unwrap();
    copy_tree(&parent, &replay);
    let opts = ApplyOptions::for_current_user().with_layer("proptest");
    apply_layer(&replay, &mut &tar[..], &opts).unwrap();
    assert_eq!(describe(&replay, true), describe(&child, true));
    assert!(changes_dirs(&replay, Some(&child)).unwrap().is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn export_then_apply_reproduces_the_child(
        base in prop::collection::vec(op_strategy(), 0..16),
        edits in prop::collection::vec(op_strategy(), 0..12),
    ) {
        check_round_trip(&base, &edits);
    }
}

/// A base layer exported whole (no parent) and applied onto an empty dir gives it back.
#[test]
fn whole_tree_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
    fs::create_dir(&src).unwrap();
    fs::create_dir(&dst).unwrap();
    for op in [
        Op::File(vec![0, 1], b"hello".to_vec(), 0o4755),
        Op::Dir(vec![2], 0o1777),
        Op::Symlink(vec![2, 0], vec![0, 1]),
        Op::Hardlink(vec![3], vec![0, 1]),
        Op::Touch(vec![0, 1], 1_234_567_890, 123_456_789),
    ] {
        apply_op(&src, &op);
    }
    let tar = layer_archive::walk::tar_directory(
        &src,
        Vec::new(),
        &WalkOptions::default(),
        &mut layer_archive::walk::NoConversion,
    )
    .unwrap();
    apply_layer(&dst, &mut &tar[..], &ApplyOptions::for_current_user()).unwrap();
    assert_eq!(describe(&dst, true), describe(&src, true));
}
