//! The few pieces of Go's `encoding/json` output that serde_json does differently: Go escapes
//! `<`, `>`, `&`, U+2028 and U+2029 as `\u003c`..., writes `\b` and `\f` as `\u0008` and
//! `\u000c` (Go 1.19, which Docker 20.10 is built with) and replaces invalid UTF-8 by U+FFFD.
//! Written files must be Go's bytes, so strings go through [`string`].

use std::fmt::Write as _;

/// Appends `s` as a Go-encoded JSON string (with quotes).
pub(crate) fn string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '<' | '>' | '&' | '\u{2028}' | '\u{2029}' => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_like_go() {
        let mut s = String::new();
        super::string(&mut s, "a<b>&\"\\\n\u{8}\u{c}\u{1}\u{2028}é");
        assert_eq!(
            s,
            r#""a\u003cb\u003e\u0026\"\\\n\u0008\u000c\u0001\u2028é""#
        );
    }
}
