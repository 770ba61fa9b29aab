//! The image model and its local stores: digests, descriptors, media types,
//! manifests and indexes, the image config (our own type, which keeps Docker-only
//! and unknown fields), canonical JSON, image references, the content-addressed
//! store, and pure image mutations.
//!
//! The `layer` module is the layer codec: deterministic tar writing, streaming
//! compression and digests, and safe extraction. The crate does not talk to
//! registries and does not run anything.
//!
//! Image surgery (`rewrite`, `index_edit`) and image contents (`contents`:
//! `kiln diff`, `kiln layers`) are functions from images to images or to
//! reports; `examples/` has one runnable example per operation (mutate,
//! append, rebase, flatten, squash, index).

pub mod archive;
pub mod blob_sources;
pub mod canonical;
pub mod clean_path;
pub mod compressed;
pub mod config;
pub mod config_edit;
pub mod contents;
pub mod digest;
pub mod in_root;
pub mod index_edit;
pub mod layer;
pub mod layout;
pub mod manifest;
pub mod media;
pub mod mutate;
pub mod reference;
pub mod rewrite;
pub mod store;
pub mod store_io;
pub mod time;
pub mod transport;

pub use config::{History, ImageConfig, RuntimeConfig};
pub use digest::{Digest, Hasher, HashingReader, HashingWriter};
pub use manifest::{AnyManifest, Descriptor, Index, Manifest, Platform};
pub use mutate::{Image, NewLayer};
pub use reference::Reference;
pub use store::{Store, StoreError};
