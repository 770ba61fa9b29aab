//! `kiln mutate` as a library call: an image's config edited without
//! touching its layers (they stay descriptors; only a new config and
//! manifest are written).
//!
//! Run: `cargo run -p kiln-image --example mutate`

#[path = "support/mod.rs"]
mod support;

use kiln_image::config_edit::{ConfigEdit, apply_all};
use kiln_image::rewrite::Rewrite;
use kiln_image::store_io::StoreSource;

fn main() -> Result<(), support::Error> {
    let (_dir, store) = support::demo_store()?;
    support::image(&store, "demo/app:1", &[&[("app/hello.txt", "hello\n")]])?;

    let src = StoreSource::new(&store, "demo/app:1")?;
    let mut rw = Rewrite::load(&src, None)?;
    let edits = [
        // Exec form, as `ENTRYPOINT ["/bin/cat", "/app/hello.txt"]` (the
        // Dockerfile frontend, kiln_dockerfile::change, parses that text).
        ConfigEdit::Entrypoint(vec!["/bin/cat".into(), "/app/hello.txt".into()]),
        ConfigEdit::Env("GREETING".into(), "hi".into()),
        ConfigEdit::Label("org.example.team".into(), "kiln".into()),
    ];
    apply_all(&mut rw.image.config, &edits);
    rw.annotations
        .insert("org.example.note".into(), "mutated".into());
    let digest = support::save(&store, &rw.finish()?, "demo/app:2")?;

    let (img, _) = kiln_image::Image::load(&store, "demo/app:2", &kiln_image::Platform::host())?;
    println!("demo/app:2 {digest}");
    println!("entrypoint {:?}", img.config.runtime().entrypoint);
    println!("env {:?}", img.config.runtime().env);
    Ok(())
}
