//! The image model and its local stores: digests, descriptors, media types,
//! manifests and indexes, the image config (our own type, which keeps Docker-only
//! and unknown fields), canonical JSON, image references, the content-addressed
//! store, and pure image mutations.
//!
//! It does not read or write tar layers (see `kiln-layer`) nor talk to registries.
