//! Configuration in two levels: [`raw`] is the TOML as written (`deny_unknown_fields`), and
//! [`validate`] turns it into domain types that cannot hold a bad value, collecting *every*
//! problem at once with its key path (`cameras.gate-3.url: unsupported scheme "http"`).
//!
//! Relative paths in a config file are resolved against the file's own directory, so a config
//! means the same thing whatever the working directory of the process is.

pub mod delivery;
pub mod evidence;
pub mod model_choice;
#[cfg(test)]
mod property_tests;
pub mod raw;
mod validate;
mod zones;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub use model_choice::{ModelChoice, ModelRule, ModelVariant};
pub use validate::validate;
pub use zones::zone_kinds;

/// A problem found in the config, with the key path it concerns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key path, e.g. `cameras.gate-3.url`; empty for problems with the file itself.
    pub path: String,
    /// What is wrong, in words an ops person can act on.
    pub message: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found in one config; never empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblems(pub Vec<ConfigProblem>);

impl fmt::Display for ConfigProblems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, problem) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{problem}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigProblems {}

/// A validated gateway configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Directory relative paths were resolved against (the config file's directory).
    pub base_dir: PathBuf,
    /// Connection policy shared by all cameras.
    pub ingest: IngestConfig,
    /// The shared decoder pool.
    pub decode: DecodeConfig,
    /// The detector.
    pub detector: DetectorConfig,
    /// Incident state, evidence and the outbox (`outbox.redb`).
    pub state_dir: PathBuf,
    /// How long and how much evidence is kept (`[storage]`).
    pub evidence_retention: crate::evidence::retention::RetentionPolicy,
    /// Clips, bystander blurring and the clips' retention (`[evidence]`).
    pub evidence: evidence::EvidenceConfig,
    /// Outbox cap (see `[outbox] max_entries`).
    pub outbox_max_entries: u64,
    /// Where held incident events are spilled at a stop while the outbox refuses commits
    /// (`[outbox] spill_dir`, default `$RUNTIME_DIRECTORY`); `None`: nowhere.
    pub outbox_spill_dir: Option<PathBuf>,
    /// The broker; `None` keeps events in the outbox only.
    pub mqtt: Option<delivery::MqttConfig>,
    /// Reminder and escalation timers and topics.
    pub escalation: delivery::EscalationConfig,
    /// The HTTP console; `None` starts no HTTP server.
    pub console: Option<ConsoleConfig>,
    /// Enabled cameras, sorted by id.
    pub cameras: Vec<CameraConfig>,
}

/// `[console]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleConfig {
    /// Where the HTTP server listens.
    pub bind: std::net::SocketAddr,
    /// The token every request for camera or incident data, and every change, must present;
    /// `None` makes the console read-only, its data readable from loopback peers only.
    pub token: Option<Secret>,
    /// Connections served at once (idle, in flight and live streams together).
    pub max_connections: usize,
    /// Extra host names accepted in `Host`, lower case, without port.
    pub allowed_hosts: Vec<String>,
}

/// `[ingest]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IngestConfig {
    /// First retry delay after a failure.
    pub reconnect_initial: Duration,
    /// Cap of the exponential backoff.
    pub reconnect_max: Duration,
    /// Tear a session down when no video frame arrived for this long.
    pub no_frame_timeout: Duration,
    /// Limit on DESCRIBE + SETUP + PLAY.
    pub connect_timeout: Duration,
}

impl Default for IngestConfig {
    fn default() -> Self {
        IngestConfig {
            reconnect_initial: Duration::from_millis(1000),
            reconnect_max: Duration::from_millis(30_000),
            no_frame_timeout: Duration::from_millis(20_000),
            connect_timeout: Duration::from_millis(10_000),
        }
    }
}

/// `[decode]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeConfig {
    /// Threads in the shared decoder pool.
    pub workers: usize,
}

impl Default for DecodeConfig {
    fn default() -> Self {
        DecodeConfig { workers: 1 }
    }
}

/// `[detector]`, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorConfig {
    /// Model manifest path (absolute after validation): the square model, every camera's
    /// unless the wide one is chosen for it.
    pub model_manifest: PathBuf,
    /// The wide model's manifest (`[detector] wide_model`), if configured.
    pub wide_model_manifest: Option<PathBuf>,
    /// `libonnxruntime.so`, if configured or given by `ORT_DYLIB_PATH`.
    pub onnxruntime_library: Option<PathBuf>,
    /// Inference sessions fed from one queue.
    pub sessions: usize,
    /// ONNX Runtime intra-op threads per session.
    pub intra_op_threads: usize,
    /// Minimum score kept.
    pub score_threshold: f32,
    /// Class-wise NMS IoU threshold.
    pub nms_iou_threshold: f32,
    /// Bound of the preprocessed-frame queue in front of the sessions.
    pub queue_capacity: usize,
}

impl DetectorConfig {
    /// The detector as `gateway detect` uses it without `--config`: the bundled manifest under
    /// `base_dir/models`, the library from `ORT_DYLIB_PATH`.
    pub fn default_in(base_dir: &Path) -> Self {
        DetectorConfig {
            model_manifest: base_dir.join(DEFAULT_MODEL_MANIFEST),
            wide_model_manifest: None,
            onnxruntime_library: std::env::var_os("ORT_DYLIB_PATH")
                .filter(|value| !value.is_empty())
                .map(PathBuf::from),
            sessions: 1,
            intra_op_threads: 1,
            score_threshold: 0.4,
            nms_iou_threshold: 0.45,
            queue_capacity: 2,
        }
    }
}

/// Where the bundled model manifest lives, relative to the project root.
pub const DEFAULT_MODEL_MANIFEST: &str = "models/yolox_nano.toml";

/// A camera id: `[A-Za-z0-9_-]{1,64}`, safe in logs, metric labels and MQTT topics.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CameraId(Arc<str>);

impl CameraId {
    /// Accepts only ids that are safe everywhere the id goes.
    pub fn try_new(id: &str) -> Result<Self, String> {
        let valid =
            !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if valid {
            Ok(CameraId(id.into()))
        } else {
            Err(format!("camera id {id:?} must be 1-64 characters of A-Z, a-z, 0-9, '-' and '_'"))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CameraId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A secret that never shows up in `Debug` or logs.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Secret(value)
    }

    /// The secret itself; call only where it is handed to the peer that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// RTSP credentials; the password is a [`Secret`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RtspCredentials {
    /// User name.
    pub username: String,
    /// Password.
    pub password: Secret,
}

/// RTP transport requested from a camera.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RtspTransport {
    /// Interleaved on the RTSP TCP connection (default: survives NAT and loss).
    Tcp,
    /// RTP over UDP (LAN only; retina has no reorder buffer).
    Udp,
}

/// Where a camera's video comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum SourceSpec {
    /// A live RTSP camera.
    Rtsp {
        /// URL without credentials.
        url: url::Url,
        /// Optional Basic/Digest credentials.
        credentials: Option<RtspCredentials>,
        /// RTP transport.
        transport: RtspTransport,
    },
    /// A footage file played at its own pace, looping.
    File {
        /// Absolute path.
        path: PathBuf,
    },
}

impl SourceSpec {
    /// A description safe to log (no credentials).
    pub fn describe(&self) -> String {
        match self {
            SourceSpec::Rtsp { url, .. } => url.to_string(),
            SourceSpec::File { path } => format!("file:{}", path.display()),
        }
    }
}

/// Which frames a camera decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DecodeMode {
    /// Only the keyframes the analysis interval needs, on the shared pool.
    Keyframes,
    /// Every frame, on a decoder dedicated to the camera; for sampling faster than the GOP.
    EveryFrame,
}

/// Place labels that route a camera's incidents to the people responsible.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PlaceLabels {
    /// Street (街道).
    pub street: String,
    /// Residential compound (小区).
    pub community: String,
    /// Grid (网格).
    pub grid: String,
    /// Property steward (物业管家).
    pub steward: String,
}

/// One validated camera.
#[derive(Debug, Clone, PartialEq)]
pub struct CameraConfig {
    /// Unique id.
    pub id: CameraId,
    /// Video source.
    pub source: SourceSpec,
    /// Routing labels.
    pub place: PlaceLabels,
    /// Analyse at most one frame per interval; the longest revisit the gateway aims for.
    pub analysis_interval: Duration,
    /// Cameras with fall-watch zones: the interval while people are in one of them.
    pub active_interval: Option<Duration>,
    /// Keyframes only, or every frame.
    pub decode_mode: DecodeMode,
    /// Zones and their rules.
    pub zones: Vec<crate::zones::Zone>,
    /// Main stream for incident snapshots, when `source` is the substream.
    pub snapshot_url: Option<url::Url>,
    /// How urgently its due frames are served when frames wait (fall-watch cameras are high
    /// while people are in view, whatever this says).
    pub priority: crate::schedule::Priority,
    /// Change gating: the longest a frame may reuse the last inference's detections while
    /// nothing changed in its zones; `None` runs the model on every analysed frame.
    pub gate_max_stale: Option<Duration>,
    /// Which detector model analyses it (`detector_model`).
    pub detector_model: ModelChoice,
}

impl CameraConfig {
    /// What decides the camera's model for each decoded frame; `wide_available`: the running
    /// detector has a wide model.
    pub fn model_rule(&self, wide_available: bool) -> ModelRule {
        ModelRule { choice: self.detector_model, fall_watch: self.has_fall_watch(), wide_available }
    }

    /// The scheduler's view of the camera's sampling.
    pub fn cadence(&self) -> crate::schedule::Cadence {
        crate::schedule::Cadence {
            interval_ms: self.analysis_interval.as_millis() as i64,
            active_interval_ms: self.active_interval.map(|active| active.as_millis() as i64),
            priority: self.priority,
        }
    }

    /// Whether any fall-watch zone asks for the pose second stage.
    pub fn pose(&self) -> bool {
        self.zones.iter().any(|zone| matches!(&zone.rule, crate::zones::ZoneRule::Fall(params) if params.pose))
    }

    /// Whether the camera has a fall-watch zone (whose rule may ask for the rotated pass).
    pub fn has_fall_watch(&self) -> bool {
        self.zones.iter().any(|zone| matches!(&zone.rule, crate::zones::ZoneRule::Fall(_)))
    }

    /// Whether any fall-watch zone asks for the rotated second detector pass on every frame.
    pub fn rotated_pass(&self) -> bool {
        self.zones.iter().any(|zone| matches!(&zone.rule, crate::zones::ZoneRule::Fall(params) if params.rotated_pass))
    }
}

/// Reads and validates a config file. Errors are all the problems found, with key paths.
pub fn load(path: &Path) -> Result<Config, ConfigProblems> {
    let text = std::fs::read_to_string(path).map_err(|error| {
        ConfigProblems(vec![ConfigProblem {
            path: String::new(),
            message: format!("cannot read config file {}: {error}", path.display()),
        }])
    })?;
    let base_dir = path
        .parent()
        .map(|dir| if dir.as_os_str().is_empty() { Path::new(".") } else { dir })
        .unwrap_or(Path::new("."));
    let base_dir = std::path::absolute(base_dir).unwrap_or_else(|_| base_dir.to_path_buf());
    parse(&text, &base_dir)
}

/// Parses and validates config text; relative paths resolve against `base_dir`.
pub fn parse(text: &str, base_dir: &Path) -> Result<Config, ConfigProblems> {
    let deserializer = toml::Deserializer::parse(text).map_err(|error| {
        ConfigProblems(vec![ConfigProblem {
            path: String::new(),
            message: format!("TOML syntax: {}", error.to_string().trim_end()),
        }])
    })?;
    let raw: raw::RawConfig = serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let path = error.path().to_string();
        ConfigProblems(vec![ConfigProblem {
            path: if path == "." { String::new() } else { path },
            message: error.into_inner().message().to_string(),
        }])
    })?;
    validate(raw, base_dir, &|name| std::env::var(name).ok())
}
