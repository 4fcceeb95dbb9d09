//! Entry names: lexical cleaning and the "stays inside the root" check.
//!
//! A name is cleaned like moby's `filepath.Clean(name)` before it is joined to the root:
//! empty and `.` components vanish and `..` removes the previous component. In a rooted
//! name `..` stops at the root (`/../x` is `x`, as moby extracts it). In a relative name a
//! `..` that would climb above the root is a breakout: moby's `UnpackLayer` rejects the
//! entry (and so do we). The cleaned name is only a
//! lexical view; symlinks met on the way are resolved later, inside the root, by
//! [`safe_root::SafeRoot`].

/// A cleaned, root-relative name: components joined by `/`, no leading `/`, never `..`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CleanName(Vec<u8>);

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NameError {
    /// The name climbs above the root with `..`.
    Breakout,
    /// The name contains a NUL byte.
    Nul,
}

impl std::fmt::Display for NameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NameError::Breakout => f.write_str("path climbs out of the layer root (breakout)"),
            NameError::Nul => f.write_str("path contains a NUL byte"),
        }
    }
}

/// Whether every `/`-separated component of `name` is a plain one: not empty, not `.`, not
/// `..` (so a leading, trailing or doubled `/` fails too). Cleaning then changes nothing.
///
/// One SIMD scan for the slashes, not a step per byte (a 2,048-level name has 2,048
/// components), and no substring searcher (`memmem::find` builds one per call, which
/// costs more than a short name: ~4 % of tar-split reassembly in callgrind).
pub fn plain_components(name: &[u8]) -> bool {
    let plain = |start: usize| {
        let rest = &name[start..];
        let end = memchr::memchr(b'/', rest).unwrap_or(rest.len());
        !matches!(&rest[..end], b"" | b"." | b"..")
    };
    plain(0) && memchr::memchr_iter(b'/', name).all(|i| plain(i + 1))
}

/// `raw` without its one trailing `/` when cleaning would change nothing else: not rooted,
/// not empty, and no empty, `.` or `..` component. `None` means "clean it the long way".
fn already_clean(raw: &[u8]) -> Option<&[u8]> {
    let name = raw.strip_suffix(b"/").unwrap_or(raw);
    plain_components(name).then_some(name)
}

/// Go's `path.Clean` relative to the root, component by component (`raw` has no NUL).
fn clean_long(raw: &[u8]) -> Result<Vec<u8>, NameError> {
    let rooted = raw.first() == Some(&b'/');
    let mut parts: Vec<&[u8]> = Vec::new();
    for comp in raw.split(|&b| b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => {
                if parts.pop().is_none() && !rooted {
                    return Err(NameError::Breakout);
                }
            }
            c => parts.push(c),
        }
    }
    Ok(parts.join(&b'/'))
}

impl CleanName {
    /// Cleans `raw`. `Ok` with an empty name means the root itself (`/`, `.`, `./`).
    pub fn new(raw: &[u8]) -> Result<Self, NameError> {
        if raw.contains(&0) {
            return Err(NameError::Nul);
        }
        if let Some(clean) = already_clean(raw) {
            // Most names: one scan and one copy, not a slice per component (a 2,048-level
            // name has 2,048 of them, issue #17).
            return Ok(CleanName(clean.to_vec()));
        }
        clean_long(raw).map(CleanName)
    }

    /// Builds a name from already-clean bytes (no checks; internal use).
    #[cfg_attr(not(feature = "fs"), allow(dead_code))] // only the applier builds names
    pub(crate) fn from_clean(bytes: Vec<u8>) -> Self {
        CleanName(bytes)
    }

    /// Whether this is the root itself.
    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The bytes, `a/b/c`.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// The parent (`a/b` for `a/b/c`; empty for a top-level name) and the base name.
    pub fn split_last(&self) -> (&[u8], &[u8]) {
        match self.0.iter().rposition(|&b| b == b'/') {
            Some(i) => (&self.0[..i], &self.0[i + 1..]),
            None => (&[], &self.0),
        }
    }

    /// `self/child`.
    pub fn join(&self, child: &[u8]) -> CleanName {
        if self.0.is_empty() {
            return CleanName(child.to_vec());
        }
        let mut v = Vec::with_capacity(self.0.len() + 1 + child.len());
        v.extend_from_slice(&self.0);
        v.push(b'/');
        v.extend_from_slice(child);
        CleanName(v)
    }

    /// Whether `self` is `other` or lies under it.
    pub fn starts_with(&self, other: &[u8]) -> bool {
        other.is_empty()
            || (self.0.starts_with(other)
                && (self.0.len() == other.len() || self.0[other.len()] == b'/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clean(s: &str) -> Result<String, NameError> {
        CleanName::new(s.as_bytes()).map(|n| String::from_utf8(n.0).unwrap())
    }

    #[test]
    fn cleaning_matches_go_path_clean() {
        assert_eq!(clean("/a//b/./c/").unwrap(), "a/b/c");
        assert_eq!(clean("a/../b").unwrap(), "b");
        assert_eq!(clean("./").unwrap(), "");
        assert_eq!(clean("..gitme").unwrap(), "..gitme");
        assert_eq!(clean("../x"), Err(NameError::Breakout));
        assert_eq!(clean("/../x").unwrap(), "x");
        assert_eq!(clean("/a/../../x").unwrap(), "x");
        assert_eq!(clean("/..").unwrap(), "");
        assert_eq!(clean("a/../../x"), Err(NameError::Breakout));
        assert_eq!(clean(".."), Err(NameError::Breakout));
    }

    /// The shortcut for names that are already clean gives what cleaning component by
    /// component gives, for every name of up to four components drawn from the awkward ones.
    #[test]
    fn shortcut_agrees_with_cleaning() {
        let parts: [&[u8]; 8] = [b"", b".", b"..", b"a", b"b", b"..a", b".b", b"a."];
        let mut names: Vec<Vec<u8>> = vec![Vec::new()];
        for _ in 0..4 {
            let mut longer = Vec::new();
            for n in &names {
                for p in parts {
                    let mut m = n.clone();
                    if !m.is_empty() || p.is_empty() {
                        m.push(b'/');
                    }
                    m.extend_from_slice(p);
                    longer.push(m);
                }
            }
            names.extend(longer);
        }
        let mut shortcut = 0;
        for n in &names {
            for raw in [
                n.clone(),
                [n.as_slice(), b"/"].concat(),
                [b"/", n.as_slice()].concat(),
            ] {
                let want = clean_long(&raw).map(CleanName);
                assert_eq!(
                    CleanName::new(&raw),
                    want,
                    "{:?}",
                    String::from_utf8_lossy(&raw)
                );
                shortcut += usize::from(already_clean(&raw).is_some());
            }
        }
        assert!(shortcut > 1000, "the shortcut was taken {shortcut} times");
    }

    #[test]
    fn split_and_prefix() {
        let n = CleanName::new(b"a/b/c").unwrap();
        assert_eq!(n.split_last(), (&b"a/b"[..], &b"c"[..]));
        assert!(n.starts_with(b"a/b"));
        assert!(!n.starts_with(b"a/bc"));
        assert!(CleanName::new(b"x").unwrap().split_last().0.is_empty());
    }
}
