//! Streaming digest computation.

use std::io::{self, Read, Write};

use sha2::Digest as _;

use crate::digest::{Algorithm, Digest};

#[derive(Clone)]
enum State {
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

/// Computes a [`Digest`] over bytes fed incrementally.
///
/// It implements [`Write`], so `io::copy(&mut reader, &mut digester)` hashes a stream; wrap a
/// reader in [`DigestReader`] to hash bytes as someone else reads them.
#[derive(Clone)]
pub struct Digester {
    state: State,
    len: u64,
}

impl std::fmt::Debug for Digester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Digester")
            .field("algorithm", &self.algorithm())
            .field("len", &self.len)
            .finish()
    }
}

impl Digester {
    /// A SHA-256 digester (the one layer stores use).
    pub fn sha256() -> Self {
        Self::new(Algorithm::Sha256)
    }

    /// A digester for any supported algorithm.
    pub fn new(algorithm: Algorithm) -> Self {
        let state = match algorithm {
            Algorithm::Sha256 => State::Sha256(sha2::Sha256::new()),
            Algorithm::Sha384 => State::Sha384(sha2::Sha384::new()),
            Algorithm::Sha512 => State::Sha512(sha2::Sha512::new()),
        };
        Digester { state, len: 0 }
    }

    /// The algorithm in use.
    pub fn algorithm(&self) -> Algorithm {
        match self.state {
            State::Sha256(_) => Algorithm::Sha256,
            State::Sha384(_) => Algorithm::Sha384,
            State::Sha512(_) => Algorithm::Sha512,
        }
    }

    /// Feeds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.len += data.len() as u64;
        match &mut self.state {
            State::Sha256(h) => h.update(data),
            State::Sha384(h) => h.update(data),
            State::Sha512(h) => h.update(data),
        }
    }

    /// How many bytes have been fed so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing has been fed yet.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The digest of everything fed.
    pub fn finish(self) -> Digest {
        match self.state {
            State::Sha256(h) => Digest::from_bytes(Algorithm::Sha256, &h.finalize()),
            State::Sha384(h) => Digest::from_bytes(Algorithm::Sha384, &h.finalize()),
            State::Sha512(h) => Digest::from_bytes(Algorithm::Sha512, &h.finalize()),
        }
    }

    /// The SHA-256 digest of a byte slice, in one call.
    pub fn sha256_of(data: &[u8]) -> Digest {
        let mut d = Self::sha256();
        d.update(data);
        d.finish()
    }
}

impl Write for Digester {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.update(buf);
        Ok(buf.len())
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.update(buf);
        Ok(())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A reader that hashes every byte it hands out: a tee from `R` into a [`Digester`].
#[derive(Debug)]
pub struct DigestReader<R> {
    inner: R,
    digester: Digester,
}

impl<R: Read> DigestReader<R> {
    /// Wraps `inner`, hashing with SHA-256.
    pub fn new(inner: R) -> Self {
        Self::with_digester(inner, Digester::sha256())
    }

    /// Wraps `inner`, hashing with a given digester.
    pub fn with_digester(inner: R, digester: Digester) -> Self {
        DigestReader { inner, digester }
    }

    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.digester.len()
    }

    /// The digest of what has been read so far; call after reading to EOF.
    pub fn digest(&self) -> Digest {
        self.digester.clone().finish()
    }

    /// Gives back the inner reader and the digest of what was read.
    pub fn finish(self) -> (R, Digest) {
        (self.inner, self.digester.finish())
    }

    /// The wrapped reader.
    pub fn get_ref(&self) -> &R {
        &self.inner
    }
}

impl<R: Read> Read for DigestReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.digester.update(&buf[..n]);
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        // FIPS 180-2 "abc" vectors.
        let mut d = Digester::sha256();
        d.write_all(b"abc").unwrap();
        assert_eq!(
            d.finish().as_str(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let mut d = Digester::new(Algorithm::Sha512);
        d.update(b"abc");
        assert!(d.finish().hex().starts_with("ddaf35a193617aba"));
        let mut d = Digester::new(Algorithm::Sha384);
        d.update(b"abc");
        assert!(d.finish().hex().starts_with("cb00753f45a35e8b"));
    }

    #[test]
    fn reader_tee_hashes_what_passes() {
        let data = vec![7u8; 100_000];
        let mut r = DigestReader::new(&data[..]);
        let mut out = Vec::new();
        std::io::copy(&mut r, &mut out).unwrap();
        assert_eq!(out, data);
        assert_eq!(r.bytes_read(), 100_000);
        assert_eq!(r.digest(), Digester::sha256_of(&data));
    }

    proptest::proptest! {
        #[test]
        fn chunking_does_not_matter(data: Vec<u8>, cut in 0usize..1000) {
            let cut = cut.min(data.len());
            let mut d = Digester::sha256();
            d.update(&data[..cut]);
            d.update(&data[cut..]);
            proptest::prop_assert_eq!(d.finish(), Digester::sha256_of(&data));
        }
    }
}
