//! The state file: connected cameras (with credentials) kept across restarts.
//!
//! Written atomically (temp file in the same folder, fsync, rename, fsync of the folder)
//! with mode 0600, so `kill -9` or a power cut at any moment leaves either the old or
//! the new list, never a torn or empty file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use parking_lot::Mutex;

use crate::camera::change::WatchConfig;
use crate::camera::CameraSpec;
use crate::onvif::OnvifSource;
use crate::ptz::PtzConfig;

/// One saved camera: how to reach its stream and, if it has one, its PTZ control.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedCamera {
    #[serde(flatten)]
    pub camera: CameraSpec,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ptz: Option<PtzConfig>,
    /// Connected by ONVIF: where to ask for the stream URI again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub onvif: Option<OnvifSource>,
    /// Change watching, when on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub watch: Option<SavedWatch>,
}

/// A camera's change-watch settings as saved (cooldown in seconds).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SavedWatch {
    pub threshold: f32,
    pub cooldown: f64,
}

impl From<WatchConfig> for SavedWatch {
    fn from(c: WatchConfig) -> SavedWatch {
        SavedWatch {
            threshold: c.threshold,
            cooldown: c.cooldown.as_secs_f64(),
        }
    }
}

impl SavedWatch {
    /// The settings; a hand-edited file with values out of range is clamped to them.
    pub fn config(self) -> WatchConfig {
        let ok = |v: f64| v.is_finite().then_some(v);
        WatchConfig {
            threshold: ok(f64::from(self.threshold))
                .map_or(crate::camera::change::DEFAULT_THRESHOLD, |t| {
                    t.clamp(0.001, 1.0) as f32
                }),
            cooldown: ok(self.cooldown).map_or(crate::camera::change::DEFAULT_COOLDOWN, |c| {
                std::time::Duration::from_secs_f64(c.clamp(0.0, 86_400.0))
            }),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct StateFile {
    version: u32,
    cameras: Vec<SavedCamera>,
}

pub struct Store {
    path: PathBuf,
    /// One writer at a time: concurrent saves share the temp file name.
    writing: Mutex<()>,
}

impl Store {
    pub fn new(path: PathBuf) -> Store {
        Store {
            path,
            writing: Mutex::new(()),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Removes temp files a killed process left behind (they hold credentials too).
    pub fn remove_stale_temp_files(&self) {
        let (Some(dir), Some(name)) = (self.path.parent(), self.path.file_name()) else {
            return;
        };
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        };
        let prefix = format!(".{}.tmp-", name.to_string_lossy());
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_file(e.path());
            }
        }
    }

    /// The saved cameras; an absent file is an empty list.
    pub fn load(&self) -> io::Result<Vec<SavedCamera>> {
        let data = match fs::read(&self.path) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let state: StateFile = serde_json::from_slice(&data)
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        Ok(state.cameras)
    }

    /// Replaces the saved list.
    pub fn save(&self, cameras: &[SavedCamera]) -> io::Result<()> {
        let _one_writer = self.writing.lock();
        let dir = self
            .path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        fs::create_dir_all(dir)?;
        let body = serde_json::to_vec_pretty(&StateFile {
            version: 1,
            cameras: cameras.to_vec(),
        })
        .map_err(io::Error::other)?;
        let name = self
            .path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "cameras.json".into());
        let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
        {
            let mut f = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
        }
        fs::rename(&tmp, &self.path)?;
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::camera::Transport;
    use crate::secret::Secret;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn round_trip_with_mode_0600() {
        let dir = std::env::temp_dir().join(format!("ptz-edge-state-{}", std::process::id()));
        let store = Store::new(dir.join("sub/cameras.json"));
        assert!(store.load().unwrap().is_empty());
        let camera = CameraSpec {
            id: "c1".into(),
            host: "10.1.2.3".into(),
            port: 554,
            path: "/1".into(),
            username: "admin".into(),
            password: Secret::new("p@ss:/#%"),
            transport: Transport::Tcp,
        };
        let saved = vec![
            SavedCamera {
                camera: camera.clone(),
                ptz: None,
                onvif: None,
                watch: None,
            },
            SavedCamera {
                camera: CameraSpec {
                    id: "c2".into(),
                    ..camera
                },
                ptz: Some(PtzConfig::new(crate::ptz::Protocol::ViscaTcp, None).unwrap()),
                onvif: Some(OnvifSource {
                    host: "10.0.0.9".into(),
                    port: 8000,
                    profile: Some("Profile_1".into()),
                }),
                watch: Some(SavedWatch {
                    threshold: 0.1,
                    cooldown: 2.5,
                }),
            },
        ];
        store.save(&saved).unwrap();
        assert_eq!(store.load().unwrap(), saved);
        let mode = fs::metadata(store.path()).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        fs::remove_dir_all(dir).unwrap();
    }
}
