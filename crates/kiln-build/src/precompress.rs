//! Layers compressed ahead of an export, off the critical path.
//!
//! A build writes its layers as plain tars (see `kiln_image::compressed`:
//! the store keeps them so, as docker's and buildah's do). When an output
//! will send the image somewhere (`--push`, `-o type=oci`), its layers
//! must be compressed before it goes; a worker thread does that for each
//! layer as soon as a step makes or finds it, while the next steps run,
//! and the export then finds the compressed blobs ready.
//!
//! A failure here is not an error of the build: the export compresses
//! whatever is missing itself, and reports what fails then.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex, mpsc};

use kiln_image::media::{self, Compression};
use kiln_image::{Descriptor, Digest, Store};

pub(crate) struct Precompress {
    compression: Option<Compression>,
    queue: Mutex<Option<mpsc::Sender<Digest>>>,
    jobs: Mutex<Option<mpsc::Receiver<Digest>>>,
    /// Layers queued and not yet done; `idle` is signalled as it drops.
    pending: Mutex<usize>,
    /// The build failed: what is queued is dropped, not compressed.
    abandoned: AtomicBool,
    idle: Condvar,
}

impl Precompress {
    /// `compression`: what the outputs need; plain means no work.
    pub(crate) fn new(compression: Compression) -> Precompress {
        let (tx, rx) = mpsc::channel();
        Precompress {
            compression: Some(compression).filter(|c| *c != Compression::None),
            queue: Mutex::new(Some(tx)),
            jobs: Mutex::new(Some(rx)),
            pending: Mutex::new(0),
            abandoned: AtomicBool::new(false),
            idle: Condvar::new(),
        }
    }

    /// Queues a layer blob, if it is a plain tar.
    pub(crate) fn layer(&self, blob: &Descriptor) {
        let plain = media::layer_compression(&blob.media_type) == Some(Compression::None);
        if self.compression.is_none() || !plain {
            return;
        }
        let digest = &blob.digest;
        *lock(&self.pending) += 1;
        let sent = lock(&self.queue).as_ref().map(|q| q.send(digest.clone()));
        if !matches!(sent, Some(Ok(()))) {
            self.done_one();
        }
    }

    /// The worker: compresses queued layers until [`Precompress::close`].
    pub(crate) fn work(&self, store: &Store) {
        let Some(jobs) = lock(&self.jobs).take() else {
            return;
        };
        let Some(c) = self.compression else {
            return;
        };
        for digest in jobs {
            if !self.abandoned.load(Ordering::SeqCst) {
                let _ = kiln_image::compressed::compressed_blob(store, &digest, c);
            }
            self.done_one();
        }
    }

    fn done_one(&self) {
        *lock(&self.pending) -= 1;
        self.idle.notify_all();
    }

    /// Whether layers are still being compressed.
    pub(crate) fn busy(&self) -> bool {
        *lock(&self.pending) > 0
    }

    /// Waits until every queued layer is compressed.
    pub(crate) fn wait(&self) {
        let mut pending = lock(&self.pending);
        while *pending > 0 {
            pending = self.idle.wait(pending).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// No more layers: the worker ends when the queue is empty.
    pub(crate) fn close(&self) {
        lock(&self.queue).take();
    }

    /// No export will follow: the worker skips what is still queued.
    pub(crate) fn abandon(&self) {
        self.abandoned.store(true, Ordering::SeqCst);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
