//! `--annotation`: buildx's `[TYPE[,TYPE…][\[PLATFORM\]]:]KEY=VALUE`,
//! written into the built image's manifest.
//!
//! kiln builds one platform into one manifest, without an index, so only
//! `manifest` annotations (the default type) have somewhere to go; `index`
//! and `index-descriptor` get BuildKit's own refusal for a single-platform
//! export, and `manifest-descriptor` (which would live in an index too) is
//! refused as not supported yet. An annotation for another platform
//! (`manifest[linux/arm64]:k=v`) does not apply to this build, as in
//! BuildKit, which gives each platform only its own.

use std::collections::BTreeMap;

use kiln_image::{AnyManifest, Platform, Store};

use crate::{BuildError, BuildResult};

/// The manifest annotations of `specs` that apply to `platform`.
pub fn manifest_annotations(
    specs: &[String],
    platform: &Platform,
) -> Result<BTreeMap<String, String>, BuildError> {
    let mut out = BTreeMap::new();
    for spec in specs {
        let usage = |why: &str| BuildError::Usage(format!("--annotation {spec:?}: {why}"));
        let (head, value) = spec
            .split_once('=')
            .ok_or_else(|| usage("expected KEY=VALUE"))?;
        let (types, key) = match head.split_once(':') {
            Some((types, key)) if is_type_list(types) => (types, key),
            _ => ("manifest", head),
        };
        if key.is_empty() {
            return Err(usage("expected KEY=VALUE"));
        }
        let (types, only_for) = match types.split_once('[') {
            Some((t, p)) => {
                let p = p.strip_suffix(']').ok_or_else(|| usage("unclosed ["))?;
                let p = Platform::parse(p).map_err(|e| usage(&e.to_string()))?;
                (t, Some(p))
            }
            None => (types, None),
        };
        let mut to_manifest = false;
        for t in types.split(',') {
            match t {
                "manifest" => to_manifest = true,
                "index" | "index-descriptor" => {
                    return Err(usage(
                        "index annotations not supported for single platform export",
                    ));
                }
                "manifest-descriptor" => {
                    return Err(usage(
                        "manifest-descriptor annotations are not supported yet (kiln writes no index)",
                    ));
                }
                other => return Err(usage(&format!("unknown annotation type {other:?}"))),
            }
        }
        if to_manifest && only_for.is_none_or(|p| platform.satisfies(&p)) {
            out.insert(key.to_string(), value.to_string());
        }
    }
    Ok(out)
}

/// `manifest`, `index,manifest`, `manifest[linux/amd64]`: a type prefix,
/// not part of a key such as `org.example:key` (which has no such word).
fn is_type_list(s: &str) -> bool {
    let types = s.split('[').next().unwrap_or_default();
    types.split(',').all(|t| {
        matches!(
            t,
            "manifest" | "index" | "manifest-descriptor" | "index-descriptor"
        )
    })
}

/// The annotation keys that name the image a build started from, as
/// BuildKit writes them; `kiln rebase` without `--old-base`/`--new-base`
/// reads them.
pub const BASE_NAME: &str = "org.opencontainers.image.base.name";
pub const BASE_DIGEST: &str = "org.opencontainers.image.base.digest";

/// `annotations` and the base image's name (normalized, as BuildKit
/// writes it) and manifest digest, unless the user set those keys.
pub fn with_base(
    annotations: &BTreeMap<String, String>,
    base: Option<&(String, String)>,
) -> BTreeMap<String, String> {
    let mut out = annotations.clone();
    if let Some((reference, digest)) = base {
        let name = kiln_image::Reference::parse(reference)
            .map_or_else(|_| reference.clone(), |r| r.to_string());
        out.entry(BASE_NAME.to_string()).or_insert(name);
        out.entry(BASE_DIGEST.to_string())
            .or_insert_with(|| digest.clone());
    }
    out
}

/// Writes `result`'s manifest anew with `annotations` (its config, and so
/// the image ID, stay the same) and makes it the result's manifest, which
/// the store's names, archives and pushes then carry.
pub fn annotate(
    store: &Store,
    result: &mut BuildResult,
    annotations: &BTreeMap<String, String>,
) -> Result<(), BuildError> {
    if annotations.is_empty() {
        return Ok(());
    }
    let (_, raw) = result.image.encode(annotations)?;
    store.put_blob(&raw.bytes)?;
    result.manifest = raw;
    Ok(())
}

/// The annotations a stored manifest carries (none for an index).
pub fn annotations_of(store: &Store, manifest: &kiln_image::Digest) -> BTreeMap<String, String> {
    match store
        .read_blob(manifest)
        .ok()
        .and_then(|b| AnyManifest::parse(None, &b).ok())
    {
        Some(AnyManifest::Manifest(m)) => m.annotations,
        _ => BTreeMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amd64() -> Platform {
        Platform::parse("linux/amd64").unwrap()
    }

    #[test]
    fn default_and_manifest_types_go_to_the_manifest() {
        let specs = [
            "org.opencontainers.image.title=app".to_string(),
            "manifest:a=1".to_string(),
            "manifest[linux/amd64]:b=2".to_string(),
            "manifest[linux/arm64]:c=3".to_string(),
            "x=y=z".to_string(),
        ];
        let got = manifest_annotations(&specs, &amd64()).unwrap();
        let want: BTreeMap<String, String> = [
            ("org.opencontainers.image.title", "app"),
            ("a", "1"),
            ("b", "2"),
            ("x", "y=z"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn index_types_are_refused_for_one_platform() {
        for s in ["index:a=1", "manifest,index:a=1", "index-descriptor:a=1"] {
            let e = manifest_annotations(&[s.to_string()], &amd64()).unwrap_err();
            assert!(
                e.to_string()
                    .contains("index annotations not supported for single platform export"),
                "{s}: {e}"
            );
        }
        assert!(manifest_annotations(&["novalue".into()], &amd64()).is_err());
        assert!(manifest_annotations(&["manifest:=v".into()], &amd64()).is_err());
    }

    #[test]
    fn a_colon_in_a_key_is_not_a_type() {
        let got = manifest_annotations(&["org.example:key=v".into()], &amd64()).unwrap();
        assert_eq!(got.get("org.example:key").map(String::as_str), Some("v"));
    }
}
