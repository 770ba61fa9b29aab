//! Writes a directory as a layer blob, printing its digests and sizes.
//!
//! Usage: `mklayer DIR [--compression gzip|zstd|none] [--threads N]
//! [--level L] [--source-date-epoch S] -o FILE`
//!
//! Used by `bench/layer/run.sh`; also handy to compare against other tools.

use std::fs::File;
use std::io::BufWriter;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use kiln_image::layer::{LayerOptions, write_dir_layer};
use kiln_image::media::Compression;

fn usage() -> ExitCode {
    eprintln!(
        "usage: mklayer DIR [--compression gzip|zstd|none] [--threads N] [--level L] \
         [--source-date-epoch S] -o FILE"
    );
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let mut dir: Option<PathBuf> = None;
    let mut out: Option<PathBuf> = None;
    let mut opts = LayerOptions::default();
    while let Some(a) = args.next() {
        let mut val = || args.next();
        match a.as_str() {
            "--compression" | "-c" => {
                opts.compression = match val().as_deref() {
                    Some("gzip") => Compression::Gzip,
                    Some("zstd") => Compression::Zstd,
                    Some("none") => Compression::None,
                    _ => return usage(),
                }
            }
            "--threads" | "-t" => match val().and_then(|v| v.parse().ok()) {
                Some(n) => opts.threads = n,
                None => return usage(),
            },
            "--level" | "-l" => match val().and_then(|v| v.parse().ok()) {
                Some(n) => opts.level = Some(n),
                None => return usage(),
            },
            "--source-date-epoch" => match val().and_then(|v| v.parse().ok()) {
                Some(n) => opts.source_date_epoch = Some(n),
                None => return usage(),
            },
            "-o" | "--output" => out = val().map(PathBuf::from),
            _ if dir.is_none() && !a.starts_with('-') => dir = Some(PathBuf::from(a)),
            _ => return usage(),
        }
    }
    let (Some(dir), Some(out)) = (dir, out) else {
        return usage();
    };
    let start = Instant::now();
    let sink = match File::create(&out) {
        Ok(f) => BufWriter::with_capacity(1 << 20, f),
        Err(e) => {
            eprintln!("mklayer: {}: {e}", out.display());
            return ExitCode::FAILURE;
        }
    };
    match write_dir_layer(&dir, &opts, sink) {
        Ok((_, info)) => {
            let secs = start.elapsed().as_secs_f64();
            println!(
                "diff_id={} digest={} size={} uncompressed_size={} seconds={secs:.3}",
                info.diff_id, info.digest, info.size, info.uncompressed_size
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("mklayer: {e}");
            ExitCode::FAILURE
        }
    }
}
