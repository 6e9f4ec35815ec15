//! One parsed HTTP request (head by `httparse`, body bounded) and the replies handlers give.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use tiny_http::{Header, Response, StatusCode};

/// A request as the routes see it.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The path without the query, not yet percent-decoded.
    pub path: String,
    pub query: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub peer: SocketAddr,
    pub http_minor: u8,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Whether a comma-separated header (e.g. `Connection`) holds `token`.
    pub fn header_has_token(&self, name: &str, token: &str) -> bool {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .flat_map(|(_, v)| v.split(','))
            .any(|t| t.trim().eq_ignore_ascii_case(token))
    }

    /// The first value of a query parameter, percent-decoded.
    pub fn query_param(&self, name: &str) -> Option<String> {
        let q = self.query.as_deref()?;
        q.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k).as_deref() == Some(name)).then(|| percent_decode(v))?
        })
    }

    pub fn keep_alive(&self) -> bool {
        if self.header_has_token("Connection", "close") {
            return false;
        }
        self.http_minor >= 1 || self.header_has_token("Connection", "keep-alive")
    }
}

/// Decodes `%XX` escapes (and `+` as space in queries is left alone: the app sends
/// plain ids). `None` when the result is not UTF-8 or an escape is broken.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// What a route answers.
pub enum Reply {
    /// A complete response, written by the connection loop (CORS added there).
    Response(tiny_http::ResponseBox),
    /// The connection is handed over (WebSocket, MJPEG): the route has written what it
    /// needed and the closure owns the socket from here on.
    Takeover(Box<dyn FnOnce(TcpStream, Vec<u8>) + Send>),
}

/// A response header. Never panics, whatever the value came from: a name is reduced to
/// token characters (RFC 9110 §5.6.2) and a value to visible ASCII, space and tab, so
/// request-derived bytes (non-ASCII, CR/LF) can neither fail nor split the response.
pub fn header(name: &str, value: &str) -> Header {
    let name: Vec<u8> = name.bytes().filter(|b| is_tchar(*b)).collect();
    let name = if name.is_empty() {
        b"X-Invalid".to_vec()
    } else {
        name
    };
    let value: Vec<u8> = value
        .bytes()
        .map(|b| match b {
            b'\t' | 0x20..=0x7e => b,
            _ => b'?',
        })
        .collect();
    Header::from_bytes(name, value).expect("a sanitised header is ASCII")
}

/// A `tchar` of RFC 9110 §5.6.2: what a header name or a token may hold.
pub fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A JSON reply.
pub fn json(status: u16, value: &serde_json::Value) -> Reply {
    let body = serde_json::to_vec(value).expect("a Value always serialises");
    Reply::Response(
        Response::from_data(body)
            .with_status_code(StatusCode(status))
            .with_header(header("Content-Type", "application/json"))
            .boxed(),
    )
}

/// A JPEG reply (never cached) with `headers`, every one of them exposed to browser
/// scripts (`Access-Control-Expose-Headers`).
pub fn jpeg(data: Vec<u8>, headers: &[(&str, String)]) -> Reply {
    let expose: Vec<&str> = headers.iter().map(|(name, _)| *name).collect();
    let mut response = Response::from_data(data)
        .with_header(header("Content-Type", "image/jpeg"))
        .with_header(header("Cache-Control", "no-store"));
    for (name, value) in headers {
        response = response.with_header(header(name, value));
    }
    Reply::Response(
        response
            .with_header(header("Access-Control-Expose-Headers", &expose.join(", ")))
            .boxed(),
    )
}

/// An error reply in the contract's shape: `{"detail": "..."}`.
pub fn error(status: u16, detail: impl Into<String>) -> Reply {
    json(status, &serde_json::json!({ "detail": detail.into() }))
}

/// What a buffer holds so far.
pub enum Head {
    /// Not a complete head yet: read more (while within [`MAX_HEAD`]).
    Partial,
    /// A complete head: the request without its body, the head's length in the buffer,
    /// and the length of the body that follows.
    Complete {
        req: Request,
        head_len: usize,
        body_len: usize,
    },
    /// A broken request: answer with this status and detail, then close.
    Bad(u16, String),
}

/// What reading a request (its body, or all of it) came to.
pub enum ReadOutcome {
    Request(Request),
    /// The client closed or went idle between requests: close quietly.
    Closed,
    /// A broken request: answer with this status and detail, then close.
    Bad(u16, String),
}

pub const MAX_HEAD: usize = 16 * 1024;

/// Parses the head at the start of `buf` (no I/O): whether it is complete, and if so
/// what it asks and how long its body is. Checks the limits a head can break: size,
/// framing (`Transfer-Encoding`, `Content-Length`) and the body's size.
pub fn parse_head(buf: &[u8], peer: SocketAddr, max_body: usize) -> Head {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) if n > MAX_HEAD => {
            return Head::Bad(431, "request head too large".into())
        }
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) if buf.len() > MAX_HEAD => {
            return Head::Bad(431, "request head too large".into())
        }
        Ok(httparse::Status::Partial) => return Head::Partial,
        Err(httparse::Error::TooManyHeaders) => {
            return Head::Bad(431, "too many request headers (at most 64)".into())
        }
        Err(e) => return Head::Bad(400, format!("malformed HTTP request: {e}")),
    };
    let method = req.method.unwrap_or("").to_owned();
    let target = req.path.unwrap_or("/");
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target.to_owned(), None),
    };
    let http_minor = req.version.unwrap_or(1);
    let headers: Vec<(String, String)> = req
        .headers
        .iter()
        .map(|h| {
            (
                h.name.to_owned(),
                String::from_utf8_lossy(h.value).trim().to_owned(),
            )
        })
        .collect();
    let r = Request {
        method,
        path,
        query,
        headers,
        body: Vec::new(),
        peer,
        http_minor,
    };
    if r.header("Transfer-Encoding").is_some() {
        return Head::Bad(
            411,
            "chunked request bodies are not supported; send Content-Length".into(),
        );
    }
    let lengths: Vec<&str> = r
        .headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("Content-Length"))
        .map(|(_, v)| v.as_str())
        .collect();
    // RFC 9112 §6.3: differing lengths make the message invalid.
    if lengths.windows(2).any(|w| w[0] != w[1]) {
        return Head::Bad(400, "conflicting Content-Length headers".into());
    }
    let body_len = match r.header("Content-Length").map(|v| v.parse::<usize>()) {
        None => 0,
        Some(Ok(n)) => n,
        Some(Err(_)) => return Head::Bad(400, "invalid Content-Length".into()),
    };
    if body_len > max_body {
        return Head::Bad(
            413,
            format!("request body too large (at most {max_body} bytes)"),
        );
    }
    Head::Complete {
        req: r,
        head_len,
        body_len,
    }
}

/// A stream whose reads can be given a deadline.
pub trait ReadDeadline {
    /// The next read may wait at most `remaining`.
    fn read_within(&mut self, remaining: Duration) -> io::Result<()>;
}

impl ReadDeadline for TcpStream {
    fn read_within(&mut self, remaining: Duration) -> io::Result<()> {
        // A zero timeout means "none" to the socket: never ask for it.
        self.set_read_timeout(Some(remaining.max(Duration::from_millis(1))))
    }
}

#[cfg(test)]
impl ReadDeadline for io::Cursor<Vec<u8>> {
    fn read_within(&mut self, _: Duration) -> io::Result<()> {
        Ok(())
    }
}

/// Reads the body of `req` (`len` bytes; those in `buf` first) by `deadline`; what
/// follows the body stays in `buf`.
pub fn read_body<S: Read + Write + ReadDeadline>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    mut req: Request,
    len: usize,
    deadline: Instant,
) -> ReadOutcome {
    // curl and others wait (a second, by default) for this before a body.
    if buf.len() < len && req.header_has_token("Expect", "100-continue") {
        let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
    }
    let mut chunk = [0u8; 4096];
    while buf.len() < len {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() || stream.read_within(remaining).is_err() {
            return ReadOutcome::Bad(408, "timed out reading the request body".into());
        }
        let want = (len - buf.len()).min(chunk.len());
        match stream.read(&mut chunk[..want]) {
            Ok(0) => return ReadOutcome::Closed,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if is_timeout(&e) => {
                return ReadOutcome::Bad(408, "timed out reading the request body".into())
            }
            Err(_) => return ReadOutcome::Closed,
        }
    }
    req.body = buf.drain(..len).collect();
    ReadOutcome::Request(req)
}

/// Reads one whole request from a blocking stream (head, then body): the tests' way in.
/// The server reads heads in its poll thread instead ([`parse_head`]).
#[cfg(test)]
pub fn read_request<S: Read + Write + ReadDeadline>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    peer: SocketAddr,
    max_body: usize,
    deadline: Instant,
) -> ReadOutcome {
    let mut chunk = [0u8; 4096];
    loop {
        match parse_head(buf, peer, max_body) {
            Head::Complete {
                req,
                head_len,
                body_len,
            } => {
                buf.drain(..head_len);
                return read_body(stream, buf, req, body_len, deadline);
            }
            Head::Bad(status, detail) => return ReadOutcome::Bad(status, detail),
            Head::Partial => {}
        }
        match stream.read(&mut chunk) {
            Ok(0) => return ReadOutcome::Closed,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if is_timeout(&e) && buf.is_empty() => return ReadOutcome::Closed,
            Err(e) if is_timeout(&e) => {
                return ReadOutcome::Bad(408, "timed out reading the request".into())
            }
            Err(_) => return ReadOutcome::Closed,
        }
    }
}

pub fn is_timeout(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
    )
}

/// CORS for every origin, and who answers.
pub fn with_common_headers(r: tiny_http::ResponseBox) -> tiny_http::ResponseBox {
    r.with_header(header("Access-Control-Allow-Origin", "*"))
        .with_header(header(
            "Server",
            concat!("ptz-edge/", env!("CARGO_PKG_VERSION")),
        ))
}

/// Whether the connection stays open after a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Persist {
    KeepAlive,
    /// The response says `Connection: close` and the connection is closed after it.
    Close,
}

/// The bytes of a `{"detail"}` error response that closes the connection, for answers
/// written without a worker (refusals, broken or late heads).
pub fn error_bytes(status: u16, detail: &str) -> Vec<u8> {
    let mut out = Vec::new();
    if let Reply::Response(r) = error(status, detail) {
        // Writing into a Vec cannot fail.
        let _ = print(&mut out, with_common_headers(r), false, Persist::Close);
    }
    out
}

/// Writes a response (HTTP/1.1 framing by tiny_http).
pub fn write_response(
    stream: &mut TcpStream,
    response: tiny_http::ResponseBox,
    head_only: bool,
    persist: Persist,
) -> io::Result<()> {
    let mut w = io::BufWriter::with_capacity(16 * 1024, &mut *stream);
    print(&mut w, response, head_only, persist)?;
    w.flush()
}

fn print<W: Write>(
    w: W,
    response: tiny_http::ResponseBox,
    head_only: bool,
    persist: Persist,
) -> io::Result<()> {
    let v = tiny_http::HTTPVersion(1, 1);
    match persist {
        Persist::KeepAlive => response.raw_print(w, v, &[], head_only, None),
        // tiny_http drops a `Connection` header given to a response: add it to the bytes.
        Persist::Close => {
            let w = ConnectionClose {
                inner: w,
                added: false,
            };
            response.raw_print(w, v, &[], head_only, None)
        }
    }
}

/// Puts `Connection: close` after the status line of what passes through.
struct ConnectionClose<W> {
    inner: W,
    added: bool,
}

impl<W: Write> Write for ConnectionClose<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.added {
            return self.inner.write(buf);
        }
        match buf.iter().position(|b| *b == b'\n') {
            None => self.inner.write(buf),
            Some(i) => {
                self.inner.write_all(&buf[..=i])?;
                self.inner.write_all(b"Connection: close\r\n")?;
                self.added = true;
                Ok(i + 1)
            }
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn later() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    fn peer() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    fn read(bytes: &[u8]) -> ReadOutcome {
        let mut buf = Vec::new();
        read_request(
            &mut Cursor::new(bytes.to_vec()),
            &mut buf,
            peer(),
            1024,
            later(),
        )
    }

    #[test]
    fn parses_a_request_with_body_and_keeps_the_pipelined_rest() {
        let raw = b"POST /api/cameras/connect?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}GET / HTTP/1.1\r\n\r\n";
        let mut buf = Vec::new();
        let mut c = Cursor::new(raw.to_vec());
        let ReadOutcome::Request(r) = read_request(&mut c, &mut buf, peer(), 1024, later()) else {
            panic!("no request")
        };
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/api/cameras/connect")
        );
        assert_eq!(r.query_param("x").as_deref(), Some("1"));
        assert_eq!(r.body, b"{}");
        assert!(r.keep_alive());
        let ReadOutcome::Request(r2) = read_request(&mut c, &mut buf, peer(), 1024, later()) else {
            panic!("no second request")
        };
        assert_eq!(r2.path, "/");
    }

    #[test]
    fn bad_requests_get_statuses() {
        assert!(matches!(
            read(b"GARBAGE\x01\r\n\r\n"),
            ReadOutcome::Bad(400, _)
        ));
        assert!(matches!(
            read(b"POST / HTTP/1.1\r\nContent-Length: 5000\r\n\r\n"),
            ReadOutcome::Bad(413, _)
        ));
        assert!(matches!(
            read(b"POST / HTTP/1.1\r\nContent-Length: x\r\n\r\n"),
            ReadOutcome::Bad(400, _)
        ));
        assert!(matches!(
            read(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            ReadOutcome::Bad(411, _)
        ));
        let mut huge = b"GET / HTTP/1.1\r\nX: ".to_vec();
        huge.extend(std::iter::repeat_n(b'a', MAX_HEAD + 10));
        assert!(matches!(read(&huge), ReadOutcome::Bad(431, _)));
        assert!(matches!(read(b""), ReadOutcome::Closed));
        assert!(matches!(read(b"GET / HTTP/1.1\r\n"), ReadOutcome::Closed));
    }

    /// Random and mutated request heads never panic and always end.
    #[test]
    fn fuzz_never_panics() {
        let seed: &[u8] = b"POST /api/cameras/c%201/frame?width=640&quality=80 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\nabc";
        let mut m = crate::fuzz::Mutator::new(0x2545_F491_4F6C_DD1D, b"\r\n :%?&=0", 7);
        for _ in 0..20_000 {
            let bytes = m.mutate(seed);
            if let ReadOutcome::Request(r) = read(&bytes) {
                let _ = r.query_param("width");
                let _ = percent_decode(&r.path);
                let _ = r.keep_alive();
            }
        }
    }

    #[test]
    fn headers_from_request_bytes_never_panic_nor_split() {
        let h = header("Access-Control-Allow-Headers", "x-é\r\nSet-Cookie: a\u{0}");
        let v = h.value.as_str();
        assert!(
            v.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)),
            "{v:?}"
        );
        assert!(!v.contains('\r') && !v.contains('\n'));
        assert_eq!(
            header("bad name\u{1}", "x").field.as_str().as_str(),
            "badname"
        );
        assert_eq!(header("", "x").field.as_str().as_str(), "X-Invalid");
    }

    #[test]
    fn closing_responses_say_so() {
        let text = String::from_utf8(error_bytes(503, "busy")).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let mut lines = head.split("\r\n");
        assert!(lines.next().unwrap().starts_with("HTTP/1.1 503 "), "{head}");
        assert_eq!(
            lines.filter(|l| *l == "Connection: close").count(),
            1,
            "{head}"
        );
        assert_eq!(body, r#"{"detail":"busy"}"#);
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("cam%201").as_deref(), Some("cam 1"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%2").as_deref(), None);
        assert_eq!(percent_decode("bad%zz").as_deref(), None);
        assert_eq!(percent_decode("%ff").as_deref(), None);
    }
}
