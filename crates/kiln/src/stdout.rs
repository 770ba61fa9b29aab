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
