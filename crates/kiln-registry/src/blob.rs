//! Blob transfers. Downloads stream into a channel that a blocking reader
//! drains, hashing as they go, resuming with `Range` after a dropped
//! connection or a short body, and following redirects (to object storage)
//! by hand without the registry's credentials. Uploads read the source in
//! chunks: one PUT for a small blob, PATCH chunks for a large one, each
//! chunk resent from the registry's own offset after a failure.
//!
//! Content whose digest or size does not match its descriptor is never
//! handed on as complete: the reader fails, and an upload is cancelled
//! before its final PUT. Memory is bounded by the channel (downloads) and
//! one chunk per upload; no blob is ever held whole.

use std::io::Read;
use std::sync::atomic::Ordering;

use bytes::{Bytes, BytesMut};
use kiln_image::{Descriptor, Digest, Hasher, Reference};
use reqwest::{Method, StatusCode, Url};
use tokio::sync::mpsc;

use crate::client::{Client, Req, expect, location, pull_scope, push_scope, status_error};
use crate::error::{RegistryError, Result};

/// Chunks buffered between the network and a slow consumer. hyper hands
/// out chunks of up to a few hundred KiB, so this bounds a download's memory
/// at a few MiB.
const CHANNEL_DEPTH: usize = 16;
/// Redirect hops followed for one blob GET.
const MAX_REDIRECTS: usize = 5;
/// Blobs up to this size are uploaded in one PUT.
const MONOLITHIC_MAX: usize = 4 << 20;
/// The unit a streamed upload reads and sends.
const PIECE: usize = 256 << 10;
/// How much of a streamed upload is kept to resend after a failure: more
/// than the bytes in flight in socket buffers on both sides.
const REPLAY_WINDOW: usize = 16 << 20;

/// The last bytes sent in a streamed upload, by offset.
struct Window {
    pieces: std::collections::VecDeque<(u64, Bytes)>,
    bytes: usize,
    cap: usize,
}

impl Window {
    fn new(cap: usize) -> Window {
        Window {
            pieces: Default::default(),
            bytes: 0,
            cap,
        }
    }

    fn push(&mut self, start: u64, b: Bytes) {
        self.bytes += b.len();
        self.pieces.push_back((start, b));
        while self.pieces.len() > 1 && self.bytes - self.pieces[0].1.len() >= self.cap {
            if let Some((_, old)) = self.pieces.pop_front() {
                self.bytes -= old.len();
            }
        }
    }

    fn start(&self) -> u64 {
        self.pieces.front().map_or(0, |(s, _)| *s)
    }

    /// The bytes from `offset` to the end of the piece holding it.
    fn from(&self, offset: u64) -> Option<Bytes> {
        self.pieces.iter().find_map(|(s, b)| {
            (offset >= *s && offset < s + b.len() as u64).then(|| b.slice((offset - s) as usize..))
        })
    }
}

fn blob_path(r: &Reference, digest: &Digest) -> String {
    format!("/v2/{}/blobs/{digest}", r.repository())
}

/// A blob being downloaded, as a blocking reader. Read errors carry the
/// [`RegistryError`] (digest mismatch, retries exhausted) as their source.
pub struct BlobReader {
    rx: mpsc::Receiver<Result<Bytes>>,
    cur: Bytes,
    // Dropping the reader drops the receiver, which stops the download.
    _task: tokio::task::JoinHandle<()>,
}

impl Read for BlobReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(Ok(b)) => self.cur = b,
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

impl Client {
    /// Whether the repository of `r` has the blob (HEAD).
    pub fn blob_exists(&self, r: &Reference, digest: &Digest) -> Result<bool> {
        self.block_on(self.blob_exists_async(r, digest, false))
    }

    pub(crate) async fn blob_exists_async(
        &self,
        r: &Reference,
        digest: &Digest,
        push: bool,
    ) -> Result<bool> {
        let op = format!("HEAD blob {digest}");
        let scope = if push {
            push_scope(r.repository())
        } else {
            pull_scope(r.repository())
        };
        let req = Req::new(Method::HEAD, blob_path(r, digest), &op).scope(scope);
        let resp = self.send(r.registry(), &req).await?;
        match resp.status() {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            _ => Err(status_error(resp, &op).await),
        }
    }

    /// Starts downloading a blob; the reader yields its verified bytes.
    pub fn open_blob(&self, r: &Reference, desc: &Descriptor) -> BlobReader {
        self.open_blob_with(r, desc, true)
    }

    /// [`Client::open_blob`], optionally without hashing: for a consumer
    /// that verifies the digest itself (every `ImageSink` does), a second
    /// hash of every byte only costs CPU. Sizes are checked either way.
    pub fn open_blob_with(&self, r: &Reference, desc: &Descriptor, verify: bool) -> BlobReader {
        let (tx, rx) = mpsc::channel(CHANNEL_DEPTH);
        let client = self.clone();
        let r = r.clone();
        let desc = desc.clone();
        let task = self.inner.rt.spawn(async move {
            if let Err(e) = client.download(&r, &desc, verify, &tx).await {
                let _ = tx.send(Err(e)).await;
            }
        });
        BlobReader {
            rx,
            cur: Bytes::new(),
            _task: task,
        }
    }

    /// Reads a small blob (a config) whole, verified.
    pub fn read_blob(&self, r: &Reference, desc: &Descriptor, limit: u64) -> Result<Vec<u8>> {
        if desc.size > limit {
            return Err(RegistryError::Protocol(format!(
                "blob {} is {} bytes, more than the {limit} allowed here",
                desc.digest, desc.size
            )));
        }
        let mut out = Vec::new();
        self.open_blob(r, desc)
            .read_to_end(&mut out)
            .map_err(|e| unwrap_io(e, format!("GET blob {}", desc.digest)))?;
        Ok(out)
    }

    async fn download(
        &self,
        r: &Reference,
        desc: &Descriptor,
        verify: bool,
        tx: &mpsc::Sender<Result<Bytes>>,
    ) -> Result<()> {
        let op = format!("GET blob {}", desc.digest);
        let policy = self.inner.config.retry.clone();
        let mut hasher: Hasher = desc.digest.hasher();
        let mut offset: u64 = 0;
        let mut failures = 0;
        loop {
            let resp = self.get_following_redirects(r, desc, offset, &op).await?;
            // 206 continues where we were; a 200 to a Range request (a
            // server or cache that ignores ranges) starts over, and we skip
            // the part we have.
            let mut skip = 0u64;
            match resp.status() {
                StatusCode::PARTIAL_CONTENT => {
                    let start = content_range_start(&resp);
                    if start != Some(offset) {
                        return Err(RegistryError::Protocol(format!(
                            "{op}: asked for bytes from {offset}, got a range starting at {start:?}"
                        )));
                    }
                }
                StatusCode::OK => skip = offset,
                _ => return Err(status_error(resp, &op).await),
            }
            let mut resp = resp;
            let err = loop {
                match resp.chunk().await {
                    Ok(Some(mut c)) => {
                        if skip > 0 {
                            let n = (skip as usize).min(c.len());
                            let _ = c.split_to(n);
                            skip -= n as u64;
                            if c.is_empty() {
                                continue;
                            }
                        }
                        if offset + c.len() as u64 > desc.size {
                            return Err(RegistryError::SizeMismatch {
                                what: op,
                                expected: desc.size,
                                actual: offset + c.len() as u64,
                            });
                        }
                        if verify {
                            hasher.update(&c);
                        }
                        offset += c.len() as u64;
                        self.inner
                            .stats
                            .bytes_downloaded
                            .fetch_add(c.len() as u64, Ordering::Relaxed);
                        if tx.send(Ok(c)).await.is_err() {
                            return Ok(()); // the reader is gone: nobody wants the rest
                        }
                    }
                    Ok(None) if offset == desc.size => {
                        let actual = hasher.finish();
                        if verify && actual != desc.digest {
                            return Err(RegistryError::DigestMismatch {
                                what: op,
                                expected: desc.digest.clone(),
                                actual,
                            });
                        }
                        return Ok(());
                    }
                    Ok(None) => {
                        break format!("the body ended after {offset} of {} bytes", desc.size);
                    }
                    Err(e) => break e.to_string(),
                }
            };
            failures += 1;
            if failures >= policy.attempts {
                return Err(RegistryError::Protocol(format!(
                    "{op}: {err}; gave up after {failures} tries"
                )));
            }
            tracing::debug!("{op}: {err}; resuming at byte {offset}");
            self.inner.stats.resumes.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(policy.delay(failures, None)).await;
        }
    }

    /// GET of a blob (from `offset`), following redirects by hand: the
    /// Authorization header goes only to the registry (`send` checks the
    /// host of each hop).
    async fn get_following_redirects(
        &self,
        r: &Reference,
        desc: &Descriptor,
        offset: u64,
        op: &str,
    ) -> Result<reqwest::Response> {
        let mut req =
            Req::new(Method::GET, blob_path(r, &desc.digest), op).scope(pull_scope(r.repository()));
        for _ in 0..=MAX_REDIRECTS {
            if offset > 0 {
                req = req.header("range", &format!("bytes={offset}-"));
            }
            let resp = self.send(r.registry(), &req).await?;
            if !resp.status().is_redirection() {
                return Ok(resp);
            }
            let next = location(&resp, op)?;
            req = Req::url(Method::GET, next, op).scope(pull_scope(r.repository()));
        }
        Err(RegistryError::Protocol(format!(
            "{op}: more than {MAX_REDIRECTS} redirects"
        )))
    }

    /// Uploads a blob from `data`, verifying as it reads. `session` is an
    /// upload already started (a cross-repo mount that the registry turned
    /// into an upload).
    pub fn upload_blob(
        &self,
        r: &Reference,
        desc: &Descriptor,
        data: &mut dyn Read,
        session: Option<Url>,
    ) -> Result<()> {
        let op = format!("upload blob {}", desc.digest);
        let mut url = match session {
            Some(u) => u,
            None => self.block_on(self.start_upload(r, &op))?,
        };
        let result = match self.inner.config.chunk_size {
            Some(n) => self.upload_chunked(r, desc, data, &mut url, n.max(64 << 10), &op),
            None => self.upload_streamed(r, desc, data, &mut url, &op),
        };
        if result.is_err() {
            // Tell the registry to drop what it has; best effort.
            let cancel = Req::url(Method::DELETE, url, &op).scope(push_scope(r.repository()));
            let _ = self.block_on(self.send(r.registry(), &cancel));
        }
        result
    }

    /// One PUT for a small blob; else one streaming PATCH, and after a
    /// failure another from the registry's offset, replaying the bytes it
    /// lacks from a window of what was sent last. Nothing is buffered but
    /// that window, and no request waits for a chunk to be acknowledged.
    fn upload_streamed(
        &self,
        r: &Reference,
        desc: &Descriptor,
        data: &mut dyn Read,
        url: &mut Url,
        op: &str,
    ) -> Result<()> {
        let policy = self.inner.config.retry.clone();
        let read_err = || RegistryError::io(format!("{op}: read source"));
        let mut hasher = desc.digest.hasher();
        let first = read_chunk(data, MONOLITHIC_MAX).map_err(read_err())?;
        hasher.update(&first);
        if first.len() < MONOLITHIC_MAX {
            verify(op, desc, &hasher.finish(), first.len() as u64)?;
            return self.block_on(self.finish_upload(r, url.clone(), desc, first, op));
        }
        let mut window = Window::new(REPLAY_WINDOW);
        let mut read_total = first.len() as u64;
        window.push(0, first);
        let mut eof = false;
        let mut have: u64 = 0;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (tx, rx) = mpsc::channel::<std::io::Result<Bytes>>(8);
            let task = self.inner.rt.spawn(self.clone().patch_stream(
                r.clone(),
                url.clone(),
                rx,
                op.to_string(),
            ));
            let mut cursor = have;
            let mut cut_short = false;
            'feed: loop {
                while let Some(piece) = window.from(cursor) {
                    let n = piece.len() as u64;
                    if tx.blocking_send(Ok(piece)).is_err() {
                        cut_short = true; // the request ended: see why below
                        break 'feed;
                    }
                    cursor += n;
                    self.inner
                        .stats
                        .bytes_uploaded
                        .fetch_add(n, Ordering::Relaxed);
                }
                if eof {
                    break;
                }
                let piece = read_chunk(data, PIECE).map_err(read_err())?;
                eof = piece.len() < PIECE;
                if read_total + piece.len() as u64 > desc.size {
                    return Err(RegistryError::SizeMismatch {
                        what: op.to_string(),
                        expected: desc.size,
                        actual: read_total + piece.len() as u64,
                    });
                }
                hasher.update(&piece);
                if !piece.is_empty() {
                    window.push(read_total, piece.clone());
                    read_total += piece.len() as u64;
                }
            }
            drop(tx);
            let outcome = self
                .block_on(task)
                .map_err(|e| RegistryError::Protocol(format!("{op}: upload task: {e}")))?;
            let failure = match outcome {
                Ok(next) if !cut_short && eof => {
                    *url = next;
                    break;
                }
                Ok(next) => {
                    *url = next;
                    RegistryError::Protocol(format!("{op}: the registry ended the PATCH early"))
                }
                Err(e) => e,
            };
            if attempt >= policy.attempts {
                return Err(failure);
            }
            tracing::debug!("{op}: {failure}; resuming");
            self.inner.stats.retries.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(policy.delay(attempt, None));
            let (h, next) = self.block_on(self.upload_status(r, url, op)).map_err(|e| {
                RegistryError::UploadLost {
                    op: op.to_string(),
                    detail: format!("{failure}; then {e}"),
                }
            })?;
            if h < window.start() || h > read_total {
                return Err(RegistryError::UploadLost {
                    op: op.to_string(),
                    detail: format!(
                        "the registry has {h} bytes, we can resend from {} to {read_total}",
                        window.start()
                    ),
                });
            }
            have = h;
            *url = next;
        }
        verify(op, desc, &hasher.finish(), read_total)?;
        self.block_on(self.finish_upload(r, url.clone(), desc, Bytes::new(), op))
    }

    /// One PATCH whose body is what arrives on `rx`.
    async fn patch_stream(
        self,
        r: Reference,
        url: Url,
        rx: mpsc::Receiver<std::io::Result<Bytes>>,
        op: String,
    ) -> Result<Url> {
        let stream = futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        });
        let body = reqwest::Body::wrap_stream(stream);
        let op = format!("{op}: PATCH");
        let scopes = [push_scope(r.repository())];
        let resp = self
            .send_once(r.registry(), Method::PATCH, url, body, &scopes, &op)
            .await?;
        if resp.status() != StatusCode::ACCEPTED {
            return Err(status_error(resp, &op).await);
        }
        location(&resp, &op)
    }

    /// Fixed-size PATCH chunks, each kept until the registry acknowledged
    /// it (`--chunk-size`; for registries that limit request sizes).
    fn upload_chunked(
        &self,
        r: &Reference,
        desc: &Descriptor,
        data: &mut dyn Read,
        url: &mut Url,
        chunk_size: usize,
        op: &str,
    ) -> Result<()> {
        let mut hasher = desc.digest.hasher();
        let mut offset: u64 = 0;
        loop {
            let chunk = read_chunk(data, chunk_size)
                .map_err(RegistryError::io(format!("{op}: read source")))?;
            hasher.update(&chunk);
            let last = chunk.len() < chunk_size;
            if offset + chunk.len() as u64 > desc.size {
                return Err(RegistryError::SizeMismatch {
                    what: op.to_string(),
                    expected: desc.size,
                    actual: offset + chunk.len() as u64,
                });
            }
            if last && offset == 0 {
                // Small blob: the whole thing in the closing PUT.
                let actual = std::mem::replace(&mut hasher, desc.digest.hasher()).finish();
                verify(op, desc, &actual, chunk.len() as u64)?;
                return self.block_on(self.finish_upload(r, url.clone(), desc, chunk, op));
            }
            if !chunk.is_empty() {
                *url =
                    self.block_on(self.patch_chunk(r, url.clone(), chunk.clone(), offset, op))?;
                offset += chunk.len() as u64;
            }
            if last {
                let actual = std::mem::replace(&mut hasher, desc.digest.hasher()).finish();
                verify(op, desc, &actual, offset)?;
                return self.block_on(self.finish_upload(r, url.clone(), desc, Bytes::new(), op));
            }
        }
    }

    pub(crate) async fn start_upload(&self, r: &Reference, op: &str) -> Result<Url> {
        let req = Req::new(
            Method::POST,
            format!("/v2/{}/blobs/uploads/", r.repository()),
            op,
        )
        .scope(push_scope(r.repository()));
        let resp = self.send(r.registry(), &req).await?;
        let resp = expect(resp, &[StatusCode::ACCEPTED], &format!("{op}: POST")).await?;
        location(&resp, op)
    }

    /// Sends bytes `offset..` of the blob. On a failure (connection, 5xx,
    /// 416) it asks the registry how much it has and resends the rest.
    async fn patch_chunk(
        &self,
        r: &Reference,
        url: Url,
        chunk: Bytes,
        offset: u64,
        op: &str,
    ) -> Result<Url> {
        let policy = &self.inner.config.retry;
        let mut url = url;
        let mut sent_from = offset;
        let end = offset + chunk.len() as u64;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let part = chunk.slice((sent_from - offset) as usize..);
            let mut req = Req::url(Method::PATCH, url.clone(), format!("{op}: PATCH"))
                .scope(push_scope(r.repository()))
                .header("content-type", "application/octet-stream")
                .header("content-range", &format!("{sent_from}-{}", end - 1))
                .body(part);
            req.retry = false;
            let failure = match self.send(r.registry(), &req).await {
                Ok(resp) if resp.status() == StatusCode::ACCEPTED => {
                    self.inner
                        .stats
                        .bytes_uploaded
                        .fetch_add(end - sent_from, Ordering::Relaxed);
                    return location(&resp, op);
                }
                Ok(resp)
                    if crate::retry::retryable_status(resp.status())
                        || resp.status() == StatusCode::RANGE_NOT_SATISFIABLE =>
                {
                    status_error(resp, &format!("{op}: PATCH")).await
                }
                Ok(resp) => return Err(status_error(resp, &format!("{op}: PATCH")).await),
                Err(e) => e,
            };
            if attempt >= policy.attempts {
                return Err(failure);
            }
            self.inner.stats.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(policy.delay(attempt, None)).await;
            // Where is the registry now? `Range: 0-N` means it has N+1 bytes.
            let (have, new_url) = self.upload_status(r, &url, op).await?;
            url = new_url;
            if have >= end {
                return Ok(url);
            }
            if have < offset {
                return Err(RegistryError::Protocol(format!(
                    "{op}: the registry lost data it had acknowledged (has {have} bytes, we sent {offset})"
                )));
            }
            sent_from = have;
        }
    }

    async fn upload_status(&self, r: &Reference, url: &Url, op: &str) -> Result<(u64, Url)> {
        let req = Req::url(Method::GET, url.clone(), format!("{op}: upload status"))
            .scope(push_scope(r.repository()));
        let resp = self.send(r.registry(), &req).await?;
        let resp = expect(
            resp,
            &[StatusCode::NO_CONTENT, StatusCode::OK],
            &format!("{op}: upload status"),
        )
        .await?;
        let have = resp
            .headers()
            .get("range")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split_once('-'))
            .and_then(|(_, end)| end.trim().parse::<i64>().ok())
            // distribution 2.x says `0-0` for an empty upload (so a 1-byte
            // upload looks empty: its resend then fails with 416), others
            // `0--1`.
            .map_or(0, |e| if e <= 0 { 0 } else { e as u64 + 1 });
        let next = location(&resp, op).unwrap_or_else(|_| url.clone());
        Ok((have, next))
    }

    async fn finish_upload(
        &self,
        r: &Reference,
        url: Url,
        desc: &Descriptor,
        last: Bytes,
        op: &str,
    ) -> Result<()> {
        let mut url = url;
        url.query_pairs_mut()
            .append_pair("digest", &desc.digest.to_string());
        let n = last.len() as u64;
        let req = Req::url(Method::PUT, url, format!("{op}: PUT"))
            .scope(push_scope(r.repository()))
            .header("content-type", "application/octet-stream")
            .body(last);
        let resp = self.send(r.registry(), &req).await?;
        expect(resp, &[StatusCode::CREATED], &format!("{op}: PUT")).await?;
        self.inner
            .stats
            .bytes_uploaded
            .fetch_add(n, Ordering::Relaxed);
        Ok(())
    }
}

fn verify(op: &str, desc: &Descriptor, actual: &Digest, size: u64) -> Result<()> {
    if size != desc.size {
        return Err(RegistryError::SizeMismatch {
            what: op.to_string(),
            expected: desc.size,
            actual: size,
        });
    }
    if *actual != desc.digest {
        return Err(RegistryError::DigestMismatch {
            what: op.to_string(),
            expected: desc.digest.clone(),
            actual: actual.clone(),
        });
    }
    Ok(())
}

/// Fills a buffer of up to `size` bytes; shorter only at the end of `data`.
fn read_chunk(data: &mut dyn Read, size: usize) -> std::io::Result<Bytes> {
    let mut buf = BytesMut::zeroed(size);
    let mut n = 0;
    while n < size {
        match data.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(n);
    Ok(buf.freeze())
}

fn content_range_start(resp: &reqwest::Response) -> Option<u64> {
    let v = resp.headers().get("content-range")?.to_str().ok()?;
    let v = v.trim().strip_prefix("bytes")?.trim();
    v.split('-').next()?.trim().parse().ok()
}

/// Gets our error back out of an io::Error from a [`BlobReader`].
pub fn unwrap_io(e: std::io::Error, context: String) -> RegistryError {
    if e.get_ref().is_some_and(|i| i.is::<RegistryError>()) {
        match e.into_inner().map(|i| i.downcast::<RegistryError>()) {
            Some(Ok(inner)) => return *inner,
            Some(Err(other)) => {
                return RegistryError::Io {
                    context,
                    cause: std::io::Error::other(other),
                };
            }
            None => unreachable!("checked get_ref above"),
        }
    }
    RegistryError::Io { context, cause: e }
}
