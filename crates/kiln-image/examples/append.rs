//! `kiln append` as a library call: one new layer (written to a file,
//! deterministically) on top of an image's layers, with its history entry.
//!
//! Run: `cargo run -p kiln-image --example append`

#[path = "support/mod.rs"]
mod support;

use kiln_image::History;
use kiln_image::layer::{Entry, LayerOptions, write_entries_layer};
use kiln_image::rewrite::Rewrite;
use kiln_image::store_io::StoreSource;

fn main() -> Result<(), support::Error> {
    let (_dir, store) = support::demo_store()?;
    support::image(&store, "demo/base:1", &[&[("etc/motd", "base\n")]])?;

    // The new layer: a file owned by 1000:1000, with fixed times.
    let file = support::scratch_file(&store, "append-layer")?;
    let entries = vec![
        Entry::file_bytes("app/run.sh", "#!/bin/sh\necho hi\n")
            .with_mode(0o755)
            .with_owner(1000, 1000),
    ];
    let opts = LayerOptions {
        source_date_epoch: Some(1_700_000_000),
        ..LayerOptions::default()
    };
    let (_, info) = write_entries_layer(entries, &opts, std::fs::File::create(&file)?)?;

    let src = StoreSource::new(&store, "demo/base:1")?;
    let mut rw = Rewrite::load(&src, None)?;
    let history = History {
        created_by: Some("example append app/run.sh".into()),
        ..History::default()
    };
    rw.append_layer(file, &info, history);
    let digest = support::save(&store, &rw.finish()?, "demo/app:1")?;
    println!("demo/app:1 {digest}");
    println!("new layer {} (diff ID {})", info.digest, info.diff_id);
    Ok(())
}
