//! `kiln rebase` as a library call: an image built on base v1 moved onto
//! base v2, as `pack rebase` does. The base's layers are swapped, the
//! image's own stay, and no layer is unpacked or rewritten.
//!
//! Run: `cargo run -p kiln-image --example rebase`

#[path = "support/mod.rs"]
mod support;

use kiln_image::rewrite::Rewrite;
use kiln_image::store_io::StoreSource;

fn main() -> Result<(), support::Error> {
    let (_dir, store) = support::demo_store()?;
    let v1: &[(&str, &str)] = &[("etc/os-release", "v1\n")];
    let v2: &[(&str, &str)] = &[("etc/os-release", "v2\n")];
    let app: &[(&str, &str)] = &[("app/bin", "app\n")];
    support::image(&store, "demo/base:1", &[v1])?;
    support::image(&store, "demo/base:2", &[v2])?;
    support::image(&store, "demo/app:1", &[v1, app])?;

    let (old_src, new_src, app_src) = (
        StoreSource::new(&store, "demo/base:1")?,
        StoreSource::new(&store, "demo/base:2")?,
        StoreSource::new(&store, "demo/app:1")?,
    );
    let old = Rewrite::load(&old_src, None)?;
    let new = Rewrite::load(&new_src, None)?;
    let mut rw = Rewrite::load(&app_src, None)?;
    rw.rebase(&old, &new)?;
    let ids = rw.image.config.rootfs.diff_ids.clone();
    let digest = support::save(&store, &rw.finish()?, "demo/app:2")?;
    println!("demo/app:2 {digest}");
    for id in ids {
        println!("  layer {id}");
    }
    Ok(())
}
