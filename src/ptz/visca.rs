//! VISCA over IP: frame builders (pure functions), the reply parser, the transports
//! (PTZOptics raw VISCA on TCP 5678 and UDP 1259; the Sony 8-byte header on UDP 52381),
//! and [`ViscaDriver`].
//!
//! Sources: PTZOptics "VISCA over IP Commands" (developer portal, rev. 1.2 and later) for
//! the command bytes and reply forms; Sony "VISCA over IP" chapter of the SRG-300H /
//! BRC-X1000 technical manuals for the UDP header; field reports collected in
//! `shared/notes/ptz-protocols.md` (reply nibbles, G2 refusing cancel, half-open TCP
//! after a power cycle). Every frame builder's test compares bytes with those documents.
//!
//! Replies are matched on their type nibbles, not exact bytes: ACK is `x0 4y FF`,
//! completion `x0 5y FF` (with data for inquiries), error `x0 6y EE FF`, where the
//! first byte is normally `90` but PTZOptics G3 firmware has answered `A0`.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::time::{Duration, Instant};

use super::{
    axis, check_preset, Axis, Position, PresetOp, Protocol, PtzConfig, PtzDriver, PtzError,
};

/// How long the camera may take to answer one command or inquiry. Real G2 cameras
/// answer in 134–149 ms (p50), under 255 ms at worst.
pub const REPLY_TIMEOUT: Duration = Duration::from_secs(1);
/// On UDP, a command without an answer after this long is sent again (a lost datagram).
pub const RESEND_AFTER: Duration = Duration::from_millis(400);
/// TCP connect timeout.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// A slot whose completion never came is forgotten after this long (a preset recall
/// completes only when the camera arrives, which can take several seconds).
const SLOT_STALE: Duration = Duration::from_secs(10);
/// Reconnect backoff.
const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// The longest VISCA message (16 bytes per the VISCA spec; 8-byte Sony header aside).
const MAX_MESSAGE: usize = 16;

/// Camera address 1 over IP: commands start `81`, replies `90` (PTZOptics VISCA doc).
pub const ADDRESS: u8 = 0x81;

// Speed ranges (PTZOptics VISCA doc: pan 01-18h, tilt 01-14h, zoom p 0-7).
pub const PAN_SPEED_MAX: u8 = 0x18;
pub const TILT_SPEED_MAX: u8 = 0x14;
pub const ZOOM_SPEED_MAX: u8 = 7;

/// `81 01 06 01 VV WW 03 03 FF`: the pan-tilt drive "stop" (PTZOptics doc). Stops use
/// this, never VISCA cancel (`8x 2y FF`), which PTZOptics G2 refuses. The speed bytes
/// are ignored for a stop; 01 is the lowest valid value.
pub const PAN_TILT_STOP: [u8; 9] = [0x81, 0x01, 0x06, 0x01, 0x01, 0x01, 0x03, 0x03, 0xFF];
/// `81 01 04 07 00 FF`: zoom stop.
pub const ZOOM_STOP: [u8; 6] = [0x81, 0x01, 0x04, 0x07, 0x00, 0xFF];
/// `81 01 06 04 FF`: pan-tilt home.
pub const HOME: [u8; 5] = [0x81, 0x01, 0x06, 0x04, 0xFF];
/// `81 09 06 12 FF`: pan-tilt position inquiry → `90 50 0w 0w 0w 0w 0z 0z 0z 0z FF`.
pub const PAN_TILT_INQUIRY: [u8; 5] = [0x81, 0x09, 0x06, 0x12, 0xFF];
/// `81 09 04 47 FF`: zoom position inquiry → `90 50 0p 0q 0r 0s FF`.
pub const ZOOM_INQUIRY: [u8; 5] = [0x81, 0x09, 0x04, 0x47, 0xFF];
/// `81 09 04 00 FF`: power inquiry → `90 50 02|03|04 FF`; the keep-alive.
pub const POWER_INQUIRY: [u8; 5] = [0x81, 0x09, 0x04, 0x00, 0xFF];

/// Reply lengths of the inquiries above.
const PAN_TILT_REPLY_LEN: usize = 11;
const ZOOM_REPLY_LEN: usize = 7;
const POWER_REPLY_LEN: usize = 4;

/// `81 01 06 01 VV WW XX YY FF`: continuous pan-tilt drive. XX: 01 left, 02 right,
/// 03 stop; YY: 01 up, 02 down, 03 stop (PTZOptics doc). Speeds are clamped into
/// 01–18h / 01–14h; a stopped axis carries speed 01.
pub fn pan_tilt_drive(pan: Axis, tilt: Axis) -> [u8; 9] {
    let (vv, xx) = match pan {
        Axis::Stop => (1, 0x03),
        Axis::Negative(s) => (s, 0x01),
        Axis::Positive(s) => (s, 0x02),
    };
    let (ww, yy) = match tilt {
        Axis::Stop => (1, 0x03),
        Axis::Positive(s) => (s, 0x01),
        Axis::Negative(s) => (s, 0x02),
    };
    [
        ADDRESS,
        0x01,
        0x06,
        0x01,
        vv.clamp(1, PAN_SPEED_MAX),
        ww.clamp(1, TILT_SPEED_MAX),
        xx,
        yy,
        0xFF,
    ]
}

/// `81 01 04 07 2p FF` tele (in) / `3p` wide (out) / `00` stop, p 0–7 (PTZOptics doc).
pub fn zoom_drive(zoom: Axis) -> [u8; 6] {
    let b = match zoom {
        Axis::Stop => 0x00,
        Axis::Positive(p) => 0x20 | p.min(ZOOM_SPEED_MAX),
        Axis::Negative(p) => 0x30 | p.min(ZOOM_SPEED_MAX),
    };
    [ADDRESS, 0x01, 0x04, 0x07, b, 0xFF]
}

/// `81 01 04 3F 01 pp FF` set / `02 pp` recall (PTZOptics doc). `pp` ≤ 0xFE, so a preset
/// byte can never be mistaken for the terminator.
pub fn preset(op: PresetOp, index: u8) -> [u8; 7] {
    let op = match op {
        PresetOp::Save => 0x01,
        PresetOp::Goto => 0x02,
    };
    [ADDRESS, 0x01, 0x04, 0x3F, op, index.min(0xFE), 0xFF]
}

/// A reply, classified by its type nibble.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `x0 4y FF`: command accepted into slot y.
    Ack(u8),
    /// `x0 5y [data] FF`: command in slot y done, or (y = 0, with data) an inquiry's answer.
    Completion(u8, Vec<u8>),
    /// `x0 6y EE FF`: error EE (02 syntax, 03 buffers full, 04 cancelled, 05 no such
    /// slot, 41 not executable now); 0 when the camera sent no code.
    Error(u8, u8),
    /// Anything else (address-set broadcasts, garbage): ignored.
    Other,
}

/// Classifies one message (terminator included). Lenient on the address byte: any
/// reply address (high bit set) is accepted, because PTZOptics G3 firmware has answered
/// `A0 41 FF` where the documents say `90 41 FF`.
pub fn parse_reply(msg: &[u8]) -> Reply {
    let n = msg.len();
    if !(3..=MAX_MESSAGE).contains(&n) || msg[n - 1] != 0xFF || msg[0] & 0x80 == 0 || msg[0] == 0xFF
    {
        return Reply::Other;
    }
    let slot = msg[1] & 0x0F;
    match msg[1] >> 4 {
        4 if n == 3 => Reply::Ack(slot),
        5 => Reply::Completion(slot, msg[2..n - 1].to_vec()),
        6 => Reply::Error(slot, if n >= 4 { msg[2] } else { 0 }),
        _ => Reply::Other,
    }
}

/// What an error code means, for messages.
pub fn error_text(code: u8) -> &'static str {
    match code {
        0x01 => "message length error",
        0x02 => "syntax error (the camera does not know this command)",
        0x03 => "command buffers full",
        0x04 => "command cancelled",
        0x05 => "no such command slot",
        0x41 => "command not executable now (camera busy, in standby or in a menu)",
        _ => "unknown error",
    }
}

fn error_to_ptz(code: u8) -> PtzError {
    match code {
        0x03 => PtzError::Busy,
        c => PtzError::Camera(format!("VISCA error {c:02X}: {}", error_text(c))),
    }
}

/// Reads `0x 0x 0x 0x` nibbles (high first) as a 16-bit value.
fn nibbles16(data: &[u8]) -> Option<u16> {
    if data.len() != 4 {
        return None;
    }
    data.iter().try_fold(0u16, |acc, &b| {
        (b <= 0x0F).then_some((acc << 4) | u16::from(b))
    })
}

/// Decodes the pan-tilt inquiry's data (8 nibble bytes): pan and tilt, signed 16-bit.
pub fn decode_pan_tilt(data: &[u8]) -> Option<(i32, i32)> {
    if data.len() != 8 {
        return None;
    }
    let pan = nibbles16(&data[..4])? as i16;
    let tilt = nibbles16(&data[4..])? as i16;
    Some((i32::from(pan), i32::from(tilt)))
}

/// Decodes the zoom inquiry's data (4 nibble bytes): 0 (wide) to 0x4000 (optical tele).
pub fn decode_zoom(data: &[u8]) -> Option<i32> {
    nibbles16(data).map(i32::from)
}

/// Encodes a 16-bit value as four nibble bytes (for the simulator and tests).
pub fn encode_nibbles16(v: u16) -> [u8; 4] {
    [
        ((v >> 12) & 0xF) as u8,
        ((v >> 8) & 0xF) as u8,
        ((v >> 4) & 0xF) as u8,
        (v & 0xF) as u8,
    ]
}

// Sony VISCA over IP header (Sony SRG-300H / BRC-X1000 technical manual): payload type
// (2 bytes), payload length (2 bytes), sequence number (4 bytes), all big-endian.
pub const SONY_COMMAND: u16 = 0x0100;
pub const SONY_INQUIRY: u16 = 0x0110;
pub const SONY_REPLY: u16 = 0x0111;
pub const SONY_CONTROL: u16 = 0x0200;
pub const SONY_CONTROL_REPLY: u16 = 0x0201;
/// Control payload `01`: RESET the camera's sequence number.
pub const SONY_RESET: [u8; 1] = [0x01];

/// Prefixes a payload with the Sony header.
pub fn sony_wrap(payload_type: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&payload_type.to_be_bytes());
    out.extend_from_slice(&(payload.len() as u16).to_be_bytes());
    out.extend_from_slice(&seq.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// Splits a Sony datagram into (payload type, sequence number, payload).
pub fn sony_unwrap(datagram: &[u8]) -> Option<(u16, u32, &[u8])> {
    if datagram.len() < 8 {
        return None;
    }
    let ty = u16::from_be_bytes([datagram[0], datagram[1]]);
    let len = usize::from(u16::from_be_bytes([datagram[2], datagram[3]]));
    let seq = u32::from_be_bytes([datagram[4], datagram[5], datagram[6], datagram[7]]);
    let payload = datagram.get(8..8 + len)?;
    Some((ty, seq, payload))
}

/// Splits a byte stream into messages at each `FF`.
#[derive(Default)]
pub(crate) struct Framer {
    buf: Vec<u8>,
}

impl Framer {
    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
        // Garbage without a terminator must not grow without bound.
        if self.buf.len() > 4 * MAX_MESSAGE && !self.buf.contains(&0xFF) {
            self.buf.clear();
        }
    }

    pub(crate) fn next_message(&mut self) -> Option<Vec<u8>> {
        let end = self.buf.iter().position(|&b| b == 0xFF)?;
        let msg: Vec<u8> = self.buf.drain(..=end).collect();
        Some(msg)
    }
}

/// Sets TCP keep-alive so a half-open session (camera power-cycled) is noticed by the
/// kernel too, not only by our inquiries: probes after 5 s idle, every 2 s, 3 tries.
fn set_tcp_keepalive(stream: &TcpStream) -> io::Result<()> {
    let ka = socket2::TcpKeepalive::new()
        .with_time(std::time::Duration::from_secs(5))
        .with_interval(std::time::Duration::from_secs(2))
        .with_retries(3);
    socket2::SockRef::from(stream).set_tcp_keepalive(&ka)
}

/// One message from the camera.
enum Incoming {
    Visca {
        seq: Option<u32>,
        msg: Vec<u8>,
    },
    /// A Sony control reply (RESET acknowledged, or a sequence / message error `0F 0x`).
    Control(Vec<u8>),
}

/// An open transport.
enum Link {
    Tcp { stream: TcpStream, framer: Framer },
    Udp { sock: UdpSocket, framer: Framer },
    Sony { sock: UdpSocket, seq: u32 },
}

impl Link {
    fn open(protocol: Protocol, addr: SocketAddr) -> io::Result<Link> {
        match protocol {
            Protocol::ViscaTcp => {
                let stream = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
                stream.set_nodelay(true)?;
                stream.set_write_timeout(Some(REPLY_TIMEOUT))?;
                Ok(Link::Tcp {
                    stream,
                    framer: Framer::default(),
                })
            }
            Protocol::ViscaUdp | Protocol::ViscaSony => {
                let local: SocketAddr = if addr.is_ipv4() {
                    "0.0.0.0:0".parse().expect("literal address")
                } else {
                    "[::]:0".parse().expect("literal address")
                };
                let sock = UdpSocket::bind(local)?;
                // Connected: only the camera's datagrams arrive, and an ICMP "port
                // unreachable" surfaces as an error instead of a silent timeout.
                sock.connect(addr)?;
                if protocol == Protocol::ViscaUdp {
                    return Ok(Link::Udp {
                        sock,
                        framer: Framer::default(),
                    });
                }
                // A fresh session starts with RESET so the camera accepts our numbering
                // (Sony manual: the sequence number restarts at 0). Its reply is drained
                // like any stray message.
                sock.send(&sony_wrap(SONY_CONTROL, 0, &SONY_RESET))?;
                Ok(Link::Sony { sock, seq: 0 })
            }
            Protocol::Cgi | Protocol::Onvif => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                "not a VISCA transport",
            )),
        }
    }

    fn is_datagram(&self) -> bool {
        !matches!(self, Link::Tcp { .. })
    }

    /// Sends one VISCA message; returns its Sony sequence number, if any.
    fn send(&mut self, msg: &[u8], kind: Kind) -> io::Result<Option<u32>> {
        match self {
            Link::Tcp { stream, .. } => stream.write_all(msg).map(|()| None),
            Link::Udp { sock, .. } => sock.send(msg).map(|_| None),
            Link::Sony { sock, seq } => {
                *seq = seq.wrapping_add(1);
                let ty = match kind {
                    Kind::Command => SONY_COMMAND,
                    Kind::Inquiry => SONY_INQUIRY,
                };
                sock.send(&sony_wrap(ty, *seq, msg)).map(|_| Some(*seq))
            }
        }
    }

    /// Reads into `buf` until `deadline`; a deadline in the past polls without blocking.
    /// `Ok(0)` means nothing arrived.
    fn read_raw(&mut self, buf: &mut [u8], deadline: Instant) -> io::Result<usize> {
        let now = Instant::now();
        let poll = deadline <= now;
        let r = match self {
            Link::Tcp { stream, .. } => {
                if poll {
                    stream.set_nonblocking(true)?;
                } else {
                    stream.set_read_timeout(Some(deadline - now))?;
                }
                let r = stream.read(buf);
                if poll {
                    stream.set_nonblocking(false)?;
                }
                match r {
                    Ok(0) => Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the camera closed the connection",
                    )),
                    r => r,
                }
            }
            Link::Udp { sock, .. } | Link::Sony { sock, .. } => {
                if poll {
                    sock.set_nonblocking(true)?;
                } else {
                    sock.set_read_timeout(Some(deadline - now))?;
                }
                let r = sock.recv(buf);
                if poll {
                    sock.set_nonblocking(false)?;
                }
                r
            }
        };
        match r {
            Ok(n) => Ok(n),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock
                        | io::ErrorKind::TimedOut
                        | io::ErrorKind::Interrupted
                ) =>
            {
                Ok(0)
            }
            Err(e) => Err(e),
        }
    }

    /// The next message, waiting until `deadline` (past: poll once). `Ok(None)`: none.
    fn recv(&mut self, deadline: Instant) -> io::Result<Option<Incoming>> {
        let mut buf = [0u8; 512];
        loop {
            if let Link::Tcp { framer, .. } | Link::Udp { framer, .. } = self {
                if let Some(msg) = framer.next_message() {
                    return Ok(Some(Incoming::Visca { seq: None, msg }));
                }
            }
            let n = self.read_raw(&mut buf, deadline)?;
            if n == 0 {
                if Instant::now() >= deadline {
                    return Ok(None);
                }
                continue;
            }
            match self {
                Link::Tcp { framer, .. } | Link::Udp { framer, .. } => framer.push(&buf[..n]),
                Link::Sony { .. } => match sony_unwrap(&buf[..n]) {
                    Some((SONY_REPLY, seq, payload)) => {
                        return Ok(Some(Incoming::Visca {
                            seq: Some(seq),
                            msg: payload.to_vec(),
                        }))
                    }
                    Some((SONY_CONTROL_REPLY, _, payload)) => {
                        return Ok(Some(Incoming::Control(payload.to_vec())))
                    }
                    _ => log::trace!("VISCA: ignoring a datagram that is not a Sony reply"),
                },
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Command,
    Inquiry,
}

/// Whether a request may wait out the reconnect backoff.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Urgency {
    /// Fail fast while the camera is known to be unreachable.
    Normal,
    /// Try to connect regardless (stops).
    Always,
}

/// A sent message waiting for its answer.
struct Outstanding {
    index: usize,
    bytes: Vec<u8>,
    kind: Kind,
    /// Sony sequence numbers it was sent with (a resend gets a new one).
    seqs: Vec<u32>,
    first_sent: Instant,
    /// Datagram links only: when to send again.
    resend_at: Option<Instant>,
    /// Inquiries: the expected reply length, to tell a late answer to another inquiry apart.
    reply_len: usize,
}

/// How an exchange failed.
enum Failure {
    /// The connection broke.
    Broken(io::Error),
    Timeout,
    Ptz(PtzError),
}

/// A message to send: bytes and, for inquiries, the reply length.
struct Out<'a> {
    bytes: &'a [u8],
    kind: Kind,
    reply_len: usize,
}

/// The connection to one camera, with its command-slot bookkeeping and reconnects.
struct Session {
    id: String,
    protocol: Protocol,
    host: String,
    port: u16,
    link: Option<Link>,
    /// Slots holding an acknowledged command whose completion has not come yet.
    executing: Vec<(u8, Instant)>,
    /// Counts (re)connects, so the driver knows when the camera's state is unknown.
    generation: u64,
    retry_at: Option<Instant>,
    backoff: Duration,
    last_error: Option<String>,
    /// Some cameras never send completions; then slots are not tracked.
    track_slots: bool,
}

impl Session {
    fn new(id: &str, host: &str, cfg: PtzConfig) -> Session {
        Session {
            id: id.to_owned(),
            protocol: cfg.protocol,
            host: host.to_owned(),
            port: cfg.port,
            link: None,
            executing: Vec::new(),
            generation: 0,
            retry_at: None,
            backoff: Duration::ZERO,
            last_error: None,
            track_slots: true,
        }
    }

    fn resolve(&self) -> io::Result<SocketAddr> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address for the host"))
    }

    fn connect(&mut self, urgency: Urgency) -> Result<(), PtzError> {
        if self.link.is_some() {
            return Ok(());
        }
        let now = Instant::now();
        if urgency == Urgency::Normal && self.retry_at.is_some_and(|t| now < t) {
            return Err(PtzError::Camera(format!(
                "not connected to {}:{} ({}); retrying",
                self.host,
                self.port,
                self.last_error.as_deref().unwrap_or("unreachable")
            )));
        }
        match self.resolve().and_then(|a| Link::open(self.protocol, a)) {
            Ok(link) => {
                if let Link::Tcp { stream, .. } = &link {
                    if let Err(e) = set_tcp_keepalive(stream) {
                        log::debug!("{}: PTZ TCP keep-alive not set: {e}", self.id);
                    }
                }
                self.link = Some(link);
                self.generation += 1;
                self.executing.clear();
                self.retry_at = None;
                self.backoff = Duration::ZERO;
                if self.last_error.take().is_some() || self.generation == 1 {
                    log::info!(
                        "{}: PTZ {} connected to {}:{}",
                        self.id,
                        self.protocol,
                        self.host,
                        self.port
                    );
                }
                Ok(())
            }
            Err(e) => {
                self.backoff = (self.backoff * 2).clamp(BACKOFF_MIN, BACKOFF_MAX);
                self.retry_at = Some(Instant::now() + self.backoff);
                let msg = format!("cannot connect to {}:{}: {e}", self.host, self.port);
                log::warn!(
                    "{}: PTZ {msg}; next attempt in {} ms",
                    self.id,
                    self.backoff.as_millis()
                );
                self.last_error = Some(e.to_string());
                Err(PtzError::Camera(msg))
            }
        }
    }

    fn drop_link(&mut self, why: &str) {
        if self.link.take().is_some() {
            log::warn!(
                "{}: PTZ {} connection dropped: {why}",
                self.id,
                self.protocol
            );
            self.last_error = Some(why.to_owned());
        }
        self.executing.clear();
    }

    /// Sends the messages (commands pipelined up to the camera's two slots) and waits for
    /// each one's answer: ACK or completion for a command, the data for an inquiry. A
    /// connection that breaks is reopened once and the whole batch resent: every command
    /// and inquiry here is idempotent (drives, stops, home, presets).
    fn exchange(&mut self, outs: &[Out<'_>], urgency: Urgency) -> Result<Vec<Vec<u8>>, PtzError> {
        for attempt in 0..2 {
            self.connect(urgency)?;
            match self.try_exchange(outs) {
                Ok(results) => return results.into_iter().collect(),
                Err(Failure::Broken(e)) => {
                    self.drop_link(&e.to_string());
                    if attempt == 0 {
                        continue;
                    }
                    return Err(PtzError::Camera(format!("connection lost: {e}")));
                }
                Err(Failure::Timeout) => {
                    // On TCP a missing answer means a dead or half-open session (camera
                    // power-cycled): start over next time.
                    if !self.link.as_ref().is_some_and(Link::is_datagram) {
                        self.drop_link("no answer within the timeout");
                    }
                    return Err(PtzError::Timeout);
                }
                Err(Failure::Ptz(e)) => return Err(e),
            }
        }
        Err(PtzError::Camera("connection lost".into()))
    }

    fn try_exchange(
        &mut self,
        outs: &[Out<'_>],
    ) -> Result<Vec<Result<Vec<u8>, PtzError>>, Failure> {
        self.drain()?;
        let now = Instant::now();
        self.executing
            .retain(|(_, t)| now.duration_since(*t) < SLOT_STALE);
        let mut results: Vec<Option<Result<Vec<u8>, PtzError>>> = vec![None; outs.len()];
        let mut waiting: VecDeque<Outstanding> = VecDeque::new();
        let mut next = 0;
        let mut slot_wait_since: Option<Instant> = None;
        loop {
            while next < outs.len() && self.has_capacity(&waiting, outs[next].kind) {
                let o = &outs[next];
                let seq = self.send(o.bytes, o.kind)?;
                let now = Instant::now();
                waiting.push_back(Outstanding {
                    index: next,
                    bytes: o.bytes.to_vec(),
                    kind: o.kind,
                    seqs: seq.into_iter().collect(),
                    first_sent: now,
                    resend_at: self.is_datagram().then_some(now + RESEND_AFTER),
                    reply_len: o.reply_len,
                });
                next += 1;
                slot_wait_since = None;
            }
            if waiting.is_empty() && next == outs.len() {
                break;
            }
            let deadline = match waiting.iter().map(|w| w.first_sent + REPLY_TIMEOUT).min() {
                Some(d) => waiting
                    .iter()
                    .filter_map(|w| w.resend_at)
                    .fold(d, Instant::min),
                None => *slot_wait_since.get_or_insert_with(Instant::now) + REPLY_TIMEOUT,
            };
            let link = self.link.as_mut().expect("connected before the exchange");
            match link.recv(deadline) {
                Ok(Some(inc)) => self.dispatch(inc, &mut waiting, &mut results)?,
                Ok(None) => {
                    let now = Instant::now();
                    if waiting.iter().any(|w| now >= w.first_sent + REPLY_TIMEOUT) {
                        return Err(Failure::Timeout);
                    }
                    self.resend(&mut waiting, now)?;
                    if waiting.is_empty()
                        && slot_wait_since.is_some_and(|t| now >= t + REPLY_TIMEOUT)
                    {
                        log::warn!(
                            "{}: PTZ camera sent no completion for {} command(s); \
                             no longer waiting for completions",
                            self.id,
                            self.executing.len()
                        );
                        self.executing.clear();
                        self.track_slots = false;
                        slot_wait_since = None;
                    }
                }
                Err(e) => return Err(Failure::Broken(e)),
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.unwrap_or_else(|| Err(PtzError::Camera("no answer".into()))))
            .collect())
    }

    fn is_datagram(&self) -> bool {
        self.link.as_ref().is_some_and(Link::is_datagram)
    }

    /// At most two commands in flight, counting those still executing (the camera's two
    /// slots); inquiries go one at a time.
    fn has_capacity(&self, waiting: &VecDeque<Outstanding>, kind: Kind) -> bool {
        match kind {
            Kind::Inquiry => waiting.is_empty(),
            Kind::Command => {
                let in_flight = waiting.iter().filter(|w| w.kind == Kind::Command).count()
                    + self.executing.len();
                waiting.iter().all(|w| w.kind == Kind::Command) && in_flight < 2
            }
        }
    }

    fn send(&mut self, bytes: &[u8], kind: Kind) -> Result<Option<u32>, Failure> {
        let link = self.link.as_mut().expect("connected before sending");
        log::trace!("{}: VISCA > {}", self.id, hex(bytes));
        link.send(bytes, kind).map_err(Failure::Broken)
    }

    fn resend(&mut self, waiting: &mut VecDeque<Outstanding>, now: Instant) -> Result<(), Failure> {
        for w in waiting.iter_mut() {
            if w.resend_at.is_some_and(|t| now >= t) {
                log::debug!("{}: PTZ no answer yet; sending again", self.id);
                let seq = self.send(&w.bytes, w.kind)?;
                w.seqs.extend(seq);
                w.resend_at = Some(now + RESEND_AFTER);
            }
        }
        Ok(())
    }

    /// Handles messages that arrived between exchanges: completions of earlier commands,
    /// late answers to timed-out requests, Sony RESET acknowledgements.
    fn drain(&mut self) -> Result<(), Failure> {
        let mut none: VecDeque<Outstanding> = VecDeque::new();
        let mut no_results = Vec::new();
        loop {
            let link = self.link.as_mut().expect("connected before draining");
            match link.recv(Instant::now()) {
                Ok(Some(inc)) => self.dispatch(inc, &mut none, &mut no_results)?,
                Ok(None) => return Ok(()),
                Err(e) => return Err(Failure::Broken(e)),
            }
        }
    }

    /// Matches one message to what it answers.
    fn dispatch(
        &mut self,
        inc: Incoming,
        waiting: &mut VecDeque<Outstanding>,
        results: &mut [Option<Result<Vec<u8>, PtzError>>],
    ) -> Result<(), Failure> {
        let (seq, msg) = match inc {
            Incoming::Visca { seq, msg } => (seq, msg),
            Incoming::Control(payload) => {
                if payload.first() == Some(&0x0F) {
                    // 0F 01: sequence number abnormal; 0F 02: message abnormal. Reopening
                    // sends RESET.
                    let what = format!("Sony VISCA-over-IP control error {}", hex(&payload));
                    self.drop_link(&what);
                    return Err(Failure::Ptz(PtzError::Camera(what)));
                }
                return Ok(());
            }
        };
        log::trace!("{}: VISCA < {}", self.id, hex(&msg));
        let by_seq = |waiting: &VecDeque<Outstanding>| {
            seq.and_then(|s| waiting.iter().position(|w| w.seqs.contains(&s)))
        };
        let first_of = |waiting: &VecDeque<Outstanding>, kind: Kind| {
            waiting.iter().position(|w| w.kind == kind)
        };
        let now = Instant::now();
        match parse_reply(&msg) {
            Reply::Ack(slot) => {
                let pos = if seq.is_some() {
                    by_seq(waiting)
                } else {
                    first_of(waiting, Kind::Command)
                };
                if let Some(p) = pos {
                    let w = waiting.remove(p).expect("position is in range");
                    results[w.index] = Some(Ok(Vec::new()));
                    if self.track_slots && slot != 0 {
                        self.executing.retain(|(s, _)| *s != slot);
                        self.executing.push((slot, now));
                    }
                }
            }
            Reply::Completion(slot, data) if data.is_empty() => {
                let by_seq = by_seq(waiting).filter(|&p| waiting[p].kind == Kind::Command);
                if let Some(p) = by_seq {
                    // Completion without a separate ACK.
                    let w = waiting.remove(p).expect("position is in range");
                    results[w.index] = Some(Ok(Vec::new()));
                } else if let Some(i) = self.executing.iter().position(|(s, _)| *s == slot) {
                    self.executing.remove(i);
                } else if seq.is_none() {
                    if let Some(p) = first_of(waiting, Kind::Command) {
                        let w = waiting.remove(p).expect("position is in range");
                        results[w.index] = Some(Ok(Vec::new()));
                    }
                }
            }
            Reply::Completion(_, data) => {
                let pos = if seq.is_some() {
                    by_seq(waiting)
                } else {
                    waiting
                        .iter()
                        .position(|w| w.kind == Kind::Inquiry && w.reply_len == msg.len())
                };
                if let Some(p) = pos {
                    let w = waiting.remove(p).expect("position is in range");
                    results[w.index] = Some(if w.reply_len == msg.len() {
                        Ok(data)
                    } else {
                        Err(PtzError::Camera(format!(
                            "malformed inquiry reply {}",
                            hex(&msg)
                        )))
                    });
                }
            }
            Reply::Error(slot, code) => {
                let pos = if seq.is_some() {
                    by_seq(waiting)
                } else if code == 0x04 && self.executing.iter().any(|(s, _)| *s == slot) {
                    // "Cancelled" names a running command's slot, not the new one.
                    None
                } else if waiting.is_empty() {
                    None
                } else {
                    Some(0)
                };
                match pos {
                    Some(p) => {
                        let w = waiting.remove(p).expect("position is in range");
                        results[w.index] = Some(Err(error_to_ptz(code)));
                    }
                    None => {
                        self.executing.retain(|(s, _)| *s != slot);
                        log::debug!(
                            "{}: PTZ running command in slot {slot} ended: {}",
                            self.id,
                            error_text(code)
                        );
                    }
                }
            }
            Reply::Other => {}
        }
        Ok(())
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// VISCA over IP for one camera: PTZOptics raw frames on TCP or UDP, or Sony-headered
/// frames on UDP. Remembers what it last sent per axis group so an unchanged pan-tilt or
/// zoom drive is not sent again.
pub struct ViscaDriver {
    session: Session,
    /// What the camera was last told, if known (reset on reconnect and after recalls).
    last_pan_tilt: Option<(Axis, Axis)>,
    last_zoom: Option<Axis>,
    generation: u64,
}

impl ViscaDriver {
    pub fn new(camera_id: &str, host: &str, cfg: PtzConfig) -> ViscaDriver {
        ViscaDriver {
            session: Session::new(camera_id, host, cfg),
            last_pan_tilt: None,
            last_zoom: None,
            generation: 0,
        }
    }

    fn forget_if_reconnected(&mut self) {
        if self.session.generation != self.generation {
            self.generation = self.session.generation;
            self.last_pan_tilt = None;
            self.last_zoom = None;
        }
    }

    fn commands(&mut self, frames: &[&[u8]], urgency: Urgency) -> Result<(), PtzError> {
        let outs: Vec<Out<'_>> = frames
            .iter()
            .map(|b| Out {
                bytes: b,
                kind: Kind::Command,
                reply_len: 0,
            })
            .collect();
        self.session.exchange(&outs, urgency).map(|_| ())
    }

    fn inquiry(&mut self, bytes: &[u8], reply_len: usize) -> Result<Vec<u8>, PtzError> {
        let out = [Out {
            bytes,
            kind: Kind::Inquiry,
            reply_len,
        }];
        let mut r = self.session.exchange(&out, Urgency::Normal)?;
        Ok(r.pop().unwrap_or_default())
    }
}

impl PtzDriver for ViscaDriver {
    fn move_continuous(&mut self, pan: f64, tilt: f64, zoom: f64) -> Result<(), PtzError> {
        self.forget_if_reconnected();
        let pt = (axis(pan, 1, PAN_SPEED_MAX), axis(tilt, 1, TILT_SPEED_MAX));
        let z = axis(zoom, 0, ZOOM_SPEED_MAX);
        let pt_frame = pan_tilt_drive(pt.0, pt.1);
        let z_frame = zoom_drive(z);
        let mut frames: Vec<&[u8]> = Vec::with_capacity(2);
        if self.last_pan_tilt != Some(pt) {
            frames.push(&pt_frame);
        }
        if self.last_zoom != Some(z) {
            frames.push(&z_frame);
        }
        if frames.is_empty() {
            return Ok(());
        }
        // Unknown until the camera confirms.
        self.last_pan_tilt = None;
        self.last_zoom = None;
        self.commands(&frames, Urgency::Normal)?;
        self.forget_if_reconnected();
        self.last_pan_tilt = Some(pt);
        self.last_zoom = Some(z);
        Ok(())
    }

    fn stop(&mut self) -> Result<(), PtzError> {
        self.last_pan_tilt = None;
        self.last_zoom = None;
        self.commands(&[&PAN_TILT_STOP, &ZOOM_STOP], Urgency::Always)?;
        self.forget_if_reconnected();
        self.last_pan_tilt = Some((Axis::Stop, Axis::Stop));
        self.last_zoom = Some(Axis::Stop);
        Ok(())
    }

    fn home(&mut self) -> Result<(), PtzError> {
        self.last_pan_tilt = None;
        self.commands(&[&HOME], Urgency::Normal)
    }

    fn preset_goto(&mut self, index: u8) -> Result<(), PtzError> {
        check_preset(self.session.protocol, index)?;
        self.last_pan_tilt = None;
        self.last_zoom = None;
        self.commands(&[&preset(PresetOp::Goto, index)], Urgency::Normal)
    }

    fn preset_save(&mut self, index: u8) -> Result<(), PtzError> {
        check_preset(self.session.protocol, index)?;
        self.commands(&[&preset(PresetOp::Save, index)], Urgency::Normal)
    }

    fn position(&mut self) -> Result<Position, PtzError> {
        let pt = self.inquiry(&PAN_TILT_INQUIRY, PAN_TILT_REPLY_LEN)?;
        let (pan, tilt) = decode_pan_tilt(&pt).ok_or_else(|| {
            PtzError::Camera(format!("malformed pan-tilt position reply {}", hex(&pt)))
        })?;
        let z = self.inquiry(&ZOOM_INQUIRY, ZOOM_REPLY_LEN)?;
        let zoom = decode_zoom(&z).ok_or_else(|| {
            PtzError::Camera(format!("malformed zoom position reply {}", hex(&z)))
        })?;
        Ok(Position { pan, tilt, zoom })
    }

    /// The power inquiry: cheap, answered without moving anything, and on TCP the only
    /// reliable way to notice a session the camera forgot when it power-cycled.
    fn keepalive(&mut self) -> Option<Result<(), PtzError>> {
        Some(self.power())
    }
}

impl ViscaDriver {
    fn power(&mut self) -> Result<(), PtzError> {
        let data = self.inquiry(&POWER_INQUIRY, POWER_REPLY_LEN)?;
        match data.first() {
            Some(0x02) => Ok(()),
            Some(0x03) => {
                log::debug!("{}: PTZ camera is in standby", self.session.id);
                Ok(())
            }
            _ => Err(PtzError::Camera(format!(
                "camera reports a power error ({})",
                hex(&data)
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reply fixtures, named by vendor. These are the forms the vendor documents and the
    // field reports in shared/notes/ptz-protocols.md describe, not packet captures.
    /// PTZOptics (VISCA doc): ACK for a command taken into slot 1.
    const PTZOPTICS_ACK_SLOT1: &[u8] = &[0x90, 0x41, 0xFF];
    /// PTZOptics: completion of slot 2.
    const PTZOPTICS_COMPLETION_SLOT2: &[u8] = &[0x90, 0x52, 0xFF];
    /// PTZOptics: syntax error (unknown command).
    const PTZOPTICS_SYNTAX_ERROR: &[u8] = &[0x90, 0x60, 0x02, 0xFF];
    /// PTZOptics: both command buffers busy.
    const PTZOPTICS_BUFFER_FULL: &[u8] = &[0x90, 0x60, 0x03, 0xFF];
    /// PTZOptics: the command in slot 1 was cancelled.
    const PTZOPTICS_CANCELLED_SLOT1: &[u8] = &[0x90, 0x61, 0x04, 0xFF];
    /// PTZOptics: not executable now (e.g. in the OSD menu).
    const PTZOPTICS_NOT_EXECUTABLE: &[u8] = &[0x90, 0x61, 0x41, 0xFF];
    /// PTZOptics G3 firmware quirk (field report): ACK sent with reply address A0 instead
    /// of 90. Matching on the type nibble accepts it.
    const PTZOPTICS_G3_ACK_A0: &[u8] = &[0xA0, 0x41, 0xFF];
    /// PTZOptics: pan-tilt inquiry answer, pan = -2 (FFFE), tilt = 0x0123.
    const PTZOPTICS_PAN_TILT_REPLY: &[u8] = &[
        0x90, 0x50, 0x0F, 0x0F, 0x0F, 0x0E, 0x00, 0x01, 0x02, 0x03, 0xFF,
    ];
    /// PTZOptics: zoom inquiry answer at optical tele end (0x4000).
    const PTZOPTICS_ZOOM_REPLY_TELE: &[u8] = &[0x90, 0x50, 0x04, 0x00, 0x00, 0x00, 0xFF];
    /// PTZOptics: power inquiry answer "on".
    const PTZOPTICS_POWER_ON: &[u8] = &[0x90, 0x50, 0x02, 0xFF];

    fn bytes(s: &str) -> Vec<u8> {
        s.split_whitespace()
            .map(|b| u8::from_str_radix(b, 16).unwrap())
            .collect()
    }

    /// Each builder against the byte strings of the PTZOptics VISCA command list.
    #[test]
    fn frames_match_the_ptzoptics_document() {
        use Axis::*;
        // Pan-tiltDrive Up: 81 01 06 01 VV WW 03 01 FF
        assert_eq!(
            pan_tilt_drive(Stop, Positive(0x14)).to_vec(),
            bytes("81 01 06 01 01 14 03 01 FF")
        );
        // Down: 03 02; Left: 01 03; Right: 02 03
        assert_eq!(
            pan_tilt_drive(Stop, Negative(5)).to_vec(),
            bytes("81 01 06 01 01 05 03 02 FF")
        );
        assert_eq!(
            pan_tilt_drive(Negative(0x18), Stop).to_vec(),
            bytes("81 01 06 01 18 01 01 03 FF")
        );
        assert_eq!(
            pan_tilt_drive(Positive(0x0C), Stop).to_vec(),
            bytes("81 01 06 01 0C 01 02 03 FF")
        );
        // UpLeft 01 01, UpRight 02 01, DownLeft 01 02, DownRight 02 02
        assert_eq!(
            pan_tilt_drive(Negative(1), Positive(2)).to_vec(),
            bytes("81 01 06 01 01 02 01 01 FF")
        );
        assert_eq!(
            pan_tilt_drive(Positive(3), Positive(4)).to_vec(),
            bytes("81 01 06 01 03 04 02 01 FF")
        );
        assert_eq!(
            pan_tilt_drive(Negative(3), Negative(4)).to_vec(),
            bytes("81 01 06 01 03 04 01 02 FF")
        );
        assert_eq!(
            pan_tilt_drive(Positive(3), Negative(4)).to_vec(),
            bytes("81 01 06 01 03 04 02 02 FF")
        );
        // Stop: 03 03
        assert_eq!(pan_tilt_drive(Stop, Stop), PAN_TILT_STOP);
        assert_eq!(PAN_TILT_STOP.to_vec(), bytes("81 01 06 01 01 01 03 03 FF"));
        // Speeds outside the documented range are clamped.
        assert_eq!(
            pan_tilt_drive(Positive(0x30), Positive(0x30))[4..6],
            [0x18, 0x14]
        );
        // Zoom: Stop 00, Tele(variable) 2p, Wide(variable) 3p.
        assert_eq!(ZOOM_STOP.to_vec(), bytes("81 01 04 07 00 FF"));
        assert_eq!(zoom_drive(Stop), ZOOM_STOP);
        assert_eq!(zoom_drive(Positive(7)).to_vec(), bytes("81 01 04 07 27 FF"));
        assert_eq!(zoom_drive(Negative(0)).to_vec(), bytes("81 01 04 07 30 FF"));
        // Home, presets, inquiries.
        assert_eq!(HOME.to_vec(), bytes("81 01 06 04 FF"));
        assert_eq!(
            preset(PresetOp::Save, 3).to_vec(),
            bytes("81 01 04 3F 01 03 FF")
        );
        assert_eq!(
            preset(PresetOp::Goto, 254).to_vec(),
            bytes("81 01 04 3F 02 FE FF")
        );
        assert_eq!(PAN_TILT_INQUIRY.to_vec(), bytes("81 09 06 12 FF"));
        assert_eq!(ZOOM_INQUIRY.to_vec(), bytes("81 09 04 47 FF"));
        assert_eq!(POWER_INQUIRY.to_vec(), bytes("81 09 04 00 FF"));
    }

    #[test]
    fn replies_parse_leniently() {
        assert_eq!(parse_reply(PTZOPTICS_ACK_SLOT1), Reply::Ack(1));
        assert_eq!(parse_reply(PTZOPTICS_G3_ACK_A0), Reply::Ack(1));
        assert_eq!(
            parse_reply(PTZOPTICS_COMPLETION_SLOT2),
            Reply::Completion(2, vec![])
        );
        assert_eq!(parse_reply(PTZOPTICS_SYNTAX_ERROR), Reply::Error(0, 0x02));
        assert_eq!(parse_reply(PTZOPTICS_BUFFER_FULL), Reply::Error(0, 0x03));
        assert_eq!(
            parse_reply(PTZOPTICS_CANCELLED_SLOT1),
            Reply::Error(1, 0x04)
        );
        assert_eq!(parse_reply(PTZOPTICS_NOT_EXECUTABLE), Reply::Error(1, 0x41));
        assert_eq!(parse_reply(&[0x90, 0x60, 0xFF]), Reply::Error(0, 0));
        // Not replies: a command, an address-set broadcast, a bare terminator, garbage.
        assert_eq!(parse_reply(&HOME), Reply::Other);
        assert_eq!(parse_reply(&[0x88, 0x30, 0x02, 0xFF]), Reply::Other);
        assert_eq!(parse_reply(&[0xFF]), Reply::Other);
        assert_eq!(parse_reply(&[0x10, 0x41, 0xFF]), Reply::Other);
        assert_eq!(error_to_ptz(0x03), PtzError::Busy);
        assert!(error_to_ptz(0x41).to_string().contains("not executable"));
    }

    #[test]
    fn inquiry_answers_decode() {
        let Reply::Completion(0, data) = parse_reply(PTZOPTICS_PAN_TILT_REPLY) else {
            panic!()
        };
        assert_eq!(decode_pan_tilt(&data), Some((-2, 0x0123)));
        let Reply::Completion(0, data) = parse_reply(PTZOPTICS_ZOOM_REPLY_TELE) else {
            panic!()
        };
        assert_eq!(decode_zoom(&data), Some(0x4000));
        let Reply::Completion(0, data) = parse_reply(PTZOPTICS_POWER_ON) else {
            panic!()
        };
        assert_eq!(data, vec![0x02]);
        // A byte above 0F is not a nibble.
        assert_eq!(decode_zoom(&[0x10, 0, 0, 0]), None);
        assert_eq!(decode_pan_tilt(&[0; 7]), None);
        let enc = encode_nibbles16((-300i16) as u16);
        assert_eq!(decode_zoom(&enc).map(|v| v as u16 as i16), Some(-300));
    }

    #[test]
    fn sony_header() {
        // Sony manual's layout: 01 00 | 00 09 | 00 00 00 2A | 81 01 06 01 ... FF
        let w = sony_wrap(SONY_COMMAND, 42, &PAN_TILT_STOP);
        assert_eq!(w[..8], [0x01, 0x00, 0x00, 0x09, 0x00, 0x00, 0x00, 0x2A]);
        assert_eq!(w[8..], PAN_TILT_STOP);
        assert_eq!(
            sony_wrap(SONY_CONTROL, 0, &SONY_RESET),
            bytes("02 00 00 01 00 00 00 00 01")
        );
        assert_eq!(
            sony_unwrap(&bytes("01 11 00 03 00 00 00 07 90 41 FF")),
            Some((SONY_REPLY, 7, &[0x90, 0x41, 0xFF][..]))
        );
        assert_eq!(
            sony_unwrap(&bytes("01 11 00 09 00 00 00 07 90 41 FF")),
            None
        );
        assert_eq!(sony_unwrap(&[1, 2, 3]), None);
    }

    #[test]
    fn framer_splits_and_bounds() {
        let mut f = Framer::default();
        f.push(&[0x90, 0x41, 0xFF, 0x90]);
        assert_eq!(f.next_message(), Some(vec![0x90, 0x41, 0xFF]));
        assert_eq!(f.next_message(), None);
        f.push(&[0x51, 0xFF]);
        assert_eq!(f.next_message(), Some(vec![0x90, 0x51, 0xFF]));
        f.push(&[0x01; 100]);
        assert_eq!(f.next_message(), None);
        assert!(f.buf.is_empty());
    }
}
