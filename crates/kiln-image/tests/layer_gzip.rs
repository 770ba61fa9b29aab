//! The block-parallel gzip encoder: random inputs around block boundaries
//! decompress to themselves, and the thread count never changes the bytes.

#[path = "layer_util.rs"]
mod util;

use std::io::{Read, Write};

use kiln_image::layer::{GZIP_BLOCK_SIZE, LayerWriter, ParallelGzEncoder};
use kiln_image::media::Compression;
use proptest::prelude::*;

fn gz(data: &[u8], level: u32, threads: usize, chunk: usize) -> Vec<u8> {
    let mut e = ParallelGzEncoder::new(Vec::new(), level, threads);
    for c in data.chunks(chunk.max(1)) {
        e.write_all(c).unwrap();
    }
    e.finish().unwrap()
}

fn gunzip(gz: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz)
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// Data that is partly compressible: runs, text and noise.
fn data_strategy() -> impl Strategy<Value = Vec<u8>> {
    let b = GZIP_BLOCK_SIZE;
    let sizes = prop_oneof![
        0usize..64,
        (b - 40)..(b + 40),
        (2 * b - 40)..(2 * b + 40),
        (3 * b - 8)..(3 * b + 8),
        0usize..(3 * b),
    ];
    (sizes, any::<u64>()).prop_map(|(n, seed)| {
        let mut x = seed | 1;
        let mut v = Vec::with_capacity(n);
        while v.len() < n {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let run = (x % 700) as usize + 1;
            match x % 3 {
                0 => v.extend(std::iter::repeat_n((x >> 8) as u8, run)),
                1 => v.extend(
                    b"the quick brown fox jumps over the lazy dog "
                        .iter()
                        .cycle()
                        .take(run),
                ),
                _ => v.extend((0..run).map(|i| (x >> (i % 56)) as u8)),
            }
        }
        v.truncate(n);
        v
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn round_trips_and_thread_count_does_not_matter(
        data in data_strategy(),
        level in prop_oneof![Just(1u32), Just(6u32), Just(9u32)],
        chunk in 1usize..100_000,
    ) {
        let one = gz(&data, level, 1, chunk);
        prop_assert_eq!(gunzip(&one), data.clone());
        let two = gz(&data, level, 2, 65_536);
        prop_assert!(two == one, "2 threads differ");
        let eight = gz(&data, level, 8, chunk / 3 + 1);
        prop_assert!(eight == one, "8 threads differ");
        // CRC32 and ISIZE trailer
        let n = one.len();
        let crc = u32::from_le_bytes(one[n - 8..n - 4].try_into().unwrap());
        prop_assert_eq!(crc, crc32fast::hash(&data));
        let isize = u32::from_le_bytes(one[n - 4..].try_into().unwrap());
        prop_assert_eq!(isize, data.len() as u32);
    }
}

/// Many blocks, so every worker compresses several: a compressor's state
/// must not leak from one block into the next.
#[test]
fn many_blocks_same_bytes_for_any_thread_count() {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let data: Vec<u8> = (0..40 * GZIP_BLOCK_SIZE + 999)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if (i / 5000) % 4 == 0 {
                x as u8
            } else {
                b"layer codec "[(x % 12) as usize]
            }
        })
        .collect();
    let one = gz(&data, 6, 1, 1 << 20);
    for t in [2, 3, 8] {
        assert!(gz(&data, 6, t, 100_000) == one, "{t} threads differ");
    }
    assert!(gunzip(&one) == data);
}

/// The layer pipeline's numbers match what a separate pass computes, and
/// real gunzips agree with us on a multi-block stream.
#[test]
fn layer_writer_digests_and_real_tools() {
    let data: Vec<u8> = (0..3 * GZIP_BLOCK_SIZE + 12345)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2654435761)
                .rotate_left((i % 13) as u32) as u8
                & 0x3f
        })
        .collect();
    let mut w = LayerWriter::new(Vec::new(), Compression::Gzip, Some(6), 2);
    for c in data.chunks(10_000) {
        w.write_all(c).unwrap();
    }
    let (blob, info) = w.finish().unwrap();
    assert_eq!(info.diff_id, kiln_image::Digest::sha256_of(&data));
    assert_eq!(info.digest, kiln_image::Digest::sha256_of(&blob));
    assert_eq!(info.size, blob.len() as u64);
    assert_eq!(info.uncompressed_size, data.len() as u64);
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("x.gz");
    std::fs::write(&f, &blob).unwrap();
    let want = info.diff_id.hex().to_string();
    for tool in ["gzip -dc", "zcat", "pigz -dc", "busybox zcat"] {
        let bin = tool.split(' ').next().unwrap();
        if !util::have(bin) {
            continue;
        }
        let out = util::sh(&format!("{tool} {} | sha256sum", f.display()));
        assert!(out.starts_with(&want), "{tool}: {out}");
    }
    util::sh(&format!("gzip -t {}", f.display()));
}
