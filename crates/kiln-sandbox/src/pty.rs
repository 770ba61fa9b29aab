//! A pseudo-terminal for `docker run -t`: the caller keeps the master and
//! relays it to its own terminal; the slave goes to the command as fds
//! 0, 1, 2 ([`crate::RunIo`]) with [`crate::RunSpec::tty`] set.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use crate::error::{Error, Result};

/// Both ends of a new pseudo-terminal, close-on-exec.
pub struct Pty {
    pub master: OwnedFd,
    pub slave: OwnedFd,
}

impl Pty {
    /// Opens a pty pair (`/dev/ptmx`).
    pub fn open() -> Result<Pty> {
        // SAFETY: posix_openpt returns a new fd or -1.
        let m = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
        if m < 0 {
            return Err(Error::sys("posix_openpt", std::io::Error::last_os_error()));
        }
        // SAFETY: m is a fresh fd we own.
        let master = unsafe { OwnedFd::from_raw_fd(m) };
        // SAFETY: plain calls on the master fd; the name buffer is ours.
        let name = unsafe {
            if libc::grantpt(m) != 0 || libc::unlockpt(m) != 0 {
                return Err(Error::sys("unlockpt", std::io::Error::last_os_error()));
            }
            let mut buf = [0 as libc::c_char; 128];
            let r = libc::ptsname_r(m, buf.as_mut_ptr(), buf.len());
            if r != 0 {
                return Err(Error::sys("ptsname", std::io::Error::from_raw_os_error(r)));
            }
            std::ffi::CStr::from_ptr(buf.as_ptr()).to_owned()
        };
        // SAFETY: open of a NUL-terminated path.
        let s = unsafe {
            libc::open(
                name.as_ptr(),
                libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
            )
        };
        if s < 0 {
            return Err(Error::path(
                "open",
                name.to_string_lossy().into_owned(),
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: s is a fresh fd we own.
        let slave = unsafe { OwnedFd::from_raw_fd(s) };
        Ok(Pty { master, slave })
    }

    /// Gives the pty the window size of the terminal `of` (when it is
    /// one); the kernel tells the command with SIGWINCH when it changed.
    pub fn copy_size_from(&self, of: BorrowedFd<'_>) {
        copy_size(of, self.master.as_fd());
    }
}

/// [`Pty::copy_size_from`] with the master as a plain fd (e.g. a clone
/// kept by a thread that follows the caller's terminal).
pub fn copy_size(of: BorrowedFd<'_>, master: BorrowedFd<'_>) {
    // SAFETY: TIOCGWINSZ/TIOCSWINSZ with a valid winsize.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(of.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) == 0 {
            libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}
