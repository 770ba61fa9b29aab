//! COPY and ADD: the entries of the new layer and the cache key that
//! addresses it. The layer holds only what is copied (plus directories it
//! has to create), so it does not depend on the rest of the filesystem
//! below it: changing an earlier layer does not invalidate a COPY.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use kiln_dockerfile::ignore::Matcher;
use kiln_dockerfile::instructions::{Chmod, Source};
use kiln_image::Digest;
use kiln_image::layer::{Entry, EntryKind, FileSource};

use crate::BuildError;
use crate::context::{Context, ContextEntry, clean_rel};
use crate::inroot::{LazyFile, Root};
use crate::key::KeyHasher;

/// Where COPY reads from.
pub enum CopyFrom<'a> {
    Context(&'a Context),
    /// A mounted view of a stage or image, with its content address.
    Tree {
        root: &'a Path,
        key: Digest,
    },
}

/// Everything a COPY or ADD needs besides its sources.
pub struct CopySpec<'a> {
    pub instruction: &'a str,
    pub sources: &'a [Source],
    pub dest: &'a str,
    pub workdir: &'a str,
    pub owner: Option<(u64, u64)>,
    pub chmod: Option<&'a Chmod>,
    pub parents: bool,
    pub exclude: &'a [String],
    /// ADD: unpack local archives.
    pub unpack_archives: bool,
    /// ADD: fetch URLs and git repositories.
    pub remote: bool,
    /// ADD --checksum.
    pub checksum: Option<&'a str>,
    /// ADD --keep-git-dir.
    pub keep_git_dir: bool,
    /// Whether ADD may reach the build host's own network.
    pub host_network: crate::host_net::HostNetwork,
    /// Stamps for directories the copy creates.
    pub now: i64,
    /// The metadata of a directory that already exists below the new
    /// layer (always `None` for `--link`, whose layer must not depend on
    /// its base).
    /// An existing directory's metadata and the owner a layer gives it.
    pub existing_dir: &'a dyn Fn(&Path) -> Option<crate::fs::OwnedMeta>,
}

pub struct CopyPlan {
    pub entries: Vec<Entry>,
    pub key: Digest,
    /// Temp dirs holding unpacked archives; they must outlive the layer write.
    pub scratch: Vec<tempfile::TempDir>,
}

struct Picked {
    /// Destination path in the image, absolute.
    dest: PathBuf,
    /// Keep the file's own owner (files unpacked from an ADDed archive).
    own_owner: bool,
    host: PathBuf,
    /// A file of the context or a stage: read through its tree, by its
    /// real path, when the layer is written (see [`crate::inroot`]).
    in_tree: Option<(Arc<Root>, String)>,
    meta: fs::Metadata,
    digest: Option<Digest>,
}

impl Picked {
    /// The target of a symlink, read through its tree when it has one.
    fn link(&self) -> std::io::Result<PathBuf> {
        match &self.in_tree {
            Some((tree, real)) => tree.read_link(real),
            None => fs::read_link(&self.host),
        }
    }
}

/// The absolute destination, cleaned of `.` and `..` (which cannot climb
/// above `/`); a trailing `/` (meaning "a directory") is kept.
fn abs_dest(dest: &str, workdir: &str) -> String {
    let joined = if dest.starts_with('/') {
        dest.to_string()
    } else {
        format!("{}/{}", workdir.trim_end_matches('/'), dest)
    };
    let dir_like = joined.ends_with('/') || joined.ends_with("/.") || dest == ".";
    let clean = clean_rel(&joined).unwrap_or_default();
    match (clean.is_empty(), dir_like) {
        (true, _) => "/".to_string(),
        (false, true) => format!("/{clean}/"),
        (false, false) => format!("/{clean}"),
    }
}

/// The real paths a source pattern names in a plain tree (a stage's or a
/// named context's): nothing is ignored; symlinks in the middle are
/// followed inside the tree, a last one is copied as a symlink.
fn tree_resolve(tree: &Root, pattern: &str) -> Result<Vec<(String, ContextEntry)>, BuildError> {
    let clean = clean_rel(pattern)?;
    let found = crate::inroot::expand_named(tree, &clean, false, &|_, _| false)
        .map_err(|e| BuildError::Context(format!("{pattern}: {e}")))?;
    crate::context::named_entries(tree, found)
}

/// Everything below the real directory `dir_rel` of a plain tree (a
/// stage's or a fetched one): nothing is ignored, and a directory that
/// cannot be read is an error (skipping it would copy less than asked and
/// key the copy by less than it holds).
fn tree_walk(tree: &Root, dir_rel: &str) -> Result<Vec<ContextEntry>, BuildError> {
    crate::context::walk_sorted(tree, dir_rel, true, |_, meta| (true, meta.is_dir()))
}

/// Opens a tree kiln reads from.
fn open_tree(path: &Path) -> Result<Root, BuildError> {
    Root::open(path).map_err(|e| BuildError::Io(format!("{}: {e}", path.display())))
}

/// Whether ADD unpacks the file: a tar, plain or compressed (judged by
/// the tar header magic inside, so a gzipped text file is copied as is).
fn is_archive(f: fs::File) -> bool {
    let Ok((_, mut r)) = kiln_image::layer::open_layer(f) else {
        return false;
    };
    let mut head = [0u8; 512];
    let mut n = 0;
    while n < head.len() {
        match std::io::Read::read(&mut r, &mut head[n..]) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    n >= 262 && &head[257..262] == b"ustar"
}

/// Plans a COPY or ADD from `from`.
pub fn plan(from: &CopyFrom<'_>, spec: &CopySpec<'_>) -> Result<CopyPlan, BuildError> {
    let dest = abs_dest(spec.dest, spec.workdir);
    let exclude = Matcher::from_patterns(spec.exclude)
        .map_err(|e| BuildError::Instruction(format!("{}: --exclude: {e}", spec.instruction)))?;
    let multi = spec.sources.len() > 1;
    let mut picked: Vec<Picked> = Vec::new();
    let mut scratch = Vec::new();
    let mut key = KeyHasher::new("copy");
    key.str("dest", &dest)
        .json("owner", &spec.owner)
        .json("chmod", &spec.chmod);
    key.json("parents", &spec.parents)
        .json("exclude", &spec.exclude)
        .json("unpack", &spec.unpack_archives);
    if let CopyFrom::Tree { key: k, .. } = from {
        key.str("from", &k.to_string());
    }
    let mut heredocs = Vec::new();
    let mut stage_tree: Option<Arc<Root>> = None;
    for source in spec.sources {
        let pattern = match source {
            Source::Heredoc(h) => {
                heredocs.push(h);
                key.str("heredoc", &h.name).str("content", &h.content);
                continue;
            }
            Source::Path { path } => path,
        };
        if crate::remote::is_url(pattern) || crate::remote::is_git(pattern) {
            if !spec.remote {
                return Err(BuildError::Instruction(format!(
                    "{}: {pattern} is remote; only ADD fetches URLs and git repositories",
                    spec.instruction
                )));
            }
            let tmp = tempfile::tempdir().map_err(|e| BuildError::Io(e.to_string()))?;
            if crate::remote::is_git(pattern) {
                let checkout = crate::git::clone_git(
                    pattern,
                    tmp.path(),
                    spec.keep_git_dir,
                    spec.checksum,
                    spec.host_network,
                )?;
                key.str("git", pattern).str("commit", &checkout.commit);
                let base = PathBuf::from(&dest);
                for e in tree_walk(&open_tree(&checkout.dir)?, "")? {
                    picked.push(Picked {
                        own_owner: false,
                        dest: base.join(&e.rel),
                        host: checkout.dir.join(&e.rel),
                        in_tree: None,
                        meta: e.meta,
                        digest: None,
                    });
                }
            } else {
                let f = crate::remote::fetch_url(
                    pattern,
                    tmp.path(),
                    spec.checksum,
                    spec.host_network,
                )?;
                key.str("url", pattern);
                let target = if dest.ends_with('/') || multi {
                    PathBuf::from(&dest).join(&f.name)
                } else {
                    PathBuf::from(&dest)
                };
                let meta =
                    fs::symlink_metadata(&f.path).map_err(|e| BuildError::Io(e.to_string()))?;
                picked.push(Picked {
                    own_owner: false,
                    dest: target,
                    host: f.path,
                    in_tree: None,
                    meta,
                    digest: Some(f.digest),
                });
            }
            scratch.push(tmp);
            continue;
        }
        key.str("source", pattern);
        // Opened once, at the first local source.
        let tree: Arc<Root> = match from {
            CopyFrom::Context(ctx) => ctx.tree()?.clone(),
            CopyFrom::Tree { root, .. } => match &stage_tree {
                Some(t) => t.clone(),
                None => stage_tree.insert(Arc::new(open_tree(root)?)).clone(),
            },
        };
        let matches = match from {
            CopyFrom::Context(ctx) => ctx.resolve_source(pattern)?,
            CopyFrom::Tree { .. } => tree_resolve(&tree, pattern)?,
        };
        if matches.is_empty() {
            // In a stage an absolute symlink means the stage's own path;
            // in a context it was most likely meant as the host's.
            let why = clean_rel(pattern)
                .ok()
                .filter(|c| matches!(from, CopyFrom::Context(_)) && !c.contains(['*', '?', '[']))
                .and_then(|c| tree.escaping_link(&c))
                .map(|l| {
                    format!(
                        " ({l:?} is a symlink that points outside the build context; \
                         symlinks are followed inside it)"
                    )
                })
                .unwrap_or_default();
            return Err(BuildError::Instruction(format!(
                "{}: {pattern:?}: no such file or directory{why}",
                spec.instruction
            )));
        }
        let dest_is_dir =
            dest.ends_with('/') || multi || matches.len() > 1 || pattern.contains(['*', '?', '[']);
        // Real paths below the tree's top: no symlink in them.
        let host_root = tree.path().to_path_buf();
        for (named, m) in matches {
            let base = PathBuf::from(&dest);
            // A symlink named as the source keeps its own name: its target
            // gives only the content (as BuildKit).
            let name = named.rsplit('/').next().unwrap_or(&named).to_string();
            // With --parents, the path is kept from the `/./` pivot on (or
            // whole without one).
            let kept = match pattern.split_once("/./") {
                Some((before, _)) => {
                    let prefix = clean_rel(before)?;
                    named
                        .strip_prefix(&format!("{prefix}/"))
                        .unwrap_or(&named)
                        .to_string()
                }
                None => named.clone(),
            };
            let target = if spec.parents {
                base.join(&kept)
            } else if m.meta.is_dir() {
                base.clone()
            } else if dest_is_dir {
                base.join(&name)
            } else {
                base.clone()
            };
            let open = || {
                tree.open_file(&m.rel)
                    .map_err(|e| BuildError::Context(format!("{}: {e}", m.rel)))
            };
            if m.meta.is_file() && spec.unpack_archives && is_archive(open()?) {
                let tmp = tempfile::tempdir().map_err(|e| BuildError::Io(e.to_string()))?;
                let f = open()?;
                kiln_image::layer::extract(
                    f,
                    tmp.path(),
                    &kiln_image::layer::ExtractOptions::default(),
                )
                .map_err(|e| {
                    BuildError::Instruction(format!(
                        "{}: unpacking {}: {e}",
                        spec.instruction, m.rel
                    ))
                })?;
                if let CopyFrom::Context(ctx) = from {
                    key.str("archive", &ctx.file_digest(&m.rel, &m.meta)?.to_string());
                }
                for e in tree_walk(&open_tree(tmp.path())?, "")? {
                    picked.push(Picked {
                        own_owner: true,
                        dest: base.join(&e.rel),
                        host: tmp.path().join(&e.rel),
                        in_tree: None,
                        meta: e.meta,
                        digest: None,
                    });
                }
                scratch.push(tmp);
                continue;
            }
            let children = if m.meta.is_dir() {
                match from {
                    CopyFrom::Context(ctx) => ctx.walk(&m.rel)?,
                    CopyFrom::Tree { .. } => tree_walk(&tree, &m.rel)?,
                }
            } else {
                Vec::new()
            };
            let mut push = |rel_in_source: &str,
                            dest: PathBuf,
                            meta: fs::Metadata,
                            rel_ctx: &str|
             -> Result<(), BuildError> {
                if !rel_in_source.is_empty() && exclude.matches(rel_in_source) {
                    return Ok(());
                }
                let digest = match from {
                    CopyFrom::Context(ctx) if meta.is_file() => {
                        Some(ctx.file_digest(rel_ctx, &meta)?)
                    }
                    _ => None,
                };
                picked.push(Picked {
                    own_owner: false,
                    dest,
                    host: host_root.join(rel_ctx),
                    in_tree: Some((tree.clone(), rel_ctx.to_string())),
                    meta,
                    digest,
                });
                Ok(())
            };
            // As BuildKit: a directory copied onto one that exists keeps
            // the existing one's owner and mode (moby/buildkit#790); only
            // what the copy creates gets --chown and --chmod. Left out
            // here, it is written with its own metadata as the parent of
            // what goes into it.
            let onto_existing = m.meta.is_dir() && !spec.parents && {
                let rel = target.strip_prefix("/").unwrap_or(&target);
                (spec.existing_dir)(&Path::new("/").join(rel)).is_some_and(|(d, _)| d.is_dir())
            };
            if !onto_existing {
                push(&m.rel.clone(), target.clone(), m.meta.clone(), &m.rel)?;
            }
            for c in children {
                let under = c
                    .rel
                    .strip_prefix(&format!("{}/", m.rel))
                    .unwrap_or(&c.rel)
                    .to_string();
                push(&c.rel, target.join(&under), c.meta, &c.rel)?;
            }
        }
    }
    // The key: what lands where, with what content and mode.
    for p in &picked {
        key.str("path", &p.dest.to_string_lossy())
            .json("mode", &p.meta.mode());
        if let Some(d) = &p.digest {
            key.str("digest", &d.to_string());
        } else if p.meta.file_type().is_symlink() {
            let target = p.link().map_err(|e| {
                BuildError::Context(format!("reading the link {}: {e}", p.host.display()))
            })?;
            key.str("link", &target.to_string_lossy());
        }
    }
    let mut entries = Vec::new();
    let mut seen: BTreeSet<PathBuf> = BTreeSet::new();
    let (uid, gid) = spec.owner.unwrap_or((0, 0));
    for p in picked {
        let rel = p.dest.strip_prefix("/").unwrap_or(&p.dest).to_path_buf();
        if rel.as_os_str().is_empty() || !seen.insert(rel.clone()) {
            continue;
        }
        let mode = apply_chmod(
            spec.chmod,
            p.meta.permissions().mode() & 0o7777,
            p.meta.is_dir(),
        );
        let (u, g) = match spec.owner {
            Some(o) => o,
            None if p.own_owner => (u64::from(p.meta.uid()), u64::from(p.meta.gid())),
            None => (0, 0),
        };
        let e = if p.meta.is_dir() {
            Entry::dir(&rel)
        } else if p.meta.file_type().is_symlink() {
            let target = p
                .link()
                .map_err(|e| BuildError::Context(format!("{}: {e}", p.host.display())))?;
            Entry::symlink(&rel, target)
        } else if p.meta.is_file() {
            match p.in_tree {
                Some((tree, real)) => Entry::new(
                    &rel,
                    EntryKind::File {
                        source: FileSource::Reader(Box::new(LazyFile::new(tree, real))),
                        size: p.meta.len(),
                    },
                    0o644,
                ),
                None => Entry::file_host(&rel, &p.host, p.meta.len()),
            }
        } else {
            continue;
        };
        entries.push(
            e.with_mode(mode)
                .with_owner(u, g)
                .with_mtime(p.meta.mtime()),
        );
    }
    for h in heredocs {
        let rel = PathBuf::from(dest.trim_start_matches('/')).join(&h.name);
        let rel = if dest.ends_with('/') || spec.sources.len() > 1 {
            rel
        } else {
            PathBuf::from(dest.trim_start_matches('/'))
        };
        if seen.insert(rel.clone()) {
            let mode = apply_chmod(spec.chmod, 0o644, false);
            entries.push(
                Entry::file_bytes(&rel, h.content.clone().into_bytes())
                    .with_mode(mode)
                    .with_owner(uid, gid)
                    .with_mtime(spec.now),
            );
        }
    }
    // Directories the copy needs above its entries.
    let mut parents = BTreeSet::new();
    for e in &entries {
        for a in e.path.ancestors().skip(1) {
            if !a.as_os_str().is_empty() && !seen.contains(a) {
                parents.insert(a.to_path_buf());
            }
        }
    }
    for p in parents {
        // An existing directory is written with its own mode, owner and
        // time (think /tmp, or a home directory): a layer that lacked it
        // would get a default one from the unpacker, and that copy would
        // hide the real one in the overlay. The key records what it relied on.
        if let Some((m, (ou, og))) = (spec.existing_dir)(&Path::new("/").join(&p)) {
            key.str("existing-parent", &p.to_string_lossy());
            key.json("existing-meta", &(m.mode(), ou, og, m.mtime()));
            entries.push(
                Entry::dir(&p)
                    .with_mode(m.mode() & 0o7777)
                    .with_owner(u64::from(ou), u64::from(og))
                    .with_mtime(m.mtime()),
            );
            continue;
        }
        entries.push(
            Entry::dir(&p)
                .with_mode(0o755)
                .with_owner(uid, gid)
                .with_mtime(spec.now),
        );
    }
    Ok(CopyPlan {
        entries,
        key: key.finish(),
        scratch,
    })
}

/// `--chmod`: octal replaces the permission bits; symbolic edits them
/// (`u+x,g-w,o=r`, `a+X`).
pub fn apply_chmod(chmod: Option<&Chmod>, mode: u32, is_dir: bool) -> u32 {
    match chmod {
        None => mode,
        Some(Chmod::Octal(m)) => *m & 0o7777,
        Some(Chmod::Symbolic(s)) => {
            let mut mode = mode;
            for clause in s.split(',') {
                let op_at = clause.find(['+', '-', '=']).unwrap_or(clause.len());
                let (who, rest) = clause.split_at(op_at);
                let Some(op) = rest.chars().next() else {
                    continue;
                };
                let perms = &rest[1..];
                let who_mask = if who.is_empty() || who.contains('a') {
                    0o777
                } else {
                    (if who.contains('u') { 0o700 } else { 0 })
                        | (if who.contains('g') { 0o070 } else { 0 })
                        | (if who.contains('o') { 0o007 } else { 0 })
                };
                let mut bits = 0;
                for c in perms.chars() {
                    bits |= match c {
                        'r' => 0o444,
                        'w' => 0o222,
                        'x' => 0o111,
                        'X' if is_dir || mode & 0o111 != 0 => 0o111,
                        _ => 0,
                    };
                }
                let bits = bits & who_mask;
                mode = match op {
                    '+' => mode | bits,
                    '-' => mode & !bits,
                    _ => (mode & !who_mask) | bits,
                };
            }
            mode
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chmod_forms() {
        assert_eq!(apply_chmod(Some(&Chmod::Octal(0o755)), 0o644, false), 0o755);
        assert_eq!(
            apply_chmod(Some(&Chmod::Symbolic("u+x,g-r".into())), 0o644, false),
            0o704
        );
        assert_eq!(
            apply_chmod(Some(&Chmod::Symbolic("a=r".into())), 0o777, false),
            0o444
        );
        assert_eq!(
            apply_chmod(Some(&Chmod::Symbolic("+X".into())), 0o644, true),
            0o755
        );
        assert_eq!(apply_chmod(None, 0o600, false), 0o600);
    }
}
