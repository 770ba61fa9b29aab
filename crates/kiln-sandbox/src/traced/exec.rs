//! `execve` under traced isolation: the kernel would look a script's
//! interpreter (`#!`) and a dynamically linked program's loader
//! (`PT_INTERP`) up on the host, so the tracer resolves them in the rootfs
//! and runs them explicitly: a script becomes `interp [arg] script args`,
//! as the kernel does it, a dynamic program `loader --argv0 argv0 program
//! args` (glibc's loader), every path in the new argv a container path the
//! loader then opens through the tracer. Up to 4 levels of `#!`. Not done:
//! other loaders' options (musl's), `/proc/self/exe` (names the loader).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

use libc::user_regs_struct as Regs;
use rustix::io::Errno;

use super::mem::{PATH_MAX, Scratch, arg, read_u64s, set_arg};
use super::paths::{Target, show};
use super::tracer::{Action, PathArg, Set, Tracer};

/// An argv string: the caller's (a pointer in its memory) or ours.
pub(super) enum Arg {
    Old(u64),
    New(Vec<u8>),
}

impl Tracer {
    /// `execve`: the program resolved in the rootfs; a script's or a
    /// dynamically linked program's interpreter run explicitly.
    pub(super) fn exec(
        &self,
        pid: i32,
        r: &mut Regs,
        s: &mut Scratch,
        p: PathArg,
        argv_at: usize,
    ) -> Result<Action, Errno> {
        let Some((t, given)) = self.resolve(pid, r, p)? else {
            return Err(Errno::NOENT);
        };
        let Target::Container(prog) = t else {
            return Err(Errno::ACCESS);
        };
        let argv_ptrs = match arg(r, argv_at) {
            0 => Vec::new(),
            at => read_u64s(pid, at, 1 << 16)?,
        };
        let mut args: Vec<Arg> = argv_ptrs.iter().map(|&p| Arg::Old(p)).collect();
        let mut file = prog;
        let mut name = given;
        let mut rewritten = false;
        for _ in 0..4 {
            let host = self.root.host_of(&file);
            let Some(head) = read_head(&host) else { break };
            if let Some((interp, opt)) = shebang(&head) {
                // [interp, opt?, script as given, argv[1..]], as the kernel.
                let mut new = vec![Arg::New(interp.clone())];
                new.extend(opt.map(Arg::New));
                new.push(Arg::New(name));
                new.extend(args.drain(..).skip(1));
                args = new;
                rewritten = true;
                let base = self.base(pid, None)?;
                match self
                    .root
                    .resolve(&Set(&self.traced), pid, &base, &interp, true)?
                {
                    Target::Container(c) => file = c,
                    Target::Host(_) => return Err(Errno::ACCESS),
                }
                name = interp;
                continue;
            }
            if let Some(interp) = elf_interp(&host, &head) {
                // [loader, --argv0, argv0, program, argv[1..]]: the loader
                // opens the program (a container path) through the tracer.
                let mut rest = args.drain(..);
                let argv0 = rest.next().unwrap_or(Arg::New(Vec::new()));
                let mut new = vec![
                    Arg::New(interp.clone()),
                    Arg::New(b"--argv0".to_vec()),
                    argv0,
                    Arg::New(show(&file)),
                ];
                new.extend(rest);
                args = new;
                rewritten = true;
                match self
                    .root
                    .resolve(&Set(&self.traced), pid, &[], &interp, true)?
                {
                    Target::Container(c) => file = c,
                    Target::Host(_) => return Err(Errno::ACCESS),
                }
            }
            break;
        }
        let host = self.root.host_of(&file);
        let file_at = s.put_cstr(&host);
        set_arg(r, p.1, file_at);
        if rewritten {
            let mut ptrs: Vec<u64> = args
                .iter()
                .map(|a| match a {
                    Arg::Old(p) => *p,
                    Arg::New(b) => s.put_cstr(b),
                })
                .collect();
            ptrs.push(0);
            let bytes: Vec<u8> = ptrs.iter().flat_map(|p| p.to_le_bytes()).collect();
            let at = s.put(bytes);
            set_arg(r, argv_at, at);
        }
        Ok(Action::Continue)
    }
}

/// The first bytes of a file (to find `#!` or an ELF interpreter).
fn read_head(host: &[u8]) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut f = std::fs::File::open(OsStr::from_bytes(host)).ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut buf = vec![0u8; 256];
    let n = f.read(&mut buf).ok()?;
    buf.truncate(n);
    Some(buf)
}

/// `#!interp [arg]`, as Linux parses it (one optional argument).
fn shebang(head: &[u8]) -> Option<(Vec<u8>, Option<Vec<u8>>)> {
    let rest = head.strip_prefix(b"#!")?;
    let line = rest.split(|&b| b == b'\n').next()?;
    let line = line.trim_ascii();
    let (interp, opt) = match line.iter().position(|b| b.is_ascii_whitespace()) {
        Some(i) => (
            &line[..i],
            Some(line[i..].trim_ascii().to_vec()).filter(|o| !o.is_empty()),
        ),
        None => (line, None),
    };
    if interp.is_empty() {
        return None;
    }
    Some((interp.to_vec(), opt))
}

/// The `PT_INTERP` of an x86_64 ELF file, if it has one.
fn elf_interp(host: &[u8], head: &[u8]) -> Option<Vec<u8>> {
    use std::io::{Read, Seek, SeekFrom};
    if head.len() < 64 || &head[..4] != b"\x7fELF" || head[4] != 2 || head[5] != 1 {
        return None;
    }
    let u16_at = |o: usize| u16::from_le_bytes([head[o], head[o + 1]]);
    let u64_at = |b: &[u8], o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8"));
    if u16_at(18) != 62 {
        return None; // not x86_64: let the kernel say so
    }
    let (phoff, phentsize, phnum) = (u64_at(head, 32), u16_at(54) as u64, u16_at(56) as u64);
    if phentsize < 56 || phnum > 256 {
        return None;
    }
    let mut f = std::fs::File::open(OsStr::from_bytes(host)).ok()?;
    let mut ph = vec![0u8; (phentsize * phnum) as usize];
    f.seek(SeekFrom::Start(phoff)).ok()?;
    f.read_exact(&mut ph).ok()?;
    for i in 0..phnum as usize {
        let e = &ph[i * phentsize as usize..];
        if u32::from_le_bytes(e[0..4].try_into().expect("4")) == 3 {
            let (off, size) = (u64_at(e, 8), u64_at(e, 32));
            if size == 0 || size > PATH_MAX as u64 {
                return None;
            }
            let mut s = vec![0u8; size as usize];
            f.seek(SeekFrom::Start(off)).ok()?;
            f.read_exact(&mut s).ok()?;
            let end = s.iter().position(|&b| b == 0).unwrap_or(s.len());
            s.truncate(end);
            return Some(s);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shebang_lines() {
        assert_eq!(
            shebang(b"#!/bin/sh\necho"),
            Some((b"/bin/sh".to_vec(), None))
        );
        assert_eq!(
            shebang(b"#! /usr/bin/env  python3 -u \n"),
            Some((b"/usr/bin/env".to_vec(), Some(b"python3 -u".to_vec())))
        );
        assert_eq!(shebang(b"#!\n"), None);
        assert_eq!(shebang(b"\x7fELF"), None);
    }
}
