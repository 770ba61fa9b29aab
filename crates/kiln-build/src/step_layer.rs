//! A step's layer through the cache: a layer is looked up by its key or
//! made and recorded with the time it was made, and the image's times
//! come from those records (so an unchanged rebuild writes the same
//! config). It does not decide what goes into a layer: COPY, ADD, RUN and
//! WORKDIR hand it their entries.

use std::sync::atomic::Ordering;

use kiln_image::layer::{Entry, LayerOptions};
use kiln_image::media::Compression;
use kiln_image::{Descriptor, Digest, Image};

use crate::BuildError;
use crate::cache::CachedLayer;
use crate::key::KeyHasher;
use crate::worker::Worker;

/// How a step's layer is written: a plain tar, whatever the outputs want
/// (they compress it on the way out, see `kiln_image::compressed`).
pub(crate) fn layer_options(worker: &Worker<'_>) -> LayerOptions {
    LayerOptions {
        compression: Compression::None,
        source_date_epoch: worker
            .opts
            .rewrite_timestamp
            .then_some(worker.opts.source_date_epoch)
            .flatten(),
        ..LayerOptions::default()
    }
}

/// A step's layer (none if it changed nothing) and when it was first made,
/// in seconds since the epoch.
pub(crate) struct MadeLayer {
    pub(crate) layer: Option<(Descriptor, Digest)>,
    pub(crate) made_at: i64,
}

/// What a step hands over to become its layer.
pub(crate) struct Entries<K> {
    pub(crate) entries: Vec<Entry>,
    /// Whatever must stay alive while the entries are read.
    pub(crate) keep_alive: K,
    /// The entries' host files belong to this step alone (a RUN's
    /// container, removed after it), so the layer's directory may be made
    /// by linking them (see `kiln_snapshot::StagedLayer`).
    pub(crate) private: bool,
}

impl Entries<()> {
    pub(crate) fn shared(entries: Vec<Entry>) -> Entries<()> {
        Entries {
            entries,
            keep_alive: (),
            private: false,
        }
    }
}

/// Looks `key` up, or makes the layer with `make` and records it.
pub(crate) fn cached_layer<K>(
    worker: &Worker<'_>,
    key: &Digest,
    no_cache: bool,
    step: crate::progress::Step<'_>,
    make: impl FnOnce(&crate::progress::Step<'_>) -> Result<Entries<K>, BuildError>,
) -> Result<MadeLayer, BuildError> {
    let key = layer_key(worker, key);
    if !no_cache && let Some(hit) = lookup(worker, &key) {
        worker.cached.fetch_add(1, Ordering::Relaxed);
        step.cached();
        return Ok(hit);
    }
    let Entries {
        entries,
        keep_alive,
        private,
    } = match make(&step) {
        Ok(e) => e,
        Err(e) => {
            step.error(&e.to_string());
            return Err(e);
        }
    };
    let made_at = unix_now();
    let opts = layer_options(worker);
    // Clamped file times are in the tar only: such a layer is unpacked.
    let staged = (private && !entries.is_empty() && opts.source_date_epoch.is_none())
        .then(|| worker.snaps.stage_private(&entries).ok())
        .flatten();
    let layer = if entries.is_empty() {
        None
    } else {
        let (blob, diff_id) = crate::commit::write_layer(
            worker.store,
            entries,
            &opts,
            kiln_image::media::Format::Oci,
        )?;
        worker.precompress.layer(&blob);
        Some((blob, diff_id))
    };
    drop(keep_alive);
    if let (Some(dir), Some((_, diff_id))) = (staged, &layer) {
        // Failing, the layer is unpacked from its blob when needed.
        let _ = dir.commit(diff_id);
    }
    worker.cache.put(
        &key,
        &CachedLayer {
            layer: layer.clone(),
            created: made_at,
        },
    )?;
    worker.run.fetch_add(1, Ordering::Relaxed);
    step.done();
    Ok(MadeLayer { layer, made_at })
}

/// The cache's key of the layer an op with `key` makes.
fn layer_key(worker: &Worker<'_>, key: &Digest) -> Digest {
    let mut k = KeyHasher::new("layer");
    k.str("op", &key.to_string());
    // Layers are plain in the cache whatever the output wants ("v2"), so a
    // `--push` after a local build reuses it.
    k.str("layer", "plain-v2");
    k.json("clamp", &layer_options(worker).source_date_epoch);
    k.finish()
}

/// A cache hit for the layer key `key` (the caller counts the step).
fn lookup(worker: &Worker<'_>, key: &Digest) -> Option<MadeLayer> {
    let hit = worker.cache.get(key)?;
    // A layer still in a registry is compressed there already.
    if let Some((blob, _)) = &hit.layer
        && worker.store.has_blob(&blob.digest)
    {
        worker.precompress.layer(blob);
    }
    Some(MadeLayer {
        layer: hit.layer,
        made_at: hit.created,
    })
}

/// A step's definition key: what it does over which input filesystems
/// (by their layers' diff IDs), known before any file is read. A step
/// whose own key needs its inputs' files (a COPY's sources and the
/// directories it lands in, a WORKDIR's parents) is looked up by this
/// one first, so a hit leaves layers still in a registry there; the
/// entry is recorded under both keys. The caller counts the step. A
/// build that exports its cache skips it (see `CacheSession::exporting`).
pub(crate) fn definition_hit(worker: &Worker<'_>, definition: &Digest) -> Option<MadeLayer> {
    // An export wants the content key as well, which only the files give.
    if worker
        .opts
        .cache_session
        .as_ref()
        .is_some_and(|s| s.exporting())
    {
        return None;
    }
    lookup(worker, &layer_key(worker, definition))
}

/// Records what the step with `definition` made (or found) under that key too.
pub(crate) fn record_definition(
    worker: &Worker<'_>,
    definition: &Digest,
    made: &MadeLayer,
) -> Result<(), BuildError> {
    let entry = CachedLayer {
        layer: made.layer.clone(),
        created: made.made_at,
    };
    Ok(worker.cache.put(&layer_key(worker, definition), &entry)?)
}

pub(crate) fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Fills in the times BuildKit's exporter does, so that an unchanged
/// rebuild (every layer from the cache, with the time it was first made)
/// writes the same config: history entries without a time (metadata steps)
/// get the time of the first layer that follows one of them, or else of
/// the last layer; the image was created when its last history entry was.
/// With SOURCE_DATE_EPOCH the image was created then.
pub(crate) fn stamp_times(mut image: Image, source_date_epoch: Option<i64>) -> Image {
    let history = &mut image.config.history;
    let mut fill = None;
    let mut untimed_seen = false;
    for h in history.iter() {
        match &h.created {
            Some(t) => {
                fill = Some(t.clone());
                if untimed_seen {
                    break;
                }
            }
            None => untimed_seen = true,
        }
    }
    for h in history.iter_mut().filter(|h| h.created.is_none()) {
        h.created = fill.clone();
    }
    let created = match source_date_epoch {
        Some(e) => Some(kiln_image::time::rfc3339(e)),
        None => history.iter().rev().find_map(|h| h.created.clone()),
    };
    match created {
        Some(c) => image.created_at(c),
        None => image,
    }
}
