//! Exporters: where a built image goes after the solver wrote it to the
//! store, as buildx's `--output` names them. `type=image` keeps it in the
//! store; `oci` and `docker` write archives, `tar` and `local` its
//! flattened filesystem; `push=true` (or `type=registry`) sends it to every
//! named repository through kiln-registry.
//!
//! What leaves the machine (archives, pushes) has compressed layers
//! (`kiln_image::compressed`): the store keeps built layers plain. The
//! image ID (config digest) is the same everywhere; the manifest digest of
//! a compressed copy is its own, and a push reports the registry's.
//!
//! It does not build, tag or parse command lines other than the `--output`
//! value itself.

use std::path::{Path, PathBuf};

use kiln_image::archive::{ArchiveKind, ArchiveSink};
use kiln_image::layer::LayerOptions;
use kiln_image::media::{Compression, Format};
use kiln_image::store_io::{StoreSink, StoreSource};
use kiln_image::transport::{self, CopyOptions};
use std::sync::Arc;

use kiln_image::{Descriptor, Digest, Image, Platform, Reference, Store};
use kiln_registry::{Client, ClientConfig, RegistrySink, RegistrySource};

use crate::cache_session::CacheSession;
use crate::lazy::RemoteLayers;
use crate::{BuildError, BuildResult};

pub mod cache;
pub mod inline;
mod lazy_push;

/// What an `--output` writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutputKind {
    /// The store only (plus a push with `push=true`).
    Image,
    /// An OCI image layout archive at `dest`.
    Oci { dest: PathBuf },
    /// A docker-archive (`docker load`'s format) at `dest`.
    Docker { dest: PathBuf },
    /// The flattened filesystem as one tar at `dest`.
    Tar { dest: PathBuf },
    /// The flattened filesystem in the directory `dest`.
    Local { dest: PathBuf },
}

/// One parsed `--output` (`-o`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    pub kind: OutputKind,
    /// `name=` (several separated by `;`): names besides `-t`.
    pub names: Vec<String>,
    /// `compression=`; unset, what leaves the machine is gzip.
    pub compression: Option<Compression>,
    pub rewrite_timestamp: bool,
    /// Push to the registry (`type=registry`, or `push=true`).
    pub push: bool,
    /// `registry.insecure=true`: plain HTTP or unverified TLS is fine.
    pub insecure: bool,
    /// `oci-mediatypes=`: unset, OCI types for `type=oci` and Docker's
    /// for `type=docker`, as BuildKit.
    pub oci_mediatypes: Option<bool>,
}

impl Output {
    /// Parses buildx's `--output` syntax: `type=…,dest=…,name=…,…`, or a
    /// bare type.
    pub fn parse(spec: &str) -> Result<Output, BuildError> {
        let usage = |msg: String| BuildError::Usage(format!("--output {spec:?}: {msg}"));
        let mut kind = "image".to_string();
        let mut dest = None;
        let mut out = Output {
            kind: OutputKind::Image,
            names: Vec::new(),
            compression: None,
            rewrite_timestamp: false,
            push: false,
            insecure: false,
            oci_mediatypes: None,
        };
        for part in spec.split(',') {
            let (k, v) = part.split_once('=').unwrap_or(("type", part));
            match k {
                "type" => kind = v.to_string(),
                "dest" => dest = Some(PathBuf::from(v)),
                "name" => out.names.extend(v.split(';').map(str::to_string)),
                "compression" => out.compression = Some(compression_named(v).map_err(usage)?),
                "rewrite-timestamp" => out.rewrite_timestamp = v == "true",
                "push" => out.push = v == "true",
                "registry.insecure" => out.insecure = v == "true",
                "oci-mediatypes" => out.oci_mediatypes = Some(v == "true"),
                "compression-level" | "force-compression" => {}
                _ => return Err(usage(format!("unknown key {k:?}"))),
            }
        }
        let need_dest =
            |dest: Option<PathBuf>| dest.ok_or_else(|| usage(format!("type={kind} needs dest=")));
        out.kind = match kind.as_str() {
            "image" => OutputKind::Image,
            // As buildx: type=registry is type=image,push=true.
            "registry" => {
                out.push = true;
                OutputKind::Image
            }
            "oci" => OutputKind::Oci {
                dest: need_dest(dest)?,
            },
            "docker" => OutputKind::Docker {
                dest: need_dest(dest)?,
            },
            "tar" => OutputKind::Tar {
                dest: need_dest(dest)?,
            },
            "local" => OutputKind::Local {
                dest: need_dest(dest)?,
            },
            other => {
                return Err(usage(format!(
                    "type={other}: expected image, registry, oci, docker, tar or local"
                )));
            }
        };
        if out.push && out.kind != OutputKind::Image {
            return Err(usage(format!(
                "type={kind}: push=true needs type=image or type=registry"
            )));
        }
        Ok(out)
    }

    /// Whether the image goes anywhere but the local store (a directory
    /// or tar of files does not: its layers are unpacked).
    pub fn leaves(&self) -> bool {
        self.push
            || matches!(
                self.kind,
                OutputKind::Oci { .. } | OutputKind::Docker { .. }
            )
    }

    pub fn compression(&self) -> Compression {
        self.compression.unwrap_or(Compression::Gzip)
    }
}

/// Writes the built image to `output` (a push is [`Push::run`]'s). `names`
/// are the image's names, first first.
pub fn export(
    store: &Store,
    result: &BuildResult,
    output: &Output,
    names: &[Reference],
) -> Result<(), BuildError> {
    match &output.kind {
        OutputKind::Image => Ok(()),
        OutputKind::Oci { dest } => {
            let kind = ArchiveKind::Oci {
                tag: names.first().and_then(|n| n.tag().map(str::to_string)),
                image_name: names.first().map(|n| n.to_string()),
            };
            write_archive(store, result, output, dest, kind, Format::Oci)
        }
        OutputKind::Docker { dest } => {
            let kind = ArchiveKind::Docker {
                repo_tags: names.iter().map(|n| n.familiar()).collect(),
            };
            write_archive(store, result, output, dest, kind, Format::Docker)
        }
        OutputKind::Tar { dest } => {
            let f = std::fs::File::create(dest).map_err(io_at("create", dest))?;
            let opts = LayerOptions {
                compression: Compression::None,
                ..LayerOptions::default()
            };
            let layers = layer_blobs(store, &result.image)?;
            kiln_image::layer::flatten(
                layers,
                &store.dir("tmp")?,
                &opts,
                std::io::BufWriter::new(f),
            )
            .map_err(|e| BuildError::Io(format!("{}: {e}", dest.display())))?;
            Ok(())
        }
        OutputKind::Local { dest } => {
            std::fs::create_dir_all(dest).map_err(io_at("create", dest))?;
            for l in layer_blobs(store, &result.image)? {
                kiln_image::layer::extract(std::io::BufReader::new(l), dest, &Default::default())
                    .map_err(|e| BuildError::Io(format!("{}: {e}", dest.display())))?;
            }
            Ok(())
        }
    }
}

/// Writes the image as an archive with the media types of `default_format`
/// (or `oci-mediatypes=`): the manifest is written anew for them, the
/// config's bytes, and so the image ID, stay the same.
fn write_archive(
    store: &Store,
    result: &BuildResult,
    output: &Output,
    dest: &Path,
    kind: ArchiveKind,
    default_format: Format,
) -> Result<(), BuildError> {
    let compression = output.compression();
    let format = archive_format(output, default_format);
    let image = Image {
        format,
        ..result.image.clone()
    };
    // The built manifest's annotations (`--annotation`) go along.
    let annotations = crate::annotate::annotations_of(store, &result.manifest.digest);
    let (config, manifest) = image.encode(&annotations)?;
    store.put_blob(&config)?;
    store.put_blob(&manifest.bytes)?;
    let top = kiln_image::compressed::compressed_top(store, &manifest.descriptor(), compression)?;
    let src = StoreSource::from_descriptor(store, top);
    let sink = ArchiveSink::create(dest, kind)?;
    transport::copy(&src, &sink, &CopyOptions::default())?;
    Ok(())
}

/// Docker has no zstd layer type that its own tools read: as BuildKit, a
/// zstd archive turns to OCI media types, and says so.
fn archive_format(output: &Output, default_format: Format) -> Format {
    let format = match output.oci_mediatypes {
        Some(true) => Format::Oci,
        Some(false) => Format::Docker,
        None => default_format,
    };
    if format == Format::Docker && output.compression() == Compression::Zstd {
        eprintln!(
            "warning: --output compression=zstd: using OCI media types (Docker's have no zstd layer)"
        );
        return Format::Oci;
    }
    format
}

fn layer_blobs(store: &Store, image: &Image) -> Result<Vec<std::fs::File>, BuildError> {
    Ok(image
        .layers
        .iter()
        .map(|l| store.open_blob(&l.digest))
        .collect::<Result<Vec<_>, _>>()?)
}

fn io_at(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BuildError + use<> {
    let path = path.to_path_buf();
    move |e| BuildError::Io(format!("{op} {}: {e}", path.display()))
}

/// One output's push: where to, and whether its registries may be reached
/// over plain HTTP or with an unverified certificate
/// (`registry.insecure=true`; loopback registries may use HTTP anyway).
pub struct Push {
    names: Vec<Reference>,
    insecure: bool,
    compression: Compression,
    /// Repositories that may hold the layers already (registry caches):
    /// on the same registry, layers are mounted from them, not uploaded.
    mount_from: Vec<Reference>,
}

impl Push {
    /// Checked before the build, so a push without a name fails at once:
    /// the output's own `name=`s, else the `-t` names (as buildx).
    pub fn plan(output: &Output, tags: &[String]) -> Result<Push, BuildError> {
        let names = if output.names.is_empty() {
            tags
        } else {
            &output.names
        };
        if names.is_empty() {
            return Err(BuildError::Usage(
                "pushing needs an image name: give -t NAME, or name= in --output".into(),
            ));
        }
        let names = names
            .iter()
            .map(|n| {
                Reference::parse(n).map_err(|e| BuildError::Usage(format!("push to {n:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Push {
            names,
            insecure: output.insecure,
            compression: output.compression(),
            mount_from: Vec::new(),
        })
    }

    /// Mounts layers from `repos` where they are on the pushed-to registry.
    pub fn mount_from(mut self, repos: &[Reference]) -> Push {
        self.mount_from.extend(repos.iter().cloned());
        self
    }

    /// Pushes the built image `built` (a manifest in `store`) to every
    /// name, its layers compressed; returns the manifest the registry holds.
    /// Layers still `remote` are not fetched: each is mounted from the
    /// repository that holds it when that is on the same registry, else
    /// streamed from there (a cache's layer is fetched first when the push
    /// wants another compression than the cache has).
    pub fn run(
        &self,
        store: &Store,
        built: &Descriptor,
        remote: Option<&CacheSession>,
    ) -> Result<Descriptor, BuildError> {
        let desc = match remote {
            None => kiln_image::compressed::compressed_top(store, built, self.compression)?,
            Some(session) => {
                let absent = |plain: &Digest| {
                    let layers = session.layers();
                    if let Some(d) = layers.compressed_remote(store, plain, self.compression) {
                        return Ok(Some((d.digest, d.size)));
                    }
                    session
                        .ensure(store, plain)
                        .map_err(kiln_image::transport::TransportError::Invalid)?;
                    Ok(None)
                };
                kiln_image::compressed::compressed_top_with(
                    store,
                    built,
                    self.compression,
                    &absent,
                )?
            }
        };
        let mut config = ClientConfig::default();
        if self.insecure {
            config.transport.insecure_registries = self
                .names
                .iter()
                .map(|r| r.registry().to_string())
                .collect();
        }
        let client = Client::new(config).map_err(registry_error("registry client"))?;
        let store_src = StoreSource::from_descriptor(store, desc.clone());
        let layers: Option<&RemoteLayers> = remote.map(|s| s.layers());
        let src = lazy_push::PushSource::new(store, store_src, layers);
        let mut mount_from = self.mount_from.clone();
        mount_from.extend(layers.map(|l| l.repositories()).unwrap_or_default());
        for name in &self.names {
            let sink = mount_from
                .iter()
                .fold(RegistrySink::new(&client, name.clone()), |s, from| {
                    s.mount_from(from)
                })
                .mount_recorded(store.blob_sources());
            let top = transport::copy(&src, &sink, &CopyOptions::default())
                .map_err(|e| BuildError::Io(format!("push {name}: {e}")))?;
            if top.digest != desc.digest {
                return Err(BuildError::Io(format!(
                    "push {name}: the registry got {} instead of the built {}",
                    top.digest, desc.digest
                )));
            }
            eprintln!("pushed {name}@{}", top.digest);
        }
        Ok(desc)
    }
}

/// Pulls a base image for one platform into the store, tagged with its
/// name; each (name, platform) at most once per build. With a `lazy`
/// session, only its manifest and config are fetched (untagged), its
/// layers left to the session's remote layers (see `crate::lazy`).
pub fn base_fetcher(lazy: Option<Arc<CacheSession>>) -> Result<crate::FetchBase, BuildError> {
    use std::collections::BTreeMap;
    use std::sync::Mutex;
    let client = Client::new(ClientConfig::default()).map_err(registry_error("registry client"))?;
    let pulled: Mutex<BTreeMap<String, Option<Digest>>> = Mutex::new(BTreeMap::new());
    Ok(Box::new(
        move |store: &Store, reference: &str, platform: &Platform| {
            let key = format!("{reference} {platform}");
            if let Some(done) = pulled.lock().map_err(|e| e.to_string())?.get(&key) {
                return Ok(done.clone());
            }
            let r = Reference::parse(reference).map_err(|e| e.to_string())?;
            let opts = CopyOptions {
                platform: Some(platform.clone()),
                ..CopyOptions::default()
            };
            let src = Arc::new(RegistrySource::new(&client, r.clone()));
            let done = match &lazy {
                Some(session) => {
                    let sink = crate::lazy::LazyBaseSink {
                        store,
                        layers: session.layers(),
                        source: src.clone(),
                        name: r.clone(),
                    };
                    let top =
                        transport::copy(src.as_ref(), &sink, &opts).map_err(|e| e.to_string())?;
                    session.add_lazy_base(&r, &top.descriptor(), platform);
                    eprintln!(
                        "pulled {r} for {platform}: {} (manifest and config; layers when needed)",
                        top.digest
                    );
                    Some(top.digest)
                }
                None => {
                    let top = transport::copy(
                        src.as_ref(),
                        &StoreSink::new(store, Some(r.clone())),
                        &opts,
                    )
                    .map_err(|e| e.to_string())?;
                    eprintln!("pulled {r} for {platform}: {}", top.digest);
                    None
                }
            };
            pulled
                .lock()
                .map_err(|e| e.to_string())?
                .insert(key, done.clone());
            Ok(done)
        },
    ))
}

fn registry_error(what: &'static str) -> impl FnOnce(kiln_registry::RegistryError) -> BuildError {
    move |e| BuildError::Io(format!("{what}: {e}"))
}

/// A `compression=` value of `-o` or `--cache-to`, as buildx spells it.
pub(crate) fn compression_named(v: &str) -> Result<Compression, String> {
    match v {
        "gzip" => Ok(Compression::Gzip),
        "zstd" => Ok(Compression::Zstd),
        "uncompressed" => Ok(Compression::None),
        _ => Err(format!(
            "compression={v}: expected gzip, zstd or uncompressed"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outputs_parse_as_buildx_names_them() {
        let o = Output::parse("type=oci,dest=out.tar,compression=zstd").unwrap();
        assert_eq!(
            o.kind,
            OutputKind::Oci {
                dest: "out.tar".into()
            }
        );
        assert_eq!(o.compression(), Compression::Zstd);
        assert!(o.leaves());
        let r = Output::parse("type=registry,name=a/b:1;a/c:2").unwrap();
        assert_eq!((r.kind.clone(), r.push), (OutputKind::Image, true));
        assert_eq!(r.names, ["a/b:1", "a/c:2"]);
        assert_eq!(
            Output::parse("local").unwrap_err().to_string(),
            "--output \"local\": type=local needs dest="
        );
        assert!(Output::parse("type=tar,dest=x,push=true").is_err());
        assert!(Output::parse("type=nope").is_err());
        assert!(Output::parse("type=oci,dest=x,colour=blue").is_err());
        assert!(!Output::parse("type=local,dest=d").unwrap().leaves());
    }

    #[test]
    fn archives_take_their_exporters_media_types() {
        let fmt = |spec: &str, default| archive_format(&Output::parse(spec).unwrap(), default);
        assert_eq!(fmt("type=oci,dest=x", Format::Oci), Format::Oci);
        assert_eq!(fmt("type=docker,dest=x", Format::Docker), Format::Docker);
        assert_eq!(
            fmt("type=docker,dest=x,oci-mediatypes=true", Format::Docker),
            Format::Oci
        );
        assert_eq!(
            fmt("type=oci,dest=x,oci-mediatypes=false", Format::Oci),
            Format::Docker
        );
        assert_eq!(
            fmt("type=docker,dest=x,compression=zstd", Format::Docker),
            Format::Oci
        );
    }

    #[test]
    fn a_push_needs_a_name() {
        let o = Output::parse("type=registry").unwrap();
        assert!(Push::plan(&o, &[]).is_err());
        let p = Push::plan(&o, &["localhost:5000/x:1".into()]).unwrap();
        assert_eq!(p.names[0].to_string(), "localhost:5000/x:1");
    }
}
