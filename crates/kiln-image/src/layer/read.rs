//! Reading layers: detect the compression by magic bytes (not by media
//! type, which registries get wrong) and decompress while streaming.
//!
//! gzip (`1f 8b`, all members read), zstd (`28 b5 2f fd`) and anything else
//! as a plain tar. This module does not validate tar contents; see
//! `extract` for that.

use std::io::{self, BufRead, BufReader, Read};

use crate::media::Compression;

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// The compression of a stream, judged by its first bytes (4 are enough).
pub fn detect_compression(head: &[u8]) -> Compression {
    if head.starts_with(GZIP_MAGIC) {
        Compression::Gzip
    } else if head.starts_with(ZSTD_MAGIC) {
        Compression::Zstd
    } else {
        Compression::None
    }
}

/// A reader that undoes `c` (all gzip members are read, as gunzip does).
pub fn decompress<'a, R: BufRead + Send + 'a>(
    r: R,
    c: Compression,
) -> io::Result<Box<dyn Read + Send + 'a>> {
    Ok(match c {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
        Compression::None => Box::new(r),
    })
}

/// Like [`open_layer`], for a reader that is already buffered.
pub fn open_layer_buffered<'a, R: BufRead + 'a>(
    r: R,
) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    open_layer(r)
}

/// A decompressing reader over a layer blob, and the compression found.
///
/// The magic bytes are read with as many reads as it takes (a network
/// stream may hand them over one at a time) and then put back in front.
pub fn open_layer<'a, R: Read + 'a>(mut r: R) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    let mut head = [0u8; 4];
    let mut n = 0;
    while n < head.len() {
        match r.read(&mut head[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let c = detect_compression(&head[..n]);
    let joined = io::Cursor::new(head[..n].to_vec()).chain(r);
    let buffered = BufReader::with_capacity(128 * 1024, joined);
    let rd: Box<dyn Read + 'a> = match c {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
        Compression::None => Box::new(buffered),
    };
    Ok((c, rd))
}

/// A `tar::Archive` over a (possibly compressed) layer blob.
pub fn layer_archive<'a, R: Read + 'a>(r: R) -> io::Result<tar::Archive<Box<dyn Read + 'a>>> {
    let (_, rd) = open_layer(r)?;
    Ok(tar::Archive::new(rd))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hands out one byte per read, like a slow network stream.
    struct Trickle<'a>(&'a [u8]);

    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            match (self.0.split_first(), buf.first_mut()) {
                (Some((b, rest)), Some(slot)) => {
                    *slot = *b;
                    self.0 = rest;
                    Ok(1)
                }
                _ => Ok(0),
            }
        }
    }

    #[test]
    fn detects_by_magic_even_byte_by_byte() {
        let plain = b"plain tar bytes".to_vec();
        let gz = {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            std::io::Write::write_all(&mut e, &plain).unwrap();
            e.finish().unwrap()
        };
        let zs = zstd::encode_all(&plain[..], 3).unwrap();
        for (blob, want) in [
            (&plain, Compression::None),
            (&gz, Compression::Gzip),
            (&zs, Compression::Zstd),
        ] {
            let (c, mut rd) = open_layer(Trickle(blob)).unwrap();
            assert_eq!(c, want);
            let mut out = Vec::new();
            rd.read_to_end(&mut out).unwrap();
            assert_eq!(out, plain);
        }
        let (c, mut rd) = open_layer(Trickle(b"ab")).unwrap();
        assert_eq!(c, Compression::None);
        let mut out = Vec::new();
        rd.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"ab");
    }
}
