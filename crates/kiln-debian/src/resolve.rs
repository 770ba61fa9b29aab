//! Dependency resolution: from the names asked for to the closed set of
//! packages they need through `Pre-Depends` and `Depends` (alternatives
//! in order, virtual packages through `Provides`, version relations;
//! `Essential: yes` packages only when asked).
//!
//! One version per package (an image has one dpkg database), the newest
//! that fits; an alternative or provider already chosen is preferred, then
//! the provider with the most important `Priority`.
//! Names in `exclude` count as installed without being installed (what
//! distroless leaves out: dpkg, a shell, an awk for base-files' script).
//! `Conflicts` and `Breaks` among the chosen packages are refused with an
//! error naming both (dpkg would refuse to install them together; the
//! resolver does not search for another set, as apt might: the user
//! changes the list). `Recommends` is not followed: distroless images are
//! small on purpose, and what they list is a deliberate choice.

use std::collections::BTreeMap;

use crate::DebianError;
use crate::index::{Alternatives, Dep, Index, Package};

/// Resolves `roots` against `index`. The result is sorted by name.
pub fn resolve(
    index: &Index,
    roots: &[String],
    essential: bool,
    exclude: &[String],
) -> Result<Vec<Package>, DebianError> {
    if let Some(both) = roots.iter().find(|r| exclude.contains(r)) {
        return Err(DebianError::Invalid(format!(
            "{both:?} is both asked for and excluded"
        )));
    }
    let mut work: Vec<(Alternatives, Vec<String>)> = Vec::new();
    let mut names: Vec<String> = roots.to_vec();
    if essential {
        for list in index.packages.values() {
            if let Some(p) = list
                .first()
                .filter(|p| p.essential && !exclude.contains(&p.name))
            {
                names.push(p.name.clone());
            }
        }
    }
    for name in names.iter().rev() {
        if !index.packages.contains_key(name) && !index.providers.contains_key(name) {
            return Err(DebianError::UnknownPackage {
                name: name.clone(),
                suggestions: suggestions(index, name),
            });
        }
        work.push((
            vec![Dep {
                name: name.clone(),
                relation: None,
            }],
            Vec::new(),
        ));
    }
    let mut selected: BTreeMap<String, Package> = BTreeMap::new();
    while let Some((alts, chain)) = work.pop() {
        if alts
            .iter()
            .any(|d| excluded(index, exclude, d) || satisfied(&selected, d))
        {
            continue;
        }
        let Some(pkg) = alts.iter().find_map(|d| candidate(index, &selected, d)) else {
            return Err(DebianError::Unsatisfiable {
                dependency: alts
                    .iter()
                    .map(Dep::to_string)
                    .collect::<Vec<_>>()
                    .join(" | "),
                chain,
                why: alts
                    .iter()
                    .map(|d| why_not(index, &selected, d))
                    .collect::<Vec<_>>()
                    .join("; "),
            });
        };
        let mut next = chain.clone();
        next.push(format!("{} {}", pkg.name, pkg.version));
        // Pushed in reverse so the first dependency is looked at first.
        for d in pkg.pre_depends.iter().chain(&pkg.depends).rev() {
            work.push((d.clone(), next.clone()));
        }
        selected.insert(pkg.name.clone(), pkg.clone());
    }
    check_conflicts(&selected)?;
    Ok(selected.into_values().collect())
}

/// Refuses a chosen set in which one package `Conflicts` with or `Breaks`
/// another (by name and version, or through what the other provides).
/// A package's relation to a name it provides itself is Debian's idiom
/// for "only one provider" and names no one else.
fn check_conflicts(selected: &BTreeMap<String, Package>) -> Result<(), DebianError> {
    for p in selected.values() {
        let relations = p
            .conflicts
            .iter()
            .map(|d| ("Conflicts", d))
            .chain(p.breaks.iter().map(|d| ("Breaks", d)));
        for (field, dep) in relations {
            for q in selected.values().filter(|q| q.name != p.name) {
                let hit = (q.name == dep.name && fits(&q.version, dep))
                    || q.provides.iter().any(|pr| {
                        pr.name == dep.name
                            && match (&dep.relation, &pr.relation) {
                                (None, _) => true,
                                (Some(_), Some((_, v))) => fits(v, dep),
                                (Some(_), None) => false,
                            }
                    });
                if hit {
                    return Err(DebianError::Conflict {
                        package: format!("{} {}", p.name, p.version),
                        field: field.into(),
                        relation: dep.to_string(),
                        other: format!("{} {}", q.name, q.version),
                    });
                }
            }
        }
    }
    Ok(())
}

/// Whether `dep` names an excluded package, or a virtual one an excluded
/// package provides (excluding `mawk` drops the `awk` it stands for).
fn excluded(index: &Index, exclude: &[String], dep: &Dep) -> bool {
    exclude.contains(&dep.name)
        || index
            .providers
            .get(&dep.name)
            .is_some_and(|ps| ps.iter().any(|(p, _)| exclude.contains(p)))
}

fn fits(version: &str, dep: &Dep) -> bool {
    dep.relation
        .as_ref()
        .is_none_or(|(r, want)| r.holds(version, want))
}

/// Whether a chosen package (or what it provides) satisfies `dep`.
fn satisfied(selected: &BTreeMap<String, Package>, dep: &Dep) -> bool {
    if selected
        .get(&dep.name)
        .is_some_and(|p| fits(&p.version, dep))
    {
        return true;
    }
    selected.values().any(|p| {
        p.provides.iter().any(|pr| {
            pr.name == dep.name
                && match (&dep.relation, &pr.relation) {
                    (None, _) => true,
                    // A versioned dependency needs a versioned Provides.
                    (Some(_), Some((_, v))) => fits(v, dep),
                    (Some(_), None) => false,
                }
        })
    })
}

/// The package to choose for `dep`, if any fits with what is chosen.
fn candidate<'a>(
    index: &'a Index,
    selected: &BTreeMap<String, Package>,
    dep: &Dep,
) -> Option<&'a Package> {
    let free = |p: &&Package| !selected.contains_key(&p.name);
    if let Some(p) = index
        .packages
        .get(&dep.name)
        .and_then(|l| l.iter().filter(free).find(|p| fits(&p.version, dep)))
    {
        return Some(p);
    }
    let providers = index.providers.get(&dep.name)?;
    providers
        .iter()
        .filter(|(_, v)| match (&dep.relation, v) {
            (None, _) => true,
            (Some(_), Some(v)) => fits(v, dep),
            (Some(_), None) => false,
        })
        .filter_map(|(name, _)| index.newest(name))
        .filter(free)
        .min_by(|a, b| (a.priority, &a.name).cmp(&(b.priority, &b.name)))
}

fn why_not(index: &Index, selected: &BTreeMap<String, Package>, dep: &Dep) -> String {
    if let Some(p) = selected.get(&dep.name) {
        return format!("{} {} is already chosen", p.name, p.version);
    }
    match index.packages.get(&dep.name) {
        Some(list) => format!(
            "the mirror has {} {}",
            dep.name,
            list.iter()
                .map(|p| p.version.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        None if index.providers.contains_key(&dep.name) => {
            format!("no provider of {} fits", dep.name)
        }
        None => format!("no package {} on the mirror", dep.name),
    }
}

/// Up to five names close to `name`: by edit distance, then those that
/// contain it.
pub fn suggestions(index: &Index, name: &str) -> Vec<String> {
    let mut scored: Vec<(usize, &String)> = index
        .packages
        .keys()
        .chain(index.providers.keys())
        .filter_map(|n| {
            let d = edit_distance(n, name);
            if d <= 2.max(name.len() / 4) {
                Some((d, n))
            } else if n.contains(name) || (name.len() > 3 && name.contains(n.as_str())) {
                Some((10 + n.len().abs_diff(name.len()), n))
            } else {
                None
            }
        })
        .collect();
    scored.sort();
    scored.dedup_by(|a, b| a.1 == b.1);
    scored.into_iter().take(5).map(|(_, n)| n.clone()).collect()
}

fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len().abs_diff(b.len()) > 8 {
        return usize::MAX;
    }
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::index::parse_deps;

    fn pkg(name: &str, version: &str, depends: &str, provides: &str) -> Package {
        Package {
            name: name.into(),
            version: version.into(),
            architecture: "amd64".into(),
            filename: format!("pool/{name}.deb"),
            size: 1,
            sha256: "00".into(),
            depends: parse_deps(depends).unwrap(),
            pre_depends: Vec::new(),
            provides: parse_deps(provides)
                .unwrap()
                .into_iter()
                .flatten()
                .collect(),
            conflicts: Vec::new(),
            breaks: Vec::new(),
            essential: name == "base",
            priority: if name == "mawk" { 0 } else { 3 },
        }
    }

    fn index(pkgs: Vec<Package>) -> Index {
        let mut i = Index::default();
        for p in pkgs {
            i.add(p);
        }
        i
    }

    fn names(v: &[Package]) -> Vec<String> {
        v.iter()
            .map(|p| format!("{}={}", p.name, p.version))
            .collect()
    }

    #[test]
    fn alternatives_provides_and_versions() {
        let i = index(vec![
            pkg("app", "1", "libc (>= 2), mta | postfix, awk", ""),
            pkg("libc", "1", "", ""),
            pkg("libc", "2.1", "", ""),
            pkg("postfix", "3", "libc", ""),
            pkg("gawk", "5", "", "awk"),
            pkg("mawk", "1.3", "", "awk"),
            pkg("base", "1", "", ""),
        ]);
        let r = resolve(&i, &["app".into()], false, &[]).unwrap();
        assert_eq!(names(&r), ["app=1", "libc=2.1", "mawk=1.3", "postfix=3"]);
        let r = resolve(&i, &["app".into()], true, &[]).unwrap();
        assert!(names(&r).contains(&"base=1".to_string()));
        // An excluded name counts as there: distroless-style trimming.
        let r = resolve(
            &i,
            &["app".into()],
            false,
            &["postfix".into(), "mawk".into()],
        )
        .unwrap();
        assert_eq!(names(&r), ["app=1", "libc=2.1"]);
        assert!(resolve(&i, &["app".into()], false, &["app".into()]).is_err());
    }

    #[test]
    fn unsatisfiable_shows_the_chain() {
        let i = index(vec![
            pkg("top", "1", "mid", ""),
            pkg("mid", "2", "leaf (>= 5)", ""),
            pkg("leaf", "3", "", ""),
        ]);
        let err = resolve(&i, &["top".into()], false, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("leaf (>= 5)"), "{err}");
        assert!(err.contains("top 1 → mid 2"), "{err}");
        assert!(err.contains("the mirror has leaf 3"), "{err}");
    }

    #[test]
    fn breaks_and_conflicts_among_the_chosen_are_refused() {
        let mut app = pkg("app", "1", "libold, newtool", "");
        app.breaks = parse_deps("libold (<< 2)").unwrap().concat();
        let i = index(vec![
            app.clone(),
            pkg("libold", "1.5", "", ""),
            pkg("newtool", "1", "", ""),
        ]);
        let err = resolve(&i, &["app".into()], false, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("app 1") && err.contains("libold 1.5"), "{err}");
        assert!(err.contains("Breaks libold (<< 2)"), "{err}");
        // A version outside the relation is fine.
        let i = index(vec![
            app,
            pkg("libold", "2", "", ""),
            pkg("newtool", "1", "", ""),
        ]);
        assert!(resolve(&i, &["app".into()], false, &[]).is_ok());

        // Conflicts through a virtual name the other provides; a package
        // conflicting with what it provides itself is not a conflict.
        let mut exim = pkg("exim", "4", "", "mta");
        exim.conflicts = parse_deps("mta").unwrap().concat();
        let mut postfix = pkg("postfix", "3", "", "mta");
        postfix.conflicts = parse_deps("mta").unwrap().concat();
        let i = index(vec![exim.clone(), postfix]);
        assert!(resolve(&i, &["exim".into()], false, &[]).is_ok());
        let err = resolve(&i, &["exim".into(), "postfix".into()], false, &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("Conflicts mta"), "{err}");
        assert!(err.contains("exim 4") && err.contains("postfix 3"), "{err}");
    }

    #[test]
    fn essential_only_when_asked() {
        let i = index(vec![pkg("app", "1", "", ""), pkg("base", "1", "", "")]);
        let r = resolve(&i, &["app".into()], false, &[]).unwrap();
        assert_eq!(names(&r), ["app=1"]);
        let r = resolve(&i, &["app".into()], true, &[]).unwrap();
        assert_eq!(names(&r), ["app=1", "base=1"]);
        let r = resolve(&i, &["app".into()], true, &["base".into()]).unwrap();
        assert_eq!(names(&r), ["app=1"]);
    }

    #[test]
    fn unknown_names_get_suggestions() {
        let i = index(vec![
            pkg("python3-minimal", "3", "", ""),
            pkg("python3", "3", "", ""),
        ]);
        let err = resolve(&i, &["python3-minimall".into()], false, &[]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("no package \"python3-minimall\""), "{msg}");
        assert!(msg.contains("python3-minimal"), "{msg}");
    }
}
