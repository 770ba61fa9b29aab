//! `kiln build --push`, `-o type=registry` and `-o type=image,push=true`:
//! after the build, the image goes from the store to each named registry
//! repository through kiln-registry, as `kiln push` sends it, so the
//! registry holds the very manifest the build wrote (same digest).

use anyhow::{Context, Result, bail};
use kiln_image::store_io::StoreSource;
use kiln_image::transport::{self, CopyOptions};
use kiln_image::{Descriptor, Digest, Reference, Store};
use kiln_registry::{Client, ClientConfig, RegistrySink};

/// Pushes the image `desc` names to every reference in `names`; returns
/// the digest the registries hold. `insecure` lists hosts that may be
/// reached over plain HTTP or with an unverified certificate
/// (`registry.insecure=true`); loopback registries always may use HTTP.
pub fn push(
    store: &Store,
    desc: &Descriptor,
    names: &[Reference],
    insecure: &[String],
) -> Result<Digest> {
    if names.is_empty() {
        bail!("pushing needs an image name: give -t NAME, or name= in --output");
    }
    let mut config = ClientConfig::default();
    config.transport.insecure_registries = insecure.to_vec();
    let client = Client::new(config)?;
    let src = StoreSource::from_descriptor(store, desc.clone());
    for name in names {
        let sink = RegistrySink::new(&client, name.clone());
        let top = transport::copy(&src, &sink, &CopyOptions::default())
            .with_context(|| format!("push {name}"))?;
        if top.digest != desc.digest {
            bail!(
                "push {name}: the registry got {} instead of the built {}",
                top.digest,
                desc.digest
            );
        }
        eprintln!("pushed {name}@{}", top.digest);
    }
    Ok(desc.digest.clone())
}
