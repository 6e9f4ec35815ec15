//! The operator console (issue 12) in a real browser: Debian's chromium driven over the
//! DevTools protocol (`headless_chrome`, synchronous), at a phone's viewport (390x844,
//! device pixel ratio 2, touch emulation on), against the real appliance and the
//! simulator camera with its PTZ head (`camera-sim --ptz`, VISCA over TCP).
//!
//! Every gesture is real input: taps and the joystick drag are touch events
//! (`Input.dispatchTouchEvent`), text is typed key by key, the keyboard joystick gets key
//! down/up. What the page shows is read back from the page (the live canvas as JPEG, with
//! the simulator's frame code in it) and what it did from the appliance (`GET /ptz` for the
//! head, `GET /api/cameras` for the list).
//!
//! A screenshot of each step goes into a temporary directory, kept and printed when the
//! test fails. Without chromium (`/usr/bin/chromium`, or `$CHROMIUM`) the tests skip with a
//! message, except in CI (`CI=true`), where they fail.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use common::*;
use headless_chrome::protocol::cdp::{Emulation, Input, Page};
use headless_chrome::{Browser, LaunchOptions, Tab};
use serde_json::{json, Value};

/// How long the page may take to show what a step expects (a loaded 2-core box).
const PAGE_WAIT: Duration = Duration::from_secs(15);
/// How long connect may take through the form (the appliance answers within 5 s).
const CONNECT_WAIT: Duration = Duration::from_secs(20);
/// Travel (VISCA units) that counts as "moved".
const MIN_TRAVEL: i64 = 50;

/// The browser tests run one at a time: each has a chromium, a simulator and an appliance,
/// and the joystick test's assertions are timings (CI has two cores).
static BROWSER: Mutex<()> = Mutex::new(());

fn one_browser_at_a_time() -> MutexGuard<'static, ()> {
    BROWSER.lock().unwrap_or_else(|e| e.into_inner())
}

/// The phone: an iPhone 12/13/14-sized viewport in CSS pixels.
const PHONE: (u32, u32, f64) = (390, 844, 2.0);

// ---------------------------------------------------------------------------------------
// The browser

/// Chromium's path, or `None` (with the reason printed) when the tests should skip.
fn chromium() -> Option<PathBuf> {
    optional_tool(
        "CHROMIUM",
        "/usr/bin/chromium",
        "`chromium`",
        "the browser tests",
    )
}

/// Emulates a screen of `viewport` (CSS px, device pixel ratio), a mobile one when `mobile`.
fn set_viewport(tab: &Tab, viewport: (u32, u32, f64), mobile: bool) {
    let (width, height, scale) = viewport;
    tab.call_method(Emulation::SetDeviceMetricsOverride {
        width,
        height,
        device_scale_factor: scale,
        mobile,
        scale: None,
        screen_width: None,
        screen_height: None,
        position_x: None,
        position_y: None,
        dont_set_visible_size: None,
        screen_orientation: None,
        viewport: None,
        display_feature: None,
        device_posture: None,
    })
    .expect("Emulation.setDeviceMetricsOverride");
}

/// One headless chromium with one tab, its profile and the step screenshots in a
/// temporary directory (removed after a passing test, kept and printed after a failure).
struct Phone {
    tab: Arc<Tab>,
    /// `Some` until drop, which ends chromium before removing its profile.
    browser: Option<Browser>,
    base: String,
    dir: PathBuf,
    step: usize,
}

impl Phone {
    /// Chromium at `viewport` (CSS px, device pixel ratio), touch emulation on when
    /// `touch`, on the appliance's console.
    fn open(chromium: &Path, app: &Appliance, viewport: (u32, u32, f64), touch: bool) -> Phone {
        let dir = temp_dir("console");
        let profile = dir.join("profile");
        std::fs::create_dir_all(&profile).expect("create the chromium profile dir");
        let args: Vec<&OsStr> = [
            "--disable-quic",
            "--disable-component-update",
            "--disable-background-networking",
            "--disable-sync",
            "--no-first-run",
            "--hide-scrollbars",
            "--mute-audio",
        ]
        .iter()
        .map(OsStr::new)
        .collect();
        let options = LaunchOptions::default_builder()
            .path(Some(chromium.to_owned()))
            .headless(true)
            .sandbox(false)
            .enable_gpu(false)
            .window_size(Some((viewport.0, viewport.1)))
            .user_data_dir(Some(profile))
            .idle_browser_timeout(Duration::from_secs(300))
            .args(args)
            .build()
            .expect("chromium launch options");
        let browser = Browser::new(options)
            .unwrap_or_else(|e| panic!("chromium {} does not start: {e}", chromium.display()));
        let tab = browser.new_tab().expect("a chromium tab");
        tab.set_default_timeout(PAGE_WAIT);
        set_viewport(&tab, viewport, touch);
        if touch {
            tab.call_method(Emulation::SetTouchEmulationEnabled {
                enabled: true,
                max_touch_points: Some(5),
            })
            .expect("Emulation.setTouchEmulationEnabled");
        }
        let base = format!("http://{}", app.addr);
        let phone = Phone {
            tab,
            browser: Some(browser),
            base,
            dir,
            step: 0,
        };
        phone.goto("/");
        phone
    }

    fn goto(&self, path: &str) {
        let url = format!("{}{path}", self.base);
        self.tab
            .navigate_to(&url)
            .and_then(|t| t.wait_until_navigated())
            .unwrap_or_else(|e| panic!("navigate to {url}: {e}"));
    }

    /// Evaluates `expr` (awaited if it is a promise) and returns its JSON value.
    fn js(&self, expr: &str) -> Value {
        self.try_js(expr)
            .unwrap_or_else(|e| panic!("evaluating `{expr}`: {e}"))
    }

    fn try_js(&self, expr: &str) -> Result<Value, String> {
        let wrapped = format!("(async () => JSON.stringify((await ({expr})) ?? null))()");
        let r = self
            .tab
            .evaluate(&wrapped, true)
            .map_err(|e| e.to_string())?;
        match r.value {
            Some(Value::String(s)) => serde_json::from_str(&s).map_err(|e| format!("{e}: {s}")),
            _ => Err(r
                .description
                .unwrap_or_else(|| format!("no value ({:?})", r.Type))),
        }
    }

    /// Waits until `expr` is truthy; returns its value.
    #[track_caller]
    fn wait_js(&self, expr: &str, what: &str) -> Value {
        self.wait_js_for(PAGE_WAIT, expr, what)
    }

    #[track_caller]
    fn wait_js_for(&self, timeout: Duration, expr: &str, what: &str) -> Value {
        wait_for(timeout, what, || match self.try_js(expr) {
            Ok(v) if !(v.is_null() || v == json!(false) || v == json!(0) || v == json!("")) => {
                Ok(v)
            }
            Ok(v) => Err(format!("`{expr}` is {v}")),
            Err(e) => Err(e),
        })
    }

    /// The centre of the first element matching `selector`, in CSS pixels of the viewport
    /// (scrolled into view first), and its size.
    fn rect(&self, selector: &str) -> (f64, f64, f64, f64) {
        let sel = serde_json::to_string(selector).expect("a selector is JSON");
        let v = self.wait_js(
            &format!(
                "(() => {{ const e = document.querySelector({sel}); if (!e || e.offsetParent === null) return null; \
                 e.scrollIntoView({{block: 'center', inline: 'center'}}); const r = e.getBoundingClientRect(); \
                 return [r.left + r.width / 2, r.top + r.height / 2, r.width, r.height]; }})()"
            ),
            &format!("{selector} to be shown"),
        );
        let n = |i: usize| {
            v[i].as_f64()
                .unwrap_or_else(|| panic!("rect of {selector}: {v}"))
        };
        (n(0), n(1), n(2), n(3))
    }

    fn touch(&self, kind: Input::DispatchTouchEventTypeOption, at: Option<(f64, f64)>) {
        let touch_points = at
            .map(|(x, y)| {
                vec![Input::TouchPoint {
                    x,
                    y,
                    radius_x: Some(8.0),
                    radius_y: Some(8.0),
                    rotation_angle: None,
                    force: Some(1.0),
                    tangential_pressure: None,
                    tilt_x: None,
                    tilt_y: None,
                    twist: None,
                    id: Some(1.0),
                }]
            })
            .unwrap_or_default();
        self.tab
            .call_method(Input::DispatchTouchEvent {
                Type: kind.clone(),
                touch_points,
                modifiers: None,
                timestamp: None,
            })
            .unwrap_or_else(|e| panic!("Input.dispatchTouchEvent {kind:?}: {e}"));
    }

    /// A finger tap on the element (touch start and end at its centre).
    fn tap(&self, selector: &str) {
        let (x, y, _, _) = self.rect(selector);
        self.touch(
            Input::DispatchTouchEventTypeOption::TouchStart,
            Some((x, y)),
        );
        self.touch(Input::DispatchTouchEventTypeOption::TouchEnd, None);
    }

    /// Taps a text field, clears it, and types `text` key by key.
    fn type_into(&self, selector: &str, text: &str) {
        self.tap(selector);
        let sel = serde_json::to_string(selector).expect("a selector is JSON");
        self.wait_js(
            &format!("document.activeElement === document.querySelector({sel})"),
            &format!("{selector} to have the focus after a tap"),
        );
        self.js(&format!("document.querySelector({sel}).select()"));
        self.tab
            .type_str(text)
            .unwrap_or_else(|e| panic!("typing into {selector}: {e}"));
        let typed = self.js(&format!("document.querySelector({sel}).value"));
        assert_eq!(typed, json!(text), "what {selector} holds after typing");
    }

    /// Picks `value` in a `<select>` as a user's choice would (value set, `change` fired).
    fn choose(&self, selector: &str, value: &str) {
        self.tap(selector);
        let sel = serde_json::to_string(selector).expect("a selector is JSON");
        let v = serde_json::to_string(value).expect("a value is JSON");
        self.js(&format!(
            "(() => {{ const s = document.querySelector({sel}); s.value = {v}; \
             s.dispatchEvent(new Event('change', {{bubbles: true}})); return s.value; }})()"
        ));
    }

    fn key(&self, kind: Input::DispatchKeyEventTypeOption, key: &str, code: u32) {
        self.tab
            .call_method(Input::DispatchKeyEvent {
                Type: kind,
                modifiers: None,
                timestamp: None,
                text: None,
                unmodified_text: None,
                key_identifier: None,
                code: Some(key.to_owned()),
                key: Some(key.to_owned()),
                windows_virtual_key_code: Some(code),
                native_virtual_key_code: Some(code),
                auto_repeat: None,
                is_keypad: None,
                is_system_key: None,
                location: None,
                commands: None,
            })
            .unwrap_or_else(|e| panic!("Input.dispatchKeyEvent {key}: {e}"));
    }

    /// The canvas's picture as JPEG bytes (`toDataURL('image/jpeg')`).
    fn canvas_jpeg(&self, selector: &str) -> Vec<u8> {
        let sel = serde_json::to_string(selector).expect("a selector is JSON");
        let url = self.js(&format!(
            "document.querySelector({sel}).toDataURL('image/jpeg', 0.95)"
        ));
        let url = url.as_str().unwrap_or_default();
        let b64 = url
            .strip_prefix("data:image/jpeg;base64,")
            .unwrap_or_else(|| panic!("{selector} gave no JPEG data URL: {:.60}", url));
        base64::engine::general_purpose::STANDARD
            .decode(b64)
            .expect("the data URL is base64")
    }

    /// The simulator's frame code read from the canvas, once the canvas shows one.
    #[track_caller]
    fn canvas_code(&self, selector: &str) -> (u32, u32, ptz_edge::sim::barcode::FrameCode) {
        wait_for(
            PAGE_WAIT,
            &format!("a readable frame code on {selector}"),
            || read_code(&self.canvas_jpeg(selector)),
        )
    }

    /// Keeps a screenshot of the page as step `name`.
    fn shot(&mut self, name: &str) {
        self.step += 1;
        let path = self.dir.join(format!("{:02}-{name}.png", self.step));
        match self.tab.capture_screenshot(
            Page::CaptureScreenshotFormatOption::Png,
            None,
            None,
            true,
        ) {
            Ok(png) => {
                if let Err(e) = std::fs::write(&path, png) {
                    eprintln!("cannot write {}: {e}", path.display());
                }
            }
            Err(e) => eprintln!("no screenshot for step {name}: {e}"),
        }
    }
}

impl Drop for Phone {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.shot("failed");
            let text = self.try_js("document.body.innerText").unwrap_or_default();
            eprintln!(
                "console test failed: a screenshot of each step is in {}\npage text at failure:\n{}",
                self.dir.display(),
                text.as_str().unwrap_or_default()
            );
            return;
        }
        // Chromium writes into its profile until it exits: end it first.
        drop(self.browser.take());
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Phone {
    /// The page is as wide as the phone (no sideways scrolling) and every visible button
    /// is a finger's size (44 CSS px, Apple's and WCAG's target size).
    #[track_caller]
    fn assert_fits(&self, what: &str) {
        let v = self.js("(() => { const d = document.documentElement; \
             const small = [...document.querySelectorAll('button, .button')] \
               .filter((b) => b.offsetParent !== null) \
               .map((b) => [b.textContent.trim(), b.getBoundingClientRect()]) \
               .filter(([, r]) => r.width < 43.5 || r.height < 43.5) \
               .map(([t, r]) => t + ' ' + r.width.toFixed(0) + 'x' + r.height.toFixed(0)); \
             return {scroll: d.scrollWidth, width: d.clientWidth, small}; })()");
        assert_eq!(
            v["scroll"], v["width"],
            "{what}: the page scrolls sideways on a phone ({v})"
        );
        assert_eq!(
            v["small"],
            json!([]),
            "{what}: buttons too small for a finger"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The appliance side

/// The simulator's picture width in the phone test.
const SIM_WIDTH: u32 = 1280;

/// The picture width a live element of `px` device pixels should get from a `source`-wide
/// camera: the smallest of the appliance's widths that covers it (never stretched),
/// never more than the camera has.
fn sized_for(px: f64, source: u32) -> u32 {
    const WIDTHS: [u32; 6] = [320, 480, 640, 960, 1280, 1920];
    let want = WIDTHS
        .into_iter()
        .find(|&w| f64::from(w) >= px - 1.0)
        .unwrap_or(1920);
    want.min(source)
}

fn ptz_position(app: &Appliance, id: &str) -> (i64, i64, i64) {
    let r = app.get(&format!("/api/cameras/{id}/ptz"));
    assert_eq!(r.status, 200, "GET /ptz: {}", r.text());
    let v = r.json();
    let n = |k: &str| {
        v[k].as_i64()
            .unwrap_or_else(|| panic!("GET /ptz has no integer {k}: {v}"))
    };
    (n("pan"), n("tilt"), n("zoom"))
}

/// The head's position once it has stopped changing.
#[track_caller]
fn still_position(app: &Appliance, id: &str) -> (i64, i64, i64) {
    settled(
        Duration::from_secs(5),
        Duration::from_millis(400),
        "the head to stand still",
        || ptz_position(app, id),
    )
}

fn camera_ids(app: &Appliance) -> Vec<String> {
    app.get("/api/cameras").json()["cameras"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|c| c["cameraId"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------
// The tests

/// On a phone with touch input: the page loads; the simulator camera is added through the
/// form (with VISCA TCP PTZ); its tile and its page show live frames sized to the element;
/// holding the joystick moves the head past the 1 s dead-man and releasing stops it; the
/// keyboard joystick does the same; a preset is saved and recalled; the camera is removed.
#[test]
fn console_on_a_phone_adds_watches_drives_and_removes_a_camera() {
    let _one = one_browser_at_a_time();
    let Some(chromium) = chromium() else { return };
    let size = format!("{SIM_WIDTH}x{}", SIM_WIDTH * 9 / 16);
    let sim = Sim::start(&["--path", "/1", "--size", &size, "--fps", "10", "--ptz"]);
    let visca = sim.ready["ptz"]["visca_tcp"]
        .as_u64()
        .unwrap_or_else(|| panic!("no ptz.visca_tcp in the ready line {}", sim.ready));
    let app = Appliance::start(&[]);
    let mut phone = Phone::open(&chromium, &app, PHONE, true);

    // The page loads: the list, empty, and the add button.
    phone.wait_js(
        "!document.getElementById('view-list').hidden && !document.getElementById('list-empty').hidden",
        "the empty camera list",
    );
    let width = phone.js("document.documentElement.clientWidth");
    assert_eq!(
        width,
        json!(PHONE.0),
        "the page is laid out for the phone's width"
    );
    phone.assert_fits("the empty list");
    phone.shot("empty-list");

    // Add the simulator through the form.
    phone.tap("#add-link");
    phone.wait_js(
        "location.hash === '#/add' && !document.getElementById('view-form').hidden",
        "the add form",
    );
    assert_eq!(
        phone.js("document.getElementById('discover').hidden"),
        json!(true),
        "discovery is hidden when the appliance has no GET /api/discover"
    );
    phone.type_into("#f-id", "sim");
    phone.type_into("#f-ip", "127.0.0.1");
    phone.type_into("#f-port", &sim.rtsp_port.to_string());
    phone.type_into("#f-path", "/1");
    phone.choose("#f-transport", "tcp");
    phone.type_into("#f-user", "admin");
    phone.type_into("#f-pass", "s3cret pass");
    phone.choose("#f-ptz", "visca-tcp");
    phone.type_into("#f-ptz-port", &visca.to_string());
    phone.assert_fits("the filled form");
    phone.shot("form-filled");
    phone.tap("#form-submit");
    phone.wait_js_for(
        CONNECT_WAIT,
        "location.hash === '#/camera/sim' || document.getElementById('form-error').textContent",
        "the camera page after connect (or a form error)",
    );
    let error = phone.js("document.getElementById('form-error').textContent");
    assert_eq!(error, json!(""), "the form shows an error");
    assert_eq!(
        camera_ids(&app),
        ["sim"],
        "the appliance's cameras after the form"
    );
    let status = app.status("sim");
    assert_eq!(status["ptz"]["protocol"], "visca-tcp", "status: {status}");
    assert_eq!(status["ptz"]["port"], json!(visca), "status: {status}");
    let stored = phone.js("localStorage.getItem('ptzEdgeCameras')");
    assert!(
        !stored.as_str().unwrap_or_default().contains("s3cret"),
        "the console kept the password in localStorage: {stored}"
    );

    // The camera page: live frames, sized to the canvas, and the status details.
    phone.wait_js(
        "Number(document.getElementById('cam-canvas').dataset.frames) >= 2",
        "frames on the camera page",
    );
    let (w, _, first) = phone.canvas_code("#cam-canvas");
    let element = phone.js(
        "(() => { const c = document.getElementById('cam-canvas'); return [c.clientWidth * devicePixelRatio, c.width]; })()",
    );
    let device_px = element[0].as_f64().unwrap_or(0.0);
    assert_eq!(
        w,
        sized_for(device_px, SIM_WIDTH),
        "the camera page's picture width for a {device_px} device px canvas ({element})"
    );
    phone.wait_js(
        "(() => { const d = document.querySelector('#cam-details [data-field=\"Codec\"]'); return d && d.textContent === 'h264'; })()",
        "the codec in the status details",
    );
    for field in [
        "Decoder",
        "Frame rate",
        "Reconnects",
        "Dropped frames",
        "Lagging",
        "Last error",
    ] {
        let sel = format!("#cam-details [data-field=\"{field}\"]");
        let v = phone.js(&format!("document.querySelector('{sel}')?.textContent"));
        assert!(
            v.as_str().is_some_and(|s| !s.is_empty()),
            "status detail {field} is missing: {v}"
        );
    }
    let (_, _, later) = wait_for(PAGE_WAIT, "the camera page's picture to advance", || {
        let (w, h, code) = read_code(&phone.canvas_jpeg("#cam-canvas"))?;
        if code.counter != first.counter {
            Ok((w, h, code))
        } else {
            Err(format!("still frame {}", first.counter))
        }
    });
    assert!(
        later.counter > first.counter,
        "the picture went back from frame {} to {}",
        first.counter,
        later.counter
    );
    phone.wait_js(
        "getComputedStyle(document.getElementById('cam-canvas')).opacity === '1'",
        "the streaming camera's picture shown as live (not dimmed)",
    );
    phone.assert_fits("the camera page");
    let touch_action =
        phone.js("getComputedStyle(document.getElementById('joystick')).touchAction");
    assert_eq!(
        touch_action,
        json!("none"),
        "the joystick lets the browser scroll or zoom on a drag"
    );
    phone.shot("camera-page");

    // Hold the joystick (a finger put down right of centre, dragged further right, to 40 %) for
    // longer than the 1 s dead-man: the head keeps moving right; release stops it.
    let before = still_position(&app, "sim");
    let (cx, cy, size, _) = phone.rect("#joystick");
    let r = size / 2.0;
    phone.touch(
        Input::DispatchTouchEventTypeOption::TouchStart,
        Some((cx + 0.2 * r, cy)),
    );
    phone.touch(
        Input::DispatchTouchEventTypeOption::TouchMove,
        Some((cx + 0.3 * r, cy)),
    );
    phone.touch(
        Input::DispatchTouchEventTypeOption::TouchMove,
        Some((cx + 0.4 * r, cy)),
    );
    let held = Instant::now();
    wait_for(
        Duration::from_secs(3),
        "the head to pan right while the joystick is held",
        || {
            let p = ptz_position(&app, "sim");
            if p.0 > before.0 + MIN_TRAVEL {
                Ok(p)
            } else {
                Err(format!("{p:?} from {before:?}"))
            }
        },
    );
    assert_eq!(
        phone.js("document.getElementById('joystick').classList.contains('active')"),
        json!(true),
        "the joystick shows it is held"
    );
    phone.shot("joystick-held");
    // Keep holding to 2.5 s, well past the 1 s dead-man, sampling the head all along:
    // it must never stand still (without the page's refresh it would stop 1 s after the
    // last move it got, for as long as the refresh is late).
    let mut samples = vec![];
    while held.elapsed() < Duration::from_millis(2500) {
        samples.push((held.elapsed(), ptz_position(&app, "sim").0));
        std::thread::sleep(Duration::from_millis(60)); // sampling period of a hold whose length is what is tested
    }
    for (i, &(ti, pi)) in samples.iter().enumerate() {
        if let Some(&(tj, pj)) = samples[i..]
            .iter()
            .find(|(t, _)| *t >= ti + Duration::from_millis(150))
        {
            assert!(
                pj > pi,
                "the head stood still from {ti:?} to {tj:?} into the hold (pan {pi} → {pj}): \
                 the page does not refresh the move within the 1 s dead-man; samples {samples:?}"
            );
        }
    }
    let (t1, p1) = samples[samples.len() / 2];
    let (t2, p2) = samples[samples.len() - 1];
    let speed = (p2 - p1) as f64 / (t2 - t1).as_secs_f64();
    let last_seen = ptz_position(&app, "sim");
    phone.touch(Input::DispatchTouchEventTypeOption::TouchEnd, None);
    let stopped = still_position(&app, "sim");
    let coasted = (stopped.0 - last_seen.0) as f64 / speed;
    // A stop on release ends the move within the round trip; the dead-man alone would let
    // it run on for at least 0.7 s after the last refresh.
    assert!(
        coasted < 0.5,
        "after release the head ran on for {coasted:.2} s of travel ({last_seen:?} → {stopped:?} at {speed:.0} \
         units/s): \
         release does not send a stop"
    );
    assert!(
        (stopped.0 as f64) < ptz_edge::sim::ptz::PAN_LIMIT - 100.0,
        "the head reached its pan limit ({stopped:?}): the coasting check proves nothing"
    );
    assert_eq!(
        (stopped.1, stopped.2),
        (before.1, before.2),
        "only pan was moved"
    );
    assert_eq!(
        phone.js("document.getElementById('joystick').classList.contains('active')"),
        json!(false),
        "the joystick shows it is released"
    );
    phone.shot("joystick-released");

    // The keyboard: hold ArrowDown anywhere on the camera page (nothing focused), release.
    phone.js("document.activeElement.blur()");
    phone.key(
        Input::DispatchKeyEventTypeOption::RawKeyDown,
        "ArrowDown",
        40,
    );
    wait_for(
        Duration::from_secs(3),
        "the head to tilt down while ArrowDown is held",
        || {
            let p = ptz_position(&app, "sim");
            if p.1 < stopped.1 - MIN_TRAVEL {
                Ok(p)
            } else {
                Err(format!("{p:?} from {stopped:?}"))
            }
        },
    );
    phone.key(Input::DispatchKeyEventTypeOption::KeyUp, "ArrowDown", 40);
    let keyed = still_position(&app, "sim");
    assert!(
        keyed.1 < stopped.1,
        "tilt after the key: {keyed:?} from {stopped:?}"
    );
    assert_eq!(keyed.0, stopped.0, "the down arrow moved pan");

    // Zoom: hold the Zoom + button with a finger, then lift it.
    let (zx, zy, _, _) = phone.rect("#zoom-in");
    phone.touch(
        Input::DispatchTouchEventTypeOption::TouchStart,
        Some((zx, zy)),
    );
    wait_for(
        Duration::from_secs(3),
        "the head to zoom in while Zoom + is held",
        || {
            let p = ptz_position(&app, "sim");
            if p.2 > keyed.2 + MIN_TRAVEL {
                Ok(p)
            } else {
                Err(format!("{p:?} from {keyed:?}"))
            }
        },
    );
    phone.touch(Input::DispatchTouchEventTypeOption::TouchEnd, None);
    let zoomed = still_position(&app, "sim");
    assert!(
        zoomed.2 > keyed.2,
        "zoom after the button: {zoomed:?} from {keyed:?}"
    );
    assert_eq!(
        (zoomed.0, zoomed.1),
        (keyed.0, keyed.1),
        "Zoom + moved pan or tilt"
    );
    let keyed = zoomed;

    // A preset: save here, go home, recall it.
    phone.type_into("#preset-index", "7");
    phone.tap("#preset-save");
    phone.wait_js(
        "document.getElementById('ptz-msg').textContent === 'Saved preset 7'",
        "the preset saved",
    );
    phone.tap("#home");
    let home = wait_for(Duration::from_secs(5), "the head at home", || {
        let p = ptz_position(&app, "sim");
        if (p.0, p.1) == (0, 0) {
            Ok(p)
        } else {
            Err(format!("{p:?}"))
        }
    });
    assert_ne!(
        home, keyed,
        "home is where the preset was: the recall would prove nothing"
    );
    phone.tap("#preset-go");
    wait_for(Duration::from_secs(5), "the head back at preset 7", || {
        let p = ptz_position(&app, "sim");
        if p == keyed {
            Ok(p)
        } else {
            Err(format!("{p:?}, preset at {keyed:?}"))
        }
    });
    phone.wait_js(
        "document.getElementById('ptz-msg').textContent === 'Went to preset 7'",
        "the recall confirmed",
    );
    phone.shot("preset-recalled");

    // Back to the list: the tile shows live frames sized to the tile.
    phone.tap(".cam-head a");
    phone.wait_js(
        "(() => { const c = document.querySelector('.tile[data-camera=\"sim\"] canvas'); return c && Number(c.dataset.frames) >= 2; })()",
        "frames on the camera's tile",
    );
    let tile = phone.js("(() => { const c = document.querySelector('.tile canvas'); return [c.clientWidth * devicePixelRatio, c.width]; })()");
    let (tw, _, tile_code) = phone.canvas_code(".tile canvas");
    let tile_px = tile[0].as_f64().unwrap_or(0.0);
    assert_eq!(
        tw,
        sized_for(tile_px, SIM_WIDTH),
        "the tile's picture width for {tile_px} device px ({tile})"
    );
    assert!(
        tile_code.counter > later.counter,
        "the tile shows frame {}, older than the camera page's {}",
        tile_code.counter,
        later.counter
    );
    let state = phone.js("document.querySelector('.tile .badge').textContent");
    assert_eq!(state, json!("streaming"), "the tile's state");
    phone.assert_fits("the list with a tile");
    phone.shot("list-with-tile");

    // Edit it from its page: the form comes back filled in (the password never does),
    // and saving reconnects it with the change (here: PTZ over VISCA UDP instead of TCP).
    phone.tap(".tile");
    phone.wait_js(
        "location.hash === '#/camera/sim'",
        "the camera page from its tile",
    );
    phone.tap("#cam-edit");
    phone.wait_js(
        "location.hash === '#/edit/sim' && document.getElementById('f-ptz').value === 'visca-tcp'",
        "the edit form with the camera's PTZ protocol",
    );
    let filled = phone.js(
        "['f-id', 'f-ip', 'f-port', 'f-path', 'f-user', 'f-pass', 'f-ptz-port'].map((id) => document.getElementById(id).value)",
    );
    assert_eq!(
        filled,
        json!([
            "sim",
            "127.0.0.1",
            sim.rtsp_port.to_string(),
            "/1",
            "admin",
            "",
            visca.to_string()
        ]),
        "the edit form's fields (id, address, port, path, user, password, PTZ port)"
    );
    assert_eq!(
        phone.js("document.getElementById('f-id').readOnly"),
        json!(true),
        "the id of an edited camera can be changed"
    );
    let visca_udp = sim.ready["ptz"]["visca_udp"]
        .as_u64()
        .unwrap_or_else(|| panic!("no ptz.visca_udp in the ready line {}", sim.ready));
    phone.choose("#f-ptz", "visca-udp");
    phone.type_into("#f-ptz-port", &visca_udp.to_string());
    phone.shot("edit-form");
    phone.tap("#form-submit");
    phone.wait_js_for(
        CONNECT_WAIT,
        "location.hash === '#/camera/sim' || document.getElementById('form-error').textContent",
        "the camera page after the edit (or a form error)",
    );
    let error = phone.js("document.getElementById('form-error').textContent");
    assert_eq!(error, json!(""), "the edit form shows an error");
    phone.wait_js(
        "Number(document.getElementById('cam-canvas').dataset.frames) >= 2",
        "frames on the camera page after the edit",
    );
    assert_eq!(camera_ids(&app), ["sim"], "the cameras after the edit");
    let status = app.status("sim");
    assert_eq!(
        (&status["ptz"]["protocol"], &status["ptz"]["port"]),
        (&json!("visca-udp"), &json!(visca_udp)),
        "the PTZ settings after the edit: {status}"
    );
    phone.wait_js(
        "document.querySelector('#cam-details [data-field=\"PTZ\"]').textContent.startsWith('visca-udp')",
        "the page showing the new PTZ settings",
    );

    // Remove the camera from its page (two taps: the first arms the button).
    phone.tap("#cam-remove");
    assert_eq!(
        camera_ids(&app),
        ["sim"],
        "one tap on remove already removed the camera"
    );
    phone.tap("#cam-remove");
    phone.wait_js(
        "location.hash === '#/' && !document.getElementById('list-empty').hidden",
        "the empty list after remove",
    );
    assert!(
        camera_ids(&app).is_empty(),
        "the appliance still has {:?}",
        camera_ids(&app)
    );
    phone.shot("removed");
}

/// The console's files without a browser: `/`, `/console/app.js` and `/console/app.css`
/// with their content types, `no-cache` with an `ETag` that answers `304`, served without
/// the token (they hold no data) while the API behind them still wants it; anything else
/// under `/console/` is a `404 {"detail"}`.
#[test]
fn console_files_have_types_and_caching_and_need_no_token() {
    let app = Appliance::start(&[("PTZ_EDGE_TOKEN", "tok-console")]);
    let page = app.get("/");
    assert_eq!(page.status, 200, "GET /: {}", page.text());
    assert_eq!(
        page.header("Content-Type"),
        Some("text/html; charset=utf-8")
    );
    let html = page.text();
    for (path, content_type) in [
        ("/console/app.js", "text/javascript; charset=utf-8"),
        ("/console/app.css", "text/css; charset=utf-8"),
    ] {
        assert!(html.contains(path), "the page does not load {path}");
        let r = app.get(path);
        assert_eq!(r.status, 200, "GET {path}: {}", r.text());
        assert_eq!(r.header("Content-Type"), Some(content_type), "{path}");
        assert_eq!(r.header("Cache-Control"), Some("no-cache"), "{path}");
        assert_eq!(
            r.header("X-Content-Type-Options"),
            Some("nosniff"),
            "{path}"
        );
        assert!(!r.body.is_empty(), "{path} is empty");
        let etag = r
            .header("ETag")
            .unwrap_or_else(|| panic!("{path} has no ETag"))
            .to_owned();
        let again = app.request("GET", path, &[("If-None-Match", &etag)], b"");
        assert_eq!(again.status, 304, "{path} with its ETag");
        assert!(again.body.is_empty(), "a 304 with a body");
        assert_eq!(again.header("ETag"), Some(etag.as_str()));
        let other = app.request("GET", path, &[("If-None-Match", "\"0\"")], b"");
        assert_eq!(other.status, 200, "{path} with another ETag");
    }
    assert!(
        page.header("Content-Security-Policy")
            .is_some_and(|c| c.contains("default-src 'self'")),
        "the page has no CSP: {:?}",
        page.headers
    );
    app.get("/console/nope.js")
        .assert_detail(404, "an unknown console file");
    app.get("/console/../api/cameras")
        .assert_detail(401, "a path out of /console/ still needs the token");
    app.get("/api/cameras")
        .assert_detail(401, "the API behind the console");
}

/// With `PTZ_EDGE_TOKEN`, the console asks for the token, keeps it, and uses it for the
/// API (bearer header) and the live picture (WebSocket `?token=`); a wrong one is refused
/// and asked again.
#[test]
fn console_asks_for_the_token_and_uses_it() {
    let _one = one_browser_at_a_time();
    let Some(chromium) = chromium() else { return };
    let sim = Sim::simple("640x360", 10);
    let app = Appliance::start(&[("PTZ_EDGE_TOKEN", "tok-console")]);
    let body = connect_body("cam", &sim, "/1").to_string();
    let r = app.request(
        "POST",
        "/api/cameras/connect",
        &[("Authorization", "Bearer tok-console")],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "connect with the token: {}", r.text());
    let mut phone = Phone::open(&chromium, &app, PHONE, true);
    phone.wait_js(
        "!document.getElementById('token-overlay').hidden",
        "the token prompt",
    );
    phone.shot("token-prompt");
    phone.type_into("#token-input", "wrong");
    phone.tap("#token-form button[type=submit]");
    phone.wait_js(
        "!document.getElementById('token-overlay').hidden && document.getElementById('token-error').textContent",
        "the prompt again after a wrong token",
    );
    phone.type_into("#token-input", "tok-console");
    phone.tap("#token-form button[type=submit]");
    phone.wait_js(
        "document.getElementById('token-overlay').hidden",
        "the prompt gone",
    );
    phone.wait_js(
        "(() => { const c = document.querySelector('.tile[data-camera=\"cam\"] canvas'); return c && Number(c.dataset.frames) >= 2; })()",
        "live frames on the tile (WebSocket with ?token=)",
    );
    phone.canvas_code(".tile canvas");
    assert_eq!(
        phone.js("localStorage.getItem('ptzEdgeToken')"),
        json!("tok-console"),
        "the token kept for the next visit"
    );
    phone.shot("with-token");
}

/// A camera that fails shows why: when the simulator goes away, the tile's state turns
/// (a status push over the tile's WebSocket, not only the list's poll) and shows the last
/// error, and the camera's page lists it.
#[test]
fn console_shows_why_a_camera_fails() {
    let _one = one_browser_at_a_time();
    let Some(chromium) = chromium() else { return };
    let mut sim = Sim::simple("640x360", 10);
    let app = Appliance::start(&[]);
    app.connect_sim("cam", &sim, "/1");
    let mut phone = Phone::open(&chromium, &app, PHONE, true);
    phone.wait_js(
        "(() => { const c = document.querySelector('.tile[data-camera=\"cam\"] canvas'); return c && Number(c.dataset.frames) >= 2; })()",
        "live frames on the tile",
    );
    phone.shot("streaming");
    sim.proc.stop(Duration::from_secs(5));
    let pushed = phone.wait_js_for(
        Duration::from_secs(20),
        "(() => { const t = document.querySelector('.tile[data-camera=\"cam\"]'); \
         return t && t.dataset.pushed && t.dataset.pushed !== 'streaming' && t.dataset.pushed; })()",
        "a state other than streaming pushed to the tile",
    );
    assert!(
        ["reconnecting", "connecting"].contains(&pushed.as_str().unwrap_or_default()),
        "the state pushed when the camera went away: {pushed}"
    );
    let shown = phone.wait_js(
        "(() => { const t = document.querySelector('.tile[data-camera=\"cam\"]'); \
         return t.querySelector('.badge').textContent !== 'streaming' && t.querySelector('.error').textContent; })()",
        "the tile showing the camera's last error",
    );
    let last_error = app.status("cam")["lastError"].clone();
    assert!(
        last_error.is_string(),
        "the appliance has no lastError for the failing camera"
    );
    eprintln!("the tile shows: {shown}; the appliance says: {last_error}");
    phone.shot("failing-tile");
    phone.tap(".tile");
    phone.wait_js(
        "(() => { const d = document.querySelector('#cam-details [data-field=\"Last error\"]'); \
         return d && d.textContent !== 'none' && d.classList.contains('bad'); })()",
        "the last error in the camera's details",
    );
    phone.wait_js(
        "document.getElementById('cam-state').textContent !== 'streaming'",
        "the camera page's state badge",
    );
    let dimmed = phone.js("getComputedStyle(document.getElementById('cam-canvas')).opacity");
    assert_ne!(
        dimmed,
        json!("1"),
        "the failing camera's last picture looks live"
    );
    phone.assert_fits("the failing camera's page");
    phone.shot("failing-camera-page");

    // The phone turned sideways: the page still fits, the picture beside the controls.
    set_viewport(&phone.tab, (PHONE.1, PHONE.0, PHONE.2), true);
    phone.wait_js(
        "document.documentElement.clientWidth === 844",
        "the landscape layout",
    );
    phone.assert_fits("the camera page in landscape");
    let side_by_side = phone.js(
        "(() => { const l = document.querySelector('#view-camera .live').getBoundingClientRect(); \
         const c = document.querySelector('#view-camera .controls').getBoundingClientRect(); \
         return c.left >= l.right - 1; })()",
    );
    assert_eq!(
        side_by_side,
        json!(true),
        "in landscape the controls sit beside the picture"
    );
    phone.shot("landscape");
}

/// Change watching in the console: a scene change lights the camera's tile up, and the
/// camera page says what watching costs and that the scene changed.
#[test]
fn console_shows_change_events() {
    let _one = one_browser_at_a_time();
    let Some(chromium) = chromium() else { return };
    let sim = Sim::simple("640x360", 10);
    let app = Appliance::start(&[]);
    let mut body = connect_body("cam", &sim, "/1");
    body["watch"] = json!(true);
    let r = app.connect(&body);
    assert_eq!(r.status, 200, "connect: {}", r.text());
    let mut phone = Phone::open(&chromium, &app, PHONE, true);
    phone.wait_js(
        "(() => { const c = document.querySelector('.tile[data-camera=\"cam\"] canvas'); return c && Number(c.dataset.frames) >= 2; })()",
        "live frames on the tile",
    );
    // Past the detector's warm-up (it learns the busy cells from the first pictures).
    wait_until(Duration::from_secs(20), "5 pictures scored", || {
        app.status("cam")["watch"]["scored"].as_u64().unwrap_or(0) >= 5
    });
    sim.proc.signal(libc::SIGUSR1);
    phone.wait_js_for(
        Duration::from_secs(20),
        "(() => { const t = document.querySelector('.tile[data-camera=\"cam\"]'); \
         return t && Number(t.dataset.changes) >= 1 && t.classList.contains('changed'); })()",
        "the tile lit up by a change event",
    );
    phone.shot("change-tile");
    phone.tap(".tile");
    phone.wait_js(
        "(() => { const d = document.querySelector('#cam-details [data-field=\"Change watching\"]'); \
         return d && /events/.test(d.textContent); })()",
        "change watching in the camera's details",
    );
    // The object going is the next change, once the background has taken the object in
    // (the detector re-arms when the score is back low).
    wait_until(Duration::from_secs(30), "the detector to re-arm", || {
        app.status("cam")["watch"]["lastScore"]
            .as_f64()
            .is_some_and(|s| s < 0.02)
    });
    sim.proc.signal(libc::SIGUSR1);
    phone.wait_js_for(
        Duration::from_secs(20),
        "/Scene changed/.test(document.getElementById('cam-change').textContent)",
        "the camera page saying the scene changed",
    );
    phone.shot("change-page");
}

/// Writes `docs/console.png`, the README's picture: the demo camera's page at a desktop
/// size (1280x800). Not a check; run it after changing the console:
/// `cargo test --test console -- --ignored readme_screenshot`.
#[test]
#[ignore = "writes docs/console.png; run by hand"]
fn readme_screenshot() {
    let _one = one_browser_at_a_time();
    let Some(chromium) = chromium() else { return };
    // What `ptz-edge --demo` connects: the simulator as camera `demo`, VISCA over TCP.
    let sim = Sim::start(&["--path", "/1", "--size", "1280x720", "--fps", "30", "--ptz"]);
    let visca = sim.ready["ptz"]["visca_tcp"]
        .as_u64()
        .unwrap_or_else(|| panic!("no ptz.visca_tcp in the ready line {}", sim.ready));
    let app = Appliance::start(&[]);
    let mut body = connect_body("demo", &sim, "/1");
    body["ptz"] = json!({"protocol": "visca-tcp", "port": visca});
    let r = app.connect(&body);
    assert_eq!(r.status, 200, "connect demo: {}", r.text());
    // Turn the head a little, so the picture shows the target off centre.
    let ptz = |cmd: Value| {
        let r = app.post_json("/api/cameras/demo/ptz", &cmd);
        assert_eq!(r.status, 200, "{cmd}: {}", r.text());
    };
    ptz(json!({"action": "move", "pan": 0.5, "tilt": 0.4}));
    std::thread::sleep(Duration::from_millis(600)); // how far the head turns
    ptz(json!({"action": "stop"}));

    let mut desk = Phone::open(&chromium, &app, (1280, 800, 1.0), false);
    desk.js("location.hash = '#/camera/demo'");
    desk.wait_js(
        "Number(document.getElementById('cam-canvas').dataset.frames) >= 10",
        "frames on the camera page",
    );
    desk.wait_js(
        "document.getElementById('ptz-pos').textContent && document.querySelector('#cam-details [data-field=\"Codec\"]')",
        "the position and the details",
    );
    desk.wait_js(
        "document.querySelector('#cam-details [data-field=\"Viewers\"]').textContent === '1'",
        "the details counting this page as a viewer",
    );
    desk.js("document.activeElement.blur()");
    let png = desk
        .tab
        .capture_screenshot(Page::CaptureScreenshotFormatOption::Png, None, None, true)
        .expect("a screenshot");
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/console.png");
    std::fs::write(&path, png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    eprintln!("wrote {}", path.display());
    desk.shot("done");
}
