//! Standard output for command results. Rust ignores SIGPIPE, so `println!`
//! panics when a reader such as `head -1` has closed the pipe; `outln!`
//! ends the process quietly instead, with the status a process killed by
//! SIGPIPE has (141), as docker and every C tool do.

use std::io::{self, Write};

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

impl io::Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::stdout().lock().write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stdout().lock().flush()
    }
}

/// `r`, unless it failed because the reader of standard output went away
/// (`kiln save x | head -c 1`): then the process ends quietly with 141, as
/// `outln!` ends it.
pub fn pipe_closed<T>(r: anyhow::Result<T>) -> anyhow::Result<T> {
    if let Err(e) = &r
        && e.chain().any(|c| {
            c.downcast_ref::<io::Error>()
                .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
        })
    {
        std::process::exit(141);
    }
    r
}
