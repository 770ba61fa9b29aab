//! The stage plan: a build cut into jobs that separate machines can run
//! (a CI matrix, Kubernetes Jobs), one per named stage, each exporting
//! its cache for the jobs after it. kiln schedules nothing across
//! machines: it only says which jobs there are and what each waits for;
//! the CLI turns them into commands.
//!
//! It reads the Dockerfile alone: base images are not fetched, so stages
//! that only an image's ONBUILD triggers would add are not seen.

use std::collections::BTreeSet;

use kiln_dockerfile::stage::Stage;
use serde::Serialize;

use crate::BuildError;
use crate::options::BuildOptions;

/// One job of the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StageJob {
    /// The stage's name: `--target` builds it alone. `None` for the final
    /// job, which builds what the build itself targets.
    pub target: Option<String>,
    /// The named stages this job's stage needs (directly, or through
    /// unnamed stages): their jobs run first, and this one imports their
    /// caches.
    pub depends_on: Vec<String>,
}

/// The jobs of `opts`' build: one per named stage the target needs, in
/// an order where each follows those it depends on, then the final job.
pub fn stage_jobs(opts: &BuildOptions) -> Result<Vec<StageJob>, BuildError> {
    let build = opts.resolve_alone()?;
    let by_index = |i: usize| build.stages.iter().find(|s| s.index == i);
    // The named stages `stage` needs, looking through unnamed ones.
    let named_deps = |stage: &Stage| {
        let mut out = BTreeSet::new();
        let mut todo: Vec<usize> = stage.dependencies.clone();
        let mut seen = BTreeSet::new();
        while let Some(i) = todo.pop() {
            if !seen.insert(i) {
                continue;
            }
            match by_index(i) {
                Some(Stage { name: Some(n), .. }) => {
                    out.insert(n.clone());
                }
                Some(s) => todo.extend(&s.dependencies),
                None => {}
            }
        }
        out.into_iter().collect::<Vec<_>>()
    };
    let mut jobs = Vec::new();
    for stage in &build.stages {
        let is_target = stage.index == build.target;
        match &stage.name {
            _ if is_target => jobs.push(StageJob {
                target: None,
                depends_on: named_deps(stage),
            }),
            Some(name) => jobs.push(StageJob {
                target: Some(name.clone()),
                depends_on: named_deps(stage),
            }),
            None => {}
        }
    }
    Ok(jobs)
}
