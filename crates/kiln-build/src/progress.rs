//! Progress output. Plain mode prints BuildKit-style numbered lines
//! (`#3 [build 2/4] RUN make`, `#3 CACHED`, `#3 DONE 1.2s`), each DONE with
//! the time since the build started, so logs show which steps overlapped.

use std::io::Write;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    Plain,
    Quiet,
}

pub struct Progress {
    mode: ProgressMode,
    start: Instant,
    next: AtomicUsize,
    out: Mutex<Box<dyn Write + Send>>,
}

impl Progress {
    pub fn new(mode: ProgressMode, out: Box<dyn Write + Send>) -> Progress {
        Progress {
            mode,
            start: Instant::now(),
            next: AtomicUsize::new(1),
            out: Mutex::new(out),
        }
    }

    fn line(&self, text: &str) {
        if self.mode == ProgressMode::Quiet {
            return;
        }
        let mut out = self.out.lock().expect("progress lock");
        let _ = writeln!(out, "{text}");
        let _ = out.flush();
    }

    /// Starts a step; returns its number.
    pub fn start(&self, name: &str) -> Step<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.line(&format!("#{id} {name}"));
        Step {
            p: self,
            id,
            began: Instant::now(),
        }
    }

    pub fn note(&self, text: &str) {
        self.line(text);
    }

    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }
}

pub struct Step<'a> {
    p: &'a Progress,
    id: usize,
    began: Instant,
}

impl Step<'_> {
    pub fn cached(self) {
        self.p.line(&format!("#{} CACHED", self.id));
    }

    pub fn log(&self, text: &str) {
        self.p.line(&format!(
            "#{} {:.3} {text}",
            self.id,
            self.began.elapsed().as_secs_f64()
        ));
    }

    pub fn done(self) {
        self.p.line(&format!(
            "#{} DONE {:.1}s (at {:.3}s)",
            self.id,
            self.began.elapsed().as_secs_f64(),
            self.p.elapsed()
        ));
    }

    pub fn error(self, msg: &str) {
        self.p.line(&format!("#{} ERROR: {msg}", self.id));
    }
}
