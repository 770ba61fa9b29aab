//! Networking of a sandbox, the part done inside a network namespace:
//! `lo` up, reject routes, and the resolv.conf a private network needs.
//! `Network::None` gets a fresh namespace with only `lo`;
//! `Network::Private` joins the sandbox's shared private namespace (see
//! [`crate::private_net`]); `Network::Host` is the host's namespace itself.

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

/// The kernel's `struct rtentry` (the SIOCADDRT argument; libc has no glibc
/// definition of it).
#[repr(C)]
struct RtEntry {
    pad1: libc::c_ulong,
    dst: libc::sockaddr,
    gateway: libc::sockaddr,
    genmask: libc::sockaddr,
    flags: libc::c_ushort,
    pad2: libc::c_short,
    pad3: libc::c_ulong,
    pad4: *mut libc::c_void,
    metric: libc::c_short,
    dev: *mut libc::c_char,
    mtu: libc::c_ulong,
    window: libc::c_ulong,
    irtt: libc::c_ushort,
}

fn sockaddr_v4(addr: [u8; 4]) -> libc::sockaddr {
    // SAFETY: plain old data; zeroed is valid.
    let mut sin: libc::sockaddr_in = unsafe { std::mem::zeroed() };
    sin.sin_family = libc::AF_INET as libc::sa_family_t;
    sin.sin_addr.s_addr = u32::from_ne_bytes(addr);
    // SAFETY: sockaddr_in and sockaddr have the same size on Linux.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// Make `net/prefix` unreachable in the current network namespace (a reject
/// route: connecting fails at once with EHOSTUNREACH); needs CAP_NET_ADMIN
/// there.
pub fn reject_route(net: [u8; 4], prefix: u32) -> Result<()> {
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix)
    };
    // SAFETY: plain old data (null pointers are valid: no device).
    let mut rt: RtEntry = unsafe { std::mem::zeroed() };
    rt.dst = sockaddr_v4(net);
    rt.genmask = sockaddr_v4(mask.to_be_bytes());
    rt.flags = libc::RTF_UP | libc::RTF_REJECT;
    // SAFETY: plain socket(2); closed below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(Error::sys(
            "socket(AF_INET)",
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: fd is a socket, rt a valid rtentry.
    let r = unsafe { libc::ioctl(fd, libc::SIOCADDRT, &rt) };
    let err = std::io::Error::last_os_error();
    // SAFETY: fd is ours.
    unsafe { libc::close(fd) };
    if r < 0 {
        return Err(Error::sys("ioctl(SIOCADDRT, reject)", err));
    }
    Ok(())
}

/// The resolv.conf of a private network, from the host's: nameservers on
/// the host's loopback (systemd-resolved's 127.0.0.53, a local dnsmasq) are
/// out of reach there, so they become slirp4netns's forwarder, which relays
/// to them; a file without any nameserver gets the forwarder too.
pub fn private_resolv_conf(host: &str) -> String {
    let mut out = String::new();
    let mut have_forwarder = false;
    let mut any = false;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            let addr = words.next().unwrap_or("");
            let loopback = addr
                .parse::<std::net::IpAddr>()
                .is_ok_and(|a| a.is_loopback());
            any = true;
            if loopback || addr == crate::private_net::SLIRP_DNS {
                if !have_forwarder {
                    out.push_str(&format!("nameserver {}\n", crate::private_net::SLIRP_DNS));
                    have_forwarder = true;
                }
                continue;
            }
        }
        out.push_str(line);
        out.push('\n');
    }
    if !any {
        out.push_str(&format!("nameserver {}\n", crate::private_net::SLIRP_DNS));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::private_resolv_conf;

    #[test]
    fn loopback_nameservers_become_the_forwarder() {
        let host = "# x\nnameserver 127.0.0.53\nnameserver ::1\noptions edns0\nsearch lan\n";
        assert_eq!(
            private_resolv_conf(host),
            "# x\nnameserver 10.0.2.3\noptions edns0\nsearch lan\n"
        );
        let host = "nameserver 10.255.255.53\n";
        assert_eq!(private_resolv_conf(host), host);
        assert_eq!(private_resolv_conf(""), "nameserver 10.0.2.3\n");
    }
}
