//! The byte formats of the small metadata files, and their parsers.
//!
//! Writers produce exactly Docker's bytes (no trailing newline). Readers accept what moby's
//! readers accept (Go's `strings.TrimSpace`, `digest.Parse`, `strconv.ParseInt` and
//! `json.Unmarshal`), no less: a layer Docker loads must load here. They trim surrounding
//! whitespace for every file except `size`, which moby parses untrimmed. The only values
//! refused beyond moby's rules are cache IDs that are unsafe as a directory name or not UTF-8.

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

/// `size`, read exactly as moby reads it: Go's `strconv.ParseInt(text, 10, 64)` on the
/// untrimmed bytes. That accepts an optional `+` or `-`, then one or more ASCII digits
/// (leading zeros too: `00` is 0), within `i64`; nothing else (no whitespace, no `_`, no
/// base prefix). Rust's `i64::from_str` accepts exactly that language.
pub(crate) fn parse_size(bytes: &[u8]) -> Result<i64, Corruption> {
    let text = std::str::from_utf8(bytes).map_err(|_| Corruption::NotUtf8)?;
    if text.is_empty() {
        return Err(Corruption::Empty);
    }
    text.parse::<i64>()
        .map_err(|_| Corruption::InvalidSize(text.to_owned()))
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

/// `descriptor.json`, read as Go's `json.Unmarshal` into moby's descriptor reads it (see
/// [`go_descriptor`]).
pub(crate) fn parse_descriptor(bytes: &[u8]) -> Result<Descriptor, Corruption> {
    go_descriptor::parse(bytes).map_err(Corruption::InvalidJson)
}

/// Go's `encoding/json` rules for decoding a descriptor, which are looser than serde's derive:
///
/// * object keys match field names case-insensitively (with Go's extra folds `ſ` = `s` and
///   the Kelvin sign = `k`); unknown keys are ignored; a repeated key is decoded again, the
///   later value winning (maps and the platform object are merged into, as Go does);
/// * `null` leaves a string or number field unchanged and clears a list, map or object; a
///   top-level `null` is an empty descriptor;
/// * the digest is not validated (Go's `digest.Digest` is a plain string): a value that is
///   not a valid digest reads as no digest;
/// * invalid UTF-8 inside strings becomes U+FFFD instead of an error.
///
/// Numbers must fit `int64` and be integers, as in Go; any type mismatch is an error.
mod go_descriptor {
    use std::fmt;

    use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

    use super::{Descriptor, Digest, Platform};

    pub(super) fn parse(bytes: &[u8]) -> Result<Descriptor, serde_json::Error> {
        let text = String::from_utf8_lossy(bytes);
        let mut de = serde_json::Deserializer::from_str(&text);
        let mut descriptor = Descriptor::default();
        let mut digest = None;
        Top {
            descriptor: &mut descriptor,
            digest: &mut digest,
        }
        .deserialize(&mut de)?;
        de.end()?;
        descriptor.digest = digest
            .filter(|d: &String| !d.is_empty())
            .and_then(|d| Digest::parse(&d).ok());
        Ok(descriptor)
    }

    /// A JSON object key folded as Go compares it with a field name.
    fn fold(key: &str) -> String {
        key.chars()
            .map(|c| match c {
                '\u{17f}' => 's',
                '\u{212a}' => 'k',
                c => c.to_ascii_lowercase(),
            })
            .collect()
    }

    struct Top<'a> {
        descriptor: &'a mut Descriptor,
        digest: &'a mut Option<String>,
    }

    impl<'de> DeserializeSeed<'de> for Top<'_> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for Top<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a descriptor object")
        }
        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(key) = map.next_key::<String>()? {
                let d = &mut *self.descriptor;
                match fold(&key).as_str() {
                    "mediatype" => {
                        if let Some(v) = map.next_value::<Option<String>>()? {
                            d.media_type = v;
                        }
                    }
                    "size" => {
                        if let Some(v) = map.next_value::<Option<i64>>()? {
                            d.size = v;
                        }
                    }
                    "digest" => {
                        if let Some(v) = map.next_value::<Option<String>>()? {
                            *self.digest = Some(v);
                        }
                    }
                    "urls" => d.urls = map.next_value::<Strings>()?.0,
                    "annotations" => match map.next_value::<Option<Annotations>>()? {
                        None => d.annotations.clear(),
                        Some(Annotations(more)) => d.annotations.extend(more),
                    },
                    "platform" => map.next_value_seed(PlatformSeed(&mut d.platform))?,
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(())
        }
    }

    /// A Go `[]string`: `null` is empty, a `null` element is `""`.
    struct Strings(Vec<String>);

    impl<'de> de::Deserialize<'de> for Strings {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            let items = Option::<Vec<Option<String>>>::deserialize(d)?;
            Ok(Strings(
                items
                    .unwrap_or_default()
                    .into_iter()
                    .map(Option::unwrap_or_default)
                    .collect(),
            ))
        }
    }

    /// A Go `map[string]string` object, a `null` value being `""`; later keys win.
    struct Annotations(Vec<(String, String)>);

    impl<'de> de::Deserialize<'de> for Annotations {
        fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl<'de> Visitor<'de> for V {
                type Value = Annotations;
                fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                    f.write_str("an object of strings")
                }
                fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Annotations, A::Error> {
                    let mut out = Vec::new();
                    while let Some((k, v)) = map.next_entry::<String, Option<String>>()? {
                        out.push((k, v.unwrap_or_default()));
                    }
                    Ok(Annotations(out))
                }
            }
            d.deserialize_map(V)
        }
    }

    /// Decodes into the platform in place (Go reuses an existing pointer's struct).
    struct PlatformSeed<'a>(&'a mut Option<Platform>);

    impl<'de> DeserializeSeed<'de> for PlatformSeed<'_> {
        type Value = ();
        fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
            d.deserialize_any(self)
        }
    }

    impl<'de> Visitor<'de> for PlatformSeed<'_> {
        type Value = ();
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a platform object or null")
        }
        fn visit_unit<E: de::Error>(self) -> Result<(), E> {
            *self.0 = None;
            Ok(())
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            let p = self.0.get_or_insert_with(Platform::default);
            while let Some(key) = map.next_key::<String>()? {
                let text = |map: &mut A, field: &mut String| -> Result<(), A::Error> {
                    if let Some(v) = map.next_value::<Option<String>>()? {
                        *field = v;
                    }
                    Ok(())
                };
                match fold(&key).as_str() {
                    "architecture" => text(&mut map, &mut p.architecture)?,
                    "os" => text(&mut map, &mut p.os)?,
                    "os.version" => text(&mut map, &mut p.os_version)?,
                    "variant" => text(&mut map, &mut p.variant)?,
                    "os.features" => p.os_features = map.next_value::<Strings>()?.0,
                    _ => {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
            }
            Ok(())
        }
        fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<(), A::Error> {
            Err(de::Error::invalid_type(de::Unexpected::Seq, &self))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_reads_as_go_parse_int() {
        for (text, want) in [
            (&b"0"[..], 0),
            (b"186928", 186928),
            (b"00", 0),
            (b"007", 7),
            (b"+12", 12),
            (b"-1", -1),
            (b"-0", 0),
            (b"9223372036854775807", i64::MAX),
            (b"-9223372036854775808", i64::MIN),
        ] {
            assert_eq!(parse_size(text).unwrap(), want, "{:?}", text);
        }
        for bad in [
            &b"12\n"[..],
            b" 12",
            b"1_000",
            b"0x10",
            b"1e3",
            b"+",
            b"-",
            b"+-1",
            b"",
            b"9223372036854775808",
            b"-9223372036854775809",
            b"\xff",
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

    #[test]
    fn descriptor_reads_as_go_json_unmarshal() {
        let d = parse_descriptor(
            br#"{"MEDIATYPE":"a","mediaType":null,"Size":5,"digest":"not a digest",
                "urls":["x",null],"annotations":{"k":"1"},"ANNOTATIONS":{"j":null},
                "platform":{"OS":"linux"},"Platform":{"architecture":"amd64","os.Features":null},
                "unknown":{"deep":[1,2,{"x":null}]}}"#,
        )
        .unwrap();
        assert_eq!(d.media_type, "a");
        assert_eq!(d.size, 5);
        assert_eq!(d.digest, None);
        assert_eq!(d.urls, vec!["x".to_owned(), String::new()]);
        assert_eq!(d.annotations.len(), 2);
        assert_eq!(d.annotations["j"], "");
        let p = d.platform.unwrap();
        assert_eq!((p.os.as_str(), p.architecture.as_str()), ("linux", "amd64"));
        // Go's extra case folds: U+017F matches 's', U+212A matches 'k'.
        let d = parse_descriptor("{\"\u{17f}ize\":3}".as_bytes()).unwrap();
        assert_eq!(d.size, 3);
        assert_eq!(parse_descriptor(b"null").unwrap(), Descriptor::default());
        let d = parse_descriptor(b"{\"mediaType\":\"a\xffb\"}").unwrap();
        assert_eq!(d.media_type, "a\u{fffd}b");
        for bad in [
            &br#"{"size":1.5}"#[..],
            br#"{"size":"1"}"#,
            br#"{"size":9223372036854775808}"#,
            br#"{"mediaType":5}"#,
            br#"[]"#,
            br#"{} x"#,
            br#"{"platform":[]}"#,
        ] {
            assert!(
                parse_descriptor(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
