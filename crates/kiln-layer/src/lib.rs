//! Layer codec: deterministic tar writing from a directory or entry list,
//! streaming compression (gzip, block-parallel and reproducible; zstd) with the
//! diff ID and blob digest computed in the same pass, and safe extraction of
//! layers into a directory (whiteouts, hardlinks, symlinks, devices), confined
//! with `openat2(RESOLVE_IN_ROOT)`.
//!
//! It does not know about registries, manifests beyond descriptors, or builds.
