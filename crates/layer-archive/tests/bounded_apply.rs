//! The applier's resources do not grow with what a hostile tar repeats or names: repeated
//! opaque markers cost O(entries), directory times are kept only for the current path
//! (memory does not grow with the bytes of all names), and deep trees need neither deep
//! paths nor a descriptor per level. Work and memory are counted, not timed.

use testkit::archive as common_tree;

use std::alloc::{GlobalAlloc, Layout, System};
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::sync::atomic::{AtomicUsize, Ordering};

use common_tree::{dir, file, marker, tar_of};
use layer_archive::{ApplyOptions, Header, TarWriter, Time, apply_layer_report};

/// Counts live heap bytes and their high-water mark (for the memory test only; the other
/// tests run in their own threads but allocate far less than what it measures).
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The tests of this file run one at a time, so that the memory test measures only itself.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

fn opts() -> ApplyOptions {
    ApplyOptions::for_current_user().with_layer("bounded")
}

/// 200 lower files in `d`; the layer writes `d/`, then 100 files each followed by an opaque
/// marker for `d`. Each marker after the first has nothing to remove, and must not look at
/// `d`'s entries again: quadratic before (~100 × 300 looks), linear now.
#[test]
fn repeated_opaque_markers_cost_linear_work() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("d/lowerdir")).unwrap();
    for i in 0..200 {
        fs::write(root.path().join(format!("d/lower{i}")), "l").unwrap();
    }
    fs::write(root.path().join("d/lowerdir/x"), "l").unwrap();
    let names: Vec<String> = (0..100).map(|i| format!("d/new{i}")).collect();
    let mut entries = vec![dir("d/")];
    for name in &names {
        entries.push(file(name, "n"));
        entries.push(marker("d/.wh..wh..opq"));
    }
    let tar = tar_of(&entries);
    let applied = apply_layer_report(root.path(), &mut &tar[..], &opts()).unwrap();
    let mut left: Vec<String> = fs::read_dir(root.path().join("d"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    left.sort();
    let mut want: Vec<String> = (0..100).map(|i| format!("new{i}")).collect();
    want.sort();
    assert_eq!(left, want, "the lower entries are gone, the layer's stay");
    // The first marker looks at 201 lower entries and 1 new one; a linear bound with room.
    assert!(
        applied.opaque_examined <= 2 * (201 + 100),
        "opaque markers examined {} entries: quadratic",
        applied.opaque_examined
    );
}

/// Markers for nested directories from the top down, over a tree this layer wrote: each
/// directory is walked once, not once per marker above it.
#[test]
fn nested_opaque_markers_walk_each_directory_once() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    let depth = 300;
    let mut entries = Vec::new();
    let mut path = String::new();
    for _ in 0..depth {
        path.push_str("n/");
        entries.push((Header::dir(path.clone()), &b""[..]));
    }
    let mut path = String::new();
    let mut markers = Vec::new();
    for _ in 0..depth {
        path.push_str("n/");
        markers.push(marker(&format!("{path}.wh..wh..opq")));
    }
    entries.extend(markers);
    let tar = tar_of(&entries);
    let applied = apply_layer_report(root.path(), &mut &tar[..], &opts()).unwrap();
    assert!(
        applied.opaque_examined <= 2 * depth as u64,
        "examined {} entries for {depth} nested markers",
        applied.opaque_examined
    );
    let deepest = (0..depth).fold(root.path().to_path_buf(), |p, _| p.join("n"));
    assert!(fs::symlink_metadata(&deepest).unwrap().is_dir());
}

fn mtime(path: &std::path::Path) -> i64 {
    fs::symlink_metadata(path).unwrap().mtime()
}

fn dir_at(name: &str, secs: i64) -> (Header, &'static [u8]) {
    let mut h = Header::dir(name);
    h.mtime = Time::from_secs(secs);
    (h, b"")
}

/// Directory times are the header's whatever comes later in the layer: children added after
/// the directory was left (a tar not in walk order), entries whited out in it, lower entries
/// an opaque marker removes from a subdirectory already left, implied directories.
#[test]
fn directory_times_survive_later_changes() {
    let _serial = serial();
    let root = tempfile::tempdir().unwrap();
    fs::create_dir_all(root.path().join("o/sub")).unwrap();
    fs::write(root.path().join("o/sub/lower"), "l").unwrap();
    let tar = tar_of(&[
        dir_at("a/", 1_000),
        dir_at("a/b/", 2_000),
        file("a/b/f", "x"),
        dir_at("c/", 3_000),
        file("c/f", "x"),
        // Back into a/b and a, left long ago: new children there.
        file("a/b/g", "x"),
        file("a/h", "x"),
        // An implied directory below a left one.
        file("c/implied/deeper/f", "x"),
        dir_at("w/", 4_000),
        file("w/f", "x"),
        marker("w/.wh.f"),
        // o/sub is this layer's, left, then emptied of its lower entry by o's marker.
        dir_at("o/", 5_000),
        dir_at("o/sub/", 6_000),
        file("o/sub/mine", "x"),
        dir_at("z/", 7_000),
        marker("o/.wh..wh..opq"),
        dir_at("z/y/", 8_000),
    ]);
    apply_layer_report(root.path(), &mut &tar[..], &opts()).unwrap();
    let p = |n: &str| root.path().join(n);
    assert_eq!(mtime(&p("a")), 1_000);
    assert_eq!(mtime(&p("a/b")), 2_000);
    assert_eq!(mtime(&p("c")), 3_000);
    assert_eq!(mtime(&p("w")), 4_000);
    assert_eq!(mtime(&p("o")), 5_000);
    assert_eq!(mtime(&p("o/sub")), 6_000);
    assert!(p("o/sub/mine").exists() && !p("o/sub/lower").exists());
    assert_eq!(mtime(&p("z")), 7_000);
    assert_eq!(mtime(&p("z/y")), 8_000);
    assert!(p("c/implied/deeper/f").exists() && !p("w/f").exists());
}

/// 2,000 directories, each with a 2,000-byte name (8 components of 250 bytes), so 4 MB of
/// names: the applier's heap high-water mark stays far below that (it held every directory
/// name until the end before).
#[test]
fn memory_does_not_grow_with_the_bytes_of_names() {
    let _serial = serial();
    let comp = |c: char| c.to_string().repeat(250);
    let mut w = TarWriter::new(Vec::new());
    let mut count = 0;
    'outer: for a in 'a'..='z' {
        for b in 'a'..='z' {
            for c in 'a'..='c' {
                let name = format!(
                    "{}/{}/{}/{}/{}/{}/{}/{}/",
                    comp(a),
                    comp(b),
                    comp(c),
                    comp('x'),
                    comp('y'),
                    comp('z'),
                    comp('w'),
                    comp('v')
                );
                w.append(&Header::dir(name), None).unwrap();
                count += 1;
                if count == 2_000 {
                    break 'outer;
                }
            }
        }
    }
    let tar = w.finish().unwrap();
    let root = tempfile::tempdir().unwrap();
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    apply_layer_report(root.path(), &mut &tar[..], &opts()).unwrap();
    let grew = PEAK.load(Ordering::Relaxed) - base;
    // The 1 MiB copy buffer and the codec's buffers, not 4 MB of names.
    assert!(
        grew < 2_500_000,
        "the applier's heap grew by {grew} bytes for 4 MB of names"
    );
}
