//! Networking of a sandbox. `Network::Host` shares the host's network
//! namespace (what `docker build` does by default and what apt needs);
//! `Network::None` gets a fresh network namespace in which this module brings
//! up `lo` and nothing else. There is no bridge, no veth, no slirp: a build
//! step either has the host network or none.

use crate::error::{Error, Result};

/// Bring the loopback interface of the current network namespace up
/// (`ioctl(SIOCGIFFLAGS/SIOCSIFFLAGS)` on `lo`); needs CAP_NET_ADMIN in the
/// user namespace owning the network namespace.
pub fn loopback_up() -> Result<()> {
    // SAFETY: plain socket(2); the fd is closed below on every path.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::sys(
            "socket(AF_INET)",
            std::io::Error::last_os_error(),
        ));
    }
    let res = (|| {
        // SAFETY: ifreq is plain old data; zeroed is a valid value.
        let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
        for (d, s) in ifr.ifr_name.iter_mut().zip(b"lo\0") {
            *d = *s as libc::c_char;
        }
        // SAFETY: fd is a socket, ifr a valid ifreq for these requests.
        if unsafe { libc::ioctl(fd, libc::SIOCGIFFLAGS, &mut ifr) } < 0 {
            return Err(Error::sys(
                "ioctl(SIOCGIFFLAGS, lo)",
                std::io::Error::last_os_error(),
            ));
        }
        // SAFETY: the union member written by SIOCGIFFLAGS is ifru_flags.
        unsafe {
            ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
        }
        // SAFETY: as above.
        if unsafe { libc::ioctl(fd, libc::SIOCSIFFLAGS, &ifr) } < 0 {
            return Err(Error::sys(
                "ioctl(SIOCSIFFLAGS, lo)",
                std::io::Error::last_os_error(),
            ));
        }
        Ok(())
    })();
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    res
}
