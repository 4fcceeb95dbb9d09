//! The byte formats of the small metadata files, and their strict parsers.
//!
//! Writers produce exactly Docker's bytes (no trailing newline). Readers trim surrounding
//! whitespace, as moby does, for every file except `size`, which moby parses untrimmed.

use std::collections::BTreeMap;
use std::io;

use layer_digest::{ChainId, DiffId, Digest};
use serde::{Deserialize, Deserializer, Serialize};

use crate::error::Corruption;
use crate::layout::{cache_id_problem, is_valid_mount_id};

/// Largest `diff`, `size`, `cache-id`, `parent`, `mount-id`... we read (the longest valid value
/// is well under 300 bytes; this leaves room for whitespace without unbounded reads).
pub(crate) const SMALL_FILE_LIMIT: u64 = 4096;
/// Largest `descriptor.json` we read.
pub(crate) const DESCRIPTOR_LIMIT: u64 = 1 << 20;

/// A layer's registry descriptor (`descriptor.json`), docker/distribution's `Descriptor`.
///
/// moby writes it only for layers whose descriptor has a digest (Windows foreign layers).
/// Field order, `omitempty` rules and string escapes match Go's `json.Marshal`, so the
/// `descriptor.json` written is byte-identical.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Descriptor {
    /// `mediaType`.
    #[serde(
        rename = "mediaType",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub media_type: String,
    /// `size`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub size: i64,
    /// `digest`.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "empty_digest_as_none"
    )]
    pub digest: Option<Digest>,
    /// `urls`.
    #[serde(
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub urls: Vec<String>,
    /// `annotations` (Go marshals maps with sorted keys, as a `BTreeMap` does).
    #[serde(
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub annotations: BTreeMap<String, String>,
    /// `platform`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
}

/// OCI `Platform`, as nested in [`Descriptor`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    /// `architecture` (always written).
    #[serde(default)]
    pub architecture: String,
    /// `os` (always written).
    #[serde(default)]
    pub os: String,
    /// `os.version`.
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub os_version: String,
    /// `os.features`.
    #[serde(
        rename = "os.features",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub os_features: Vec<String>,
    /// `variant`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub variant: String,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn null_as_default<'de, D: Deserializer<'de>, T: Default + Deserialize<'de>>(
    d: D,
) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn empty_digest_as_none<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Digest>, D::Error> {
    match Option::<String>::deserialize(d)? {
        None => Ok(None),
        Some(s) if s.is_empty() => Ok(None),
        Some(s) => Digest::parse(&s)
            .map(Some)
            .map_err(serde::de::Error::custom),
    }
}

/// `descriptor.json` bytes: compact JSON escaped the way Go's `json.Marshal` does.
pub(crate) fn encode_descriptor(descriptor: &Descriptor) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, GoEscapes);
    // Serialising plain strings, integers and maps into a Vec cannot fail.
    descriptor
        .serialize(&mut ser)
        .expect("descriptor serialises");
    out
}

/// serde_json's compact formatter plus Go's HTML-safe escapes (`<`, `>`, `&`, U+2028, U+2029).
struct GoEscapes;

impl serde_json::ser::Formatter for GoEscapes {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            let escape = match c {
                '<' => "\\u003c",
                '>' => "\\u003e",
                '&' => "\\u0026",
                '\u{2028}' => "\\u2028",
                '\u{2029}' => "\\u2029",
                _ => continue,
            };
            writer.write_all(&fragment.as_bytes()[start..i])?;
            writer.write_all(escape.as_bytes())?;
            start = i + c.len_utf8();
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// Text of a file that must be UTF-8, trimmed; `Empty` if nothing is left.
fn trimmed(bytes: &[u8]) -> Result<&str, Corruption> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| Corruption::NotUtf8)?
        .trim();
    if text.is_empty() {
        Err(Corruption::Empty)
    } else {
        Ok(text)
    }
}

pub(crate) fn parse_diff_id(bytes: &[u8]) -> Result<DiffId, Corruption> {
    trimmed(bytes)?.parse().map_err(Corruption::InvalidDigest)
}

pub(crate) fn parse_chain_id(bytes: &[u8]) -> Result<ChainId, Corruption> {
    trimmed(bytes)?.parse().map_err(Corruption::InvalidDigest)
}

/// `size`: Go's `strconv.FormatInt` output; untrimmed, canonical, non-negative.
pub(crate) fn parse_size(bytes: &[u8]) -> Result<u64, Corruption> {
    let text = std::str::from_utf8(bytes).map_err(|_| Corruption::NotUtf8)?;
    if text.is_empty() {
        return Err(Corruption::Empty);
    }
    let canonical =
        text.bytes().all(|b| b.is_ascii_digit()) && (text == "0" || !text.starts_with('0'));
    match text.parse::<u64>() {
        Ok(size) if canonical && size <= i64::MAX as u64 => Ok(size),
        _ => Err(Corruption::InvalidSize(text.to_owned())),
    }
}

pub(crate) fn parse_cache_id(bytes: &[u8]) -> Result<String, Corruption> {
    let text = trimmed(bytes)?;
    match cache_id_problem(text) {
        None => Ok(text.to_owned()),
        Some(_) => Err(Corruption::InvalidCacheId(text.to_owned())),
    }
}

pub(crate) fn parse_mount_id(bytes: &[u8]) -> Result<String, Corruption> {
    let text = trimmed(bytes)?;
    if is_valid_mount_id(text) {
        Ok(text.to_owned())
    } else {
        Err(Corruption::InvalidMountId(text.to_owned()))
    }
}

pub(crate) fn parse_descriptor(bytes: &[u8]) -> Result<Descriptor, Corruption> {
    serde_json::from_slice(bytes).map_err(Corruption::InvalidJson)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_is_strict_and_untrimmed() {
        assert_eq!(parse_size(b"0").unwrap(), 0);
        assert_eq!(parse_size(b"186928").unwrap(), 186928);
        for bad in [
            &b"12\n"[..],
            b" 12",
            b"+12",
            b"-1",
            b"012",
            b"1e3",
            b"",
            b"9223372036854775808",
        ] {
            assert!(
                parse_size(bad).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn digests_are_trimmed() {
        let hex = "0c0c732fecfde8fe022171a4178c157432c24ca0bf5fa99e42c51e6ffcce3bba";
        let d = parse_diff_id(format!("sha256:{hex}\n").as_bytes()).unwrap();
        assert_eq!(d.hex(), hex);
        assert!(matches!(parse_diff_id(b"  \n"), Err(Corruption::Empty)));
        assert!(matches!(
            parse_chain_id(b"sha256:xyz"),
            Err(Corruption::InvalidDigest(_))
        ));
        assert!(matches!(
            parse_chain_id(&[0xff, 0xfe]),
            Err(Corruption::NotUtf8)
        ));
    }

    #[test]
    fn descriptor_matches_go_json() {
        let mut d = Descriptor {
            media_type: "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip".into(),
            size: 42,
            digest: Some(Digest::parse(&format!("sha256:{}", "a".repeat(64))).unwrap()),
            urls: vec!["https://example.invalid/a?b=1&c=<2>".into()],
            ..Descriptor::default()
        };
        d.annotations.insert("z".into(), "1".into());
        d.annotations.insert("a".into(), "2".into());
        let json = String::from_utf8(encode_descriptor(&d)).unwrap();
        assert_eq!(
            json,
            format!(
                "{{\"mediaType\":\"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip\",\"size\":42,\
                 \"digest\":\"sha256:{}\",\"urls\":[\"https://example.invalid/a?b=1\\u0026c=\\u003c2\\u003e\"],\
                 \"annotations\":{{\"a\":\"2\",\"z\":\"1\"}}}}",
                "a".repeat(64)
            )
        );
        assert_eq!(parse_descriptor(json.as_bytes()).unwrap(), d);
        assert_eq!(encode_descriptor(&Descriptor::default()), b"{}");
        let go_empty = br#"{"mediaType":"","digest":"","urls":null,"annotations":null,"extra":1}"#;
        assert_eq!(parse_descriptor(go_empty).unwrap(), Descriptor::default());
    }
}
