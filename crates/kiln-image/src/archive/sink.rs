//! Writing archives: [`ArchiveSink`], one image or several, to a file or
//! a stream.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::DockerArchiveEntry;
use crate::layout::{IMAGE_NAME, blob_rel_path};
use crate::manifest::{Descriptor, Index};
use crate::reference::Reference;
use crate::transport::{ImageSink, RawManifest, Result, TransportError};
use crate::{Digest, Hasher, media};

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
