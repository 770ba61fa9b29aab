//! Base images: the images a build's stages start from, brought into the
//! store (through the caller's fetcher) and checked against the platform
//! each stage builds for, before anything is lowered or run. A fetcher
//! may load a registry image's manifest and config only (its layers are
//! the build's remote layers, see `crate::lazy`): such an image is named
//! in the store only once its layers are all there.

use std::collections::BTreeMap;

use kiln_dockerfile::stage::{Base, ImageInfo, Stage};
use kiln_image::{Digest, Image, Platform, Store};

use crate::BuildError;
use crate::options::BuildOptions;
use crate::platform::stage_platform;

/// A loaded base image and the manifest its reference resolved to (for
/// the stage's platform): what `org.opencontainers.image.base.digest`
/// names.
#[derive(Debug, Clone)]
pub struct BaseImage {
    pub image: Image,
    pub digest: Digest,
}

/// Loaded base images by [`key`].
pub type BaseImages = BTreeMap<String, BaseImage>;

/// The key of a stage's base image in [`BaseImages`].
pub fn key(base: &str, platform: &Platform) -> String {
    format!("{base}|{platform}")
}

/// A base image for `platform`, from the store, fetched first when the
/// store has none for that platform (or always, with `--pull`).
pub fn load_image(
    store: &Store,
    opts: &BuildOptions,
    reference: &str,
    platform: &Platform,
    asked: bool,
) -> Result<Image, BuildError> {
    load_base(store, opts, reference, platform, asked).map(|b| b.image)
}

/// [`load_image`], with the digest of the manifest it came from.
pub fn load_base(
    store: &Store,
    opts: &BuildOptions,
    reference: &str,
    platform: &Platform,
    asked: bool,
) -> Result<BaseImage, BuildError> {
    if let Some(fetch) = &opts.fetch_base {
        let stored = Image::load(store, reference, platform).ok();
        let fits = stored.as_ref().is_some_and(|(img, _)| {
            img.config.os == platform.os && img.config.architecture == platform.architecture
        });
        if opts.pull || !fits {
            let fetched = fetch(store, reference, platform);
            // A stored image for another platform, where none was asked for
            // and none could be pulled, is used as it is (the caller warns),
            // as docker does with a local one.
            let fallback = !asked && stored.is_some();
            if let Ok(Some(digest)) = &fetched {
                // Loaded without its layers (they come when needed): in
                // the store as blobs, named by no tag yet.
                return Image::load_manifest(store, digest, platform)
                    .map(|(image, raw)| BaseImage {
                        image,
                        digest: raw.digest,
                    })
                    .map_err(|e| BuildError::Instruction(format!("base image {reference}: {e}")));
            }
            if let Err(e) = fetched
                && !fallback
            {
                let have = match &stored {
                    Some((img, _)) => format!(
                        "the store has it for {}/{} only",
                        img.config.os, img.config.architecture
                    ),
                    None => "the store does not have it".to_string(),
                };
                return Err(BuildError::Instruction(format!(
                    "base image {reference} for {platform}: {have}, and pulling it failed: {e}"
                )));
            }
        }
    }
    Image::load(store, reference, platform)
        .map(|(image, raw)| BaseImage {
            // A child image never carries its base's inline cache.
            image: crate::export::inline::without_inline_cache(image),
            digest: raw.digest,
        })
        .map_err(|e| {
        BuildError::Instruction(format!(
            "base image {reference}: {e} (kiln builds from images in its store: `kiln pull {reference}` or `kiln import`)"
        ))
    })
}

/// Whether the stage's platform was asked for (`--platform`, or the
/// stage's own `FROM --platform`) rather than assumed to be the host's.
pub fn platform_asked(opts: &BuildOptions, stage: &Stage) -> bool {
    opts.platform_requested || stage.platform.as_deref().is_some_and(|p| !p.is_empty())
}

/// Loads the base image of every stage that starts from an image or an
/// image-valued build context, and tells the frontend about their configs
/// (`infos`, by reference) so that their ENV is in scope and their ONBUILD
/// triggers run. Returns the images and the warnings about platforms.
pub fn load_bases(
    store: &Store,
    opts: &BuildOptions,
    stages: &[Stage],
    infos: &mut BTreeMap<String, ImageInfo>,
) -> Result<(BaseImages, Vec<String>), BuildError> {
    let mut images = BaseImages::new();
    let mut warnings = Vec::new();
    for stage in stages {
        let platform = stage_platform(stage, &opts.platform)?;
        let (name, base) = match &stage.base {
            Base::Image { reference } => {
                let base = load_base(
                    store,
                    opts,
                    reference,
                    &platform,
                    platform_asked(opts, stage),
                )?;
                infos.insert(
                    reference.clone(),
                    ImageInfo::from_config(&base.image.config),
                );
                (reference.clone(), base)
            }
            Base::Context { name } => {
                let img = match opts.named_contexts.get(name) {
                    Some(c) => c.image(store, opts, &platform)?,
                    None => None,
                };
                let img = img.ok_or_else(|| {
                    BuildError::Instruction(format!(
                        "FROM {name}: a directory build context cannot be a base image"
                    ))
                })?;
                // An image context is known by its content.
                let (_, raw) = img.encode(&BTreeMap::new())?;
                let base = BaseImage {
                    image: img,
                    digest: raw.digest,
                };
                (context_name(name), base)
            }
            _ => continue,
        };
        let c = &base.image.config;
        if c.os != platform.os || c.architecture != platform.architecture {
            let what = format!(
                "{}: the base image is for {}/{} only, not {platform}",
                stage.original.trim(),
                c.os,
                c.architecture
            );
            if platform_asked(opts, stage) {
                return Err(BuildError::Instruction(what));
            }
            // As BuildKit's InvalidBaseImagePlatform: the stage keeps the
            // image's own platform (see the lowering), and says so.
            warnings.push(format!("{what} (no --platform was asked for)"));
        }
        images.insert(key(&name, &platform), base);
    }
    Ok((images, warnings))
}

/// How a named build context that is an image is keyed in [`BaseImages`].
pub fn context_name(name: &str) -> String {
    format!("context:{name}")
}
