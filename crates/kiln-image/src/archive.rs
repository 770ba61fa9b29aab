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
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::layout::{
    IMAGE_NAME, blob_rel_path, image_name_of, parse_index, select_entry, verified_manifest, verify,
};
use crate::manifest::{Descriptor, Index, Manifest};
use crate::reference::Reference;
use crate::transport::{ImageSink, ImageSource, RawManifest, Result, TransportError};
use crate::{Digest, Hasher, media};

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
    name.trim_start_matches("./")
        .trim_start_matches('/')
        .to_string()
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

/// Which archive a [`ArchiveSink`] writes.
#[derive(Debug, Clone)]
pub enum ArchiveKind {
    /// An OCI layout; the top entry is named with this tag and carries
    /// the full image name.
    Oci {
        tag: Option<String>,
        image_name: Option<String>,
    },
    /// A Docker archive with these `RepoTags` (familiar names).
    Docker { repo_tags: Vec<String> },
}

/// Writes an OCI or Docker archive, to a file (renamed into place when
/// complete) or to a stream such as standard output. Blobs are written as
/// they arrive, so the copy must hand them over one at a time (see
/// [`ImageSink::max_jobs`]).
///
/// One archive can hold several images, as `docker save a b` writes: made
/// with [`ArchiveSink::several`], each copy's `finish` only records its
/// image (named by the last [`ArchiveSink::name_next`]), blobs the images
/// share are written once, and [`ArchiveSink::close`] writes the index.
pub struct ArchiveSink {
    dest: Option<PathBuf>,
    temp: Option<PathBuf>,
    what: String,
    several: bool,
    kind: Mutex<ArchiveKind>,
    state: Mutex<SinkState>,
}

/// Where the tar bytes go.
enum Out {
    File(io::BufWriter<File>),
    Stream(io::BufWriter<Box<dyn Write + Send>>),
}

impl Write for Out {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Out::File(f) => f.write(buf),
            Out::Stream(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Out::File(f) => f.flush(),
            Out::Stream(s) => s.flush(),
        }
    }
}

struct SinkState {
    tar: Option<tar::Builder<Out>>,
    written: std::collections::BTreeSet<Digest>,
    top: Option<RawManifest>,
    /// Images complete so far, with the names each is to carry.
    done: Vec<(RawManifest, ArchiveKind)>,
}

fn header(size: u64, dir: bool) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_size(size);
    h.set_mode(if dir { 0o755 } else { 0o644 });
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(0);
    h.set_entry_type(if dir {
        tar::EntryType::Directory
    } else {
        tar::EntryType::Regular
    });
    h
}

impl ArchiveSink {
    /// An archive of one image at `dest`, which appears only once complete.
    pub fn create(dest: &Path, kind: ArchiveKind) -> Result<ArchiveSink> {
        let temp = dest.with_file_name(format!(
            ".{}.tmp-{}",
            dest.file_name()
                .map(|n| n.to_string_lossy())
                .unwrap_or_default(),
            std::process::id()
        ));
        let f = File::create(&temp)
            .map_err(TransportError::io(format!("create {}", temp.display())))?;
        let out = Out::File(io::BufWriter::with_capacity(1 << 20, f));
        let mut sink = ArchiveSink::start(out, kind, dest.display().to_string())?;
        sink.dest = Some(dest.to_path_buf());
        sink.temp = Some(temp);
        Ok(sink)
    }

    /// An archive of one image written to `w` (standard output, say); a
    /// failed copy leaves a truncated tar there, as any stream writer does.
    pub fn to_writer(w: Box<dyn Write + Send>, kind: ArchiveKind) -> Result<ArchiveSink> {
        let out = Out::Stream(io::BufWriter::with_capacity(1 << 20, w));
        ArchiveSink::start(out, kind, "the output stream".into())
    }

    fn start(out: Out, kind: ArchiveKind, what: String) -> Result<ArchiveSink> {
        let mut tar = tar::Builder::new(out);
        for d in ["blobs/", "blobs/sha256/"] {
            tar.append_data(&mut header(0, true), d, io::empty())
                .map_err(TransportError::io(format!("write {what}")))?;
        }
        Ok(ArchiveSink {
            dest: None,
            temp: None,
            what,
            several: false,
            kind: Mutex::new(kind),
            state: Mutex::new(SinkState {
                tar: Some(tar),
                written: Default::default(),
                top: None,
                done: Vec::new(),
            }),
        })
    }

    /// Makes the archive hold several images: each copy into it adds one,
    /// and [`ArchiveSink::close`] completes it.
    pub fn several(mut self) -> ArchiveSink {
        self.several = true;
        self
    }

    /// The names the image copied next is to carry (same kind of archive).
    pub fn name_next(&self, kind: ArchiveKind) {
        *self.kind.lock().expect("lock") = kind;
    }

    fn append(&self, st: &mut SinkState, name: &str, size: u64, data: &mut dyn Read) -> Result<()> {
        let tar = st
            .tar
            .as_mut()
            .ok_or_else(|| TransportError::Invalid("archive already finished".into()))?;
        tar.append_data(&mut header(size, false), name, data)
            .map_err(TransportError::io(format!("write {name} to {}", self.what)))
    }

    /// Writes the index (and `manifest.json`) of every image copied in and
    /// completes the archive.
    pub fn close(&self) -> Result<()> {
        let mut st = self.state.lock().expect("lock");
        let done = std::mem::take(&mut st.done);
        if done.is_empty() {
            return Err(TransportError::Invalid("no image was written".into()));
        }
        let docker = matches!(done[0].1, ArchiveKind::Docker { .. });
        let mut entries: Vec<Descriptor> = Vec::new();
        let mut docker_entries: Vec<(Digest, DockerArchiveEntry)> = Vec::new();
        for (top, kind) in &done {
            match kind {
                ArchiveKind::Docker { repo_tags } => {
                    let crate::AnyManifest::Manifest(m) = top.parse()? else {
                        return Err(TransportError::Invalid(
                            "a docker archive holds one platform's image; choose one with --platform"
                                .into(),
                        ));
                    };
                    // The same image saved under two names is one entry
                    // with both tags, as docker writes it.
                    if let Some((_, e)) = docker_entries.iter_mut().find(|(d, _)| *d == top.digest)
                    {
                        let tags = e.repo_tags.get_or_insert_with(Vec::new);
                        for t in repo_tags {
                            if !tags.contains(t) {
                                tags.push(t.clone());
                            }
                        }
                        continue;
                    }
                    docker_entries.push((
                        top.digest.clone(),
                        DockerArchiveEntry {
                            config: blob_rel_path(&m.config.digest),
                            repo_tags: Some(repo_tags.clone()),
                            layers: m.layers.iter().map(|l| blob_rel_path(&l.digest)).collect(),
                        },
                    ));
                    let mut entry = top.descriptor();
                    if let Some(first) = repo_tags.first().and_then(|t| Reference::parse(t).ok()) {
                        entry
                            .annotations
                            .insert(IMAGE_NAME.into(), first.to_string());
                        if let Some(t) = first.tag() {
                            entry
                                .annotations
                                .insert(crate::store::REF_NAME.into(), t.to_string());
                        }
                    }
                    entries.push(entry);
                }
                ArchiveKind::Oci { tag, image_name } => {
                    if docker {
                        return Err(TransportError::Invalid(
                            "an archive is either a docker archive or an OCI archive".into(),
                        ));
                    }
                    let mut entry = top.descriptor();
                    if let Some(t) = tag {
                        entry
                            .annotations
                            .insert(crate::store::REF_NAME.into(), t.clone());
                    }
                    if let Some(n) = image_name {
                        entry.annotations.insert(IMAGE_NAME.into(), n.clone());
                    }
                    entries.push(entry);
                }
            }
        }
        if docker {
            let manifest_json: Vec<DockerArchiveEntry> =
                docker_entries.into_iter().map(|(_, e)| e).collect();
            let bytes = serde_json::to_vec(&manifest_json).expect("serializes");
            self.append(
                &mut st,
                "manifest.json",
                bytes.len() as u64,
                &mut bytes.as_slice(),
            )?;
        }
        let index = Index::new(media::Format::Oci, entries);
        let index_bytes = crate::canonical::to_vec(&index).expect("serializes");
        self.append(
            &mut st,
            "index.json",
            index_bytes.len() as u64,
            &mut index_bytes.as_slice(),
        )?;
        let layout = br#"{"imageLayoutVersion":"1.0.0"}"#;
        self.append(&mut st, "oci-layout", layout.len() as u64, &mut &layout[..])?;
        let tar = st.tar.take().expect("open until finish");
        let out = tar
            .into_inner()
            .map_err(TransportError::io(format!("finish {}", self.what)))?;
        match out {
            Out::File(w) => {
                let f = w.into_inner().map_err(|e| {
                    TransportError::io(format!("finish {}", self.what))(e.into_error())
                })?;
                f.sync_all()
                    .map_err(TransportError::io(format!("fsync {}", self.what)))?;
                if let (Some(temp), Some(dest)) = (&self.temp, &self.dest) {
                    fs::rename(temp, dest)
                        .map_err(TransportError::io(format!("rename to {}", dest.display())))?;
                }
                Ok(())
            }
            Out::Stream(mut w) => w
                .flush()
                .map_err(TransportError::io(format!("finish {}", self.what))),
        }
    }
}

/// Reads through `inner`, hashing, and fails at the end on a size or digest
/// mismatch so a bad blob aborts the archive.
struct VerifyingReader<'a> {
    inner: &'a mut dyn Read,
    hasher: Option<Hasher>,
    want: &'a Descriptor,
    seen: u64,
}

impl Read for VerifyingReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = self.hasher.as_mut() {
            h.update(&buf[..n]);
        }
        self.seen += n as u64;
        if (n == 0 || self.seen == self.want.size)
            && let Some(h) = self.hasher.take()
        {
            let got = h.finish();
            if got != self.want.digest || self.seen != self.want.size {
                return Err(io::Error::other(format!(
                    "blob {} arrived as {got} ({} bytes)",
                    self.want.digest, self.seen
                )));
            }
        }
        Ok(n)
    }
}

impl ImageSink for ArchiveSink {
    fn has_blob(&self, desc: &Descriptor) -> Result<bool> {
        Ok(self
            .state
            .lock()
            .expect("lock")
            .written
            .contains(&desc.digest))
    }

    fn put_blob(&self, desc: &Descriptor, data: &mut dyn Read) -> Result<()> {
        let mut st = self.state.lock().expect("lock");
        if st.written.contains(&desc.digest) {
            return Ok(());
        }
        let mut r = VerifyingReader {
            inner: data,
            hasher: Some(Hasher::new(desc.digest.algorithm())),
            want: desc,
            seen: 0,
        };
        self.append(&mut st, &blob_rel_path(&desc.digest), desc.size, &mut r)?;
        st.written.insert(desc.digest.clone());
        Ok(())
    }

    fn put_manifest(&self, raw: &RawManifest, top: bool) -> Result<()> {
        let mut st = self.state.lock().expect("lock");
        if !st.written.contains(&raw.digest) {
            self.append(
                &mut st,
                &blob_rel_path(&raw.digest),
                raw.bytes.len() as u64,
                &mut raw.bytes.as_slice(),
            )?;
            st.written.insert(raw.digest.clone());
        }
        if top {
            st.top = Some(raw.clone());
        }
        Ok(())
    }

    fn max_jobs(&self) -> usize {
        1
    }

    fn finish(&self) -> Result<()> {
        {
            let mut st = self.state.lock().expect("lock");
            let top = st
                .top
                .take()
                .ok_or_else(|| TransportError::Invalid("no image was written".into()))?;
            let kind = self.kind.lock().expect("lock").clone();
            st.done.push((top, kind));
        }
        if self.several {
            return Ok(());
        }
        self.close()
    }
}

impl Drop for ArchiveSink {
    fn drop(&mut self) {
        let unfinished = self
            .state
            .get_mut()
            .map(|s| s.tar.is_some())
            .unwrap_or(true);
        if unfinished && let Some(temp) = &self.temp {
            let _ = fs::remove_file(temp);
        }
    }
}

#[allow(dead_code)]
fn _assert_send_sync() {
    fn f<T: Send + Sync>() {}
    f::<ArchiveSink>();
    f::<OciArchiveSource>();
    f::<DockerArchiveSource>();
}
