//! The scheduler: runs the nodes of a dependency graph, each on its own
//! thread as soon as every node it depends on is done, and hands each the
//! outputs of its dependencies. It knows nothing of builds: a node is an
//! index and some work (the solver's ops, or the dummy ops of the tests).
//!
//! After the first failure no node starts; those already running finish
//! (they can poll [`Cancel`] to stop early), and the first error is the
//! result. A node whose dependency failed never runs. A panic in a node is
//! re-raised on the caller's thread once the others have stopped.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};

/// Tells running nodes that the run has failed and they may stop.
#[derive(Default)]
pub struct Cancel(AtomicBool);

impl Cancel {
    pub fn is_canceled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }

    fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

type Panic = Box<dyn std::any::Any + Send>;

enum Finished<E> {
    Ok,
    Err(E),
    Panicked(Panic),
}

/// Runs the nodes `wanted` needs (themselves and everything they depend
/// on, transitively). `deps[n]` lists the nodes `n` depends on; `work(n,
/// outputs, cancel)` gets the outputs of `deps[n]`, in that order.
///
/// Returns every node's output (`None` for nodes not needed), or the
/// error of the node that failed first.
pub fn run<T, E, F>(deps: &[Vec<usize>], wanted: &[usize], work: F) -> Result<Vec<Option<T>>, E>
where
    T: Send + Sync,
    E: Send,
    F: Fn(usize, &[&T], &Cancel) -> Result<T, E> + Sync,
{
    let n = deps.len();
    let needed = needed(deps, wanted);
    // How many of its dependencies each needed node still waits for, and
    // who waits for each node.
    let mut waiting: Vec<usize> = deps.iter().map(Vec::len).collect();
    let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (node, ds) in deps.iter().enumerate() {
        if needed[node] {
            for &d in ds {
                dependents[d].push(node);
            }
        }
    }
    let outputs: Vec<OnceLock<T>> = (0..n).map(|_| OnceLock::new()).collect();
    let cancel = Cancel::default();
    let first_error: Mutex<Option<E>> = Mutex::new(None);
    let mut panic: Option<Panic> = None;
    std::thread::scope(|scope| {
        let (tx, rx) = mpsc::channel::<(usize, Finished<E>)>();
        let outputs = &outputs;
        let work = &work;
        let cancel = &cancel;
        let start = |node: usize| {
            let tx = tx.clone();
            scope.spawn(move || {
                let inputs: Vec<&T> = deps[node]
                    .iter()
                    .map(|&d| outputs[d].get().expect("a dependency finished first"))
                    .collect();
                let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    work(node, &inputs, cancel)
                }));
                let finished = match result {
                    Ok(Ok(out)) => {
                        let _ = outputs[node].set(out);
                        Finished::Ok
                    }
                    Ok(Err(e)) => Finished::Err(e),
                    Err(p) => Finished::Panicked(p),
                };
                // The receiver lives until every started node reported.
                let _ = tx.send((node, finished));
            });
        };
        let mut running = 0;
        for node in (0..n).filter(|&i| needed[i] && waiting[i] == 0) {
            start(node);
            running += 1;
        }
        while running > 0 {
            let (node, finished) = rx.recv().expect("a running node reports");
            running -= 1;
            match finished {
                Finished::Ok if !cancel.is_canceled() => {
                    for &d in &dependents[node] {
                        waiting[d] -= 1;
                        if waiting[d] == 0 {
                            start(d);
                            running += 1;
                        }
                    }
                }
                Finished::Ok => {}
                Finished::Err(e) => {
                    cancel.cancel();
                    first_error.lock().expect("lock").get_or_insert(e);
                }
                Finished::Panicked(p) => {
                    cancel.cancel();
                    panic.get_or_insert(p);
                }
            }
        }
    });
    if let Some(p) = panic {
        std::panic::resume_unwind(p);
    }
    if let Some(e) = first_error.into_inner().expect("lock") {
        return Err(e);
    }
    Ok(outputs.into_iter().map(OnceLock::into_inner).collect())
}

/// Which nodes `wanted` reaches through `deps`.
fn needed(deps: &[Vec<usize>], wanted: &[usize]) -> Vec<bool> {
    let mut needed = vec![false; deps.len()];
    let mut todo: Vec<usize> = wanted.to_vec();
    while let Some(n) = todo.pop() {
        if !std::mem::replace(&mut needed[n], true) {
            todo.extend(&deps[n]);
        }
    }
    needed
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Barrier};
    use std::time::Duration;

    /// A diamond: 0 → {1, 2} → 3, and 4 on its own.
    fn diamond() -> Vec<Vec<usize>> {
        vec![vec![], vec![0], vec![0], vec![1, 2], vec![]]
    }

    #[test]
    fn a_node_runs_after_its_dependencies_and_gets_their_outputs() {
        let order = Mutex::new(Vec::new());
        let out = run(&diamond(), &[3], |n, inputs: &[&String], _| {
            order.lock().unwrap().push(n);
            let ins: Vec<&str> = inputs.iter().map(|s| s.as_str()).collect();
            Ok::<_, ()>(format!("{n}({})", ins.join(",")))
        })
        .unwrap();
        assert_eq!(out[3].as_deref(), Some("3(1(0()),2(0()))"));
        let order = order.into_inner().unwrap();
        let at = |n| order.iter().position(|&x| x == n).unwrap();
        assert_eq!(at(0), 0);
        assert!(at(1) < at(3) && at(2) < at(3));
        // Node 4 is not needed by 3: it never runs.
        assert!(!order.contains(&4));
        assert!(out[4].is_none());
    }

    #[test]
    fn independent_nodes_run_at_the_same_time() {
        // 1 and 2 both wait at one barrier: the run only finishes if they
        // are running together.
        let barrier = Barrier::new(2);
        let out = run(&diamond(), &[3], |n, _: &[&()], _| {
            if n == 1 || n == 2 {
                barrier.wait();
            }
            Ok::<_, ()>(())
        });
        assert!(out.is_ok());
    }

    #[test]
    fn independent_roots_all_start_at_once() {
        let deps = vec![vec![]; 4];
        let barrier = Barrier::new(4);
        let wanted: Vec<usize> = (0..4).collect();
        let out = run(&deps, &wanted, |_, _: &[&()], _| {
            barrier.wait();
            Ok::<_, ()>(())
        });
        assert!(out.is_ok());
    }

    #[test]
    fn a_failure_is_the_result_and_its_dependents_never_run() {
        let ran = Mutex::new(Vec::new());
        let err = run(&diamond(), &[3, 4], |n, _: &[&()], _| {
            ran.lock().unwrap().push(n);
            if n == 1 {
                Err(format!("node {n} failed"))
            } else {
                Ok(())
            }
        })
        .unwrap_err();
        assert_eq!(err, "node 1 failed");
        assert!(!ran.lock().unwrap().contains(&3));
    }

    #[test]
    fn after_a_failure_no_node_starts_and_running_ones_see_the_cancel() {
        // 0 fails while 1 runs; 1 waits until it sees the cancel, and 2,
        // which depends on 1, never starts.
        let deps = vec![vec![], vec![], vec![1]];
        let started = Arc::new(Barrier::new(2));
        let saw_cancel = AtomicBool::new(false);
        let ran_2 = AtomicBool::new(false);
        let err = run(&deps, &[0, 2], |n, _: &[&()], cancel| match n {
            0 => {
                started.wait();
                Err("boom")
            }
            1 => {
                started.wait();
                while !cancel.is_canceled() {
                    std::thread::sleep(Duration::from_millis(1));
                }
                saw_cancel.store(true, Ordering::Relaxed);
                Ok(())
            }
            _ => {
                ran_2.store(true, Ordering::Relaxed);
                Ok(())
            }
        })
        .unwrap_err();
        assert_eq!(err, "boom");
        assert!(saw_cancel.load(Ordering::Relaxed));
        assert!(!ran_2.load(Ordering::Relaxed));
    }

    #[test]
    fn the_first_error_wins() {
        // 1 fails only after 0 has failed.
        let deps = vec![vec![], vec![]];
        let zero_failed = AtomicBool::new(false);
        let err = run(&deps, &[0, 1], |n, _: &[&()], cancel| {
            if n == 0 {
                zero_failed.store(true, Ordering::Relaxed);
                return Err("first");
            }
            while !cancel.is_canceled() {
                std::thread::sleep(Duration::from_millis(1));
            }
            Err("second")
        })
        .unwrap_err();
        assert_eq!(err, "first");
    }

    #[test]
    fn a_panic_reaches_the_caller_after_the_others_stop() {
        let deps = vec![vec![], vec![]];
        let other_done = Arc::new(AtomicBool::new(false));
        let seen = other_done.clone();
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            run(&deps, &[0, 1], |n, _: &[&()], _| {
                if n == 0 {
                    panic!("node 0 panicked");
                }
                std::thread::sleep(Duration::from_millis(20));
                other_done.store(true, Ordering::Relaxed);
                Ok::<_, ()>(())
            })
        }));
        assert!(result.is_err());
        assert!(seen.load(Ordering::Relaxed));
    }

    #[test]
    fn a_long_chain_runs_in_order() {
        let deps: Vec<Vec<usize>> = (0..200)
            .map(|i| if i == 0 { vec![] } else { vec![i - 1] })
            .collect();
        let out = run(&deps, &[199], |_, inputs: &[&usize], _| {
            Ok::<_, ()>(inputs.first().map_or(0, |&&p| p + 1))
        })
        .unwrap();
        assert_eq!(out[199], Some(199));
    }
}
