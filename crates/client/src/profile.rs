//! The on-disk profile: display name, last server, recent rooms, chosen
//! devices, window geometry and audio processing switches, in
//! `profile.toml` under the platform's config directory (or `--profile-dir`).
//!
//! Writes are atomic (a temp file in the same directory, fsync, rename,
//! fsync of the directory), so a crash or a full disk mid-write leaves the
//! previous profile intact. A file that cannot be read or parsed is moved
//! aside as `profile.toml.corrupt-<unix seconds>` and defaults are used; the
//! caller is told so it can say so.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use parley_media::apm::ApmSettings;
use parley_media::device::{DeviceInfo, pick};
use serde::{Deserialize, Serialize};

pub const FILE_NAME: &str = "profile.toml";
/// Written into every profile; older files are migrated on load.
pub const SCHEMA_VERSION: u32 = 2;
/// A profile is a few hundred bytes; anything this big is not ours.
pub const MAX_FILE_BYTES: u64 = 64 * 1024;
pub const MAX_RECENT_ROOMS: usize = 8;
const MAX_TEXT_CHARS: usize = 512;

/// A device as remembered: the platform id, and the name as a fallback
/// when the id changed (another USB port, a renumbered sound card).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedDevice {
    pub id: String,
    pub name: String,
}

impl SavedDevice {
    /// The present device this choice means: same id, else same name.
    pub fn resolve<'a>(&self, present: &'a [DeviceInfo]) -> Option<&'a DeviceInfo> {
        pick(present, &self.id, &self.name)
    }
}

impl From<&DeviceInfo> for SavedDevice {
    fn from(device: &DeviceInfo) -> Self {
        Self {
            id: device.id.clone(),
            name: device.name.clone(),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Devices {
    pub camera: Option<SavedDevice>,
    pub microphone: Option<SavedDevice>,
    pub speaker: Option<SavedDevice>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowGeometry {
    pub x: i32,
    pub y: i32,
    pub width: u32,
    pub height: u32,
    #[serde(default)]
    pub maximized: bool,
}

/// Audio processing stages, all on by default (headset users turn echo
/// cancellation off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AudioProcessing {
    pub echo_cancellation: bool,
    pub noise_suppression: bool,
    pub gain_control: bool,
    pub high_pass_filter: bool,
}

impl Default for AudioProcessing {
    /// The engine's defaults: every stage on.
    fn default() -> Self {
        let apm = ApmSettings::default();
        Self {
            echo_cancellation: apm.echo_cancellation,
            noise_suppression: apm.noise_suppression,
            gain_control: apm.gain_control,
            high_pass_filter: apm.high_pass_filter,
        }
    }
}

impl From<AudioProcessing> for ApmSettings {
    fn from(p: AudioProcessing) -> Self {
        Self {
            echo_cancellation: p.echo_cancellation,
            noise_suppression: p.noise_suppression,
            gain_control: p.gain_control,
            high_pass_filter: p.high_pass_filter,
        }
    }
}

/// Where the user meets: the SFU on this computer, or one at a URL.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ServerChoice {
    Host,
    Url { url: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Profile {
    pub schema_version: u32,
    pub display_name: String,
    pub last_server: Option<ServerChoice>,
    /// Most recent first, at most [`MAX_RECENT_ROOMS`].
    pub recent_rooms: Vec<String>,
    pub devices: Devices,
    pub window: Option<WindowGeometry>,
    pub audio_processing: AudioProcessing,
}

impl Default for Profile {
    fn default() -> Self {
        Self {
            schema_version: SCHEMA_VERSION,
            display_name: String::new(),
            last_server: None,
            recent_rooms: Vec::new(),
            devices: Devices::default(),
            window: None,
            audio_processing: AudioProcessing::default(),
        }
    }
}

impl Profile {
    /// Puts `room` first in the recent list (once), dropping the oldest.
    pub fn remember_room(&mut self, room: &str) {
        self.recent_rooms.retain(|r| r != room);
        self.recent_rooms.insert(0, room.to_owned());
        self.recent_rooms.truncate(MAX_RECENT_ROOMS);
    }

    /// Drops what no version of the app would have written: over-long text,
    /// a window of no size, too many rooms.
    fn sanitize(&mut self) {
        let long = |s: &String| s.chars().count() > MAX_TEXT_CHARS;
        if long(&self.display_name) {
            self.display_name.clear();
        }
        if let Some(ServerChoice::Url { url }) = &self.last_server
            && long(url)
        {
            self.last_server = None;
        }
        self.recent_rooms.retain(|r| !r.is_empty() && !long(r));
        self.recent_rooms.truncate(MAX_RECENT_ROOMS);
        for slot in [
            &mut self.devices.camera,
            &mut self.devices.microphone,
            &mut self.devices.speaker,
        ] {
            if slot.as_ref().is_some_and(|d| long(&d.id) || long(&d.name)) {
                *slot = None;
            }
        }
        if self.window.is_some_and(|w| w.width == 0 || w.height == 0) {
            self.window = None;
        }
    }
}

/// Schema 1 (the first builds) kept devices by name only, the name under
/// `name` and the server as a bare string (`"host"` or a URL).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct ProfileV1 {
    name: String,
    server: Option<String>,
    rooms: Vec<String>,
    camera: Option<String>,
    microphone: Option<String>,
    speaker: Option<String>,
}

impl From<ProfileV1> for Profile {
    fn from(old: ProfileV1) -> Self {
        // The id is unknown; an empty id makes the name decide.
        let device = |name: Option<String>| {
            name.map(|name| SavedDevice {
                id: String::new(),
                name,
            })
        };
        Self {
            display_name: old.name,
            last_server: old.server.map(|s| match s.as_str() {
                "host" => ServerChoice::Host,
                _ => ServerChoice::Url { url: s },
            }),
            recent_rooms: old.rooms,
            devices: Devices {
                camera: device(old.camera),
                microphone: device(old.microphone),
                speaker: device(old.speaker),
            },
            ..Self::default()
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("the profile is larger than {MAX_FILE_BYTES} bytes")]
    TooLarge,
    #[error("the profile is not valid TOML: {0}")]
    Parse(String),
    #[error("the profile has schema version {0}, newer than this build understands")]
    NewerSchema(u32),
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

fn io_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ProfileError {
    let path = path.to_path_buf();
    move |source| ProfileError::Io {
        action,
        path,
        source,
    }
}

/// Parses a profile of any known schema into the current one.
pub fn parse(text: &str) -> Result<Profile, ProfileError> {
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ProfileError::Parse(e.message().to_owned()))?;
    let version = match table.get("schema_version") {
        None => 1,
        Some(toml::Value::Integer(v)) => u32::try_from(*v)
            .map_err(|_| ProfileError::Parse(format!("schema_version {v} is out of range")))?,
        Some(_) => return Err(ProfileError::Parse("schema_version is not a number".into())),
    };
    let value = toml::Value::Table(table);
    let mut profile = match version {
        1 => Profile::from(
            value
                .try_into::<ProfileV1>()
                .map_err(|e| ProfileError::Parse(e.message().to_owned()))?,
        ),
        SCHEMA_VERSION => value
            .try_into::<Profile>()
            .map_err(|e| ProfileError::Parse(e.message().to_owned()))?,
        newer => return Err(ProfileError::NewerSchema(newer)),
    };
    profile.schema_version = SCHEMA_VERSION;
    profile.sanitize();
    Ok(profile)
}

/// What [`ProfileStore::load`] found.
#[derive(Debug)]
pub struct Loaded {
    pub profile: Profile,
    /// Set when the file was unusable and moved here; defaults are in use.
    pub set_aside: Option<SetAside>,
    /// The file had an older schema (it is rewritten on the next save).
    pub migrated_from: Option<u32>,
}

#[derive(Debug, Clone)]
pub struct SetAside {
    pub moved_to: PathBuf,
    pub reason: String,
}

/// The profile file in one directory.
#[derive(Debug, Clone)]
pub struct ProfileStore {
    dir: PathBuf,
}

impl ProfileStore {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    /// The platform's place for it: `~/.config/parley` on Linux,
    /// `~/Library/Application Support/app.Parley.Parley` on macOS,
    /// `%APPDATA%\Parley\Parley\config` on Windows.
    pub fn default_dir() -> Option<PathBuf> {
        directories::ProjectDirs::from("app", "Parley", "Parley")
            .map(|dirs| dirs.config_dir().to_path_buf())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    /// The profile, or defaults when there is none yet. An unusable file is
    /// set aside, never deleted and never an error: the app must start.
    pub fn load(&self) -> Loaded {
        self.remove_stale_temp_files();
        let path = self.path();
        let text = match read_limited(&path) {
            Ok(None) => {
                return Loaded {
                    profile: Profile::default(),
                    set_aside: None,
                    migrated_from: None,
                };
            }
            Ok(Some(text)) => Ok(text),
            Err(err) => Err(err),
        };
        let migrated_from = text
            .as_ref()
            .ok()
            .and_then(|t| t.parse::<toml::Table>().ok())
            .map(|t| t.get("schema_version").and_then(toml::Value::as_integer))
            .and_then(|v| match v {
                None => Some(1),
                Some(v) if v < i64::from(SCHEMA_VERSION) => u32::try_from(v).ok(),
                Some(_) => None,
            });
        match text.and_then(|text| parse(&text)) {
            Ok(profile) => Loaded {
                profile,
                set_aside: None,
                migrated_from,
            },
            Err(err) => Loaded {
                profile: Profile::default(),
                set_aside: Some(self.set_aside(&err.to_string())),
                migrated_from: None,
            },
        }
    }

    fn set_aside(&self, reason: &str) -> SetAside {
        let seconds = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let mut moved_to = self.dir.join(format!("{FILE_NAME}.corrupt-{seconds}"));
        let mut n = 1;
        while moved_to.exists() {
            moved_to = self.dir.join(format!("{FILE_NAME}.corrupt-{seconds}-{n}"));
            n += 1;
        }
        if let Err(err) = fs::rename(self.path(), &moved_to) {
            tracing::warn!(%err, "could not move the unusable profile aside");
        }
        tracing::warn!(reason, moved_to = %moved_to.display(), "profile set aside; using defaults");
        SetAside {
            moved_to,
            reason: reason.to_owned(),
        }
    }

    /// Writes the profile atomically: the old file stays whole until the
    /// new one is complete on disk.
    pub fn save(&self, profile: &Profile) -> Result<(), ProfileError> {
        let text = toml::to_string_pretty(profile)
            .map_err(|e| ProfileError::Parse(format!("serializing: {e}")))?;
        fs::create_dir_all(&self.dir).map_err(io_error("creating", &self.dir))?;
        let temp = self.temp_path();
        let written = write_synced(&temp, text.as_bytes())
            .and_then(|()| fs::rename(&temp, self.path()).map_err(io_error("replacing", &temp)));
        if written.is_err() {
            let _ = fs::remove_file(&temp);
        }
        written?;
        // The rename itself is durable only once the directory is synced.
        if let Ok(dir) = File::open(&self.dir) {
            let _ = dir.sync_all();
        }
        Ok(())
    }

    fn temp_path(&self) -> PathBuf {
        self.dir.join(format!(
            ".{FILE_NAME}.{}-{}.tmp",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        ))
    }

    /// Temp files of a write that never finished (a crash, power loss).
    fn remove_stale_temp_files(&self) {
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let prefix = format!(".{FILE_NAME}.");
        for entry in entries.flatten() {
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&prefix) && name.ends_with(".tmp") {
                let _ = fs::remove_file(entry.path());
            }
        }
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), ProfileError> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(io_error("creating", path))?;
    file.write_all(bytes).map_err(io_error("writing", path))?;
    file.sync_all().map_err(io_error("syncing", path))
}

/// The file's text, `None` when there is no file.
fn read_limited(path: &Path) -> Result<Option<String>, ProfileError> {
    let file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(io_error("opening", path)(err)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error("reading", path))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ProfileError::TooLarge);
    }
    String::from_utf8(bytes)
        .map(Some)
        .map_err(|_| ProfileError::Parse("the profile is not UTF-8".into()))
}

#[cfg(test)]
mod tests;
