//! Driver options and driver selection by name.
//!
//! Options are `key=value` strings (`--storage-opt`), parsed like moby's
//! `ParseStorageOptKeyValue`: split at the first `=`, both sides trimmed.
//!
//! ```
//! use graphdriver::options::parse_storage_opt;
//! assert_eq!(parse_storage_opt(" size = 10G ").unwrap(), ("size".into(), "10G".into()));
//! assert!(parse_storage_opt("size").is_err());
//! ```
//!
//! Choosing a driver by name is [`crate::Registry`]'s.

use std::collections::BTreeMap;

use crate::error::{Error, Result};

/// Splits one `key=value` option; both sides are trimmed. Text without `=` is an error.
pub fn parse_storage_opt(opt: &str) -> Result<(String, String)> {
    match opt.split_once('=') {
        Some((k, v)) => Ok((k.trim().to_string(), v.trim().to_string())),
        None => Err(Error::InvalidOption(format!(
            "unable to parse storage-opt key/value: {opt}"
        ))),
    }
}

/// Parses a list of options into a map (the last value of a repeated key wins).
pub fn parse_storage_opts(opts: &[String]) -> Result<BTreeMap<String, String>> {
    opts.iter().map(|o| parse_storage_opt(o)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_key_value_like_moby() {
        for bad in ["", "key"] {
            let e = parse_storage_opt(bad).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("invalid option: unable to parse storage-opt key/value: {bad}")
            );
        }
        let ok = |s: &str| parse_storage_opt(s).unwrap();
        assert_eq!(ok("key=value"), ("key".into(), "value".into()));
        assert_eq!(ok(" key = value "), ("key".into(), "value".into()));
        assert_eq!(
            ok("key=value1=value2"),
            ("key".into(), "value1=value2".into())
        );
        assert_eq!(
            ok(" key = value1 = value2 "),
            ("key".into(), "value1 = value2".into())
        );
    }
}
