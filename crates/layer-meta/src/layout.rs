//! Names and modes of everything under the layerdb root, and the rules names must follow.

use layer_digest::{Algorithm, ChainId, Digest};

use crate::error::{Error, Result};

/// Directory of committed layers (moby's only `supportedAlgorithms` entry).
pub(crate) const LAYERS_DIR: &str = "sha256";
/// Directory of RW-layer (container) mount records.
pub(crate) const MOUNTS_DIR: &str = "mounts";
/// Staging directory for write-sets.
pub(crate) const TMP_DIR: &str = "tmp";
/// Prefix of a write-set directory in `tmp/` (Go's `os.MkdirTemp(tmp, "write-set-")`).
pub(crate) const WRITE_SET_PREFIX: &str = "write-set-";
/// Suffix of a layer directory being deleted.
pub(crate) const REMOVING_SUFFIX: &str = "-removing";

/// `layerdb/` itself (and any parent we create for it).
pub(crate) const ROOT_MODE: u32 = 0o700;
/// `tmp/`, `sha256/`, `mounts/`, `mounts/<name>/`.
pub(crate) const SHARED_DIR_MODE: u32 = 0o755;
/// A write-set, hence a committed layer directory.
pub(crate) const WRITE_SET_MODE: u32 = 0o700;
/// Every metadata file.
pub(crate) const FILE_MODE: u32 = 0o644;

/// File names inside a layer directory.
pub(crate) mod layer_file {
    pub(crate) const DIFF: &str = "diff";
    pub(crate) const SIZE: &str = "size";
    pub(crate) const CACHE_ID: &str = "cache-id";
    pub(crate) const PARENT: &str = "parent";
    pub(crate) const DESCRIPTOR: &str = "descriptor.json";
    pub(crate) const TAR_SPLIT: &str = "tar-split.json.gz";
}

/// File names inside a mount directory.
pub(crate) mod mount_file {
    pub(crate) const MOUNT_ID: &str = "mount-id";
    pub(crate) const INIT_ID: &str = "init-id";
    pub(crate) const PARENT: &str = "parent";
}

/// `sha256/<hex>` for a chain ID; only sha256 IDs have a place in layerdb.
pub(crate) fn layer_dir(chain_id: &ChainId) -> Result<String> {
    if chain_id.as_digest().algorithm() != Algorithm::Sha256 {
        return Err(Error::UnsupportedAlgorithm(chain_id.clone()));
    }
    Ok(format!("{LAYERS_DIR}/{}", chain_id.hex()))
}

/// Parses a `sha256/` entry name that should be a bare 64-hex chain ID.
pub(crate) fn parse_layer_dir_name(name: &str) -> Option<ChainId> {
    Digest::from_sha256_hex(name).ok().map(ChainId::new)
}

/// Parses `<hex>-<random>-removing` into the chain ID; like moby, only the first `-`-separated
/// part has to be a valid digest.
pub(crate) fn parse_removing_name(name: &str) -> Option<ChainId> {
    let stem = name.strip_suffix(REMOVING_SUFFIX)?;
    let (hex, _random) = stem.split_once('-')?;
    parse_layer_dir_name(hex)
}

/// A fresh `<hex>-<64 random hex>-removing` name (moby's `stringid.GenerateRandomID()`).
pub(crate) fn new_removing_name(chain_id: &ChainId) -> String {
    format!("{}-{}{REMOVING_SUFFIX}", chain_id.hex(), random_hex64())
}

/// 32 random bytes as 64 lowercase hex.
pub(crate) fn random_hex64() -> String {
    use std::fmt::Write as _;
    let bytes: [u8; 32] = rand::random();
    let mut s = String::with_capacity(64);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// moby's `isValidID`: exactly 64 of `[0-9a-f]`, optionally followed by `-init`.
pub fn is_valid_mount_id(id: &str) -> bool {
    let hex = id.strip_suffix("-init").unwrap_or(id);
    hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

/// Why a mount name cannot be a directory name under `mounts/`, if it cannot.
pub(crate) fn check_mount_name(name: &str) -> Result<()> {
    let reason = if name.is_empty() {
        Some("empty")
    } else if name == "." || name == ".." {
        Some("not a directory name")
    } else if name.contains('/') || name.contains('\0') {
        Some("contains '/' or NUL")
    } else if name.len() > 255 {
        Some("longer than 255 bytes")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::InvalidArgument {
            what: "mount name",
            value: name.to_owned(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Why a cache ID is unusable, if it is. moby accepts any non-empty string; we also refuse what
/// would not round-trip (surrounding whitespace, trimmed on read) or could escape the driver
/// home when used as a directory name.
pub(crate) fn cache_id_problem(id: &str) -> Option<&'static str> {
    if id.is_empty() {
        Some("empty")
    } else if id.trim() != id {
        Some("surrounding whitespace would be trimmed on read")
    } else if id == "." || id == ".." || id.contains('/') || id.contains('\0') {
        Some("not a single safe directory name")
    } else if id.len() > 255 {
        Some("longer than 255 bytes")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removing_names() {
        let hex = "a".repeat(64);
        let name = format!("{hex}-{}-removing", "b".repeat(64));
        assert_eq!(parse_removing_name(&name).unwrap().hex(), hex);
        assert!(parse_removing_name(&format!("{hex}-removing")).is_none());
        assert!(parse_removing_name("zz-x-removing").is_none());
        let chain: ChainId = format!("sha256:{hex}").parse().unwrap();
        let fresh = new_removing_name(&chain);
        assert_eq!(fresh.len(), 64 + 1 + 64 + REMOVING_SUFFIX.len());
        assert_eq!(parse_removing_name(&fresh).unwrap(), chain);
    }

    #[test]
    fn cache_ids() {
        assert!(cache_id_problem(&"f".repeat(64)).is_none());
        assert!(cache_id_problem("buildkit-xyz").is_none());
        for bad in ["", " x", "x\n", ".", "..", "a/b", "a\0b"] {
            assert!(cache_id_problem(bad).is_some(), "{bad:?}");
        }
    }

    #[test]
    fn mount_names() {
        assert!(check_mount_name(&"a".repeat(64)).is_ok());
        for bad in ["", ".", "..", "a/b"] {
            assert!(check_mount_name(bad).is_err(), "{bad:?}");
        }
    }
}
