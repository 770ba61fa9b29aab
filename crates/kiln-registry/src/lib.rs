//! Client for the OCI distribution API: auth, pull, push, cross-repo mount,
//! retries and resumable transfers. It does not build or mutate images.
