//! Plain-tar layers compressed for the road.
//!
//! `kiln build` keeps the layers of images it stores locally as plain tars,
//! as docker and buildah do: compression is most of a layer's cost and
//! buys nothing on the machine that built it. It marks them ([`mark_built`]),
//! and what sends an image to a registry or an archive compresses the
//! marked ones first: [`compressed_top`] writes a compressed blob for each
//! into the store (once per layer: the result is remembered, and rooted so
//! `prune` keeps it) and a manifest naming them, and returns that
//! manifest. The config and its diff IDs do not change, so the image ID
//! does not either; the manifest digest does, as after `docker push`.
//!
//! Layers kiln was given (pulled, loaded, copied in) are never marked: an
//! image that came in plain leaves plain, as with skopeo and crane.
//!
//! It does not push anything: the caller copies the returned manifest.

use std::io::BufReader;

use serde::{Deserialize, Serialize};

use crate::layer::LayerWriter;
use crate::manifest::AnyManifest;
use crate::media::{self, Compression, Format};
use crate::store::{Store, write_atomic};
use crate::transport::{Result, TransportError};
use crate::{Descriptor, Digest};

/// The store directory remembering each plain layer's compressed blob.
const DIR: &str = "compressed-layers";
/// The GC-root owner of those blobs.
const OWNER: &str = "compressed-layers";

#[derive(Serialize, Deserialize)]
struct Remembered {
    digest: Digest,
    size: u64,
}

/// The manifest (or index) `top` with every plain-tar layer swapped for a
/// `compression` blob, written into the store; `top` itself when it has
/// none.
pub fn compressed_top(
    store: &Store,
    top: &Descriptor,
    compression: Compression,
) -> Result<Descriptor> {
    compressed_top_with(store, top, compression, &|_| Ok(None))
}

/// What [`compressed_top_with`] does with a plain layer the store lacks:
/// the compressed blob to name instead, as it is elsewhere (a registry
/// the push can mount it from), or `None` once the plain layer has been
/// made present (fetched and marked built).
pub type Absent<'a> = dyn Fn(&Digest) -> Result<Option<(Digest, u64)>> + 'a;

/// [`compressed_top`], where a plain layer the store does not have is
/// first handed to `absent`.
pub fn compressed_top_with(
    store: &Store,
    top: &Descriptor,
    compression: Compression,
    absent: &Absent<'_>,
) -> Result<Descriptor> {
    let bytes = store.read_blob(&top.digest)?;
    let changed = match AnyManifest::parse(Some(&top.media_type), &bytes)? {
        AnyManifest::Index(mut index) => {
            let mut any = false;
            for child in &mut index.manifests {
                let new = compressed_top_with(store, child, compression, absent)?;
                if new.digest != child.digest {
                    child.digest = new.digest;
                    child.size = new.size;
                    any = true;
                }
            }
            any.then(|| crate::canonical::to_vec(&index))
        }
        AnyManifest::Manifest(mut m) => {
            let format = if m.media_type.as_deref() == Some(media::DOCKER_MANIFEST)
                || top.media_type == media::DOCKER_MANIFEST
            {
                Format::Docker
            } else {
                Format::Oci
            };
            let mut any = false;
            for layer in &mut m.layers {
                let plain = media::layer_compression(&layer.media_type) == Some(Compression::None);
                if plain
                    && !store.has_blob(&layer.digest)
                    && let Some((digest, size)) = absent(&layer.digest)?
                {
                    layer.media_type = format.layer(compression).to_string();
                    layer.digest = digest;
                    layer.size = size;
                    any = true;
                    continue;
                }
                if plain && is_built(store, &layer.digest)? {
                    let (digest, size) = compressed_blob(store, &layer.digest, compression)?;
                    layer.media_type = format.layer(compression).to_string();
                    layer.digest = digest;
                    layer.size = size;
                    any = true;
                }
            }
            any.then(|| crate::canonical::to_vec(&m))
        }
    };
    let Some(bytes) = changed else {
        return Ok(top.clone());
    };
    let bytes =
        bytes.map_err(|e| TransportError::Invalid(format!("manifest does not serialize: {e}")))?;
    let digest = store.put_blob(&bytes)?;
    Ok(Descriptor::new(
        top.media_type.clone(),
        digest,
        bytes.len() as u64,
    ))
}

/// Records that kiln made the plain layer blob `plain` and keeps it plain
/// only locally.
pub fn mark_built(store: &Store, plain: &Digest) -> Result<()> {
    let marker = store.dir(DIR)?.join(format!("{}.built", plain.hex()));
    if !marker.exists() {
        write_atomic(&marker, b"")?;
    }
    Ok(())
}

fn is_built(store: &Store, plain: &Digest) -> Result<bool> {
    Ok(store
        .dir(DIR)?
        .join(format!("{}.built", plain.hex()))
        .exists())
}

/// The `compression` blob of the plain layer `plain`, made once: a build
/// that will export calls it as each layer is made, so the export finds
/// the work done.
pub fn compressed_blob(
    store: &Store,
    plain: &Digest,
    compression: Compression,
) -> Result<(Digest, u64)> {
    let memo = store.dir(DIR)?.join(memo_key(plain, compression));
    if let Ok(bytes) = std::fs::read(&memo)
        && let Ok(r) = serde_json::from_slice::<Remembered>(&bytes)
        && store.has_blob(&r.digest)
    {
        return Ok((r.digest, r.size));
    }
    let src = store.open_blob(plain)?;
    let mut lw = LayerWriter::new(store.blob_writer()?, compression, None, 0);
    let context = || format!("compressing layer {plain}");
    std::io::copy(&mut BufReader::with_capacity(256 * 1024, src), &mut lw)
        .map_err(TransportError::io(context()))?;
    let (blob, info) = lw.finish().map_err(TransportError::io(context()))?;
    if info.diff_id != *plain {
        return Err(TransportError::Invalid(format!(
            "layer {plain} does not match its digest in the store"
        )));
    }
    let (digest, size) = blob.commit(Some(&info.digest))?;
    store.set_root(
        OWNER,
        &memo_key(plain, compression),
        std::slice::from_ref(&digest),
    )?;
    let r = Remembered {
        digest: digest.clone(),
        size,
    };
    write_atomic(&memo, &serde_json::to_vec(&r).expect("serializes"))?;
    Ok((digest, size))
}

fn suffix(c: Compression) -> &'static str {
    match c {
        Compression::Gzip => "gzip",
        Compression::Zstd => "zstd",
        Compression::None => "none",
    }
}

fn memo_key(plain: &Digest, c: Compression) -> String {
    format!("{}-{}", plain.hex(), suffix(c))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layer::{Entry, LayerOptions, write_entries_layer};
    use crate::manifest::{Index, Manifest};

    /// A plain one-file layer in the store, marked as built or not.
    fn plain_layer(store: &Store, name: &str, built: bool) -> Descriptor {
        let opts = LayerOptions {
            compression: Compression::None,
            ..LayerOptions::default()
        };
        let entries = vec![Entry::file_bytes(name, name.repeat(1000))];
        let (blob, info) =
            write_entries_layer(entries, &opts, store.blob_writer().unwrap()).unwrap();
        blob.commit(Some(&info.digest)).unwrap();
        if built {
            mark_built(store, &info.digest).unwrap();
        }
        Descriptor::new(media::OCI_LAYER, info.digest, info.size)
    }

    fn manifest(store: &Store, format: Format, layers: Vec<Descriptor>) -> Descriptor {
        let config = store
            .put_json(format.config(), &serde_json::json!({}))
            .unwrap();
        let m = Manifest::new(format, config, layers);
        let bytes = crate::canonical::to_vec(&m).unwrap();
        let digest = store.put_blob(&bytes).unwrap();
        Descriptor::new(format.manifest(), digest, bytes.len() as u64)
    }

    fn layers_of(store: &Store, top: &Descriptor) -> Vec<Descriptor> {
        match AnyManifest::parse(None, &store.read_blob(&top.digest).unwrap()).unwrap() {
            AnyManifest::Manifest(m) => m.layers,
            AnyManifest::Index(_) => panic!("not a manifest"),
        }
    }

    #[test]
    fn built_plain_layers_are_compressed_given_ones_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let built = plain_layer(&store, "built", true);
        let given = plain_layer(&store, "given", false);
        let top = manifest(&store, Format::Docker, vec![built.clone(), given.clone()]);
        let out = compressed_top(&store, &top, Compression::Gzip).unwrap();
        assert_ne!(out.digest, top.digest);
        let layers = layers_of(&store, &out);
        assert_eq!(layers[0].media_type, media::DOCKER_LAYER_GZIP);
        let bytes = store.read_blob(&layers[0].digest).unwrap();
        assert_eq!(&bytes[..2], &[0x1f, 0x8b]);
        assert_eq!(bytes.len() as u64, layers[0].size);
        assert_eq!(layers[1], given, "a layer kiln was given changed");
        // Once per layer: the second time finds the same blob.
        let again = compressed_top(&store, &top, Compression::Gzip).unwrap();
        assert_eq!(again, out);
        // Plain wanted, or nothing built: the top itself.
        assert_eq!(
            compressed_top(&store, &top, Compression::None).unwrap(),
            top
        );
        let only_given = manifest(&store, Format::Oci, vec![given]);
        assert_eq!(
            compressed_top(&store, &only_given, Compression::Gzip).unwrap(),
            only_given
        );
    }

    #[test]
    fn an_absent_plain_layer_is_named_as_it_is_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let here = plain_layer(&store, "here", true);
        // A plain layer the store lacks (still in a registry cache).
        let away = Descriptor::new(media::OCI_LAYER, Digest::sha256_of(b"away"), 4);
        let top = manifest(&store, Format::Oci, vec![here.clone(), away.clone()]);
        let elsewhere = Digest::sha256_of(b"away, gzipped");
        let asked = std::sync::Mutex::new(Vec::new());
        let absent = |d: &Digest| {
            asked.lock().unwrap().push(d.clone());
            Ok(Some((elsewhere.clone(), 9)))
        };
        let out = compressed_top_with(&store, &top, Compression::Gzip, &absent).unwrap();
        // Only the absent layer was asked about; the other compressed here.
        assert_eq!(*asked.lock().unwrap(), vec![away.digest.clone()]);
        let layers = layers_of(&store, &out);
        assert_eq!(layers[1].digest, elsewhere);
        assert_eq!(layers[1].size, 9);
        assert_eq!(layers[1].media_type, media::OCI_LAYER_GZIP);
        assert!(store.has_blob(&layers[0].digest));
        assert_ne!(layers[0].digest, here.digest);
        // Without an answer, a layer that is not here is an error, not a
        // manifest naming a blob nobody has.
        let none = |_: &Digest| Ok(None);
        let mut marked = away.clone();
        marked.digest = Digest::sha256_of(b"marked but gone");
        mark_built(&store, &marked.digest).unwrap();
        let top = manifest(&store, Format::Oci, vec![marked]);
        assert!(compressed_top_with(&store, &top, Compression::Gzip, &none).is_err());
    }

    #[test]
    fn an_index_gets_its_children_compressed() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = manifest(&store, Format::Oci, vec![plain_layer(&store, "a", true)]);
        let b = manifest(&store, Format::Oci, vec![plain_layer(&store, "b", true)]);
        let index = Index::new(Format::Oci, vec![a.clone(), b.clone()]);
        let bytes = crate::canonical::to_vec(&index).unwrap();
        let top = Descriptor::new(
            media::OCI_INDEX,
            store.put_blob(&bytes).unwrap(),
            bytes.len() as u64,
        );
        let out = compressed_top(&store, &top, Compression::Zstd).unwrap();
        let children = match AnyManifest::parse(None, &store.read_blob(&out.digest).unwrap()) {
            Ok(AnyManifest::Index(i)) => i.manifests,
            other => panic!("not an index: {other:?}"),
        };
        for (child, old) in children.iter().zip([a, b]) {
            assert_ne!(child.digest, old.digest);
            let layers = layers_of(&store, child);
            assert_eq!(layers[0].media_type, media::OCI_LAYER_ZSTD);
        }
    }
}
