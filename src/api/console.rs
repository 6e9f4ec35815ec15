//! The operator console: three static files embedded in the binary (nothing is read from
//! disk or built at run time), served at `/`, `/console/app.js` and `/console/app.css`.
//! They hold no data: every API call the page makes carries the token, so they are
//! served without one. Caching: `no-cache` with a strong `ETag` (a hash of the embedded
//! bytes), so a browser revalidates on each load and gets `304` until the binary changes.

use tiny_http::{Response, StatusCode};

use super::request::{error, header, Reply, Request};

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
    etag: u64,
}

impl Asset {
    const fn new(name: &'static str, content_type: &'static str, body: &'static str) -> Asset {
        Asset {
            name,
            content_type,
            body,
            etag: fnv1a(body.as_bytes()),
        }
    }
}

const PAGE: Asset = Asset::new(
    "index.html",
    "text/html; charset=utf-8",
    include_str!("console/index.html"),
);

const ASSETS: [Asset; 2] = [
    Asset::new(
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("console/app.js"),
    ),
    Asset::new(
        "app.css",
        "text/css; charset=utf-8",
        include_str!("console/app.css"),
    ),
];

/// What the page may load and talk to: only this appliance (its API and WebSocket) and
/// the pictures it decodes into blobs.
const CSP: &str = "default-src 'self'; img-src 'self' blob: data:; connect-src 'self' ws: wss:; \
                   style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; \
                   frame-ancestors 'none'";

/// `GET /`: the console's page.
pub fn page(req: &Request) -> Reply {
    serve(req, &PAGE)
}

/// `GET /console/{name}`: the console's script and stylesheet; `404` for anything else.
pub fn asset(req: &Request, name: &str) -> Reply {
    match ASSETS.iter().find(|a| a.name == name) {
        Some(a) => serve(req, a),
        None => error(404, format!("No console file {name:?}")),
    }
}

fn serve(req: &Request, a: &Asset) -> Reply {
    let etag = format!("\"{:016x}\"", a.etag);
    let fresh = req
        .header("If-None-Match")
        .is_some_and(|v| v.split(',').any(|t| matches_etag(t.trim(), &etag)));
    let response = if fresh {
        Response::from_data(Vec::new()).with_status_code(StatusCode(304))
    } else {
        Response::from_data(a.body.as_bytes())
            .with_header(header("Content-Type", a.content_type))
            .with_header(header("X-Content-Type-Options", "nosniff"))
    };
    let mut response = response
        .with_header(header("Cache-Control", "no-cache"))
        .with_header(header("ETag", &etag));
    if a.content_type.starts_with("text/html") {
        response = response
            .with_header(header("Content-Security-Policy", CSP))
            .with_header(header("Referrer-Policy", "no-referrer"));
    }
    Reply::Response(response.boxed())
}

/// `If-None-Match` compares weakly (RFC 9110 §13.1.2): `W/"x"` matches `"x"`.
fn matches_etag(candidate: &str, etag: &str) -> bool {
    candidate == "*" || candidate.strip_prefix("W/").unwrap_or(candidate) == etag
}

/// FNV-1a, 64 bits: enough to tell two builds' files apart, computed at compile time.
const fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut i = 0;
    while i < bytes.len() {
        hash ^= bytes[i] as u64;
        hash = hash.wrapping_mul(0x0100_0000_01b3);
        i += 1;
    }
    hash
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etags_differ_per_file_and_match_weakly() {
        let etags: Vec<u64> = std::iter::once(&PAGE)
            .chain(ASSETS.iter())
            .map(|a| a.etag)
            .collect();
        assert_ne!(etags[0], etags[1]);
        assert_ne!(etags[1], etags[2]);
        assert!(matches_etag("W/\"ab\"", "\"ab\""));
        assert!(matches_etag("*", "\"ab\""));
        assert!(!matches_etag("\"ac\"", "\"ab\""));
    }

    #[test]
    fn the_page_loads_only_what_is_embedded() {
        for a in &ASSETS {
            assert!(
                PAGE.body.contains(&format!("/console/{}", a.name)),
                "index.html does not load {}",
                a.name
            );
        }
    }
}
