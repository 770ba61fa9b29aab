//! The registry side of `kiln build`, through kiln-registry:
//!
//! - base images the store lacks for the build's platform (or all of
//!   them, with `--pull`) are pulled first, that platform's manifest only;
//! - `--push`, `-o type=registry` and `-o type=image,push=true` send the
//!   result from the store to each named repository, as `kiln push` does,
//!   its layers compressed (see `kiln_image::compressed`): the registry
//!   holds the manifest given to [`Push::run`].

use std::collections::BTreeSet;
use std::sync::Mutex;

use anyhow::{Context, Result, bail};
use kiln_image::store_io::{StoreSink, StoreSource};
use kiln_image::transport::{self, CopyOptions};
use kiln_image::{Descriptor, Platform, Reference, Store};
use kiln_registry::{Client, ClientConfig, RegistrySink, RegistrySource};

/// Pulls a base image for one platform into the store, tagged with its
/// name; each (name, platform) at most once per build.
pub fn base_fetcher() -> Result<kiln_build::FetchBase> {
    let client = Client::new(ClientConfig::default())?;
    let pulled = Mutex::new(BTreeSet::new());
    Ok(Box::new(
        move |store: &Store, reference: &str, platform: &Platform| {
            let key = format!("{reference} {platform}");
            if pulled.lock().map_err(|e| e.to_string())?.contains(&key) {
                return Ok(());
            }
            let r = Reference::parse(reference).map_err(|e| e.to_string())?;
            let opts = CopyOptions {
                platform: Some(platform.clone()),
                ..CopyOptions::default()
            };
            let src = RegistrySource::new(&client, r.clone());
            let top = transport::copy(&src, &StoreSink::new(store, Some(r.clone())), &opts)
                .map_err(|e| e.to_string())?;
            eprintln!("pulled {r} for {platform}: {}", top.digest);
            pulled.lock().map_err(|e| e.to_string())?.insert(key);
            Ok(())
        },
    ))
}

/// One output's push: where to, and whether its registries may be reached
/// over plain HTTP or with an unverified certificate
/// (`registry.insecure=true`; loopback registries may use HTTP anyway).
pub struct Push {
    names: Vec<Reference>,
    insecure: bool,
}

impl Push {
    /// The output's own `name=`s, else the `-t` names (as buildx).
    pub fn plan(own: &[String], tags: &[String], insecure: bool) -> Result<Push> {
        let names = if own.is_empty() { tags } else { own };
        if names.is_empty() {
            bail!("pushing needs an image name: give -t NAME, or name= in --output");
        }
        let names = names
            .iter()
            .map(|n| Reference::parse(n).with_context(|| format!("push to {n:?}")))
            .collect::<Result<Vec<_>>>()?;
        Ok(Push { names, insecure })
    }

    /// Pushes the image `desc` names (in `store`) to every name.
    pub fn run(&self, store: &Store, desc: &Descriptor) -> Result<()> {
        let mut config = ClientConfig::default();
        if self.insecure {
            config.transport.insecure_registries = self
                .names
                .iter()
                .map(|r| r.registry().to_string())
                .collect();
        }
        let client = Client::new(config)?;
        let src = StoreSource::from_descriptor(store, desc.clone());
        for name in &self.names {
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
        Ok(())
    }
}
