//! Layer compression, detected by magic bytes as `docker load` does (plain, gzip, zstd).

use std::io::{self, BufReader, Read};

/// How a stream is compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// Not compressed (a plain tar).
    None,
    /// gzip (`1f 8b`).
    Gzip,
    /// zstd (`28 b5 2f fd`).
    Zstd,
}

impl Compression {
    /// Recognises the first bytes of a stream.
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }
}

/// Wraps `input` in the decompressor its first bytes call for. Reads stay streaming: nothing
/// beyond the decoders' own buffers is held in memory.
pub fn decompress<'a, R: Read + Send + 'a>(
    mut input: R,
) -> io::Result<(Compression, Box<dyn Read + Send + 'a>)> {
    // Read the magic with a loop: a pipe may hand out fewer bytes per read than it needs.
    let mut head = [0u8; 4];
    let mut len = 0;
    while len < head.len() {
        match input.read(&mut head[len..]) {
            Ok(0) => break,
            Ok(n) => len += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    // Docker's daemon also inflates xz and bzip2; we do not (yet): say so instead of letting
    // the tar reader report compressed bytes as a "truncated tar".
    for (magic, name) in [(&b"\xfd7zX"[..], "xz"), (&b"BZh"[..], "bzip2")] {
        if head[..len].starts_with(magic) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{name}-compressed layers are not supported (plain, gzip and zstd are)"),
            ));
        }
    }
    let kind = Compression::detect(&head[..len]);
    let whole = BufReader::with_capacity(
        64 * 1024,
        io::Cursor::new(head[..len].to_vec()).chain(input),
    );
    let reader: Box<dyn Read + Send + 'a> = match kind {
        Compression::None => Box::new(whole),
        // Multi-member gzip (as `pigz` or concatenation writes) is one stream to `gzip -d`.
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(whole)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(whole)?),
    };
    Ok((kind, reader))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xz_and_bzip2_get_a_clear_error() {
        for (bytes, name) in [
            (&b"\xfd7zXZ\0rest"[..], "xz"),
            (&b"BZh91AY&SY"[..], "bzip2"),
        ] {
            let err = decompress(bytes).err().expect("refused");
            assert_eq!(err.kind(), io::ErrorKind::Unsupported);
            assert!(err.to_string().starts_with(name), "{err}");
        }
        let (kind, _) = decompress(&[0x1f, 0x8b, 8, 0][..]).unwrap();
        assert_eq!(kind, Compression::Gzip);
    }
}
