//! Standard output for command results. Rust ignores SIGPIPE, so `println!`
//! panics when a reader such as `head -1` has closed the pipe; `outln!`
//! ends the process quietly instead, with the status a process killed by
//! SIGPIPE has (141), as docker and every C tool do.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

/// Writes `args` to stdout; a closed pipe ends the process.
pub fn write(args: std::fmt::Arguments<'_>) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        if e.kind() == io::ErrorKind::BrokenPipe {
            std::process::exit(141);
        }
        eprintln!("kiln: writing to standard output: {e}");
        std::process::exit(1);
    }
}

/// `println!` that survives a closed pipe.
macro_rules! outln {
    () => { $crate::stdout::write(format_args!("\n")) };
    ($($arg:tt)*) => { $crate::stdout::write(format_args!("{}\n", format_args!($($arg)*))) };
}

/// Standard output for bytes (an archive, a tar): what `outln!` is for
/// lines. Its errors go back to the writer, so that temp files are
/// cleaned up; then [`pipe_closed`] ends the process as SIGPIPE would.
pub struct Stream;

/// Set when a write to [`Stream`] met a closed pipe: library errors carry
/// their cause in their message (not as a `source` to downcast), so this
/// is how [`pipe_closed`] knows.
static PIPE_CLOSED: AtomicBool = AtomicBool::new(false);

fn noting_closed_pipe<T>(r: io::Result<T>) -> io::Result<T> {
    if r.as_ref()
        .is_err_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    {
        PIPE_CLOSED.store(true, Ordering::Relaxed);
    }
    r
}

impl io::Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        noting_closed_pipe(io::stdout().lock().write(buf))
    }

    fn flush(&mut self) -> io::Result<()> {
        noting_closed_pipe(io::stdout().lock().flush())
    }
}

/// `r`, unless it failed because the reader of standard output went away
/// (`kiln save x | head -c 1`): then the process ends quietly with 141, as
/// `outln!` ends it.
pub fn pipe_closed<T>(r: anyhow::Result<T>) -> anyhow::Result<T> {
    if r.is_err() && PIPE_CLOSED.load(Ordering::Relaxed) {
        std::process::exit(141);
    }
    r
}
