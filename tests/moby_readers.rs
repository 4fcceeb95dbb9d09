//! Same bytes, same meaning: our layerdb readers against moby 20.10's own, with moby as the
//! oracle. A vfs data-root gets one base layer per odd value of each file (`size` through
//! Go's `strconv.ParseInt`, `diff` and `parent` through `TrimSpace` + `digest.Parse`,
//! `cache-id`, `descriptor.json` through `json.Unmarshal`) and one RW layer per odd mount
//! record; moby's store (`../shared/peers/moby-open -ls`, `-rw-ls`) and ours must load exactly
//! the same ones, with the same values. The only differences allowed are the documented
//! ones: a `cache-id` that is unsafe as one directory name or not UTF-8 (moby loads it and
//! would join it to its driver home; we report the layer and keep it).
//!
//! Needs root and Debian's Go packages (to build moby-open); skipped with a message
//! otherwise, except under `CI=true`.

use testkit::moby;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use layer_store::{Store, StoreOptions};

fn hex(n: usize, salt: u8) -> String {
    let d = layer_digest::Digester::sha256_of(format!("{salt}-{n}").as_bytes());
    d.hex().to_owned()
}

/// One record to write: its name and the bytes of each file (`None`: absent).
struct Case {
    what: String,
    files: Vec<(&'static str, Option<Vec<u8>>)>,
    /// Allowed to load in moby only (a documented difference).
    moby_only: bool,
}

fn layer_cases(base: &str) -> Vec<Case> {
    let good_diff = |n: usize| format!("sha256:{}", hex(n, 1)).into_bytes();
    let mut cases = Vec::new();
    let mut case = |what: String, file: &'static str, bytes: Option<Vec<u8>>, moby_only| {
        cases.push(Case {
            what,
            files: vec![(file, bytes)],
            moby_only,
        })
    };
    for size in [
        "0",
        "00",
        "+12",
        "-1",
        "007",
        "12\n",
        " 12",
        "1_0",
        "0x10",
        "1e3",
        "9223372036854775807",
        "9223372036854775808",
        "-9223372036854775808",
        "",
        "\u{661}\u{662}",
    ] {
        case(format!("size {size:?}"), "size", Some(size.into()), false);
    }
    let h = hex(0, 2);
    for diff in [
        format!("sha256:{h}\n"),
        format!(" \tsha256:{h}\u{a0}"),
        format!("\u{85}sha256:{h}\u{3000}"),
        format!("\u{200b}sha256:{h}"),
        format!("\u{feff}sha256:{h}"),
        format!("SHA256:{h}"),
        format!("sha256:{}", h.to_uppercase()),
        format!("sha256:{}", &h[1..]),
        format!("sha384:{}", "a".repeat(96)),
        format!("sha512:{}", "b".repeat(128)),
        format!("md5:{}", "c".repeat(32)),
        "sha256:".into(),
        String::new(),
    ] {
        case(format!("diff {diff:?}"), "diff", Some(diff.into()), false);
    }
    for (cache, moby_only) in [
        (&b" id1 \n"[..], false),
        ("\u{a0}id2\u{3000}".as_bytes(), false),
        (b"", false),
        (b"\n \t", false),
        (b"../escape", true),
        (b"a/b", true),
        (b"\xffid", true),
    ] {
        case(
            format!("cache-id {:?}", String::from_utf8_lossy(cache)),
            "cache-id",
            Some(cache.to_vec()),
            moby_only,
        );
    }
    for parent in [
        format!("{base}\n"),
        format!("  {base}"),
        base.to_uppercase(),
        format!("sha512:{}", "d".repeat(128)),
        "garbage".into(),
        String::new(),
    ] {
        case(
            format!("parent {parent:?}"),
            "parent",
            Some(parent.into()),
            false,
        );
    }
    for desc in [
        &br#"{"MediaType":"x","SIZE":3}"#[..],
        br#"{"digest":"garbage"}"#,
        b"null",
        br#"{"urls":null,"annotations":{"a":null}}"#,
        br#"{"platform":{"OS":"linux"},"platform":{"architecture":"amd64"}}"#,
        b"{\"mediaType\":\"a\xffb\"}",
        br#"{"unknown":[1,{"x":null}]}"#,
        br#"{"size":1.5}"#,
        br#"{"size":"1"}"#,
        br#"{"size":9223372036854775808}"#,
        br#"[]"#,
        br#"{} x"#,
        br#"{"mediaType":5}"#,
        b"",
    ] {
        case(
            format!("descriptor.json {:?}", String::from_utf8_lossy(desc)),
            "descriptor.json",
            Some(desc.to_vec()),
            false,
        );
    }
    // A missing required file.
    for file in ["diff", "size", "cache-id"] {
        case(format!("no {file}"), file, None, false);
    }
    let _ = good_diff;
    cases
}

fn mount_cases(base: &str) -> Vec<Case> {
    let id = hex(0, 3);
    let mut cases = Vec::new();
    let mut case = |what: String, files: Vec<(&'static str, Option<Vec<u8>>)>| {
        cases.push(Case {
            what,
            files,
            moby_only: false,
        })
    };
    for mount_id in [
        id.clone(),
        format!("\n {id} \n"),
        format!("{id}-init"),
        id.to_uppercase(),
        id[1..].to_owned(),
        String::new(),
    ] {
        case(
            format!("mount-id {mount_id:?}"),
            vec![("mount-id", Some(mount_id.into()))],
        );
    }
    for init in [
        format!("{id}-init"),
        format!(" {id}-init\n"),
        "nope".into(),
        String::new(),
    ] {
        case(
            format!("init-id {init:?}"),
            vec![
                ("mount-id", Some(id.clone().into())),
                ("init-id", Some(init.into())),
            ],
        );
    }
    for parent in [
        base.to_owned(),
        format!("{base}\n"),
        format!("sha256:{}", "e".repeat(64)),
        "garbage".into(),
    ] {
        case(
            format!("parent {parent:?}"),
            vec![
                ("mount-id", Some(id.clone().into())),
                ("parent", Some(parent.into())),
            ],
        );
    }
    case(
        "no mount-id".into(),
        vec![("init-id", Some(format!("{id}-init").into()))],
    );
    cases
}

fn write_files(dir: &Path, files: &[(&str, Option<Vec<u8>>)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in files {
        match bytes {
            Some(b) => std::fs::write(dir.join(name), b).unwrap(),
            None => {
                let _ = std::fs::remove_file(dir.join(name));
            }
        }
    }
}

#[test]
fn our_readers_load_exactly_what_moby_loads() {
    if moby::unavailable().is_some() {
        return; // recorded as a skip by moby::unavailable
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let db = root.join("image/vfs/layerdb");
    std::fs::create_dir_all(root.join("vfs/dir")).unwrap();

    // A good base layer the parent cases sit on.
    let base = format!("sha256:{}", hex(0, 9));
    let layer_defaults = |n: usize| -> Vec<(&'static str, Option<Vec<u8>>)> {
        vec![
            ("diff", Some(format!("sha256:{}", hex(n, 1)).into())),
            ("size", Some(b"0".to_vec())),
            ("cache-id", Some(hex(n, 4).into())),
        ]
    };
    write_files(&db.join("sha256").join(&base[7..]), &layer_defaults(9999));
    let mut layers: BTreeMap<String, Case> = BTreeMap::new();
    for (n, case) in layer_cases(&base).into_iter().enumerate() {
        let chain = hex(n, 5);
        let d = db.join("sha256").join(&chain);
        write_files(&d, &layer_defaults(n));
        write_files(&d, &case.files);
        layers.insert(format!("sha256:{chain}"), case);
    }
    let mut mounts: BTreeMap<String, Case> = BTreeMap::new();
    for (n, case) in mount_cases(&base).into_iter().enumerate() {
        let name = format!("m{n:02}");
        write_files(&db.join("mounts").join(&name), &case.files);
        mounts.insert(name, case);
    }

    // moby's verdict.
    let root_s = root.to_str().unwrap();
    let ls = moby::json(&["-ls", "-root", root_s, "-driver", "vfs"]);
    let moby_layers: BTreeMap<String, serde_json::Value> = ls
        .as_array()
        .unwrap()
        .iter()
        .map(|l| (l["chain_id"].as_str().unwrap().to_owned(), l.clone()))
        .collect();
    let rw = moby::json(&["-rw-ls", "-root", root_s, "-driver", "vfs"]);
    let moby_mounts: BTreeSet<String> = rw
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["mount_id"].as_str().is_some_and(|s| !s.is_empty()))
        .map(|m| m["name"].as_str().unwrap().to_owned())
        .collect();

    // Ours: the store (which resolves parents as moby does) over layer-meta's readers.
    let store = Store::open(StoreOptions::new(&root).driver("vfs")).unwrap();
    let ours = store.map();
    let records: BTreeMap<String, layer_meta::LayerRecord> = store
        .meta()
        .list_layers()
        .unwrap()
        .layers
        .into_iter()
        .map(|r| (r.chain_id.to_string(), r))
        .collect();
    let mut disagreements = Vec::new();
    for (chain, case) in &layers {
        let in_moby = moby_layers.contains_key(chain);
        let in_ours = ours.keys().any(|c| c.as_str() == chain);
        let allowed = case.moby_only && in_moby && !in_ours;
        if in_moby != in_ours && !allowed {
            disagreements.push(format!(
                "layer, {}: moby loads: {in_moby}, we load: {in_ours}",
                case.what
            ));
        }
        if case.moby_only && in_ours {
            disagreements.push(format!("layer, {}: expected us to refuse it", case.what));
        }
        if in_moby && in_ours {
            let m = &moby_layers[chain];
            let r = &records[chain];
            let same = m["diff_id"] == r.diff_id.as_str()
                && m["diff_size"] == r.size
                && m["cache_id"] == r.cache_id.as_str()
                && m["parent"].as_str() == r.parent.as_ref().map(|p| p.as_str());
            if !same {
                disagreements.push(format!("layer, {}: moby {m}, ours {r:?}", case.what));
            }
        }
    }
    let our_mounts: BTreeSet<String> = store.rw_layers().into_keys().collect();
    for (name, case) in &mounts {
        let in_moby = moby_mounts.contains(name);
        let in_ours = our_mounts.contains(name);
        if in_moby != in_ours {
            disagreements.push(format!(
                "RW layer, {}: moby loads: {in_moby}, we load: {in_ours}",
                case.what
            ));
        }
    }
    assert!(
        disagreements.is_empty(),
        "{} of {} records read differently:\n{}",
        disagreements.len(),
        layers.len() + mounts.len(),
        disagreements.join("\n")
    );
    // The corpus is not trivial: both sides accept and refuse some of each kind.
    let accepted = layers
        .keys()
        .filter(|c| moby_layers.contains_key(*c))
        .count();
    assert!(accepted > 15 && accepted < layers.len() - 15, "{accepted}");
    eprintln!(
        "{} layer records ({accepted} load) and {} mount records ({} load) read as moby reads them",
        layers.len(),
        mounts.len(),
        moby_mounts.len()
    );
}
