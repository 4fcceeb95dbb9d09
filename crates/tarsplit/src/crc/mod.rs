//! CRC-64/GO-ISO, the checksum Go tar-split stores for every file body.
//!
//! Go uses `crc64.MakeTable(crc64.ISO)`: reflected polynomial 0xD800000000000000, initial
//! value all ones, output inverted, stored as the 8 big-endian bytes of `Sum(nil)`.
//! crc-fast picks a SIMD backend at run time (~11 GB/s on the bench machine); on x86-64
//! CPUs with 256-bit carry-less multiplication but no AVX-512, long updates take our own
//! wider fold instead (~23 GB/s there; `x86`). [`Appender`] joins the CRCs of pieces
//! computed apart, for reassembly on two threads.

use crc_fast::{CrcAlgorithm, Digest};

#[cfg(target_arch = "x86_64")]
mod x86;

/// The 8 stored bytes of a CRC-64/GO-ISO sum.
pub type Crc64Bytes = [u8; 8];

/// The CRC of zero bytes, which Go records for header-only entries that carry a size.
pub const EMPTY_CRC: Crc64Bytes = [0; 8];

/// Whether long updates take [`x86::update`]: crc-fast folds 256 bits at a time only with
/// AVX-512, and this is the CPUs with 256-bit carry-less multiplication without it.
#[cfg(target_arch = "x86_64")]
static WIDE_FOLD: std::sync::LazyLock<bool> = std::sync::LazyLock::new(|| {
    x86::available() && !std::arch::is_x86_feature_detected!("avx512vl")
});

/// A streaming CRC-64/GO-ISO hasher.
#[derive(Clone)]
pub struct Crc64 {
    digest: Digest,
    len: u64,
}

impl std::fmt::Debug for Crc64 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Crc64")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

impl Default for Crc64 {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc64 {
    /// A hasher over no bytes yet.
    pub fn new() -> Self {
        Crc64 {
            digest: Digest::new(CrcAlgorithm::Crc64GoIso),
            len: 0,
        }
    }

    /// Feeds more bytes.
    pub fn update(&mut self, data: &[u8]) {
        #[cfg(target_arch = "x86_64")]
        if data.len() >= x86::WORTH_IT && *WIDE_FOLD {
            // SAFETY: `WIDE_FOLD` says the CPU has what `x86::update` needs.
            let state = unsafe { x86::update(self.digest.get_state(), data) };
            self.digest = Digest::new_with_init_state(CrcAlgorithm::Crc64GoIso, state);
            self.len += data.len() as u64;
            return;
        }
        self.digest.update(data);
        self.len += data.len() as u64;
    }

    /// How many bytes were fed.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether no bytes were fed.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The sum as a number.
    pub fn sum(&self) -> u64 {
        self.digest.finalize()
    }

    /// The stored form: big-endian bytes of the sum.
    pub fn bytes(&self) -> Crc64Bytes {
        self.digest.finalize().to_be_bytes()
    }

    /// Starts over.
    pub fn reset(&mut self) {
        self.digest.reset();
        self.len = 0;
    }
}

/// Appends pieces of one fixed length whose CRCs were computed apart (on another thread):
/// CRC(A ‖ B) from CRC(A) and CRC(B) for every B of `len` bytes.
///
/// CRC-64/GO-ISO's initial value equals its final XOR, so CRC(A ‖ B) = Z(CRC(A)) ⊕ CRC(B),
/// where Z appends `len` zero bytes to the register: a linear map over GF(2), kept as its
/// 64 columns (Z of each single bit), built once by repeated squaring of the one-zero-bit
/// map. Appending is then 64 conditional XORs, against crc-fast's `combine`, which builds
/// the map again on every call.
#[derive(Debug, Clone)]
pub struct Appender {
    columns: [u64; 64],
    len: u64,
}

/// The reflected ISO polynomial (x⁶⁴ + x⁴ + x³ + x + 1).
const POLY_REFLECTED: u64 = 0xD800_0000_0000_0000;

fn gf2_times(columns: &[u64; 64], mut vec: u64) -> u64 {
    let mut sum = 0;
    let mut i = 0;
    while vec != 0 {
        if vec & 1 == 1 {
            sum ^= columns[i];
        }
        vec >>= 1;
        i += 1;
    }
    sum
}

fn gf2_square(columns: &[u64; 64]) -> [u64; 64] {
    std::array::from_fn(|i| gf2_times(columns, columns[i]))
}

impl Appender {
    /// An appender of `len`-byte pieces.
    pub fn new(len: u64) -> Self {
        // One zero bit into the reflected register: shift right, folding the low bit back
        // in as the polynomial.
        let mut bit: [u64; 64] = std::array::from_fn(|i| match i {
            0 => POLY_REFLECTED,
            i => 1 << (i - 1),
        });
        // Two, four, then eight zero bits: one zero byte.
        for _ in 0..3 {
            bit = gf2_square(&bit);
        }
        // Z for `len` bytes: the product of the byte map's 2^k powers over the bits of `len`.
        let mut power = bit;
        let mut columns: [u64; 64] = std::array::from_fn(|i| 1 << i);
        let mut rest = len;
        while rest != 0 {
            if rest & 1 == 1 {
                columns = std::array::from_fn(|i| gf2_times(&power, columns[i]));
            }
            rest >>= 1;
            if rest != 0 {
                power = gf2_square(&power);
            }
        }
        Appender { columns, len }
    }

    /// The length of the pieces this appends.
    pub fn piece_len(&self) -> u64 {
        self.len
    }

    /// `crc` continued by a piece of [`Appender::piece_len`] bytes whose own CRC is `piece`
    /// ([`Crc64::sum`]).
    pub fn append(&self, crc: &mut Crc64, piece: u64) {
        let sum = gf2_times(&self.columns, crc.sum()) ^ piece;
        crc.digest = Digest::new_with_init_state(CrcAlgorithm::Crc64GoIso, sum ^ !0);
        crc.len += self.len;
    }
}

/// One-shot CRC of a buffer, in stored form.
pub fn crc64(data: &[u8]) -> Crc64Bytes {
    let mut c = Crc64::new();
    c.update(data);
    c.bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_test_vectors() {
        assert_eq!(u64::from_be_bytes(crc64(b"123456789")), 0xb90956c775a41001);
        assert_eq!(crc64(b"foo"), [0x3c, 0x3c, 0x30, 0x30, 0, 0, 0, 0]);
        assert_eq!(crc64(b"bar"), [0x2d, 0xc4, 0x16, 0xf0, 0, 0, 0, 0]);
        assert_eq!(
            u64::from_be_bytes(crc64(b"hello world\n")),
            0x44e9cf3f572ad9ac
        );
        assert_eq!(
            u64::from_be_bytes(crc64(b"imma hurr til I derp")),
            0x0274a4b1abec6b4e
        );
        assert_eq!(
            u64::from_be_bytes(crc64("café con leche, por favor".as_bytes())),
            0x7e4859efe6fca0bb
        );
        assert_eq!(crc64(b""), EMPTY_CRC);
    }

    proptest::proptest! {
        #[test]
        fn appended_pieces_equal_one_pass(
            prefix in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300),
            pieces in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..4),
            len in 1usize..200,
            tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..50),
        ) {
            let appender = Appender::new(len as u64);
            let mut all = prefix.clone();
            let mut c = Crc64::new();
            c.update(&prefix);
            for (i, seed) in pieces.iter().enumerate() {
                let piece: Vec<u8> = (0..len).map(|j| seed ^ (i * 31 + j * 7) as u8).collect();
                let mut own = Crc64::new();
                own.update(&piece);
                appender.append(&mut c, own.sum());
                all.extend_from_slice(&piece);
            }
            // Streaming goes on after an append.
            c.update(&tail);
            all.extend_from_slice(&tail);
            proptest::prop_assert_eq!(c.bytes(), crc64(&all));
            proptest::prop_assert_eq!(c.len(), all.len() as u64);
        }
    }

    proptest::proptest! {
        #[test]
        fn long_updates_equal_crc_fast(
            seed in proptest::prelude::any::<u64>(),
            len in 0usize..5000,
            split in 0usize..5000,
        ) {
            let data: Vec<u8> = (0..len as u64)
                .map(|i| (seed.wrapping_mul(i + 1).rotate_left((i % 63) as u32) >> 7) as u8)
                .collect();
            let split = split.min(len);
            let mut ours = Crc64::new();
            ours.update(&data[..split]);
            ours.update(&data[split..]);
            let mut theirs = Digest::new(CrcAlgorithm::Crc64GoIso);
            theirs.update(&data);
            proptest::prop_assert_eq!(ours.bytes(), theirs.finalize().to_be_bytes());
        }
    }

    #[test]
    fn appender_of_64k_pieces() {
        let data: Vec<u8> = (0..3 * 65_536u32 + 5)
            .map(|i| (i * 13 % 253) as u8)
            .collect();
        let appender = Appender::new(65_536);
        let mut c = Crc64::new();
        c.update(&data[..5]);
        for piece in data[5..].chunks(65_536) {
            let mut own = Crc64::new();
            own.update(piece);
            appender.append(&mut c, own.sum());
        }
        assert_eq!(c.bytes(), crc64(&data));
    }

    #[test]
    fn streaming_equals_one_shot() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut c = Crc64::new();
        for chunk in data.chunks(777) {
            c.update(chunk);
        }
        assert_eq!(c.bytes(), crc64(&data));
        assert_eq!(c.len(), data.len() as u64);
    }
}
