//! Client for the OCI distribution API: auth, pull, push, cross-repo mount,
//! retries and resumable transfers. It does not build or mutate images.
//!
//! The API is blocking: a [`Client`] owns a small tokio runtime and is shared
//! by the threads of [`kiln_image::transport::copy`]. [`RegistrySource`] and
//! [`RegistrySink`] make `docker://` references a transport like any other.

pub mod auth;
pub mod blob;
pub mod client;
pub mod credentials;
pub mod error;
pub mod manifest;
pub mod mount;
pub mod retry;
pub mod sink;
pub mod source;
pub mod transport;

pub use blob::BlobReader;
pub use client::{Client, ClientConfig, StatsSnapshot};
pub use credentials::{CredentialFiles, Credentials};
pub use error::{RegistryError, Result};
pub use mount::Mount;
pub use retry::RetryPolicy;
pub use sink::RegistrySink;
pub use source::RegistrySource;
pub use transport::TransportConfig;
