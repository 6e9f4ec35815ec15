//! TCP fixtures on 127.0.0.1: a port where nothing listens, a server that never answers,
//! idle client connections, and the file-descriptor limit they need; one RTSP DESCRIBE
//! (whether an RTSP server is ready).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc;
use std::time::Duration;

/// A TCP port on 127.0.0.1 where nothing listens (bound, then released).
pub fn closed_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let port = l.local_addr().expect("local addr").port();
    drop(l);
    port
}

/// A TCP server on 127.0.0.1 that accepts connections and never answers (a camera that
/// hangs mid-handshake). Returns its port and a channel that gets one message per
/// accepted connection. The accept thread lives until the test process ends.
pub fn silent_server() -> (u16, mpsc::Receiver<()>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let port = l.local_addr().expect("local addr").port();
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name("silent-server".into())
        .spawn(move || {
            let mut held = Vec::new();
            for s in l.incoming().flatten() {
                held.push(s);
                let _ = tx.send(());
            }
        })
        .expect("spawn silent server");
    (port, rx)
}

/// Raises this process's soft limit of open files to its hard limit (children inherit
/// it); returns (soft before, soft now).
pub fn raise_nofile() -> std::io::Result<(libc::rlim_t, libc::rlim_t)> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let before = lim.rlim_cur;
    if lim.rlim_cur < lim.rlim_max {
        lim.rlim_cur = lim.rlim_max;
        // SAFETY: setrlimit reads the struct we own; raising the soft limit up to the hard
        // one needs no privilege.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok((before, lim.rlim_cur))
}

/// Client connections that never send a byte (or only `prefix`, e.g. half a request
/// head), held open until dropped.
pub struct IdleConnections {
    pub sockets: Vec<TcpStream>,
    /// Connect attempts that failed (refused, timed out, out of descriptors), with the
    /// first error.
    pub failed: usize,
    pub first_error: Option<String>,
}

impl IdleConnections {
    /// Opens `n` connections to `addr`, each sending `prefix` (may be empty); every
    /// connect is bounded by `timeout`.
    pub fn open(addr: SocketAddr, n: usize, prefix: &[u8], timeout: Duration) -> IdleConnections {
        use std::io::Write;
        let mut c = IdleConnections {
            sockets: Vec::with_capacity(n),
            failed: 0,
            first_error: None,
        };
        for _ in 0..n {
            let r = TcpStream::connect_timeout(&addr, timeout).and_then(|mut s| {
                if !prefix.is_empty() {
                    s.write_all(prefix)?;
                }
                Ok(s)
            });
            match r {
                Ok(s) => c.sockets.push(s),
                Err(e) => {
                    c.failed += 1;
                    c.first_error.get_or_insert_with(|| e.to_string());
                }
            }
        }
        c
    }

    /// How many of the connections the server has closed (end of stream or reset seen
    /// without waiting, after whatever it sent before).
    pub fn closed_by_server(&self) -> usize {
        use std::io::Read;
        let mut closed = 0;
        for s in &self.sockets {
            if s.set_nonblocking(true).is_err() {
                continue;
            }
            let mut b = [0u8; 4096];
            loop {
                match (&*s).read(&mut b) {
                    Ok(0) => closed += 1,
                    // A reply (e.g. 408) before the close: read on.
                    Ok(_) => continue,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => closed += 1,
                }
                break;
            }
            let _ = s.set_nonblocking(false);
        }
        closed
    }
}

/// One RTSP `DESCRIBE rtsp://ADDR{path}` on a fresh connection: the reply's status code
/// and body (the SDP when 200). Reads are bounded by `timeout`.
pub fn rtsp_describe(
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> Result<(u16, String), String> {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect_timeout(&addr, timeout)
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "DESCRIBE rtsp://{addr}{path} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n"
    )
    .map_err(|e| format!("DESCRIBE: write: {e}"))?;
    let mut got = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(i) = got.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = s
            .read(&mut chunk)
            .map_err(|e| format!("DESCRIBE: read: {e}"))?;
        if n == 0 {
            return Err(format!(
                "DESCRIBE: connection closed after {:?}",
                String::from_utf8_lossy(&got)
            ));
        }
        got.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&got[..head_end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("DESCRIBE: no status in {head:?}"))?;
    let len: usize = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.trim().eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    while got.len() < head_end + len {
        let n = s
            .read(&mut chunk)
            .map_err(|e| format!("DESCRIBE: read the body: {e}"))?;
        if n == 0 {
            return Err("DESCRIBE: body cut short".into());
        }
        got.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&got[head_end..head_end + len]).into_owned();
    Ok((status, body))
}
