//! A `Packages` index: the binary packages of one suite, component and
//! architecture, with what the resolver needs (dependencies, `Provides`,
//! `Essential`) and what the download needs (path, size, SHA-256).

use std::collections::BTreeMap;

use crate::control::{self, Paragraph};
use crate::version::{self, Relation};

/// One binary package as the index lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub architecture: String,
    /// Path under the mirror root (`pool/main/…/x.deb`).
    pub filename: String,
    pub size: u64,
    pub sha256: String,
    pub depends: Vec<Alternatives>,
    pub pre_depends: Vec<Alternatives>,
    pub provides: Vec<Dep>,
    /// `Conflicts` and `Breaks` (each flattened: no alternatives there):
    /// two chosen packages that name each other here cannot be installed
    /// together, which dpkg would refuse.
    pub conflicts: Vec<Dep>,
    pub breaks: Vec<Dep>,
    pub essential: bool,
    /// `Priority`: 0 required, 1 important, 2 standard, 3 optional, 4 extra
    /// or unknown. Among providers of a virtual package the most important
    /// wins, as apt chooses (`awk` is mawk, not gawk).
    pub priority: u8,
}

/// One dependency: a name and an optional version relation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dep {
    pub name: String,
    pub relation: Option<(Relation, String)>,
}

impl std::fmt::Display for Dep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.relation {
            Some((r, v)) => write!(f, "{} ({} {v})", self.name, r.as_str()),
            None => f.write_str(&self.name),
        }
    }
}

/// `a | b | c`: any one satisfies the dependency.
pub type Alternatives = Vec<Dep>;

/// Parses a `Depends`-style field. Architecture qualifiers (`:any`,
/// `:native`) are dropped (one architecture per build); `[arch]` and
/// `<profile>` restrictions do not occur in binary indexes and are ignored.
pub fn parse_deps(field: &str) -> Result<Vec<Alternatives>, String> {
    let mut out = Vec::new();
    for group in field.split(',') {
        let group = group.trim();
        if group.is_empty() {
            continue;
        }
        let mut alts = Vec::new();
        for one in group.split('|') {
            let one = one.trim();
            let (name_part, rel) = match one.split_once('(') {
                Some((n, r)) => {
                    let r = r
                        .split_once(')')
                        .ok_or_else(|| format!("{one:?}: unclosed ("))?
                        .0
                        .trim();
                    let split = r
                        .find(|c: char| !matches!(c, '<' | '>' | '='))
                        .ok_or_else(|| format!("{one:?}: relation without a version"))?;
                    let (op, v) = r.split_at(split);
                    let op = Relation::parse(op.trim())
                        .ok_or_else(|| format!("{one:?}: unknown relation {op:?}"))?;
                    (n, Some((op, v.trim().to_string())))
                }
                None => (one, None),
            };
            let name = name_part
                .split(['[', '<'])
                .next()
                .unwrap_or("")
                .trim()
                .split(':')
                .next()
                .unwrap_or("")
                .to_string();
            if name.is_empty() {
                return Err(format!("{group:?}: empty package name"));
            }
            alts.push(Dep {
                name,
                relation: rel,
            });
        }
        out.push(alts);
    }
    Ok(out)
}

/// The packages of an index, by name.
#[derive(Debug, Default)]
pub struct Index {
    pub packages: BTreeMap<String, Vec<Package>>,
    /// Virtual name → (providing package, provided version).
    pub providers: BTreeMap<String, Vec<(String, Option<String>)>>,
}

impl Index {
    /// Parses a `Packages` file, keeping packages for `arch` and `all`.
    pub fn parse(text: &str, arch: &str) -> Result<Index, String> {
        let mut index = Index::default();
        for p in control::parse(text)? {
            let a = p.get("Architecture").unwrap_or("");
            if a != arch && a != "all" {
                continue;
            }
            index.add(package_of(&p)?);
        }
        Ok(index)
    }

    pub fn add(&mut self, pkg: Package) {
        for p in &pkg.provides {
            let v = p.relation.as_ref().map(|(_, v)| v.clone());
            self.providers
                .entry(p.name.clone())
                .or_default()
                .push((pkg.name.clone(), v));
        }
        let list = self.packages.entry(pkg.name.clone()).or_default();
        list.push(pkg);
        // Newest first: the resolver takes the first that fits.
        list.sort_by(|a, b| version::compare(&b.version, &a.version));
    }

    /// Adds every package of `other` (another component's index).
    pub fn merge(&mut self, other: Index) {
        for (_, list) in other.packages {
            for p in list {
                self.add(p);
            }
        }
    }

    /// The newest version of `name` (a real package).
    pub fn newest(&self, name: &str) -> Option<&Package> {
        self.packages.get(name).and_then(|l| l.first())
    }
}

fn package_of(p: &Paragraph) -> Result<Package, String> {
    let name = p.get("Package").ok_or("a paragraph without Package")?;
    let field = |f: &str| -> Result<&str, String> {
        p.get(f)
            .ok_or_else(|| format!("package {name}: no {f} field"))
    };
    let deps = |f: &str| -> Result<Vec<Alternatives>, String> {
        parse_deps(p.get(f).unwrap_or("")).map_err(|e| format!("package {name}: {f}: {e}"))
    };
    Ok(Package {
        name: name.to_string(),
        version: field("Version")?.to_string(),
        architecture: field("Architecture")?.to_string(),
        filename: field("Filename")?.to_string(),
        size: field("Size")?
            .parse()
            .map_err(|_| format!("package {name}: bad Size"))?,
        sha256: field("SHA256")?.to_ascii_lowercase(),
        depends: deps("Depends")?,
        pre_depends: deps("Pre-Depends")?,
        provides: deps("Provides")?.into_iter().flatten().collect(),
        conflicts: deps("Conflicts")?.into_iter().flatten().collect(),
        breaks: deps("Breaks")?.into_iter().flatten().collect(),
        essential: p.get("Essential") == Some("yes"),
        priority: match p.get("Priority") {
            Some("required") => 0,
            Some("important") => 1,
            Some("standard") => 2,
            Some("optional") => 3,
            _ => 4,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dependency_fields() {
        let d = parse_deps("libc6 (>= 2.34), python3:any | python3-minimal (>>3.11~), foo [amd64]")
            .unwrap();
        assert_eq!(d.len(), 3);
        assert_eq!(d[0][0].to_string(), "libc6 (>= 2.34)");
        assert_eq!(d[1][0].name, "python3");
        assert_eq!(d[1][1].to_string(), "python3-minimal (>> 3.11~)");
        assert_eq!(d[2][0].name, "foo");
        assert!(parse_deps("a (>= 1").is_err());
        assert!(parse_deps("a (~~ 1)").is_err());
    }
}
