//! `kiln build --print=stages`: the build cut into jobs for a CI matrix
//! or Kubernetes Jobs, as JSON. Each named stage the target needs is a
//! job that builds it alone (`--target`), imports the caches of the jobs
//! it waits for and exports its own to a ref of its own; the final job is
//! the build as asked, importing every stage's cache. Run in any order
//! that respects `depends_on`, on machines that share only the cache
//! location, the final job finds every stage in the caches.
//!
//! kiln runs none of it: an engine that exists does.

use std::ffi::OsString;

use anyhow::{Context, bail};
use kiln_build::BuildOptions;
use kiln_build::plan::stage_jobs;
use serde::Serialize;

#[derive(Serialize)]
struct Job {
    /// The stage this job builds; `null` for the final job.
    stage: Option<String>,
    depends_on: Vec<String>,
    /// Where this job's cache goes (a `--cache-to` value).
    cache: String,
    command: Vec<String>,
}

/// Prints the plan of `opts`' build. `args` is kiln's whole command line;
/// `cache_to` the build's `--cache-to` values, of which exactly one is the
/// location the jobs' caches are named after.
pub fn print(opts: &BuildOptions, args: &[OsString], cache_to: &[String]) -> anyhow::Result<()> {
    let [base] = cache_to else {
        bail!(
            "--print=stages needs one --cache-to (type=registry,ref=REF or type=local,dest=DIR): \
             each stage's job exports its cache next to it"
        );
    };
    let base = CacheLocation::parse(base)?;
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            a.to_str()
                .map(str::to_string)
                .context("--print=stages: an argument is not UTF-8")
        })
        .collect::<anyhow::Result<_>>()?;
    let common = strip(&args);
    let mut jobs = Vec::new();
    let mut stage_caches = Vec::new();
    for job in stage_jobs(opts)? {
        let imports: Vec<String> = job
            .depends_on
            .iter()
            .map(|d| base.for_stage(Some(d), false))
            .collect();
        let (mut command, cache) = match &job.target {
            Some(stage) => {
                let mut c = common.stage.clone();
                c.extend(["--target".to_string(), stage.clone()]);
                (c, base.for_stage(Some(stage), true))
            }
            None => (common.full.clone(), base.for_stage(None, true)),
        };
        let all_stages = job.target.is_none();
        for from in if all_stages { &stage_caches } else { &imports } {
            command.extend(["--cache-from".to_string(), from.clone()]);
        }
        command.extend(["--cache-to".to_string(), cache.clone()]);
        command.push(common.context.clone());
        if let Some(stage) = &job.target {
            stage_caches.push(base.for_stage(Some(stage), false));
        }
        jobs.push(Job {
            stage: job.target,
            depends_on: job.depends_on,
            cache,
            command,
        });
    }
    let text = serde_json::to_string_pretty(&serde_json::json!({ "jobs": jobs }))?;
    outln!("{text}");
    Ok(())
}

/// A `--cache-to` location, named per stage.
enum CacheLocation {
    /// `type=registry,ref=REPO[:TAG]` and the options after it.
    Registry {
        repo: String,
        tag: String,
        rest: String,
    },
    /// `type=local,dest=DIR`.
    Local { dir: String, rest: String },
}

impl CacheLocation {
    fn parse(spec: &str) -> anyhow::Result<CacheLocation> {
        let mut kind = "";
        let mut reference = None;
        let mut dest = None;
        let mut rest = Vec::new();
        for part in spec.split(',') {
            match part.split_once('=') {
                Some(("type", v)) => kind = v,
                Some(("ref", v)) => reference = Some(v),
                Some(("dest", v)) => dest = Some(v),
                // Export options stay on every job's --cache-to.
                _ => rest.push(part),
            }
        }
        let rest = rest.iter().map(|p| format!(",{p}")).collect::<String>();
        match (kind, reference, dest) {
            ("registry", Some(r), _) => {
                if r.contains('@') {
                    bail!("--cache-to {spec}: a cache ref names a tag, not a digest");
                }
                // The tag is after the last ':' that follows the last '/'.
                let slash = r.rfind('/').map_or(0, |i| i + 1);
                let (repo, tag) = match r[slash..].rfind(':') {
                    Some(i) => (&r[..slash + i], &r[slash + i + 1..]),
                    None => (r, "cache"),
                };
                Ok(CacheLocation::Registry {
                    repo: repo.to_string(),
                    tag: tag.to_string(),
                    rest,
                })
            }
            ("local", _, Some(d)) => Ok(CacheLocation::Local {
                dir: d.trim_end_matches('/').to_string(),
                rest,
            }),
            _ => bail!(
                "--cache-to {spec}: --print=stages names per-stage caches after \
                 type=registry,ref=REF or type=local,dest=DIR"
            ),
        }
    }

    /// The cache of `stage` (the final job's: `None`), as a `--cache-to`
    /// value (`export`) or a `--cache-from` one.
    fn for_stage(&self, stage: Option<&str>, export: bool) -> String {
        match self {
            CacheLocation::Registry { repo, tag, rest } => {
                let tag = stage.map_or_else(|| tag.clone(), |s| format!("{tag}-{s}"));
                let opts = if export { rest.as_str() } else { "" };
                let mode = if export && !rest.contains("mode=") {
                    ",mode=max"
                } else {
                    ""
                };
                format!("type=registry,ref={repo}:{tag}{mode}{opts}")
            }
            CacheLocation::Local { dir, rest } => {
                let dir = stage.map_or_else(|| dir.clone(), |s| format!("{dir}/{s}"));
                match export {
                    true => format!("type=local,dest={dir},mode=max{rest}"),
                    false => format!("type=local,src={dir}"),
                }
            }
        }
    }
}

/// The command line without what the plan replaces.
struct Common {
    /// What a stage's job keeps: no outputs, names, target or caches.
    stage: Vec<String>,
    /// What the final job keeps: everything but the caches and the plan.
    full: Vec<String>,
    /// The build context, last.
    context: String,
}

/// Flags of `kiln build` that take a value, spelled apart or with `=`.
const VALUED: &[&str] = &[
    "-f",
    "--file",
    "-t",
    "--tag",
    "--build-arg",
    "--target",
    "--platform",
    "--secret",
    "--ssh",
    "--label",
    "--isolation",
    "--snapshotter",
    "-o",
    "--output",
    "--iidfile",
    "--metadata-file",
    "--cache-from",
    "--cache-to",
    "--build-context",
    "--add-host",
    "--shm-size",
    "--network",
    "--allow",
    "--progress",
    "--no-cache-filter",
    "--ulimit",
    "--annotation",
    "--print",
    "--root",
];

/// What a stage's job drops (it makes no image anyone keeps).
const STAGE_DROPS: &[&str] = &[
    "-t",
    "--tag",
    "-o",
    "--output",
    "--iidfile",
    "--metadata-file",
    "--target",
    "--push",
    "--annotation",
];

/// What no job keeps (`--root` is the planning machine's store).
const ALL_DROP: &[&str] = &["--cache-from", "--cache-to", "--print", "--root"];

fn strip(args: &[String]) -> Common {
    let mut stage = Vec::new();
    let mut full = Vec::new();
    let mut positional = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let a = &args[i];
        let (flag, inline) = match a.split_once('=') {
            Some((f, _)) if f.starts_with('-') => (f, true),
            _ => (a.as_str(), false),
        };
        // `-tNAME` is `-t NAME`.
        let short_joined =
            !inline && flag.len() > 2 && !flag.starts_with("--") && VALUED.contains(&&flag[..2]);
        let (flag, takes_next) = if short_joined {
            (&flag[..2], false)
        } else {
            (flag, !inline && VALUED.contains(&flag))
        };
        let mut words = vec![a.clone()];
        if takes_next && let Some(v) = args.get(i + 1) {
            words.push(v.clone());
            i += 1;
        }
        i += 1;
        if !flag.starts_with('-') || flag == "-" {
            positional.push(a.clone());
            continue;
        }
        if ALL_DROP.contains(&flag) {
            continue;
        }
        if !STAGE_DROPS.contains(&flag) {
            stage.extend(words.iter().cloned());
        }
        full.extend(words);
    }
    // kiln's own path, the subcommand, then the context last.
    let context = if positional.len() > 2 {
        positional.pop().unwrap_or_default()
    } else {
        ".".to_string()
    };
    let head: Vec<String> = positional.into_iter().take(2).collect();
    let with_head = |rest: Vec<String>| {
        let mut v = head.clone();
        v.extend(rest);
        v
    };
    Common {
        stage: with_head(stage),
        full: with_head(full),
        context,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split(' ').map(str::to_string).collect()
    }

    #[test]
    fn stage_jobs_drop_names_outputs_and_caches() {
        let c = strip(&words(
            "kiln build -f df --tag x:1 -ty:2 --build-arg A=1 --push --cache-to type=registry,ref=r \
             --cache-from=type=registry,ref=q --print=stages --target final ctx",
        ));
        assert_eq!(c.stage, words("kiln build -f df --build-arg A=1"));
        assert_eq!(
            c.full,
            words("kiln build -f df --tag x:1 -ty:2 --build-arg A=1 --push --target final")
        );
        assert_eq!(c.context, "ctx");
    }

    #[test]
    fn caches_are_named_per_stage() {
        let r = CacheLocation::parse("type=registry,ref=127.0.0.1:5000/app/cache:main,mode=max")
            .unwrap();
        assert_eq!(
            r.for_stage(Some("deps"), true),
            "type=registry,ref=127.0.0.1:5000/app/cache:main-deps,mode=max"
        );
        assert_eq!(
            r.for_stage(Some("deps"), false),
            "type=registry,ref=127.0.0.1:5000/app/cache:main-deps"
        );
        let r = CacheLocation::parse("type=registry,ref=127.0.0.1:5000/app").unwrap();
        assert_eq!(
            r.for_stage(None, true),
            "type=registry,ref=127.0.0.1:5000/app:cache,mode=max"
        );
        let l = CacheLocation::parse("type=local,dest=/c/").unwrap();
        assert_eq!(l.for_stage(Some("a"), false), "type=local,src=/c/a");
        assert!(CacheLocation::parse("type=inline").is_err());
    }
}
