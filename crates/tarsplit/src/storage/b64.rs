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
    if let Some(out) = decode_plain(s) {
        return Ok(out);
    }
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

/// The 6-bit value of each standard-alphabet byte; [`INVALID`] for every other byte.
const VALUES: [u32; 256] = {
    let mut t = [INVALID; 256];
    let alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut i = 0;
    while i < 64 {
        t[alphabet[i] as usize] = i as u32;
        i += 1;
    }
    t
};
const INVALID: u32 = 1 << 8;

/// Decodes one quad without padding into `out` (3 bytes); false if a byte is not in the
/// alphabet.
fn quad(q: &[u8], out: &mut [u8]) -> bool {
    let [a, b, c, d] = [q[0], q[1], q[2], q[3]].map(|x| VALUES[x as usize]);
    let v = (a << 18) | (b << 12) | (c << 6) | d;
    out.copy_from_slice(&v.to_be_bytes()[1..]);
    (a | b | c | d) & INVALID == 0
}

/// The common case, decoded without the general codec's per-call cost (a header segment
/// is a dozen short spans between runs of `A`): the standard alphabet in whole quads,
/// padding only in the last. `None` for anything else, which [`decode_into`] then decodes
/// or refuses with the general codec's error. Trailing bits are ignored, as Go does.
fn decode_plain(s: &[u8]) -> Option<Vec<u8>> {
    let (body, last) = s.split_at_checked(s.len().checked_sub(4)?)?;
    if !s.len().is_multiple_of(4) {
        return None;
    }
    let pad = last.iter().rev().take_while(|&&b| b == b'=').count();
    if pad > 2 {
        return None;
    }
    // Zeroed: runs of `A` are runs of zero bytes, left as they are.
    let mut out = vec![0u8; body.len() / 4 * 3 + 3 - pad];
    let (mut i, mut at) = (0, 0);
    while i < body.len() {
        if i + A_RUN <= body.len() && all_equal(&body[i..i + A_RUN], b'A') {
            i += A_RUN;
            at += A_RUN / 4 * 3;
            continue;
        }
        let end = (i + A_RUN).min(body.len());
        for q in body[i..end].chunks_exact(4) {
            // Most quads of a header are `AAAA` even where a run does not fill the window.
            if q != b"AAAA" && !quad(q, &mut out[at..at + 3]) {
                return None;
            }
            at += 3;
        }
        i = end;
    }
    let mut tail = [0u8; 3];
    let mut last_quad = [b'A'; 4];
    last_quad[..4 - pad].copy_from_slice(&last[..4 - pad]);
    if !quad(&last_quad, &mut tail) {
        return None;
    }
    out[at..].copy_from_slice(&tail[..3 - pad]);
    Some(out)
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

    proptest! {
        #[test]
        fn plain_decoding_equals_the_general_codec(
            text in proptest::collection::vec(
                prop_oneof![
                    8 => proptest::sample::select(b"AAAAAAAQB/+az09=".to_vec()),
                    1 => any::<u8>(),
                ],
                0..400,
            )
        ) {
            let general = {
                let mut out = Vec::new();
                decode_into(&mut out, &text).ok().map(|()| out)
            };
            if let Some(plain) = decode_plain(&text) {
                prop_assert_eq!(Some(plain), general);
            }
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
