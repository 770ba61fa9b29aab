//! A small work queue for tree walks: directories are jobs, a job may add
//! more jobs (its subdirectories), and a few threads drain the queue. Tree
//! copies and stat walks are syscall-bound, so a second core pays off even
//! for small files. Jobs are taken last-in first-out, which keeps the queue
//! near the depth of the tree instead of its width.

use std::sync::{Condvar, Mutex};

use crate::Result;

/// How many threads tree walks use: the cores, at most 4 (the filesystem
/// journal serializes more than that anyway).
pub(crate) fn threads() -> usize {
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
        .clamp(1, 4)
}

struct Queue<J> {
    jobs: Vec<J>,
    active: usize,
    failed: Option<crate::Error>,
}

/// Runs `work` on every job and on every job it pushes, on `threads`
/// threads, each with its own state `W`; returns the states. The first
/// error stops the walk and is returned.
pub(crate) fn run<J, W, F>(initial: Vec<J>, threads: usize, work: F) -> Result<Vec<W>>
where
    J: Send,
    W: Default + Send,
    F: Fn(J, &mut W, &mut Vec<J>) -> Result<()> + Sync,
{
    let queue = Mutex::new(Queue {
        jobs: initial,
        active: 0,
        failed: None,
    });
    let wake = Condvar::new();
    let worker = || {
        let mut state = W::default();
        let mut pushed = Vec::new();
        let mut q = queue.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if q.failed.is_some() {
                break;
            }
            let Some(job) = q.jobs.pop() else {
                if q.active == 0 {
                    break;
                }
                q = wake.wait(q).unwrap_or_else(|p| p.into_inner());
                continue;
            };
            q.active += 1;
            drop(q);
            let outcome = work(job, &mut state, &mut pushed);
            q = queue.lock().unwrap_or_else(|p| p.into_inner());
            q.active -= 1;
            q.jobs.append(&mut pushed);
            if let Err(e) = outcome {
                q.failed.get_or_insert(e);
            }
            wake.notify_all();
        }
        wake.notify_all();
        drop(q);
        state
    };
    let states = if threads <= 1 {
        vec![worker()]
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads).map(|_| s.spawn(worker)).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        })
    };
    let q = queue.into_inner().unwrap_or_else(|p| p.into_inner());
    match q.failed {
        Some(e) => Err(e),
        None => Ok(states),
    }
}
