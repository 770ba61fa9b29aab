//! The streaming layer pipeline: tar bytes in → sha256 of the uncompressed
//! stream (the diff ID) → compressor → sha256 and size of the compressed
//! stream (the blob digest) → any `Write` sink. One pass, bounded buffers.
//!
//! gzip uses the deterministic block-parallel encoder. zstd is one
//! single-threaded zstd stream (level 3 by default, checksum on, no content
//! size, no long-distance matching) run on its own thread so that tar
//! generation and hashing overlap with compression; its input is cut into
//! fixed chunks so the output never depends on how callers split writes.
//! The compressed bytes are always written to the sink on the caller's
//! thread.
//!
//! This module does not walk directories; see `walk` and
//! [`write_dir_layer`].

use std::io::{self, Write};
use std::path::Path;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

use super::entry::{Entry, sort_entries};
use super::error::LayerError;
use super::gzip_parallel::ParallelGzEncoder;
use super::tar_writer::TarWriter;
use super::walk::{WalkOptions, walk_dir};
use super::{LayerOptions, resolve_threads};
use crate::digest::{Digest, Hasher, HashingWriter};
use crate::media::Compression;

/// What a written layer is: its digests and sizes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerInfo {
    /// sha256 of the uncompressed tar (the config's `rootfs.diff_ids`).
    pub diff_id: Digest,
    /// sha256 of the blob as written to the sink.
    pub digest: Digest,
    /// Size of the blob in bytes.
    pub size: u64,
    pub uncompressed_size: u64,
    pub compression: Compression,
}

const ZSTD_CHUNK: usize = 256 * 1024;

enum Backend<W: Write> {
    Plain(HashingWriter<W>),
    Gzip(ParallelGzEncoder<HashingWriter<W>>),
    Zstd(ZstdThread<W>),
}

/// The `Write` side of the layer pipeline. Write a whole tar stream into
/// it, then call [`LayerWriter::finish`].
pub struct LayerWriter<W: Write> {
    diff: Hasher,
    uncompressed: u64,
    backend: Backend<W>,
    compression: Compression,
}

impl<W: Write> LayerWriter<W> {
    /// `level` `None` means gzip 6 / zstd 3. `threads` only affects gzip
    /// speed, never the bytes.
    pub fn new(sink: W, compression: Compression, level: Option<u32>, threads: usize) -> Self {
        let sink = HashingWriter::new(sink);
        let backend = match compression {
            Compression::None => Backend::Plain(sink),
            Compression::Gzip => Backend::Gzip(ParallelGzEncoder::new(
                sink,
                level.unwrap_or(6),
                resolve_threads(threads),
            )),
            Compression::Zstd => {
                Backend::Zstd(ZstdThread::new(sink, level.map_or(3, |l| l as i32)))
            }
        };
        LayerWriter {
            diff: Hasher::sha256(),
            uncompressed: 0,
            backend,
            compression,
        }
    }

    /// Flushes the compressor and returns the sink and the layer's digests.
    pub fn finish(self) -> io::Result<(W, LayerInfo)> {
        let hw = match self.backend {
            Backend::Plain(hw) => hw,
            Backend::Gzip(gz) => gz.finish()?,
            Backend::Zstd(z) => z.finish()?,
        };
        let (mut sink, digest, size) = hw.finish();
        sink.flush()?;
        let info = LayerInfo {
            diff_id: self.diff.finish(),
            digest,
            size,
            uncompressed_size: self.uncompressed,
            compression: self.compression,
        };
        Ok((sink, info))
    }
}

impl<W: Write> Write for LayerWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = match &mut self.backend {
            Backend::Plain(w) => w.write(buf)?,
            Backend::Gzip(w) => w.write(buf)?,
            Backend::Zstd(w) => w.write(buf)?,
        };
        self.diff.update(&buf[..n]);
        self.uncompressed += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        match &mut self.backend {
            Backend::Plain(w) => w.flush(),
            Backend::Gzip(w) => w.flush(),
            Backend::Zstd(w) => w.flush(),
        }
    }
}

/// A zstd stream compressed on a helper thread. Input goes over in fixed
/// chunks; compressed output comes back and is written here.
struct ZstdThread<W: Write> {
    out: HashingWriter<W>,
    chunk: Vec<u8>,
    tx: Option<SyncSender<Vec<u8>>>,
    rx: Receiver<io::Result<Vec<u8>>>,
    handle: Option<JoinHandle<()>>,
    in_flight: usize,
}

const ZSTD_IN_FLIGHT: usize = 4;

fn zstd_worker(level: i32, rx: Receiver<Vec<u8>>, tx: SyncSender<io::Result<Vec<u8>>>) {
    let setup = || -> io::Result<zstd::stream::write::Encoder<'static, Vec<u8>>> {
        let mut enc = zstd::stream::write::Encoder::new(Vec::new(), level)?;
        enc.include_checksum(true)?;
        enc.include_contentsize(false)?;
        enc.long_distance_matching(false)?;
        Ok(enc)
    };
    let mut enc = match setup() {
        Ok(e) => e,
        Err(e) => {
            let _ = tx.send(Err(e));
            return;
        }
    };
    // Every received chunk is answered with exactly one message; the
    // empty chunk means "finish".
    while let Ok(chunk) = rx.recv() {
        if chunk.is_empty() {
            let r = enc.finish();
            let _ = tx.send(r);
            return;
        }
        let r = enc
            .write_all(&chunk)
            .map(|()| std::mem::take(enc.get_mut()));
        let failed = r.is_err();
        if tx.send(r).is_err() || failed {
            return;
        }
    }
}

impl<W: Write> ZstdThread<W> {
    fn new(out: HashingWriter<W>, level: i32) -> Self {
        let (tx, wrx) = sync_channel::<Vec<u8>>(ZSTD_IN_FLIGHT);
        let (wtx, rx) = sync_channel::<io::Result<Vec<u8>>>(ZSTD_IN_FLIGHT + 1);
        let handle = std::thread::spawn(move || zstd_worker(level, wrx, wtx));
        ZstdThread {
            out,
            chunk: Vec::with_capacity(ZSTD_CHUNK),
            tx: Some(tx),
            rx,
            handle: Some(handle),
            in_flight: 0,
        }
    }

    fn receive_one(&mut self) -> io::Result<()> {
        let bytes = self
            .rx
            .recv()
            .map_err(|_| io::Error::other("the zstd thread died"))??;
        self.in_flight -= 1;
        self.out.write_all(&bytes)
    }

    fn send(&mut self, chunk: Vec<u8>) -> io::Result<()> {
        while self.in_flight >= ZSTD_IN_FLIGHT {
            self.receive_one()?;
        }
        let tx = self
            .tx
            .as_ref()
            .ok_or_else(|| io::Error::other("zstd stream already finished"))?;
        tx.send(chunk)
            .map_err(|_| io::Error::other("the zstd thread died"))?;
        self.in_flight += 1;
        Ok(())
    }

    fn finish(mut self) -> io::Result<HashingWriter<W>> {
        if !self.chunk.is_empty() {
            let c = std::mem::take(&mut self.chunk);
            self.send(c)?;
        }
        self.send(Vec::new())?;
        while self.in_flight > 0 {
            self.receive_one()?;
        }
        self.tx = None;
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
        // Take the sink out: the struct has no Drop impl of its own.
        Ok(self.out)
    }
}

impl<W: Write> Write for ZstdThread<W> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let n = buf.len();
        while !buf.is_empty() {
            let take = (ZSTD_CHUNK - self.chunk.len()).min(buf.len());
            self.chunk.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.chunk.len() == ZSTD_CHUNK {
                let c = std::mem::replace(&mut self.chunk, Vec::with_capacity(ZSTD_CHUNK));
                self.send(c)?;
            }
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// Writes `entries` (sorted here by the layer ordering rule; duplicates are
/// an error) as one layer blob into `sink`.
pub fn write_entries_layer<W: Write>(
    entries: Vec<Entry>,
    opts: &LayerOptions,
    sink: W,
) -> Result<(W, LayerInfo), LayerError> {
    let entries = sort_entries(entries)?;
    let lw = LayerWriter::new(sink, opts.compression, opts.level, opts.threads);
    let mut tw = TarWriter::new(lw, opts.source_date_epoch);
    for mut e in entries {
        tw.append(&mut e)?;
    }
    let lw = tw.finish()?;
    Ok(lw.finish()?)
}

/// Writes the contents of `dir` (not `dir` itself) as one layer blob.
/// Hard links inside the tree are found by (device, inode); xattrs are kept
/// except overlayfs' own (`trusted.overlay.*`, `user.overlay.*`).
pub fn write_dir_layer<W: Write>(
    dir: &Path,
    opts: &LayerOptions,
    sink: W,
) -> Result<(W, LayerInfo), LayerError> {
    let entries = walk_dir(dir, &WalkOptions::default())?;
    write_entries_layer(entries, opts, sink)
}
