//! The error type of layer writing (walking, tar, compression). Extraction
//! has its own [`super::ExtractError`], which always names the tar entry.

use std::io;

/// An error while writing a layer. Every variant that concerns one entry or
/// host file names it.
#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("layer entry {path:?}: invalid path: {reason}")]
    InvalidPath { path: String, reason: &'static str },
    #[error("layer entry {path:?} appears more than once")]
    Duplicate { path: String },
    #[error("layer entry {path:?}: {reason}")]
    Invalid { path: String, reason: String },
    #[error("layer entry {path:?}: {cause}")]
    Io { path: String, cause: io::Error },
    #[error("host file {path:?} changed while it was written to the layer: {reason}")]
    Changed { path: String, reason: String },
    #[error("writing the layer: {0}")]
    Write(io::Error),
}

impl From<io::Error> for LayerError {
    fn from(e: io::Error) -> Self {
        LayerError::Write(e)
    }
}

impl LayerError {
    pub(crate) fn io(path: impl AsRef<[u8]>, cause: io::Error) -> Self {
        LayerError::Io {
            path: show(path.as_ref()),
            cause,
        }
    }
}

/// A path for messages: lossy UTF-8 is fine there, the bytes stay exact
/// everywhere else.
pub(crate) fn show(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}
