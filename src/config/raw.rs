//! The config file as written: plain serde structs, `deny_unknown_fields`, every default
//! documented on its field. Nothing here is trusted; [`super::validate`] turns it into
//! domain types.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

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
    /// Where incident state and evidence are kept.
    #[serde(default)]
    pub storage: RawStorage,
    /// Event clips and the privacy of snapshots that leave the gateway.
    #[serde(default)]
    pub evidence: super::evidence::RawEvidence,
    /// The durable outbox of incident events.
    #[serde(default)]
    pub outbox: RawOutbox,
    /// The MQTT broker incidents are delivered to. Without it, events stay in the outbox
    /// (and a warning says so at start).
    pub mqtt: Option<super::delivery::RawMqtt>,
    /// Reminders and escalation of unanswered incidents.
    #[serde(default)]
    pub escalation: super::delivery::RawEscalation,
    /// The HTTP console, API and metrics. Without it, no HTTP server is started.
    pub console: Option<RawConsole>,
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
    /// Threads in the shared decoder pool (keyframe decode + preprocessing). Default 1.
    pub workers: Option<usize>,
}

/// `[detector]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawDetector {
    /// Path of the model manifest (TOML), relative to this config file.
    /// Default `models/yolox_nano.toml` relative to the working directory when no config file
    /// is given (`gateway detect`), else required.
    pub model: Option<String>,
    /// Path of a second manifest for wide frames (e.g. `models/yolox_nano_416x256.toml`),
    /// relative to this config file: cameras whose frames are at least 1.6 : 1 and that have
    /// no fall-watch zone are analysed with it (see `cameras.<id>.detector_model`). Default
    /// none: every camera uses `model`.
    pub wide_model: Option<String>,
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
    /// Preprocessed frames waiting for a session; when full, the decoder pool waits (the
    /// backlog stays in the scheduler, one frame per camera). Default 2.
    pub queue_capacity: Option<usize>,
    /// Change gating: a frame whose zones did not change beyond noise since the camera's last
    /// inferred frame reuses that frame's detections instead of running the model, for at most
    /// this long after that inference. 0 turns gating off. Default 60000; 1000–3600000.
    /// Cameras may override it (`cameras.<id>.gate_max_stale_ms`).
    pub gate_max_stale_ms: Option<u64>,
}

/// `[limits]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Refuse configs with more cameras than this. Default 1000.
    pub max_cameras: Option<usize>,
}

/// `[storage]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStorage {
    /// Directory for incident state (`incidents/`) and evidence (`evidence/`), relative to
    /// this config file. Default: `$STATE_DIRECTORY` (set by systemd's `StateDirectory=`),
    /// else `/var/lib/street-gateway`.
    pub state_dir: Option<String>,
    /// Evidence (snapshots, crops, sidecars) older than this many days is deleted, except an
    /// open incident's. Default 30.
    pub evidence_max_age_days: Option<u32>,
    /// Above this many MiB of evidence the oldest files are deleted, except an open
    /// incident's. Default 10240 (10 GiB).
    pub evidence_max_mib: Option<u64>,
}

/// `[outbox]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawOutbox {
    /// Events kept for delivery before the oldest `updated` events are compacted away
    /// (`opened` and `cleared` are never dropped). Default 100000 (about 100 MB of JSON).
    pub max_entries: Option<u64>,
    /// Where held incident events go when the gateway stops while the outbox refuses commits
    /// (a full or failing disk), relative to this config file; the next start puts them into
    /// the outbox. Default: `$RUNTIME_DIRECTORY` (systemd's `RuntimeDirectory=`, RAM-backed),
    /// else none (held events are then lost at a stop, each logged).
    pub spill_dir: Option<String>,
}

/// `[console]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConsole {
    /// Address and port to listen on. Default `127.0.0.1:8080` (loopback only).
    pub bind: Option<String>,
    /// Environment variable holding the token that state-changing requests must present.
    pub token_env: Option<String>,
    /// File holding that token (first line). Without a token, the console is read-only.
    pub token_file: Option<String>,
    /// Connections served at once (SSE streams included); more wait in the listen backlog
    /// without using a file descriptor. Default 64, 1–4096.
    pub max_connections: Option<usize>,
    /// Host names, besides `localhost`, IP literals and the bind address, that requests may
    /// name in `Host` (e.g. a reverse proxy's name). Anything else gets 421 (DNS rebinding).
    /// Default none.
    pub allowed_hosts: Option<Vec<String>>,
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
    /// Analyse one frame at most this often; also the longest a camera goes unanalysed while
    /// the gateway has capacity. Default 2000 (1000 with fall-watch zones).
    pub analysis_interval_ms: Option<u64>,
    /// Cameras with fall-watch zones: the interval while people are in one of them (and 10 s
    /// after). At most 1000. Default: the smaller of `analysis_interval_ms` and 1000.
    pub active_interval_ms: Option<u64>,
    /// `keyframes` (default: decode only the keyframes the interval needs) or `every_frame`
    /// (a dedicated decoder; for cameras sampled faster than their GOP).
    pub decode: Option<String>,
    /// The camera's main stream, when `url` is its substream: an opened incident's snapshot
    /// is then taken from a main-stream keyframe too (same credentials). Default none.
    pub snapshot_url: Option<String>,
    /// `false` keeps the camera in the file but does not connect. Default true.
    pub enabled: Option<bool>,
    /// `low`, `normal` (default) or `high`: the order in which waiting due frames are served
    /// when the gateway is over capacity. Fall-watch cameras are served as `high` while people
    /// are in view of their zones, whatever this says.
    pub priority: Option<String>,
    /// This camera's change gating: the longest a frame may reuse the last inference's
    /// detections (see `[detector] gate_max_stale_ms`), 0 = off for this camera. Default: the
    /// `[detector]` value.
    pub gate_max_stale_ms: Option<u64>,
    /// Which detector model analyses this camera: `auto` (default: `[detector] wide_model`
    /// when the decoded frame is at least 1.6 : 1 wide and the camera has no fall-watch zone,
    /// else `[detector] model`), `square` (always `[detector] model`) or `wide` (always
    /// `[detector] wide_model`, which must then be set).
    pub detector_model: Option<String>,
    /// Zones drawn on this camera (`[[cameras.<id>.zones]]`). Default none: detections only.
    #[serde(default)]
    pub zones: Vec<RawZone>,
}

/// `[[cameras.<id>.zones]]`: a polygon and the rule it carries. Keys that do not apply to the
/// zone's kind are refused. Defaults are per kind (see `config/examples/`).
#[derive(Debug, Default, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawZone {
    /// Unique within the camera: `[A-Za-z0-9_-]{1,64}`. Required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// `no_parking`, `bin_area`, `fall_watch` or `mask`. Required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Points `[x, y]` normalised 0–1 (origin top-left), at least 3. Required.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub polygon: Option<Vec<[f32; 2]>>,
    /// Detector classes considered. Default `["bicycle", "motorcycle"]` (no_parking),
    /// `["person"]` (fall_watch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classes: Option<Vec<String>>,
    /// Minimum detection score in this zone. Default 0.4.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_score: Option<f32>,
    /// Minimum box area, share of the frame. Default 0.0003 (no_parking), 0.001 (fall_watch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub min_area: Option<f32>,
    /// Maximum box area, share of the frame. Default 0.25 (no_parking), 0.6 (fall_watch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_area: Option<f32>,
    /// Clear an incident once its problem has been absent this long. Default 120000
    /// (no_parking), 600000 (bin_area), 30000 (fall_watch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clear_after_ms: Option<i64>,
    /// After a clear, no new incident in this zone for this long. Default 600000 (no_parking),
    /// 1800000 (bin_area), 300000 (fall_watch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cooldown_ms: Option<i64>,
    /// Re-send an open incident at least this often. Default 1800000 (no_parking), 3600000
    /// (bin_area), 300000 (fall_watch).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub heartbeat_ms: Option<i64>,
    /// Send a changed count (`updated`) at most this often, and only once the new count held
    /// for 3 analyses in a row (flicker and passing riders are not news). Default 60000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub update_min_interval_ms: Option<i64>,
    /// no_parking: a bike stationary this long raises. Default 300000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dwell_ms: Option<i64>,
    /// no_parking: this many stationary bikes raise a pile-up. Default 5.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pile_up_count: Option<usize>,
    /// no_parking: how long the pile-up's bikes must be stationary. Default 60000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pile_up_dwell_ms: Option<i64>,
    /// bin_area: raise after reading "overflowing" this long. Default 600000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub raise_after_ms: Option<i64>,
    /// bin_area: changed share that reads "overflowing". Default 0.15: rubbish over a third
    /// of a street scene read 0.21, the same scene clean under ±8% flicker 0.00.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub overflow_share: Option<f32>,
    /// bin_area: changed share that reads "normal" again. Default 0.06.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub normal_share: Option<f32>,
    /// bin_area: clean reference image (from `gateway reference`), relative to the config
    /// file. Default: the first analysed frame is the reference.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// bin_area: an ONNX classifier manifest (relative to this config file) whose reading —
    /// the probability of its overflow classes on the zone's crop — replaces the reference
    /// difference. With it, overflow_share and normal_share default to 0.6 and 0.4.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub classifier: Option<String>,
    /// bin_area: where the reading comes from: "model" (the default without `reference` or
    /// `classifier`: P(overflowing) from the bin-state model on the zone's crop), "reference"
    /// (the reference difference; the default when `reference` is set) or "classifier".
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// bin_area with source "model": the bin-state model file (JSON, relative to this config
    /// file). Default: the generic `bin_state_default.json` beside the detector's manifest.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    /// fall_watch: a person seen to fall who stays down this long raises. Default 5000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub down_ms: Option<i64>,
    /// fall_watch: width ÷ height at or above which a person is lying. Default 1.0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lying_aspect: Option<f32>,
    /// fall_watch: height share of the upright height below which a person collapsed.
    /// Default 0.5.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub collapse_ratio: Option<f32>,
    /// fall_watch: a person vanishing while down counts as down this long. Default 30000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub vanish_hold_ms: Option<i64>,
    /// fall_watch: seen upright, then down, within this long is a fall. Default 3000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fall_window_ms: Option<i64>,
    /// fall_watch: a person down without a witnessed fall raises after this long. Default 120000.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unwitnessed_down_ms: Option<i64>,
    /// fall_watch: also detect on the frame rotated ±90°. Default false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rotated_pass: Option<bool>,
    /// fall_watch: pose second stage (MoveNet) on person crops that matter. Default false.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pose: Option<bool>,
}
