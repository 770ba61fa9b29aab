//! A RUN's output: one pipe that the process gets as both stdout and
//! stderr (so their lines keep the order they were written in), read on a
//! thread into lines as they come. Each line goes to the progress log at
//! once; the last [`TAIL_LINES`] are kept for the error of a failing RUN.
//! Memory is bounded: a line longer than [`MAX_LINE`] is cut into pieces.
//!
//! The values of the secrets the RUN mounts are masked (`****`) in every
//! line before it goes anywhere, so a RUN that prints a secret does not put
//! it in the build log.
//!
//! The end of the output is not the pipe's EOF: another sandbox forked at
//! the same time may hold a copy of the write end for a moment, and in
//! chroot isolation a background process may keep it open for good. When
//! the run is over, [`Capture::finish`] wakes the reader, which takes what
//! is still buffered in the pipe and stops.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::thread::{Scope, ScopedJoinHandle};

use rustix::pipe::{PipeFlags, pipe_with};

/// Lines kept for the error of a failing RUN.
pub const TAIL_LINES: usize = 20;
/// A longer line is logged in pieces of this size.
pub const MAX_LINE: usize = 8 * 1024;

/// One line of output and when it came, in seconds since the step began.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputLine {
    pub at: f64,
    pub text: String,
}

/// The running capture: hand [`Capture::writer`] to the sandbox, then call
/// [`Capture::finish`] once the process is done.
pub struct Capture<'scope> {
    write: OwnedFd,
    wake: OwnedFd,
    reader: ScopedJoinHandle<'scope, VecDeque<OutputLine>>,
}

impl<'scope> Capture<'scope> {
    /// Starts the reader thread in `scope`. `emit` gets each line (masked)
    /// and returns its time stamp.
    pub fn start<'env>(
        scope: &'scope Scope<'scope, 'env>,
        secrets: Vec<Vec<u8>>,
        emit: &'scope (dyn Fn(&str) -> f64 + Sync),
    ) -> std::io::Result<Capture<'scope>> {
        let (read, write) = pipe_with(PipeFlags::CLOEXEC)?;
        let (wake_read, wake) = pipe_with(PipeFlags::CLOEXEC)?;
        let masks = masks(&secrets);
        let reader = scope.spawn(move || read_lines(read, wake_read, &masks, emit));
        Ok(Capture {
            write,
            wake,
            reader,
        })
    }

    /// The fd the process writes to (its stdout and stderr).
    pub fn writer(&self) -> BorrowedFd<'_> {
        self.write.as_fd()
    }

    /// Ends the capture and returns the last lines.
    pub fn finish(self) -> VecDeque<OutputLine> {
        let Capture {
            write,
            wake,
            reader,
        } = self;
        drop(write);
        // A byte, not just closing: a sandbox forked meanwhile by another
        // thread may hold a copy of this write end too.
        let _ = rustix::io::write(&wake, b"x");
        drop(wake);
        reader.join().unwrap_or_default()
    }
}

/// The byte strings to mask: each line of each secret (a multi-line secret
/// is printed line by line), longest first so that no shorter one masks
/// part of a longer one.
fn masks(secrets: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = secrets
        .iter()
        .flat_map(|s| s.split(|&b| b == b'\n'))
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
        .filter(|l| l.iter().any(|b| !b.is_ascii_whitespace()))
        .map(<[u8]>::to_vec)
        .collect();
    out.sort_by_key(|m| std::cmp::Reverse(m.len()));
    out.dedup();
    out
}

fn mask(line: &[u8], masks: &[Vec<u8>]) -> Vec<u8> {
    let mut line = line.to_vec();
    for m in masks {
        let mut i = 0;
        let mut out = Vec::with_capacity(line.len());
        while i < line.len() {
            if line[i..].starts_with(m) {
                out.extend_from_slice(b"****");
                i += m.len();
            } else {
                out.push(line[i]);
                i += 1;
            }
        }
        line = out;
    }
    line
}

/// What a terminal would show of one line: a carriage return starts the
/// line over (progress bars), so only the last non-empty part is kept.
fn visible(line: &[u8]) -> &[u8] {
    line.split(|&b| b == b'\r')
        .rfind(|p| !p.is_empty())
        .unwrap_or_default()
}

struct Lines<'a> {
    masks: &'a [Vec<u8>],
    emit: &'a (dyn Fn(&str) -> f64 + Sync),
    tail: VecDeque<OutputLine>,
    partial: Vec<u8>,
}

impl Lines<'_> {
    fn line(&mut self, raw: &[u8]) {
        let masked = mask(raw, self.masks);
        let text = String::from_utf8_lossy(visible(&masked)).into_owned();
        let at = (self.emit)(&text);
        if self.tail.len() == TAIL_LINES {
            self.tail.pop_front();
        }
        self.tail.push_back(OutputLine { at, text });
    }

    fn feed(&mut self, mut chunk: &[u8]) {
        while let Some(nl) = chunk.iter().position(|&b| b == b'\n') {
            if self.partial.is_empty() {
                self.line(&chunk[..nl]);
            } else {
                self.partial.extend_from_slice(&chunk[..nl]);
                let whole = std::mem::take(&mut self.partial);
                self.line(&whole);
            }
            chunk = &chunk[nl + 1..];
        }
        self.partial.extend_from_slice(chunk);
        while self.partial.len() >= MAX_LINE {
            let rest = self.partial.split_off(MAX_LINE);
            let piece = std::mem::replace(&mut self.partial, rest);
            self.line(&piece);
        }
    }

    fn end(mut self) -> VecDeque<OutputLine> {
        if !self.partial.is_empty() {
            let last = std::mem::take(&mut self.partial);
            self.line(&last);
        }
        self.tail
    }
}

fn read_lines(
    read: OwnedFd,
    wake: OwnedFd,
    masks: &[Vec<u8>],
    emit: &(dyn Fn(&str) -> f64 + Sync),
) -> VecDeque<OutputLine> {
    let mut lines = Lines {
        masks,
        emit,
        tail: VecDeque::new(),
        partial: Vec::new(),
    };
    let mut buf = vec![0u8; 64 * 1024];
    let mut woken = false;
    loop {
        if !woken {
            let mut fds = [
                libc::pollfd {
                    fd: read.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
                libc::pollfd {
                    fd: wake.as_raw_fd(),
                    events: libc::POLLIN,
                    revents: 0,
                },
            ];
            // SAFETY: two valid pollfd structs for fds we own.
            let r = unsafe { libc::poll(fds.as_mut_ptr(), 2, -1) };
            if r < 0 {
                if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                    continue;
                }
                break;
            }
            if fds[1].revents != 0 {
                // The run is over: everything its processes wrote is in the
                // pipe. Take it without blocking, then stop.
                woken = true;
                if rustix::fs::fcntl_setfl(&read, rustix::fs::OFlags::NONBLOCK).is_err() {
                    break;
                }
                continue;
            }
        }
        match rustix::io::read(&read, &mut buf) {
            Ok(0) => break,
            Ok(n) => lines.feed(&buf[..n]),
            Err(rustix::io::Errno::INTR) => {}
            Err(_) => break, // EAGAIN once drained, or a real error
        }
    }
    lines.end()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::Mutex;

    fn capture(secrets: Vec<Vec<u8>>, write: impl FnOnce(std::fs::File)) -> Vec<String> {
        let seen = Mutex::new(Vec::new());
        let emit = |l: &str| {
            seen.lock().unwrap().push(l.to_string());
            0.0
        };
        let tail = std::thread::scope(|s| {
            let c = Capture::start(s, secrets, &emit).unwrap();
            let f = std::fs::File::from(c.writer().try_clone_to_owned().unwrap());
            write(f);
            c.finish()
        });
        let seen = seen.into_inner().unwrap();
        assert_eq!(
            tail.iter().map(|l| l.text.clone()).collect::<Vec<_>>(),
            seen[seen.len().saturating_sub(TAIL_LINES)..]
        );
        seen
    }

    #[test]
    fn splits_lines_and_keeps_a_partial_last_one() {
        let seen = capture(Vec::new(), |mut f| {
            f.write_all(b"one\ntw").unwrap();
            f.write_all(b"o\r\nthree").unwrap();
        });
        assert_eq!(seen, ["one", "two", "three"]);
    }

    #[test]
    fn carriage_returns_keep_what_a_terminal_shows() {
        let seen = capture(Vec::new(), |mut f| {
            f.write_all(b" 10%\r 50%\r100%\n").unwrap();
        });
        assert_eq!(seen, ["100%"]);
    }

    #[test]
    fn tail_is_bounded_and_long_lines_are_cut() {
        let seen = capture(Vec::new(), |mut f| {
            for i in 0..100 {
                writeln!(f, "line {i}").unwrap();
            }
            f.write_all(&vec![b'x'; MAX_LINE * 2 + 5]).unwrap();
        });
        assert_eq!(seen.len(), 103);
        assert_eq!(seen[100].len(), MAX_LINE);
        assert_eq!(seen[102], "xxxxx");
    }

    #[test]
    fn secrets_are_masked() {
        let seen = capture(vec![b"hunter2\nline-two\n".to_vec()], |mut f| {
            f.write_all(b"pw=hunter2 and line-two; hunter\n").unwrap();
        });
        assert_eq!(seen, ["pw=**** and ****; hunter"]);
    }

    #[test]
    fn finishes_while_another_process_holds_the_write_end() {
        let mut held = None;
        let seen = capture(Vec::new(), |mut f| {
            f.write_all(b"last words\n").unwrap();
            held = Some(f); // never closed before finish()
        });
        assert_eq!(seen, ["last words"]);
        drop(held);
    }
}
