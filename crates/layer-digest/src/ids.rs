//! DiffID and ChainID, the two identities of a layer.

use std::fmt;
use std::str::FromStr;

use crate::digest::{Digest, DigestError};
use crate::digester::Digester;

macro_rules! digest_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Digest);

        impl $name {
            /// Wraps a digest.
            pub fn new(digest: Digest) -> Self {
                $name(digest)
            }

            /// The underlying digest.
            pub fn as_digest(&self) -> &Digest {
                &self.0
            }

            /// Unwraps the digest.
            pub fn into_digest(self) -> Digest {
                self.0
            }

            /// The `sha256:<hex>` string form.
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }

            /// The hex part (a `layerdb/sha256/` directory name for a chain ID).
            pub fn hex(&self) -> &str {
                self.0.hex()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0, f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self.0)
            }
        }

        impl FromStr for $name {
            type Err = DigestError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Digest::parse(s).map($name)
            }
        }

        impl From<Digest> for $name {
            fn from(d: Digest) -> Self {
                $name(d)
            }
        }

        impl From<$name> for Digest {
            fn from(id: $name) -> Digest {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                self.0.as_str()
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                self.0.serialize(s)
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                Digest::deserialize(d).map($name)
            }
        }
    };
}

digest_newtype! {
    /// The digest of a layer's uncompressed tar stream: every byte given to register, up to EOF.
    DiffId
}

digest_newtype! {
    /// The identity of a layer together with all of its parents.
    ChainId
}

/// The DiffID of an empty layer: SHA-256 of 1024 zero bytes (a tar with only the end marker).
pub static EMPTY_LAYER_DIFF_ID: std::sync::LazyLock<DiffId> = std::sync::LazyLock::new(|| {
    "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef"
        .parse()
        .expect("constant is a valid digest")
});

impl DiffId {
    /// Whether this is the empty layer's DiffID.
    pub fn is_empty_layer(&self) -> bool {
        *self == *EMPTY_LAYER_DIFF_ID
    }
}

/// The chain ID of a layer with DiffID `diff` on top of `parent`.
///
/// A base layer's chain ID is its DiffID; otherwise it is
/// `sha256("<parent chain id> <diff id>")` over the ASCII string forms.
pub fn chain_id(parent: Option<&ChainId>, diff: &DiffId) -> ChainId {
    match parent {
        None => ChainId(diff.0.clone()),
        Some(parent) => {
            let mut d = Digester::sha256();
            d.update(parent.as_str().as_bytes());
            d.update(b" ");
            d.update(diff.as_str().as_bytes());
            ChainId(d.finish())
        }
    }
}

/// The chain IDs of every prefix of a list of DiffIDs, base first.
pub fn chain_ids(diffs: &[DiffId]) -> Vec<ChainId> {
    let mut out: Vec<ChainId> = Vec::with_capacity(diffs.len());
    for diff in diffs {
        let next = chain_id(out.last(), diff);
        out.push(next);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> DiffId {
        s.parse().unwrap()
    }

    #[test]
    fn empty_layer_constant_is_sha256_of_1024_zeros() {
        let got = Digester::sha256_of(&[0u8; 1024]);
        assert_eq!(&got, EMPTY_LAYER_DIFF_ID.as_digest());
        assert!(EMPTY_LAYER_DIFF_ID.is_empty_layer());
    }

    /// Golden values from the real Docker data-root fixture (../shared/fixtures/docker-root/README.md):
    /// Docker 20.10 computed these chain IDs for the l1, l2, l3 diff IDs.
    #[test]
    fn docker_fixture_chain() {
        let diffs = [
            d("sha256:0c0c732fecfde8fe022171a4178c157432c24ca0bf5fa99e42c51e6ffcce3bba"),
            d("sha256:bdf2302fe11123b6bd601d6d86e638851bfb9a1450be92e608058b2d57733359"),
            d("sha256:7f514e461dadbea3c700cab36992a8e1a837ac6d0b584e6debf67894d99238e1"),
        ];
        let chains: Vec<String> = chain_ids(&diffs).iter().map(|c| c.to_string()).collect();
        assert_eq!(
            chains,
            [
                "sha256:0c0c732fecfde8fe022171a4178c157432c24ca0bf5fa99e42c51e6ffcce3bba",
                "sha256:5543758fe7a4c752a0e73eb3082271bcddb3d99a8a4f90e46c46635d2a888c34",
                "sha256:e8926eb50b2368bbff0760f545fec1c0ff58fa5484644ce6c1309f2ed6e474b4",
            ]
        );
    }

    /// The fold is `sha256("<parent> <diff>")` over string forms, checked by hand.
    #[test]
    fn two_layer_fold_matches_the_definition() {
        let a = d("sha256:a9f054ee8ad7d4d61c0d33e2be8d8bdbbc8f2e3ea5ea7c72d8b0a3ed3e7b2d3f");
        let b = d("sha256:b3bc0a5fd1dc6d0a3d6d8a1b7c34b0e2c5f4b7d2ad0e8fbe8a3c5d3f7a2b9c1d");
        let ids = chain_ids(&[a.clone(), b.clone()]);
        assert_eq!(ids[0].as_digest(), a.as_digest());
        let manual = Digester::sha256_of(format!("{} {}", a, b).as_bytes());
        assert_eq!(ids[1].as_digest(), &manual);
        assert_eq!(chain_id(Some(&ids[0]), &b), ids[1]);
    }
}
