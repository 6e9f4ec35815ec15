//! One parsed HTTP request (head by `httparse`, body bounded) and the replies handlers give.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};

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

pub fn header(name: &str, value: &str) -> Header {
    Header::from_bytes(name.as_bytes(), value.as_bytes()).expect("static header names are valid")
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

/// An error reply in the contract's shape: `{"detail": "..."}`.
pub fn error(status: u16, detail: impl Into<String>) -> Reply {
    json(status, &serde_json::json!({ "detail": detail.into() }))
}

/// Reads one request head and body from `stream`. `buf` carries bytes already read
/// (pipelining); what follows this request stays in it.
pub enum ReadOutcome {
    Request(Request),
    /// The client closed or went idle between requests: close quietly.
    Closed,
    /// A broken request: answer with this status and detail, then close.
    Bad(u16, String),
}

pub const MAX_HEAD: usize = 16 * 1024;

pub fn read_request<S: Read + Write>(
    stream: &mut S,
    buf: &mut Vec<u8>,
    peer: SocketAddr,
    max_body: usize,
) -> ReadOutcome {
    let mut chunk = [0u8; 4096];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut req = httparse::Request::new(&mut headers);
        match req.parse(buf) {
            Ok(httparse::Status::Complete(head_len)) if head_len > MAX_HEAD => {
                return ReadOutcome::Bad(431, "request head too large".into());
            }
            Ok(httparse::Status::Complete(head_len)) => {
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
                let mut r = Request {
                    method,
                    path,
                    query,
                    headers,
                    body: Vec::new(),
                    peer,
                    http_minor,
                };
                if r.header("Transfer-Encoding").is_some() {
                    return ReadOutcome::Bad(
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
                    return ReadOutcome::Bad(400, "conflicting Content-Length headers".into());
                }
                let len = match r.header("Content-Length").map(|v| v.parse::<usize>()) {
                    None => 0,
                    Some(Ok(n)) => n,
                    Some(Err(_)) => return ReadOutcome::Bad(400, "invalid Content-Length".into()),
                };
                if len > max_body {
                    return ReadOutcome::Bad(
                        413,
                        format!("request body too large (at most {max_body} bytes)"),
                    );
                }
                buf.drain(..head_len);
                // curl and others wait (a second, by default) for this before a body.
                if buf.len() < len && r.header_has_token("Expect", "100-continue") {
                    let _ = stream.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
                }
                while buf.len() < len {
                    match stream.read(&mut chunk) {
                        Ok(0) => return ReadOutcome::Closed,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        Err(_) => {
                            return ReadOutcome::Bad(
                                408,
                                "timed out reading the request body".into(),
                            )
                        }
                    }
                }
                r.body = buf.drain(..len).collect();
                return ReadOutcome::Request(r);
            }
            Ok(httparse::Status::Partial) => {
                if buf.len() > MAX_HEAD {
                    return ReadOutcome::Bad(431, "request head too large".into());
                }
            }
            Err(e) => return ReadOutcome::Bad(400, format!("malformed HTTP request: {e}")),
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

/// Writes a response (HTTP/1.1 framing by tiny_http).
pub fn write_response(
    stream: &mut TcpStream,
    response: tiny_http::ResponseBox,
    head_only: bool,
) -> io::Result<()> {
    let mut w = io::BufWriter::with_capacity(16 * 1024, &mut *stream);
    response.raw_print(&mut w, tiny_http::HTTPVersion(1, 1), &[], head_only, None)?;
    w.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn peer() -> SocketAddr {
        "127.0.0.1:9".parse().unwrap()
    }

    fn read(bytes: &[u8]) -> ReadOutcome {
        let mut buf = Vec::new();
        read_request(&mut Cursor::new(bytes.to_vec()), &mut buf, peer(), 1024)
    }

    #[test]
    fn parses_a_request_with_body_and_keeps_the_pipelined_rest() {
        let raw = b"POST /api/cameras/connect?x=1 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}GET / HTTP/1.1\r\n\r\n";
        let mut buf = Vec::new();
        let mut c = Cursor::new(raw.to_vec());
        let ReadOutcome::Request(r) = read_request(&mut c, &mut buf, peer(), 1024) else {
            panic!("no request")
        };
        assert_eq!(
            (r.method.as_str(), r.path.as_str()),
            ("POST", "/api/cameras/connect")
        );
        assert_eq!(r.query_param("x").as_deref(), Some("1"));
        assert_eq!(r.body, b"{}");
        assert!(r.keep_alive());
        let ReadOutcome::Request(r2) = read_request(&mut c, &mut buf, peer(), 1024) else {
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
    fn percent_decoding() {
        assert_eq!(percent_decode("cam%201").as_deref(), Some("cam 1"));
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        assert_eq!(percent_decode("bad%2").as_deref(), None);
        assert_eq!(percent_decode("bad%zz").as_deref(), None);
        assert_eq!(percent_decode("%ff").as_deref(), None);
    }
}
