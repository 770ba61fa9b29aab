//! Snapshots of root filesystems for RUN steps: layer directories unpacked
//! once per diff ID and shared, a writable container filesystem over them
//! (overlay, or a plain copy where overlay is refused), and the diff of
//! that filesystem back into layer entries.
//!
//! ```text
//! <store>/snapshots/layers/<diff-id-hex>/   one layer, whiteouts in overlay form
//! <store>/snapshots/containers/<id>/        upper/ work/ (overlay) or rootfs/ (copy)
//! <store>/snapshots/trees/<chain>/          a copied tree kept for the next copy container
//! ```
//!
//! It does not mount or run anything: the sandbox mounts the overlay inside
//! its own mount namespace, so a killed run leaves no mount behind. It does
//! not write layer blobs either; [`Container::diff`] yields entries for the
//! layer codec.

mod copy;
mod diff;
mod layers;
mod lookup;
mod pool;
mod remove;
mod stage;
mod stat_index;
mod tree_pool;
mod watch;

pub use diff::{diff_copy, diff_upper};
pub use layers::{Container, EnsureBlob, Mode, Snapshots};
pub use lookup::lookup;
pub use stage::StagedLayer;
pub use stat_index::{Stamp, StatIndex};

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op} {}: {cause}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("unpacking layer {diff_id}: {cause}")]
    Extract {
        diff_id: String,
        cause: kiln_image::layer::ExtractError,
    },
    /// A layer that is not in the store could not be fetched.
    #[error("fetching layer {digest}: {cause}")]
    Fetch { digest: String, cause: String },
    #[error(transparent)]
    Store(#[from] kiln_image::StoreError),
    #[error(transparent)]
    Layer(#[from] kiln_image::layer::LayerError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

pub(crate) fn io_err(
    op: &'static str,
    path: &std::path::Path,
) -> impl FnOnce(std::io::Error) -> Error + use<> {
    let path = path.to_path_buf();
    move |cause| Error::Io { op, path, cause }
}
