//! What the surgery examples share: a throwaway store, images made of a
//! few in-memory files, and copying an edited image back under a name.
//! Not an example itself (a directory without `main.rs`).
#![allow(dead_code)]

use std::path::PathBuf;

use kiln_image::layer::{Entry, LayerOptions, write_entries_layer};
use kiln_image::rewrite::RewriteSource;
use kiln_image::store_io::StoreSink;
use kiln_image::transport::{CopyOptions, copy};
use kiln_image::{Descriptor, History, Image, NewLayer, Platform, Reference, Store};

pub type Error = Box<dyn std::error::Error>;

/// A store in a temporary directory (removed when the guard drops).
pub fn demo_store() -> Result<(tempfile::TempDir, Store), Error> {
    let dir = tempfile::tempdir()?;
    let store = Store::open(dir.path().join("store"))?;
    Ok((dir, store))
}

/// A layer of `files` (path, content), its blob put in the store.
pub fn layer(store: &Store, files: &[(&str, &str)]) -> Result<NewLayer, Error> {
    let entries = files
        .iter()
        .map(|(p, c)| Entry::file_bytes(*p, c.as_bytes().to_vec()))
        .collect();
    let opts = LayerOptions {
        source_date_epoch: Some(0),
        ..LayerOptions::default()
    };
    let (blob, info) = write_entries_layer(entries, &opts, Vec::new())?;
    store.put_blob(&blob)?;
    let media_type = kiln_image::media::Format::Oci.layer(info.compression);
    Ok(NewLayer {
        blob: Descriptor::new(media_type, info.digest, info.size),
        diff_id: info.diff_id,
    })
}

/// An image of one layer per entry of `layers`, stored as `name`.
pub fn image(store: &Store, name: &str, layers: &[&[(&str, &str)]]) -> Result<Descriptor, Error> {
    let mut img = Image::scratch(&Platform::host());
    for (i, files) in layers.iter().enumerate() {
        let h = History {
            created_by: Some(format!("example layer {i}")),
            ..History::default()
        };
        img = img.with_layer(layer(store, files)?, h);
    }
    let raw = img.write(store)?;
    let desc = raw.descriptor();
    store.tag(&Reference::parse(name)?, &desc)?;
    Ok(desc)
}

/// Copies an edited image into the store as `name`; its manifest digest.
pub fn save(store: &Store, edited: &RewriteSource, name: &str) -> Result<String, Error> {
    let sink = StoreSink::new(store, Some(Reference::parse(name)?));
    Ok(copy(edited, &sink, &CopyOptions::default())?
        .digest
        .to_string())
}

/// A file for a new layer, in the store's scratch space.
pub fn scratch_file(store: &Store, name: &str) -> Result<PathBuf, Error> {
    Ok(store.dir("tmp")?.join(name))
}
