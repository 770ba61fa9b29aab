//! OCI image layouts (a directory with `oci-layout`, `index.json` and
//! `blobs/`) as an image source and sink: skopeo's `oci:DIR[:TAG]`.
//!
//! Blob paths are built from validated digests only, so a hostile
//! `index.json` cannot name a file outside `blobs/`.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::manifest::{Descriptor, Index};
use crate::media;
use crate::store::{REF_NAME, write_atomic};
use crate::transport::{ImageSink, ImageSource, RawManifest, Result, TransportError};
use crate::{Digest, Hasher};

pub(crate) fn blob_rel_path(d: &Digest) -> String {
    format!("blobs/{}/{}", d.algorithm().as_str(), d.hex())
}

/// Picks the entry of a layout's index that `tag` names: the entry whose
/// `org.opencontainers.image.ref.name` is the tag, or with no tag the only
/// entry.
pub(crate) fn select_entry(index: &Index, tag: Option<&str>, what: &str) -> Result<Descriptor> {
    match tag {
        Some(t) => index
            .manifests
            .iter()
            .find(|d| d.annotations.get(REF_NAME).map(String::as_str) == Some(t))
            .cloned()
            .ok_or_else(|| TransportError::Invalid(format!("{what} has no image named {t:?}"))),
        None => match index.manifests.as_slice() {
            [one] => Ok(one.clone()),
            [] => Err(TransportError::Invalid(format!("{what} holds no image"))),
            _ => Err(TransportError::Invalid(format!(
                "{what} holds {} images; name one with :TAG",
                index.manifests.len()
            ))),
        },
    }
}

pub struct LayoutSource {
    dir: PathBuf,
    top: Descriptor,
}

/// The annotation containerd (and Docker 25) use for an image's full name.
pub const IMAGE_NAME: &str = "io.containerd.image.name";

/// The full image name an index entry carries, if any: containerd's
/// annotation, or a ref.name that is a whole reference rather than a tag.
pub fn image_name_of(desc: &Descriptor) -> Option<crate::Reference> {
    if let Some(n) = desc.annotations.get(IMAGE_NAME) {
        return crate::Reference::parse(n).ok();
    }
    let r = desc.annotations.get(REF_NAME)?;
    if r.contains('/') {
        crate::Reference::parse(r).ok()
    } else {
        None
    }
}

pub(crate) fn parse_index(bytes: &[u8], what: &str) -> Result<Index> {
    serde_json::from_slice(bytes)
        .map_err(|e| TransportError::Invalid(format!("{what}: invalid index.json: {e}")))
}

impl LayoutSource {
    /// Every entry of the layout's index, with the image name it carries.
    pub fn entries(dir: &Path) -> Result<Vec<(Descriptor, Option<crate::Reference>)>> {
        let p = dir.join("index.json");
        let bytes = fs::read(&p).map_err(TransportError::io(format!("read {}", p.display())))?;
        let index = parse_index(&bytes, &dir.display().to_string())?;
        Ok(index
            .manifests
            .into_iter()
            .map(|d| {
                let n = image_name_of(&d);
                (d, n)
            })
            .collect())
    }

    pub fn from_descriptor(dir: &Path, top: Descriptor) -> LayoutSource {
        LayoutSource {
            dir: dir.to_path_buf(),
            top,
        }
    }

    pub fn open(dir: &Path, tag: Option<&str>) -> Result<LayoutSource> {
        let index_path = dir.join("index.json");
        let bytes = fs::read(&index_path)
            .map_err(TransportError::io(format!("read {}", index_path.display())))?;
        let index = parse_index(&bytes, &dir.display().to_string())?;
        let top = select_entry(&index, tag, &format!("OCI layout {}", dir.display()))?;
        Ok(LayoutSource {
            dir: dir.to_path_buf(),
            top,
        })
    }

    fn open_blob(&self, d: &Digest) -> Result<File> {
        let p = self.dir.join(blob_rel_path(d));
        File::open(&p).map_err(TransportError::io(format!("open {}", p.display())))
    }

    fn read_verified(&self, d: &Digest) -> Result<Vec<u8>> {
        let mut bytes = Vec::new();
        self.open_blob(d)?
            .read_to_end(&mut bytes)
            .map_err(TransportError::io(format!("read blob {d}")))?;
        verify(d, &bytes)?;
        Ok(bytes)
    }
}

pub(crate) fn verify(d: &Digest, bytes: &[u8]) -> Result<()> {
    let mut h = Hasher::new(d.algorithm());
    h.update(bytes);
    let got = h.finish();
    if &got != d {
        return Err(TransportError::Invalid(format!(
            "content of {d} has digest {got}"
        )));
    }
    Ok(())
}

/// A manifest or index read from a verified blob. The top entry's media
/// type comes from the index that points at it; any other manifest names
/// its own (or is taken for what it parses as).
pub(crate) fn verified_manifest(
    digest: &Digest,
    media_type: Option<&str>,
    bytes: Vec<u8>,
) -> RawManifest {
    RawManifest {
        media_type: media_type.map_or_else(|| media_type_of(&bytes), str::to_string),
        digest: digest.clone(),
        bytes,
    }
}

fn media_type_of(bytes: &[u8]) -> String {
    match crate::AnyManifest::parse(None, bytes) {
        Ok(crate::AnyManifest::Index(i)) => i.media_type.unwrap_or_else(|| media::OCI_INDEX.into()),
        Ok(crate::AnyManifest::Manifest(m)) => {
            m.media_type.unwrap_or_else(|| media::OCI_MANIFEST.into())
        }
        Err(_) => media::OCI_MANIFEST.into(),
    }
}

impl ImageSource for LayoutSource {
    fn top(&self) -> Result<RawManifest> {
        let bytes = self.read_verified(&self.top.digest)?;
        Ok(verified_manifest(
            &self.top.digest,
            Some(&self.top.media_type),
            bytes,
        ))
    }

    fn manifest(&self, digest: &Digest) -> Result<RawManifest> {
        Ok(verified_manifest(digest, None, self.read_verified(digest)?))
    }

    fn blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>> {
        Ok(Box::new(io::BufReader::with_capacity(
            256 * 1024,
            self.open_blob(&desc.digest)?,
        )))
    }
}

/// Writes an image into a layout directory, adding (or replacing) the entry
/// named `tag` in its index.
pub struct LayoutSink {
    dir: PathBuf,
    tag: Option<String>,
    image_name: Option<String>,
    top: Mutex<Option<Descriptor>>,
}

impl LayoutSink {
    pub fn create(dir: &Path, tag: Option<&str>) -> Result<LayoutSink> {
        let blobs = dir.join("blobs/sha256");
        fs::create_dir_all(&blobs)
            .map_err(TransportError::io(format!("create {}", blobs.display())))?;
        write_atomic(
            &dir.join("oci-layout"),
            br#"{"imageLayoutVersion":"1.0.0"}"#,
        )?;
        Ok(LayoutSink {
            dir: dir.to_path_buf(),
            tag: tag.map(str::to_string),
            image_name: None,
            top: Mutex::new(None),
        })
    }

    /// Also records the image's full name (containerd's annotation).
    pub fn with_image_name(mut self, name: Option<String>) -> LayoutSink {
        self.image_name = name;
        self
    }

    fn write_blob(&self, d: &Digest, data: &mut dyn Read, size: u64) -> Result<()> {
        let dest = self.dir.join(blob_rel_path(d));
        let tmp = dest.with_extension(format!("tmp-{}", std::process::id()));
        let mut f =
            File::create(&tmp).map_err(TransportError::io(format!("create {}", tmp.display())))?;
        let mut h = Hasher::new(d.algorithm());
        let mut buf = vec![0u8; 256 * 1024];
        let mut n_total = 0u64;
        let res: Result<()> = (|| {
            loop {
                let n = data
                    .read(&mut buf)
                    .map_err(TransportError::io(format!("read blob {d}")))?;
                if n == 0 {
                    break;
                }
                h.update(&buf[..n]);
                n_total += n as u64;
                f.write_all(&buf[..n])
                    .map_err(TransportError::io(format!("write {}", tmp.display())))?;
            }
            let got = h.finish();
            if &got != d || n_total != size {
                return Err(TransportError::Invalid(format!(
                    "blob {d} ({size} bytes) arrived as {got} ({n_total} bytes)"
                )));
            }
            f.sync_all()
                .map_err(TransportError::io(format!("fsync {}", tmp.display())))?;
            fs::rename(&tmp, &dest)
                .map_err(TransportError::io(format!("rename {}", dest.display())))
        })();
        if res.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        res
    }
}

impl ImageSink for LayoutSink {
    fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        Ok(self.dir.join(blob_rel_path(&desc.digest)).is_file())
    }

    fn put_blob(&self, desc: &Descriptor, data: &mut dyn Read) -> Result<()> {
        self.write_blob(&desc.digest, data, desc.size)
    }

    fn put_manifest(&self, raw: &RawManifest, top: bool) -> Result<()> {
        self.write_blob(
            &raw.digest,
            &mut raw.bytes.as_slice(),
            raw.bytes.len() as u64,
        )?;
        if top {
            *self.top.lock().expect("lock") = Some(raw.descriptor());
        }
        Ok(())
    }

    fn finish(&self) -> Result<()> {
        let Some(mut top) = self.top.lock().expect("lock").take() else {
            return Err(TransportError::Invalid("no image was written".into()));
        };
        let index_path = self.dir.join("index.json");
        let mut index = match fs::read(&index_path) {
            Ok(b) => serde_json::from_slice::<Index>(&b).map_err(|e| {
                TransportError::Invalid(format!(
                    "{}: invalid index.json: {e}",
                    index_path.display()
                ))
            })?,
            Err(_) => Index::new(media::Format::Oci, Vec::new()),
        };
        match &self.tag {
            Some(t) => {
                // An entry of the same tag is replaced, unless both carry
                // full names that differ: `save a/b:1 x:1` into one layout
                // keeps both (their tags are both `1`).
                let other_image = |d: &Descriptor| {
                    matches!((d.annotations.get(IMAGE_NAME), &self.image_name),
                        (Some(theirs), Some(ours)) if theirs != ours)
                };
                index
                    .manifests
                    .retain(|d| d.annotations.get(REF_NAME) != Some(t) || other_image(d));
                top.annotations.insert(REF_NAME.into(), t.clone());
            }
            None => index.manifests.retain(|d| d.digest != top.digest),
        }
        if let Some(n) = &self.image_name {
            top.annotations.insert(IMAGE_NAME.into(), n.clone());
        }
        index.manifests.push(top);
        let bytes = crate::canonical::to_vec(&index).expect("index serializes");
        write_atomic(&index_path, &bytes)?;
        Ok(())
    }
}
