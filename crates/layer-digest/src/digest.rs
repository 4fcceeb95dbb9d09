//! The validated `algorithm:hex` digest string.

use std::fmt;
use std::str::FromStr;

/// A hash algorithm a [`Digest`] may name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Algorithm {
    /// SHA-256: the only algorithm layer stores write.
    Sha256,
    /// SHA-384: accepted when parsing (OCI allows it).
    Sha384,
    /// SHA-512: accepted when parsing (OCI allows it).
    Sha512,
}

impl Algorithm {
    /// The name used before the colon.
    pub const fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Length of the hex part in characters.
    pub const fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha384 => 96,
            Algorithm::Sha512 => 128,
        }
    }

    fn from_name(name: &str) -> Option<Self> {
        match name {
            "sha256" => Some(Algorithm::Sha256),
            "sha384" => Some(Algorithm::Sha384),
            "sha512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }
}

impl fmt::Display for Algorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Why a string is not a valid digest.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigestError {
    /// There is no `:` separating algorithm and hex.
    #[error("invalid digest {0:?}: missing ':' between algorithm and hex")]
    MissingSeparator(String),
    /// The algorithm is not one we know.
    #[error("invalid digest {0:?}: unsupported algorithm")]
    UnsupportedAlgorithm(String),
    /// The hex part has the wrong length for its algorithm.
    #[error("invalid digest {value:?}: {algorithm} needs {expected} hex characters, found {found}")]
    BadLength {
        /// The whole input.
        value: String,
        /// The algorithm named.
        algorithm: Algorithm,
        /// The length that algorithm requires.
        expected: usize,
        /// The length found.
        found: usize,
    },
    /// The hex part has a character outside `[0-9a-f]` (upper case is rejected, as Go's
    /// `digest.Parse` does).
    #[error("invalid digest {0:?}: hex part must be lowercase [0-9a-f]")]
    BadHex(String),
}

/// A content digest, `algorithm:hex`, validated when built.
///
/// The string form is kept as-is, so [`Digest::as_str`] is free and round-trips exactly.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Digest {
    value: String,
    algorithm: Algorithm,
}

impl Digest {
    /// Parses and validates `algorithm:hex`.
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| DigestError::MissingSeparator(s.to_owned()))?;
        let algorithm = Algorithm::from_name(alg)
            .ok_or_else(|| DigestError::UnsupportedAlgorithm(s.to_owned()))?;
        if hex.len() != algorithm.hex_len() {
            return Err(DigestError::BadLength {
                value: s.to_owned(),
                algorithm,
                expected: algorithm.hex_len(),
                found: hex.len(),
            });
        }
        if !hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(DigestError::BadHex(s.to_owned()));
        }
        Ok(Digest {
            value: s.to_owned(),
            algorithm,
        })
    }

    /// Builds a digest from an algorithm and raw hash bytes.
    ///
    /// # Panics
    /// If `bytes` is not the algorithm's output length (a programming error, not bad input).
    pub fn from_bytes(algorithm: Algorithm, bytes: &[u8]) -> Self {
        assert_eq!(
            bytes.len() * 2,
            algorithm.hex_len(),
            "wrong hash length for {algorithm}"
        );
        let mut value = String::with_capacity(algorithm.name().len() + 1 + algorithm.hex_len());
        value.push_str(algorithm.name());
        value.push(':');
        push_hex(&mut value, bytes);
        Digest { value, algorithm }
    }

    /// Parses a bare 64-character sha256 hex string (a directory name in `layerdb/sha256/`).
    pub fn from_sha256_hex(hex: &str) -> Result<Self, DigestError> {
        Self::parse(&format!("sha256:{hex}"))
    }

    /// The algorithm.
    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    /// The hex part, after the colon.
    pub fn hex(&self) -> &str {
        &self.value[self.algorithm.name().len() + 1..]
    }

    /// The whole `algorithm:hex` string.
    pub fn as_str(&self) -> &str {
        &self.value
    }
}

pub(crate) fn push_hex(out: &mut String, bytes: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for &b in bytes {
        out.push(HEX[(b >> 4) as usize] as char);
        out.push(HEX[(b & 0xf) as usize] as char);
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.value)
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({})", self.value)
    }
}

impl FromStr for Digest {
    type Err = DigestError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Digest::parse(s)
    }
}

impl AsRef<str> for Digest {
    fn as_ref(&self) -> &str {
        &self.value
    }
}

impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.value)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMPTY: &str = "sha256:5f70bf18a086007016e948b04aed3b82103a36bea41755b6cddfaf10ace3c6ef";

    #[test]
    fn parses_and_round_trips() {
        let d = Digest::parse(EMPTY).unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha256);
        assert_eq!(d.hex(), &EMPTY[7..]);
        assert_eq!(d.to_string(), EMPTY);
        assert_eq!(Digest::from_sha256_hex(d.hex()).unwrap(), d);
    }

    #[test]
    fn accepts_sha384_and_sha512() {
        let d = Digest::parse(&format!("sha384:{}", "a".repeat(96))).unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha384);
        let d = Digest::parse(&format!("sha512:{}", "0".repeat(128))).unwrap();
        assert_eq!(d.algorithm(), Algorithm::Sha512);
    }

    #[test]
    fn rejects_malformed() {
        assert!(matches!(
            Digest::parse("sha256"),
            Err(DigestError::MissingSeparator(_))
        ));
        assert!(matches!(
            Digest::parse("md5:abcd"),
            Err(DigestError::UnsupportedAlgorithm(_))
        ));
        assert!(matches!(
            Digest::parse("sha256:abcd"),
            Err(DigestError::BadLength { found: 4, .. })
        ));
        let upper = EMPTY.to_uppercase().replace("SHA256", "sha256");
        assert!(matches!(Digest::parse(&upper), Err(DigestError::BadHex(_))));
        let trailing = format!("{EMPTY}\n");
        assert!(Digest::parse(&trailing).is_err());
        assert!(Digest::parse("").is_err());
        // Upper-case algorithm names are not accepted either.
        assert!(Digest::parse(&EMPTY.replace("sha256", "SHA256")).is_err());
    }

    #[test]
    fn serde_uses_the_string_form() {
        let d = Digest::parse(EMPTY).unwrap();
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, format!("\"{EMPTY}\""));
        let back: Digest = serde_json::from_str(&json).unwrap();
        assert_eq!(back, d);
        assert!(serde_json::from_str::<Digest>("\"sha256:xyz\"").is_err());
    }
}
