//! Cross-repository blob mount: `POST /v2/<to>/blobs/uploads/?mount=<d>&from=<repo>`.
//! The token must cover both repositories (`repository:<from>:pull` and
//! `repository:<to>:pull,push`), which is what oci-client gets wrong.
//!
//! A mount is an optimisation, never a requirement: a 202 (the registry
//! started an upload instead) hands back that upload session, and any other
//! failure means "upload it the normal way".

use std::sync::atomic::Ordering;

use kiln_image::{Digest, Reference};
use reqwest::{Method, StatusCode, Url};

use crate::client::{Client, Req, location, pull_scope, push_scope};

/// What came of a mount request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mount {
    /// The blob is now in the target repository.
    Mounted,
    /// The registry opened an upload session instead; upload into it.
    Upload(Url),
    /// The mount failed; upload as usual.
    Failed(String),
}

impl Client {
    /// Asks the registry to make `digest` of `from` available in `to`
    /// (same registry) without uploading it.
    pub fn mount_blob(&self, to: &Reference, from: &Reference, digest: &Digest) -> Mount {
        self.block_on(self.mount_async(to, from, digest))
    }

    pub(crate) async fn mount_async(
        &self,
        to: &Reference,
        from: &Reference,
        digest: &Digest,
    ) -> Mount {
        let op = format!("mount blob {digest} from {}", from.repository());
        if to.registry() != from.registry() {
            return Mount::Failed("different registries".into());
        }
        let mut url_path = format!(
            "/v2/{}/blobs/uploads/?mount={digest}&from=",
            to.repository()
        );
        url_path.push_str(from.repository());
        let req = Req::new(Method::POST, url_path, &op)
            .scope(pull_scope(from.repository()))
            .scope(push_scope(to.repository()));
        let resp = match self.send(to.registry(), &req).await {
            Ok(r) => r,
            Err(e) => return Mount::Failed(e.to_string()),
        };
        match resp.status() {
            StatusCode::CREATED => {
                self.inner.stats.mounts.fetch_add(1, Ordering::Relaxed);
                Mount::Mounted
            }
            StatusCode::ACCEPTED => match location(&resp, &op) {
                Ok(u) => Mount::Upload(u),
                Err(e) => Mount::Failed(e.to_string()),
            },
            s => Mount::Failed(format!("{op}: {s}")),
        }
    }
}
