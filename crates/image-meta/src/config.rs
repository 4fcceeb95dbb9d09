//! An image config (the JSON whose sha256 is the image ID), read as Docker 20.10 reads it.
//!
//! Docker unmarshals the config into its `image.Image` struct with Go's `encoding/json`:
//! object keys match field names case-insensitively (an exact match first), the last of
//! duplicate keys wins, unknown keys are ignored, a field of the wrong JSON type is an
//! error, a missing or `null` `rootfs` is "invalid image JSON, no RootFS key", and `created`
//! must be RFC 3339. [`ImageConfig::parse`] applies the same rules to the fields Docker
//! interprets, and `Store.Create`'s history check: no more non-empty history entries than
//! layers. The bytes themselves are kept as they are: the ID is their hash.

use layer_digest::{ChainId, DiffId, chain_ids};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::time::is_rfc3339;

/// Largest config accepted (containerd's and our load's cap on JSON documents).
pub const MAX_CONFIG: u64 = 4 << 20;

/// What Docker reads from an image config.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageConfig {
    /// `rootfs.type`: `layers`.
    pub rootfs_type: String,
    /// `rootfs.diff_ids`, bottom layer first.
    pub diff_ids: Vec<DiffId>,
    /// `created`, as written.
    pub created: Option<String>,
    /// `os` (empty means the host's).
    pub os: String,
    /// `architecture`.
    pub architecture: String,
    /// `history`, as JSON values (compared whole when checking a parent link).
    pub history: Vec<Value>,
    /// `config` (the run config), as JSON.
    pub config: Option<Value>,
}

impl ImageConfig {
    /// Parses `bytes` as Docker would; `what` names the config in errors.
    pub fn parse(bytes: &[u8], what: &str) -> Result<ImageConfig> {
        let bad = |reason: String| Error::BadConfig {
            what: what.to_owned(),
            reason,
        };
        if bytes.len() as u64 > MAX_CONFIG {
            return Err(bad(format!(
                "{} bytes is over the {MAX_CONFIG} byte limit",
                bytes.len()
            )));
        }
        if bytes.is_empty() {
            return Err(bad("empty".into()));
        }
        // Go's decoder reads invalid UTF-8 inside strings as U+FFFD, and Docker stores such a
        // config as it came (its ID is the hash of those bytes): read it the same way. Outside
        // a string, U+FFFD is still a syntax error, as the raw byte is to Go.
        let text = String::from_utf8_lossy(bytes);
        let top: Value = serde_json::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let obj = match top {
            Value::Object(o) => o,
            Value::Null => Map::new(),
            other => return Err(bad(format!("a JSON {} is not an object", kind(&other)))),
        };
        let string = |key: &str| -> Result<String> {
            match field(&obj, key) {
                None | Some(Value::Null) => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(v) => Err(bad(format!("{key}: a JSON {} is not a string", kind(v)))),
            }
        };
        let os = string("os")?;
        let architecture = string("architecture")?;
        let created = match field(&obj, "created") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if is_rfc3339(s) => Some(s.clone()),
            Some(Value::String(s)) => {
                return Err(bad(format!("created: {s:?} is not an RFC 3339 time")));
            }
            Some(v) => return Err(bad(format!("created: a JSON {} is not a time", kind(v)))),
        };
        let config = match field(&obj, "config") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Object(_)) => Some(v.clone()),
            Some(v) => return Err(bad(format!("config: a JSON {} is not an object", kind(v)))),
        };
        let history = match field(&obj, "history") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => {
                for (i, h) in items.iter().enumerate() {
                    check_history(h).map_err(|r| bad(format!("history[{i}]: {r}")))?;
                }
                items.clone()
            }
            Some(v) => return Err(bad(format!("history: a JSON {} is not an array", kind(v)))),
        };
        let rootfs = match field(&obj, "rootfs") {
            Some(Value::Object(r)) => r,
            None | Some(Value::Null) => {
                return Err(bad("invalid image JSON, no RootFS key".into()));
            }
            Some(v) => return Err(bad(format!("rootfs: a JSON {} is not an object", kind(v)))),
        };
        let rootfs_type = match field(rootfs, "type") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(v) => {
                return Err(bad(format!(
                    "rootfs.type: a JSON {} is not a string",
                    kind(v)
                )));
            }
        };
        if rootfs_type != "layers" {
            return Err(bad(format!(
                "rootfs.type is {rootfs_type:?}, not \"layers\""
            )));
        }
        let diff_ids = match field(rootfs, "diff_ids") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) => items
                .iter()
                .enumerate()
                .map(|(i, d)| match d {
                    Value::String(s) => s
                        .parse::<DiffId>()
                        .map_err(|e| bad(format!("rootfs.diff_ids[{i}]: {e}"))),
                    v => Err(bad(format!(
                        "rootfs.diff_ids[{i}]: a JSON {} is not a string",
                        kind(v)
                    ))),
                })
                .collect::<Result<_>>()?,
            Some(v) => {
                return Err(bad(format!(
                    "rootfs.diff_ids: a JSON {} is not an array",
                    kind(v)
                )));
            }
        };
        let non_empty = history
            .iter()
            .filter(|h| field_bool(h, "empty_layer") != Some(true))
            .count();
        if non_empty > diff_ids.len() {
            return Err(bad("too many non-empty layers in History section".into()));
        }
        Ok(ImageConfig {
            rootfs_type,
            diff_ids,
            created,
            os,
            architecture,
            history,
            config,
        })
    }

    /// The chain ID of the top layer; `None` for an image without layers.
    pub fn chain_id(&self) -> Option<ChainId> {
        chain_ids(&self.diff_ids).pop()
    }

    /// Whether `parent` may be recorded as this image's parent (docker's `checkValidParent`):
    /// both without history, or the parent's history is this one's minus the last entry.
    pub fn is_valid_parent(&self, parent: &ImageConfig) -> bool {
        if self.history.is_empty() && parent.history.is_empty() {
            return true;
        }
        self.history.len() == parent.history.len() + 1
            && parent
                .history
                .iter()
                .zip(&self.history)
                .all(|(a, b)| a == b)
    }
}

/// Go's field lookup: the exact key, else the first key equal ignoring case.
fn field<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    obj.get(key).or_else(|| {
        obj.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v)
    })
}

fn field_bool(v: &Value, key: &str) -> Option<bool> {
    v.as_object()
        .and_then(|o| field(o, key))
        .and_then(Value::as_bool)
}

fn check_history(h: &Value) -> std::result::Result<(), String> {
    let obj = match h {
        Value::Object(o) => o,
        Value::Null => return Ok(()),
        v => return Err(format!("a JSON {} is not an object", kind(v))),
    };
    for key in ["author", "created_by", "comment"] {
        match field(obj, key) {
            None | Some(Value::Null | Value::String(_)) => {}
            Some(v) => return Err(format!("{key}: a JSON {} is not a string", kind(v))),
        }
    }
    match field(obj, "empty_layer") {
        None | Some(Value::Null | Value::Bool(_)) => {}
        Some(v) => return Err(format!("empty_layer: a JSON {} is not a bool", kind(v))),
    }
    match field(obj, "created") {
        None | Some(Value::Null) => Ok(()),
        Some(Value::String(s)) if is_rfc3339(s) => Ok(()),
        Some(v) => Err(format!("created: {v} is not an RFC 3339 time")),
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0c0c732fecfde8fe022171a4178c157432c24ca0bf5fa99e42c51e6ffcce3bba";

    #[test]
    fn reads_what_docker_reads() {
        let c = ImageConfig::parse(
            format!(r#"{{"ROOTFS":{{"Type":"layers","diff_ids":["{D}"]}},"os":"linux","created":"2024-01-01T00:00:00Z"}}"#)
                .as_bytes(),
            "c",
        )
        .unwrap();
        assert_eq!(c.diff_ids.len(), 1);
        assert_eq!(c.chain_id().unwrap().as_str(), D);
        let none = ImageConfig::parse(br#"{"rootfs":{"type":"layers"}}"#, "c").unwrap();
        assert_eq!(none.chain_id(), None);
    }

    /// Go's decoder turns invalid UTF-8 inside a string into U+FFFD and accepts the config;
    /// outside a string the byte is a syntax error to Go, and to us.
    #[test]
    fn invalid_utf8_in_a_string_is_read_as_go_reads_it() {
        let mut bytes = br#"{"rootfs":{"type":"layers"},"author":"ab"#.to_vec();
        bytes.extend_from_slice(b"\xff\xfe");
        bytes.extend_from_slice(br#"","os":"linux"}"#);
        let c = ImageConfig::parse(&bytes, "c").unwrap();
        assert_eq!(c.os, "linux");
        let mut outside = br#"{"rootfs":{"type":"layers"}"#.to_vec();
        outside.push(0xff);
        outside.push(b'}');
        assert!(ImageConfig::parse(&outside, "c").is_err());
    }

    #[test]
    fn refuses_what_docker_refuses() {
        for bad in [
            &b""[..],
            b"[]",
            b"{}",
            br#"{"rootfs":null}"#,
            br#"{"rootfs":{"type":"layers+base"}}"#,
            br#"{"rootfs":{"type":"layers","diff_ids":["sha256:abc"]}}"#,
            br#"{"rootfs":{"type":"layers","diff_ids":[1]}}"#,
            br#"{"rootfs":{"type":"layers"},"created":"yesterday"}"#,
            br#"{"rootfs":{"type":"layers"},"os":7}"#,
            br#"{"rootfs":{"type":"layers"},"config":[]}"#,
            br#"{"rootfs":{"type":"layers"},"history":[{}]}"#,
            br#"{"rootfs":{"type":"layers"}} trailing"#,
        ] {
            assert!(
                ImageConfig::parse(bad, "c").is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // Empty-layer history entries do not count.
        ImageConfig::parse(
            br#"{"rootfs":{"type":"layers"},"history":[{"empty_layer":true}]}"#,
            "c",
        )
        .unwrap();
    }
}
