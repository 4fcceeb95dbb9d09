//! Digest oracles, computed with `sha2` alone so they are independent of `layer-digest`.

use sha2::{Digest as _, Sha256};

/// The hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    let mut s = String::with_capacity(64);
    for b in Sha256::digest(data) {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// `sha256:<hex>` of `data`: a layer tar's DiffID, a blob's digest.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", sha256_hex(data))
}

/// moby's chain ID of `diff_id` on `parent`: the DiffID itself for a base layer, else
/// `sha256("<parent chain ID> <diff ID>")`.
pub fn chain_id(parent: Option<&str>, diff_id: &str) -> String {
    match parent {
        None => diff_id.to_owned(),
        Some(p) => sha256(format!("{p} {diff_id}").as_bytes()),
    }
}

/// The chain IDs of a stack of DiffIDs, bottom first.
pub fn chain_ids(diff_ids: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::with_capacity(diff_ids.len());
    for d in diff_ids {
        let next = chain_id(out.last().map(String::as_str), d);
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values() {
        assert_eq!(
            sha256(b""),
            "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let d = vec![sha256(b"a"), sha256(b"b")];
        let c = chain_ids(&d);
        assert_eq!(c[0], d[0]);
        assert_eq!(c[1], sha256(format!("{} {}", d[0], d[1]).as_bytes()));
    }
}
