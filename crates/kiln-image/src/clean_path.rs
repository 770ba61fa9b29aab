//! Lexical cleaning of slash-separated paths: the one place that says what
//! empty components, `.` and `..` mean, for tar member names, context and
//! container paths, mount targets and `.dockerignore` patterns alike.
//!
//! Nothing here looks at a filesystem: a symlink is a name like any other.
//! Resolving a cleaned path on disk stays inside a root by other means
//! (`openat2` with `RESOLVE_IN_ROOT`).

/// Drops empty and `.` components and applies each `..` to the component
/// before it. Returns how many `..` climbed above the start (none left to
/// remove) and the components that remain. Works on `str` and byte
/// components alike.
pub fn resolve<'a, C>(components: impl IntoIterator<Item = &'a C>) -> (usize, Vec<&'a C>)
where
    C: AsRef<[u8]> + ?Sized + 'a,
{
    let mut climbed = 0;
    let mut kept: Vec<&C> = Vec::new();
    for c in components {
        match c.as_ref() {
            b"" | b"." => {}
            b".." => {
                if kept.pop().is_none() {
                    climbed += 1;
                }
            }
            _ => kept.push(c),
        }
    }
    (climbed, kept)
}

/// `p` relative to a root it cannot leave: no leading `/`, no `.`, and a
/// `..` at the root stays there (as Docker clamps context and container
/// paths). The root itself is `""`.
pub fn in_root(p: &str) -> String {
    resolve(p.split('/')).1.join("/")
}

/// [`in_root`] as an absolute path (`/` for the root).
pub fn abs_in_root(p: &str) -> String {
    format!("/{}", in_root(p))
}

/// Go's `path.Clean`: like [`in_root`] for a rooted path; a relative one
/// keeps the `..` that climb above its start, and the empty path is `.`.
pub fn clean(p: &str) -> String {
    if p.starts_with('/') {
        return abs_in_root(p);
    }
    let (climbed, kept) = resolve(p.split('/'));
    let parts: Vec<&str> = std::iter::repeat_n("..", climbed).chain(kept).collect();
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_path_clean() {
        for (p, want) in [
            ("", "."),
            (".", "."),
            ("a/b/../c", "a/c"),
            ("a/./b/../c/", "a/c"),
            ("a//b", "a/b"),
            ("/../a", "/a"),
            ("../a", "../a"),
            ("a/../../b", "../b"),
            ("../a/..", ".."),
            ("/../a/./b//", "/a/b"),
            ("/", "/"),
        ] {
            assert_eq!(clean(p), want, "{p:?}");
        }
    }

    #[test]
    fn in_root_never_climbs() {
        assert_eq!(in_root("/../../etc/./passwd"), "etc/passwd");
        assert_eq!(in_root("a/../.."), "");
        assert_eq!(abs_in_root("../x/"), "/x");
        assert_eq!(abs_in_root(""), "/");
    }

    #[test]
    fn bytes_report_the_climb() {
        let (climbed, kept) = resolve(b"a/../../b".split(|&c| c == b'/'));
        assert_eq!((climbed, kept), (1, vec![&b"b"[..]]));
    }
}
