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

/// The compression of a stream, judged by its first bytes.
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

/// Wraps an already-buffered reader in the right decompressor.
pub fn open_layer_buffered<'a, R: BufRead + 'a>(
    mut r: R,
) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    // fill_buf may return fewer bytes than a magic; keep what it gives —
    // the buffer is at least 8 KiB, so this only misses on tiny streams.
    let c = detect_compression(r.fill_buf()?);
    let rd: Box<dyn Read + 'a> = match c {
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(r)?),
        Compression::None => Box::new(r),
    };
    Ok((c, rd))
}

/// A decompressing reader over a layer blob, and the compression found.
pub fn open_layer<'a, R: Read + 'a>(r: R) -> io::Result<(Compression, Box<dyn Read + 'a>)> {
    open_layer_buffered(BufReader::with_capacity(128 * 1024, r))
}

/// A `tar::Archive` over a (possibly compressed) layer blob.
pub fn layer_archive<'a, R: Read + 'a>(r: R) -> io::Result<tar::Archive<Box<dyn Read + 'a>>> {
    let (_, rd) = open_layer(r)?;
    Ok(tar::Archive::new(rd))
}
