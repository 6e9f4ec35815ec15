//! One small blocking HTTP/1.1 client: one request per connection (`Connection: close`),
//! read to the end of the connection and parsed (`Content-Length` or chunked).
//!
//! [`exchange`] is the one implementation; the other functions are its forms:
//! [`http`] (panics), [`try_http`] / [`request`] (a `Result`), [`get_json`] /
//! [`post_json`] (a 2xx JSON body or an `Err`), [`http_raw`] / [`http_raw_reply`] (bytes
//! written as given, for malformed requests). [`Mjpeg`] reads a `multipart/x-mixed-replace`
//! stream part by part.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use serde_json::Value;

/// Read timeout of the HTTP client: longer than the 5 s a connect may wait.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(20);
/// How long connecting to the server may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A complete HTTP response.
#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    /// The first header of that name (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON, or an `Err` showing (the start of) the body.
    pub fn try_json(&self) -> Result<Value, String> {
        serde_json::from_slice(&self.body).map_err(|e| {
            let text = self.text();
            let cut = text.char_indices().nth(300).map_or(text.len(), |(i, _)| i);
            format!(
                "HTTP {} body is not JSON ({e}): {:?}",
                self.status,
                &text[..cut]
            )
        })
    }

    /// The body as JSON; panics (showing the body) if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "HTTP {} body is not JSON ({e}): {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// Asserts `status`, a JSON content type and a `{"detail": string}` body.
    #[track_caller]
    pub fn assert_detail(&self, status: u16, what: &str) -> String {
        assert_eq!(self.status, status, "{what}: {}", self.text());
        assert_eq!(
            self.header("content-type"),
            Some("application/json"),
            "{what}: content type"
        );
        let v = self.json();
        let detail = v["detail"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no string \"detail\" in {v}"));
        assert!(!detail.is_empty(), "{what}: empty detail");
        detail.to_owned()
    }

    /// Asserts the CORS header every response must carry.
    #[track_caller]
    pub fn assert_cors(&self, what: &str) {
        assert_eq!(
            self.header("access-control-allow-origin"),
            Some("*"),
            "{what}: Access-Control-Allow-Origin in {:?}",
            self.headers
        );
    }
}

/// The first header of that name (case-insensitive) in `headers`.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// How [`exchange`] treats the connection.
#[derive(Clone, Copy, Debug)]
pub struct Wire {
    /// Bound of every read (and of the writes).
    pub timeout: Duration,
    /// Shut the write side down after the request (the client has nothing more to say).
    pub half_close: bool,
    /// A failed write is an `Err`; otherwise the reply the server sent (it may close on a
    /// bad request before reading all of it) is still read.
    pub strict_write: bool,
    /// A reset after the reply (unread request bytes at the server's close) ends the
    /// reply instead of being an `Err`.
    pub reset_ends: bool,
}

impl Wire {
    /// A well-formed request: writes must succeed, a reset is an error.
    pub fn strict(timeout: Duration) -> Wire {
        Wire {
            timeout,
            half_close: false,
            strict_write: true,
            reset_ends: false,
        }
    }
}

/// THE client: sends `raw` on a fresh connection and reads until the server closes it.
/// `Ok(None)` when the server closed without a byte, `Ok(Some(reply))` for one parsed
/// response.
pub fn exchange(addr: SocketAddr, raw: &[u8], wire: Wire) -> Result<Option<Resp>, String> {
    let mut s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
        .map_err(|e| format!("connect to {addr}: {e}"))?;
    s.set_read_timeout(Some(wire.timeout))
        .map_err(|e| e.to_string())?;
    // A lenient write gives up early: the server may have stopped reading on purpose.
    let write_timeout = if wire.strict_write {
        wire.timeout
    } else {
        wire.timeout.min(CONNECT_TIMEOUT)
    };
    s.set_write_timeout(Some(write_timeout))
        .map_err(|e| e.to_string())?;
    match s.write_all(raw) {
        Err(e) if wire.strict_write => return Err(format!("write: {e}")),
        _ => {}
    }
    if wire.half_close {
        let _ = s.shutdown(std::net::Shutdown::Write);
    }
    let mut data = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        match s.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => data.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) if wire.reset_ends && e.kind() == std::io::ErrorKind::ConnectionReset => break,
            Err(e) => return Err(format!("read ({} bytes so far): {e}", data.len())),
        }
    }
    if data.is_empty() {
        Ok(None)
    } else {
        parse_response(&data).map(Some)
    }
}

/// The bytes of a request with `Connection: close` (and `Content-Length` when there is
/// a body, or for POST / PUT).
pub fn request_bytes(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if !body.is_empty() || method == "POST" || method == "PUT" {
        head.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// One request, every socket operation bounded by `timeout`; an I/O failure (e.g. the
/// server was killed) or a closed connection without a reply is an `Err`.
pub fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
) -> Result<Resp, String> {
    let raw = request_bytes(addr, method, path, headers, body);
    exchange(addr, &raw, Wire::strict(timeout))?
        .ok_or_else(|| format!("{method} {path}: the server closed without a reply"))
}

/// One request on a fresh connection (`Connection: close`), read to the end; panics on
/// an I/O failure.
pub fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Resp {
    try_http(addr, method, path, headers, body).unwrap_or_else(|e| panic!("{method} {path}: {e}"))
}

/// Like [`http`], but an I/O failure (e.g. the server was killed) is an `Err`.
pub fn try_http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<Resp, String> {
    request(addr, method, path, headers, body, HTTP_TIMEOUT)
}

/// GET a JSON document within `timeout`; an `Err` on a non-2xx status.
pub fn get_json(addr: SocketAddr, path: &str, timeout: Duration) -> Result<Value, String> {
    json_2xx("GET", path, request(addr, "GET", path, &[], b"", timeout)?)
}

/// POST a JSON document within `timeout`; an `Err` on a non-2xx status.
pub fn post_json(
    addr: SocketAddr,
    path: &str,
    body: &Value,
    timeout: Duration,
) -> Result<Value, String> {
    let r = request(
        addr,
        "POST",
        path,
        &[("Content-Type", "application/json")],
        body.to_string().as_bytes(),
        timeout,
    )?;
    json_2xx("POST", path, r)
}

fn json_2xx(method: &str, path: &str, r: Resp) -> Result<Value, String> {
    let v = r.try_json().map_err(|e| format!("{method} {path}: {e}"))?;
    if !(200..300).contains(&r.status) {
        return Err(format!("{method} {path}: HTTP {}: {v}", r.status));
    }
    Ok(v)
}

/// Sends `raw` bytes and parses the one response that comes back.
pub fn http_raw(addr: SocketAddr, raw: &[u8]) -> Result<Resp, String> {
    exchange(addr, raw, Wire::strict(HTTP_TIMEOUT))?
        .ok_or_else(|| "the server closed without a reply".to_owned())
}

/// Sends `raw` on a fresh connection and returns what came back: `Ok(None)` when the
/// server closed without a byte, `Ok(Some(reply))` for one parsed response. Unlike
/// [`http_raw`], a failed write (the server may close on a bad request before reading
/// all of it) is not an error: the reply it sent is still read. With `half_close`, the
/// write side is shut down after `raw` (the client has nothing more to say).
pub fn http_raw_reply(
    addr: SocketAddr,
    raw: &[u8],
    half_close: bool,
    read_timeout: Duration,
) -> Result<Option<Resp>, String> {
    exchange(
        addr,
        raw,
        Wire {
            timeout: read_timeout,
            half_close,
            strict_write: false,
            reset_ends: true,
        },
    )
}

fn parse_response(data: &[u8]) -> Result<Resp, String> {
    let head_end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or_else(|| format!("no complete head in {:?}", String::from_utf8_lossy(data)))?;
    let head = std::str::from_utf8(&data[..head_end]).map_err(|e| format!("head: {e}"))?;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(format!("bad status line {status_line:?}"));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let rest = &data[head_end + 4..];
    let body = if header(&headers, "transfer-encoding")
        .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
    {
        dechunk(rest)?
    } else if let Some(len) = header(&headers, "content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("bad Content-Length {len:?}"))?;
        if rest.len() < len {
            return Err(format!("body cut short: {} of {len} bytes", rest.len()));
        }
        rest[..len].to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Resp {
        status,
        headers,
        body,
    })
}

fn dechunk(mut rest: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("chunk size line missing")?;
        let size_text = std::str::from_utf8(&rest[..eol]).map_err(|e| e.to_string())?;
        let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        rest = &rest[eol + 2..];
        if size == 0 {
            return Ok(body);
        }
        if rest.len() < size + 2 {
            return Err("chunk cut short".into());
        }
        body.extend_from_slice(&rest[..size]);
        rest = &rest[size + 2..];
    }
}

// ---------------------------------------------------------------------------------------
// MJPEG

/// An open `GET {path}` MJPEG stream (`multipart/x-mixed-replace`), head already read.
pub struct Mjpeg {
    /// The response's headers.
    pub headers: Vec<(String, String)>,
    reader: BufReader<TcpStream>,
    boundary: String,
}

/// One part of an MJPEG stream.
pub struct MjpegPart {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Bytes the part took on the wire (boundary, part head, body, CRLF).
    pub wire_bytes: usize,
}

impl MjpegPart {
    pub fn header(&self, name: &str) -> Option<&str> {
        header(&self.headers, name)
    }
}

impl Mjpeg {
    /// Opens the stream; panics unless it answers 200 with a multipart content type.
    pub fn open(addr: SocketAddr, path: &str) -> Mjpeg {
        Mjpeg::try_open(addr, path, Duration::from_secs(10)).unwrap_or_else(|e| panic!("{e}"))
    }

    /// Opens the stream (reads bounded by `read_timeout`); an `Err` unless it answers 200
    /// with a multipart content type and a boundary.
    pub fn try_open(addr: SocketAddr, path: &str, read_timeout: Duration) -> Result<Mjpeg, String> {
        let mut s = TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)
            .map_err(|e| format!("{path}: connect to {addr}: {e}"))?;
        s.set_read_timeout(Some(read_timeout))
            .map_err(|e| e.to_string())?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
        )
        .map_err(|e| format!("{path}: write: {e}"))?;
        let mut reader = BufReader::with_capacity(64 * 1024, s);
        let mut line = String::new();
        reader
            .read_line(&mut line)
            .map_err(|e| format!("{path}: status line: {e}"))?;
        if !line.starts_with("HTTP/1.1 200") {
            return Err(format!("{path}: {line:?}"));
        }
        let (headers, _) = read_headers(&mut reader).map_err(|e| format!("{path}: {e}"))?;
        let content_type = header(&headers, "content-type").unwrap_or_default();
        if !content_type.starts_with("multipart/x-mixed-replace") {
            return Err(format!("{path}: content type {content_type:?}"));
        }
        let boundary = content_type
            .split("boundary=")
            .nth(1)
            .map(|b| b.trim_matches('"').to_owned())
            .ok_or_else(|| format!("{path}: no boundary in {content_type:?}"))?;
        Ok(Mjpeg {
            headers,
            reader,
            boundary: format!("--{boundary}"),
        })
    }

    /// A second handle on the socket (e.g. to shut it down from another thread).
    pub fn stream(&self) -> std::io::Result<TcpStream> {
        self.reader.get_ref().try_clone()
    }

    /// The next part; `None` when the server ended the stream. Panics on a broken one.
    pub fn next_part(&mut self) -> Option<MjpegPart> {
        self.try_next_part().unwrap_or_else(|e| panic!("{e}"))
    }

    /// The next part; `Ok(None)` when the server closed the connection, `Err` on a
    /// broken stream (a closing boundary included).
    pub fn try_next_part(&mut self) -> Result<Option<MjpegPart>, String> {
        let mut line = String::new();
        let mut wire_bytes = 0;
        loop {
            line.clear();
            let n = self
                .reader
                .read_line(&mut line)
                .map_err(|e| format!("boundary line: {e}"))?;
            if n == 0 {
                return Ok(None);
            }
            wire_bytes += n;
            if !line.trim_end().is_empty() {
                break;
            }
        }
        if line.trim_end() != self.boundary {
            return Err(format!(
                "part boundary: expected {:?}, got {:?}",
                self.boundary,
                line.trim_end()
            ));
        }
        let (headers, head_bytes) = read_headers(&mut self.reader)?;
        let len: usize = header(&headers, "content-length")
            .and_then(|v| v.parse().ok())
            .ok_or("part without a Content-Length")?;
        let mut body = vec![0; len];
        self.reader
            .read_exact(&mut body)
            .map_err(|e| format!("part body: {e}"))?;
        Ok(Some(MjpegPart {
            headers,
            body,
            wire_bytes: wire_bytes + head_bytes + len + 2,
        }))
    }
}

/// Header lines up to the blank line, and the bytes they took.
fn read_headers(
    reader: &mut BufReader<TcpStream>,
) -> Result<(Vec<(String, String)>, usize), String> {
    let mut headers = Vec::new();
    let mut line = String::new();
    let mut bytes = 0;
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .map_err(|e| format!("header line: {e}"))?;
        if n == 0 {
            return Err("connection closed in a head".into());
        }
        bytes += n;
        let l = line.trim_end();
        if l.is_empty() {
            return Ok((headers, bytes));
        }
        let (k, v) = l
            .split_once(':')
            .ok_or_else(|| format!("bad header line {l:?}"))?;
        headers.push((k.trim().to_owned(), v.trim().to_owned()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"),
            Ok(b"abcde".to_vec())
        );
        assert!(dechunk(b"3\r\nabc\r\n").is_err());
    }
}
