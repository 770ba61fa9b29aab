//! `--cache-to` / `--cache-from` values in buildx's syntax, parsed into
//! what [`super`] exports to and imports from.

use std::collections::BTreeMap;
use std::path::PathBuf;

use kiln_image::Reference;
use kiln_image::media::Compression;

use crate::BuildError;

/// Where a cache is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLocation {
    /// `type=registry,ref=…`; `registry.insecure=true` allows plain HTTP
    /// or an unverified certificate (loopback registries may use HTTP
    /// anyway).
    Registry {
        reference: Reference,
        insecure: bool,
    },
    /// `type=local`: an OCI layout directory, the cache under `tag`.
    Local { dir: PathBuf, tag: String },
}

impl std::fmt::Display for CacheLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheLocation::Registry { reference, .. } => write!(f, "{reference}"),
            CacheLocation::Local { dir, tag } => write!(f, "{}:{tag}", dir.display()),
        }
    }
}

/// `mode=`: which entries `--cache-to` exports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheMode {
    /// The layers of the output image (buildx's default).
    Min,
    /// Every step of every stage the build ran or found.
    Max,
}

/// One `--cache-to`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheTo {
    pub location: CacheLocation,
    pub mode: CacheMode,
    /// `compression=`: how the layers travel (gzip unless said).
    pub compression: Compression,
    /// `ignore-error=true`: a failed export is a warning, not a failure.
    pub ignore_error: bool,
}

/// One `--cache-from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheFrom {
    pub location: CacheLocation,
    /// `ignore-error=false` makes a cache that cannot be used fail the
    /// build; by default it is a warning, as buildx's.
    pub ignore_error: bool,
}

/// What a `--cache-to`/`--cache-from` spec says, before its direction's
/// own checks. `Ok(None)`: a kind kiln does not do yet (the caller warns).
struct Spec {
    location: CacheLocation,
    mode: Option<CacheMode>,
    compression: Option<Compression>,
    ignore_error: Option<bool>,
}

fn parse_spec(flag: &str, spec: &str, dir_key: &str) -> Result<Option<Spec>, BuildError> {
    let usage = |msg: String| BuildError::Usage(format!("{flag} {spec:?}: {msg}"));
    // As buildx: a bare reference is a registry cache.
    if !spec.contains('=') {
        let reference = Reference::parse(spec).map_err(|e| usage(e.to_string()))?;
        return Ok(Some(Spec {
            location: CacheLocation::Registry {
                reference,
                insecure: false,
            },
            mode: None,
            compression: None,
            ignore_error: None,
        }));
    }
    let mut fields = BTreeMap::new();
    for part in spec.split(',') {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| usage(format!("{part:?} is not KEY=VALUE")))?;
        fields.insert(k, v);
    }
    let bool_of = |k: &str, v: &str| match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(usage(format!("{k}={v}: expected true or false"))),
    };
    let mut out = Spec {
        location: CacheLocation::Local {
            dir: PathBuf::new(),
            tag: String::new(),
        },
        mode: None,
        compression: None,
        ignore_error: None,
    };
    let kind = fields.remove("type").unwrap_or("registry");
    let mut insecure = false;
    let mut reference = None;
    let mut dir = None;
    let mut tag = "latest".to_string();
    for (k, v) in fields {
        match k {
            "ref" if kind == "registry" => {
                reference = Some(Reference::parse(v).map_err(|e| usage(e.to_string()))?)
            }
            "registry.insecure" => insecure = bool_of(k, v)?,
            "tag" if kind == "local" => tag = v.to_string(),
            k if k == dir_key && kind == "local" => dir = Some(PathBuf::from(v)),
            "mode" => {
                out.mode = Some(match v {
                    "min" => CacheMode::Min,
                    "max" => CacheMode::Max,
                    _ => return Err(usage(format!("mode={v}: expected min or max"))),
                })
            }
            "ignore-error" => out.ignore_error = Some(bool_of(k, v)?),
            "compression" => {
                out.compression = Some(crate::export::compression_named(v).map_err(usage)?);
            }
            // A cache is always an OCI image manifest, compressed once per
            // layer at the default level.
            "compression-level" | "force-compression" | "oci-mediatypes" | "image-manifest" => {}
            _ => return Err(usage(format!("unknown key {k:?} for type={kind}"))),
        }
    }
    out.location = match kind {
        "registry" => CacheLocation::Registry {
            reference: reference.ok_or_else(|| usage("type=registry needs ref=".into()))?,
            insecure,
        },
        "local" => CacheLocation::Local {
            dir: dir.ok_or_else(|| usage(format!("type=local needs {dir_key}=")))?,
            tag,
        },
        "inline" | "gha" | "s3" | "azblob" => return Ok(None),
        other => {
            return Err(usage(format!("type={other}: expected registry or local")));
        }
    };
    Ok(Some(out))
}

impl CacheTo {
    /// Parses a `--cache-to` value; `Ok(None)` for a kind kiln does not
    /// export yet (`inline`, the cloud caches).
    pub fn parse(spec: &str) -> Result<Option<CacheTo>, BuildError> {
        Ok(parse_spec("--cache-to", spec, "dest")?.map(|s| CacheTo {
            location: s.location,
            mode: s.mode.unwrap_or(CacheMode::Min),
            compression: s.compression.unwrap_or(Compression::Gzip),
            ignore_error: s.ignore_error.unwrap_or(false),
        }))
    }
}

impl CacheFrom {
    /// Parses a `--cache-from` value; `Ok(None)` as [`CacheTo::parse`].
    pub fn parse(spec: &str) -> Result<Option<CacheFrom>, BuildError> {
        let s = parse_spec("--cache-from", spec, "src")?;
        if let Some(Spec {
            mode, compression, ..
        }) = &s
            && (mode.is_some() || compression.is_some())
        {
            return Err(BuildError::Usage(format!(
                "--cache-from {spec:?}: mode= and compression= are for --cache-to"
            )));
        }
        Ok(s.map(|s| CacheFrom {
            location: s.location,
            ignore_error: s.ignore_error.unwrap_or(true),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_as_buildx_writes_them() {
        let to = CacheTo::parse("type=registry,ref=localhost:5000/c:1,mode=max,ignore-error=true")
            .unwrap()
            .unwrap();
        assert_eq!(to.mode, CacheMode::Max);
        assert!(to.ignore_error);
        assert_eq!(to.location.to_string(), "localhost:5000/c:1");
        let to = CacheTo::parse("type=local,dest=/tmp/c").unwrap().unwrap();
        assert_eq!((to.mode, to.ignore_error), (CacheMode::Min, false));
        let from = CacheFrom::parse("localhost:5000/c:1").unwrap().unwrap();
        assert!(from.ignore_error);
        let from = CacheFrom::parse("type=local,src=/tmp/c,tag=x")
            .unwrap()
            .unwrap();
        assert_eq!(from.location.to_string(), "/tmp/c:x");
        assert!(CacheTo::parse("type=inline").unwrap().is_none());
        for bad in [
            "type=registry",
            "type=local,src=/x",
            "type=registry,ref=a/b,mode=most",
            "type=registry,ref=a/b,colour=blue",
            "type=nope,ref=a/b",
        ] {
            assert!(CacheTo::parse(bad).is_err(), "{bad}");
        }
        assert!(CacheFrom::parse("type=local,dest=/x").is_err());
        assert!(CacheFrom::parse("type=registry,ref=a/b,mode=max").is_err());
    }
}
