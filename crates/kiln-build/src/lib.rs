//! The build engine: lowering of Dockerfile stages to a graph of ops, the
//! content-addressed solver and cache, RUN mounts and exporters.
