//! Image surgery without a rebuild (`kiln mutate`, `append`, `flatten`),
//! lazily, as go-containerregistry's `mutate` does: an image read from any
//! [`ImageSource`] is its config and manifest plus layer *descriptors*.
//! An edit changes the config, the annotations or the layer list; what it
//! adds (a new layer, written to a file) is held aside. [`Rewrite::finish`]
//! turns the result into an [`ImageSource`] whose top is the new manifest,
//! whose new blobs are served from memory or file, and whose every other
//! blob is the original source's. Copying that into a sink with
//! [`crate::transport::copy`] then moves only what the sink lacks: a
//! registry sink on the same registry finds or mounts the base layers, so
//! they are never downloaded.
//!
//! Nothing is named until the copy writes the top manifest last, so a
//! failure leaves no half-written image tagged.
//!
//! Each operation has a runnable example under `crates/kiln-image/examples/`:
//! `mutate.rs` (config and annotations), `append.rs` ([`Rewrite::append_layer`]),
//! `flatten.rs` ([`Rewrite::flatten`]), `rebase.rs` ([`Rewrite::rebase`]) and
//! `squash.rs` ([`Rewrite::squash`]); run one with
//! `cargo run -p kiln-image --example mutate`.

mod squash;

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use crate::config::{History, ImageConfig};
use crate::layer::{LayerInfo, LayerOptions};
use crate::manifest::{Descriptor, Index, Platform, platforms_of};
use crate::mutate::{Image, NewLayer};
use crate::transport::{ImageSource, RawManifest, Result, TransportError};
use crate::{AnyManifest, Digest};

/// Configs larger than this are refused: a config is a few KiB, and a
/// hostile source must not make us hold gigabytes.
const MAX_CONFIG: u64 = 64 << 20;

/// A blob the edit made, or one another image (a new base) has.
#[derive(Clone)]
enum NewBlob<'s> {
    Bytes(Vec<u8>),
    File(PathBuf),
    From(&'s dyn ImageSource),
}

/// An image being edited, read from `src`.
pub struct Rewrite<'s> {
    src: &'s dyn ImageSource,
    pub image: Image,
    /// The manifest's annotations (kept from the original).
    pub annotations: BTreeMap<String, String>,
    blobs: HashMap<Digest, NewBlob<'s>>,
}

/// The image of `index` for `platform`, an error naming the platforms the
/// index has when it has none for it.
fn child_for(
    src: &dyn ImageSource,
    index: &crate::Index,
    platform: &Platform,
) -> Result<crate::Manifest> {
    let d = index.select(platform).ok_or_else(|| {
        TransportError::Invalid(format!(
            "the index has no image for {platform}; it has {}",
            platforms_of(index)
        ))
    })?;
    match src.manifest(&d.digest)?.parse()? {
        AnyManifest::Manifest(m) => Ok(m),
        AnyManifest::Index(_) => Err(TransportError::Invalid(format!(
            "{} in the index is itself an index",
            d.digest
        ))),
    }
}

/// The config blob of the image `src` names, exactly as stored (checked
/// against its digest); an index is resolved to `platform`'s image.
pub fn config_bytes(src: &dyn ImageSource, platform: &Platform) -> Result<Vec<u8>> {
    let m = match src.top()?.parse()? {
        AnyManifest::Manifest(m) => m,
        AnyManifest::Index(index) => child_for(src, &index, platform)?,
    };
    read_verified(src, &m.config, MAX_CONFIG)
}

/// What a source names: one image, or an index (left as it is).
pub enum Top<'s> {
    Image(Box<Rewrite<'s>>),
    Index(RawManifest, Index),
}

impl<'s> Rewrite<'s> {
    /// Reads the image `src` names; an index is resolved to `platform`'s
    /// image, and without a platform the error says which there are.
    pub fn load(src: &'s dyn ImageSource, platform: Option<&Platform>) -> Result<Rewrite<'s>> {
        match Self::open(src, platform)? {
            Top::Image(r) => Ok(*r),
            Top::Index(_, index) => Err(TransportError::Invalid(format!(
                "the image is an index of several platforms ({}): choose one with --platform",
                platforms_of(&index)
            ))),
        }
    }

    /// Like [`Rewrite::load`], but an index without a platform is handed
    /// back as it is (for edits of the index itself).
    pub fn open(src: &'s dyn ImageSource, platform: Option<&Platform>) -> Result<Top<'s>> {
        let top = src.top()?;
        let m = match (top.parse()?, platform) {
            (AnyManifest::Manifest(m), _) => m,
            (AnyManifest::Index(index), None) => return Ok(Top::Index(top, index)),
            (AnyManifest::Index(index), Some(want)) => child_for(src, &index, want)?,
        };
        let bytes = read_verified(src, &m.config, MAX_CONFIG)?;
        let config: ImageConfig = serde_json::from_slice(&bytes).map_err(|e| {
            TransportError::Invalid(format!("the config {} is not valid: {e}", m.config.digest))
        })?;
        if config.rootfs.diff_ids.len() != m.layers.len() {
            return Err(TransportError::Invalid(format!(
                "the config lists {} layers but the manifest {}",
                config.rootfs.diff_ids.len(),
                m.layers.len()
            )));
        }
        if let Some(want) = platform
            && !config.platform().satisfies(want)
        {
            // As for an index: a platform asked for is never silently
            // another one.
            return Err(TransportError::Invalid(format!(
                "the image is for {}, not {want}",
                config.platform()
            )));
        }
        let format = m.format();
        Ok(Top::Image(Box::new(Rewrite {
            src,
            image: Image {
                config,
                layers: m.layers,
                format,
            },
            annotations: m.annotations,
            blobs: HashMap::new(),
        })))
    }

    /// Appends a layer already written to `file` (`info` from the layer
    /// writer) with its history entry.
    pub fn append_layer(&mut self, file: PathBuf, info: &LayerInfo, history: History) {
        let media_type = self.image.format.layer(info.compression);
        let layer = NewLayer {
            blob: Descriptor::new(media_type, info.digest.clone(), info.size),
            diff_id: info.diff_id.clone(),
        };
        self.image = self.image.clone().with_layer(layer, history);
        self.blobs.insert(info.digest.clone(), NewBlob::File(file));
    }

    /// Replaces every layer with one: the filesystem they make, whiteouts
    /// applied (written under `scratch` to `file`). The old history stays,
    /// every entry marked as adding no layer, and `history` records the
    /// flattened layer. Returns the extraction warnings.
    pub fn flatten(
        &mut self,
        scratch: &Path,
        file: PathBuf,
        opts: &LayerOptions,
        history: History,
    ) -> Result<Vec<crate::layer::ExtractWarning>> {
        let out = std::fs::File::create(&file)
            .map_err(TransportError::io(format!("create {}", file.display())))?;
        let src = self.src;
        let readers = self
            .image
            .layers
            .iter()
            .map(|d| LazyBlob::new(src, d.clone()));
        let (out, info, warnings) =
            crate::layer::flatten(readers, scratch, opts, io::BufWriter::new(out))
                .map_err(|e| TransportError::Invalid(format!("flatten: {e}")))?;
        out.into_inner()
            .map_err(|e| e.into_error())
            .and_then(|f| f.sync_all())
            .map_err(TransportError::io(format!("write {}", file.display())))?;
        self.image.layers.clear();
        self.image.config.rootfs.diff_ids.clear();
        for h in &mut self.image.config.history {
            h.empty_layer = true;
        }
        self.append_layer(file, &info, history);
        Ok(warnings)
    }

    /// Puts the image on `new_base` instead of `old_base`, as `pack
    /// rebase` does: the layers (and history entries) of the old base at
    /// the bottom are replaced with the new base's; the image's own layers
    /// and config stay. Refused unless the image starts with exactly the
    /// old base's layers (by diff ID) and the new base is for the same
    /// platform.
    pub fn rebase(&mut self, old_base: &Rewrite<'_>, new_base: &Rewrite<'s>) -> Result<()> {
        let old = &old_base.image.config;
        let new = &new_base.image.config;
        let mine = &self.image.config;
        let n = old.rootfs.diff_ids.len();
        if mine.rootfs.diff_ids.len() < n || mine.rootfs.diff_ids[..n] != old.rootfs.diff_ids[..] {
            let at = mine
                .rootfs
                .diff_ids
                .iter()
                .zip(&old.rootfs.diff_ids)
                .position(|(a, b)| a != b)
                .unwrap_or(mine.rootfs.diff_ids.len());
            return Err(TransportError::Invalid(format!(
                "the image is not built on the old base: its layer {at} is not the old base's"
            )));
        }
        if (&new.os, &new.architecture, &new.variant)
            != (&mine.os, &mine.architecture, &mine.variant)
        {
            return Err(TransportError::Invalid(format!(
                "the new base is for {}, the image for {}",
                new.platform(),
                mine.platform()
            )));
        }
        // The old base's history entries are the first ones, as a build
        // on it writes them; without that, history cannot be matched up.
        let h = old.history.len();
        if mine.history.len() < h
            || mine.history[..h]
                .iter()
                .zip(&old.history)
                .any(|(a, b)| a.created_by != b.created_by || a.empty_layer != b.empty_layer)
        {
            return Err(TransportError::Invalid(
                "the image's history does not start with the old base's".into(),
            ));
        }
        let mut history = new.history.clone();
        history.extend_from_slice(&mine.history[h..]);
        let mut diff_ids = new.rootfs.diff_ids.clone();
        diff_ids.extend_from_slice(&mine.rootfs.diff_ids[n..]);
        let mut layers = new_base.image.layers.clone();
        layers.extend_from_slice(&self.image.layers[n..]);
        for l in &new_base.image.layers {
            self.blobs
                .insert(l.digest.clone(), NewBlob::From(new_base.src));
        }
        self.image.config.history = history;
        self.image.config.rootfs.diff_ids = diff_ids;
        self.image.layers = layers;
        Ok(())
    }

    /// The edited image as a source: its top is the new manifest.
    pub fn finish(self) -> Result<RewriteSource<'s>> {
        let (config, top) = self.image.encode(&self.annotations)?;
        let mut blobs = self.blobs;
        blobs.insert(Digest::sha256_of(&config), NewBlob::Bytes(config));
        Ok(RewriteSource {
            inner: self.src,
            top,
            blobs,
        })
    }
}

/// An index with new annotations, as a source: its children are the
/// original's, untouched.
pub fn annotate_index<'s>(
    src: &'s dyn ImageSource,
    raw: &RawManifest,
    mut index: Index,
    set: &BTreeMap<String, String>,
    remove: &[String],
) -> Result<RewriteSource<'s>> {
    for k in remove {
        index.annotations.remove(k);
    }
    index.annotations.extend(set.clone());
    let bytes = crate::canonical::to_vec(&index)
        .map_err(|e| TransportError::Invalid(format!("index does not serialize: {e}")))?;
    Ok(RewriteSource {
        inner: src,
        top: RawManifest::new(raw.media_type.clone(), bytes),
        blobs: HashMap::new(),
    })
}

/// The result of an edit as an [`ImageSource`].
pub struct RewriteSource<'s> {
    inner: &'s dyn ImageSource,
    top: RawManifest,
    blobs: HashMap<Digest, NewBlob<'s>>,
}

impl ImageSource for RewriteSource<'_> {
    fn top(&self) -> Result<RawManifest> {
        Ok(self.top.clone())
    }

    fn manifest(&self, digest: &Digest) -> Result<RawManifest> {
        self.inner.manifest(digest)
    }

    fn blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>> {
        match self.blobs.get(&desc.digest) {
            Some(NewBlob::Bytes(b)) => Ok(Box::new(&b[..])),
            Some(NewBlob::File(p)) => Ok(Box::new(io::BufReader::with_capacity(
                256 * 1024,
                std::fs::File::open(p)
                    .map_err(TransportError::io(format!("open {}", p.display())))?,
            ))),
            Some(NewBlob::From(other)) => other.blob(desc),
            None => self.inner.blob(desc),
        }
    }
}

/// Reads a whole (small) blob and checks it against its descriptor: a
/// source need not verify what it serves, and we parse these bytes.
fn read_verified(src: &dyn ImageSource, desc: &Descriptor, max: u64) -> Result<Vec<u8>> {
    if desc.size > max {
        return Err(TransportError::Invalid(format!(
            "{} is {} bytes, more than the {max} a config may be",
            desc.digest, desc.size
        )));
    }
    let mut bytes = Vec::with_capacity(desc.size as usize);
    src.blob(desc)?
        .take(max + 1)
        .read_to_end(&mut bytes)
        .map_err(TransportError::io(format!("read {}", desc.digest)))?;
    let mut h = desc.digest.hasher();
    h.update(&bytes);
    if h.finish() != desc.digest || bytes.len() as u64 != desc.size {
        return Err(TransportError::Invalid(format!(
            "{} does not match its digest or size",
            desc.digest
        )));
    }
    Ok(bytes)
}

/// A layer blob opened on first read and checked against its digest at
/// its end, so that a flatten never writes a layer the source corrupted.
pub(crate) struct LazyBlob<'s> {
    src: &'s dyn ImageSource,
    desc: Descriptor,
    state: Option<(Box<dyn Read + Send + 's>, Option<crate::Hasher>, u64)>,
}

impl<'s> LazyBlob<'s> {
    pub(crate) fn new(src: &'s dyn ImageSource, desc: Descriptor) -> LazyBlob<'s> {
        LazyBlob {
            src,
            desc,
            state: None,
        }
    }
}

impl Read for LazyBlob<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.state.is_none() {
            let r = self
                .src
                .blob(&self.desc)
                .map_err(|e| io::Error::other(format!("open {}: {e}", self.desc.digest)))?;
            self.state = Some((r, Some(self.desc.digest.hasher()), 0));
        }
        let (r, h, n) = self.state.as_mut().expect("opened above");
        let Some(hasher) = h else {
            return Ok(0); // verified at its end already
        };
        let k = r.read(buf)?;
        hasher.update(&buf[..k]);
        *n += k as u64;
        if k == 0 || *n > self.desc.size {
            let got = h.take().expect("checked above").finish();
            if *n != self.desc.size || got != self.desc.digest {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "layer {} does not match its digest or size",
                        self.desc.digest
                    ),
                ));
            }
        }
        Ok(k)
    }
}
