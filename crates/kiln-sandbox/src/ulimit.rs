//! Resource limits of a run (`--ulimit NAME=SOFT[:HARD]`, docker's syntax
//! and names), set with `setrlimit` in the worker just before it execs.
//!
//! A limit may only be lowered, or raised up to the hard limit kiln itself
//! runs with: raising a hard limit needs `CAP_SYS_RESOURCE` in the initial
//! user namespace, which a rootless kiln (and root in most containers) does
//! not have. [`Ulimit::check`] says so before anything runs, rather than
//! leaving the worker's `setrlimit` to fail with a bare EPERM.

use crate::error::{Error, Result};

/// docker's names (go-units' `ulimitNameMapping`) and their resources.
const NAMES: &[(&str, libc::__rlimit_resource_t)] = &[
    ("core", libc::RLIMIT_CORE),
    ("cpu", libc::RLIMIT_CPU),
    ("data", libc::RLIMIT_DATA),
    ("fsize", libc::RLIMIT_FSIZE),
    ("locks", libc::RLIMIT_LOCKS),
    ("memlock", libc::RLIMIT_MEMLOCK),
    ("msgqueue", libc::RLIMIT_MSGQUEUE),
    ("nice", libc::RLIMIT_NICE),
    ("nofile", libc::RLIMIT_NOFILE),
    ("nproc", libc::RLIMIT_NPROC),
    ("rss", libc::RLIMIT_RSS),
    ("rtprio", libc::RLIMIT_RTPRIO),
    ("rttime", libc::RLIMIT_RTTIME),
    ("sigpending", libc::RLIMIT_SIGPENDING),
    ("stack", libc::RLIMIT_STACK),
];

/// One `--ulimit`: `None` is unlimited (docker's `-1`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ulimit {
    pub name: String,
    pub soft: Option<u64>,
    pub hard: Option<u64>,
}

impl Ulimit {
    /// `NAME=SOFT[:HARD]`; HARD defaults to SOFT and `-1` is unlimited, as
    /// with docker.
    pub fn parse(spec: &str) -> Result<Ulimit> {
        let bad = |why: String| Error::Ulimit(format!("--ulimit {spec:?}: {why}"));
        let (name, values) = spec
            .split_once('=')
            .ok_or_else(|| bad("expected NAME=SOFT[:HARD], e.g. nofile=1024:2048".into()))?;
        if resource(name).is_none() {
            let names: Vec<&str> = NAMES.iter().map(|(n, _)| *n).collect();
            return Err(bad(format!(
                "unknown limit {name:?} (known: {})",
                names.join(", ")
            )));
        }
        let number = |v: &str| -> Result<Option<u64>> {
            match v.trim() {
                "-1" | "unlimited" => Ok(None),
                n => n
                    .parse::<u64>()
                    .map(Some)
                    .map_err(|_| bad(format!("{n:?} is not a number (or -1 for unlimited)"))),
            }
        };
        let parts: Vec<&str> = values.split(':').collect();
        let (soft, hard) = match parts.as_slice() {
            [s] => (number(s)?, number(s)?),
            [s, h] => (number(s)?, number(h)?),
            _ => return Err(bad("expected at most SOFT:HARD".into())),
        };
        if let (Some(s), Some(h)) = (soft, hard)
            && s > h
        {
            return Err(bad(format!(
                "the soft limit {s} is above the hard limit {h}"
            )));
        }
        if let (None, Some(h)) = (soft, hard) {
            return Err(bad(format!(
                "an unlimited soft limit is above the hard limit {h}"
            )));
        }
        Ok(Ulimit {
            name: name.to_string(),
            soft,
            hard,
        })
    }

    /// Refuses a hard limit above the one this process has: the worker
    /// could not set it (raising it needs CAP_SYS_RESOURCE).
    pub fn check(&self) -> Result<()> {
        let current = current_limit(self.resource()?)?;
        let above = match (self.hard, current.rlim_max) {
            (_, libc::RLIM_INFINITY) => false,
            (None, _) => true,
            (Some(h), max) => h > max,
        };
        if above {
            let show = |v: Option<u64>| v.map_or("unlimited".to_string(), |v| v.to_string());
            return Err(Error::Ulimit(format!(
                "--ulimit {}={}:{}: the hard limit is above kiln's own ({}); \
                 raising it needs CAP_SYS_RESOURCE, which kiln does not have here",
                self.name,
                show(self.soft),
                show(self.hard),
                current.rlim_max
            )));
        }
        Ok(())
    }

    pub(crate) fn resource(&self) -> Result<libc::__rlimit_resource_t> {
        resource(&self.name).ok_or_else(|| Error::Ulimit(format!("unknown ulimit {:?}", self.name)))
    }

    pub(crate) fn rlimit(&self) -> libc::rlimit {
        libc::rlimit {
            rlim_cur: self.soft.unwrap_or(libc::RLIM_INFINITY),
            rlim_max: self.hard.unwrap_or(libc::RLIM_INFINITY),
        }
    }
}

impl std::fmt::Display for Ulimit {
    /// As given to docker: `nofile=1024:2048`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |v: Option<u64>| v.map_or("-1".to_string(), |v| v.to_string());
        write!(f, "{}={}:{}", self.name, show(self.soft), show(self.hard))
    }
}

fn resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    NAMES.iter().find(|(n, _)| *n == name).map(|(_, r)| *r)
}

fn current_limit(resource: libc::__rlimit_resource_t) -> Result<libc::rlimit> {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid resource and a valid out pointer.
    if unsafe { libc::getrlimit(resource, &mut cur) } != 0 {
        return Err(Error::sys("getrlimit", std::io::Error::last_os_error()));
    }
    Ok(cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_syntax() {
        let u = Ulimit::parse("nofile=1024:2048").unwrap();
        assert_eq!((u.soft, u.hard), (Some(1024), Some(2048)));
        let u = Ulimit::parse("nproc=64").unwrap();
        assert_eq!((u.soft, u.hard), (Some(64), Some(64)));
        let u = Ulimit::parse("core=-1").unwrap();
        assert_eq!((u.soft, u.hard), (None, None));
        assert_eq!(u.to_string(), "core=-1:-1");
    }

    #[test]
    fn refuses_bad_specs() {
        for bad in [
            "nofile",
            "nofiles=1",
            "nofile=a",
            "nofile=1:2:3",
            "nofile=10:5",
            "nofile=-1:5",
        ] {
            assert!(Ulimit::parse(bad).is_err(), "{bad}");
        }
    }
}
