//! Random driver-directory IDs.

use rand::RngCore;

/// A new cache or mount ID: 64 lowercase hex from 32 random bytes, drawn again while the first
/// 12 characters are all digits (as moby's `stringid.GenerateRandomID`, so a short ID never
/// looks like a number).
pub(crate) fn random_id() -> String {
    let mut rng = rand::rng();
    loop {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        let mut s = String::with_capacity(64);
        for b in bytes {
            s.push_str(&format!("{b:02x}"));
        }
        if !s[..12].bytes().all(|c| c.is_ascii_digit()) {
            return s;
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ids_are_64_hex_and_distinct() {
        let a = super::random_id();
        let b = super::random_id();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f')));
        assert!(layer_meta::is_valid_mount_id(&a));
        assert_ne!(a, b);
    }
}
