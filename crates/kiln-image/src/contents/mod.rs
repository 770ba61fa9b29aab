//! What an image's layers hold, read without unpacking anything: `kiln
//! layers` ([`layer_summaries`]: each layer's size, file count, the step
//! that made it and the bytes it hides from the layers below, dive's
//! "wasted space") and `kiln diff` ([`diff`]: the files added, removed and
//! changed between two images).
//!
//! Both stream each layer's tar once, oldest first, from any
//! [`crate::transport::ImageSource`], checking the blob against its
//! digest. Only metadata is kept (a file's content is reduced to its
//! digest as it streams by), so memory grows with the number of files,
//! never with the size of a layer. The filesystem model is the one
//! extraction applies: whiteouts remove what lower layers have (never what
//! the same layer adds), an opaque marker empties its directory, a
//! non-directory replaces a directory and all below it, and a hard link is
//! the file it names.

mod diff;
mod layers;
mod scan;
mod tree;

pub use diff::{Change, ChangeKind, diff, diff_images};
pub use layers::{LayerSummary, layer_summaries};
pub use scan::{FileKind, FileMeta};
pub use tree::Tree;
pub(crate) use tree::read_layer;
