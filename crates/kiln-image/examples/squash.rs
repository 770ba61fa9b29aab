//! `kiln build --squash` as a library call: the layers above a base made
//! one (the base's layers stay), with whiteouts for what they deleted.
//!
//! Run: `cargo run -p kiln-image --example squash`

#[path = "support/mod.rs"]
mod support;

use kiln_image::History;
use kiln_image::layer::LayerOptions;
use kiln_image::rewrite::Rewrite;
use kiln_image::store_io::StoreSource;

fn main() -> Result<(), support::Error> {
    let (_dir, store) = support::demo_store()?;
    // One base layer, then two of "the build".
    support::image(
        &store,
        "demo/built:1",
        &[
            &[("etc/motd", "base\n")],
            &[("app/a", "a\n")],
            &[("app/a", "a2\n"), ("app/b", "b\n")],
        ],
    )?;

    let src = StoreSource::new(&store, "demo/built:1")?;
    let mut rw = Rewrite::load(&src, None)?;
    let scratch = store.dir("tmp")?;
    let file = support::scratch_file(&store, "squashed-layer")?;
    let history = History {
        created_by: Some("example squash".into()),
        ..History::default()
    };
    rw.squash(1, &scratch, file, &LayerOptions::default(), history)?;
    let layers = rw.image.layers.len();
    let digest = support::save(&store, &rw.finish()?, "demo/squashed:1")?;
    println!("demo/squashed:1 {digest}: {layers} layers (the base's and one)");
    Ok(())
}
