//! Indexes (`kiln manifest`, `kiln build --platform a,b`) as a library
//! call: entries made from images, edited, and the index stored under a
//! name.
//!
//! Run: `cargo run -p kiln-image --example index`

#[path = "support/mod.rs"]
mod support;

use kiln_image::index_edit::{self, EntryEdit};
use kiln_image::{Image, Platform, Reference};

fn main() -> Result<(), support::Error> {
    let (_dir, store) = support::demo_store()?;
    let mut index = index_edit::empty();
    for arch in ["amd64", "arm64"] {
        let platform = Platform::parse(&format!("linux/{arch}"))?;
        // An image per platform (here: the same files, another config).
        let mut img = Image::scratch(&platform);
        img = img.with_layer(
            support::layer(&store, &[("arch", arch)])?,
            kiln_image::History::default(),
        );
        let raw = img.write(&store)?;
        index = index_edit::add(index, index_edit::entry(&raw, &img.config));
    }
    let arm = index.manifests[1].digest.clone();
    let edit = EntryEdit {
        set: [("org.example.role".to_string(), "arm".to_string())].into(),
        ..EntryEdit::default()
    };
    index = index_edit::annotate(index, &arm, &edit)?;
    let raw = index_edit::encode(&index)?;
    store.put_blob(&raw.bytes)?;
    store.tag(&Reference::parse("demo/multi:1")?, &raw.descriptor())?;
    println!(
        "demo/multi:1 {} ({})",
        raw.digest,
        kiln_image::manifest::platforms_of(&index)
    );
    Ok(())
}
