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
    /// `type=inline` (`--cache-to` only): the entries go into the built
    /// image's own config (see `crate::export::inline`); a later
    /// `--cache-from` names that image as a registry cache.
    Inline,
}

impl std::fmt::Display for CacheLocation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CacheLocation::Registry { reference, .. } => write!(f, "{reference}"),
            CacheLocation::Local { dir, tag } => write!(f, "{}:{tag}", dir.display()),
            CacheLocation::Inline => write!(f, "inline"),
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
    /// `mounts=true`: the build's cache mounts go too (see
    /// `export::cache::mounts`).
    pub mounts: bool,
    /// `mounts-max-size=SIZE`: a cache mount whose files add up to more
    /// is left out, with a warning ([`super::DEFAULT_MOUNTS_MAX_SIZE`]
    /// unless said).
    pub mounts_max_size: u64,
}

/// One `--cache-from`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheFrom {
    pub location: CacheLocation,
    /// `ignore-error=false` makes a cache that cannot be used fail the
    /// build; by default it is a warning, as buildx's.
    pub ignore_error: bool,
    /// Restore the cache mounts the cache carries (`mounts=false` does
    /// not).
    pub mounts: bool,
}

/// What a `--cache-to`/`--cache-from` spec says, before its direction's
/// own checks. `Ok(None)`: a kind kiln does not do yet (the caller warns).
struct Spec {
    location: CacheLocation,
    mode: Option<CacheMode>,
    compression: Option<Compression>,
    ignore_error: Option<bool>,
    mounts: Option<bool>,
    mounts_max_size: Option<u64>,
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
            mounts: None,
            mounts_max_size: None,
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
        mounts: None,
        mounts_max_size: None,
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
            "mounts" => out.mounts = Some(bool_of(k, v)?),
            "mounts-max-size" => out.mounts_max_size = Some(parse_size(v).map_err(usage)?),
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
        // Only the image's own layers can be named, so there is no
        // mode=max, and they travel as the image's outputs compress them.
        "inline" if dir_key == "dest" => {
            if out.mode == Some(CacheMode::Max) {
                return Err(usage(
                    "type=inline holds the image's own layers only: mode=max needs type=registry or type=local".into(),
                ));
            }
            if out.compression.is_some() {
                return Err(usage(
                    "type=inline layers are the image's: compression= is the output's".into(),
                ));
            }
            CacheLocation::Inline
        }
        "inline" => {
            return Err(usage(
                "type=inline is for --cache-to; import the image itself: --cache-from IMAGE".into(),
            ));
        }
        "gha" | "s3" | "azblob" => return Ok(None),
        other => {
            return Err(usage(format!("type={other}: expected registry or local")));
        }
    };
    Ok(Some(out))
}

/// `SIZE`: bytes, or a number with `k`, `m`, `g` or `t` (1024-based, as
/// docker's sizes; `kb`, `kib` … and any case are the same).
fn parse_size(v: &str) -> Result<u64, String> {
    let bad = || format!("mounts-max-size={v}: expected a size such as 512m or 2g");
    let lower = v.trim().to_ascii_lowercase();
    let digits = lower
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(lower.len());
    let (n, unit) = lower.split_at(digits);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let shift = match unit.trim_end_matches("ib").trim_end_matches('b') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(bad()),
    };
    n.checked_mul(1 << shift).ok_or_else(bad)
}

impl CacheTo {
    /// Parses a `--cache-to` value; `Ok(None)` for a kind kiln does not
    /// export yet (the cloud caches).
    pub fn parse(spec: &str) -> Result<Option<CacheTo>, BuildError> {
        Ok(parse_spec("--cache-to", spec, "dest")?.map(|s| CacheTo {
            location: s.location,
            mode: s.mode.unwrap_or(CacheMode::Min),
            compression: s.compression.unwrap_or(Compression::Gzip),
            ignore_error: s.ignore_error.unwrap_or(false),
            mounts: s.mounts.unwrap_or(false),
            mounts_max_size: s
                .mounts_max_size
                .unwrap_or(super::mounts::DEFAULT_MOUNTS_MAX_SIZE),
        }))
    }
}

impl CacheFrom {
    /// Parses a `--cache-from` value; `Ok(None)` as [`CacheTo::parse`].
    pub fn parse(spec: &str) -> Result<Option<CacheFrom>, BuildError> {
        let s = parse_spec("--cache-from", spec, "src")?;
        if let Some(Spec {
            mode,
            compression,
            mounts_max_size,
            ..
        }) = &s
            && (mode.is_some() || compression.is_some() || mounts_max_size.is_some())
        {
            return Err(BuildError::Usage(format!(
                "--cache-from {spec:?}: mode=, compression= and mounts-max-size= are for --cache-to"
            )));
        }
        Ok(s.map(|s| CacheFrom {
            location: s.location,
            ignore_error: s.ignore_error.unwrap_or(true),
            mounts: s.mounts.unwrap_or(true),
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
        let inline = CacheTo::parse("type=inline").unwrap().unwrap();
        assert_eq!(
            (inline.location, inline.mode),
            (CacheLocation::Inline, CacheMode::Min)
        );
        assert!(CacheTo::parse("type=gha").unwrap().is_none());
        for bad in [
            "type=registry",
            "type=local,src=/x",
            "type=registry,ref=a/b,mode=most",
            "type=registry,ref=a/b,colour=blue",
            "type=nope,ref=a/b",
            "type=inline,mode=max",
            "type=inline,compression=zstd",
            "type=inline,ref=a/b",
        ] {
            assert!(CacheTo::parse(bad).is_err(), "{bad}");
        }
        assert!(CacheFrom::parse("type=local,dest=/x").is_err());
        assert!(CacheFrom::parse("type=registry,ref=a/b,mode=max").is_err());
        let e = CacheFrom::parse("type=inline").unwrap_err().to_string();
        assert!(e.contains("--cache-from IMAGE"), "{e}");
    }

    #[test]
    fn mounts_and_their_bound_parse() {
        let to = CacheTo::parse("type=registry,ref=a/b").unwrap().unwrap();
        assert!(!to.mounts);
        assert_eq!(to.mounts_max_size, 1 << 30);
        for (spec, size) in [
            ("100", 100),
            ("2k", 2048),
            ("512m", 512 << 20),
            ("512MiB", 512 << 20),
            ("3G", 3 << 30),
            ("1gb", 1 << 30),
        ] {
            let to = CacheTo::parse(&format!("ref=a/b,mounts=true,mounts-max-size={spec}"))
                .unwrap()
                .unwrap();
            assert!(to.mounts);
            assert_eq!(to.mounts_max_size, size, "{spec}");
        }
        for bad in ["", "x", "1q", "-1", "99999999999t", "1.5g"] {
            let spec = format!("ref=a/b,mounts-max-size={bad}");
            assert!(CacheTo::parse(&spec).is_err(), "{spec}");
        }
        assert!(CacheTo::parse("ref=a/b,mounts=yes").is_err());
        assert!(CacheFrom::parse("ref=a/b").unwrap().unwrap().mounts);
        assert!(
            !CacheFrom::parse("ref=a/b,mounts=false")
                .unwrap()
                .unwrap()
                .mounts
        );
        assert!(CacheFrom::parse("ref=a/b,mounts-max-size=1g").is_err());
    }
}
