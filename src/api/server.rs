//! The HTTP front end. It owns the listening socket and its threads: one poll thread
//! (`http-poll`, see [`poller`]) waits on the listener and on every connection
//! that has not sent a complete request head, and hands complete heads to a fixed pool
//! of workers (`http-{n}`). A worker reads the body (bounded, with a deadline), answers
//! through the routes with tiny_http's response writer, and gives a kept-alive
//! connection back to the poll thread instead of waiting on it. WebSocket upgrades and
//! MJPEG streams get the plain blocking `TcpStream` and run on their own threads, so
//! those keep read/write timeouts, `try_clone` and `shutdown`.
//!
//! Why not `tiny_http::Server`: its accept thread ends for good on the first `accept()`
//! error (EMFILE), its pool grows without bound, a slow client holds a thread, and
//! `upgrade()` returns a stream without timeouts that cannot be split into a reader and
//! a writer.

use std::io;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use parking_lot::Mutex;

pub mod poller;

use super::request::{self, Persist, ReadOutcome, Reply};
use super::router;
use super::Ctx;
use poller::{Conn, Job, PollLimits, PollThread, Returner};

pub use super::request::with_common_headers;

/// The running front end. Dropping it (or [`Server::stop`]) stops accepting, closes the
/// waiting connections, ends long-lived sessions and joins every thread.
pub struct Server {
    addr: SocketAddr,
    ctx: Arc<Ctx>,
    /// `None` once stopped.
    poll: Option<PollThread>,
    workers: Vec<JoinHandle<()>>,
    /// The connection each worker serves now, so shutdown can end a body read at once
    /// instead of waiting for its deadline.
    serving: Arc<Vec<Mutex<Option<TcpStream>>>>,
    /// The open-connection cap in force.
    max_connections: usize,
}

/// Complete heads waiting for a worker; beyond this the server answers 503 at once.
const QUEUE: usize = 64;
/// Requests served on one keep-alive connection before it is closed.
const MAX_REQUESTS_PER_CONNECTION: usize = 1000;
/// Descriptors kept free of connections for cameras, GStreamer, sessions and files.
const FD_RESERVE: u64 = 256;
/// The overall connection cap never derives above this (each costs kernel memory).
const DERIVED_MAX_CONNECTIONS: u64 = 65_536;

impl Server {
    /// Binds and starts serving.
    pub fn start(ctx: Arc<Ctx>) -> io::Result<Server> {
        let limits = &ctx.config.limits;
        let fd_limit = match raise_fd_limit() {
            Ok(n) => n,
            Err(e) => {
                log::warn!("cannot read the file descriptor limit: {e}");
                1024
            }
        };
        let max_connections = match limits.max_connections {
            0 => fd_limit
                .saturating_sub(FD_RESERVE)
                .clamp(64, DERIVED_MAX_CONNECTIONS) as usize,
            n => n,
        };
        log::info!(
            "open files: at most {fd_limit}; connections: at most {max_connections}, {} per peer",
            limits.max_conn_per_peer
        );
        let listener = TcpListener::bind((ctx.config.bind, ctx.config.port))?;
        let addr = listener.local_addr()?;
        let (tx, rx) = crossbeam_channel::bounded::<Job>(QUEUE);
        let reaper = Arc::clone(&ctx);
        let (poll, returner) = PollThread::spawn(
            listener,
            PollLimits {
                head_timeout: limits.head_timeout,
                idle_keep_alive: limits.idle_keep_alive,
                max_body: limits.max_body_bytes,
                max_per_peer: limits.max_conn_per_peer,
                max_total: max_connections,
                max_requests: MAX_REQUESTS_PER_CONNECTION,
            },
            tx,
            Arc::clone(&ctx.shutdown),
            limits.http_workers,
            move || reaper.sessions.reap(),
        )?;
        let serving: Arc<Vec<Mutex<Option<TcpStream>>>> =
            Arc::new((0..limits.http_workers).map(|_| Mutex::new(None)).collect());
        let mut server = Server {
            addr,
            ctx: Arc::clone(&ctx),
            poll: Some(poll),
            workers: Vec::new(),
            serving,
            max_connections,
        };
        for n in 0..limits.http_workers {
            let rx = rx.clone();
            let ctx = Arc::clone(&ctx);
            let serving = Arc::clone(&server.serving);
            let returner = returner.clone();
            // On failure `server` drops here: what started is stopped and joined.
            server.workers.push(
                std::thread::Builder::new()
                    .name(format!("http-{n}"))
                    .spawn(move || worker(rx, ctx, &serving[n], returner))?,
            );
        }
        Ok(server)
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The open-connection cap in force (configured, or derived from the fd limit).
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// Stops accepting, closes idle connections, ends long-lived sessions (clean
    /// WebSocket close), joins every thread.
    pub fn stop(self) {
        drop(self);
    }

    fn shut_down(&mut self) {
        let Some(poll) = self.poll.take() else {
            return;
        };
        self.ctx.shutdown.store(true, Ordering::SeqCst);
        // The poll thread closes every waiting connection and the listener, and its end
        // of the job queue: idle workers see the queue closed.
        drop(poll);
        // A body being read ends now. A request in progress still gets its answer
        // written (only the read side is shut).
        for slot in self.serving.iter() {
            if let Some(s) = &*slot.lock() {
                let _ = s.shutdown(std::net::Shutdown::Read);
            }
        }
        self.ctx.sessions.shutdown(Duration::from_secs(2));
        for t in self.workers.drain(..) {
            let name = t.thread().name().unwrap_or("?").to_owned();
            if t.join().is_err() {
                log::error!("thread {name} panicked");
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.shut_down();
    }
}

/// Raises the soft limit on open files (RLIMIT_NOFILE) to the hard one, so that idle
/// connections are bounded by our caps rather than by a distribution's default of 1024;
/// returns the soft limit in force.
pub fn raise_fd_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and pass by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < lim.rlim_max {
        let want = libc::rlimit {
            rlim_cur: lim.rlim_max,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &want) } == 0 {
            lim.rlim_cur = lim.rlim_max;
        } else {
            log::warn!(
                "cannot raise the open file limit from {} to {}: {}",
                lim.rlim_cur,
                lim.rlim_max,
                io::Error::last_os_error()
            );
        }
    }
    #[allow(clippy::unnecessary_cast)] // rlim_t is 32 bits on some 32-bit targets
    Ok(lim.rlim_cur as u64)
}

fn worker(rx: Receiver<Job>, ctx: Arc<Ctx>, serving: &Mutex<Option<TcpStream>>, back: Returner) {
    while let Ok(job) = rx.recv() {
        if ctx.shutdown.load(Ordering::SeqCst) {
            break;
        }
        *serving.lock() = job.conn.stream.try_clone().ok();
        // Shutdown may have begun between the check above and the registration.
        if ctx.shutdown.load(Ordering::SeqCst) {
            *serving.lock() = None;
            break;
        }
        let kept = serve(job, &ctx);
        *serving.lock() = None;
        if let Some(conn) = kept {
            back.give_back(conn);
        }
    }
}

/// Reads the body, answers one request; the connection when it stays open.
fn serve(job: Job, ctx: &Arc<Ctx>) -> Option<Conn> {
    let limits = &ctx.config.limits;
    let Job {
        mut conn,
        req,
        body_len,
        deadline,
    } = job;
    let peer = conn.peer;
    let _ = conn.stream.set_write_timeout(Some(limits.write_timeout));
    let req = match request::read_body(&mut conn.stream, &mut conn.buf, req, body_len, deadline) {
        ReadOutcome::Request(r) => r,
        ReadOutcome::Closed => return None,
        ReadOutcome::Bad(status, detail) => {
            if let Reply::Response(r) = request::error(status, detail) {
                let r = with_common_headers(r);
                let _ = request::write_response(&mut conn.stream, r, false, Persist::Close);
            }
            return None;
        }
    };
    // What a takeover (WebSocket, MJPEG) starts with, as before the poll thread.
    let _ = conn.stream.set_read_timeout(Some(limits.idle_keep_alive));
    conn.served += 1;
    let keep_alive = req.keep_alive() && !ctx.shutdown.load(Ordering::SeqCst);
    let head_only = req.method == "HEAD";
    let started = Instant::now();
    let reply = catch_unwind(AssertUnwindSafe(|| router::route(&req, ctx))).unwrap_or_else(|_| {
        log::error!("handler panicked on {} {}", req.method, req.path);
        request::error(500, "Internal server error")
    });
    match reply {
        Reply::Response(r) => {
            let status = r.status_code().0;
            let r = with_common_headers(r);
            let persist = if keep_alive {
                Persist::KeepAlive
            } else {
                Persist::Close
            };
            let ok = request::write_response(&mut conn.stream, r, head_only, persist).is_ok();
            // Paths only: queries may carry a token.
            log::debug!(
                "{peer} {} {} -> {status} in {} ms",
                req.method,
                req.path,
                started.elapsed().as_millis()
            );
            (ok && keep_alive).then_some(conn)
        }
        Reply::Takeover(f) => {
            log::debug!("{peer} {} {} -> taken over", req.method, req.path);
            let leftover = std::mem::take(&mut conn.buf);
            f(conn.stream, leftover);
            None
        }
    }
}
