//! Long-lived connections (WebSocket viewers, MJPEG streams): caps on how many, their
//! threads (joined on shutdown) and their sockets (shut down if they do not end in time).

use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    WebSocket,
    Stream,
}

struct Entry {
    id: u64,
    kind: Kind,
    socket: Option<TcpStream>,
    handle: JoinHandle<()>,
}

pub struct Sessions {
    entries: Mutex<Vec<Entry>>,
    next_id: AtomicU64,
    max_ws: usize,
    max_streams: usize,
    /// Admitted sessions whose thread is not registered yet (the upgrade answer is being
    /// written): they count against the caps, so concurrent requests cannot overshoot.
    reserved_ws: Arc<AtomicUsize>,
    reserved_streams: Arc<AtomicUsize>,
}

/// Bounds what the kernel queues for one viewer. Autotuning would let it grow to
/// megabytes: for a viewer that falls behind that is seconds of stale pictures queued
/// (latency) and a long wait before its write deadline notices it. 512 KiB still holds
/// several 1080p JPEGs, plenty for a LAN or Wi-Fi link.
pub const VIEWER_SNDBUF: usize = 512 * 1024;

/// Sets the viewer socket options: no Nagle delay, bounded kernel send queue.
pub fn tune_viewer_socket(stream: &TcpStream) {
    let _ = stream.set_nodelay(true);
    let _ = socket2::SockRef::from(stream).set_send_buffer_size(VIEWER_SNDBUF);
}

/// A place under a session cap, held from admission until the session's thread is
/// registered ([`Sessions::spawn`]) or the admission is abandoned (dropped).
pub struct Reservation {
    kind: Kind,
    counter: Arc<AtomicUsize>,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.counter.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Sessions {
    pub fn new(max_ws: usize, max_streams: usize) -> Sessions {
        Sessions {
            entries: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            max_ws,
            max_streams,
            reserved_ws: Arc::new(AtomicUsize::new(0)),
            reserved_streams: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// Live sessions of a kind (finished ones are reaped first).
    pub fn count(&self, kind: Kind) -> usize {
        self.reap();
        self.entries
            .lock()
            .iter()
            .filter(|e| e.kind == kind && !e.handle.is_finished())
            .count()
    }

    /// Admits one more session of `kind` if the cap allows, counting it from now on.
    pub fn reserve(&self, kind: Kind) -> Option<Reservation> {
        self.reap();
        let (max, counter) = match kind {
            Kind::WebSocket => (self.max_ws, &self.reserved_ws),
            Kind::Stream => (self.max_streams, &self.reserved_streams),
        };
        // Under the entries lock: registration moves a session from reserved to
        // entries under the same lock, so it is never counted twice or not at all.
        let entries = self.entries.lock();
        let live = entries
            .iter()
            .filter(|e| e.kind == kind && !e.handle.is_finished())
            .count();
        if live + counter.load(Ordering::SeqCst) >= max {
            return None;
        }
        counter.fetch_add(1, Ordering::SeqCst);
        Some(Reservation {
            kind,
            counter: Arc::clone(counter),
        })
    }

    /// Runs `f` on a new named thread, tracked until it ends; takes the place reserved.
    pub fn spawn(
        &self,
        reservation: Reservation,
        name: String,
        socket: &TcpStream,
        f: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<()> {
        let handle = std::thread::Builder::new().name(name).spawn(f)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut entries = self.entries.lock();
        entries.push(Entry {
            id,
            kind: reservation.kind,
            socket: socket.try_clone().ok(),
            handle,
        });
        drop(reservation);
        Ok(())
    }

    /// Joins sessions that ended.
    pub fn reap(&self) {
        let done: Vec<Entry> = {
            let mut entries = self.entries.lock();
            let (done, live): (Vec<_>, Vec<_>) =
                entries.drain(..).partition(|e| e.handle.is_finished());
            *entries = live;
            done
        };
        for e in done {
            if e.handle.join().is_err() {
                log::error!("session {} panicked", e.id);
            }
        }
    }

    /// Waits up to `grace` for sessions to end by themselves (they watch the shutdown
    /// flag and close cleanly), then shuts their sockets down and joins them all.
    pub fn shutdown(&self, grace: Duration) {
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            self.reap();
            if self.entries.lock().is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let entries: Vec<Entry> = self.entries.lock().drain(..).collect();
        for e in &entries {
            if let Some(s) = &e.socket {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        for e in entries {
            if e.handle.join().is_err() {
                log::error!("session {} panicked", e.id);
            }
        }
    }
}
