//! The duplicate-path rule of the packer and unpacker keeps fixed-size hashes, not names:
//! memory does not grow with the bytes of the names (a million 4 KB names were 4 GB).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use tarsplit::storage::{Entry, JsonPacker, JsonUnpacker, Packer, Unpacker};

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

/// The `i`th of 2,000 distinct 2,000-byte names.
fn name(i: usize) -> Vec<u8> {
    let mut n = format!("{i:06}/").into_bytes();
    n.resize(2_000, b'x');
    n
}

/// 4 MB of names through the packer, then the unpacker: each grows by far less, and a
/// duplicate is still refused.
#[test]
fn duplicate_check_memory_does_not_grow_with_names() {
    // Pack into a sink, counting only what the packer keeps.
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let mut packer = JsonPacker::new(std::io::sink());
    for i in 0..2_000 {
        packer.add_entry(&Entry::file(name(i), 0, None)).unwrap();
    }
    let kept = LIVE.load(Ordering::Relaxed) - base;
    assert!(
        kept < 1_000_000,
        "the packer keeps {kept} bytes for 4 MB of names"
    );
    assert!(packer.add_entry(&Entry::file(name(7), 0, None)).is_err());
    drop(packer);

    let mut json = JsonPacker::new(Vec::new());
    for i in 0..2_000 {
        json.add_entry(&Entry::file(name(i), 0, None)).unwrap();
    }
    json.flush().unwrap();
    let json = json.into_inner();
    let base = LIVE.load(Ordering::Relaxed);
    let mut unpacker = JsonUnpacker::new(&json[..]);
    let mut seen = 0;
    let mut most = 0;
    while unpacker.next_entry().unwrap().is_some() {
        seen += 1;
        most = most.max(LIVE.load(Ordering::Relaxed).saturating_sub(base));
    }
    assert_eq!(seen, 2_000);
    assert!(
        most < 1_000_000,
        "the unpacker kept {most} bytes for 4 MB of names"
    );
}
