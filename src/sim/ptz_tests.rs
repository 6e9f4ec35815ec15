//! End-to-end tests of the product's PTZ drivers and controller (`crate::ptz`) against
//! [`PtzSim`] over real TCP / UDP on 127.0.0.1: every action per protocol, directions,
//! stop, the dead-man stop (on a manual clock), timeouts, bytes on the wire, HTTP auth,
//! reconnects, and the latency figures. They live in `sim` because product modules
//! never import the simulator.

use std::net::IpAddr;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::onvif::{parse_request, Action};
use super::ptz::{PtzSim, SimAuth, SimPtzState, SimTransport};
use crate::clock::Clock;
use crate::ptz::{
    Controller, PresetOp, Protocol, PtzCommand, PtzConfig, PtzError, DEADMAN, PROTOCOLS,
};
use crate::secret::Secret;

fn local() -> IpAddr {
    "127.0.0.1".parse().expect("literal")
}

fn controller(sim: &PtzSim, protocol: Protocol, user: &str, password: &str) -> Controller {
    controller_on(sim, protocol, user, password, Clock::system())
}

fn controller_on(
    sim: &PtzSim,
    protocol: Protocol,
    user: &str,
    password: &str,
    clock: Clock,
) -> Controller {
    let cfg = PtzConfig::new(protocol, Some(sim.port(protocol))).expect("valid config");
    Controller::start(
        &format!("t-{protocol}"),
        "127.0.0.1",
        cfg,
        user,
        &Secret::new(password),
        clock,
    )
}

/// The head's position in ONVIF's generic spaces, in the driver's 1/10000 units.
fn onvif_units(s: &SimPtzState) -> (i32, i32, i32) {
    use super::ptz::{PAN_LIMIT, TILT_MAX, TILT_MIN, ZOOM_MAX};
    let tilt = f64::from(s.tilt);
    let t = if tilt >= 0.0 {
        tilt / TILT_MAX
    } else {
        tilt / -TILT_MIN
    };
    let u = |v: f64| (v * 10_000.0).round() as i32;
    (
        u(f64::from(s.pan) / PAN_LIMIT),
        u(t),
        u(f64::from(s.zoom) / ZOOM_MAX),
    )
}

/// The ONVIF action of a received SOAP request.
fn onvif_action(m: &super::ptz::SimReceived) -> Option<Action> {
    (m.transport == SimTransport::Onvif)
        .then(|| parse_request(&String::from_utf8_lossy(&m.bytes)).ok())
        .flatten()
        .map(|r| r.action)
}

fn mv(pan: f64, tilt: f64, zoom: f64) -> PtzCommand {
    PtzCommand::Move { pan, tilt, zoom }
}

fn wait_until(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + timeout;
    while Instant::now() < end {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(2));
    }
    f()
}

/// Moves along one axis for a moment and returns (before, after) of that axis.
fn nudge(
    sim: &PtzSim,
    c: &Controller,
    cmd: PtzCommand,
    read: fn(&SimPtzState) -> i32,
) -> (i32, i32) {
    let before = read(&sim.state());
    c.command(cmd).expect("move");
    thread::sleep(Duration::from_millis(150));
    c.command(PtzCommand::Stop).expect("stop");
    (before, read(&sim.state()))
}

#[test]
fn every_action_per_protocol() {
    for protocol in PROTOCOLS {
        let sim = PtzSim::start(local());
        let c = controller(&sim, protocol, "", "");
        let ctx = format!("protocol {protocol}");

        // Directions: pan right → pan increases, tilt up → tilt increases, zoom in → zoom increases.
        let (a, b) = nudge(&sim, &c, mv(0.5, 0.0, 0.0), |s| s.pan);
        assert!(b > a + 20, "{ctx}: pan right {a} -> {b}");
        let (a, b) = nudge(&sim, &c, mv(-0.5, 0.0, 0.0), |s| s.pan);
        assert!(b < a - 20, "{ctx}: pan left {a} -> {b}");
        let (a, b) = nudge(&sim, &c, mv(0.0, 0.5, 0.0), |s| s.tilt);
        assert!(b > a + 20, "{ctx}: tilt up {a} -> {b}");
        let (a, b) = nudge(&sim, &c, mv(0.0, -0.5, 0.0), |s| s.tilt);
        assert!(b < a - 20, "{ctx}: tilt down {a} -> {b}");
        let (a, b) = nudge(&sim, &c, mv(0.0, 0.0, 1.0), |s| s.zoom);
        assert!(b > a + 100, "{ctx}: zoom in {a} -> {b}");
        let (a, b) = nudge(&sim, &c, mv(0.0, 0.0, -0.3), |s| s.zoom);
        assert!(b < a, "{ctx}: zoom out {a} -> {b}");

        // Stop really stops: nothing moves afterwards.
        c.command(mv(1.0, 1.0, 1.0)).unwrap();
        thread::sleep(Duration::from_millis(50));
        c.command(PtzCommand::Stop).unwrap();
        let s1 = sim.state();
        assert!(!s1.moving, "{ctx}: still moving after stop");
        thread::sleep(Duration::from_millis(150));
        let s2 = sim.state();
        assert_eq!(
            (s1.pan, s1.tilt, s1.zoom),
            (s2.pan, s2.tilt, s2.zoom),
            "{ctx}"
        );

        // Preset save, move away, recall.
        c.command(PtzCommand::Preset {
            op: PresetOp::Save,
            index: 7,
        })
        .unwrap();
        let saved = sim.state();
        nudge(&sim, &c, mv(1.0, -1.0, 0.0), |s| s.pan);
        assert_ne!(sim.state().pan, saved.pan, "{ctx}");
        c.command(PtzCommand::Preset {
            op: PresetOp::Goto,
            index: 7,
        })
        .unwrap();
        let back = sim.state();
        assert_eq!(
            (back.pan, back.tilt, back.zoom),
            (saved.pan, saved.tilt, saved.zoom),
            "{ctx}"
        );

        // Position in the camera's units (VISCA; ONVIF's generic spaces in 1/10000),
        // or a clear 501 (CGI).
        match c.position() {
            Ok(p) if protocol == Protocol::Onvif => {
                let want = onvif_units(&back);
                // The state is rounded to whole VISCA units: half a tilt unit below 0 is
                // 1/864 of the space, about 12 of ours.
                let near = |a: i32, b: i32| (a - b).abs() <= 15;
                assert!(
                    near(p.pan, want.0) && near(p.tilt, want.1) && near(p.zoom, want.2),
                    "{ctx}: {p:?} vs {want:?}"
                );
            }
            Ok(p) => {
                assert_ne!(protocol, Protocol::Cgi);
                assert_eq!(
                    (p.pan, p.tilt, p.zoom),
                    (back.pan, back.tilt, back.zoom),
                    "{ctx}"
                );
            }
            Err(e) => {
                assert_eq!(protocol, Protocol::Cgi, "{ctx}: {e}");
                assert!(matches!(e, PtzError::Unsupported(_)), "{e}");
            }
        }

        // Home → 0, 0.
        c.command(PtzCommand::Home).unwrap();
        let h = sim.state();
        assert_eq!((h.pan, h.tilt), (0, 0), "{ctx}");

        // Reserved presets never reach a PTZOptics camera (95 would open its menu).
        sim.clear_received();
        let r = c.command(PtzCommand::Preset {
            op: PresetOp::Goto,
            index: 95,
        });
        if protocol == Protocol::ViscaSony {
            assert!(r.is_ok(), "{ctx}: other vendors have no reserved presets");
        } else if protocol == Protocol::Onvif {
            // Not reserved: the request reaches the device, which has no preset 95.
            match r {
                Err(PtzError::Camera(e)) => assert!(e.contains("no preset 95"), "{ctx}: {e}"),
                other => panic!("{ctx}: {other:?}"),
            }
        } else {
            assert!(matches!(r, Err(PtzError::Invalid(_))), "{ctx}: {r:?}");
            assert!(!sim.state().osd_menu, "{ctx}");
            let sent = sim
                .received()
                .into_iter()
                .filter(|m| m.bytes != [0x81, 0x09, 0x04, 0x00, 0xFF])
                .count();
            assert_eq!(sent, 0, "{ctx}");
        }
        drop(c);
    }
}

#[test]
fn visca_position_follows_the_moves() {
    let sim = PtzSim::start(local());
    let c = controller(&sim, Protocol::ViscaUdp, "", "");
    for (cmd, check) in [
        (
            mv(0.7, 0.0, 0.0),
            (|a, b| b.pan > a.pan) as fn(crate::ptz::Position, crate::ptz::Position) -> bool,
        ),
        (mv(0.0, 0.7, 0.0), |a, b| b.tilt > a.tilt),
        (mv(0.0, 0.0, 0.7), |a, b| b.zoom > a.zoom),
        (mv(-0.7, -0.7, -0.7), |a, b| {
            b.pan < a.pan && b.tilt < a.tilt && b.zoom < a.zoom
        }),
    ] {
        let a = c.position().unwrap();
        c.command(cmd).unwrap();
        thread::sleep(Duration::from_millis(120));
        c.command(PtzCommand::Stop).unwrap();
        let b = c.position().unwrap();
        assert!(check(a, b), "{cmd:?}: {a:?} -> {b:?}");
        let s = sim.state();
        assert_eq!((b.pan, b.tilt, b.zoom), (s.pan, s.tilt, s.zoom));
    }
}

/// The dead-man against a real head, its timer on a manual clock: refreshes hold a move
/// without reaching the camera, and one [`DEADMAN`] after the last refresh the head
/// stops. The test waits (bounded) for the controller thread to look at each new time.
#[test]
fn deadman_stops_an_unrefreshed_move() {
    const WAIT: Duration = Duration::from_secs(10);
    for protocol in [Protocol::ViscaTcp, Protocol::Cgi, Protocol::Onvif] {
        let sim = PtzSim::start(local());
        let clock = Clock::manual();
        let c = controller_on(&sim, protocol, "", "", clock.clone());
        assert!(clock.await_parked(0, WAIT), "{protocol}: never parked");
        let command = |cmd: PtzCommand| {
            let p = clock.parks();
            c.command(cmd).unwrap();
            assert!(
                clock.await_parked(p, WAIT),
                "{protocol}: no park after {cmd:?}"
            );
        };
        let advance = |d: Duration| {
            let p = clock.parks();
            clock.advance(d);
            assert!(
                clock.await_parked(p, WAIT),
                "{protocol}: no park after {d:?}"
            );
        };
        // Refreshed every 300 ms for 1.5 s: keeps moving. A refresh only re-arms the
        // timer; it costs no camera exchange.
        for _ in 0..5 {
            command(mv(0.3, 0.0, 0.0));
            advance(Duration::from_millis(300));
        }
        assert!(sim.state().moving, "{protocol}: a refreshed move stopped");
        let moves = sim
            .received()
            .iter()
            .filter(|m| {
                m.bytes.starts_with(&[0x81, 0x01, 0x06, 0x01])
                    || String::from_utf8_lossy(&m.bytes).contains("&right&")
                    || matches!(onvif_action(m), Some(Action::ContinuousMove { .. }))
            })
            .count();
        assert_eq!(moves, 1, "{protocol}: refreshes reached the camera");
        // The last refresh was 300 ms ago: 1 ms short of its deadline, still moving.
        advance(DEADMAN - Duration::from_millis(301));
        assert!(
            sim.state().moving,
            "{protocol}: stopped before the deadline"
        );
        advance(Duration::from_millis(1));
        assert!(
            !sim.state().moving,
            "{protocol}: no dead-man stop at the deadline"
        );
        let stops = || {
            sim.received()
                .iter()
                .filter(|m| {
                    m.bytes == crate::ptz::visca::PAN_TILT_STOP
                        || m.bytes == crate::ptz::cgi::STOP_PATH.as_bytes()
                        || matches!(onvif_action(m), Some(Action::Stop { .. }))
                })
                .count()
        };
        assert_eq!(stops(), 1, "{protocol}");
        advance(DEADMAN * 5);
        assert_eq!(stops(), 1, "{protocol}: more than one stop");
    }
}

#[test]
fn silent_camera_times_out_cleanly() {
    for protocol in PROTOCOLS {
        let sim = PtzSim::start(local());
        let c = controller(&sim, protocol, "", "");
        c.command(PtzCommand::Stop).unwrap();
        sim.set_silent(true);
        let t = Instant::now();
        let r = c.command(mv(0.5, 0.0, 0.0));
        let took = t.elapsed();
        eprintln!(
            "silent camera ({protocol}): {r:?} after {} ms",
            took.as_millis()
        );
        assert_eq!(r, Err(PtzError::Timeout), "{protocol}");
        let limit = if matches!(protocol, Protocol::Cgi | Protocol::Onvif) {
            2600
        } else {
            1600
        };
        assert!(took < Duration::from_millis(limit), "{protocol}: {took:?}");
        assert_eq!(c.health().link, crate::ptz::LinkState::Down);
        // The camera comes back: control recovers without a new controller.
        sim.set_silent(false);
        assert!(
            wait_until(Duration::from_secs(5), || c
                .command(PtzCommand::Stop)
                .is_ok()),
            "{protocol}: no recovery"
        );
        assert!(!sim.state().moving);
    }
}

#[test]
fn unreachable_port_is_a_camera_error() {
    // A port nobody listens on: bind and drop to find one.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for protocol in [Protocol::ViscaTcp, Protocol::Cgi] {
        let cfg = PtzConfig::new(protocol, Some(port)).unwrap();
        let c = Controller::start(
            "gone",
            "127.0.0.1",
            cfg,
            "",
            &Secret::default(),
            Clock::system(),
        );
        let e = c.command(PtzCommand::Home).unwrap_err();
        assert!(matches!(e, PtzError::Camera(_)), "{protocol}: {e}");
        assert!(e.to_string().contains("connect"), "{protocol}: {e}");
    }
}

fn visca_sent(sim: &PtzSim, transport: SimTransport) -> Vec<Vec<u8>> {
    sim.received()
        .into_iter()
        .filter(|m| m.transport == transport && m.bytes != [0x81, 0x09, 0x04, 0x00, 0xFF])
        .filter(|m| m.header.is_none_or(|h| h[..2] != [0x02, 0x00]))
        .map(|m| m.bytes)
        .collect()
}

fn hex(s: &str) -> Vec<u8> {
    s.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

#[test]
fn visca_bytes_on_the_wire() {
    for (protocol, transport) in [
        (Protocol::ViscaTcp, SimTransport::ViscaTcp),
        (Protocol::ViscaUdp, SimTransport::ViscaUdp),
        (Protocol::ViscaSony, SimTransport::ViscaSony),
    ] {
        let sim = PtzSim::start(local());
        let c = controller(&sim, protocol, "", "");
        // Full speed right: pan 0x18, direction 02 03; the zoom's state is unknown at
        // first, so its stop goes out too.
        c.command(mv(1.0, 0.0, 0.0)).unwrap();
        // Same pan, zoom in at p=7 (only the zoom drive is sent).
        c.command(mv(1.0, 0.0, 1.0)).unwrap();
        // Down-left at the slowest speeds.
        c.command(mv(-0.01, -0.01, 1.0)).unwrap();
        c.command(PtzCommand::Stop).unwrap();
        c.command(PtzCommand::Home).unwrap();
        c.command(PtzCommand::Preset {
            op: PresetOp::Save,
            index: 100,
        })
        .unwrap();
        c.command(PtzCommand::Preset {
            op: PresetOp::Goto,
            index: 5,
        })
        .unwrap();
        c.position().unwrap();
        let want: Vec<Vec<u8>> = [
            "81 01 06 01 18 01 02 03 FF",
            "81 01 04 07 00 FF",
            "81 01 04 07 27 FF",
            "81 01 06 01 01 01 01 02 FF",
            "81 01 06 01 01 01 03 03 FF",
            "81 01 04 07 00 FF",
            "81 01 06 04 FF",
            "81 01 04 3F 01 64 FF",
            "81 01 04 3F 02 05 FF",
            "81 09 06 12 FF",
            "81 09 04 47 FF",
        ]
        .iter()
        .map(|s| hex(s))
        .collect();
        assert_eq!(visca_sent(&sim, transport), want, "{protocol}");
        if protocol == Protocol::ViscaSony {
            let all = sim.received();
            // Session start: RESET (02 00, length 1, payload 01).
            assert_eq!(all[0].header.unwrap()[..4], [0x02, 0x00, 0x00, 0x01]);
            assert_eq!(all[0].bytes, vec![0x01]);
            let mut last_seq = 0;
            for m in all.iter().skip(1) {
                let h = m.header.unwrap();
                let ty = u16::from_be_bytes([h[0], h[1]]);
                let len = u16::from_be_bytes([h[2], h[3]]);
                let seq = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
                let want_ty = if m.bytes[1] == 0x09 { 0x0110 } else { 0x0100 };
                assert_eq!(ty, want_ty, "{:02X?}", m.bytes);
                assert_eq!(usize::from(len), m.bytes.len());
                assert!(seq > last_seq, "sequence numbers increase");
                last_seq = seq;
            }
        }
    }
}

#[test]
fn cgi_requests_on_the_wire() {
    let sim = PtzSim::start(local());
    let c = controller(&sim, Protocol::Cgi, "", "");
    c.command(mv(1.0, 0.0, 0.0)).unwrap();
    c.command(mv(1.0, 0.5, -1.0)).unwrap();
    c.command(PtzCommand::Stop).unwrap();
    c.command(PtzCommand::Home).unwrap();
    c.command(PtzCommand::Preset {
        op: PresetOp::Save,
        index: 254,
    })
    .unwrap();
    c.command(PtzCommand::Preset {
        op: PresetOp::Goto,
        index: 0,
    })
    .unwrap();
    let got: Vec<String> = sim
        .received()
        .into_iter()
        .map(|m| String::from_utf8(m.bytes).unwrap())
        .collect();
    let p = "/cgi-bin/ptzctrl.cgi?ptzcmd&";
    let want: Vec<String> = [
        "right&24&1",
        "zoomstop&0",
        "rightup&24&10",
        "zoomout&7",
        "ptzstop&0&0",
        "zoomstop&0",
        "home",
        "posset&254",
        "poscall&0",
    ]
    .iter()
    .map(|s| format!("{p}{s}"))
    .collect();
    assert_eq!(got, want);
}

#[test]
fn cgi_digest_and_basic_auth() {
    let sim = PtzSim::start(local());
    sim.set_auth(SimAuth::Digest {
        user: "admin".into(),
        password: "s3cret\"pw".into(),
    });
    let c = controller(&sim, Protocol::Cgi, "admin", "s3cret\"pw");
    c.command(mv(0.5, 0.0, 0.0)).unwrap();
    assert!(sim.state().moving);
    // First request: 401 then the answer; the nonce is then reused (nc counts up), so
    // later requests cost one round trip.
    assert_eq!(sim.received().len(), 3, "401, retry, zoom stop");
    sim.clear_received();
    c.command(PtzCommand::Stop).unwrap();
    assert_eq!(sim.received().len(), 2);
    assert!(!sim.state().moving);
    // A stale nonce is answered again without failing.
    sim.rotate_nonce();
    c.command(PtzCommand::Home).unwrap();

    // Wrong password: a clear 502 naming the 401, and nothing moved.
    let bad = controller(&sim, Protocol::Cgi, "admin", "wrong");
    let e = bad.command(mv(1.0, 0.0, 0.0)).unwrap_err();
    assert!(matches!(e, PtzError::Camera(_)), "{e}");
    assert!(
        e.to_string()
            .contains("rejected the username or password (HTTP 401"),
        "{e}"
    );
    assert!(!e.to_string().contains("wrong"), "password leaked into {e}");
    assert!(!sim.state().moving);
    // No credentials at all.
    let none = controller(&sim, Protocol::Cgi, "", "");
    let e = none.command(PtzCommand::Home).unwrap_err();
    assert!(
        e.to_string().contains("requires a username and password"),
        "{e}"
    );

    // Basic.
    sim.set_auth(SimAuth::Basic {
        user: "op".into(),
        password: "pw".into(),
    });
    let b = controller(&sim, Protocol::Cgi, "op", "pw");
    b.command(PtzCommand::Home).unwrap();
    let b_bad = controller(&sim, Protocol::Cgi, "op", "nope");
    let e = b_bad.command(PtzCommand::Home).unwrap_err();
    assert!(matches!(e, PtzError::Camera(_)), "{e}");
}

#[test]
fn visca_error_replies_are_reported() {
    for protocol in [Protocol::ViscaTcp, Protocol::ViscaUdp, Protocol::ViscaSony] {
        let sim = PtzSim::start(local());
        let c = controller(&sim, protocol, "", "");
        sim.set_error_reply(Some(0x41));
        let e = c.command(PtzCommand::Home).unwrap_err();
        assert!(matches!(e, PtzError::Camera(_)), "{protocol}: {e}");
        assert!(
            e.to_string()
                .contains("VISCA error 41: command not executable"),
            "{e}"
        );
        sim.set_error_reply(Some(0x03));
        assert_eq!(
            c.command(PtzCommand::Home),
            Err(PtzError::Busy),
            "{protocol}"
        );
        sim.set_error_reply(Some(0x02));
        let e = c.command(PtzCommand::Stop).unwrap_err();
        assert!(e.to_string().contains("syntax error"), "{e}");
        // Inquiries still work, and commands again once the camera accepts them.
        sim.set_error_reply(None);
        c.position().unwrap();
        c.command(PtzCommand::Stop).unwrap();
    }
}

/// Firmware that ACKs but never sends completions: both slots look busy; the driver
/// waits one timeout for a free slot, then stops tracking slots for that camera.
#[test]
fn missing_completions_do_not_wedge_the_driver() {
    let sim = PtzSim::start(local());
    sim.set_send_completions(false);
    let c = controller(&sim, Protocol::ViscaTcp, "", "");
    // Pan-tilt drive and zoom drive: two ACKs, two slots "executing".
    c.command(mv(0.5, 0.0, 0.5)).unwrap();
    let t = Instant::now();
    c.command(PtzCommand::Stop).unwrap();
    let first = t.elapsed();
    assert!(
        first >= Duration::from_millis(900) && first < Duration::from_millis(1500),
        "{first:?}"
    );
    assert!(!sim.state().moving);
    let t = Instant::now();
    c.command(mv(0.5, 0.0, 0.5)).unwrap();
    c.command(PtzCommand::Stop).unwrap();
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "{:?}",
        t.elapsed()
    );
}

/// A lost UDP datagram is sent again (after RESEND_AFTER); Sony gets a new sequence number.
#[test]
fn lost_datagrams_are_resent() {
    for (protocol, transport) in [
        (Protocol::ViscaUdp, SimTransport::ViscaUdp),
        (Protocol::ViscaSony, SimTransport::ViscaSony),
    ] {
        let sim = PtzSim::start(local());
        let c = controller(&sim, protocol, "", "");
        c.command(PtzCommand::Stop).unwrap();
        sim.drop_datagrams(1);
        let t = Instant::now();
        c.command(PtzCommand::Home).unwrap();
        let took = t.elapsed();
        assert!(
            took >= crate::ptz::visca::RESEND_AFTER && took < Duration::from_millis(700),
            "{protocol}: {took:?}"
        );
        let got: Vec<_> = sim
            .received()
            .into_iter()
            .filter(|m| m.transport == transport)
            .collect();
        let homes: Vec<usize> = (0..got.len())
            .filter(|&i| got[i].bytes == hex("81 01 06 04 FF"))
            .collect();
        assert_eq!(homes.len(), 1, "{protocol}: the dropped one is not logged");
        if protocol == Protocol::ViscaSony {
            // The resend carries a new sequence number: one is missing before it.
            let seq = |i: usize| {
                let h = got[i].header.expect("Sony header");
                u32::from_be_bytes([h[4], h[5], h[6], h[7]])
            };
            let i = homes[0];
            assert!(i > 0, "stop came first");
            assert_eq!(seq(i), seq(i - 1) + 2, "{protocol}");
        }
        c.position().unwrap();
    }
}

/// PTZOptics G3 firmware has answered with address A0 instead of 90.
#[test]
fn g3_reply_address_is_accepted() {
    let sim = PtzSim::start(local());
    sim.set_reply_address(0xA0);
    for protocol in [Protocol::ViscaTcp, Protocol::ViscaUdp] {
        let c = controller(&sim, protocol, "", "");
        c.command(mv(0.5, 0.0, 0.0)).unwrap();
        c.command(PtzCommand::Stop).unwrap();
        c.position().unwrap();
    }
}

#[test]
fn tcp_reconnects_after_a_camera_reboot() {
    let sim = PtzSim::start(local());
    let c = controller(&sim, Protocol::ViscaTcp, "", "");
    c.command(PtzCommand::Stop).unwrap();
    assert_eq!(sim.tcp_connections(), 1);
    // The camera drops the session; the idle keep-alive notices and reconnects.
    sim.kick_connections();
    assert!(
        wait_until(Duration::from_secs(4), || sim.tcp_connections() == 2),
        "keep-alive did not reconnect"
    );
    c.command(mv(0.2, 0.0, 0.0)).unwrap();
    // Dropped again, then a command right away: resent on a fresh connection.
    sim.kick_connections();
    thread::sleep(Duration::from_millis(60));
    c.command(PtzCommand::Stop).unwrap();
    assert!(!sim.state().moving);
    assert_eq!(sim.tcp_connections(), 3);
    assert_eq!(c.health().link, crate::ptz::LinkState::Up);
}

#[test]
fn slow_camera_does_not_block_another() {
    let hung = PtzSim::start(local());
    hung.set_silent(true);
    let fine = PtzSim::start(local());
    let a = Arc::new(controller(&hung, Protocol::ViscaTcp, "", ""));
    let b = controller(&fine, Protocol::ViscaTcp, "", "");
    let a2 = a.clone();
    let t = thread::spawn(move || a2.command(mv(1.0, 0.0, 0.0)));
    thread::sleep(Duration::from_millis(50));
    let start = Instant::now();
    b.command(mv(1.0, 0.0, 0.0)).unwrap();
    b.command(PtzCommand::Stop).unwrap();
    let took = start.elapsed();
    assert!(took < Duration::from_millis(300), "{took:?}");
    assert_eq!(t.join().unwrap(), Err(PtzError::Timeout));
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Command-to-motion latency over loopback: from just before `Controller::command` to
/// the simulator applying the command (its state starts changing), and the full
/// `command()` round trip (until the camera's answer reached the caller).
#[test]
fn command_to_motion_latency() {
    for protocol in PROTOCOLS {
        let sim = PtzSim::start(local());
        let auth = protocol == Protocol::Cgi;
        if auth {
            sim.set_auth(SimAuth::Digest {
                user: "admin".into(),
                password: "pw".into(),
            });
        }
        let c = controller(&sim, protocol, "admin", "pw");
        c.command(PtzCommand::Stop).unwrap();
        let mut motion = Vec::new();
        let mut round_trip = Vec::new();
        for i in 0..40 {
            let pan = if i % 2 == 0 { 0.5 } else { -0.5 };
            let before = sim.state().last_command_at;
            let t0 = Instant::now();
            c.command(mv(pan, 0.0, 0.0)).unwrap();
            round_trip.push(t0.elapsed());
            let s = sim.state();
            assert!(s.moving);
            let applied = s.last_command_at.expect("applied");
            assert_ne!(Some(applied), before);
            motion.push(applied.duration_since(t0));
        }
        c.command(PtzCommand::Stop).unwrap();
        motion.sort();
        round_trip.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        eprintln!(
            "latency {protocol:<10}{}: command->motion p50 {:.3} ms p95 {:.3} ms max {:.3} ms; \
             command() round trip p50 {:.3} ms p95 {:.3} ms max {:.3} ms (n={})",
            if auth { " (digest)" } else { "" },
            ms(percentile(&motion, 0.5)),
            ms(percentile(&motion, 0.95)),
            ms(*motion.last().unwrap()),
            ms(percentile(&round_trip, 0.5)),
            ms(percentile(&round_trip, 0.95)),
            ms(*round_trip.last().unwrap()),
            motion.len()
        );
        assert!(percentile(&motion, 0.5) < Duration::from_millis(50));
    }
}

/// `api::ptz`'s JSON bodies and statuses against a real controller and head.
mod api_bodies {
    use serde_json::json;

    use super::*;
    use crate::api::ptz;

    fn command(
        ctrl: &Controller,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, (u16, String)> {
        ptz::command(ctrl, body).map_err(|e| (e.status(), e.to_string()))
    }

    fn position(ctrl: &Controller) -> Result<serde_json::Value, (u16, String)> {
        ptz::position(ctrl).map_err(|e| (e.status(), e.to_string()))
    }

    #[test]
    fn command_and_position_bodies() {
        let sim = PtzSim::start(local());
        let ctrl = controller(&sim, Protocol::ViscaTcp, "", "");
        assert_eq!(
            command(&ctrl, &json!({"action": "move", "pan": 1})),
            Ok(json!({"success": true}))
        );
        assert!(
            wait_until(Duration::from_secs(3), || sim.state().pan > 0),
            "the head never moved"
        );
        assert_eq!(
            command(&ctrl, &json!({"action": "stop"})),
            Ok(json!({"success": true}))
        );
        let p = position(&ctrl).unwrap();
        assert!(p["pan"].as_i64().unwrap() > 0, "{p}");
        assert!(p["tilt"].is_i64() && p["zoom"].is_i64());
        let (status, detail) = command(
            &ctrl,
            &json!({"action": "preset", "op": "goto", "index": 95}),
        )
        .unwrap_err();
        assert_eq!(status, 422);
        assert!(detail.contains("reserved"), "{detail}");
        let (status, _) = command(&ctrl, &json!({"action": "jump"})).unwrap_err();
        assert_eq!(status, 422);
    }

    #[test]
    fn cgi_position_is_501() {
        let sim = PtzSim::start(local());
        let ctrl = controller(&sim, Protocol::Cgi, "", "");
        assert_eq!(position(&ctrl).unwrap_err().0, 501);
    }
}

/// With a preset travel time the head goes there over that time (inquiries see it on the
/// way, `travelling` is set), then stays; `still_for` counts from the arrival.
#[test]
fn preset_recall_travels_when_asked_to() {
    let sim = PtzSim::start(local());
    let c = controller(&sim, Protocol::ViscaTcp, "", "");
    let save = |i| PtzCommand::Preset {
        op: PresetOp::Save,
        index: i,
    };
    let goto = |i| PtzCommand::Preset {
        op: PresetOp::Goto,
        index: i,
    };
    c.command(save(1)).unwrap();
    let home = sim.state();
    let (_, away) = nudge(&sim, &c, mv(1.0, 0.0, 0.0), |s| s.pan);
    assert_ne!(away, home.pan);
    c.command(save(2)).unwrap();
    sim.set_preset_travel(Some(Duration::from_millis(800)));
    let sent = Instant::now();
    c.command(goto(1)).unwrap();
    let mut seen = Vec::new();
    let arrived = wait_until(Duration::from_secs(5), || {
        let s = sim.state();
        seen.push(s.pan);
        !s.travelling
    });
    assert!(arrived, "still travelling 5 s after the recall");
    assert!(
        sent.elapsed() >= Duration::from_millis(800),
        "arrived before the travel time"
    );
    let s = sim.state();
    assert_eq!((s.pan, s.tilt, s.zoom), (home.pan, home.tilt, home.zoom));
    assert!(!s.moving && s.still_for.is_some());
    let between = seen.iter().filter(|&&p| p != away && p != home.pan).count();
    assert!(between > 0, "no position on the way: {seen:?}");
    assert!(
        seen.windows(2)
            .all(|w| (w[1] - home.pan).abs() <= (w[0] - home.pan).abs()),
        "the head went straight there: {seen:?}"
    );
    // A move during the travel ends it where the head is.
    c.command(goto(2)).unwrap();
    c.command(mv(-1.0, 0.0, 0.0)).unwrap();
    c.command(PtzCommand::Stop).unwrap();
    assert!(!sim.state().travelling, "a move ends the travel");
}

/// One automated run holds the head at a time; a manual command ends it (and still
/// runs), the run's next step says so; dropping the claim frees the head.
#[test]
fn a_claim_is_exclusive_and_a_manual_command_ends_it() {
    let sim = PtzSim::start(local());
    let c = controller(&sim, Protocol::ViscaTcp, "", "");
    let claim = c.claim("a tour of 2 presets").expect("free head");
    assert_eq!(c.claimed_by().as_deref(), Some("a tour of 2 presets"));
    match c.claim("a snapshot") {
        Err(PtzError::Claimed(what)) => assert_eq!(what, "a tour of 2 presets"),
        Err(e) => panic!("a second claim: {e}"),
        Ok(_) => panic!("a second claim was granted"),
    }
    claim
        .command(PtzCommand::Home)
        .expect("the run's own command");
    claim.position().expect("the run's own inquiry");
    // The user takes the head back: the command runs, the claim is over.
    c.command(mv(0.5, 0.0, 0.0)).expect("the manual move runs");
    assert!(wait_until(Duration::from_secs(2), || sim.state().moving));
    match claim.command(PtzCommand::Home) {
        Err(PtzError::Interrupted(why)) => assert!(
            why.contains("a tour of 2 presets was stopped by a manual PTZ command (move)"),
            "{why}"
        ),
        other => panic!("the run went on: {other:?}"),
    }
    assert!(sim.state().moving, "the ended run sent nothing");
    assert_eq!(c.claimed_by(), None);
    // A new claim is possible at once; dropping it frees the head.
    let again = c
        .claim("a snapshot")
        .expect("free after the manual command");
    drop(again);
    drop(claim);
    let last = c.claim("another").expect("free after drop");
    assert!(last.check().is_ok());
    c.command(PtzCommand::Stop).unwrap();
}
