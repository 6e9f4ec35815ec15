//! Long-lived connections (WebSocket viewers, MJPEG streams): caps on how many, their
//! threads (joined on shutdown) and their sockets (shut down if they do not end in time).

use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
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
}

impl Sessions {
    pub fn new(max_ws: usize, max_streams: usize) -> Sessions {
        Sessions {
            entries: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(1),
            max_ws,
            max_streams,
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

    /// Whether one more session of `kind` is allowed.
    pub fn has_room(&self, kind: Kind) -> bool {
        let max = match kind {
            Kind::WebSocket => self.max_ws,
            Kind::Stream => self.max_streams,
        };
        self.count(kind) < max
    }

    /// Runs `f` on a new named thread, tracked until it ends.
    pub fn spawn(
        &self,
        kind: Kind,
        name: String,
        socket: &TcpStream,
        f: impl FnOnce() + Send + 'static,
    ) -> std::io::Result<()> {
        let handle = std::thread::Builder::new().name(name).spawn(f)?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.entries.lock().push(Entry {
            id,
            kind,
            socket: socket.try_clone().ok(),
            handle,
        });
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
