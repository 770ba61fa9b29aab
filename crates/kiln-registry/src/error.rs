//! The library's error type. Every error names the operation and, for HTTP
//! failures, the status and the registry's own error code and message, so a
//! user can tell a typo (`MANIFEST_UNKNOWN`) from a permission problem
//! (`DENIED`) without a debug log. The command layer prefixes the reference.

use kiln_image::Digest;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The registry answered with a status we do not retry or retried in vain.
    #[error("{op}: {status}{}", detail.as_deref().map(|d| format!(": {d}")).unwrap_or_default())]
    Status {
        op: String,
        status: reqwest::StatusCode,
        /// `CODE message` from the distribution error body, when there is one.
        detail: Option<String>,
    },
    /// No HTTP answer at all (refused, reset, TLS), after the retries. The
    /// message carries the whole cause chain (reqwest's own message alone
    /// says only "error sending request"), so the cause is not a `source`.
    #[error("{op}: {}", chain(.cause))]
    Connection { op: String, cause: reqwest::Error },
    #[error("{what}: content does not match its digest: expected {expected}, got {actual}")]
    DigestMismatch {
        what: String,
        expected: Digest,
        actual: Digest,
    },
    #[error("{what}: expected {expected} bytes, got {actual}")]
    SizeMismatch {
        what: String,
        expected: u64,
        actual: u64,
    },
    /// The registry lost an upload midway (distribution cancels an upload
    /// whose PATCH was cut short); only starting over can succeed.
    #[error("{op}: upload lost: {detail}")]
    UploadLost { op: String, detail: String },
    #[error("authentication: {0}")]
    Auth(String),
    #[error("credentials: {0}")]
    Credentials(String),
    #[error("TLS setup for {host}: {detail}")]
    Tls { host: String, detail: String },
    #[error("{0}")]
    Protocol(String),
    #[error(transparent)]
    Manifest(#[from] kiln_image::manifest::ManifestError),
    #[error("{context}: {cause}")]
    Io {
        context: String,
        cause: std::io::Error,
    },
}

impl RegistryError {
    pub fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> RegistryError {
        let context = context.into();
        move |cause| RegistryError::Io { context, cause }
    }

    /// Whether trying the whole operation again may succeed: the network
    /// failed, the server was overloaded, or it lost our upload.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Connection { .. } | RegistryError::UploadLost { .. } => true,
            RegistryError::Status { status, .. } => crate::retry::retryable_status(*status),
            _ => false,
        }
    }

    /// The HTTP status, for callers that treat 404 or 401 specially.
    pub fn status(&self) -> Option<reqwest::StatusCode> {
        match self {
            RegistryError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

pub type Result<T, E = RegistryError> = std::result::Result<T, E>;

/// `outer: inner: innermost`, skipping repeats.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = vec![e.to_string()];
    let mut cur = e.source();
    while let Some(c) = cur {
        let s = c.to_string();
        if !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
        cur = c.source();
    }
    parts.join(": ")
}

/// Reads `{"errors":[{"code":..,"message":..}]}`, the distribution error
/// body, into `CODE message; CODE message`. Anything else is shown as text,
/// cut short, since a proxy's HTML error page is not worth a screenful.
pub(crate) fn error_detail(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Body {
        errors: Vec<Item>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        #[serde(default)]
        code: String,
        #[serde(default)]
        message: String,
    }
    if let Ok(b) = serde_json::from_slice::<Body>(body)
        && !b.errors.is_empty()
    {
        let parts: Vec<String> = b
            .errors
            .iter()
            .map(|e| format!("{} {}", e.code, e.message).trim().to_string())
            .collect();
        return Some(parts.join("; "));
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    let mut cut: String = text.chars().take(200).collect();
    if cut.len() < text.len() {
        cut.push('…');
    }
    Some(cut)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distribution_error_body() {
        let b = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"manifest unknown","detail":{"Tag":"x"}}]}"#;
        assert_eq!(
            error_detail(b).unwrap(),
            "MANIFEST_UNKNOWN manifest unknown"
        );
        assert_eq!(error_detail(b""), None);
        let e = RegistryError::Status {
            op: "GET manifest".into(),
            status: reqwest::StatusCode::NOT_FOUND,
            detail: error_detail(b),
        };
        assert_eq!(
            e.to_string(),
            "GET manifest: 404 Not Found: MANIFEST_UNKNOWN manifest unknown"
        );
    }
}
