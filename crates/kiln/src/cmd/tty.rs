//! `kiln run -t`: the command gets a pseudo-terminal's slave as its
//! stdin, stdout and stderr and as its controlling terminal; kiln copies
//! the master to its own stdout and, with `-i`, its stdin to the master.
//! When kiln's stdin is a terminal and `-i` is given it goes to raw mode
//! for the run (keys, Ctrl-C included, reach the command's terminal,
//! which echoes and signals as a terminal does) and is restored after,
//! however the run ends short of kiln being killed. The pty's window size
//! follows kiln's terminal.
//!
//! Without `-t` the command gets no terminal either, as with docker (whose
//! output goes through its daemon): where kiln's stdio is a terminal it
//! gets a pipe kiln copies from (or, for `-i`, to) instead, so it can
//! neither see a terminal nor act on the caller's (`TIOCSTI`, job control).

use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

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
    // The window size follows kiln's terminal, checked four times a
    // second (kiln's SIGWINCH handler is the sandbox's signal relay).
    let resizing = Arc::new(AtomicBool::new(true));
    let terminal: Option<OwnedFd> = if isatty(std::io::stdout()) {
        std::io::stdout().as_fd().try_clone_to_owned().ok()
    } else if isatty(std::io::stdin()) {
        std::io::stdin().as_fd().try_clone_to_owned().ok()
    } else {
        None
    };
    if let Some(terminal) = terminal {
        pty.copy_size_from(terminal.as_fd());
        let master = pty.master.try_clone().context("dup the pty")?;
        let on = resizing.clone();
        std::thread::spawn(move || {
            while on.load(Ordering::Relaxed) {
                std::thread::sleep(std::time::Duration::from_millis(250));
                kiln_sandbox::pty::copy_size(terminal.as_fd(), master.as_fd());
            }
        });
    }
    let raw = if interactive && isatty(std::io::stdin()) {
        Some(RawMode::enter()?)
    } else {
        None
    };
    let output = {
        let master = pty.master.try_clone().context("dup the pty")?;
        std::thread::spawn(move || copy_out(master, false))
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
    resizing.store(false, Ordering::Relaxed);
    let Pty { master, slave } = pty;
    drop(slave);
    finish(sandbox, vec![output]);
    drop(master);
    drop(raw);
    Ok(status)
}

/// Runs `spec` with pipes in place of kiln's stdio where that is a
/// terminal (stdin only with `interactive`; without, the spec's
/// /dev/null stands).
pub fn run_off_terminal(
    sandbox: &Sandbox,
    spec: &RunSpec,
    interactive: bool,
) -> Result<kiln_sandbox::Result<ExitStatus>> {
    let pipe = || -> Result<(OwnedFd, OwnedFd)> {
        rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).context("make a pipe")
    };
    let mut outputs = Vec::new();
    let mut write_ends = [None, None];
    for (i, tty) in [isatty(std::io::stdout()), isatty(std::io::stderr())]
        .into_iter()
        .enumerate()
    {
        if tty {
            let (r, w) = pipe()?;
            write_ends[i] = Some(w);
            outputs.push(std::thread::spawn(move || copy_out(r, i == 1)));
        }
    }
    let mut read_end = None;
    if interactive && isatty(std::io::stdin()) {
        let (r, w) = pipe()?;
        read_end = Some(r);
        // Not joined: it sits in read(stdin) until kiln exits.
        std::thread::spawn(move || copy_stdin(w));
    }
    let status = sandbox.run_with_io(
        spec,
        RunIo {
            stdin: read_end.as_ref().map(|f| f.as_fd()),
            stdout: write_ends[0].as_ref().map(|f| f.as_fd()),
            stderr: write_ends[1].as_ref().map(|f| f.as_fd()),
        },
    );
    drop(write_ends);
    finish(sandbox, outputs);
    Ok(status)
}

/// Waits for the output copies to reach their end. With namespaces the
/// command's every process is gone by now, so the ends come; chroot
/// isolation has no pid namespace, and a process the command left in the
/// background may hold the terminal or pipe open for as long as it lives:
/// there kiln waits two seconds for the last output, then leaves.
fn finish(sandbox: &Sandbox, threads: Vec<std::thread::JoinHandle<()>>) {
    if sandbox.isolation() == kiln_sandbox::Isolation::Chroot {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(2);
        while threads.iter().any(|t| !t.is_finished()) && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        return;
    }
    for t in threads {
        let _ = t.join();
    }
}

/// kiln's stdin into a pipe, closed at its end.
fn copy_stdin(pipe: OwnedFd) {
    let mut pipe = std::fs::File::from(pipe);
    let _ = std::io::copy(&mut std::io::stdin().lock(), &mut pipe);
}

/// The terminal's (or a pipe's) output to kiln's stdout or stderr,
/// unbuffered.
fn copy_out(master: OwnedFd, to_stderr: bool) {
    let mut master = std::fs::File::from(master);
    let mut out: Box<dyn Write> = if to_stderr {
        Box::new(std::io::stderr())
    } else {
        Box::new(std::io::stdout())
    };
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
