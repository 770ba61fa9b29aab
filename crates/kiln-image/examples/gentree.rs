//! Generates the deterministic benchmark tree used by `bench/layer/run.sh`:
//! about `--mib` MiB (default 1024) of mixed files — many small text files,
//! some medium text/binary files and a few large semi-compressible ones —
//! that gzip compresses roughly 2–3×. Same arguments, same bytes.
//!
//! Usage: `gentree DIR [--mib N]`

use std::fs;
use std::io::{BufWriter, Write};
use std::path::Path;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // xorshift64*
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// A vocabulary of pseudo-words; picked with a skew so some are common.
fn vocabulary(rng: &mut Rng) -> Vec<Vec<u8>> {
    (0..1024)
        .map(|_| {
            let len = 2 + rng.below(9) as usize;
            (0..len).map(|_| b'a' + rng.below(26) as u8).collect()
        })
        .collect()
}

fn text(rng: &mut Rng, vocab: &[Vec<u8>], n: usize, out: &mut Vec<u8>) {
    let end = out.len() + n;
    let mut col = 0;
    while out.len() < end {
        let r = rng.next();
        // skewed index: product of two uniforms
        let i = (((((r & 0xffff) * ((r >> 16) & 0xffff)) >> 16) * ((r >> 32) & 0xffff)) >> 22)
            as usize
            % vocab.len();
        out.extend_from_slice(&vocab[i]);
        col += vocab[i].len() + 1;
        if col > 72 || r >> 60 == 0 {
            out.push(b'\n');
            col = 0;
        } else {
            out.push(if r >> 58 == 1 { b',' } else { b' ' });
        }
    }
    out.truncate(end);
}

/// Binary-looking data: tables of small integers, some zero padding and
/// some noise (like an executable or a database page).
fn binary(rng: &mut Rng, n: usize, out: &mut Vec<u8>) {
    let end = out.len() + n;
    while out.len() < end {
        let kind = rng.below(10);
        let run = 256 + rng.below(8192) as usize;
        match kind {
            0..=4 => {
                let mut v = rng.below(1 << 20) as u32;
                for _ in 0..run / 4 {
                    v = v.wrapping_add(rng.below(16) as u32);
                    out.extend_from_slice(&v.to_le_bytes());
                }
            }
            5..=7 => out.extend(std::iter::repeat_n(0u8, run)),
            _ => {
                for _ in 0..run / 8 {
                    out.extend_from_slice(&rng.next().to_le_bytes());
                }
            }
        }
    }
    out.truncate(end);
}

fn write_file(path: &Path, data: &[u8]) {
    let f = fs::File::create(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut w = BufWriter::new(f);
    w.write_all(data).expect("write");
}

fn main() {
    let mut args = std::env::args().skip(1);
    let dir = args.next().expect("usage: gentree DIR [--mib N]");
    let mut mib: u64 = 1024;
    if let Some(flag) = args.next() {
        assert_eq!(flag, "--mib");
        mib = args.next().and_then(|v| v.parse().ok()).expect("--mib N");
    }
    let total = mib << 20;
    let root = Path::new(&dir);
    let mut rng = Rng(0x6b69_6c6e_2d62_656e);
    let vocab = vocabulary(&mut rng);
    let mut buf = Vec::new();
    // 20% small text files (1-16 KiB) in a two-level directory tree.
    let mut written = 0u64;
    let mut i = 0u64;
    while written < total / 5 {
        let d = root.join(format!("src/pkg{:03}/mod{:02}", i / 400, (i / 20) % 20));
        fs::create_dir_all(&d).expect("mkdir");
        buf.clear();
        let n = 1024 + rng.below(15 * 1024) as usize;
        text(&mut rng, &vocab, n, &mut buf);
        write_file(&d.join(format!("file{i:05}.txt")), &buf);
        written += n as u64;
        i += 1;
    }
    // 35% medium files (64 KiB - 4 MiB), text or binary.
    let med = root.join("lib");
    fs::create_dir_all(&med).expect("mkdir");
    let mut j = 0;
    while written < total * 55 / 100 {
        buf.clear();
        let n = 64 * 1024 + rng.below(4 << 20) as usize;
        if j % 2 == 0 {
            text(&mut rng, &vocab, n, &mut buf);
        } else {
            binary(&mut rng, n, &mut buf);
        }
        write_file(&med.join(format!("lib{j:04}.so")), &buf);
        written += n as u64;
        j += 1;
    }
    // The rest: 4 large files mixing text, binary and noise in 64 KiB runs.
    let big = root.join("data");
    fs::create_dir_all(&big).expect("mkdir");
    let per = (total - written.min(total)) / 4;
    for k in 0..4 {
        let f = fs::File::create(big.join(format!("blob{k}.bin"))).expect("create");
        let mut w = BufWriter::with_capacity(1 << 20, f);
        let mut left = per;
        while left > 0 {
            buf.clear();
            let n = (64 * 1024).min(left as usize);
            match rng.below(20) {
                0..=12 => text(&mut rng, &vocab, n, &mut buf),
                13..=18 => binary(&mut rng, n, &mut buf),
                _ => {
                    while buf.len() < n {
                        buf.extend_from_slice(&rng.next().to_le_bytes());
                    }
                    buf.truncate(n);
                }
            }
            w.write_all(&buf).expect("write");
            left -= n as u64;
        }
    }
    println!(
        "{} small files, {} medium, 4 large in {}",
        i,
        j,
        root.display()
    );
}
