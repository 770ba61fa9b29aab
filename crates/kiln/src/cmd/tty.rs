//! `kiln run -t`: the command gets a pseudo-terminal's slave as its
//! stdin, stdout and stderr and as its controlling terminal; kiln copies
//! the master to its own stdout and, with `-i`, its stdin to the master.
//! When kiln's stdin is a terminal and `-i` is given it goes to raw mode
//! for the run (keys, Ctrl-C included, reach the command's terminal,
//! which echoes and signals as a terminal does) and is restored after,
//! however the run ends short of kiln being killed.

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};

use anyhow::{Context, Result};
use kiln_sandbox::pty::Pty;
use kiln_sandbox::{ExitStatus, RunIo, RunSpec, Sandbox};
use rustix::termios::{OptionalActions, Termios, isatty, tcgetattr, tcsetattr};

/// The caller's terminal settings, put back on drop.
struct RawMode {
    saved: Termios,
}

impl RawMode {
    fn enter() -> Result<RawMode> {
        let stdin = std::io::stdin();
        let saved = tcgetattr(&stdin).context("read the terminal's settings")?;
        let mut raw = saved.clone();
        raw.make_raw();
        tcsetattr(&stdin, OptionalActions::Now, &raw).context("put the terminal in raw mode")?;
        Ok(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let _ = tcsetattr(std::io::stdin(), OptionalActions::Now, &self.saved);
    }
}

/// Runs `spec` on a new pty; `interactive` relays kiln's stdin to it.
pub fn run_on_pty(
    sandbox: &Sandbox,
    spec: &RunSpec,
    interactive: bool,
) -> Result<kiln_sandbox::Result<ExitStatus>> {
    let pty = Pty::open().context("open a pseudo-terminal")?;
    let stdout = std::io::stdout();
    if isatty(&stdout) {
        pty.copy_size_from(stdout.as_fd());
    } else if isatty(std::io::stdin()) {
        pty.copy_size_from(std::io::stdin().as_fd());
    }
    let raw = if interactive && isatty(std::io::stdin()) {
        Some(RawMode::enter()?)
    } else {
        None
    };
    let output = {
        let master = pty.master.try_clone().context("dup the pty")?;
        std::thread::spawn(move || copy_out(master))
    };
    if interactive {
        let master = pty.master.try_clone().context("dup the pty")?;
        // Not joined: it sits in read(stdin) until kiln exits.
        std::thread::spawn(move || copy_in(master));
    }
    let mut spec = spec.clone();
    spec.tty = true;
    spec.null_stdin = false;
    let slave = pty.slave.as_fd();
    let status = sandbox.run_with_io(
        &spec,
        RunIo {
            stdin: Some(slave),
            stdout: Some(slave),
            stderr: Some(slave),
        },
    );
    // Ours was the last slave fd: the master now reads what is left, then
    // EIO, and the output thread ends.
    let Pty { master, slave } = pty;
    drop(slave);
    let _ = output.join();
    drop(master);
    drop(raw);
    Ok(status)
}

/// The terminal's output to kiln's stdout, unbuffered.
fn copy_out(master: OwnedFd) {
    let mut master = std::fs::File::from(master);
    let mut out = std::io::stdout();
    let mut buf = [0u8; 8192];
    loop {
        match master.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if out.write_all(&buf[..n]).and_then(|()| out.flush()).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // EIO: every slave fd is closed.
            Err(_) => break,
        }
    }
}

/// kiln's stdin to the terminal; at its end, the terminal's end-of-file
/// character (Ctrl-D), so a command reading a line sees the end.
fn copy_in(master: OwnedFd) {
    let mut master = std::fs::File::from(master);
    let mut input = std::io::stdin();
    let mut buf = [0u8; 4096];
    loop {
        match input.read(&mut buf) {
            Ok(0) => {
                let _ = master.write_all(&[0x04]);
                break;
            }
            Ok(n) => {
                if master.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(_) => break,
        }
    }
}
