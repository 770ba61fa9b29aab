//! Progress output, in BuildKit's formats.
//!
//! - Plain (for CI logs): numbered lines, `#3 [build 2/4] RUN make`, each
//!   line of a RUN's output as `#3 0.512 text` (seconds since the step
//!   began), then `#3 CACHED`, `#3 ERROR: …` or `#3 DONE 1.2s (at 4.567s)`,
//!   the last with the time since the build started, so the log shows which
//!   steps overlapped.
//! - Tty: a view redrawn in place ten times a second (see [`crate::tty`]).
//! - Quiet: nothing.

use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{RecvTimeoutError, Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::tty::{self, Status, StepView};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgressMode {
    Plain,
    Tty,
    Quiet,
}

/// The output and, for the TTY view, the state it draws.
pub(crate) struct Screen {
    pub out: Box<dyn Write + Send>,
    pub steps: Vec<StepView>,
    /// Lines of the last frame, which the next one overwrites.
    pub drawn: usize,
    pub finished: bool,
}

pub struct Progress {
    mode: ProgressMode,
    start: Instant,
    next: AtomicUsize,
    screen: Arc<Mutex<Screen>>,
    ticker: Mutex<Option<(Sender<()>, JoinHandle<()>)>>,
}

const TICK: Duration = Duration::from_millis(100);

impl Progress {
    /// Progress written to `out`; the TTY mode expects `out` to be the
    /// terminal on standard error (its size is read from there).
    pub fn new(mode: ProgressMode, out: Box<dyn Write + Send>) -> Progress {
        let start = Instant::now();
        let screen = Arc::new(Mutex::new(Screen {
            out,
            steps: Vec::new(),
            drawn: 0,
            finished: false,
        }));
        let ticker = (mode == ProgressMode::Tty).then(|| {
            let (stop, ticks) = channel::<()>();
            let screen = Arc::clone(&screen);
            let handle = std::thread::spawn(move || {
                while let Err(RecvTimeoutError::Timeout) = ticks.recv_timeout(TICK) {
                    let mut s = screen.lock().unwrap_or_else(|e| e.into_inner());
                    if s.finished {
                        break;
                    }
                    tty::redraw(&mut s, start, false);
                }
            });
            (stop, handle)
        });
        Progress {
            mode,
            start,
            next: AtomicUsize::new(1),
            screen,
            ticker: Mutex::new(ticker),
        }
    }

    pub fn mode(&self) -> ProgressMode {
        self.mode
    }

    fn screen(&self) -> std::sync::MutexGuard<'_, Screen> {
        // A panic while drawing must not hide the build's own result.
        self.screen.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn line(&self, text: &str) {
        if self.mode != ProgressMode::Plain {
            return;
        }
        let mut s = self.screen();
        let _ = writeln!(s.out, "{text}");
        let _ = s.out.flush();
    }

    /// Starts a step.
    pub fn start(&self, name: &str) -> Step<'_> {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        match self.mode {
            ProgressMode::Plain => self.line(&format!("#{id} {name}")),
            ProgressMode::Tty => self.screen().steps.push(StepView {
                id,
                name: name.to_string(),
                began: Instant::now(),
                took: None,
                status: Status::Running,
                tail: VecDeque::new(),
            }),
            ProgressMode::Quiet => {}
        }
        Step {
            p: self,
            id,
            began: Instant::now(),
            ended: false,
        }
    }

    /// A line that belongs to no step (a warning, say).
    pub fn note(&self, text: &str) {
        match self.mode {
            ProgressMode::Plain => self.line(text),
            ProgressMode::Tty => tty::note(&mut self.screen(), text),
            ProgressMode::Quiet => {}
        }
    }

    pub fn elapsed(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    /// Stops the TTY view and leaves its final state on the screen. Call it
    /// before printing anything else; later calls do nothing.
    pub fn finish(&self) {
        let ticker = self.ticker.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((stop, handle)) = ticker {
            drop(stop);
            let _ = handle.join();
            let mut s = self.screen();
            tty::redraw(&mut s, self.start, true);
            s.finished = true;
        }
    }

    fn update(&self, id: usize, f: impl FnOnce(&mut StepView)) {
        if let Some(v) = self.screen().steps.iter_mut().find(|v| v.id == id) {
            f(v);
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// One step of the build. Dropped without an outcome, it counts as failed.
pub struct Step<'a> {
    p: &'a Progress,
    id: usize,
    began: Instant,
    ended: bool,
}

impl Step<'_> {
    /// Seconds since the step began.
    pub fn elapsed(&self) -> f64 {
        self.began.elapsed().as_secs_f64()
    }

    fn end(&mut self, status: Status) {
        self.ended = true;
        if self.p.mode == ProgressMode::Tty {
            let took = self.began.elapsed();
            self.p.update(self.id, |v| {
                v.status = status;
                v.took = Some(took);
            });
        }
    }

    pub fn cached(mut self) {
        self.p.line(&format!("#{} CACHED", self.id));
        self.end(Status::Cached);
    }

    /// One line of the step's output; returns its time stamp (seconds
    /// since the step began).
    pub fn output(&self, text: &str) -> f64 {
        let at = self.elapsed();
        match self.p.mode {
            ProgressMode::Plain => self.p.line(&format!("#{} {at:.3} {text}", self.id)),
            ProgressMode::Tty => self.p.update(self.id, |v| {
                if v.tail.len() == tty::OUTPUT_LINES {
                    v.tail.pop_front();
                }
                v.tail.push_back(text.to_string());
            }),
            ProgressMode::Quiet => {}
        }
        at
    }

    pub fn done(mut self) {
        self.p.line(&format!(
            "#{} DONE {:.1}s (at {:.3}s)",
            self.id,
            self.elapsed(),
            self.p.elapsed()
        ));
        self.end(Status::Done);
    }

    pub fn error(mut self, msg: &str) {
        self.p.line(&format!("#{} ERROR: {msg}", self.id));
        self.end(Status::Error);
    }
}

impl Drop for Step<'_> {
    fn drop(&mut self) {
        if !self.ended {
            self.p.line(&format!("#{} ERROR", self.id));
            self.end(Status::Error);
        }
    }
}
