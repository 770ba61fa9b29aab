//! Where traced threads run. Each syscall the tracer sees is a round trip
//! between a tracee and the tracer: across two CPUs each leg wakes an idle
//! CPU (an interrupt to it, in a VM an exit to the hypervisor), on one CPU
//! it is a plain context switch. Measured on this project's 2-CPU VM, a
//! loop of `stat` calls ran 4× faster with the tracee on the tracer's CPU,
//! and a `pip install` step 1.5× faster. Pinning every tracee there would
//! serialize parallel work (`make -j`, a compiler per CPU), so the tracer
//! stays on one CPU of the run's set and a thread joins it there only
//! while it stops often:
//! - a thread whose traced syscalls come less than [`FAST`] apart is
//!   pinned to the tracer's CPU (a new thread starts where its creator
//!   was: the command starts pinned, as it starts by loading libraries);
//! - a pinned thread that has not stopped for [`QUIET`] (it computes, or
//!   waits) gets the whole set back; an interval timer wakes the tracer
//!   every [`TICK`] to look, since such a thread makes no stop to act on.
//!
//! Tracees do not see the pin where it would change what they do:
//! `sched_getaffinity` answers the run's whole set (what `nproc`, Go's
//! GOMAXPROCS and `make -j$(nproc)` read); `Cpus_allowed` in
//! `/proc/<pid>/status` does show it. A thread that sets its own affinity
//! is left where it put itself.
//! Where the run has one CPU there is nothing to place: all of it is off.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Two traced syscalls of a thread closer than this: it is syscall-bound.
pub(super) const FAST: Duration = Duration::from_millis(1);
/// A pinned thread without a stop for this long is let go.
pub(super) const QUIET: Duration = Duration::from_millis(20);
/// How often the tracer looks for quiet pinned threads.
pub(super) const TICK: Duration = Duration::from_millis(10);

#[derive(Clone, Copy)]
struct Thread {
    last_syscall: Instant,
    pinned: bool,
    /// It set its own affinity: never moved again.
    own: bool,
}

/// The placement state of one traced run.
pub(crate) struct Placement {
    /// The set the run was given; `None` when it has a single CPU.
    all: Option<libc::cpu_set_t>,
    /// The tracer's CPU, as a set.
    one: libc::cpu_set_t,
    threads: HashMap<i32, Thread>,
    last_sweep: Instant,
}

extern "C" fn on_tick(_: libc::c_int) {}

fn cpu_count(set: &libc::cpu_set_t) -> u32 {
    // SAFETY: CPU_COUNT reads the set.
    unsafe { libc::CPU_COUNT(set) as u32 }
}

impl Placement {
    /// Pins the calling process (the tracer) and `first`, the stopped
    /// command, to the CPU the tracer runs on and starts the tick timer,
    /// where the run has more than one CPU. Never fails: without it
    /// tracing is only slower.
    pub(crate) fn start(first: i32) -> Placement {
        // SAFETY: a zeroed cpu_set_t is the empty set.
        let mut all: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let mut one: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        let off = Placement {
            all: None,
            one,
            threads: HashMap::new(),
            last_sweep: Instant::now(),
        };
        // SAFETY: a valid set of its own size.
        let got = unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut all) };
        // SAFETY: plain syscall.
        let cpu = unsafe { libc::sched_getcpu() };
        if got != 0 || cpu < 0 || cpu_count(&all) < 2 {
            return off;
        }
        // SAFETY: CPU_SET on a set of its own size (cpu < 1024 since the
        // kernel reported it in a cpu_set_t).
        unsafe { libc::CPU_SET(cpu as usize, &mut one) };
        // SAFETY: as above.
        if unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &one) } != 0 {
            return off;
        }
        // SAFETY: as above, on our stopped child.
        unsafe { libc::sched_setaffinity(first, size_of::<libc::cpu_set_t>(), &one) };
        if !start_timer() {
            // Without the tick a pinned compute-bound thread would stay
            // pinned: give the set back and place nothing.
            // SAFETY: as above.
            unsafe { libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &all) };
            return off;
        }
        Placement {
            all: Some(all),
            one,
            ..off
        }
    }

    /// The run's whole set as `sched_getaffinity` writes it, when placing.
    pub(crate) fn whole_set(&self) -> Option<&[u8]> {
        let all = self.all.as_ref()?;
        // SAFETY: cpu_set_t is plain bytes.
        Some(unsafe {
            std::slice::from_raw_parts(
                (all as *const libc::cpu_set_t).cast::<u8>(),
                size_of::<libc::cpu_set_t>(),
            )
        })
    }

    /// `child` was made by `parent`: it starts where its parent was.
    pub(crate) fn born(&mut self, parent: i32, child: i32) {
        if self.all.is_none() {
            return;
        }
        let mut t = self.thread(parent);
        t.last_syscall = quiet_since();
        self.threads.insert(child, t);
    }

    /// A seccomp stop of `tid`: pins it if it is syscall-bound.
    pub(crate) fn syscall(&mut self, tid: i32) {
        if self.all.is_none() {
            return;
        }
        let now = Instant::now();
        let t = self.thread(tid);
        let fast = now.duration_since(t.last_syscall) < FAST;
        let pin = fast && !t.pinned && !t.own && self.set(tid, &self.one);
        let t = self.threads.entry(tid).or_insert(t);
        t.last_syscall = now;
        t.pinned |= pin;
    }

    /// `tid` sets its own affinity: it is its to keep.
    pub(crate) fn own(&mut self, tid: i32) {
        if self.all.is_none() {
            return;
        }
        let mut t = self.thread(tid);
        t.own = true;
        t.pinned = false;
        self.threads.insert(tid, t);
    }

    /// Whether `tid` would see the pin in `sched_getaffinity`.
    pub(crate) fn hides(&self, tid: i32) -> bool {
        self.all.is_some() && !self.threads.get(&tid).is_some_and(|t| t.own)
    }

    pub(crate) fn gone(&mut self, tid: i32) {
        self.threads.remove(&tid);
    }

    /// Lets go of pinned threads that have been quiet for [`QUIET`]; at
    /// most once a [`TICK`].
    pub(crate) fn sweep(&mut self) {
        let Some(all) = self.all else { return };
        let now = Instant::now();
        if now.duration_since(self.last_sweep) < TICK {
            return;
        }
        self.last_sweep = now;
        let quiet: Vec<i32> = self
            .threads
            .iter()
            .filter(|(_, t)| t.pinned && now.duration_since(t.last_syscall) >= QUIET)
            .map(|(&tid, _)| tid)
            .collect();
        for tid in quiet {
            self.set(tid, &all);
            if let Some(t) = self.threads.get_mut(&tid) {
                t.pinned = false;
            }
        }
    }

    /// A thread not seen yet was started by the command, pinned.
    fn thread(&self, tid: i32) -> Thread {
        self.threads.get(&tid).copied().unwrap_or(Thread {
            last_syscall: quiet_since(),
            pinned: true,
            own: false,
        })
    }

    fn set(&self, tid: i32, set: &libc::cpu_set_t) -> bool {
        // SAFETY: a valid set of its own size; a tid gone meanwhile only
        // makes it fail.
        unsafe { libc::sched_setaffinity(tid, size_of::<libc::cpu_set_t>(), set) == 0 }
    }
}

/// A time [`QUIET`] ago (now, right after boot): a thread not seen making
/// a syscall is let go at the next sweep unless it makes one.
fn quiet_since() -> Instant {
    let now = Instant::now();
    now.checked_sub(QUIET).unwrap_or(now)
}

/// A SIGALRM every [`TICK`], whose handler does nothing but interrupt the
/// tracer's `waitpid` (no `SA_RESTART`), so that [`Placement::sweep`] runs
/// while no tracee stops.
fn start_timer() -> bool {
    // SAFETY: sigaction with a zeroed struct and a handler that does
    // nothing; setitimer with a valid value.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_tick as *const () as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut()) != 0 {
            return false;
        }
        let tick = libc::timeval {
            tv_sec: 0,
            tv_usec: TICK.as_micros() as libc::suseconds_t,
        };
        let t = libc::itimerval {
            it_interval: tick,
            it_value: tick,
        };
        libc::setitimer(libc::ITIMER_REAL, &t, std::ptr::null_mut()) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_is_pinned_when_its_syscalls_come_fast_and_let_go_when_quiet() {
        // The test process's own thread stands for a tracee.
        // SAFETY: gettid.
        let me = unsafe { libc::gettid() };
        let mut p = Placement {
            all: None,
            // SAFETY: zeroed sets.
            one: unsafe { std::mem::zeroed() },
            threads: HashMap::new(),
            last_sweep: Instant::now(),
        };
        // SAFETY: a valid set of its own size.
        let mut all: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut all) };
        // SAFETY: plain syscall.
        let cpu = unsafe { libc::sched_getcpu() } as usize;
        unsafe { libc::CPU_SET(cpu, &mut p.one) };
        p.all = Some(all);
        p.own(me);
        p.threads.get_mut(&me).unwrap().own = false;
        p.threads.get_mut(&me).unwrap().pinned = false;
        p.syscall(me);
        assert!(!p.threads[&me].pinned, "one syscall is not a pattern");
        p.syscall(me);
        assert!(p.threads[&me].pinned, "two syscalls within {FAST:?}");
        let mut now: libc::cpu_set_t = unsafe { std::mem::zeroed() };
        unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut now) };
        assert_eq!(cpu_count(&now), 1);
        p.threads.get_mut(&me).unwrap().last_syscall = quiet_since();
        p.last_sweep = Instant::now().checked_sub(TICK).unwrap();
        p.sweep();
        assert!(!p.threads[&me].pinned);
        unsafe { libc::sched_getaffinity(0, size_of::<libc::cpu_set_t>(), &mut now) };
        assert_eq!(cpu_count(&now), cpu_count(&all));
        assert!(p.hides(me));
        p.own(me);
        assert!(!p.hides(me));
    }
}
