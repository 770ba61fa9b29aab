//! Extracts a layer blob (gzip, zstd or plain) into a directory with the
//! safe extractor, printing the report. Usage: `unpack LAYER DIR`.

use std::fs::File;
use std::path::Path;
use std::process::ExitCode;
use std::time::Instant;

use kiln_image::layer::{ExtractOptions, extract};

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [layer, dir] = &args[..] else {
        eprintln!("usage: unpack LAYER DIR");
        return ExitCode::from(2);
    };
    let start = Instant::now();
    let file = match File::open(layer) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("unpack: {layer}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match extract(file, Path::new(dir), &ExtractOptions::default()) {
        Ok(rep) => {
            println!(
                "entries={} bytes={} warnings={} compression={:?} seconds={:.3}",
                rep.entries,
                rep.bytes,
                rep.warnings.len(),
                rep.compression,
                start.elapsed().as_secs_f64()
            );
            for w in &rep.warnings {
                eprintln!("warning: {}: {}", w.entry, w.message);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("unpack: {e}");
            ExitCode::FAILURE
        }
    }
}
