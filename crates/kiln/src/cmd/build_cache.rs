//! `kiln build --cache-from/--cache-to`: the flags parsed into
//! `kiln_build::export::cache`'s values, imported caches read before the
//! build, and the exports after it. A cache that cannot be used is a
//! warning, once, unless the user said `ignore-error=false` (for
//! `--cache-from`) or left it so (for `--cache-to`, as buildx).

use std::sync::Arc;

use anyhow::bail;
use kiln_build::cache_session::{CacheSession, ImportedCache};
use kiln_build::export::cache::{CacheFrom, CacheLocation, CacheTo, export_cache, import_cache};
use kiln_image::media::Compression;
use kiln_image::{Image, Reference, Store};

/// The parsed flags; kinds kiln does not do yet are warned about here.
pub struct CacheFlags {
    from: Vec<CacheFrom>,
    to: Vec<CacheTo>,
}

impl CacheFlags {
    /// Checked before anything is built: a typo must not cost a build.
    pub fn parse(from: &[String], to: &[String]) -> anyhow::Result<CacheFlags> {
        let mut flags = CacheFlags {
            from: Vec::new(),
            to: Vec::new(),
        };
        for spec in from {
            match CacheFrom::parse(spec)? {
                Some(f) => flags.from.push(f),
                None => eprintln!(
                    "warning: --cache-from {spec}: kiln does not import this kind of cache yet; ignored"
                ),
            }
        }
        for spec in to {
            match CacheTo::parse(spec)? {
                Some(t) => flags.to.push(t),
                None => eprintln!(
                    "warning: --cache-to {spec}: kiln does not export this kind of cache yet; ignored"
                ),
            }
        }
        Ok(flags)
    }

    /// The registry caches, imported or exported: a push mounts layers
    /// from them.
    pub fn registry_refs(&self) -> Vec<Reference> {
        let from = self.from.iter().map(|f| &f.location);
        let to = self.to.iter().map(|t| &t.location);
        from.chain(to)
            .filter_map(|l| match l {
                CacheLocation::Registry { reference, .. } => Some(reference.clone()),
                CacheLocation::Local { .. } => None,
            })
            .collect()
    }

    /// The compression the first `--cache-to` wants, so the build
    /// compresses layers for it in the background as they are made.
    pub fn compression(&self) -> Option<Compression> {
        self.to
            .iter()
            .map(|t| t.compression)
            .find(|c| *c != Compression::None)
    }

    /// Reads every `--cache-from`, in order, into the build's session.
    /// `quiet`: only warnings are printed.
    pub fn session(&self, quiet: bool) -> anyhow::Result<Arc<CacheSession>> {
        let mut imports: Vec<ImportedCache> = Vec::new();
        for f in &self.from {
            match import_cache(f) {
                Ok(c) => {
                    if !quiet {
                        eprintln!("cache: {} entries in {}", c.entries.len(), f.location);
                    }
                    imports.push(c);
                }
                Err(e) if f.ignore_error => eprintln!(
                    "warning: --cache-from {}: {e}; building without this cache",
                    f.location
                ),
                Err(e) => bail!("--cache-from {}: {e}", f.location),
            }
        }
        Ok(Arc::new(CacheSession::new(imports)))
    }

    /// After the build: what the imports fetched, their failures, then
    /// every `--cache-to`.
    pub fn finish(
        &self,
        store: &Store,
        session: &CacheSession,
        image: &Image,
        quiet: bool,
    ) -> anyhow::Result<()> {
        for w in session.take_warnings() {
            eprintln!("warning: {w}");
        }
        if let Some(e) = session.take_errors().into_iter().next() {
            bail!("{e}");
        }
        let fetched = session.fetched();
        if !self.from.is_empty() && !quiet {
            eprintln!(
                "cache: fetched {} layers ({} bytes)",
                fetched.layers, fetched.bytes
            );
        }
        for t in &self.to {
            match export_cache(store, session, image, t) {
                Ok(x) if !quiet => eprintln!(
                    "cache: exported {} entries ({} layers) to {}@{}",
                    x.entries, x.layers, t.location, x.manifest.digest
                ),
                Ok(_) => {}
                Err(e) if t.ignore_error => eprintln!("warning: {e}"),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}
