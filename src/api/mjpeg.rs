//! `GET /api/cameras/{id}/mjpeg`: a `multipart/x-mixed-replace` stream of JPEGs for
//! `<img>` tags, web views, VLC and ffplay. Each stream has its own thread (`mjpeg-{n}`)
//! and, like a WebSocket viewer, always gets the newest picture when it is ready.

use std::io::Write;
use std::net::TcpStream;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::pace::Pacer;
use super::request::{error, Reply, Request};
use super::sessions::Kind;
use super::Ctx;
use super::{params, status};
use crate::camera::feed::Via;
use crate::camera::{Camera, JpegParams};

const BOUNDARY: &str = "ptzedgeframe";
/// How often a stream with no new picture looks at the shutdown flag.
const POLL: Duration = Duration::from_millis(250);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub fn stream(req: &Request, cam: Arc<Camera>, ctx: &Arc<Ctx>) -> Reply {
    let (params, fps) = match params::jpeg(req).and_then(|p| Ok((p, params::fps(req)?))) {
        Ok(p) => p,
        Err(e) => return error(e.status(), e.to_string()),
    };
    let Some(place) = ctx.sessions.reserve(Kind::Stream) else {
        return error(503, "Too many MJPEG streams");
    };
    let ctx = Arc::clone(ctx);
    let head_only = req.method == "HEAD";
    Reply::Takeover(Box::new(
        move |mut stream: TcpStream, _leftover: Vec<u8>| {
            let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary={BOUNDARY}\r\n\
             Cache-Control: no-store\r\nPragma: no-cache\r\nConnection: close\r\n\
             Access-Control-Allow-Origin: *\r\n\r\n"
        );
            if stream.write_all(head.as_bytes()).is_err() || head_only {
                return;
            }
            let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
            let Ok(socket) = stream.try_clone() else {
                return;
            };
            let sctx = Arc::clone(&ctx);
            let spawned = ctx
                .sessions
                .spawn(place, format!("mjpeg-{n}"), &socket, move || {
                    run(stream, cam, params, fps, sctx)
                });
            if let Err(e) = spawned {
                log::warn!("cannot start an MJPEG stream: {e}");
            }
        },
    ))
}

fn run(mut stream: TcpStream, cam: Arc<Camera>, params: JpegParams, fps: f64, ctx: Arc<Ctx>) {
    super::sessions::tune_viewer_socket(&stream);
    let _ = stream.set_write_timeout(Some(ctx.config.limits.write_timeout));
    let id = cam.id().to_owned();
    let mut viewer = cam.watch();
    drop(cam);
    let mut pacer = Pacer::new(fps);
    log::debug!("{id}: MJPEG viewer attached");
    while !ctx.shutdown.load(Ordering::SeqCst) {
        let frame = viewer.feed().latest();
        let Some(frame) = frame.filter(|f| pacer.offer(f.seq, Instant::now())) else {
            let _ = viewer.wakeups().recv_timeout(POLL);
            // The camera was disconnected: end the stream (the client sees it end and
            // its socket is freed); connected anew: follow it to its new feed.
            match ctx.fleet.camera(&id) {
                None => break,
                Some(c) if !viewer.watches(&c.feed) => {
                    viewer = c.watch();
                    pacer.reset();
                }
                Some(_) => {}
            }
            continue;
        };
        let jpeg = match viewer.feed().jpeg.get(&frame, params) {
            Ok(j) => j,
            Err(e) => {
                log::warn!("{id}: JPEG encoding failed: {e}");
                continue;
            }
        };
        let headers: String = status::picture_headers(params.crop, &jpeg)
            .iter()
            .map(|(name, value)| format!("{name}: {value}\r\n"))
            .collect();
        let part = format!(
            "--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {}\r\n{headers}\r\n",
            jpeg.data.len(),
        );
        let ok = stream.write_all(part.as_bytes()).is_ok()
            && stream.write_all(&jpeg.data).is_ok()
            && stream.write_all(b"\r\n").is_ok();
        if !ok {
            break;
        }
        let sent = part.len() + jpeg.data.len() + 2;
        viewer.feed().sent.record(Via::Mjpeg, sent, jpeg.captured);
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    log::debug!("{id}: MJPEG viewer gone");
}
