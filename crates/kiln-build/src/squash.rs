//! `kiln build --squash`, applied to the built image after the build, as
//! the exporters are: the target stage's own layers (all above its base's)
//! become one, as `docker build --squash` makes them, by the image edit
//! [`kiln_image::rewrite::Rewrite::squash`]. The base layers stay, so the
//! result still shares them with the base.
//!
//! The base is what the target stage starts FROM: nothing for `scratch`,
//! the image's layers for an image or an image context, and for an earlier
//! stage that stage's image, built again as the target (every step a cache
//! hit). The built image must start with exactly those layers.

use kiln_dockerfile::stage::Base;
use kiln_image::layer::LayerOptions;
use kiln_image::media::Compression;
use kiln_image::rewrite::Rewrite;
use kiln_image::store_io::{StoreSink, StoreSource};
use kiln_image::transport::{CopyOptions, copy};
use kiln_image::{Digest, History, Image, Platform, Store};

use crate::{BuildError, BuildOptions, BuildResult, Progress, ProgressMode};

/// The diff IDs of the target stage's base, bottom first. `opts` is lent
/// back unchanged (its target is switched while a base stage is built).
pub fn base_diff_ids(store: &Store, opts: &mut BuildOptions) -> Result<Vec<Digest>, BuildError> {
    let build = opts.resolve_alone()?;
    let stage = build
        .stages
        .iter()
        .find(|s| s.index == build.target)
        .ok_or_else(|| BuildError::Usage("--squash: the target stage is not resolved".into()))?;
    let platform = match &stage.platform {
        Some(p) => Platform::parse(p)
            .map_err(|e| BuildError::Usage(format!("--squash: FROM --platform={p}: {e}")))?,
        None => opts.platform.clone(),
    };
    let image = match &stage.base {
        Base::Scratch => return Ok(Vec::new()),
        Base::Image { reference } => {
            Image::load(store, reference, &platform)
                .map_err(|e| {
                    BuildError::Instruction(format!("--squash: base image {reference}: {e}"))
                })?
                .0
        }
        Base::Context { name } => {
            let ctx = opts.named_contexts.get(name);
            match ctx.map(|c| c.image(store, opts, &platform)).transpose()? {
                Some(Some(img)) => img,
                _ => {
                    return Err(BuildError::Usage(format!(
                        "--squash: the base {name} is not an image"
                    )));
                }
            }
        }
        Base::Stage { index } => {
            let name = build
                .stages
                .iter()
                .find(|s| s.index == *index)
                .and_then(|s| s.name.clone())
                .unwrap_or_else(|| index.to_string());
            let target = opts.target.replace(name);
            let quiet = Progress::new(ProgressMode::Quiet, Box::new(std::io::sink()));
            let built = crate::build(store, opts, &quiet);
            opts.target = target;
            built?.image
        }
    };
    Ok(image.config.rootfs.diff_ids)
}

/// The built image with every layer above `base` (diff IDs, bottom
/// first) squashed into one, written to the store (untagged). An image
/// with fewer than two layers above its base is returned as it is.
pub fn squash(
    store: &Store,
    result: BuildResult,
    base: &[Digest],
    source_date_epoch: Option<i64>,
) -> Result<BuildResult, BuildError> {
    let ids = &result.image.config.rootfs.diff_ids;
    if !ids.starts_with(base) {
        return Err(BuildError::Instruction(
            "--squash: the built image does not start with its base's layers".into(),
        ));
    }
    if ids.len() < base.len() + 2 {
        return Ok(result);
    }
    let src = StoreSource::from_descriptor(store, result.manifest.descriptor());
    let mut rw = Rewrite::load(&src, None)?;
    let scratch = store.dir("tmp")?;
    let file = tempfile::Builder::new()
        .prefix("kiln-squash-")
        .tempfile_in(&scratch)
        .map_err(|e| BuildError::Io(format!("--squash: scratch file: {e}")))?
        .into_temp_path();
    // Built layers stay plain in the store; what leaves compresses them.
    let opts = LayerOptions {
        compression: Compression::None,
        source_date_epoch,
        ..LayerOptions::default()
    };
    let history = History {
        created: result.image.config.created.clone(),
        created_by: Some("kiln build --squash".into()),
        comment: Some(format!(
            "{} layers above the base, squashed",
            ids.len() - base.len()
        )),
        ..History::default()
    };
    rw.squash(base.len(), &scratch, file.to_path_buf(), &opts, history)?;
    let squashed = rw.finish()?;
    let top = copy(
        &squashed,
        &StoreSink::new(store, None),
        &CopyOptions::default(),
    )?;
    drop(squashed);
    file.close()
        .map_err(|e| BuildError::Io(format!("--squash: scratch file: {e}")))?;
    let (image, manifest) =
        Image::load_manifest(store, &top.digest, &result.image.config.platform())?;
    Ok(BuildResult {
        image,
        manifest,
        ..result
    })
}
