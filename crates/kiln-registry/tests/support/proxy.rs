//! A fault-injecting HTTP/1.1 proxy on 127.0.0.1 between kiln and the real
//! registry. Each request is matched against rules (method + path substring,
//! a number of times) that replace the answer with a status (503, 429 with
//! `Retry-After`), or pass it through but reset the connection, cut the body
//! short, or flip a byte after so many body bytes. Every request is logged
//! (method, path, `Range`) so tests can count resumes.
//!
//! One request per connection (`Connection: close` both ways) keeps it
//! simple: the client opens a new connection for each request.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status and no body; `retry_after` in seconds.
    Status { code: u16, retry_after: Option<u32> },
    /// Pass the head and `n` body bytes through, then reset the connection.
    ResetAfter(usize),
    /// Pass the head and `n` body bytes through, then close cleanly (short body).
    Truncate(usize),
    /// Flip the body byte at this offset.
    Corrupt(usize),
    /// Answer `307 Temporary Redirect` to this URL (object storage).
    Redirect(String),
    /// Pass the request head and `n` bytes of its body on, then reset both
    /// connections (an upload dropped midway).
    ResetRequestAfter(usize),
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub method: String,
    pub path_contains: String,
    pub fault: Fault,
    pub times: usize,
}

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub range: Option<String>,
    pub fault: Option<Fault>,
    /// Whether the request carried an Authorization header.
    pub authorized: bool,
}

pub struct Proxy {
    pub port: u16,
    rules: Arc<Mutex<Vec<Rule>>>,
    log: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    pub fn start(upstream_port: u16) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let rules: Arc<Mutex<Vec<Rule>>> = Arc::default();
        let log: Arc<Mutex<Vec<Seen>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, l, s) = (rules.clone(), log.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if s.load(Ordering::Relaxed) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (r, l) = (r.clone(), l.clone());
                std::thread::spawn(move || {
                    let _ = handle(conn, upstream_port, &r, &l);
                });
            }
        });
        Proxy {
            port,
            rules,
            log,
            stop,
        }
    }

    pub fn host(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn add(&self, method: &str, path_contains: &str, fault: Fault, times: usize) {
        self.rules.lock().unwrap().push(Rule {
            method: method.into(),
            path_contains: path_contains.into(),
            fault,
            times,
        });
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.log.lock().unwrap().clone()
    }

    pub fn clear(&self) {
        self.rules.lock().unwrap().clear();
        self.log.lock().unwrap().clear();
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn read_head(r: &mut impl BufRead) -> std::io::Result<Vec<String>> {
    let mut lines = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        let line = line.trim_end_matches(['\r', '\n']).to_string();
        if line.is_empty() {
            return Ok(lines);
        }
        lines.push(line);
    }
}

fn header<'a>(head: &'a [String], name: &str) -> Option<&'a str> {
    head.iter().skip(1).find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// The head with `Connection: close` instead of whatever it said.
fn rewrite(head: &[String]) -> Vec<u8> {
    let mut out = String::new();
    for (i, l) in head.iter().enumerate() {
        if i > 0
            && l.split_once(':')
                .is_some_and(|(k, _)| k.trim().eq_ignore_ascii_case("connection"))
        {
            continue;
        }
        out.push_str(l);
        out.push_str("\r\n");
    }
    out.push_str("Connection: close\r\n\r\n");
    out.into_bytes()
}

/// Copies a chunked body verbatim (framing included) until its end or
/// until `limit` payload bytes have passed; returns the payload bytes.
fn copy_chunked(r: &mut impl BufRead, w: &mut impl Write, limit: usize) -> std::io::Result<usize> {
    let mut total = 0usize;
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Ok(total);
        }
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16)
            .map_err(|_| std::io::Error::other("bad chunk size"))?;
        if total + size > limit {
            // Pass on only part of this chunk, then stop.
            let part = limit - total;
            w.write_all(format!("{size:x}\r\n").as_bytes())?;
            std::io::copy(&mut r.take(part as u64), w)?;
            return Ok(limit);
        }
        w.write_all(line.as_bytes())?;
        std::io::copy(&mut r.take(size as u64 + 2), w)?;
        total += size;
        if size == 0 {
            return Ok(total);
        }
    }
}

fn reset(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd and a correctly sized option value.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            &linger as *const _ as *const libc::c_void,
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

fn handle(
    client: TcpStream,
    upstream_port: u16,
    rules: &Mutex<Vec<Rule>>,
    log: &Mutex<Vec<Seen>>,
) -> std::io::Result<()> {
    let mut cr = BufReader::new(client.try_clone()?);
    let mut cw = client;
    let head = read_head(&mut cr)?;
    let mut parts = head.first().map(|l| l.split(' ')).into_iter().flatten();
    let method = parts.next().unwrap_or("").to_string();
    let path = parts.next().unwrap_or("").to_string();
    let len: u64 = header(&head, "content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let fault = {
        let mut rules = rules.lock().unwrap();
        rules
            .iter_mut()
            .find(|r| r.times > 0 && r.method == method && path.contains(&r.path_contains))
            .map(|r| {
                r.times -= 1;
                r.fault.clone()
            })
    };
    log.lock().unwrap().push(Seen {
        method: method.clone(),
        path: path.clone(),
        range: header(&head, "range").map(str::to_string),
        fault: fault.clone(),
        authorized: header(&head, "authorization").is_some(),
    });
    if let Some(Fault::Redirect(to)) = &fault {
        std::io::copy(&mut (&mut cr).take(len), &mut std::io::sink())?;
        let resp = format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: {to}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        cw.write_all(resp.as_bytes())?;
        return Ok(());
    }
    let chunked =
        header(&head, "transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked"));
    if let Some(Fault::Status { code, retry_after }) = &fault {
        if chunked {
            copy_chunked(&mut cr, &mut std::io::sink(), usize::MAX)?;
        }
        std::io::copy(&mut (&mut cr).take(len), &mut std::io::sink())?;
        let mut resp =
            format!("HTTP/1.1 {code} Injected\r\nContent-Length: 0\r\nConnection: close\r\n");
        if let Some(s) = retry_after {
            resp.push_str(&format!("Retry-After: {s}\r\n"));
        }
        resp.push_str("\r\n");
        cw.write_all(resp.as_bytes())?;
        return Ok(());
    }
    let up = TcpStream::connect(("127.0.0.1", upstream_port))?;
    let mut uw = up.try_clone()?;
    uw.write_all(&rewrite(&head))?;
    if let Some(Fault::ResetRequestAfter(n)) = &fault {
        let sent = if chunked {
            copy_chunked(&mut cr, &mut uw, *n)?
        } else {
            std::io::copy(&mut (&mut cr).take(*n as u64), &mut uw)? as usize
        };
        let _ = sent;
        uw.flush()?;
        reset(&uw);
        reset(&cw);
        return Ok(());
    }
    if chunked {
        copy_chunked(&mut cr, &mut uw, usize::MAX)?;
    }
    std::io::copy(&mut (&mut cr).take(len), &mut uw)?;
    let mut ur = BufReader::new(up);
    let rhead = read_head(&mut ur)?;
    cw.write_all(&rewrite(&rhead))?;
    let mut sent = 0usize;
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let n = ur.read(&mut buf)?;
        if n == 0 {
            break;
        }
        let chunk = &mut buf[..n];
        match &fault {
            Some(Fault::ResetAfter(k)) | Some(Fault::Truncate(k)) if sent + n >= *k => {
                cw.write_all(&chunk[..k - sent])?;
                cw.flush()?;
                if matches!(fault, Some(Fault::ResetAfter(_))) {
                    reset(&cw);
                } else {
                    let _ = cw.shutdown(Shutdown::Both);
                }
                return Ok(());
            }
            Some(Fault::Corrupt(at)) if *at >= sent && *at < sent + n => {
                chunk[at - sent] ^= 0xff;
            }
            _ => {}
        }
        cw.write_all(chunk)?;
        sent += n;
    }
    Ok(())
}

/// A one-file HTTP server standing in for object storage: it serves `body`
/// for any GET (honouring `Range: bytes=N-`) and records whether each
/// request carried an Authorization header.
pub struct Storage {
    pub port: u16,
    pub authorized: Arc<Mutex<Vec<bool>>>,
}

impl Storage {
    pub fn start(body: Vec<u8>) -> Storage {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let authorized: Arc<Mutex<Vec<bool>>> = Arc::default();
        let seen = authorized.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let Ok(mut r) = conn.try_clone().map(BufReader::new) else {
                    continue;
                };
                let Ok(head) = read_head(&mut r) else {
                    continue;
                };
                seen.lock()
                    .unwrap()
                    .push(header(&head, "authorization").is_some());
                let from: usize = header(&head, "range")
                    .and_then(|v| v.strip_prefix("bytes="))
                    .and_then(|v| v.trim_end_matches('-').parse().ok())
                    .unwrap_or(0)
                    .min(body.len());
                let status = if from > 0 {
                    "206 Partial Content"
                } else {
                    "200 OK"
                };
                let mut w = conn;
                let _ = write!(
                    w,
                    "HTTP/1.1 {status}\r\nContent-Length: {}\r\nContent-Range: bytes {from}-{}/{}\r\nConnection: close\r\n\r\n",
                    body.len() - from,
                    body.len().saturating_sub(1),
                    body.len()
                );
                let _ = w.write_all(&body[from..]);
            }
        });
        Storage { port, authorized }
    }
}
