//! The bad-input corpus: every extraction-related row of anchors.md §5 and go-archive's
//! breakout tests (moby-layer-spec §4.4), as one data-driven table.
//!
//! Each case builds a sandbox `<base>/sandbox/{root,victim/hello,root-evil/secret}` plus a
//! sentinel file in `<base>`, optionally seeds the root with a "lower layer", applies one
//! tar, and then checks:
//!
//! * the outcome: applied (valid-but-awkward layers must keep working), refused with a
//!   clear `BadEntry`/`BadTar` error, or either (where we differ from moby only in
//!   clamping an escape inside the root instead of refusing it);
//! * zero escapes: everything outside the root (sentinel, victim, sibling dir) is
//!   byte-for-byte and stat-for-stat unchanged, and nothing new appeared outside the root;
//! * nothing read: no non-symlink inside the root shares an inode or the content of a file
//!   outside it;
//! * the layer root is removable afterwards;
//! * no panic (each case runs under `catch_unwind`).

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, symlink};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};

use layer_archive::Error;
use layer_archive::{ApplyOptions, EntryKind, Time, WhiteoutFormat, apply_layer};
use layer_archive::{Header, TarWriter};

/// Paths of one sandbox.
struct Ctx {
    base: PathBuf,
    root: PathBuf,
    victim: PathBuf,
    hello: Vec<u8>,
}

impl Ctx {
    /// The victim dir as an absolute path string (to plant absolute links at it).
    fn victim_abs(&self) -> String {
        self.victim.display().to_string()
    }
    /// A path under the root that mirrors an absolute host path.
    fn inside(&self, abs: &str) -> PathBuf {
        self.root.join(abs.trim_start_matches('/'))
    }
}

/// One tar entry of a case.
enum E {
    Dir(&'static str),
    File(&'static str, &'static str),
    Sym(String, String),
    Link(String, String),
    Char(&'static str, i64, i64),
    Block(&'static str, i64, i64),
    Fifo(&'static str),
    Header(Box<Header>, Vec<u8>),
    Raw(Vec<u8>),
}

fn sym(name: impl Into<String>, target: impl Into<String>) -> E {
    E::Sym(name.into(), target.into())
}
fn link(name: impl Into<String>, target: impl Into<String>) -> E {
    E::Link(name.into(), target.into())
}

enum Layer {
    Entries(Vec<E>),
    /// A whole stream, for malformed or huge inputs.
    Stream(Box<dyn Read>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    Applies,
    Refused,
    /// moby refuses, we clamp inside the root; both are safe.
    AppliesOrRefused,
}

type Setup = Box<dyn Fn(&Ctx)>;
type Build = Box<dyn Fn(&Ctx) -> Layer>;

struct Case {
    name: &'static str,
    source: &'static str,
    root_only: bool,
    format: WhiteoutFormat,
    lower: Setup,
    layer: Build,
    expect: Expect,
    check: Setup,
}

fn case(name: &'static str, source: &'static str) -> Case {
    Case {
        name,
        source,
        root_only: false,
        format: WhiteoutFormat::Plain,
        lower: Box::new(|_| {}),
        layer: Box::new(|_| Layer::Entries(Vec::new())),
        expect: Expect::Applies,
        check: Box::new(|_| {}),
    }
}

impl Case {
    fn lower(mut self, f: impl Fn(&Ctx) + 'static) -> Self {
        self.lower = Box::new(f);
        self
    }
    fn entries(mut self, f: impl Fn(&Ctx) -> Vec<E> + 'static) -> Self {
        self.layer = Box::new(move |c| Layer::Entries(f(c)));
        self
    }
    fn stream(mut self, f: impl Fn(&Ctx) -> Box<dyn Read> + 'static) -> Self {
        self.layer = Box::new(move |c| Layer::Stream(f(c)));
        self
    }
    fn refused(mut self) -> Self {
        self.expect = Expect::Refused;
        self
    }
    fn either(mut self) -> Self {
        self.expect = Expect::AppliesOrRefused;
        self
    }
    fn root_only(mut self) -> Self {
        self.root_only = true;
        self
    }
    fn overlay(mut self) -> Self {
        self.format = WhiteoutFormat::Overlay;
        self
    }
    fn check(mut self, f: impl Fn(&Ctx) + 'static) -> Self {
        self.check = Box::new(f);
        self
    }
}

fn build_tar(entries: Vec<E>) -> Vec<u8> {
    let mut w = TarWriter::new(Vec::new());
    for e in entries {
        match e {
            E::Dir(n) => w.append(&Header::dir(n), None).unwrap(),
            E::File(n, data) => w
                .append(
                    &Header::file(n, data.len() as u64),
                    Some(&mut data.as_bytes()),
                )
                .unwrap(),
            E::Sym(n, t) => w.append(&Header::symlink(n, t), None).unwrap(),
            E::Link(n, t) => w.append(&Header::hardlink(n, t), None).unwrap(),
            E::Char(n, ma, mi) | E::Block(n, ma, mi) => {
                let kind = if matches!(e, E::Char(..)) {
                    EntryKind::CharDevice
                } else {
                    EntryKind::BlockDevice
                };
                let mut h = Header::new(n, kind);
                (h.dev_major, h.dev_minor) = (ma, mi);
                w.append(&h, None).unwrap()
            }
            E::Fifo(n) => w.append(&Header::new(n, EntryKind::Fifo), None).unwrap(),
            E::Header(h, data) => w.append(&h, Some(&mut &data[..])).unwrap(),
            E::Raw(bytes) => w.get_mut().extend_from_slice(&bytes),
        }
    }
    w.finish().unwrap()
}

/// A single raw header block with `patch` applied and the checksum recomputed.
fn raw_header(name: &str, flag: u8, size: u64, patch: impl Fn(&mut [u8; 512])) -> Vec<u8> {
    let mut b = [0u8; 512];
    b[..name.len()].copy_from_slice(name.as_bytes());
    b[100..108].copy_from_slice(b"0000644\0");
    b[108..116].copy_from_slice(b"0000000\0");
    b[116..124].copy_from_slice(b"0000000\0");
    b[124..136].copy_from_slice(format!("{size:011o}\0").as_bytes());
    b[136..148].copy_from_slice(b"00000000000\0");
    b[156] = flag;
    b[257..263].copy_from_slice(b"ustar\0");
    b[263..265].copy_from_slice(b"00");
    patch(&mut b);
    b[148..156].fill(b' ');
    let sum: u32 = b.iter().map(|&x| u32::from(x)).sum();
    b[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
    b.to_vec()
}

/// A PAX 0.1 sparse entry: `map` is `offset,length,…`, `data` the packed payload.
fn sparse_entry(name: &str, map: &str, real_size: u64, data: &str) -> E {
    let mut records = Vec::new();
    let regions = if map.is_empty() {
        0
    } else {
        map.trim_end_matches(',').split(',').count() / 2
    };
    for (k, v) in [
        ("GNU.sparse.numblocks", regions.to_string()),
        ("GNU.sparse.map", map.trim_end_matches(',').to_string()),
        ("GNU.sparse.realsize", real_size.to_string()),
    ] {
        let body = k.len() + v.len() + 3;
        let mut len = body + 1;
        while len != body + len.to_string().len() {
            len = body + len.to_string().len();
        }
        records.extend(format!("{len} {k}={v}\n").into_bytes());
    }
    let mut raw = raw_header("PaxHeaders/s", b'x', records.len() as u64, |_| {});
    raw.extend(&records);
    raw.resize(raw.len().div_ceil(512) * 512, 0);
    raw.extend(raw_header(name, b'0', data.len() as u64, |_| {}));
    raw.extend(data.as_bytes());
    raw.resize(raw.len().div_ceil(512) * 512, 0);
    E::Raw(raw)
}

/// A reader of `n` zero bytes that never holds them in memory.
struct Zeros(u64);
impl Read for Zeros {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = (buf.len() as u64).min(self.0) as usize;
        buf[..n].fill(0);
        self.0 -= n as u64;
        Ok(n)
    }
}

fn is_root() -> bool {
    rustix::process::geteuid().is_root()
}

/// The table. Sources: A = anchors.md §5 row, G = go-archive test (spec §4.4 item).
fn corpus() -> Vec<Case> {
    vec![
        // ---- CVE-2014-6407: links let later entries write outside the root.
        case(
            "symlink-abs-dir-then-write",
            "A CVE-2014-6407 (a -> /etc; a/passwd)",
        )
        .entries(|c| vec![sym("a", c.victim_abs()), E::File("a/passwd", "pwned")])
        .check(|c| {
            assert!(
                c.inside(&c.victim_abs()).join("passwd").is_file(),
                "write lands inside the root"
            )
        }),
        // No case points a symlink at the host's real /etc: during development a regression
        // of such a case overwrote this machine's /etc/passwd. The victim-directory case above
        // is the same attack on a directory the test owns and can check.
        case(
            "hardlink-dotdot-dotdot",
            "A CVE-2014-6407 (hardlink to ../../x)",
        )
        .entries(|_| vec![link("x", "../../sentinel")])
        .refused(),
        // ---- CVE-2014-9356: absolute symlink as a path component.
        case("abs-symlink-component-to-slash", "A CVE-2014-9356")
            .entries(|c| {
                vec![
                    sym("abs", "/"),
                    E::File(leak(format!("abs{}/hello", c.victim_abs())), "pwned"),
                ]
            })
            .check(|c| {
                assert_eq!(
                    fs::read(c.inside(&c.victim_abs()).join("hello")).unwrap(),
                    b"pwned"
                )
            }),
        case("abs-symlink-component-to-victim", "A CVE-2014-9356")
            .entries(|c| vec![sym("v", c.victim_abs()), E::File("v/hello", "pwned")]),
        // ---- go-archive TestUntarInvalidFilenames / TestApplyLayerInvalidFilenames.
        case("dotdot-filename", "G 36")
            .entries(|_| vec![E::File("../victim/dotdot", "x")])
            .refused(),
        // Docker 20.10 cleans `/../x` to `x` (filepath.Clean of a rooted name): inside.
        case("slash-dotdot-filename", "G 36")
            .entries(|_| vec![E::File("/../victim/slash-dotdot", "x")])
            .check(|c| assert_eq!(fs::read(c.root.join("victim/slash-dotdot")).unwrap(), b"x")),
        // ---- TestUntarParentTraversalContained.
        case("entry-dotdot-dir", "G 37")
            .entries(|_| vec![E::Dir("..")])
            .refused(),
        case("entry-dotdot-pwned", "G 37")
            .entries(|_| vec![E::File("../pwned", "x")])
            .refused(),
        case("entry-dotdot-dotdot-pwned", "G 37")
            .entries(|_| vec![E::File("../../pwned", "x")])
            .refused(),
        case("entry-nested-climb", "G 37")
            .entries(|_| vec![E::File("a/../../pwned", "x")])
            .refused(),
        // ---- TestUntarSiblingPrefixContained (dest vs dest-evil).
        case("hardlink-sibling-prefix", "G 38 / A GHSA-hfg8-hc9c-6c3h")
            .entries(|_| vec![link("grab", "../root-evil/secret")])
            .refused(),
        // ---- TestUntarHardlinkToSymlink.
        case("hardlink-to-symlink", "G 39")
            .entries(|_| {
                vec![
                    sym("symlink1", "regfile"),
                    link("symlink2", "symlink1"),
                    E::File("regfile", "data"),
                ]
            })
            .check(|c| {
                let a = fs::symlink_metadata(c.root.join("symlink1")).unwrap();
                let b = fs::symlink_metadata(c.root.join("symlink2")).unwrap();
                assert!(b.file_type().is_symlink());
                assert_eq!(a.ino(), b.ino());
            }),
        // ---- TestApplyLayerInvalidHardlink, six scenarios.
        case("hardlink-dotdot-victim", "G 40")
            .entries(|_| vec![link("dotdot", "../victim/hello")])
            .refused(),
        case("hardlink-slash-dotdot-victim", "G 40")
            .entries(|_| vec![link("slash-dotdot", "/../victim/hello")])
            .refused(),
        case("hardlink-loophole-write", "G 40")
            .entries(|_| {
                vec![
                    link("loophole-victim", "../victim"),
                    E::File("loophole-victim/file", "x"),
                ]
            })
            .refused(),
        case("hardlink-loophole-symlink", "G 40")
            .entries(|_| {
                vec![
                    link("loophole-victim", "../victim"),
                    sym("symlink", "loophole-victim/hello"),
                ]
            })
            .refused(),
        case("hardlink-loophole-hardlink", "G 40")
            .entries(|_| {
                vec![
                    link("loophole-victim", "../victim"),
                    link("hardlink", "loophole-victim/hello"),
                ]
            })
            .refused(),
        case("hardlink-loophole-overwrite", "G 40")
            .entries(|_| {
                vec![
                    link("loophole-victim", "../victim"),
                    E::File("loophole-victim", "x"),
                ]
            })
            .refused(),
        // ---- TestApplyLayerInvalidSymlink / TestUntarInvalidSymlink.
        case("symlink-read-dotdot", "G 42").entries(|_| vec![sym("dotdot", "../victim/hello")]),
        case("symlink-read-slash-dotdot", "G 42")
            .entries(|_| vec![sym("slash-dotdot", "/../victim/hello")]),
        case("symlink-loophole-write", "G 42")
            .entries(|_| {
                vec![
                    sym("loophole-victim", "../victim"),
                    E::File("loophole-victim/file", "x"),
                ]
            })
            .either()
            .check(|c| assert!(!c.victim.join("file").exists())),
        case("symlink-loophole-hardlink-read", "G 42")
            .entries(|_| {
                vec![
                    sym("loophole-victim", "../victim"),
                    link("symlink", "loophole-victim/hello"),
                ]
            })
            .either(),
        case("symlink-loophole-symlink-read", "G 42").entries(|_| {
            vec![
                sym("loophole-victim", "../victim"),
                sym("symlink", "loophole-victim/hello"),
            ]
        }),
        case("symlink-loophole-overwrite", "G 42")
            .entries(|_| {
                vec![
                    sym("loophole-victim", "../victim"),
                    E::File("loophole-victim", "x"),
                ]
            })
            .check(|c| {
                assert!(
                    fs::symlink_metadata(c.root.join("loophole-victim"))
                        .unwrap()
                        .is_file()
                )
            }),
        case("symlink-nested-loophole", "G 42 (Untar)")
            .entries(|_| {
                vec![
                    E::Dir("dir/"),
                    sym("dir/loophole", "../../victim"),
                    E::File("dir/loophole/newdir/newfile", "x"),
                ]
            })
            .either()
            .check(|c| assert!(!c.victim.join("newdir").exists())),
        // ---- TestUntarSymlinkBreakout (two hops).
        case("symlink-two-hop-breakout", "G 43 / A GHSA-hfg8-hc9c-6c3h")
            .entries(|_| {
                vec![
                    E::Dir("inner/"),
                    sym("inner/go_up", ".."),
                    sym("inner/go_up/escape", "../victim"),
                    E::File("inner/go_up/escape/newfile", "x"),
                ]
            })
            .either()
            .check(|c| assert!(!c.victim.join("newfile").exists())),
        // ---- TestUnpackRejectsRelativeEscapeBeforeAbsoluteSymlink.
        case(
            "relative-escape-then-absolute",
            "G 51 (moby refuses; we clamp)",
        )
        .entries(|_| {
            vec![
                sym("escape", ".."),
                sym("absolute", "/target"),
                E::File("escape/absolute/file", "x"),
            ]
        })
        .either(),
        // ---- Valid-but-awkward: absolute symlinks and hardlinks resolve inside the root.
        case(
            "write-through-abs-symlink-target-exists",
            "G 50 (moby#53258)",
        )
        .lower(|c| {
            fs::create_dir_all(c.root.join("var")).unwrap();
            fs::create_dir_all(c.root.join("run/existing")).unwrap();
            symlink("/run", c.root.join("var/run")).unwrap();
        })
        .entries(|_| vec![E::File("var/run/existing/non-existing/file", "ok")])
        .check(|c| assert!(c.root.join("run/existing/non-existing/file").is_file())),
        case(
            "write-through-abs-symlink-target-missing",
            "G 50 (moby#53258)",
        )
        .lower(|c| {
            fs::create_dir_all(c.root.join("var")).unwrap();
            symlink("/run", c.root.join("var/run")).unwrap();
        })
        .entries(|_| vec![E::File("var/run/existing/non-existing/file", "ok")])
        .check(|c| {
            assert!(c.root.join("run/existing/non-existing/file").is_file());
            assert!(
                fs::symlink_metadata(c.root.join("var/run"))
                    .unwrap()
                    .file_type()
                    .is_symlink()
            );
        }),
        case("hardlink-source-through-abs-symlink", "G 52")
            .lower(|c| {
                fs::create_dir_all(c.root.join("var")).unwrap();
                fs::create_dir_all(c.root.join("run")).unwrap();
                symlink("/run", c.root.join("var/run")).unwrap();
            })
            .entries(|_| {
                vec![
                    E::File("var/run/source", "s"),
                    link("var/run/link", "var/run/source"),
                ]
            })
            .check(|c| {
                let a = fs::metadata(c.root.join("run/source")).unwrap();
                let b = fs::metadata(c.root.join("run/link")).unwrap();
                assert_eq!((a.ino(), a.nlink()), (b.ino(), 2));
            }),
        case("absolute-hardlink-target", "G 41 (go-archive#99, kaniko)")
            .entries(|_| {
                vec![
                    E::Dir("usr/bin/"),
                    E::File("usr/bin/perlbug", "perl"),
                    link("usr/bin/perlthanks", "/usr/bin/perlbug"),
                ]
            })
            .check(|c| {
                let a = fs::metadata(c.root.join("usr/bin/perlbug")).unwrap();
                let b = fs::metadata(c.root.join("usr/bin/perlthanks")).unwrap();
                assert_eq!(a.ino(), b.ino());
            }),
        case("implied-dirs-through-lower-symlink", "G 49")
            .lower(|c| {
                fs::create_dir_all(c.root.join("usr/lib")).unwrap();
                symlink("usr/lib", c.root.join("lib")).unwrap();
            })
            .entries(|_| vec![E::File("lib/systemd/system/container.service", "[Unit]")])
            .check(|c| {
                assert!(
                    c.root
                        .join("usr/lib/systemd/system/container.service")
                        .is_file()
                );
                assert!(
                    fs::symlink_metadata(c.root.join("lib"))
                        .unwrap()
                        .file_type()
                        .is_symlink()
                );
            }),
        case("symlink-targets-stored-verbatim", "G 59")
            .entries(|_| vec![sym("rel", "../../x/y"), sym("abs", "/etc/passwd")])
            .check(|c| {
                assert_eq!(
                    fs::read_link(c.root.join("rel")).unwrap(),
                    Path::new("../../x/y")
                );
                assert_eq!(
                    fs::read_link(c.root.join("abs")).unwrap(),
                    Path::new("/etc/passwd")
                );
            }),
        // ---- CVE-2021-32760: hardlink to a symlink pointing outside, then a mode change.
        case("hardlink-symlink-chmod", "A CVE-2021-32760").entries(|c| {
            let mut h = Header::hardlink("hl", "passwd");
            h.mode = 0o777;
            vec![
                sym("passwd", format!("{}/hello", c.victim_abs())),
                E::Header(Box::new(h), Vec::new()),
            ]
        }),
        case("hardlink-symlink-chmod-relative", "A CVE-2021-32760").entries(|_| {
            let mut h = Header::hardlink("hl", "passwd");
            h.mode = 0o4777;
            vec![
                sym("passwd", "../victim/hello"),
                E::Header(Box::new(h), Vec::new()),
            ]
        }),
        // ---- CVE-2025-47290: a directory replaced by a symlink mid-archive.
        case(
            "dir-replaced-by-symlink-to-root",
            "A CVE-2025-47290 (SymlinkOverridePath)",
        )
        .entries(|c| {
            vec![
                E::Dir("dir/"),
                sym("dir", "/"),
                E::File(leak(format!("dir{}/hello", c.victim_abs())), "pwned"),
            ]
        })
        .check(|c| {
            assert_eq!(
                fs::read(c.inside(&c.victim_abs()).join("hello")).unwrap(),
                b"pwned"
            )
        }),
        case("dir-replaced-by-symlink-to-victim", "A CVE-2025-47290").entries(|c| {
            vec![
                E::Dir("d/"),
                E::File("d/a", "1"),
                sym("d", c.victim_abs()),
                E::File("d/hello", "pwned"),
            ]
        }),
        // ---- CVE-2021-41089: missing parents resolved through a symlink.
        case(
            "missing-parent-through-escaping-symlink",
            "A CVE-2021-41089",
        )
        .entries(|_| {
            vec![
                sym("link", "../victim/sub"),
                E::File("link/newdir/file", "x"),
            ]
        })
        .either()
        .check(|c| assert!(!c.victim.join("sub").exists())),
        // ---- CVE-2018-15664 / CVE-2019-10152 class: pre-planted links in the lower layer.
        case("lower-dir-symlink-replaced-by-dir", "A CVE-2018-15664")
            .lower(|c| symlink(c.victim_abs(), c.root.join("d")).unwrap())
            .entries(|_| vec![E::Dir("d/"), E::File("d/hello", "pwned")])
            .check(|c| assert!(fs::symlink_metadata(c.root.join("d")).unwrap().is_dir())),
        case("lower-file-symlink-replaced-by-file", "A CVE-2018-15664")
            .lower(|c| symlink(c.victim.join("hello"), c.root.join("f")).unwrap())
            .entries(|_| vec![E::File("f", "pwned")])
            .check(|c| assert_eq!(fs::read(c.root.join("f")).unwrap(), b"pwned")),
        case("whiteout-through-lower-symlink", "A CVE-2018-15664")
            .lower(|c| symlink(c.victim_abs(), c.root.join("link")).unwrap())
            .entries(|_| vec![E::File("link/.wh.hello", "")]),
        case("opaque-through-lower-symlink", "A CVE-2018-15664")
            .lower(|c| symlink(c.victim_abs(), c.root.join("link")).unwrap())
            .entries(|_| vec![E::File("link/.wh..wh..opq", "")]),
        case("hardlink-through-lower-symlink", "A CVE-2019-10152")
            .lower(|c| symlink(c.victim_abs(), c.root.join("l")).unwrap())
            .entries(|_| vec![link("grab", "l/hello")])
            .refused(),
        case(
            "xattr-through-symlink",
            "A CVE-2021-32760 (metadata via fd only)",
        )
        .entries(|c| {
            let mut h = Header::symlink("s", format!("{}/hello", c.victim_abs()));
            h.xattrs.push((b"user.pwn".to_vec(), b"1".to_vec()));
            vec![E::Header(Box::new(h), Vec::new())]
        }),
        case("symlink-loop", "A CVE-2014-6407 family")
            .entries(|_| vec![sym("a", "b"), sym("b", "a"), E::File("a/file", "x")])
            .refused(),
        // ---- Header caps: CVE-2022-2879, CVE-2025-58183.
        case("pax-header-100mb", "A CVE-2022-2879")
            .stream(|_| {
                let head = raw_header("PaxHeaders/x", b'x', 100 << 20, |_| {});
                Box::new(std::io::Cursor::new(head).chain(Zeros(100 << 20)))
            })
            .refused(),
        case("gnu-longname-10mb", "A CVE-2022-2879 (long-name chains)")
            .stream(|_| {
                Box::new(
                    std::io::Cursor::new(raw_header("././@LongLink", b'L', 10 << 20, |_| {}))
                        .chain(Zeros(10 << 20)),
                )
            })
            .refused(),
        case("gnu-longname-chain", "A CVE-2022-2879 (long-name chains)")
            .stream(|_| {
                let mut v = Vec::new();
                for _ in 0..12 {
                    v.extend(raw_header("././@LongLink", b'L', 5, |_| {}));
                    let mut block = vec![0u8; 512];
                    block[..5].copy_from_slice(b"aaaa\0");
                    v.extend(block);
                }
                v.extend(raw_header("x", b'0', 0, |_| {}));
                Box::new(std::io::Cursor::new(v))
            })
            .refused(),
        case(
            "gnu-sparse-map-1m-regions",
            "A CVE-2025-58183 (1 million sparse regions)",
        )
        .stream(|_| {
            // An old-GNU sparse header whose map goes on for 50,000 extension blocks
            // (over a million regions); refused once the region cap is reached.
            let mut v = raw_header("sparse", b'S', 0, |b| {
                b[482] = 1;
                b[483..495].copy_from_slice(b"77777777777\0");
            });
            for i in 0..50_000u64 {
                let mut block = vec![0u8; 512];
                for j in 0..21u64 {
                    let at = (j * 24) as usize;
                    let offset = format!("{:011o}\0", (i * 21 + j) * 2);
                    block[at..at + 12].copy_from_slice(offset.as_bytes());
                    block[at + 12..at + 24].copy_from_slice(b"00000000001\0");
                }
                block[504] = 1;
                v.extend(block);
            }
            Box::new(std::io::Cursor::new(v))
        })
        .refused(),
        // Go reads an old-GNU sparse file with type flag `S`, which Docker's extraction
        // refuses ("unhandled tar header type 83"); in a ustar block Go refuses it.
        case(
            "gnu-sparse-empty",
            "G sparse files (empty old-GNU sparse file)",
        )
        .stream(|_| {
            let mut v = raw_header("sparse", b'S', 0, |b| {
                b[257..263].copy_from_slice(b"ustar ");
                b[263..265].copy_from_slice(b" \0");
            });
            v.extend(vec![0u8; 1024]);
            Box::new(std::io::Cursor::new(v))
        })
        .refused(),
        case(
            "gnu-sparse-in-ustar-block",
            "G sparse files (S outside a GNU header)",
        )
        .stream(|_| {
            let mut v = raw_header("sparse", b'S', 0, |_| {});
            v.extend(vec![0u8; 1024]);
            Box::new(std::io::Cursor::new(v))
        })
        .refused(),
        case("pax-sparse-map", "A CVE-2025-58183")
            .entries(|_| {
                let records = b"30 GNU.sparse.map=0,1,2,3,4,5\n".to_vec();
                let mut pax = raw_header("PaxHeaders/s", b'x', records.len() as u64, |_| {});
                pax.extend(&records);
                pax.resize(pax.len().div_ceil(512) * 512, 0);
                vec![E::Raw(pax), E::File("s", "")]
            })
            .refused(),
        case("pax-sparse-1m-regions", "A CVE-2025-58183 (sparse map cap)")
            .entries(|_| vec![sparse_entry("s", &"0,1,".repeat(70_000), 70_000, "")])
            .refused(),
        case("sparse-region-past-size", "A CVE-2025-58183")
            .entries(|_| vec![sparse_entry("s", "0,10", 5, "0123456789")])
            .refused(),
        case("sparse-map-claims-missing-data", "A CVE-2025-58183")
            .entries(|_| vec![sparse_entry("s", "0,4,100,4", 200, "abcd")])
            .refused(),
        case("sparse-valid-pax-0.1", "G sparse files (Go expands them)")
            .entries(|_| vec![sparse_entry("s", "4096,4", 8192, "abcd")])
            .check(|c| {
                let data = fs::read(c.root.join("s")).unwrap();
                assert_eq!(data.len(), 8192);
                assert_eq!(&data[4096..4100], b"abcd");
                assert!(data[..4096].iter().all(|&b| b == 0));
            }),
        case("path-longer-than-path-max", "A pattern 3 (path length cap)")
            .entries(|_| vec![E::File(leak("a/".repeat(2100) + "f"), "x")])
            .refused(),
        case("too-many-xattrs", "A pattern 3 (xattr count cap)")
            .entries(|_| {
                let mut h = Header::file("f", 0);
                for i in 0..200 {
                    h.xattrs
                        .push((format!("user.x{i}").into_bytes(), b"v".to_vec()));
                }
                vec![E::Header(Box::new(h), Vec::new())]
            })
            .refused(),
        case("xattr-value-too-big", "A pattern 3 (xattr size cap)")
            .entries(|_| {
                let mut h = Header::file("f", 0);
                h.xattrs.push((b"user.big".to_vec(), vec![b'v'; 70_000]));
                vec![E::Header(Box::new(h), Vec::new())]
            })
            .refused(),
        case("nul-in-pax-path", "A pattern 3")
            .entries(|_| {
                let mut h = Header::file("placeholder", 0);
                h.name = b"x".repeat(120);
                h.name[50] = 0;
                vec![E::Header(Box::new(h), Vec::new())]
            })
            .refused(),
        // ---- CVE-2017-14992: gigabytes of trailing zeros stream through in bounded memory.
        case("huge-trailing-zero-padding", "A CVE-2017-14992")
            .stream(|_| {
                let tar = build_tar(vec![E::File("f", "data")]);
                Box::new(std::io::Cursor::new(tar).chain(Zeros(256 << 20)))
            })
            .check(|c| assert_eq!(fs::read(c.root.join("f")).unwrap(), b"data")),
        // ---- Malformed streams.
        case(
            "truncated-payload",
            "A CVE-2021-20291 (truncated streams fail fast)",
        )
        .stream(|_| {
            let mut tar = build_tar(vec![E::File("f", "0123456789")]);
            tar.truncate(512 + 4);
            Box::new(std::io::Cursor::new(tar))
        })
        .refused(),
        case("truncated-header", "A CVE-2021-20291")
            .stream(|_| Box::new(std::io::Cursor::new(vec![b'a'; 300])))
            .refused(),
        case("bad-checksum", "A CVE-2021-20291")
            .stream(|_| {
                let mut tar = build_tar(vec![E::File("f", "x")]);
                tar[0] ^= 1;
                Box::new(std::io::Cursor::new(tar))
            })
            .refused(),
        case("garbage-after-single-zero-block", "A CVE-2021-20291")
            .stream(|_| {
                let mut v = vec![0u8; 512];
                v.extend(vec![b'z'; 512]);
                Box::new(std::io::Cursor::new(v))
            })
            .refused(),
        case("empty-input", "G 70 (empty archive)").stream(|_| Box::new(std::io::empty())),
        case("device-number-over-u32", "G 57")
            .stream(|_| {
                let mut v = raw_header("dev", b'3', 0, |b| {
                    b[329..337].copy_from_slice(&[0x80, 0, 0, 0x02, 0, 0, 0, 0]);
                });
                v.extend(vec![0u8; 1024]);
                Box::new(std::io::Cursor::new(v))
            })
            .refused(),
        case("unhandled-type-flag", "G createTarFile default")
            .stream(|_| {
                let mut v = raw_header("vol", b'V', 0, |_| {});
                v.extend(vec![0u8; 1024]);
                Box::new(std::io::Cursor::new(v))
            })
            .refused(),
        case("pax-global-header-no-parent", "G 58")
            .stream(|_| {
                let records = b"16 comment=hey!\n".to_vec();
                let mut v = raw_header("a/b/global", b'g', records.len() as u64, |_| {});
                v.extend(&records);
                v.resize(1024, 0);
                v.extend(build_tar(vec![E::File("f", "x")]));
                Box::new(std::io::Cursor::new(v))
            })
            .check(|c| {
                assert!(
                    !c.root.join("a").exists(),
                    "a global header created a parent"
                )
            }),
        // ---- Whiteout names.
        case("whiteout-empty-name", "G 46")
            .entries(|_| vec![E::File("d/.wh.", "")])
            .refused(),
        case("whiteout-dot", "G 46 (quirk fixed)")
            .entries(|_| vec![E::File("d/.wh..", "")])
            .refused(),
        case("whiteout-dotdot", "G 46")
            .entries(|_| vec![E::File(".wh...", "")])
            .refused(),
        case("overlay-whiteout-dot", "G 46")
            .overlay()
            .entries(|_| vec![E::File("d/.wh..", "")])
            .refused(),
        case(
            "whiteout-of-recreated-dir",
            "A pattern 4 (whiteouts of re-created dirs)",
        )
        .lower(|c| {
            fs::create_dir_all(c.root.join("d/sub")).unwrap();
            fs::write(c.root.join("d/old"), "old").unwrap();
        })
        .entries(|_| {
            vec![
                E::Dir("d/"),
                E::File("d/.wh..wh..opq", ""),
                E::File("d/new", "new"),
            ]
        })
        .check(|c| {
            assert!(!c.root.join("d/old").exists() && !c.root.join("d/sub").exists());
            assert!(c.root.join("d/new").is_file());
        }),
        case("whiteout-then-recreate-same-layer", "A pattern 4")
            .lower(|c| fs::create_dir_all(c.root.join("d/x")).unwrap())
            .entries(|_| vec![E::File(".wh.d", ""), E::Dir("d/"), E::File("d/y", "y")])
            .check(|c| {
                assert!(!c.root.join("d/x").exists());
                assert!(c.root.join("d/y").is_file());
            }),
        case("aufs-metadata-skipped", "G 44 (.wh..wh.plnk)")
            .entries(|_| {
                vec![
                    E::Dir(".wh..wh.plnk/"),
                    E::File(".wh..wh.plnk/1234", "x"),
                    E::File("f", "y"),
                ]
            })
            .check(|c| assert!(!c.root.join(".wh..wh.plnk").exists())),
        // ---- Odd but valid names and entries.
        case("dotdot-prefixed-name", "G 70 (..gitme)")
            .entries(|_| vec![E::File("..gitme", "x")])
            .check(|c| assert!(c.root.join("..gitme").is_file())),
        case("dot-entries-skipped", "G UnpackLayer (\".\" skipped)")
            .entries(|_| vec![E::Dir("./"), E::Dir("."), E::File("./f", "x")]),
        case("negative-mtime-clamped", "G createTarFile (times clamped)")
            .entries(|_| {
                let mut h = Header::file("old", 0);
                h.mtime = Time { sec: -5, nsec: 0 };
                vec![E::Header(Box::new(h), Vec::new())]
            })
            .check(|c| assert_eq!(fs::symlink_metadata(c.root.join("old")).unwrap().mtime(), 0)),
        case(
            "duplicate-entries-last-wins",
            "A pitfall 8 (duplicates are valid tar)",
        )
        .entries(|_| vec![E::File("f", "one"), E::File("f", "two")])
        .check(|c| assert_eq!(fs::read(c.root.join("f")).unwrap(), b"two")),
        case("dir-over-file", "G Unpack (replace non-dir)")
            .lower(|c| fs::write(c.root.join("d"), "file").unwrap())
            .entries(|_| vec![E::Dir("d/"), E::File("d/f", "x")])
            .check(|c| assert!(c.root.join("d/f").is_file())),
        case("empty-symlink-target", "G createTarFile")
            .entries(|_| vec![sym("s", "")])
            .refused(),
        case("hardlink-to-self", "G createTarFile")
            .entries(|_| vec![link("a", "a")])
            .refused(),
        case("hardlink-to-missing", "G createTarFile")
            .entries(|_| vec![link("a", "missing")])
            .refused(),
        case("hardlink-to-directory", "G createTarFile")
            .entries(|_| vec![E::Dir("d/"), link("a", "d")])
            .refused(),
        case("hardlink-to-root", "G createTarFile")
            .entries(|_| vec![link("a", "/")])
            .refused(),
        case("deep-nesting", "A pattern 3 (deep trees stay removable)")
            .entries(|_| vec![E::File(leak("d/".repeat(1500) + "f"), "deep")]),
        // ---- Device nodes (valid-but-awkward; need root).
        case("char-device", "A pattern 4 (device nodes)")
            .root_only()
            .entries(|_| vec![E::Char("dev/null", 1, 3)])
            .check(|c| {
                assert_eq!(
                    fs::symlink_metadata(c.root.join("dev/null"))
                        .unwrap()
                        .rdev(),
                    rustix::fs::makedev(1, 3)
                )
            }),
        case("block-device", "A pattern 4")
            .root_only()
            .entries(|_| vec![E::Block("dev/loop9", 7, 9)]),
        case("fifo", "G 54")
            .entries(|_| vec![E::Fifo("p")])
            .check(|c| {
                assert!(std::os::unix::fs::FileTypeExt::is_fifo(
                    &fs::symlink_metadata(c.root.join("p")).unwrap().file_type()
                ))
            }),
        case("overlay-whiteout-char-0-0", "G 45")
            .root_only()
            .overlay()
            .entries(|_| {
                vec![
                    E::Dir("d/"),
                    E::File("d/.wh.gone", ""),
                    E::File("d/.wh..wh..opq", ""),
                ]
            })
            .check(|c| {
                let m = fs::symlink_metadata(c.root.join("d/gone")).unwrap();
                assert!(std::os::unix::fs::FileTypeExt::is_char_device(
                    &m.file_type()
                ));
                assert_eq!(m.rdev(), 0);
                let v = rustix::fs::getxattr(
                    c.root.join("d"),
                    "trusted.overlay.opaque",
                    &mut [0u8; 4][..],
                )
                .unwrap();
                assert_eq!(v, 1);
            }),
        case(
            "overlay-whiteout-through-symlink",
            "A CVE-2018-15664 (overlay)",
        )
        .root_only()
        .overlay()
        .lower(|c| symlink(c.victim_abs(), c.root.join("link")).unwrap())
        .entries(|_| {
            vec![
                E::File("link/.wh.hello", ""),
                E::File("link/.wh..wh..opq", ""),
            ]
        }),
        case(
            "setuid-sticky-modes",
            "G createTarFile (chmod with special bits)",
        )
        .entries(|_| {
            let mut f = Header::file("suid", 0);
            f.mode = 0o4755;
            let mut d = Header::dir("tmp/");
            d.mode = 0o1777;
            vec![
                E::Header(Box::new(f), Vec::new()),
                E::Header(Box::new(d), Vec::new()),
            ]
        })
        .check(|c| {
            assert_eq!(
                fs::metadata(c.root.join("suid")).unwrap().mode() & 0o7777,
                0o4755
            );
            assert_eq!(
                fs::metadata(c.root.join("tmp")).unwrap().mode() & 0o7777,
                0o1777
            );
        }),
    ]
}

/// Leaks a String into a `&'static str` (test-only convenience for computed names).
fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

/// Everything under `dir` except `skip`, by relative path: type, mode, owner, size, mtime,
/// inode, content or link target.
fn snapshot(dir: &Path, skip: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    for entry in walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| e.path() != skip)
    {
        let entry = entry.unwrap();
        let m = fs::symlink_metadata(entry.path()).unwrap();
        let body = if m.file_type().is_symlink() {
            fs::read_link(entry.path()).unwrap().display().to_string()
        } else if m.is_file() {
            format!("{:?}", fs::read(entry.path()).unwrap())
        } else {
            String::new()
        };
        let mut names = vec![0u8; 4096];
        let n = rustix::fs::llistxattr(entry.path(), &mut names[..]).unwrap_or(0);
        let xattrs = String::from_utf8_lossy(&names[..n]).into_owned();
        let rel = entry.path().strip_prefix(dir).unwrap().to_path_buf();
        let stat = format!(
            "mode={:o} uid={} gid={} size={} mtime={}.{} ino={} nlink={} xattrs={xattrs:?} {body}",
            m.mode(),
            m.uid(),
            m.gid(),
            m.size(),
            m.mtime(),
            m.mtime_nsec(),
            m.ino(),
            m.nlink()
        );
        out.insert(rel, stat);
    }
    out
}

/// Inodes and contents of the regular files outside the root.
fn outside_files(snapshot_dir: &Path, skip: &Path) -> Vec<(u64, Vec<u8>)> {
    walkdir::WalkDir::new(snapshot_dir)
        .into_iter()
        .filter_entry(|e| e.path() != skip)
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_file())
        .map(|e| {
            (
                fs::metadata(e.path()).unwrap().ino(),
                fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

/// Runs one case; `Err` describes a failure.
fn run_case(case: &Case, n: usize) -> Result<&'static str, String> {
    let base = std::env::temp_dir().join(format!(
        "gd-corpus-{}-{n}-{:x}",
        std::process::id(),
        rand::random::<u32>()
    ));
    let sandbox = base.join("sandbox");
    let root = sandbox.join("root");
    let victim = sandbox.join("victim");
    fs::create_dir_all(&root).unwrap();
    fs::create_dir_all(&victim).unwrap();
    fs::create_dir_all(sandbox.join("root-evil")).unwrap();
    let hello = format!(
        "hello from the victim, case {n}, {:?}",
        std::time::SystemTime::now()
    )
    .into_bytes();
    fs::write(victim.join("hello"), &hello).unwrap();
    fs::write(sandbox.join("root-evil/secret"), "secret").unwrap();
    fs::write(base.join("sentinel"), "sentinel").unwrap();
    let ctx = Ctx {
        base: base.clone(),
        root: root.clone(),
        victim,
        hello,
    };

    (case.lower)(&ctx);
    let before = snapshot(&ctx.base, &root);
    let outside = outside_files(&ctx.base, &root);

    let opts = ApplyOptions {
        whiteouts: case.format,
        ..ApplyOptions::for_current_user().with_layer(case.name)
    };
    let result = catch_unwind(AssertUnwindSafe(|| match (case.layer)(&ctx) {
        Layer::Entries(entries) => {
            let tar = build_tar(entries);
            apply_layer(&root, &mut &tar[..], &opts)
        }
        Layer::Stream(mut r) => apply_layer(&root, &mut r, &opts),
    }));
    let result = match result {
        Ok(r) => r,
        Err(_) => return Err("PANIC during apply".into()),
    };
    let outcome = match (&result, case.expect) {
        (Ok(_), Expect::Applies | Expect::AppliesOrRefused) => "applied",
        (
            Err(Error::BadEntry { layer, .. } | Error::BadTar { layer, .. }),
            Expect::Refused | Expect::AppliesOrRefused,
        ) => {
            if layer != case.name {
                return Err(format!(
                    "error does not name the layer: {}",
                    result.unwrap_err()
                ));
            }
            "refused"
        }
        (Ok(_), Expect::Refused) => return Err("applied, but must be refused".into()),
        (Err(e), _) => return Err(format!("unexpected error: {e}")),
    };
    if outcome == "applied" {
        catch_unwind(AssertUnwindSafe(|| (case.check)(&ctx))).map_err(|e| {
            let msg = e
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
            format!("check failed: {}", msg.unwrap_or_default())
        })?;
    }

    // Zero escapes: the world outside the root is exactly as before.
    let after = snapshot(&ctx.base, &root);
    if before != after {
        let changed: Vec<_> = after
            .iter()
            .filter(|(k, v)| before.get(*k) != Some(v))
            .map(|(k, _)| k.display().to_string())
            .chain(
                before
                    .keys()
                    .filter(|k| !after.contains_key(*k))
                    .map(|k| format!("-{}", k.display())),
            )
            .collect();
        return Err(format!("ESCAPE: outside the root changed: {changed:?}"));
    }
    // Nothing read: no file inside the root shares an inode or the content of one outside.
    for entry in walkdir::WalkDir::new(&root)
        .into_iter()
        .filter_map(|e| e.ok())
    {
        if !entry.file_type().is_file() {
            continue;
        }
        let ino = fs::metadata(entry.path()).unwrap().ino();
        let data = fs::read(entry.path()).unwrap_or_default();
        if outside
            .iter()
            .any(|(i, d)| *i == ino || (*d == data && !data.is_empty()))
        {
            return Err(format!(
                "READ: {} exposes a file outside the root",
                entry.path().display()
            ));
        }
        if data == ctx.hello {
            return Err(format!(
                "READ: {} holds the victim's content",
                entry.path().display()
            ));
        }
    }
    // The layer stays removable.
    let sandbox_fd = rustix::fs::open(
        &sandbox,
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
        rustix::fs::Mode::empty(),
    )
    .unwrap();
    safe_root::remove_all_at(std::os::fd::AsFd::as_fd(&sandbox_fd), c"root")
        .map_err(|e| format!("layer root not removable: {e}"))?;
    if root.exists() {
        return Err("layer root still exists after removal".into());
    }
    let _ = fs::remove_dir_all(&base);
    Ok(outcome)
}

#[test]
fn bad_input_corpus() {
    let cases = corpus();
    let root = is_root();
    let (mut applied, mut refused, mut skipped) = (0, 0, 0);
    let mut failures = Vec::new();
    for (n, case) in cases.iter().enumerate() {
        if case.root_only && !root {
            let _ = testkit::gate::skip_variant(
                Some(case.name),
                testkit::gate::Reason::NotRoot,
                "a root-only case (mknod, chown, trusted xattrs)",
            );
            skipped += 1;
            continue;
        }
        match run_case(case, n) {
            Ok("applied") => applied += 1,
            Ok(_) => refused += 1,
            Err(why) => failures.push(format!("{} [{}]: {why}", case.name, case.source)),
        }
    }
    eprintln!(
        "bad-input corpus: {} cases, {applied} applied, {refused} refused, {skipped} skipped, {} failed",
        cases.len(),
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "corpus failures:\n{}",
        failures.join("\n")
    );
    assert!(
        cases.len() >= 80,
        "the corpus shrank: {} cases",
        cases.len()
    );
}
