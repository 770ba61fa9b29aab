//! `kiln layers`: what each layer of an image adds and hides.

use serde::Serialize;

use super::tree::{Tree, read_layer};
use crate::Digest;
use crate::mutate::Image;
use crate::transport::{ImageSource, Result};

/// One layer of an image, bottom first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerSummary {
    /// 0 is the bottom layer.
    pub index: usize,
    pub digest: Digest,
    /// The blob's size as stored (compressed or not).
    pub size: u64,
    /// Bytes of regular-file content in the layer's tar.
    pub content_size: u64,
    /// Entries that are neither directories nor whiteouts.
    pub files: u64,
    /// Bytes of the layers below that this one hides: files it overwrites
    /// or deletes, and all under a directory it deletes or replaces (what
    /// dive calls wasted space).
    pub hidden: u64,
    /// The step that made the layer: its history entry's `created_by`.
    pub created_by: Option<String>,
    /// Its history entry's comment (`kiln import` names its source so).
    pub comment: Option<String>,
}

/// Each layer of `image` (its blobs read from `src`), bottom first.
///
/// Steps come from the history entries that made layers, matched in
/// order; when their number is not the number of layers, no step is
/// named rather than a wrong one.
pub fn layer_summaries(src: &dyn ImageSource, image: &Image) -> Result<Vec<LayerSummary>> {
    let steps: Vec<&crate::History> = image
        .config
        .history
        .iter()
        .filter(|h| !h.empty_layer)
        .collect();
    let matched = steps.len() == image.layers.len();
    let mut tree = Tree::new();
    let mut out = Vec::with_capacity(image.layers.len());
    for (index, desc) in image.layers.iter().enumerate() {
        let scan = read_layer(src, index, desc)?;
        let (files, content_size) = (scan.files, scan.content);
        let hidden = tree.apply(scan);
        out.push(LayerSummary {
            index,
            digest: desc.digest.clone(),
            size: desc.size,
            content_size,
            files,
            hidden,
            created_by: matched.then(|| steps[index].created_by.clone()).flatten(),
            comment: matched.then(|| steps[index].comment.clone()).flatten(),
        });
    }
    Ok(out)
}
