//! Go's `filepath.Clean` on raw bytes (Unix), used for the duplicate-path rule.
//!
//! Lexical only: collapse `//`, drop `.` elements, resolve `..` against the preceding
//! element (never above `/` for rooted paths), drop a trailing `/`, and turn "" into ".".

/// Returns the cleaned form of `path`.
pub fn clean_path(path: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(path.len().max(1));
    clean_path_into(path, &mut out);
    out
}

/// Whether `path` is already clean, without building it (not empty, no empty, `.` or `..`
/// element, no trailing slash but the root's). False for a few clean names (`.`, `..`),
/// which then take the general path.
pub(crate) fn is_clean(path: &[u8]) -> bool {
    match path {
        [] => false,
        b"/" => true,
        [.., b'/'] => false,
        _ => {
            let rest = path.strip_prefix(b"/").unwrap_or(path);
            layer_archive::codec::name::plain_components(rest)
        }
    }
}

/// `path` itself, or `path` without its trailing slash, when that is its cleaned form; `None`
/// when it must be built ([`clean_path_into`]). Every directory entry ends in a slash, and a
/// 2,048-level name built element by element costs as much as the rest of its entry.
pub(crate) fn clean_view(path: &[u8]) -> Option<&[u8]> {
    if is_clean(path) {
        return Some(path);
    }
    let trimmed = path.strip_suffix(b"/")?;
    is_clean(trimmed).then_some(trimmed)
}

/// Writes the cleaned form of `path` to `out` (cleared first).
pub(crate) fn clean_path_into(path: &[u8], out: &mut Vec<u8>) {
    out.clear();
    if path.is_empty() {
        out.push(b'.');
        return;
    }
    let rooted = path[0] == b'/';
    if rooted {
        out.push(b'/');
    }
    // `floor` is the length of `out` below which `..` cannot backtrack.
    let mut floor = out.len();
    for elem in path.split(|&b| b == b'/') {
        match elem {
            b"" | b"." => {}
            b".." => {
                if out.len() > floor {
                    // Remove the last element (and the separator before it).
                    let cut = out[floor..]
                        .iter()
                        .rposition(|&b| b == b'/')
                        .map_or(floor, |p| floor + p);
                    out.truncate(cut);
                } else if !rooted {
                    if !out.is_empty() {
                        out.push(b'/');
                    }
                    out.extend_from_slice(b"..");
                    floor = out.len();
                }
            }
            _ => {
                if out.len() > usize::from(rooted) || (!rooted && !out.is_empty()) {
                    out.push(b'/');
                }
                out.extend_from_slice(elem);
            }
        }
    }
    if out.is_empty() {
        out.push(b'.');
    }
}

#[cfg(test)]
mod tests {
    use super::{clean_path, clean_view};

    /// The view without building agrees with building, for every name of up to four
    /// elements drawn from the awkward ones, bare, rooted and with a trailing slash.
    #[test]
    fn view_agrees_with_clean_path() {
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
        let mut viewed = 0;
        for n in &names {
            for raw in [
                n.clone(),
                [n.as_slice(), b"/"].concat(),
                [b"/", n.as_slice()].concat(),
            ] {
                if let Some(v) = clean_view(&raw) {
                    assert_eq!(v, clean_path(&raw), "{:?}", String::from_utf8_lossy(&raw));
                    viewed += 1;
                }
            }
        }
        assert!(viewed > 1000, "viewed {viewed}");
    }

    fn c(s: &str) -> String {
        String::from_utf8(clean_path(s.as_bytes())).unwrap()
    }

    #[test]
    fn matches_go_filepath_clean() {
        // Cases from Go's path/filepath tests.
        let cases = [
            ("abc", "abc"),
            ("abc/def", "abc/def"),
            ("a/b/c", "a/b/c"),
            (".", "."),
            ("..", ".."),
            ("../..", "../.."),
            ("../../abc", "../../abc"),
            ("/abc", "/abc"),
            ("/", "/"),
            ("", "."),
            ("abc/", "abc"),
            ("abc/def/", "abc/def"),
            ("a/b/c/", "a/b/c"),
            ("./", "."),
            ("../", ".."),
            ("../../", "../.."),
            ("/abc/", "/abc"),
            ("abc//def//ghi", "abc/def/ghi"),
            ("//abc", "/abc"),
            ("///abc", "/abc"),
            ("//abc//", "/abc"),
            ("abc//", "abc"),
            ("abc/./def", "abc/def"),
            ("/./abc/def", "/abc/def"),
            ("abc/.", "abc"),
            ("abc/def/ghi/../jkl", "abc/def/jkl"),
            ("abc/def/../ghi/../jkl", "abc/jkl"),
            ("abc/def/..", "abc"),
            ("abc/def/../..", "."),
            ("/abc/def/../..", "/"),
            ("abc/def/../../..", ".."),
            ("/abc/def/../../..", "/"),
            ("abc/def/../../../ghi/jkl/../../../mno", "../../mno"),
            ("/../abc", "/abc"),
            ("abc/./../def", "def"),
            ("abc//./../def", "def"),
            ("abc/../../././../def", "../../def"),
            ("./a.txt", "a.txt"),
            ("d/", "d"),
        ];
        for (input, want) in cases {
            assert_eq!(c(input), want, "clean({input:?})");
            // Sound (never claims a name is clean when cleaning changes it), and exact
            // for the names archives hold.
            if super::is_clean(input.as_bytes()) {
                assert_eq!(input, want, "is_clean({input:?})");
            } else {
                assert!(input != want || [".", "..", "../..", "../../abc"].contains(&input));
            }
        }
    }
}
