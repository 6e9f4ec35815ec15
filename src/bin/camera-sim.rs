//! `camera-sim`: command-line front end of the camera simulator (`ptz_edge::sim`); parses
//! arguments, runs the RTSP server until SIGTERM/SIGINT, prints where it listens.

use std::io::Write;
use std::net::IpAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ptz_edge::sim::onvif::SimProfile;
use ptz_edge::sim::ptz::{PtzSim, SimAuth};
use ptz_edge::sim::{SimCodec, SimConfig, Simulator};
use signal_hook::consts::{SIGINT, SIGTERM, SIGUSR1};

const USAGE: &str = "\
camera-sim: a local RTSP camera streaming an H.264 test picture with a frame code.

USAGE:
    camera-sim [OPTIONS]

OPTIONS:
    --bind ADDR          address to listen on            [default: 127.0.0.1]
    --port PORT          RTSP port, 0 = any free port    [default: 8554]
    --path PATH          mount path, repeatable          [default: /1]
    --size WxH           picture size                    [default: 1280x720]
    --fps N              frames per second               [default: 30]
    --codec h264|h265    video codec                     [default: h264]
    --gop SECS           seconds between keyframes       [default: 1]
    --bframes N          H.264 High profile with N B-frames (0-4) [default: 0]
    --audio              an Opus audio track beside the video
    --tcp-only           RTP over the RTSP connection only (UDP refused)
    --digest             RTSP Digest instead of Basic auth (with --user/--password)
    --ptz                also simulate the PTZ head: VISCA over TCP and UDP, Sony
                         VISCA over IP, PTZOptics HTTP-CGI and ONVIF (device, media,
                         PTZ services on the HTTP port; WS-Discovery on a free UDP
                         port and the 239.255.255.250:3702 group) on free ports
                         (listed under \"ptz\" in the JSON line); the picture follows
                         it. ONVIF's GetStreamUri gives the RTSP URLs, and with
                         --user/--password ONVIF asks for the same credentials
    --preset-travel MS   with --ptz: preset recalls and home take MS milliseconds (the
                         head travels there) instead of arriving at once  [default: 0]
    --scroll             scroll the colour bars (a busy scene); by default they stand
                         still, and the picture hunts for a moment after the head stops
    --user U             RTSP basic auth user (needs --password)
    --password P         RTSP basic auth password (visible in `ps`; for tests only)
    -h, --help           print this help

Once listening, prints one JSON line to stdout:
    {\"rtsp_port\":8554,\"urls\":[\"rtsp://127.0.0.1:8554/1\"]}
SIGUSR1 toggles an object in the scene (a box in the lower right), so change
detection has something to see. Runs until SIGTERM or SIGINT; a second signal exits
at once.
Logs go to stderr (RUST_LOG=debug for more).";

/// What the command line asked for.
enum Command {
    Help,
    /// The stream settings, whether to simulate a PTZ head too, and its preset travel.
    Run(SimConfig, bool, Option<Duration>),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Vec<String> = std::env::args().skip(1).collect();
    match parse_args(&args) {
        Ok(Command::Help) => {
            // Ignore a closed stdout (`camera-sim --help | head`).
            let _ = writeln!(std::io::stdout(), "{USAGE}");
            ExitCode::SUCCESS
        }
        Ok(Command::Run(cfg, ptz, travel)) => match run(cfg, ptz, travel) {
            Ok(()) => ExitCode::SUCCESS,
            Err(err) => {
                log::error!("{err}");
                ExitCode::FAILURE
            }
        },
        Err(msg) => {
            eprintln!("camera-sim: {msg}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn run(
    mut cfg: SimConfig,
    with_ptz: bool,
    travel: Option<Duration>,
) -> Result<(), Box<dyn std::error::Error>> {
    // Register before starting, so a signal during start-up is not lost. A second signal
    // after the flag is set exits at once (conditional shutdown runs first).
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [SIGTERM, SIGINT] {
        signal_hook::flag::register_conditional_shutdown(signal, 1, Arc::clone(&stop))?;
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let toggle = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(SIGUSR1, Arc::clone(&toggle))?;
    let scene = cfg.scene.clone();

    // The PTZ head (VISCA TCP/UDP, Sony VISCA, HTTP-CGI, ONVIF) on the same address; the
    // CGI asks for the RTSP credentials with Digest, as PTZOptics cameras do, and ONVIF
    // for the same in WS-Security.
    let ptz = if with_ptz {
        let mut ptz = PtzSim::try_start(cfg.bind)?;
        ptz.set_preset_travel(travel);
        if let Some((user, password)) = &cfg.auth {
            ptz.set_auth(SimAuth::Digest {
                user: user.clone(),
                password: password.clone(),
            });
            let creds = (user.clone(), password.clone());
            ptz.set_onvif(|o| o.credentials = Some(creds));
        }
        // Best effort: a host without multicast still answers unicast probes.
        if let Err(e) = ptz.join_discovery_multicast() {
            log::warn!("WS-Discovery: cannot join 239.255.255.250:3702 ({e}); unicast probes only");
        }
        cfg.ptz_view = Some(ptz.handle());
        Some(ptz)
    } else {
        None
    };
    let (width, height, codec) = (cfg.width, cfg.height, cfg.codec);
    let sim = Simulator::start(cfg)?;
    if let Some(p) = &ptz {
        // One ONVIF media profile per path, the first with PTZ.
        let profiles: Vec<SimProfile> = sim
            .paths()
            .iter()
            .enumerate()
            .map(|(i, path)| SimProfile {
                token: format!("profile_{}", i + 1),
                name: path.trim_start_matches('/').to_owned(),
                encoding: match codec {
                    SimCodec::H264 => "H264".into(),
                    SimCodec::H265 => "H265".into(),
                },
                width,
                height,
                uri: sim.url(path),
                ptz: i == 0,
            })
            .collect();
        p.set_onvif(|o| o.profiles = profiles);
    }
    let mut ready = serde_json::json!({ "rtsp_port": sim.rtsp_port(), "urls": sim.urls() });
    if let Some(p) = &ptz {
        ready["ptz"] = serde_json::json!({
            "visca_tcp": p.visca_tcp_port(),
            "visca_udp": p.visca_udp_port(),
            "visca_sony": p.visca_sony_port(),
            "http": p.http_port(),
            "onvif": p.onvif_device_url(),
            "wsd": p.discovery_port(),
        });
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{ready}")?;
    stdout.flush()?;
    drop(stdout);

    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(20));
        if toggle.swap(false, Ordering::Relaxed) {
            scene.toggle_object();
        }
    }
    log::info!("signal received, stopping");
    sim.stop();
    Ok(())
}

fn parse_args(args: &[String]) -> Result<Command, String> {
    let mut cfg = SimConfig {
        port: 8554,
        paths: Vec::new(),
        ..SimConfig::default()
    };
    let (mut user, mut password) = (None, None);
    let mut with_ptz = false;
    let mut travel = None;
    let mut iter = args.iter();
    while let Some(flag) = iter.next() {
        let flag = flag.as_str();
        if matches!(flag, "-h" | "--help") {
            return Ok(Command::Help);
        }
        let mut value = || {
            iter.next()
                .map(String::as_str)
                .ok_or_else(|| format!("{flag} needs a value"))
        };
        match flag {
            "--bind" => {
                let v = value()?;
                cfg.bind = v
                    .parse::<IpAddr>()
                    .map_err(|_| format!("--bind {v:?} is not an IP address"))?;
            }
            "--port" => {
                let v = value()?;
                cfg.port = v
                    .parse()
                    .map_err(|_| format!("--port {v:?} is not a port number"))?;
            }
            "--path" => {
                let v = value()?;
                let path = if v.starts_with('/') {
                    v.to_owned()
                } else {
                    format!("/{v}")
                };
                cfg.paths.push(path);
            }
            "--size" => {
                let v = value()?;
                (cfg.width, cfg.height) =
                    parse_size(v).ok_or_else(|| format!("--size {v:?} is not WIDTHxHEIGHT"))?;
            }
            "--fps" => {
                let v = value()?;
                cfg.fps = v
                    .parse()
                    .map_err(|_| format!("--fps {v:?} is not a whole number"))?;
            }
            "--codec" => cfg.codec = value()?.parse()?,
            "--gop" => {
                let v = value()?;
                cfg.gop_secs = v
                    .parse()
                    .map_err(|_| format!("--gop {v:?} is not a whole number of seconds"))?;
            }
            "--bframes" => {
                let v = value()?;
                cfg.bframes = v
                    .parse()
                    .map_err(|_| format!("--bframes {v:?} is not a whole number"))?;
            }
            "--audio" => cfg.audio = true,
            "--tcp-only" => cfg.tcp_only = true,
            "--digest" => cfg.digest = true,
            "--ptz" => with_ptz = true,
            "--scroll" => cfg.scroll = true,
            "--preset-travel" => {
                let v = value()?;
                let ms: u64 = v
                    .parse()
                    .ok()
                    .filter(|&ms| ms <= 60_000)
                    .ok_or_else(|| format!("--preset-travel {v:?} is not 0..60000 ms"))?;
                travel = (ms > 0).then(|| Duration::from_millis(ms));
            }
            "--user" => user = Some(value()?.to_owned()),
            "--password" => password = Some(value()?.to_owned()),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if cfg.paths.is_empty() {
        cfg.paths.push("/1".to_owned());
    }
    cfg.auth = match (user, password) {
        (Some(user), Some(password)) => Some((user, password)),
        (None, None) => None,
        _ => return Err("--user and --password go together".to_owned()),
    };
    cfg.validate().map_err(|err| err.to_string())?;
    Ok(Command::Run(cfg, with_ptz, travel))
}

/// `"1920x1080"` → `(1920, 1080)`.
fn parse_size(s: &str) -> Option<(u32, u32)> {
    let (w, h) = s.split_once(['x', 'X'])?;
    Some((w.trim().parse().ok()?, h.trim().parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    fn config(s: &str) -> SimConfig {
        match parse_args(&args(s)) {
            Ok(Command::Run(cfg, _, _)) => cfg,
            Ok(Command::Help) => panic!("help for {s:?}"),
            Err(err) => panic!("{s:?}: {err}"),
        }
    }

    #[test]
    fn defaults() {
        let cfg = config("");
        assert_eq!(cfg.port, 8554);
        assert_eq!(cfg.paths, vec!["/1".to_owned()]);
        assert_eq!((cfg.width, cfg.height, cfg.fps), (1280, 720, 30));
        assert!(cfg.auth.is_none());
    }

    #[test]
    fn all_options() {
        let cfg = config(
            "--bind 0.0.0.0 --port 0 --path /1 --path stream2 --size 1920x1080 --fps 25 \
             --user admin --password pw",
        );
        assert_eq!(cfg.bind.to_string(), "0.0.0.0");
        assert_eq!(cfg.port, 0);
        assert_eq!(cfg.paths, vec!["/1".to_owned(), "/stream2".to_owned()]);
        assert_eq!((cfg.width, cfg.height, cfg.fps), (1920, 1080, 25));
        assert_eq!(cfg.auth, Some(("admin".into(), "pw".into())));
    }

    #[test]
    fn errors() {
        for bad in [
            "--port",
            "--port 70000",
            "--size 1920",
            "--size 1921x1080",
            "--bind localhost",
            "--user admin",
            "--fps x",
            "--frobnicate",
            "--preset-travel x",
            "--preset-travel 60001",
        ] {
            assert!(parse_args(&args(bad)).is_err(), "{bad:?}");
        }
        assert!(matches!(parse_args(&args("--help")), Ok(Command::Help)));
    }
}
