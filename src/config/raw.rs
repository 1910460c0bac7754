//! The config file as written: plain serde structs, `deny_unknown_fields`, every default
//! documented on its field. Nothing here is trusted; [`super::validate`] turns it into
//! domain types.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The whole TOML file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Connection and reconnection policy shared by all cameras.
    #[serde(default)]
    pub ingest: RawIngest,
    /// The shared decoder pool.
    #[serde(default)]
    pub decode: RawDecode,
    /// The object detector and its worker sessions.
    #[serde(default)]
    pub detector: RawDetector,
    /// Hard limits that protect the box.
    #[serde(default)]
    pub limits: RawLimits,
    /// Cameras keyed by id (`[cameras.gate-3]`). Ids appear in logs, metrics and MQTT topics.
    #[serde(default)]
    pub cameras: BTreeMap<String, RawCamera>,
}

/// `[ingest]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIngest {
    /// First retry delay after a camera fails. Default 1000.
    pub reconnect_initial_ms: Option<u64>,
    /// Cap of the exponential backoff. Default 30000.
    pub reconnect_max_ms: Option<u64>,
    /// A session that delivers no video frame for this long is torn down and retried
    /// (retina itself has no such timeout). Default 20000.
    pub no_frame_timeout_ms: Option<u64>,
    /// Limit on DESCRIBE + SETUP + PLAY. Default 10000.
    pub connect_timeout_ms: Option<u64>,
}

/// `[decode]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDecode {
    /// Threads in the shared keyframe decoder pool. Default 1.
    pub workers: Option<usize>,
    /// Keyframes waiting for a decoder; when full, new keyframes are skipped (and counted).
    /// Default 32.
    pub queue_capacity: Option<usize>,
}

/// `[detector]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDetector {
    /// Path of the model manifest (TOML), relative to this config file.
    /// Default `models/yolox_nano.toml` relative to the working directory when no config file
    /// is given (`gateway detect`), else required.
    pub model: Option<String>,
    /// Path of `libonnxruntime.so`. Default: the `ORT_DYLIB_PATH` environment variable.
    pub onnxruntime_library: Option<String>,
    /// Inference sessions fed from one queue. Default 1.
    pub sessions: Option<usize>,
    /// ONNX Runtime intra-op threads per session. Default 1.
    pub intra_op_threads: Option<usize>,
    /// Minimum `objectness × class` score kept. Default 0.4: at 0.3 the reference images gave
    /// false positives (a "cat" 0.38 on the dog, a 0.34 "person" straddling another). Zone rules
    /// may demand more, never less.
    pub score_threshold: Option<f32>,
    /// Class-wise NMS IoU threshold. Default 0.45.
    pub nms_iou_threshold: Option<f32>,
    /// Preprocessed frames waiting for a session; when full, frames are skipped (and counted).
    /// Default 16.
    pub queue_capacity: Option<usize>,
}

/// `[limits]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Refuse configs with more cameras than this. Default 1000.
    pub max_cameras: Option<usize>,
}

/// `[cameras.<id>]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCamera {
    /// `rtsp://host[:port]/path` for a camera, or `file:PATH` for footage (H.264/H.265 in
    /// MP4, MKV or Annex B; relative to this config file), played at its own pace, looping.
    /// Required. Credentials never go in the URL: use `username` and `password_env`/`password_file`.
    pub url: Option<String>,
    /// RTSP user name. Default: none (no authentication).
    pub username: Option<String>,
    /// Name of an environment variable holding the password.
    pub password_env: Option<String>,
    /// File whose first line is the password (e.g. under `/etc/street-gateway/secrets/`).
    pub password_file: Option<String>,
    /// `tcp` (default; interleaved on the RTSP connection) or `udp` (LAN only).
    pub transport: Option<String>,
    /// Place labels used to route incidents to the people responsible. Default empty.
    pub street: Option<String>,
    /// Residential compound (小区) this camera watches.
    pub community: Option<String>,
    /// Grid (网格) id within the street's governance system.
    pub grid: Option<String>,
    /// Property steward (物业管家) responsible for this camera's area.
    pub steward: Option<String>,
    /// Analyse one frame at most this often. Default 2000.
    pub analysis_interval_ms: Option<u64>,
    /// `keyframes` (default: decode only the keyframes the interval needs) or `every_frame`
    /// (a dedicated decoder; for cameras sampled faster than their GOP).
    pub decode: Option<String>,
    /// `false` keeps the camera in the file but does not connect. Default true.
    pub enabled: Option<bool>,
}
