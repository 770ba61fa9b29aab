//! Flattening (`kiln export`, squash): applies layers oldest first and
//! writes ONE layer blob of the final filesystem, whiteouts applied.
//!
//! Simplest correct approach: extract every layer into a scratch directory
//! (which the caller chooses, so it can be on the store's filesystem), then
//! write that directory with the deterministic writer. Streaming: no layer
//! and no output is held in memory; the scratch directory needs the space of
//! the final filesystem.
//!
//! Limits: ownership is only kept when running as root (the extraction
//! chowns); device nodes an unprivileged user cannot create are dropped
//! (each shows up as an extraction warning, which is returned).

use std::io::{self, Read, Write};
use std::path::Path;

use super::LayerOptions;
use super::compress::{LayerInfo, write_dir_layer};
use super::error::LayerError;
use super::extract::{ExtractError, ExtractOptions, ExtractWarning, extract};

/// An error of [`flatten`], naming the layer (0 = oldest) when one is at
/// fault.
#[derive(Debug, thiserror::Error)]
pub enum FlattenError {
    #[error("scratch directory: {0}")]
    Scratch(io::Error),
    #[error("layer {layer}: {cause}")]
    Extract { layer: usize, cause: ExtractError },
    #[error("writing the flattened layer: {0}")]
    Write(LayerError),
}

impl From<LayerError> for FlattenError {
    fn from(e: LayerError) -> Self {
        FlattenError::Write(e)
    }
}

/// Applies `layers` (compressed or not, oldest first) in a fresh directory
/// under `scratch` and writes the result to `sink`. Returns the sink, the
/// written layer's info and the warnings of all extractions.
pub fn flatten<R: Read, W: Write>(
    layers: impl IntoIterator<Item = R>,
    scratch: &Path,
    opts: &LayerOptions,
    sink: W,
) -> Result<(W, LayerInfo, Vec<ExtractWarning>), FlattenError> {
    let dir = tempfile::Builder::new()
        .prefix("kiln-flatten-")
        .tempdir_in(scratch)
        .map_err(FlattenError::Scratch)?;
    let xopts = ExtractOptions::default();
    let mut warnings = Vec::new();
    for (i, layer) in layers.into_iter().enumerate() {
        let rep = extract(layer, dir.path(), &xopts)
            .map_err(|cause| FlattenError::Extract { layer: i, cause })?;
        warnings.extend(rep.warnings);
    }
    let (sink, info) = write_dir_layer(dir.path(), opts, sink)?;
    dir.close().map_err(FlattenError::Scratch)?;
    Ok((sink, info, warnings))
}
