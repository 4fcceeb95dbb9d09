//! Base64 tuned for tar-split payloads, which are mostly zero bytes (header blocks,
//! padding, end-of-archive blocks): runs of zeros encode to runs of `A` and back without
//! going through the general codec. Output is identical to the standard padded alphabet.

use base64::Engine as _;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};

/// Go's `base64.StdEncoding` as the decoder sees it: padding required, loose trailing bits.
const GO_STD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical),
);

/// Zero bytes per fast-path step (encodes to 64 `A`s).
const ZERO_RUN: usize = 48;
const A_RUN: usize = 64;

/// Whether every byte of `chunk` (a multiple of 8 long) is `byte`; branch-free per word so
/// the compiler vectorises it.
fn all_equal(chunk: &[u8], byte: u8) -> bool {
    let pattern = u64::from_ne_bytes([byte; 8]);
    chunk.chunks_exact(8).fold(0u64, |acc, w| {
        acc | (u64::from_ne_bytes(w.try_into().expect("8 bytes")) ^ pattern)
    }) == 0
}

/// Appends the standard padded base64 of `data` to `out`.
pub(super) fn encode_into(out: &mut Vec<u8>, data: &[u8]) {
    let mut start = 0; // start of the not-yet-encoded span, a multiple of 3
    let mut i = 0;
    while i + ZERO_RUN <= data.len() {
        if all_equal(&data[i..i + ZERO_RUN], 0) {
            encode_span(out, &data[start..i]);
            let mut end = i + ZERO_RUN;
            while end + ZERO_RUN <= data.len() && all_equal(&data[end..end + ZERO_RUN], 0) {
                end += ZERO_RUN;
            }
            while end + 3 <= data.len() && data[end..end + 3] == [0, 0, 0] {
                end += 3;
            }
            out.resize(out.len() + (end - i) / 3 * 4, b'A');
            i = end;
            start = end;
        } else {
            i += ZERO_RUN;
        }
    }
    encode_span(out, &data[start..]);
}

fn encode_span(out: &mut Vec<u8>, span: &[u8]) {
    if span.is_empty() {
        return;
    }
    let at = out.len();
    out.resize(at + span.len().div_ceil(3) * 4, 0);
    let n = base64::engine::general_purpose::STANDARD
        .encode_slice(span, &mut out[at..])
        .expect("sized for the output");
    debug_assert_eq!(at + n, out.len());
}

/// Decodes like Go's `base64.StdEncoding` (padding required, CR and LF skipped).
pub(super) fn decode(s: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len() / 4 * 3 + 3);
    match decode_into(&mut out, s) {
        Ok(()) => Ok(out),
        Err(_) if s.contains(&b'\n') || s.contains(&b'\r') => {
            let stripped: Vec<u8> = s
                .iter()
                .copied()
                .filter(|&b| b != b'\r' && b != b'\n')
                .collect();
            out.clear();
            decode_into(&mut out, &stripped).map_err(|e| format!("illegal base64 data: {e}"))?;
            Ok(out)
        }
        Err(e) => Err(format!("illegal base64 data: {e}")),
    }
}

fn decode_into(out: &mut Vec<u8>, s: &[u8]) -> Result<(), base64::DecodeError> {
    // The last quad may carry padding: leave it to the general decoder with the tail.
    let body = s.len().saturating_sub(4) / 4 * 4;
    let mut start = 0;
    let mut i = 0;
    while i + A_RUN <= body {
        if all_equal(&s[i..i + A_RUN], b'A') {
            // Padding can only end the whole string, never a span before a run.
            if memchr::memchr(b'=', &s[start..i]).is_some() {
                return Err(base64::DecodeError::InvalidPadding);
            }
            GO_STD.decode_vec(&s[start..i], out)?;
            let mut end = i + A_RUN;
            while end + A_RUN <= body && all_equal(&s[end..end + A_RUN], b'A') {
                end += A_RUN;
            }
            while end + 4 <= body && &s[end..end + 4] == b"AAAA" {
                end += 4;
            }
            out.resize(out.len() + (end - i) / 4 * 3, 0);
            i = end;
            start = end;
        } else {
            i += A_RUN;
        }
    }
    GO_STD.decode_vec(&s[start..], out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn std_encode(d: &[u8]) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .encode(d)
            .into_bytes()
    }

    proptest! {
        #[test]
        fn same_as_the_general_codec(
            parts in proptest::collection::vec((any::<bool>(), 0usize..300, any::<u8>()), 0..12)
        ) {
            let mut data = Vec::new();
            for (zeros, len, byte) in parts {
                data.extend(std::iter::repeat_n(if zeros { 0 } else { byte }, len));
            }
            let mut ours = Vec::new();
            encode_into(&mut ours, &data);
            let std = std_encode(&data);
            prop_assert_eq!(&ours, &std);
            prop_assert_eq!(decode(&std).unwrap(), data);
        }
    }

    #[test]
    fn decode_keeps_go_rules() {
        assert!(decode(b"QUI").is_err());
        assert_eq!(decode(b"QUI=").unwrap(), b"AB");
        assert_eq!(decode(b"QU\nI=").unwrap(), b"AB");
        let zeros = vec![0u8; 1024];
        let mut enc = std_encode(&zeros);
        assert_eq!(decode(&enc).unwrap(), zeros);
        enc[500] = b'=';
        assert!(decode(&enc).is_err());
        enc[500] = b'!';
        assert!(decode(&enc).is_err());
        // Padding before a run of zeros is an error, as in Go.
        let mut padded_early = b"QQ==".to_vec();
        padded_early.extend_from_slice(&[b'A'; 128]);
        padded_early.extend_from_slice(b"QUI=");
        assert!(decode(&padded_early).is_err());
    }
}
