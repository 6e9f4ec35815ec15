//! The appliance announces itself with mDNS / DNS-SD: a resolver on loopback finds
//! `_ptz-edge._tcp` with the HTTP port and version. (Loopback only: no multicast leaves
//! the machine during tests.)

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mdns_sd::{IfKind, ServiceDaemon, ServiceEvent};

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn announces_service_with_port_and_version() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ptz-edge"))
        .env("PORT", "0")
        .env("BIND", "127.0.0.1")
        .env("PTZ_EDGE_STATE", "off")
        .env("PTZ_EDGE_MDNS", "on") // BIND 127.0.0.1: announced on loopback only
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ptz-edge");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut guard = Kill(child);
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("read the listening line");
    let v: serde_json::Value = serde_json::from_str(&line).expect("listening line is JSON");
    let port: u16 = v["listening"]
        .as_str()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("listening address has a port");

    let browser = ServiceDaemon::new().expect("mDNS daemon");
    browser.disable_interface(IfKind::All).unwrap();
    browser.enable_interface(IfKind::LoopbackV4).unwrap();
    let events = browser
        .browse(ptz_edge::discovery::SERVICE_TYPE)
        .expect("browse");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut found = None;
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match events.recv_timeout(left) {
            Ok(ServiceEvent::ServiceResolved(info)) if info.get_port() == port => {
                found = Some(info);
                break;
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    let _ = browser.shutdown();
    let info = found.expect("no _ptz-edge._tcp announcement with our port within 15 s");
    assert_eq!(
        info.get_property_val_str("version"),
        Some(env!("CARGO_PKG_VERSION"))
    );
    assert!(info.get_fullname().starts_with("ptz-edge on "));
    assert!(guard.0.try_wait().unwrap().is_none(), "appliance died");
    // SIGTERM → clean exit 0 with the goodbye sent.
    let pid = guard.0.id() as i32;
    assert_eq!(send_sigterm(pid), 0);
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = guard.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "no exit within 10 s of SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "exit status {status}");
}

/// SIGTERM through the `kill` command.
fn send_sigterm(pid: i32) -> i32 {
    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .map(|s| s.code().unwrap_or(1))
        .unwrap_or(1)
}
