//! The HTTP front end. It owns the listening socket: an accept thread hands connections
//! to a fixed pool of workers (`http-{n}`); a worker reads requests with `httparse`,
//! answers through the routes with tiny_http's response writer, and hands WebSocket
//! upgrades and MJPEG streams to their own threads with the plain `TcpStream`, so those
//! keep read/write timeouts, `try_clone` and `shutdown`.
//!
//! Why not `tiny_http::Server`: its accept thread ends for good on the first `accept()`
//! error (EMFILE), its pool grows without bound, and `upgrade()` returns a stream without
//! timeouts that cannot be split into a reader and a writer.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, TrySendError};
use parking_lot::Mutex;

use super::request::{self, header, read_request, ReadOutcome, Reply};
use super::router;
use super::Ctx;

pub struct Server {
    addr: SocketAddr,
    ctx: Arc<Ctx>,
    threads: Vec<JoinHandle<()>>,
    /// The connection each worker serves now, so shutdown can end an idle keep-alive
    /// read at once instead of waiting for its timeout.
    serving: Arc<Vec<Mutex<Option<TcpStream>>>>,
}

/// Connections waiting for a worker; beyond this the server answers 503 at once.
const QUEUE: usize = 64;
/// Requests served on one keep-alive connection before it is closed.
const MAX_REQUESTS_PER_CONNECTION: usize = 1000;

impl Server {
    /// Binds and starts serving.
    pub fn start(ctx: Arc<Ctx>) -> io::Result<Server> {
        let listener = TcpListener::bind((ctx.config.bind, ctx.config.port))?;
        let addr = listener.local_addr()?;
        let (tx, rx) = crossbeam_channel::bounded::<(TcpStream, SocketAddr)>(QUEUE);
        let mut threads = Vec::new();
        let serving: Arc<Vec<Mutex<Option<TcpStream>>>> = Arc::new(
            (0..ctx.config.limits.http_workers)
                .map(|_| Mutex::new(None))
                .collect(),
        );
        for n in 0..ctx.config.limits.http_workers {
            let rx = rx.clone();
            let ctx = Arc::clone(&ctx);
            let serving = Arc::clone(&serving);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("http-{n}"))
                    .spawn(move || worker(rx, ctx, &serving[n]))?,
            );
        }
        let actx = Arc::clone(&ctx);
        threads.push(
            std::thread::Builder::new()
                .name("http-accept".into())
                .spawn(move || {
                    accept_loop(listener, actx, tx);
                })?,
        );
        Ok(Server {
            addr,
            ctx,
            threads,
            serving,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Stops accepting, ends long-lived sessions (clean WebSocket close), joins every
    /// thread.
    pub fn stop(self) {
        self.ctx.shutdown.store(true, Ordering::SeqCst);
        // Wake the accept thread, blocked in accept(), with a connection of our own.
        let wake = match self.addr {
            SocketAddr::V4(a) if a.ip().is_unspecified() => {
                SocketAddr::from(([127, 0, 0, 1], a.port()))
            }
            SocketAddr::V6(a) if a.ip().is_unspecified() => {
                SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, a.port()))
            }
            a => a,
        };
        let _ = TcpStream::connect_timeout(&wake, Duration::from_millis(500));
        // Idle keep-alive connections: their next read ends now. A request in progress
        // still gets its answer written (only the read side is shut).
        for slot in self.serving.iter() {
            if let Some(s) = &*slot.lock() {
                let _ = s.shutdown(std::net::Shutdown::Read);
            }
        }
        self.ctx.sessions.shutdown(Duration::from_secs(2));
        for t in self.threads {
            let name = t.thread().name().unwrap_or("?").to_owned();
            if t.join().is_err() {
                log::error!("thread {name} panicked");
            }
        }
    }
}

fn accept_loop(
    listener: TcpListener,
    ctx: Arc<Ctx>,
    tx: crossbeam_channel::Sender<(TcpStream, SocketAddr)>,
) {
    let mut error_logged: Option<Instant> = None;
    loop {
        let accepted = listener.accept();
        if ctx.shutdown.load(Ordering::SeqCst) {
            break;
        }
        match accepted {
            Ok((stream, peer)) => {
                error_logged = None;
                match tx.try_send((stream, peer)) {
                    Ok(()) => {}
                    Err(TrySendError::Full((mut stream, _))) => {
                        let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
                        let _ = stream.write_all(
                            b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n\
                              Access-Control-Allow-Origin: *\r\nConnection: close\r\nContent-Length: 28\r\n\r\n\
                              {\"detail\":\"Server is busy\"}\n",
                        );
                    }
                    Err(TrySendError::Disconnected(_)) => break,
                }
                ctx.sessions.reap();
            }
            Err(e) => {
                // EMFILE, ENFILE, ENOBUFS, ECONNABORTED...: none of them is the end of
                // the server. Back off a little so a lack of descriptors can clear.
                if error_logged.is_none_or(|t| t.elapsed() > Duration::from_secs(10)) {
                    log::warn!("accept failed: {e}; retrying");
                    error_logged = Some(Instant::now());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
    log::debug!("accept loop ended");
}

fn worker(
    rx: Receiver<(TcpStream, SocketAddr)>,
    ctx: Arc<Ctx>,
    serving: &Mutex<Option<TcpStream>>,
) {
    while let Ok((stream, peer)) = rx.recv() {
        if ctx.shutdown.load(Ordering::SeqCst) {
            break;
        }
        *serving.lock() = stream.try_clone().ok();
        // Shutdown may have begun between the check above and the registration.
        if ctx.shutdown.load(Ordering::SeqCst) {
            break;
        }
        serve_connection(stream, peer, &ctx);
        *serving.lock() = None;
    }
}

fn serve_connection(mut stream: TcpStream, peer: SocketAddr, ctx: &Arc<Ctx>) {
    let limits = &ctx.config.limits;
    let _ = stream.set_nodelay(true);
    let _ = stream.set_read_timeout(Some(limits.idle_keep_alive));
    let _ = stream.set_write_timeout(Some(limits.write_timeout));
    let mut buf = Vec::with_capacity(4096);
    for _ in 0..MAX_REQUESTS_PER_CONNECTION {
        if ctx.shutdown.load(Ordering::SeqCst) {
            return;
        }
        let req = match read_request(&mut stream, &mut buf, peer, limits.max_body_bytes) {
            ReadOutcome::Request(r) => r,
            ReadOutcome::Closed => return,
            ReadOutcome::Bad(status, detail) => {
                if let Reply::Response(r) = request::error(status, detail) {
                    let r = with_common_headers(r, false);
                    let _ = request::write_response(&mut stream, r, false);
                }
                return;
            }
        };
        let keep_alive = req.keep_alive() && !ctx.shutdown.load(Ordering::SeqCst);
        let head_only = req.method == "HEAD";
        let started = Instant::now();
        let reply =
            catch_unwind(AssertUnwindSafe(|| router::route(&req, ctx))).unwrap_or_else(|_| {
                log::error!("handler panicked on {} {}", req.method, req.path);
                request::error(500, "Internal server error")
            });
        match reply {
            Reply::Response(r) => {
                let status = r.status_code().0;
                let r = with_common_headers(r, keep_alive);
                let ok = request::write_response(&mut stream, r, head_only).is_ok();
                // Paths only: queries may carry a token.
                log::debug!(
                    "{peer} {} {} -> {status} in {} ms",
                    req.method,
                    req.path,
                    started.elapsed().as_millis()
                );
                if !ok || !keep_alive {
                    return;
                }
            }
            Reply::Takeover(f) => {
                log::debug!("{peer} {} {} -> taken over", req.method, req.path);
                f(stream, std::mem::take(&mut buf));
                return;
            }
        }
    }
}

/// CORS for every origin, and the connection's fate.
pub fn with_common_headers(r: tiny_http::ResponseBox, keep_alive: bool) -> tiny_http::ResponseBox {
    let r = r
        .with_header(header("Access-Control-Allow-Origin", "*"))
        .with_header(header(
            "Server",
            concat!("ptz-edge/", env!("CARGO_PKG_VERSION")),
        ));
    if keep_alive {
        r
    } else {
        r.with_header(header("Connection", "close"))
    }
}
