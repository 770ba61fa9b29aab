//! `kiln build --cache-from/--cache-to`: the flags parsed into
//! `kiln_build::export::cache`'s values, imported caches read before the
//! build, and the exports after it. A cache that cannot be used is a
//! warning, once, unless the user said `ignore-error=false` (for
//! `--cache-from`) or left it so (for `--cache-to`, as buildx).
//! `type=inline` is written into the image by the build command itself,
//! before the image is named: here it is only recognized.

use std::sync::Arc;

use anyhow::bail;
use kiln_build::cache_mount_transfer::{CacheMounts, ImportedMounts, human_bytes};
use kiln_build::cache_session::{CacheSession, ImportedCache};
use kiln_build::export::cache::{
    CacheFrom, CacheLocation, CacheTo, export_cache, import_cache_and_mounts,
};
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
                CacheLocation::Local { .. } | CacheLocation::Inline => None,
            })
            .collect()
    }

    /// Whether a `--cache-to type=inline` asks for the entries in the
    /// image's own config ([`kiln_build::export::inline::embed`], before
    /// the image is named, exported or pushed).
    pub fn inline(&self) -> bool {
        self.to.iter().any(|t| t.location == CacheLocation::Inline)
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
        let mut mounts: Vec<ImportedMounts> = Vec::new();
        for f in &self.from {
            match import_cache_and_mounts(f) {
                Ok((c, m, note)) => {
                    if !quiet {
                        let mounts = match m.len() {
                            0 => String::new(),
                            n => format!(" and {n} cache mounts"),
                        };
                        eprintln!(
                            "cache: {} entries{mounts} in {}",
                            c.entries.len(),
                            f.location
                        );
                    }
                    if let Some(note) = note {
                        eprintln!("warning: --cache-from {}: {note}", f.location);
                    }
                    imports.push(c);
                    mounts.push(m);
                }
                Err(e) if f.ignore_error => eprintln!(
                    "warning: --cache-from {}: {e}; building without this cache",
                    f.location
                ),
                Err(e) => bail!("--cache-from {}: {e}", f.location),
            }
        }
        let mut session = CacheSession::new(imports);
        session.mounts = CacheMounts::new(mounts);
        Ok(Arc::new(session))
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
        for w in session
            .take_warnings()
            .into_iter()
            .chain(session.mounts.take_warnings())
        {
            eprintln!("warning: {w}");
        }
        let errors = session.take_errors().into_iter();
        if let Some(e) = errors.chain(session.mounts.take_errors()).next() {
            bail!("{e}");
        }
        let fetched = session.fetched();
        if !self.from.is_empty() && !quiet {
            eprintln!(
                "cache: fetched {} layers ({} bytes)",
                fetched.layers, fetched.bytes
            );
            let restored = session.mounts.restored();
            if !restored.is_empty() {
                let bytes = restored.iter().map(|r| r.bytes).sum();
                eprintln!(
                    "cache: restored {} cache mounts ({})",
                    restored.len(),
                    human_bytes(bytes)
                );
            }
        }
        // The export writes the layers of what the build used: those
        // still in an imported cache are fetched first.
        if !self.to.is_empty()
            && let Err(e) = session.ensure_recorded(store)
        {
            bail!("{e}");
        }
        for t in self
            .to
            .iter()
            .filter(|t| t.location != CacheLocation::Inline)
        {
            match export_cache(store, session, image, t) {
                Ok(x) => {
                    for w in &x.warnings {
                        eprintln!("warning: --cache-to {}: {w}", t.location);
                    }
                    if !quiet {
                        let mounts = match t.mounts {
                            true => format!(" and {} cache mounts", x.mounts),
                            false => String::new(),
                        };
                        eprintln!(
                            "cache: exported {} entries ({} layers){mounts} to {}@{}",
                            x.entries, x.layers, t.location, x.manifest.digest
                        );
                    }
                }
                Err(e) if t.ignore_error => eprintln!("warning: {e}"),
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}
