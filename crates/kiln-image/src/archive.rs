//! OCI archives (a tar of an OCI layout) and Docker archives (`docker save`
//! output) as image sources and sinks: skopeo's `oci-archive:` and
//! `docker-archive:`.
//!
//! Reading indexes the tar once and then reads each member in place by its
//! offset, so nothing is unpacked to disk; a compressed archive is
//! decompressed to a temp file first. Writing is sequential (a tar is), in a
//! fixed order with fixed metadata, so the same image gives the same bytes.
//! Docker archives are written as Docker 25 writes them: an OCI layout plus
//! `manifest.json`, which both old and new readers accept.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::layout::{
    blob_rel_path, image_name_of, parse_index, select_entry, verified_manifest, verify,
};
use crate::manifest::{Descriptor, Manifest};
use crate::reference::Reference;
use crate::transport::{ImageSource, RawManifest, Result, TransportError};
use crate::{Digest, Hasher, media};

mod sink;
pub use sink::{ArchiveKind, ArchiveSink};

/// Where each regular file of a tar lives in the file.
struct TarIndex {
    file: PathBuf,
    // Keeps a decompressed copy alive for as long as the index is used.
    _temp: Option<TempFile>,
    members: BTreeMap<String, (u64, u64)>,
}

struct TempFile(PathBuf);
impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

fn clean_member_name(name: &str) -> String {
    crate::clean_path::in_root(name)
}

impl TarIndex {
    fn open(path: &Path) -> Result<TarIndex> {
        let ctx = |op: &str| format!("{op} {}", path.display());
        let mut f = File::open(path).map_err(TransportError::io(ctx("open")))?;
        let mut magic = [0u8; 4];
        let n = f
            .read(&mut magic)
            .map_err(TransportError::io(ctx("read")))?;
        f.seek(SeekFrom::Start(0))
            .map_err(TransportError::io(ctx("seek")))?;
        let (file, temp) = match crate::layer::detect_compression(&magic[..n]) {
            media::Compression::None => (path.to_path_buf(), None),
            c => {
                let tmp = std::env::temp_dir().join(format!(
                    "kiln-archive-{}-{}",
                    std::process::id(),
                    Digest::sha256_of(path.as_os_str().as_encoded_bytes()).short()
                ));
                let guard = TempFile(tmp.clone());
                let mut out = File::create(&tmp).map_err(TransportError::io(ctx("decompress")))?;
                let mut r = crate::layer::decompress(BufReader::new(f), c)
                    .map_err(TransportError::io(ctx("decompress")))?;
                io::copy(&mut r, &mut out).map_err(TransportError::io(ctx("decompress")))?;
                (tmp, Some(guard))
            }
        };
        let mut members = BTreeMap::new();
        let f = File::open(&file).map_err(TransportError::io(ctx("open")))?;
        let mut archive = tar::Archive::new(BufReader::new(f));
        for entry in archive
            .entries()
            .map_err(TransportError::io(ctx("read tar")))?
        {
            let entry = entry.map_err(TransportError::io(ctx("read tar")))?;
            if !entry.header().entry_type().is_file() {
                continue;
            }
            let name = clean_member_name(&String::from_utf8_lossy(&entry.path_bytes()));
            members.insert(name, (entry.raw_file_position(), entry.size()));
        }
        Ok(TarIndex {
            file,
            _temp: temp,
            members,
        })
    }

    fn open_member(&self, name: &str) -> Result<io::Take<BufReader<File>>> {
        let (offset, size) = *self
            .members
            .get(name)
            .ok_or_else(|| TransportError::Invalid(format!("archive has no member {name:?}")))?;
        let mut f = File::open(&self.file).map_err(TransportError::io("open archive"))?;
        f.seek(SeekFrom::Start(offset))
            .map_err(TransportError::io("seek archive"))?;
        Ok(BufReader::with_capacity(256 * 1024, f).take(size))
    }

    fn read_member(&self, name: &str) -> Result<Vec<u8>> {
        let mut buf = Vec::new();
        self.open_member(name)?
            .read_to_end(&mut buf)
            .map_err(TransportError::io(format!("read archive member {name}")))?;
        Ok(buf)
    }

    fn has(&self, name: &str) -> bool {
        self.members.contains_key(name)
    }
}

/// An OCI archive: a tar of an OCI layout.
pub struct OciArchiveSource {
    tar: TarIndex,
    top: Descriptor,
}

impl OciArchiveSource {
    /// Every entry of the archive's index, with the image name it carries.
    pub fn entries(path: &Path) -> Result<Vec<(Descriptor, Option<Reference>)>> {
        let tar = TarIndex::open(path)?;
        let index = parse_index(&tar.read_member("index.json")?, &path.display().to_string())?;
        Ok(index
            .manifests
            .into_iter()
            .map(|d| {
                let n = image_name_of(&d);
                (d, n)
            })
            .collect())
    }

    pub fn open_descriptor(path: &Path, top: Descriptor) -> Result<OciArchiveSource> {
        Ok(OciArchiveSource {
            tar: TarIndex::open(path)?,
            top,
        })
    }

    pub fn open(path: &Path, tag: Option<&str>) -> Result<OciArchiveSource> {
        let tar = TarIndex::open(path)?;
        let index = parse_index(&tar.read_member("index.json")?, &path.display().to_string())?;
        let top = select_entry(&index, tag, &format!("OCI archive {}", path.display()))?;
        Ok(OciArchiveSource { tar, top })
    }

    fn read_verified(&self, d: &Digest) -> Result<Vec<u8>> {
        let bytes = self.tar.read_member(&blob_rel_path(d))?;
        verify(d, &bytes)?;
        Ok(bytes)
    }
}

impl ImageSource for OciArchiveSource {
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
        Ok(Box::new(
            self.tar.open_member(&blob_rel_path(&desc.digest))?,
        ))
    }
}

/// One image in a Docker archive's `manifest.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct DockerArchiveEntry {
    pub config: String,
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    pub layers: Vec<String>,
}

/// A Docker archive, as `docker save` writes it (any version).
pub struct DockerArchiveSource {
    tar: TarIndex,
    manifest: RawManifest,
    members: BTreeMap<Digest, String>,
    repo_tags: Vec<String>,
}

impl DockerArchiveSource {
    /// The images the archive holds, with their tags.
    pub fn list(path: &Path) -> Result<Vec<DockerArchiveEntry>> {
        let tar = TarIndex::open(path)?;
        parse_docker_manifest(&tar, path)
    }

    /// Opens one image: by tag (`busybox:latest`, normalized either way), by
    /// `@N` position, or the only one.
    pub fn open(path: &Path, select: Option<&str>) -> Result<DockerArchiveSource> {
        let tar = TarIndex::open(path)?;
        let entries = parse_docker_manifest(&tar, path)?;
        let what = format!("docker archive {}", path.display());
        let entry = match select {
            Some(s) if s.starts_with('@') => s[1..]
                .parse::<usize>()
                .ok()
                .and_then(|i| entries.get(i))
                .ok_or_else(|| TransportError::Invalid(format!("{what} has no image {s}")))?,
            Some(s) => {
                let want = Reference::parse(s).ok();
                entries
                    .iter()
                    .find(|e| {
                        e.repo_tags
                            .iter()
                            .flatten()
                            .any(|t| t == s || (want.is_some() && Reference::parse(t).ok() == want))
                    })
                    .ok_or_else(|| TransportError::Invalid(format!("{what} has no image {s:?}")))?
            }
            None => match entries.as_slice() {
                [one] => one,
                [] => return Err(TransportError::Invalid(format!("{what} holds no image"))),
                _ => {
                    return Err(TransportError::Invalid(format!(
                        "{what} holds {} images; choose one with :NAME or :@N",
                        entries.len()
                    )));
                }
            },
        };
        let mut members = BTreeMap::new();
        let config_bytes = tar.read_member(&clean_member_name(&entry.config))?;
        let config_digest = Digest::sha256_of(&config_bytes);
        members.insert(config_digest.clone(), clean_member_name(&entry.config));
        let mut layers = Vec::new();
        for l in &entry.layers {
            let name = clean_member_name(l);
            let mut r = tar.open_member(&name)?;
            let mut magic = [0u8; 4];
            let n = read_up_to(&mut r, &mut magic)
                .map_err(TransportError::io(format!("read archive member {name}")))?;
            let mut h = Hasher::sha256();
            h.update(&magic[..n]);
            let mut size = n as u64;
            let mut buf = vec![0u8; 256 * 1024];
            loop {
                let k = r
                    .read(&mut buf)
                    .map_err(TransportError::io(format!("read {name}")))?;
                if k == 0 {
                    break;
                }
                h.update(&buf[..k]);
                size += k as u64;
            }
            let digest = h.finish();
            let mt = media::Format::Oci.layer(crate::layer::detect_compression(&magic[..n]));
            members.insert(digest.clone(), name);
            layers.push(Descriptor::new(mt, digest, size));
        }
        let manifest = Manifest::new(
            media::Format::Oci,
            Descriptor::new(media::OCI_CONFIG, config_digest, config_bytes.len() as u64),
            layers,
        );
        let bytes = crate::canonical::to_vec(&manifest).expect("manifest serializes");
        Ok(DockerArchiveSource {
            tar,
            manifest: RawManifest::new(media::OCI_MANIFEST, bytes),
            members,
            repo_tags: entry.repo_tags.clone().unwrap_or_default(),
        })
    }

    pub fn repo_tags(&self) -> &[String] {
        &self.repo_tags
    }
}

fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

fn parse_docker_manifest(tar: &TarIndex, path: &Path) -> Result<Vec<DockerArchiveEntry>> {
    if !tar.has("manifest.json") {
        return Err(TransportError::Invalid(format!(
            "{} is not a docker archive (no manifest.json)",
            path.display()
        )));
    }
    serde_json::from_slice(&tar.read_member("manifest.json")?).map_err(|e| {
        TransportError::Invalid(format!("{}: invalid manifest.json: {e}", path.display()))
    })
}

impl ImageSource for DockerArchiveSource {
    fn top(&self) -> Result<RawManifest> {
        Ok(self.manifest.clone())
    }

    fn manifest(&self, digest: &Digest) -> Result<RawManifest> {
        if *digest == self.manifest.digest {
            return Ok(self.manifest.clone());
        }
        Err(TransportError::Invalid(format!(
            "docker archive has no manifest {digest}"
        )))
    }

    fn blob(&self, desc: &Descriptor) -> Result<Box<dyn Read + Send + '_>> {
        let name = self.members.get(&desc.digest).ok_or_else(|| {
            TransportError::Invalid(format!("docker archive has no blob {}", desc.digest))
        })?;
        Ok(Box::new(self.tar.open_member(name)?))
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn f<T: Send + Sync>() {}
    f::<ArchiveSink>();
    f::<OciArchiveSource>();
    f::<DockerArchiveSource>();
}
