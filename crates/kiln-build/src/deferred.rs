//! Layer blobs compressed off the critical path.
//!
//! A step writes its layer as a plain tar, which is cheap and gives the
//! diff ID: all that the steps after it need (their keys, and the layer
//! directory they run on, unpacked from that tar). A worker thread then
//! compresses the tar into a store blob while the next steps run, and only
//! then records the step's cache entry, so the cache never points at a blob
//! that is not there. When the build ends, the image's layers are swapped
//! for the compressed blobs.
//!
//! Why: gzip costs about ten times what tar and sha256 do, and on the
//! critical path it was most of what kiln added to a RUN; buildah and
//! BuildKit do not compress while building at all (they do when pushing).
//! kiln still stores images compressed, so a push or export stays a copy.
//!
//! It does not decide what goes into a layer or when one is made: see
//! [`crate::step_layer`].

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, mpsc};

use kiln_image::layer::{Entry, LayerOptions, LayerWriter, write_entries_layer};
use kiln_image::media::{Compression, Format};
use kiln_image::{Descriptor, Digest, Image};

use crate::BuildError;
use crate::cache::CachedLayer;
use crate::solver::Shared;

/// One layer waiting for its blob.
struct Job {
    tar: PathBuf,
    diff_id: Digest,
    /// The step's layer key: its cache entry is written with the blob.
    key: Digest,
    made_at: i64,
}

pub(crate) struct Deferred {
    /// The plain tars; removed with the build.
    dir: tempfile::TempDir,
    queue: Mutex<Option<mpsc::Sender<Job>>>,
    jobs: Mutex<Option<mpsc::Receiver<Job>>>,
    /// Layers made in this build by layer key, for an identical later step
    /// whose cache entry is not written yet.
    made: Mutex<HashMap<Digest, (Descriptor, Digest, i64)>>,
    /// diff ID → compressed blob, as the worker writes them.
    blobs: Mutex<HashMap<Digest, Descriptor>>,
    errors: Mutex<Vec<BuildError>>,
    pending: AtomicUsize,
    idle: Condvar,
    idle_lock: Mutex<()>,
}

impl Deferred {
    pub(crate) fn new(scratch: &std::path::Path) -> Result<Deferred, BuildError> {
        let dir = tempfile::Builder::new()
            .prefix("layers-")
            .tempdir_in(scratch)
            .map_err(|e| BuildError::Io(format!("scratch dir in {}: {e}", scratch.display())))?;
        let (tx, rx) = mpsc::channel();
        Ok(Deferred {
            dir,
            queue: Mutex::new(Some(tx)),
            jobs: Mutex::new(Some(rx)),
            made: Mutex::new(HashMap::new()),
            blobs: Mutex::new(HashMap::new()),
            errors: Mutex::new(Vec::new()),
            pending: AtomicUsize::new(0),
            idle: Condvar::new(),
            idle_lock: Mutex::new(()),
        })
    }

    /// A layer this build made under `key` and has not recorded yet.
    pub(crate) fn made(&self, key: &Digest) -> Option<(Descriptor, Digest, i64)> {
        lock(&self.made).get(key).cloned()
    }

    /// Writes `entries` as a plain tar, hands it to the snapshots as the
    /// layer's source and queues its compression. Returns the provisional
    /// descriptor (the plain tar's) and the diff ID.
    pub(crate) fn write(
        &self,
        shared: &Shared<'_>,
        key: &Digest,
        entries: Vec<Entry>,
        opts: &LayerOptions,
        made_at: i64,
    ) -> Result<(Descriptor, Digest), BuildError> {
        let file = tempfile::Builder::new()
            .prefix("layer-")
            .suffix(".tar")
            .tempfile_in(self.dir.path())
            .map_err(|e| {
                BuildError::Io(format!("layer tar in {}: {e}", self.dir.path().display()))
            })?;
        let (file, path) = file
            .keep()
            .map_err(|e| BuildError::Io(format!("layer tar: {e}")))?;
        let plain = LayerOptions {
            compression: Compression::None,
            ..opts.clone()
        };
        let sink = BufWriter::with_capacity(256 * 1024, file);
        let (mut sink, info) = write_entries_layer(entries, &plain, sink)?;
        sink.flush()
            .map_err(|e| BuildError::Io(format!("writing {}: {e}", path.display())))?;
        shared.snaps.provide_tar(&info.diff_id, path.clone());
        let desc = Descriptor::new(
            Format::Oci.layer(Compression::None),
            info.diff_id.clone(),
            info.size,
        );
        lock(&self.made).insert(key.clone(), (desc.clone(), info.diff_id.clone(), made_at));
        let job = Job {
            tar: path,
            diff_id: info.diff_id.clone(),
            key: key.clone(),
            made_at,
        };
        self.pending.fetch_add(1, Ordering::SeqCst);
        let sent = lock(&self.queue).as_ref().map(|q| q.send(job));
        if !matches!(sent, Some(Ok(()))) {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            return Err(BuildError::Io("the layer compressor has stopped".into()));
        }
        Ok((desc, info.diff_id))
    }

    /// The worker: compresses queued tars until [`Deferred::close`].
    pub(crate) fn work(&self, shared: &Shared<'_>) {
        let Some(jobs) = lock(&self.jobs).take() else {
            return;
        };
        for job in jobs {
            let r = self.compress(shared, &job);
            match r {
                Ok(desc) => {
                    lock(&self.blobs).insert(job.diff_id.clone(), desc);
                }
                Err(e) => lock(&self.errors).push(e),
            }
            self.pending.fetch_sub(1, Ordering::SeqCst);
            let _g = lock(&self.idle_lock);
            self.idle.notify_all();
        }
    }

    fn compress(&self, shared: &Shared<'_>, job: &Job) -> Result<Descriptor, BuildError> {
        let opts = crate::step_layer::layer_options(shared);
        let tar = File::open(&job.tar)
            .map_err(|e| BuildError::Io(format!("reading {}: {e}", job.tar.display())))?;
        let mut lw = LayerWriter::new(
            shared.store.blob_writer()?,
            opts.compression,
            opts.level,
            opts.threads,
        );
        std::io::copy(&mut BufReader::with_capacity(256 * 1024, tar), &mut lw)
            .map_err(|e| BuildError::Io(format!("compressing {}: {e}", job.tar.display())))?;
        let (blob, info) = lw
            .finish()
            .map_err(|e| BuildError::Io(format!("compressing {}: {e}", job.tar.display())))?;
        if info.diff_id != job.diff_id {
            return Err(BuildError::Io(format!(
                "layer {} changed while it was compressed",
                job.diff_id
            )));
        }
        blob.commit(Some(&info.digest))?;
        let desc = Descriptor::new(Format::Oci.layer(info.compression), info.digest, info.size);
        shared.cache.put(
            &job.key,
            &CachedLayer {
                layer: Some((desc.clone(), job.diff_id.clone())),
                created: job.made_at,
            },
        )?;
        Ok(desc)
    }

    /// Whether layers are still being compressed.
    pub(crate) fn busy(&self) -> bool {
        self.pending.load(Ordering::SeqCst) > 0
    }

    /// Waits until every queued layer is compressed.
    pub(crate) fn wait(&self) {
        let mut g = lock(&self.idle_lock);
        while self.busy() {
            g = self.idle.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// No more layers: the worker ends when the queue is empty.
    pub(crate) fn close(&self) {
        lock(&self.queue).take();
    }

    /// The first compression error, if any.
    pub(crate) fn take_error(&self) -> Option<BuildError> {
        lock(&self.errors).drain(..).next()
    }

    /// `image` with this build's plain-tar layers swapped for their
    /// compressed blobs. Call after [`Deferred::wait`].
    pub(crate) fn compressed(&self, mut image: Image) -> Image {
        let blobs = lock(&self.blobs);
        for (layer, diff_id) in image
            .layers
            .iter_mut()
            .zip(image.config.rootfs.diff_ids.iter())
        {
            if layer.digest == *diff_id
                && let Some(blob) = blobs.get(diff_id)
            {
                *layer = blob.clone();
            }
        }
        image
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
