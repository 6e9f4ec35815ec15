//! HTTP authentication for camera requests (PTZOptics CGI, ONVIF SOAP over HTTP):
//! parsing `WWW-Authenticate` challenges and answering them with Digest (RFC 7616 /
//! RFC 2617, MD5 and MD5-sess, `qop=auth` or the RFC 2069 form without qop) or Basic
//! (RFC 7617). The password only ever enters a hash or the Basic header; nothing here
//! logs. A leaf module: `ptz` (as `ptz::auth`) and `onvif` both use it.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;

/// Digest hash algorithms we can answer. RFC 7616 also defines SHA-256, which PTZOptics
/// firmware does not offer; a camera that only offers it is reported as unsupported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Algorithm {
    Md5,
    Md5Sess,
}

/// One challenge from a `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Challenge {
    Basic,
    Digest(DigestChallenge),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DigestChallenge {
    pub realm: String,
    pub nonce: String,
    pub opaque: Option<String>,
    pub algorithm: Algorithm,
    /// `true` when the server offered `qop=auth`; `false` for the RFC 2069 form.
    pub qop_auth: bool,
    /// The server says the nonce expired but the credentials were right (RFC 7616 3.3).
    pub stale: bool,
}

/// Why no challenge could be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChallengeError {
    /// No `WWW-Authenticate` header at all.
    Missing,
    /// Only schemes or algorithms we do not implement; the text names them.
    Unsupported(String),
}

/// Splits `key=value, key="quoted, value"` parameters (RFC 7235 `auth-param`), honouring
/// backslash escapes in quoted strings. Keys are lower-cased.
pub(crate) fn parse_params(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(c) if *c == ',' || c.is_whitespace()) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' || c == ',' {
                break;
            }
            key.push(c);
            chars.next();
        }
        let key = key.trim().to_ascii_lowercase();
        if key.is_empty() && chars.peek().is_none() {
            return out;
        }
        let mut value = String::new();
        if chars.peek() == Some(&'=') {
            chars.next();
            while matches!(chars.peek(), Some(c) if c.is_whitespace()) {
                chars.next();
            }
            if chars.peek() == Some(&'"') {
                chars.next();
                while let Some(c) = chars.next() {
                    match c {
                        '\\' => {
                            if let Some(n) = chars.next() {
                                value.push(n);
                            }
                        }
                        '"' => break,
                        _ => value.push(c),
                    }
                }
            } else {
                while let Some(&c) = chars.peek() {
                    if c == ',' {
                        break;
                    }
                    value.push(c);
                    chars.next();
                }
                value = value.trim().to_owned();
            }
        }
        if !key.is_empty() {
            out.push((key, value));
        }
        if chars.peek().is_none() {
            return out;
        }
    }
}

pub(crate) fn param<'a>(params: &'a [(String, String)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// Parses one `WWW-Authenticate` header value (one challenge per header, as cameras send).
fn parse_challenge(value: &str) -> Result<Challenge, String> {
    let value = value.trim();
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    if scheme.eq_ignore_ascii_case("basic") {
        return Ok(Challenge::Basic);
    }
    if !scheme.eq_ignore_ascii_case("digest") {
        return Err(format!("scheme {scheme}"));
    }
    let params = parse_params(rest);
    let algorithm = match param(&params, "algorithm") {
        None => Algorithm::Md5,
        Some(a) if a.eq_ignore_ascii_case("md5") => Algorithm::Md5,
        Some(a) if a.eq_ignore_ascii_case("md5-sess") => Algorithm::Md5Sess,
        Some(a) => return Err(format!("Digest algorithm {a}")),
    };
    let qop_auth = match param(&params, "qop") {
        None => false,
        Some(q) if q.split(',').any(|t| t.trim().eq_ignore_ascii_case("auth")) => true,
        Some(q) => return Err(format!("Digest qop {q}")),
    };
    let nonce = param(&params, "nonce")
        .ok_or_else(|| "Digest challenge without a nonce".to_owned())?
        .to_owned();
    Ok(Challenge::Digest(DigestChallenge {
        realm: param(&params, "realm").unwrap_or("").to_owned(),
        nonce,
        opaque: param(&params, "opaque").map(str::to_owned),
        algorithm,
        qop_auth,
        stale: param(&params, "stale").is_some_and(|s| s.eq_ignore_ascii_case("true")),
    }))
}

/// The best challenge among the `WWW-Authenticate` header values: Digest with `qop=auth`,
/// then Digest without qop, then Basic (which sends the password recoverably, so only
/// when the camera offers nothing better).
pub(crate) fn best_challenge<'a>(
    values: impl IntoIterator<Item = &'a str>,
) -> Result<Challenge, ChallengeError> {
    let mut best: Option<(u8, Challenge)> = None;
    let mut unsupported = Vec::new();
    for v in values {
        match parse_challenge(v) {
            Ok(c) => {
                let rank = match &c {
                    Challenge::Digest(d) if d.qop_auth => 3,
                    Challenge::Digest(_) => 2,
                    Challenge::Basic => 1,
                };
                if best.as_ref().is_none_or(|(r, _)| rank > *r) {
                    best = Some((rank, c));
                }
            }
            Err(e) => unsupported.push(e),
        }
    }
    match best {
        Some((_, c)) => Ok(c),
        None if unsupported.is_empty() => Err(ChallengeError::Missing),
        None => Err(ChallengeError::Unsupported(unsupported.join(", "))),
    }
}

/// How the next request of one client authenticates, learned from the server's last
/// challenge (RFC 7617 Basic, RFC 7616 Digest with its nonce count).
#[derive(Debug, Default)]
pub(crate) enum AuthState {
    #[default]
    None,
    Basic,
    Digest {
        challenge: DigestChallenge,
        nc: u32,
    },
}

impl AuthState {
    /// Answers `challenge` from now on (a fresh nonce count).
    pub(crate) fn from_challenge(challenge: Challenge) -> AuthState {
        match challenge {
            Challenge::Basic => AuthState::Basic,
            Challenge::Digest(challenge) => AuthState::Digest { challenge, nc: 0 },
        }
    }

    /// The `Authorization` value for `method path`, if the server asked for one.
    pub(crate) fn authorization(
        &mut self,
        username: &str,
        password: &str,
        method: &str,
        path: &str,
    ) -> Option<String> {
        match self {
            AuthState::None => None,
            AuthState::Basic => Some(basic_authorization(username, password)),
            AuthState::Digest { challenge, nc } => {
                *nc += 1;
                Some(digest_authorization(
                    challenge,
                    username,
                    password,
                    method,
                    path,
                    *nc,
                    &cnonce(),
                ))
            }
        }
    }
}

/// `Authorization: Basic ...` value.
pub(crate) fn basic_authorization(username: &str, password: &str) -> String {
    let raw = format!("{username}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(raw)
    )
}

/// What the Digest `response` hash (RFC 7616 section 3.4.1, RFC 2617 3.2.2.1) covers.
pub(crate) struct DigestInput<'a> {
    pub algorithm: Algorithm,
    pub username: &'a str,
    pub realm: &'a str,
    pub password: &'a str,
    pub method: &'a str,
    pub uri: &'a str,
    pub nonce: &'a str,
    /// `(nc, cnonce)` for `qop=auth`; `None` for the RFC 2069 form.
    pub nc_cnonce: Option<(&'a str, &'a str)>,
}

impl DigestInput<'_> {
    /// The `response` value, 32 hex digits.
    pub(crate) fn response(&self) -> String {
        let mut ha1 =
            md5_hex(format!("{}:{}:{}", self.username, self.realm, self.password).as_bytes());
        if self.algorithm == Algorithm::Md5Sess {
            let cnonce = self.nc_cnonce.map_or("", |(_, c)| c);
            ha1 = md5_hex(format!("{ha1}:{}:{cnonce}", self.nonce).as_bytes());
        }
        let ha2 = md5_hex(format!("{}:{}", self.method, self.uri).as_bytes());
        match self.nc_cnonce {
            Some((nc, cnonce)) => {
                md5_hex(format!("{ha1}:{}:{nc}:{cnonce}:auth:{ha2}", self.nonce).as_bytes())
            }
            None => md5_hex(format!("{ha1}:{}:{ha2}", self.nonce).as_bytes()),
        }
    }
}

/// Quotes a value for a header's quoted-string.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        if c == '"' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `Authorization: Digest ...` value for one request; `nc` counts the requests made with
/// this nonce (1 for the first).
pub(crate) fn digest_authorization(
    ch: &DigestChallenge,
    username: &str,
    password: &str,
    method: &str,
    uri: &str,
    nc: u32,
    cnonce: &str,
) -> String {
    let nc = format!("{nc:08x}");
    let qop = ch.qop_auth.then_some((nc.as_str(), cnonce));
    let response = DigestInput {
        algorithm: ch.algorithm,
        username,
        realm: &ch.realm,
        password,
        method,
        uri,
        nonce: &ch.nonce,
        nc_cnonce: qop,
    }
    .response();
    let mut h = format!(
        "Digest username={}, realm={}, nonce={}, uri={}, algorithm={}, response=\"{response}\"",
        quote(username),
        quote(&ch.realm),
        quote(&ch.nonce),
        quote(uri),
        match ch.algorithm {
            Algorithm::Md5 => "MD5",
            Algorithm::Md5Sess => "MD5-sess",
        },
    );
    if ch.qop_auth {
        h.push_str(&format!(", qop=auth, nc={nc}, cnonce={}", quote(cnonce)));
    }
    if let Some(o) = &ch.opaque {
        h.push_str(&format!(", opaque={}", quote(o)));
    }
    h
}

/// A fresh client nonce: 128 bits from the OS-seeded `RandomState`, the clock and a
/// counter, in hex. RFC 7616 only asks that it be unpredictable to a passive observer.
pub(crate) fn cnonce() -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let mut out = String::with_capacity(32);
    for salt in [0u64, 1] {
        let mut h = RandomState::new().build_hasher();
        h.write_u64(n);
        h.write_u128(nanos);
        h.write_u64(salt);
        out.push_str(&format!("{:016x}", h.finish()));
    }
    out
}

/// Lower-case hex MD5, as Digest auth (RFC 7616 §3.4) writes its hashes.
fn md5_hex(data: &[u8]) -> String {
    use md5::Digest as _;
    md5::Md5::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 2617 section 3.5's worked example.
    #[test]
    fn rfc2617_example() {
        let r = DigestInput {
            algorithm: Algorithm::Md5,
            username: "Mufasa",
            realm: "testrealm@host.com",
            password: "Circle Of Life",
            method: "GET",
            uri: "/dir/index.html",
            nonce: "dcd98b7102dd2f0e8b11d0f600bfb0c093",
            nc_cnonce: Some(("00000001", "0a4f113b")),
        }
        .response();
        assert_eq!(r, "6629fae49393a05397450978507c4ef1");
    }

    /// RFC 7616 section 3.9.1's MD5 example.
    #[test]
    fn rfc7616_md5_example() {
        let header = r#"Digest realm="http-auth@example.org", qop="auth, auth-int", algorithm=MD5, nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v", opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#;
        let Ok(Challenge::Digest(ch)) = best_challenge([header]) else {
            panic!("not parsed");
        };
        assert!(ch.qop_auth);
        assert_eq!(ch.realm, "http-auth@example.org");
        let auth = digest_authorization(
            &ch,
            "Mufasa",
            "Circle of Life",
            "GET",
            "/dir/index.html",
            1,
            "f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
        );
        assert!(
            auth.contains(r#"response="8ca523f5e9506fed4657c9700eebdbec""#),
            "{auth}"
        );
        assert!(auth.contains("nc=00000001"));
        assert!(auth.contains(r#"opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS""#));
    }

    #[test]
    fn prefers_digest_over_basic_and_reports_unsupported() {
        let c = best_challenge([r#"Basic realm="cam""#, r#"Digest realm="cam", nonce="n""#]);
        assert!(matches!(c, Ok(Challenge::Digest(d)) if !d.qop_auth && d.nonce == "n"));
        assert_eq!(best_challenge([r#"Basic realm="x""#]), Ok(Challenge::Basic));
        assert_eq!(
            best_challenge([r#"Digest realm="x", nonce="n", algorithm=SHA-256"#]),
            Err(ChallengeError::Unsupported(
                "Digest algorithm SHA-256".into()
            ))
        );
        assert_eq!(best_challenge([]), Err(ChallengeError::Missing));
    }

    #[test]
    fn params_with_escapes_and_stale() {
        let p = parse_params(r#"realm="a \"b\", c", nonce=xyz, stale=TRUE"#);
        assert_eq!(param(&p, "realm"), Some(r#"a "b", c"#));
        assert_eq!(param(&p, "nonce"), Some("xyz"));
        let Ok(Challenge::Digest(d)) =
            best_challenge([r#"Digest realm="r", nonce="n", stale=TRUE, qop="auth""#])
        else {
            panic!()
        };
        assert!(d.stale);
    }

    #[test]
    fn basic_header_and_quoting() {
        // RFC 7617 section 2's example.
        assert_eq!(
            basic_authorization("Aladdin", "open sesame"),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        assert_eq!(quote(r#"a"b\c"#), r#""a\"b\\c""#);
    }

    #[test]
    fn cnonces_differ() {
        let a = cnonce();
        assert_eq!(a.len(), 32);
        assert_ne!(a, cnonce());
    }
}
