//! The WebSocket client of `/ws` (tungstenite over a plain TCP socket), the frames it
//! receives in either mode, and hand-made frames for malformed input.

use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message, WebSocket};

use super::pictures::unix_now;

/// What the server sent.
#[derive(Debug)]
pub enum WsIn {
    Json(Value),
    Binary(Vec<u8>),
    /// A Close frame (code, reason) or the end of the connection (`None`).
    Closed(Option<(u16, String)>),
}

/// A WebSocket client of `/ws`.
pub struct Ws {
    ws: WebSocket<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    pub fn connect(addr: SocketAddr, path_and_query: &str) -> Ws {
        Ws::try_connect(addr, path_and_query)
            .unwrap_or_else(|e| panic!("WebSocket {path_and_query}: {e}"))
    }

    /// Connects; reads time out after 100 ms (see [`Ws::recv`]), writes after 5 s.
    pub fn try_connect(addr: SocketAddr, path_and_query: &str) -> Result<Ws, tungstenite::Error> {
        let url = format!("ws://{addr}{path_and_query}");
        let (ws, _resp) = tungstenite::connect(url.as_str())?;
        if let MaybeTlsStream::Plain(s) = ws.get_ref() {
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .expect("set read timeout");
            s.set_write_timeout(Some(Duration::from_secs(5)))
                .expect("set write timeout");
            // Small client messages go out at once.
            let _ = s.set_nodelay(true);
        }
        Ok(Ws { ws })
    }

    /// Like [`Ws::connect`], over a socket whose receive buffer is set to `rcvbuf` bytes
    /// before connecting (so the TCP window stays that small: a client that stops
    /// reading fills it, and then the server's send buffer, quickly).
    pub fn connect_with_rcvbuf(addr: SocketAddr, path_and_query: &str, rcvbuf: usize) -> Ws {
        use socket2::{Domain, Socket, Type};
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
        socket.set_recv_buffer_size(rcvbuf).expect("set SO_RCVBUF");
        socket
            .connect_timeout(&addr.into(), Duration::from_secs(5))
            .unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
        let stream: TcpStream = socket.into();
        stream
            .set_read_timeout(Some(Duration::from_millis(100)))
            .expect("set read timeout");
        stream
            .set_write_timeout(Some(Duration::from_secs(5)))
            .expect("set write timeout");
        let url = format!("ws://{addr}{path_and_query}");
        let (ws, _resp) = tungstenite::client(url.as_str(), MaybeTlsStream::Plain(stream))
            .unwrap_or_else(|e| panic!("WebSocket {path_and_query} (SO_RCVBUF {rcvbuf}): {e}"));
        Ws { ws }
    }

    /// The client's end of the connection (for `/proc/net/tcp` look-ups).
    pub fn local_addr(&self) -> SocketAddr {
        self.tcp().local_addr().expect("local addr")
    }

    /// A second handle on the socket, to write raw bytes (hand-made frames) that
    /// tungstenite would refuse to send, or to shut it down from another thread. Do not
    /// interleave writes with [`Ws::send`].
    pub fn raw_stream(&self) -> TcpStream {
        self.tcp().try_clone().expect("clone the socket")
    }

    /// Sets how long one [`Ws::read_message`] may wait (100 ms after connect).
    pub fn set_read_timeout(&self, timeout: Duration) -> std::io::Result<()> {
        self.tcp().set_read_timeout(Some(timeout))
    }

    fn tcp(&self) -> &TcpStream {
        match self.ws.get_ref() {
            MaybeTlsStream::Plain(s) => s,
            _ => unreachable!("the kit uses plain ws:// only"),
        }
    }

    pub fn send(&mut self, v: &Value) {
        self.send_text(&v.to_string());
    }

    /// Like [`Ws::send`], an `Err` instead of a panic.
    pub fn try_send(&mut self, v: &Value) -> Result<(), tungstenite::Error> {
        self.ws.send(Message::text(v.to_string()))
    }

    pub fn send_text(&mut self, text: &str) {
        self.ws
            .send(Message::text(text))
            .unwrap_or_else(|e| panic!("WebSocket send {text:?}: {e}"));
    }

    pub fn send_binary(&mut self, data: &[u8]) {
        self.ws
            .send(Message::binary(data.to_vec()))
            .unwrap_or_else(|e| panic!("WebSocket send of {} binary bytes: {e}", data.len()));
    }

    /// One message as tungstenite gives it (one read timeout at most): for a receiver
    /// that stamps arrivals itself and parses later.
    pub fn read_message(&mut self) -> Result<Message, tungstenite::Error> {
        self.ws.read()
    }

    /// The next data message or close, waiting at most `timeout`; `None` on timeout.
    pub fn recv(&mut self, timeout: Duration) -> Option<WsIn> {
        let deadline = Instant::now() + timeout;
        loop {
            match self.ws.read() {
                Ok(Message::Text(t)) => {
                    let v = serde_json::from_str(t.as_str())
                        .unwrap_or_else(|e| panic!("server text is not JSON ({e}): {t:?}"));
                    return Some(WsIn::Json(v));
                }
                Ok(Message::Binary(b)) => return Some(WsIn::Binary(b.to_vec())),
                Ok(Message::Close(c)) => {
                    return Some(WsIn::Closed(
                        c.map(|c| (u16::from(c.code), c.reason.to_string())),
                    ))
                }
                Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => {}
                Err(e) if is_timeout(&e) => {}
                Err(
                    tungstenite::Error::ConnectionClosed
                    | tungstenite::Error::AlreadyClosed
                    | tungstenite::Error::Io(_)
                    | tungstenite::Error::Protocol(_),
                ) => return Some(WsIn::Closed(None)),
                Err(e) => panic!("WebSocket read: {e}"),
            }
            if Instant::now() >= deadline {
                return None;
            }
        }
    }

    /// The next JSON message whose `"type"` is `ty`, skipping frames and status pushes
    /// (and binary frames); panics on timeout or close.
    #[track_caller]
    pub fn expect_type(&mut self, ty: &str, timeout: Duration) -> Value {
        let deadline = Instant::now() + timeout;
        let mut skipped = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Some(WsIn::Json(v)) if v["type"] == ty => return v,
                Some(WsIn::Json(v)) => skipped.push(v["type"].to_string()),
                Some(WsIn::Binary(_)) => skipped.push("binary".into()),
                Some(WsIn::Closed(c)) => {
                    panic!("socket closed ({c:?}) while waiting for {ty:?}; skipped {skipped:?}")
                }
                None => panic!("no {ty:?} message within {timeout:?}; skipped {skipped:?}"),
            }
        }
    }

    /// Sends a ping action and waits for the pong; returns what came before it.
    #[track_caller]
    pub fn ping_pong(&mut self, timeout: Duration) -> Vec<WsIn> {
        self.send(&json!({"action": "ping"}));
        let deadline = Instant::now() + timeout;
        let mut before = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Some(WsIn::Json(v)) if v["type"] == "pong" => return before,
                Some(WsIn::Closed(c)) => panic!("socket closed ({c:?}) while waiting for pong"),
                Some(other) => before.push(other),
                None => panic!("no pong within {timeout:?}"),
            }
        }
    }

    pub fn close(mut self) {
        let _ = self.ws.close(None);
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            match self.ws.read() {
                Ok(_) => {}
                Err(e) if is_timeout(&e) => {}
                Err(_) => return,
            }
        }
    }
}

/// Whether a read error is only the socket's read timeout.
pub fn is_timeout(e: &tungstenite::Error) -> bool {
    matches!(e, tungstenite::Error::Io(e) if matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    ))
}

/// A frame received over the WebSocket, in either mode.
#[derive(Debug, Clone)]
pub struct WsFrame {
    pub camera_id: String,
    pub timestamp: f64,
    pub seq: u64,
    pub width: u32,
    pub height: u32,
    pub jpeg: Vec<u8>,
    /// When the client read it.
    pub received: Instant,
    /// The same, in unix seconds.
    pub received_unix: f64,
}

impl WsFrame {
    /// From a text `{"type":"frame",...}` message; panics on a missing or mistyped field.
    pub fn from_json(v: &Value) -> WsFrame {
        WsFrame::parse_json(v).unwrap_or_else(|e| panic!("{e}"))
    }

    /// From a binary message: 2-byte big-endian length N, N bytes of JSON, then JPEG;
    /// panics on a malformed one.
    pub fn from_binary(b: &[u8]) -> WsFrame {
        WsFrame::parse_binary(b).unwrap_or_else(|e| panic!("{e}"))
    }

    /// [`WsFrame::from_json`] with an `Err` for a malformed message.
    pub fn parse_json(v: &Value) -> Result<WsFrame, String> {
        use base64::Engine as _;
        if v["type"] != "frame" {
            return Err(format!("not a frame: {}", short(v)));
        }
        if !v["timestamp"].is_f64() {
            return Err(format!("frame timestamp must be a float: {}", short(v)));
        }
        let data = v["data"]
            .as_str()
            .ok_or_else(|| format!("frame without string data: {}", short(v)))?;
        let jpeg = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| format!("frame data is not base64: {e}"))?;
        WsFrame::with_header(v, jpeg)
    }

    /// [`WsFrame::from_binary`] with an `Err` for a malformed message.
    pub fn parse_binary(b: &[u8]) -> Result<WsFrame, String> {
        if b.len() <= 2 {
            return Err(format!("binary message of {} bytes", b.len()));
        }
        let n = usize::from(u16::from_be_bytes([b[0], b[1]]));
        if b.len() <= 2 + n {
            return Err(format!(
                "binary message of {} bytes cannot hold a {n}-byte header and a JPEG",
                b.len()
            ));
        }
        let header = std::str::from_utf8(&b[2..2 + n])
            .map_err(|e| format!("binary header is not UTF-8: {e}"))?;
        let v: Value = serde_json::from_str(header)
            .map_err(|e| format!("binary header is not JSON ({e}): {header:?}"))?;
        WsFrame::with_header(&v, b[2 + n..].to_vec())
    }

    fn with_header(v: &Value, jpeg: Vec<u8>) -> Result<WsFrame, String> {
        Ok(WsFrame {
            camera_id: get_str(v, "cameraId")?,
            timestamp: get_f64(v, "timestamp")?,
            seq: get_u64(v, "seq")?,
            width: get_u64(v, "width")? as u32,
            height: get_u64(v, "height")? as u32,
            jpeg,
            received: Instant::now(),
            received_unix: unix_now(),
        })
    }
}

/// A JSON value shortened for messages (frames carry long base64 strings).
pub fn short(v: &Value) -> String {
    let s = v.to_string();
    match s.char_indices().nth(300) {
        Some((cut, _)) => format!("{}...", &s[..cut]),
        None => s,
    }
}

fn get_str(v: &Value, k: &str) -> Result<String, String> {
    v[k].as_str()
        .map(str::to_owned)
        .ok_or_else(|| format!("{k:?} is not a string in {}", short(v)))
}

fn get_u64(v: &Value, k: &str) -> Result<u64, String> {
    v[k].as_u64()
        .ok_or_else(|| format!("{k:?} is not an unsigned integer in {}", short(v)))
}

fn get_f64(v: &Value, k: &str) -> Result<f64, String> {
    v[k].as_f64()
        .ok_or_else(|| format!("{k:?} is not a number in {}", short(v)))
}

pub fn field_str(v: &Value, k: &str) -> String {
    get_str(v, k).unwrap_or_else(|e| panic!("{e}"))
}

pub fn field_u64(v: &Value, k: &str) -> u64 {
    get_u64(v, k).unwrap_or_else(|e| panic!("{e}"))
}

pub fn field_f64(v: &Value, k: &str) -> f64 {
    get_f64(v, k).unwrap_or_else(|e| panic!("{e}"))
}

/// Subscribes `ws` (text mode unless `extra` says otherwise) and collects the frames that
/// arrive during `window`, counted from the first frame. Status pushes are skipped.
#[track_caller]
pub fn collect_frames(ws: &mut Ws, window: Duration) -> Vec<WsFrame> {
    let first_timeout = Duration::from_secs(10);
    let mut frames = Vec::new();
    let first = loop {
        match ws.recv(first_timeout) {
            Some(m) => {
                if let Some(f) = as_frame(&m) {
                    break f;
                }
                if let WsIn::Closed(c) = m {
                    panic!("socket closed ({c:?}) before the first frame");
                }
            }
            None => panic!("no frame within {first_timeout:?} of subscribing"),
        }
    };
    let start = first.received;
    frames.push(first);
    let end = start + window;
    while let Some(left) = end.checked_duration_since(Instant::now()) {
        match ws.recv(left) {
            Some(WsIn::Closed(c)) => panic!("socket closed ({c:?}) while collecting frames"),
            Some(m) => {
                if let Some(f) = as_frame(&m) {
                    if f.received <= end {
                        frames.push(f);
                    }
                }
            }
            None => break,
        }
    }
    frames
}

/// The frame in `m`, if it is one (text `type: frame` or binary).
pub fn as_frame(m: &WsIn) -> Option<WsFrame> {
    match m {
        WsIn::Json(v) if v["type"] == "frame" => Some(WsFrame::from_json(v)),
        WsIn::Binary(b) => Some(WsFrame::from_binary(b)),
        _ => None,
    }
}

/// One client-to-server WebSocket frame (RFC 6455 §5.2) with `opcode` and `payload`,
/// masked with `mask` when given (clients must mask; leave it out to break the rule).
pub fn ws_frame(fin: bool, opcode: u8, payload: &[u8], mask: Option<[u8; 4]>) -> Vec<u8> {
    let mut f = vec![(u8::from(fin) << 7) | (opcode & 0x0F)];
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    match payload.len() {
        n if n < 126 => f.push(mask_bit | n as u8),
        n if n <= 0xFFFF => {
            f.push(mask_bit | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(mask_bit | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    match mask {
        Some(m) => {
            f.extend_from_slice(&m);
            f.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => f.extend_from_slice(payload),
    }
    f
}
