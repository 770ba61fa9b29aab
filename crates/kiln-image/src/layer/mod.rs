//! The layer codec: deterministic tar writing, streaming compression with the
//! diff ID and blob digest computed in the same pass, and safe extraction.

mod detect;
pub use detect::{decompress, detect_compression};
