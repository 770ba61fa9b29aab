//! `kiln flatten` as a library call: every layer replaced by one holding
//! the filesystem they make (whiteouts applied); the history stays, each
//! old entry marked as adding no layer.
//!
//! Run: `cargo run -p kiln-image --example flatten`

#[path = "support/mod.rs"]
mod support;

use kiln_image::History;
use kiln_image::layer::LayerOptions;
use kiln_image::rewrite::Rewrite;
use kiln_image::store_io::StoreSource;

fn main() -> Result<(), support::Error> {
    let (_dir, store) = support::demo_store()?;
    support::image(
        &store,
        "demo/layers:1",
        &[
            &[("etc/motd", "one\n")],
            &[("etc/motd", "two\n"), ("app/a", "a\n")],
            &[("app/b", "b\n")],
        ],
    )?;

    let src = StoreSource::new(&store, "demo/layers:1")?;
    let mut rw = Rewrite::load(&src, None)?;
    let scratch = store.dir("tmp")?;
    let file = support::scratch_file(&store, "flat-layer")?;
    let history = History {
        created_by: Some("example flatten".into()),
        ..History::default()
    };
    let warnings = rw.flatten(&scratch, file, &LayerOptions::default(), history)?;
    let layers = rw.image.layers.len();
    let digest = support::save(&store, &rw.finish()?, "demo/flat:1")?;
    println!(
        "demo/flat:1 {digest}: {layers} layer, {} warnings",
        warnings.len()
    );
    Ok(())
}
