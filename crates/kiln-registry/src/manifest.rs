//! Manifest and index endpoints: GET and HEAD with the Accept list of every
//! manifest type kiln reads, PUT by tag or digest, and tag listing and the
//! catalog with `Link` pagination.
//!
//! Manifests are kept as the exact bytes the registry sent (their digest is
//! over those bytes). A manifest fetched by digest must hash to it; one
//! fetched by tag must match the `Docker-Content-Digest` the registry sent.
//! Docker schema 1 is fetched only to be refused with a clear error.

use bytes::Bytes;
use kiln_image::transport::RawManifest;
use kiln_image::{AnyManifest, Descriptor, Digest, Reference, media};
use reqwest::header::CONTENT_TYPE;
use reqwest::{Method, Response, StatusCode};

use crate::client::{
    Client, Req, Target, expect, pull_scope, push_scope, read_limited, status_error,
};
use crate::error::{RegistryError, Result};

/// Manifests larger than this are refused (distribution's own limit is 4 MiB).
pub const MAX_MANIFEST: usize = 4 << 20;

/// What we accept, best first. Schema 1 is listed last so a registry that
/// has only that sends it and we can say why we refuse it, rather than a
/// confusing 404.
pub const ACCEPT_MANIFESTS: &str = "application/vnd.oci.image.index.v1+json, \
application/vnd.docker.distribution.manifest.list.v2+json, \
application/vnd.oci.image.manifest.v1+json, \
application/vnd.docker.distribution.manifest.v2+json;q=0.9, \
application/vnd.docker.distribution.manifest.v1+prettyjws;q=0.1, \
application/json;q=0.1";

fn manifest_path(r: &Reference, reference: &str) -> String {
    format!("/v2/{}/manifests/{reference}", r.repository())
}

fn content_digest(resp: &Response) -> Option<Digest> {
    resp.headers()
        .get("docker-content-digest")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn content_type(resp: &Response) -> Option<String> {
    resp.headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.split(';').next().unwrap_or(v).trim().to_string())
}

impl Client {
    /// Fetches the manifest or index `r` names (its digest if pinned, else
    /// its tag).
    pub fn get_manifest(&self, r: &Reference) -> Result<RawManifest> {
        self.block_on(self.get_manifest_async(r, &r.api_reference()))
    }

    pub(crate) async fn get_manifest_async(
        &self,
        r: &Reference,
        reference: &str,
    ) -> Result<RawManifest> {
        let op = format!("GET manifest {reference}");
        let req = Req::new(Method::GET, manifest_path(r, reference), &op)
            .scope(pull_scope(r.repository()))
            .header("accept", ACCEPT_MANIFESTS);
        let resp = self.send(r.registry(), &req).await?;
        let resp = expect(resp, &[StatusCode::OK], &op).await?;
        let header_digest = content_digest(&resp);
        let ctype = content_type(&resp);
        let bytes = read_limited(resp, MAX_MANIFEST).await?;
        let actual = Digest::sha256_of(&bytes);
        let expected = reference.parse::<Digest>().ok().or(header_digest);
        if let Some(want) = expected
            && want.algorithm() == actual.algorithm()
            && want != actual
        {
            return Err(RegistryError::DigestMismatch {
                what: op,
                expected: want,
                actual,
            });
        }
        // The document's own mediaType is the truth; Content-Type fills in
        // for documents that leave it out.
        let parsed = AnyManifest::parse(ctype.as_deref(), &bytes)?;
        let media_type = match &parsed {
            AnyManifest::Manifest(m) => m.media_type.clone(),
            AnyManifest::Index(i) => i.media_type.clone(),
        }
        .or(ctype.filter(|t| media::is_manifest(t) || media::is_index(t)))
        .unwrap_or_else(|| match parsed {
            AnyManifest::Manifest(_) => media::OCI_MANIFEST.into(),
            AnyManifest::Index(_) => media::OCI_INDEX.into(),
        });
        Ok(RawManifest {
            media_type,
            digest: actual,
            bytes,
        })
    }

    /// The descriptor of what `r` names, without fetching it (HEAD), or
    /// `None` when the registry does not have it.
    pub fn head_manifest(&self, r: &Reference) -> Result<Option<Descriptor>> {
        self.block_on(async {
            let reference = r.api_reference();
            let op = format!("HEAD manifest {reference}");
            let req = Req::new(Method::HEAD, manifest_path(r, &reference), &op)
                .scope(pull_scope(r.repository()))
                .header("accept", ACCEPT_MANIFESTS);
            let resp = self.send(r.registry(), &req).await?;
            if resp.status() == StatusCode::NOT_FOUND {
                return Ok(None);
            }
            let resp = expect(resp, &[StatusCode::OK], &op).await?;
            let digest = content_digest(&resp);
            let size = resp
                .headers()
                .get(reqwest::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            let ctype = content_type(&resp);
            match (digest, size, ctype) {
                (Some(d), Some(s), Some(t)) => Ok(Some(Descriptor::new(t, d, s))),
                // Some registries omit the digest on HEAD: fall back to GET.
                _ => {
                    let raw = self.get_manifest_async(r, &reference).await?;
                    Ok(Some(raw.descriptor()))
                }
            }
        })
    }

    /// Stores a manifest under `reference` (a tag or the manifest's digest).
    pub fn put_manifest(
        &self,
        r: &Reference,
        reference: &str,
        raw: &RawManifest,
    ) -> Result<Digest> {
        self.block_on(self.put_manifest_async(r, reference, raw))
    }

    pub(crate) async fn put_manifest_async(
        &self,
        r: &Reference,
        reference: &str,
        raw: &RawManifest,
    ) -> Result<Digest> {
        let op = format!("PUT manifest {reference}");
        let req = Req::new(Method::PUT, manifest_path(r, reference), &op)
            .scope(push_scope(r.repository()))
            .header("content-type", &raw.media_type)
            .body(Bytes::from(raw.bytes.clone()));
        let resp = self.send(r.registry(), &req).await?;
        let resp = expect(resp, &[StatusCode::CREATED, StatusCode::OK], &op).await?;
        if let Some(d) = content_digest(&resp)
            && d != raw.digest
        {
            return Err(RegistryError::DigestMismatch {
                what: format!("{op}: the registry's digest"),
                expected: raw.digest.clone(),
                actual: d,
            });
        }
        Ok(raw.digest.clone())
    }

    /// Every tag of `repo`'s repository, following `Link` pages.
    pub fn tags(&self, repo: &Reference) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            tags: Option<Vec<String>>,
        }
        let path = format!("/v2/{}/tags/list?n=1000", repo.repository());
        let pages = self.block_on(self.paginate(
            repo.registry(),
            path,
            pull_scope(repo.repository()),
            "list tags",
        ))?;
        let mut out = Vec::new();
        for p in pages {
            let page: Page = serde_json::from_slice(&p)
                .map_err(|e| RegistryError::Protocol(format!("list tags: invalid JSON: {e}")))?;
            out.extend(page.tags.unwrap_or_default());
        }
        Ok(out)
    }

    /// Every repository of `registry` (needs catalog access), following pages.
    pub fn catalog(&self, registry: &str) -> Result<Vec<String>> {
        #[derive(serde::Deserialize)]
        struct Page {
            #[serde(default)]
            repositories: Vec<String>,
        }
        let pages = self.block_on(self.paginate(
            registry,
            "/v2/_catalog?n=1000".into(),
            "registry:catalog:*".into(),
            "list catalog",
        ))?;
        let mut out = Vec::new();
        for p in pages {
            let page: Page = serde_json::from_slice(&p)
                .map_err(|e| RegistryError::Protocol(format!("list catalog: invalid JSON: {e}")))?;
            out.extend(page.repositories);
        }
        Ok(out)
    }

    async fn paginate(
        &self,
        registry: &str,
        first: String,
        scope: String,
        op: &str,
    ) -> Result<Vec<Vec<u8>>> {
        let mut pages = Vec::new();
        let mut req = Req::new(Method::GET, first, op)
            .scope(scope.clone())
            .header("accept", "application/json");
        // A registry that loops its Link headers must not loop us forever.
        for _ in 0..10_000 {
            let resp = self.send(registry, &req).await?;
            if resp.status() != StatusCode::OK {
                return Err(status_error(resp, op).await);
            }
            let next = next_link(&resp);
            pages.push(read_limited(resp, 16 << 20).await?);
            let Some(next) = next else {
                return Ok(pages);
            };
            req = Req::new(Method::GET, "", op).scope(scope.clone());
            req.target = match reqwest::Url::parse(&next) {
                Ok(u) => Target::Url(u),
                Err(_) => Target::Path(next),
            };
        }
        Err(RegistryError::Protocol(format!("{op}: too many pages")))
    }
}

/// `Link: </v2/_catalog?last=b&n=2>; rel="next"` → the URL in the brackets.
fn next_link(resp: &Response) -> Option<String> {
    for v in resp.headers().get_all(reqwest::header::LINK) {
        let Ok(v) = v.to_str() else { continue };
        for part in v.split(',') {
            let (url, params) = part.split_once(';').unwrap_or((part, ""));
            if params.replace(' ', "").contains("rel=\"next\"") || params.contains("rel=next") {
                let url = url.trim().trim_start_matches('<').trim_end_matches('>');
                return Some(url.to_string());
            }
        }
    }
    None
}
