//! Crash simulation: a child process (this test binary, re-executed) commits layers, writes and
//! removes mounts and removes layers in a loop, printing each operation after it returns; the
//! parent SIGKILLs it at a random moment. Reopening must find every completed operation intact,
//! nothing partial visible, every leftover on disk reported, and nothing left after recovery.

use testkit::meta as common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use layer_digest::ChainId;
use layer_meta::{Durability, MetaOptions, MetaStore, MountRecord};
use rand::Rng;

const ROOT_ENV: &str = "LAYER_META_CRASH_ROOT";
const DURABILITY_ENV: &str = "LAYER_META_CRASH_DURABILITY";
const CHAIN_LEN: u32 = 10_000;

fn mount_name(n: u32) -> String {
    format!("m{n}")
}

fn mount_record(n: u32, ids: &[ChainId]) -> MountRecord {
    let mount_id = cache_id(n + 100_000);
    MountRecord {
        init_id: Some(format!("{mount_id}-init")),
        mount_id,
        parent: Some(ids[n as usize].clone()),
    }
}

fn durability_from(s: &str) -> Durability {
    match s {
        "full" => Durability::Full,
        "batch" => Durability::Batch,
        _ => Durability::None,
    }
}

/// The child: only does anything when re-executed by `sigkill_at_random_points`.
#[test]
#[ignore = "child process of sigkill_at_random_points"]
fn crash_child_worker() {
    let Ok(root) = std::env::var(ROOT_ENV) else {
        return;
    };
    let durability = durability_from(&std::env::var(DURABILITY_ENV).unwrap_or_default());
    let store = MetaStore::open(
        Path::new(&root),
        MetaOptions {
            durability,
            ..Default::default()
        },
    )
    .unwrap();
    let ids = chain(CHAIN_LEN);
    for n in 0..CHAIN_LEN {
        commit_layer(&store, &ids, n).unwrap();
        println!("EVENT committed {n}");
        if n % 2 == 0 {
            store
                .set_mount(&mount_name(n), &mount_record(n, &ids))
                .unwrap();
            println!("EVENT mounted {n}");
        }
        if n % 4 == 2 {
            store.remove_mount(&mount_name(n - 2)).unwrap();
            println!("EVENT unmounted {}", n - 2);
        }
        if n % 3 == 2 {
            // Remove a layer below the top; its children's parent files still name it, which
            // the metadata store allows (the layer store would not, but that is not tested here).
            let victim = n - 1;
            let orphan = store.remove_layer(&ids[victim as usize]).unwrap();
            println!("EVENT removing {victim}");
            store.finish_removal(&orphan).unwrap();
            println!("EVENT removed {victim}");
        }
    }
}

#[derive(Debug, Default)]
struct Events {
    committed: BTreeSet<u32>,
    mounted: BTreeSet<u32>,
    unmounted: BTreeSet<u32>,
    removing: BTreeSet<u32>,
    removed: BTreeSet<u32>,
}

impl Events {
    fn last_committed(&self) -> Option<u32> {
        self.committed.last().copied()
    }
}

fn parse(lines: &[String]) -> Events {
    let mut e = Events::default();
    for line in lines {
        // libtest prints "test crash_child_worker ... " without a newline before our output.
        let Some(at) = line.find("EVENT ") else {
            continue;
        };
        let rest = &line[at + "EVENT ".len()..];
        let (what, n) = rest.split_once(' ').unwrap();
        let n: u32 = n.parse().unwrap();
        let set = match what {
            "committed" => &mut e.committed,
            "mounted" => &mut e.mounted,
            "unmounted" => &mut e.unmounted,
            "removing" => &mut e.removing,
            "removed" => &mut e.removed,
            other => panic!("unknown event {other}"),
        };
        set.insert(n);
    }
    e
}

#[test]
fn sigkill_at_random_points() {
    let exe = std::env::current_exe().unwrap();
    let ids = chain(CHAIN_LEN);
    let mut rng = rand::rng();
    let mut totals = [0usize; 5]; // runs, committed, stale write-sets, orphans, half/blocking
    for run in 0..48 {
        let durability = ["none", "batch", "full"][run % 3];
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("layerdb");
        let mut child = Command::new(&exe)
            .args([
                "crash_child_worker",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(ROOT_ENV, &root)
            .env(DURABILITY_ENV, durability)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .collect::<Vec<_>>()
        });
        // Wait for the child to start working, then let it run a random while.
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !root.join("tmp").exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_micros(rng.random_range(0..60_000)));
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert!(!status.success(), "child finished before it was killed");
        let events = parse(&reader.join().unwrap());
        let ctx = format!(
            "run {run} ({durability}, last commit {:?})",
            events.last_committed()
        );
        let found = verify(&root, &ids, &events, &ctx);
        totals[0] += 1;
        totals[1] += events.committed.len();
        totals[2] += found.0;
        totals[3] += found.1;
        totals[4] += found.2;
    }
    eprintln!(
        "{} runs, {} commits completed, leftovers reported: {} stale write-sets, {} orphans, {} half mounts/blocking layers",
        totals[0], totals[1], totals[2], totals[3], totals[4]
    );
}

/// Checks the store after a crash; returns (stale write-sets, orphans, other leftovers) found.
fn verify(root: &Path, ids: &[ChainId], events: &Events, ctx: &str) -> (usize, usize, usize) {
    let store = MetaStore::open(root, MetaOptions::default()).unwrap();
    let index = |id: &ChainId| ids.iter().position(|x| x == id).unwrap() as u32;
    // Operations that may have been in flight (done or not, unreported) when the child died:
    // the step after the last reported commit `l` in the child's loop.
    let l = events.last_committed();
    let commit_in_flight = l.map_or(0, |l| l + 1);
    let mount_in_flight = l.filter(|l| l % 2 == 0);
    let unmount_in_flight = l.filter(|l| l % 4 == 2).map(|l| l - 2);
    let removal_in_flight = l.filter(|l| l % 3 == 2).map(|l| l - 1);

    // Layers: every reported commit is intact unless its removal started; nothing else listed
    // except the commit in flight; nothing broken.
    let listing = store.list_layers().unwrap();
    assert!(
        listing.broken.is_empty(),
        "{ctx}: broken layers {:?}",
        listing.broken
    );
    let listed: BTreeSet<u32> = listing.layers.iter().map(|l| index(&l.chain_id)).collect();
    for &n in &events.committed {
        if !events.removing.contains(&n) && removal_in_flight != Some(n) {
            assert!(listed.contains(&n), "{ctx}: committed layer {n} missing");
        }
    }
    for &n in &listed {
        assert_layer_intact(&store, ids, n);
        assert!(
            events.committed.contains(&n) || n == commit_in_flight,
            "{ctx}: unreported layer {n} listed"
        );
        assert!(
            !events.removing.contains(&n),
            "{ctx}: removed layer {n} listed"
        );
    }

    // Mounts: the same rules.
    let mounts = store.list_mounts().unwrap();
    assert!(
        mounts.broken.is_empty(),
        "{ctx}: broken mounts {:?}",
        mounts.broken
    );
    let mounted: BTreeSet<u32> = mounts
        .mounts
        .iter()
        .map(|(name, _)| name[1..].parse().unwrap())
        .collect();
    for (name, record) in &mounts.mounts {
        let n: u32 = name[1..].parse().unwrap();
        assert_eq!(record, &mount_record(n, ids), "{ctx}: mount {name}");
        assert!(
            !events.unmounted.contains(&n),
            "{ctx}: unmounted {name} listed"
        );
        assert!(
            events.mounted.contains(&n) || mount_in_flight == Some(n),
            "{ctx}: unreported mount {name}"
        );
    }
    for &n in &events.mounted {
        if !events.unmounted.contains(&n) && unmount_in_flight != Some(n) {
            assert!(mounted.contains(&n), "{ctx}: mount m{n} missing");
        }
    }

    // Orphans: only layers whose removal started and was not reported finished.
    let orphans = store.orphans().unwrap();
    for orphan in &orphans {
        let n = index(&orphan.chain_id);
        assert!(
            !events.removed.contains(&n),
            "{ctx}: finished removal of {n} still there"
        );
        assert!(
            events.removing.contains(&n) || removal_in_flight == Some(n),
            "{ctx}: unexpected orphan {n}"
        );
    }

    // Every entry on disk is accounted for: listed, orphan, or reported leftover.
    let leftovers = store.leftovers().unwrap();
    let reported: BTreeSet<String> = leftovers
        .all()
        .map(|l| l.path.file_name().unwrap().to_string_lossy().into_owned())
        .chain(orphans.iter().map(|o| o.name.clone()))
        .chain(listing.layers.iter().map(|l| l.chain_id.hex().to_owned()))
        .chain(mounts.mounts.iter().map(|(name, _)| name.clone()))
        .collect();
    for sub in ["tmp", "sha256", "mounts"] {
        for name in names(&root.join(sub)) {
            assert!(
                reported.contains(&name),
                "{ctx}: {sub}/{name} on disk but not reported"
            );
        }
    }
    assert!(
        leftovers.strays.is_empty() && leftovers.blocking_layers.is_empty(),
        "{ctx}: {leftovers:?}"
    );
    assert!(
        leftovers.half_mounts.is_empty(),
        "{ctx}: atomic mounts left half-written: {leftovers:?}"
    );
    let found = (
        leftovers.stale_write_sets.len(),
        leftovers.removing.len(),
        leftovers.half_mounts.len(),
    );

    // Recovery leaves nothing behind, and work can go on.
    for l in leftovers.all() {
        store.remove_leftover(l).unwrap();
    }
    for o in &leftovers.removing {
        store.finish_removal(o).unwrap();
    }
    assert!(
        store.leftovers().unwrap().is_empty(),
        "{ctx}: leftovers after recovery"
    );
    // The scan every crash harness runs: on disk, nothing but what the store lists.
    let expected = testkit::leftovers::Expected {
        layers: store
            .list_layers()
            .unwrap()
            .layers
            .iter()
            .map(|l| l.chain_id.to_string())
            .collect(),
        rw_layers: store
            .list_mounts()
            .unwrap()
            .mounts
            .into_iter()
            .map(|(name, _)| name)
            .collect(),
        ..Default::default()
    };
    let left = testkit::leftovers::in_layerdb(root, &expected);
    assert!(left.is_empty(), "{ctx}: left after recovery: {left:#?}");
    let next = commit_in_flight + 1;
    commit_layer(&store, ids, next).unwrap_or_else(|e| panic!("{ctx}: commit after recovery: {e}"));
    assert_layer_intact(&store, ids, next);
    found
}
