//! The ONVIF client and PTZ driver against the simulator's ONVIF device over loopback:
//! each PTZ action's SOAP body as the PTZ Service Specification defines it (read back
//! from what the simulator received), WS-Security digests and the device clock offset,
//! HTTP Digest on top, faults as errors, stream URIs and WS-Discovery.

use std::time::{Duration, Instant};

use super::onvif::{check_token, parse_request, Action, SimProfile, SoapRequest};
use super::ptz::{PtzSim, SimAuth, SimTransport};
use crate::clock::Clock;
use crate::onvif::{self, device, discovery, ptz_service, time, Client, OnvifError};
use crate::ptz::{Controller, PresetOp, Protocol, PtzCommand, PtzConfig, PtzError};
use crate::secret::Secret;

fn local() -> std::net::IpAddr {
    "127.0.0.1".parse().expect("literal")
}

fn sim_with_user(user: &str, password: &str) -> PtzSim {
    let sim = PtzSim::start(local());
    let (u, p) = (user.to_owned(), password.to_owned());
    sim.set_onvif(|o| o.credentials = Some((u, p)));
    sim
}

fn controller(sim: &PtzSim, user: &str, password: &str) -> Controller {
    let cfg = PtzConfig::new(Protocol::Onvif, Some(sim.port(Protocol::Onvif))).expect("config");
    Controller::start(
        "onvif-test",
        "127.0.0.1",
        cfg,
        user,
        &Secret::new(password),
        Clock::system(),
    )
}

/// Every SOAP request the simulator received, parsed, oldest first.
fn requests(sim: &PtzSim) -> Vec<SoapRequest> {
    sim.received()
        .iter()
        .filter(|m| m.transport == SimTransport::Onvif)
        .map(|m| parse_request(&String::from_utf8_lossy(&m.bytes)).expect("a SOAP request"))
        .collect()
}

fn last_action(sim: &PtzSim) -> Action {
    requests(sim).pop().expect("a request").action
}

fn mv(pan: f64, tilt: f64, zoom: f64) -> PtzCommand {
    PtzCommand::Move { pan, tilt, zoom }
}

#[test]
fn each_ptz_action_sends_the_specified_body_and_moves_the_head() {
    let sim = sim_with_user("admin", "s3cret");
    let c = controller(&sim, "admin", "s3cret");

    c.command(mv(0.5, -0.25, 1.0)).expect("move");
    let all = requests(&sim);
    let names: Vec<String> = all.iter().map(|r| format!("{:?}", r.action)).collect();
    // First the device clock (unauthenticated), the services and the profiles; then the move.
    assert_eq!(all[0].action, Action::GetSystemDateAndTime, "{names:#?}");
    assert!(
        all[0].token.is_none(),
        "GetSystemDateAndTime must go unauthenticated"
    );
    assert_eq!(all[1].action, Action::GetCapabilities, "{names:#?}");
    assert_eq!(all[2].action, Action::GetProfiles, "{names:#?}");
    assert_eq!(
        all[3].action,
        Action::ContinuousMove {
            profile: "main".into(),
            pan: Some(0.5),
            tilt: Some(-0.25),
            zoom: Some(1.0)
        }
    );
    assert_eq!(all.len(), 4, "{names:#?}");
    // Every request after the clock carries a valid PasswordDigest UsernameToken.
    for r in &all[1..] {
        let t = r.token.as_ref().expect("a UsernameToken");
        assert!(t.digest, "PasswordDigest, never PasswordText");
        assert_eq!(t.nonce.len(), 16);
        check_token(Some(t), "admin", "s3cret", time::now_millis()).expect("a valid token");
    }
    let s = sim.state();
    assert!(
        s.pan_velocity > 0.0 && s.tilt_velocity < 0.0 && s.zoom_velocity > 0.0,
        "{s:?}"
    );

    c.command(PtzCommand::Stop).expect("stop");
    assert_eq!(
        last_action(&sim),
        Action::Stop {
            profile: "main".into(),
            pan_tilt: true,
            zoom: true
        }
    );
    let s1 = sim.state();
    assert!(!s1.moving, "{s1:?}");
    assert!(
        s1.pan > 0 && s1.zoom > 0,
        "the move took the head somewhere: {s1:?}"
    );

    // Preset 3: the driver looks for it, then has the device create it.
    sim.clear_received();
    c.command(PtzCommand::Preset {
        op: PresetOp::Save,
        index: 3,
    })
    .expect("save");
    let acts: Vec<Action> = requests(&sim).into_iter().map(|r| r.action).collect();
    assert_eq!(
        acts,
        vec![
            Action::GetPresets {
                profile: "main".into()
            },
            Action::SetPreset {
                profile: "main".into(),
                name: Some("3".into()),
                token: None
            }
        ]
    );
    // Saving it again overwrites the same device preset (by its token).
    c.command(PtzCommand::Preset {
        op: PresetOp::Save,
        index: 3,
    })
    .expect("save again");
    assert_eq!(
        last_action(&sim),
        Action::SetPreset {
            profile: "main".into(),
            name: Some("3".into()),
            token: Some("p1".into())
        }
    );

    c.command(PtzCommand::Home).expect("home");
    assert_eq!(
        last_action(&sim),
        Action::GotoHomePosition {
            profile: "main".into()
        }
    );
    let h = sim.state();
    assert_eq!((h.pan, h.tilt), (0, 0));

    c.command(PtzCommand::Preset {
        op: PresetOp::Goto,
        index: 3,
    })
    .expect("goto");
    assert_eq!(
        last_action(&sim),
        Action::GotoPreset {
            profile: "main".into(),
            token: "p1".into()
        }
    );
    let back = sim.state();
    assert_eq!((back.pan, back.tilt, back.zoom), (s1.pan, s1.tilt, s1.zoom));

    let p = c.position().expect("position");
    assert_eq!(
        last_action(&sim),
        Action::GetStatus {
            profile: "main".into()
        }
    );
    assert!(p.pan > 0 && p.pan <= 10_000 && p.zoom > 0, "{p:?}");
}

#[test]
fn a_wrong_password_is_a_clear_error_and_never_moves_the_head() {
    let sim = sim_with_user("admin", "right-one");
    let c = controller(&sim, "admin", "wrong-one");
    let e = c.command(mv(1.0, 0.0, 0.0)).unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, PtzError::Camera(_)), "{e:?}");
    assert!(
        text.contains("ONVIF authentication failed") && text.contains("Sender not Authorized"),
        "{text}"
    );
    assert!(
        !text.contains("wrong-one") && !text.contains("right-one"),
        "{text}"
    );
    assert!(!sim.state().moving);
    assert_eq!(c.health().link, crate::ptz::LinkState::Down);
    // No credentials at all: the same, named.
    let c = controller(&sim, "", "");
    let text = c.command(PtzCommand::Stop).unwrap_err().to_string();
    assert!(text.contains("ONVIF authentication failed"), "{text}");
}

#[test]
fn the_device_clock_offset_is_corrected() {
    // The device runs two hours ahead: a token stamped with our clock would be refused.
    const AHEAD: i64 = 2 * 3600 * 1000;
    let sim = sim_with_user("admin", "pw");
    sim.set_onvif(|o| o.clock_offset_ms = AHEAD);
    let mut client = Client::new("127.0.0.1", sim.http_port(), "admin", Secret::new("pw"));
    let offset = client.sync_clock().expect("GetSystemDateAndTime");
    assert!((offset - AHEAD).abs() < 2_000, "offset {offset} ms");
    let c = controller(&sim, "admin", "pw");
    c.command(mv(0.3, 0.0, 0.0))
        .expect("move with a corrected Created");
    c.command(PtzCommand::Stop).expect("stop");
    let created = requests(&sim)
        .last()
        .and_then(|r| r.token.clone())
        .map(|t| t.created)
        .expect("a token");
    let stamped = time::parse_utc_millis(&created).expect("a UTC dateTime");
    assert!(
        (stamped - time::now_millis() - AHEAD).abs() < 5_000,
        "Created {created} is not on the device clock"
    );

    // The device clock is then set three hours back (an operator, or NTP at last): the
    // next command is refused once, the driver asks the time again and succeeds.
    sim.set_onvif(|o| o.clock_offset_ms = -3 * 3600 * 1000);
    sim.clear_received();
    c.command(PtzCommand::Home)
        .expect("home after the clock moved");
    let acts: Vec<Action> = requests(&sim).into_iter().map(|r| r.action).collect();
    assert_eq!(
        acts,
        vec![
            Action::GotoHomePosition {
                profile: "main".into()
            },
            Action::GetSystemDateAndTime,
            Action::GotoHomePosition {
                profile: "main".into()
            },
        ]
    );

    // Without the correction the device would refuse: a token stamped with our own
    // clock is three hours off the device's.
    let stale = time::format_utc_millis(time::now_millis());
    let token = super::onvif::Token {
        username: "admin".into(),
        password: onvif::client::password_digest(&[7; 16], &stale, "pw"),
        digest: true,
        nonce: vec![7; 16],
        created: stale,
    };
    assert!(
        check_token(
            Some(&token),
            "admin",
            "pw",
            time::now_millis() - 3 * 3600 * 1000
        )
        .is_err(),
        "the simulator must refuse a token stamped with the wrong clock"
    );
}

#[test]
fn http_digest_where_the_device_asks_for_it() {
    let sim = sim_with_user("admin", "pw");
    sim.set_auth(SimAuth::Digest {
        user: "admin".into(),
        password: "pw".into(),
    });
    let c = controller(&sim, "admin", "pw");
    c.command(mv(0.0, 0.5, 0.0))
        .expect("move through Digest and WS-Security");
    assert!(sim.state().tilt_velocity > 0.0);
    c.command(PtzCommand::Stop).expect("stop");
    // The nonce expires: answered again without an error.
    sim.rotate_nonce();
    c.command(PtzCommand::Home)
        .expect("home after a stale nonce");
    let c = controller(&sim, "admin", "nope");
    let text = c.command(PtzCommand::Stop).unwrap_err().to_string();
    assert!(text.contains("ONVIF authentication failed"), "{text}");
    assert!(text.contains("HTTP Digest"), "{text}");
}

#[test]
fn faults_come_back_with_the_device_reason() {
    let sim = sim_with_user("admin", "pw");
    let mut client = Client::new("127.0.0.1", sim.http_port(), "admin", Secret::new("pw"));
    let services = device::services(&mut client).expect("services");
    let ptz = services.ptz.expect("a PTZ service");
    assert_eq!(
        ptz,
        format!("http://127.0.0.1:{}/onvif/ptz_service", sim.http_port())
    );
    let e = client
        .call(&ptz, &ptz_service::goto_preset("main", "nope"))
        .unwrap_err();
    assert_eq!(
        e,
        OnvifError::Fault {
            code: "Sender".into(),
            subcode: Some("NoToken".into()),
            reason: "no preset \"nope\"".into()
        }
    );
    let p: PtzError = e.into();
    assert_eq!(
        p.to_string(),
        "camera PTZ error: ONVIF device fault Sender/NoToken: no preset \"nope\""
    );
    // An operation the device lacks.
    let e = client
        .call(
            &ptz,
            "<tptz:AbsoluteMove><tptz:ProfileToken>main</tptz:ProfileToken></tptz:AbsoluteMove>",
        )
        .unwrap_err();
    assert!(e.to_string().contains("ActionNotSupported"), "{e}");
    // No device there at all: unreachable, quickly.
    let gone = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = gone.local_addr().unwrap().port();
    drop(gone);
    let t = Instant::now();
    let mut nobody = Client::new("127.0.0.1", port, "", Secret::default());
    let e = device::services(&mut nobody).unwrap_err();
    assert!(matches!(e, OnvifError::Unreachable(_)), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[test]
fn profiles_info_and_stream_uris_without_credentials() {
    let sim = sim_with_user("admin", "pw");
    sim.set_onvif(|o| {
        o.profiles = vec![
            SimProfile {
                token: "prof-hd".into(),
                name: "HD".into(),
                encoding: "H265".into(),
                width: 1920,
                height: 1080,
                // Some firmware embeds the credentials: they must not come back.
                uri: "rtsp://admin:pw@127.0.0.1:8554/hd".into(),
                ptz: true,
            },
            SimProfile {
                token: "prof-sd".into(),
                name: "SD".into(),
                encoding: "H264".into(),
                width: 640,
                height: 360,
                uri: "rtsp://127.0.0.1:8554/sd".into(),
                ptz: false,
            },
        ];
        o.manufacturer = "Simco".into();
    });
    let mut client = Client::new("127.0.0.1", sim.http_port(), "admin", Secret::new("pw"));
    let found = device::discover(&mut client).expect("discover");
    let media = found.services.media.expect("media service");
    assert_eq!(found.profiles.len(), 2);
    assert_eq!(found.profiles[0].encoding.as_deref(), Some("H265"));
    assert_eq!(
        (found.profiles[1].width, found.profiles[1].ptz),
        (Some(640), false)
    );
    let uri = device::stream_uri(&mut client, &media, "prof-hd").expect("uri");
    assert_eq!(uri, "rtsp://127.0.0.1:8554/hd");
    let info = device::device_information(&mut client).expect("info");
    assert_eq!(
        (info.manufacturer.as_str(), info.model.as_str()),
        ("Simco", "camera-sim")
    );
    match last_action(&sim) {
        Action::GetDeviceInformation => {}
        other => panic!("{other:?}"),
    }
    // The GetStreamUri body: RTP-Unicast over RTSP for the profile asked.
    let stream = requests(&sim)
        .into_iter()
        .find(|r| matches!(r.action, Action::GetStreamUri { .. }))
        .expect("GetStreamUri sent");
    assert_eq!(
        stream.action,
        Action::GetStreamUri {
            profile: "prof-hd".into(),
            stream: "RTP-Unicast".into(),
            protocol: "RTSP".into()
        }
    );
}

#[test]
fn discovery_finds_the_simulator_by_unicast_probe() {
    let sim = PtzSim::start(local());
    sim.set_onvif(|o| {
        o.name = "Lobby cam".into();
        o.hardware = "SIM-PTZ-1".into();
    });
    let target = std::net::SocketAddr::new(local(), sim.discovery_port());
    let t = Instant::now();
    let found =
        discovery::probe(local(), false, &[target], Duration::from_millis(1500)).expect("probe");
    assert!(t.elapsed() < Duration::from_secs(3));
    assert_eq!(found.len(), 1, "{found:?}");
    let f = &found[0];
    assert_eq!(f.address, "127.0.0.1");
    assert_eq!(f.xaddrs, vec![sim.onvif_device_url()]);
    assert_eq!(f.name.as_deref(), Some("Lobby cam"));
    assert_eq!(f.hardware.as_deref(), Some("SIM-PTZ-1"));
    assert!(f.endpoint.starts_with("urn:uuid:"), "{}", f.endpoint);
    // Nobody there: an empty list after the wait, not an error.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let nobody = silent.local_addr().unwrap();
    let found =
        discovery::probe(local(), false, &[nobody], Duration::from_millis(300)).expect("probe");
    assert!(found.is_empty());
}
