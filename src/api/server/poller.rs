//! The poll thread (`http-poll`): it owns the listening socket and every connection that
//! has not sent a complete request head yet (fresh, slow, or idle between keep-alive
//! requests). One readiness poll (`polling::Poller`: epoll on Linux) waits on all of them,
//! so such a socket costs a file descriptor and a few hundred bytes, never a thread. A
//! complete head goes with its connection to the worker pool over a bounded channel; a
//! worker hands a kept-alive connection back through a [`Returner`].
//!
//! Bounds kept here: at most `max_per_peer` open connections per peer address and
//! `max_total` in all (more are refused with 503 and closed); a head of at most
//! [`MAX_HEAD`] bytes (431); a head must arrive within `head_timeout` (408, then close);
//! an idle kept-alive connection is closed quietly after `idle_keep_alive`.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use parking_lot::Mutex;
use polling::{Event, Events, PollMode, Poller};

use crate::api::request::{self, Head, Request, MAX_HEAD};

/// What the poll thread enforces.
#[derive(Debug, Clone)]
pub struct PollLimits {
    pub head_timeout: Duration,
    pub idle_keep_alive: Duration,
    pub max_body: usize,
    pub max_per_peer: usize,
    pub max_total: usize,
    /// Requests served on one keep-alive connection before it is closed.
    pub max_requests: usize,
}

/// The refusal when a peer address has `max_per_peer` connections open.
pub const PEER_CAP_DETAIL: &str = "too many connections from your address";
/// The refusal when `max_total` connections are open.
pub const TOTAL_CAP_DETAIL: &str = "too many connections";
/// The refusal when every worker is busy and the queue is full.
pub const BUSY_DETAIL: &str = "Server is busy";

/// A connection and what has been read from it. It counts against its peer's cap and
/// the overall cap for as long as it lives (peers are told apart by IP address). A
/// WebSocket or MJPEG takeover leaves the count: those sessions have their own caps.
pub struct Conn {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    /// Bytes read and not consumed yet (the start of the next request, when pipelined).
    pub buf: Vec<u8>,
    /// Requests answered on this connection so far.
    pub served: usize,
    _admitted: Admission,
}

/// A complete request head and its connection, for a worker. The stream is in blocking
/// mode.
pub struct Job {
    pub conn: Conn,
    /// The request without its body.
    pub req: Request,
    pub body_len: usize,
    /// When the body must have arrived.
    pub deadline: Instant,
}

/// How workers hand kept-alive connections back to the poll thread.
#[derive(Clone)]
pub struct Returner {
    tx: Sender<Conn>,
    poller: Arc<Poller>,
}

impl Returner {
    /// Gives `conn` (blocking mode, maybe with bytes of its next request) back to the
    /// poll thread; after shutdown it is closed instead.
    pub fn give_back(&self, conn: Conn) {
        if self.tx.send(conn).is_ok() {
            let _ = self.poller.notify();
        }
    }
}

/// The running poll thread. Dropping it ends the thread (closing every connection it
/// holds and the listener) and joins it.
pub struct PollThread {
    poller: Arc<Poller>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PollThread {
    /// Starts `http-poll` on `listener`. Complete heads go to `jobs`; `stop` set (and a
    /// notify) ends it; `on_accept` runs after each batch of accepted connections.
    pub fn spawn(
        listener: TcpListener,
        limits: PollLimits,
        jobs: Sender<Job>,
        stop: Arc<AtomicBool>,
        returns: usize,
        on_accept: impl Fn() + Send + 'static,
    ) -> io::Result<(PollThread, Returner)> {
        let poller = Arc::new(Poller::new()?);
        listener.set_nonblocking(true)?;
        // SAFETY: the listener is deleted from the poller before it is dropped (at the end
        // of `Loop::run`, which owns both).
        unsafe { poller.add_with_mode(&listener, Event::readable(LISTENER), PollMode::Level)? };
        let (back_tx, back_rx) = crossbeam_channel::bounded(returns.max(1));
        let now = Instant::now();
        let state = Loop {
            poller: Arc::clone(&poller),
            listener,
            limits,
            jobs,
            back: back_rx,
            slots: Vec::new(),
            free: Vec::new(),
            counts: Arc::new(Mutex::new(Counts::default())),
            next_sweep: now + FAR,
            accept_paused: None,
            error_logged: None,
        };
        let thread_stop = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("http-poll".into())
            .spawn(move || state.run(&thread_stop, on_accept))?;
        let returner = Returner {
            tx: back_tx,
            poller: Arc::clone(&poller),
        };
        Ok((
            PollThread {
                poller,
                stop,
                thread: Some(thread),
            },
            returner,
        ))
    }
}

impl Drop for PollThread {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.poller.notify();
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                log::error!("thread http-poll panicked");
            }
        }
    }
}

const LISTENER: usize = 0;
/// "No deadline": a wait this long ends anyway, harmlessly.
const FAR: Duration = Duration::from_secs(3600);
/// Connections accepted per wake-up before the others get their turn.
const ACCEPT_BATCH: usize = 256;
/// How long accepting pauses after an error such as EMFILE.
const ACCEPT_PAUSE: Duration = Duration::from_millis(50);

fn key(slot: usize) -> usize {
    slot + 1
}

/// Open connections per peer address and in all.
#[derive(Default)]
struct Counts {
    per_peer: HashMap<IpAddr, usize>,
    total: usize,
}

/// One admitted connection in [`Counts`]; dropping it lets the next one in.
struct Admission {
    counts: Arc<Mutex<Counts>>,
    ip: IpAddr,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut c = self.counts.lock();
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.per_peer.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.per_peer.remove(&self.ip);
            }
        }
    }
}

/// Where a waiting connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// Accepted, nothing received yet: closed quietly at the head deadline.
    Fresh,
    /// Between keep-alive requests: closed quietly after `idle_keep_alive`.
    Idle,
    /// Part of a head has arrived: 408 at the head deadline.
    Head,
}

struct Slot {
    conn: Conn,
    deadline: Instant,
    wait: Wait,
}

struct Loop {
    poller: Arc<Poller>,
    listener: TcpListener,
    limits: PollLimits,
    jobs: Sender<Job>,
    back: Receiver<Conn>,
    /// Waiting connections by slot (poll key - 1); `free` lists the empty slots.
    slots: Vec<Option<Slot>>,
    free: Vec<usize>,
    counts: Arc<Mutex<Counts>>,
    /// No deadline falls before this.
    next_sweep: Instant,
    accept_paused: Option<Instant>,
    error_logged: Option<Instant>,
}

impl Loop {
    fn run(mut self, stop: &AtomicBool, on_accept: impl Fn()) {
        let mut events = Events::new();
        while !stop.load(Ordering::SeqCst) {
            let wake = match self.accept_paused {
                Some(t) => t.min(self.next_sweep),
                None => self.next_sweep,
            };
            events.clear();
            if let Err(e) = self.poller.wait(
                &mut events,
                Some(wake.saturating_duration_since(Instant::now())),
            ) {
                if e.kind() != io::ErrorKind::Interrupted {
                    log::error!("poll failed: {e}");
                    std::thread::sleep(ACCEPT_PAUSE);
                }
            }
            if stop.load(Ordering::SeqCst) {
                break;
            }
            for ev in events.iter() {
                if ev.key == LISTENER {
                    self.accept();
                    on_accept();
                } else {
                    self.readable(ev.key - 1);
                }
            }
            while let Ok(conn) = self.back.try_recv() {
                self.take_back(conn);
            }
            let now = Instant::now();
            if self.accept_paused.is_some_and(|t| now >= t) {
                self.accept_paused = None;
                self.listen(true);
            }
            if now >= self.next_sweep {
                self.sweep(now);
            }
        }
        // Shutdown: every waiting connection is closed now, then the listener.
        for i in 0..self.slots.len() {
            drop(self.remove(i));
        }
        let _ = self.poller.delete(&self.listener);
        log::debug!("poll loop ended");
    }

    fn listen(&self, on: bool) {
        let ev = if on {
            Event::readable(LISTENER)
        } else {
            Event::none(LISTENER)
        };
        if let Err(e) = self
            .poller
            .modify_with_mode(&self.listener, ev, PollMode::Level)
        {
            log::error!("cannot change interest in the listener: {e}");
        }
    }

    fn accept(&mut self) {
        for _ in 0..ACCEPT_BATCH {
            match self.listener.accept() {
                Ok((stream, peer)) => {
                    self.error_logged = None;
                    self.admit(stream, peer);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::ConnectionAborted | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS...: none of them is the end of the server.
                    // Stop watching the listener a little so a lack of descriptors can
                    // clear (it stays readable: watching it would spin).
                    if self
                        .error_logged
                        .is_none_or(|t| t.elapsed() > Duration::from_secs(10))
                    {
                        log::warn!("accept failed: {e}; retrying");
                        self.error_logged = Some(Instant::now());
                    }
                    self.listen(false);
                    self.accept_paused = Some(Instant::now() + ACCEPT_PAUSE);
                    return;
                }
            }
        }
    }

    /// Counts a new connection in, or refuses it when its peer or everyone is at the cap.
    fn admit(&mut self, stream: TcpStream, peer: SocketAddr) {
        let ip = peer.ip().to_canonical();
        let refusal = {
            let mut c = self.counts.lock();
            let from_peer = c.per_peer.get(&ip).copied().unwrap_or(0);
            if c.total >= self.limits.max_total {
                Some(TOTAL_CAP_DETAIL)
            } else if from_peer >= self.limits.max_per_peer {
                Some(PEER_CAP_DETAIL)
            } else {
                c.total += 1;
                *c.per_peer.entry(ip).or_insert(0) += 1;
                None
            }
        };
        if let Some(detail) = refusal {
            log::debug!("{peer}: refused: {detail}");
            answer_and_close(stream, 503, detail);
            return;
        }
        let admitted = Admission {
            counts: Arc::clone(&self.counts),
            ip,
        };
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let _ = stream.set_nodelay(true);
        let conn = Conn {
            stream,
            peer,
            buf: Vec::new(),
            served: 0,
            _admitted: admitted,
        };
        let deadline = Instant::now() + self.limits.head_timeout;
        self.insert(conn, deadline, Wait::Fresh);
    }

    /// Starts watching `conn` (non-blocking); `None` when it could not be registered
    /// (then it is closed).
    fn insert(&mut self, conn: Conn, deadline: Instant, wait: Wait) -> Option<usize> {
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slots.push(None);
                self.slots.len() - 1
            }
        };
        // SAFETY: a registered stream is deleted from the poller before it is dropped or
        // handed on: every slot leaves through `remove`, also at shutdown.
        let added = unsafe {
            self.poller
                .add_with_mode(&conn.stream, Event::readable(key(i)), PollMode::Level)
        };
        if let Err(e) = added {
            log::warn!("{}: cannot watch the connection: {e}", conn.peer);
            self.free.push(i);
            return None;
        }
        self.slots[i] = Some(Slot {
            conn,
            deadline,
            wait,
        });
        self.next_sweep = self.next_sweep.min(deadline);
        Some(i)
    }

    /// Stops watching slot `i` and gives its connection out.
    fn remove(&mut self, i: usize) -> Option<Slot> {
        let slot = self.slots.get_mut(i)?.take()?;
        let _ = self.poller.delete(&slot.conn.stream);
        self.free.push(i);
        Some(slot)
    }

    fn readable(&mut self, i: usize) {
        let head_timeout = self.limits.head_timeout;
        let Some(slot) = self.slots.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        let before = slot.conn.buf.len();
        let mut chunk = [0u8; 4096];
        let mut eof = false;
        while slot.conn.buf.len() <= MAX_HEAD {
            match slot.conn.stream.read(&mut chunk) {
                Ok(0) => {
                    eof = true;
                    break;
                }
                Ok(n) => slot.conn.buf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => {
                    eof = true;
                    break;
                }
            }
        }
        let got = slot.conn.buf.len() > before;
        let mut new_deadline = None;
        if got {
            match slot.wait {
                Wait::Fresh => slot.wait = Wait::Head,
                Wait::Idle => {
                    slot.wait = Wait::Head;
                    slot.deadline = Instant::now() + head_timeout;
                    new_deadline = Some(slot.deadline);
                }
                Wait::Head => {}
            }
        }
        // A head ends with an empty line: parse again only when a line ended (a head
        // that trickles in byte by byte costs one parse per line, not per byte), or on
        // the first bytes (garbage such as a TLS hello is refused at once).
        let line_ended = before == 0 || slot.conn.buf[before.saturating_sub(1)..].contains(&b'\n');
        let full = slot.conn.buf.len() > MAX_HEAD;
        if let Some(d) = new_deadline {
            self.next_sweep = self.next_sweep.min(d);
        }
        if got && (line_ended || full) {
            self.advance(i);
        }
        if eof {
            // The peer closed (or failed) before completing a head. A complete one was
            // handed on above and its slot is gone.
            drop(self.remove(i));
        }
    }

    /// Acts on what slot `i` has buffered: hands a complete head to a worker, answers a
    /// broken one, or keeps waiting.
    fn advance(&mut self, i: usize) {
        let Some(slot) = self.slots.get(i).and_then(Option::as_ref) else {
            return;
        };
        match request::parse_head(&slot.conn.buf, slot.conn.peer, self.limits.max_body) {
            Head::Partial => {}
            Head::Complete {
                req,
                head_len,
                body_len,
            } => {
                if let Some(slot) = self.remove(i) {
                    self.dispatch(slot.conn, req, head_len, body_len);
                }
            }
            Head::Bad(status, detail) => {
                if let Some(slot) = self.remove(i) {
                    log::debug!("{}: {status} {detail}", slot.conn.peer);
                    answer_and_close(slot.conn.stream, status, &detail);
                }
            }
        }
    }

    fn dispatch(&mut self, mut conn: Conn, req: Request, head_len: usize, body_len: usize) {
        conn.buf.drain(..head_len);
        if conn.stream.set_nonblocking(false).is_err() {
            return;
        }
        let job = Job {
            conn,
            req,
            body_len,
            deadline: Instant::now() + self.limits.head_timeout,
        };
        match self.jobs.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(job)) => answer_and_close(job.conn.stream, 503, BUSY_DETAIL),
            // Shutting down: the connection closes.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// A worker answered a request and the connection stays open.
    fn take_back(&mut self, conn: Conn) {
        if conn.served >= self.limits.max_requests || conn.stream.set_nonblocking(true).is_err() {
            return;
        }
        let now = Instant::now();
        if conn.buf.is_empty() {
            self.insert(conn, now + self.limits.idle_keep_alive, Wait::Idle);
        } else if let Some(i) = self.insert(conn, now + self.limits.head_timeout, Wait::Head) {
            // Pipelined: the next head may be complete already.
            self.advance(i);
        }
    }

    /// Ends the connections whose deadline has passed.
    fn sweep(&mut self, now: Instant) {
        let mut next = now + FAR;
        for i in 0..self.slots.len() {
            let Some(slot) = &self.slots[i] else {
                continue;
            };
            if slot.deadline > now {
                next = next.min(slot.deadline);
                continue;
            }
            if let Some(slot) = self.remove(i) {
                if slot.wait == Wait::Head {
                    log::debug!("{}: request head timed out", slot.conn.peer);
                    answer_and_close(slot.conn.stream, 408, "timed out reading the request head");
                }
                // Fresh or idle: closed quietly (dropped).
            }
        }
        // Deadlines a few ms apart share one sweep.
        self.next_sweep = next.max(now + Duration::from_millis(10));
    }
}

/// Writes a short error answer without waiting and closes. Bytes the client already sent
/// are read away first, so that the close is a FIN and not a reset that could destroy
/// the answer before the client reads it.
fn answer_and_close(mut stream: TcpStream, status: u16, detail: &str) {
    let _ = stream.set_nonblocking(true);
    // A fresh or drained socket's send buffer takes these few hundred bytes at once;
    // when it does not, the client was not reading and the answer is cut.
    let _ = stream.write_all(&request::error_bytes(status, detail));
    let _ = stream.shutdown(Shutdown::Write);
    let mut sink = [0u8; 4096];
    for _ in 0..16 {
        match stream.read(&mut sink) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
}
