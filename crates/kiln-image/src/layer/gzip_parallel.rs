//! A deterministic block-parallel gzip encoder (pigz-style), on flate2 with
//! the zlib-rs backend.
//!
//! The input is cut into fixed [`GZIP_BLOCK_SIZE`] blocks. Each block is
//! compressed independently as raw deflate, with the previous 32 KiB of input
//! as a preset dictionary (as pigz does, so the ratio barely suffers), and
//! ends with a sync flush (an empty stored block, byte-aligned); the last
//! block — the partial one left at `finish`, possibly empty — ends with a
//! final block instead. Concatenated, the blocks form one deflate stream
//! inside ONE gzip member. Because the cut points, the dictionaries and the
//! per-block settings depend only on the input, the output bytes are the
//! same for every thread count (1 compresses inline on the caller's thread).
//!
//! Header: magic, CM=8, no flags, MTIME=0, XFL=0, OS=255 ("unknown", what
//! Go's compress/gzip — and so Docker and BuildKit — write). Trailer: CRC32
//! of the whole input (each worker hashes its block, the main thread
//! combines them in order) and ISIZE.
//!
//! Memory is bounded: at most `2 × threads` blocks are in flight. Compressed
//! blocks are written to the sink on the caller's thread, in order, so the
//! sink does not need to be `Send`.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use flate2::{Compress, Compression, FlushCompress, Status};

/// The fixed block size. Part of the output format: changing it changes
/// every digest.
pub const GZIP_BLOCK_SIZE: usize = 256 * 1024;
const DICT_SIZE: usize = 32 * 1024;
const HEADER: [u8; 10] = [0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 255];

struct Job {
    seq: u64,
    data: Vec<u8>,
    dict: Vec<u8>,
    last: bool,
}

struct Done {
    seq: u64,
    out: io::Result<Vec<u8>>,
    crc: crc32fast::Hasher,
    data: Vec<u8>,
}

struct Workers {
    jobs: Option<Sender<Job>>,
    done: Receiver<Done>,
    handles: Vec<JoinHandle<()>>,
}

/// A gzip encoder whose output does not depend on the thread count.
pub struct ParallelGzEncoder<W: Write> {
    out: W,
    level: u32,
    block: Vec<u8>,
    dict: Vec<u8>,
    next_seq: u64,
    next_write: u64,
    in_flight: usize,
    max_in_flight: usize,
    pending: BTreeMap<u64, Done>,
    free: Vec<Vec<u8>>,
    workers: Option<Workers>,
    /// No workers (threads = 1): compress on the caller's thread.
    inline: bool,
    crc: crc32fast::Hasher,
    total_in: u64,
    header_written: bool,
}

/// Compresses one block as raw deflate. Sync flush unless `last`.
///
/// A fresh compressor per block: `reset()` in zlib-rs does not clear every
/// piece of state, and what a worker compressed before must not influence
/// the bytes (it would make the output depend on the thread count). The
/// allocation is small next to compressing 256 KiB.
fn deflate_block(level: u32, dict: &[u8], data: &[u8], last: bool) -> io::Result<Vec<u8>> {
    let mut c = Compress::new(Compression::new(level), false);
    let c = &mut c;
    if !dict.is_empty() {
        c.set_dictionary(dict).map_err(io::Error::other)?;
    }
    let flush = if last {
        FlushCompress::Finish
    } else {
        FlushCompress::Sync
    };
    let mut out = Vec::with_capacity(data.len() / 2 + 1024);
    let mut pos = 0usize;
    loop {
        if out.capacity() - out.len() < 4096 {
            out.reserve(out.capacity().max(64 * 1024));
        }
        let before = c.total_in();
        let status = c
            .compress_vec(&data[pos..], &mut out, flush)
            .map_err(io::Error::other)?;
        pos += (c.total_in() - before) as usize;
        match status {
            Status::StreamEnd => return Ok(out),
            Status::Ok | Status::BufError => {
                // A sync flush is complete once all input is taken and
                // deflate left output space unused.
                if !last && pos == data.len() && out.len() < out.capacity() {
                    return Ok(out);
                }
            }
        }
    }
}

fn worker(level: u32, jobs: Arc<Mutex<Receiver<Job>>>, done: Sender<Done>) {
    loop {
        let job = {
            let Ok(rx) = jobs.lock() else { return };
            match rx.recv() {
                Ok(j) => j,
                Err(_) => return,
            }
        };
        let out = deflate_block(level, &job.dict, &job.data, job.last);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&job.data);
        let d = Done {
            seq: job.seq,
            out,
            crc,
            data: job.data,
        };
        if done.send(d).is_err() {
            return;
        }
    }
}

impl<W: Write> ParallelGzEncoder<W> {
    /// `level` 0–9; `threads` compression threads (0 = the machine's cores;
    /// 1 = compress on the caller's thread).
    pub fn new(out: W, level: u32, threads: usize) -> Self {
        let threads = super::resolve_threads(threads);
        let level = level.min(9);
        let (workers, inline) = if threads <= 1 {
            (None, true)
        } else {
            let (jtx, jrx) = channel::<Job>();
            let (dtx, drx) = channel::<Done>();
            let jrx = Arc::new(Mutex::new(jrx));
            let handles = (0..threads)
                .map(|_| {
                    let (jrx, dtx) = (jrx.clone(), dtx.clone());
                    std::thread::spawn(move || worker(level, jrx, dtx))
                })
                .collect();
            let w = Workers {
                jobs: Some(jtx),
                done: drx,
                handles,
            };
            (Some(w), false)
        };
        ParallelGzEncoder {
            out,
            level,
            block: Vec::with_capacity(GZIP_BLOCK_SIZE),
            dict: Vec::new(),
            next_seq: 0,
            next_write: 0,
            in_flight: 0,
            max_in_flight: 2 * threads.max(1),
            pending: BTreeMap::new(),
            free: Vec::new(),
            workers,
            inline,
            crc: crc32fast::Hasher::new(),
            total_in: 0,
            header_written: false,
        }
    }

    pub fn level(&self) -> u32 {
        self.level
    }

    pub fn get_ref(&self) -> &W {
        &self.out
    }

    fn write_header(&mut self) -> io::Result<()> {
        if !self.header_written {
            self.out.write_all(&HEADER)?;
            self.header_written = true;
        }
        Ok(())
    }

    /// Hands the current block to a worker (or compresses it inline).
    fn dispatch(&mut self, last: bool) -> io::Result<()> {
        self.write_header()?;
        let fresh = self
            .free
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(GZIP_BLOCK_SIZE));
        let data = std::mem::replace(&mut self.block, fresh);
        self.block.clear();
        let dict = std::mem::take(&mut self.dict);
        // The next block's dictionary: the last 32 KiB of this one.
        self.dict = data[data.len().saturating_sub(DICT_SIZE)..].to_vec();
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.inline {
            let out = deflate_block(self.level, &dict, &data, last)?;
            self.crc.update(&data);
            self.out.write_all(&out)?;
            self.next_write += 1;
            self.free.push(data);
            return Ok(());
        }
        // Bound everything not yet written (at workers or waiting in
        // `pending` behind a slower block), not just what workers hold.
        while self.next_write + (self.max_in_flight as u64) <= seq {
            self.receive_one()?;
        }
        let job = Job {
            seq,
            data,
            dict,
            last,
        };
        let sent = self
            .workers
            .as_ref()
            .and_then(|w| w.jobs.as_ref())
            .map(|tx| tx.send(job).is_ok())
            .unwrap_or(false);
        if !sent {
            return Err(io::Error::other("gzip worker threads are gone"));
        }
        self.in_flight += 1;
        Ok(())
    }

    /// Waits for one finished block and writes every block that is now next
    /// in order.
    fn receive_one(&mut self) -> io::Result<()> {
        let Some(w) = self.workers.as_ref() else {
            return Ok(());
        };
        let d = w
            .done
            .recv()
            .map_err(|_| io::Error::other("a gzip worker thread died"))?;
        self.in_flight -= 1;
        self.pending.insert(d.seq, d);
        while let Some(d) = self.pending.remove(&self.next_write) {
            let out = d.out?;
            self.crc.combine(&d.crc);
            self.out.write_all(&out)?;
            self.next_write += 1;
            if self.free.len() < self.max_in_flight {
                self.free.push(d.data);
            }
        }
        Ok(())
    }

    /// Compresses what is left, writes the trailer, stops the workers and
    /// returns the sink.
    pub fn finish(mut self) -> io::Result<W> {
        self.dispatch(true)?;
        while self.in_flight > 0 {
            self.receive_one()?;
        }
        let crc = std::mem::take(&mut self.crc).finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        self.out.write_all(&(self.total_in as u32).to_le_bytes())?;
        // Dropping the workers closes the job channel and joins them.
        self.workers = None;
        Ok(self.out)
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.jobs = None; // closing the channel ends the workers
        for h in self.handles.drain(..) {
            let _ = h.join();
        }
    }
}

impl<W: Write> Write for ParallelGzEncoder<W> {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        let n = buf.len();
        self.total_in += n as u64;
        while !buf.is_empty() {
            let room = GZIP_BLOCK_SIZE - self.block.len();
            let take = room.min(buf.len());
            self.block.extend_from_slice(&buf[..take]);
            buf = &buf[take..];
            if self.block.len() == GZIP_BLOCK_SIZE {
                self.dispatch(false)?;
            }
        }
        Ok(n)
    }

    /// Does not flush the compressor (that would change the output); only
    /// the sink.
    fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    fn gz(data: &[u8], threads: usize, chunk: usize) -> Vec<u8> {
        let mut e = ParallelGzEncoder::new(Vec::new(), 6, threads);
        for c in data.chunks(chunk.max(1)) {
            e.write_all(c).unwrap();
        }
        e.finish().unwrap()
    }

    fn sample(n: usize) -> Vec<u8> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if i % 3 == 0 {
                    (x % 251) as u8
                } else {
                    b"kiln layer "[i % 11]
                }
            })
            .collect()
    }

    #[test]
    fn round_trips_and_is_thread_independent() {
        for n in [
            0,
            1,
            GZIP_BLOCK_SIZE - 1,
            GZIP_BLOCK_SIZE,
            2 * GZIP_BLOCK_SIZE + 7,
        ] {
            let data = sample(n);
            let one = gz(&data, 1, 4096);
            for (t, chunk) in [(2, 1 << 20), (8, 777)] {
                assert_eq!(gz(&data, t, chunk), one, "n={n} threads={t}");
            }
            let mut back = Vec::new();
            flate2::read::GzDecoder::new(&one[..])
                .read_to_end(&mut back)
                .unwrap();
            assert_eq!(back, data, "n={n}");
            assert_eq!(&one[..10], &HEADER);
        }
    }
}
