//! The HTTP side of the gateway, for the people who use it every day: the operator console
//! (live incidents, answers, camera health), the zone editor, the JSON API and the live event
//! stream behind them, `/healthz` and Prometheus `/metrics`. Design and endpoint table:
//! `docs/design/console.md`.
//!
//! ```text
//! run loop ──frames, config, counters──▶ Shared ◀── handlers (read)
//! outbox  ──incident changes──────────▶ /api/events (SSE)
//! handlers ──answers──▶ outbox.answer() ──▶ delivery wakes, echo published
//! handlers ──zone edits──▶ ConfigRequest ──▶ run loop (validates, writes, applies)
//! ```
//!
//! Architecture invariant: the console never changes the config or the engines itself. Zone
//! edits go to the run loop, the one writer of the config file, which validates them with the
//! same code as `check-config` and applies them to that camera only.
//!
//! Authentication (`auth`): every request must name an allowed `Host` (DNS rebinding);
//! camera and incident data need the token from `[console] token_file`/`token_env`, as
//! `Authorization: Bearer <token>` or as the session cookie `POST /api/session` sets;
//! state-changing requests need the header. The page shells, their assets and `/healthz`
//! are open; `/metrics` is open to loopback peers. Connection, time and size limits:
//! [`server`].

pub mod access_log;
mod api;
mod auth;
pub mod bins;
pub mod metrics;
pub mod server;
pub mod zones_edit;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::{broadcast, mpsc, oneshot, Notify};
use tokio_util::sync::CancellationToken;

use crate::config::raw::RawZone;
use crate::config::{CameraId, Config, ConfigProblems};
use crate::deliver::DeliveryStats;
use crate::health::HealthRegistry;
use crate::outbox::Outbox;

/// The run loop is considered stalled (503 on `/healthz`) when it has not turned this long.
pub const STALLED_AFTER: Duration = Duration::from_secs(30);

/// A detection drawn in the zone editor.
#[derive(Debug, Clone, Serialize)]
pub struct DetectionView {
    /// Class name.
    pub class: String,
    /// Score, 0–1 (f64: JSON values built with `json!` widen f32 into long decimals).
    pub score: f64,
    /// `[x1, y1, x2, y2]`, normalised 0–1.
    pub box_norm: [f64; 4],
}

/// A camera's latest analysed frame and what the detector saw in it.
#[derive(Debug, Clone)]
pub struct LatestFrame {
    /// The picture the detector saw (scaled).
    pub picture: Arc<image::RgbImage>,
    /// Its detections.
    pub detections: Vec<DetectionView>,
    /// When its access unit arrived, wall-clock ms.
    pub t_ms: i64,
}

/// A change to the config asked of the run loop.
#[derive(Debug)]
pub enum ConfigRequest {
    /// Re-read the config file (SIGHUP, or the file changed).
    Reload {
        /// What asked for it, for the log.
        trigger: &'static str,
    },
    /// Replace one camera's zones, validate the whole file, write it and apply it.
    EditZones {
        /// The camera.
        camera: CameraId,
        /// Its new zones, as they will be written.
        zones: Vec<RawZone>,
        /// The outcome.
        reply: oneshot::Sender<Result<ZonesSaved, EditRefused>>,
    },
    /// Read a bin zone's model again (ops trained it, or forgot its learned model) and swap
    /// it into the running zone; the config is not touched.
    ReloadZoneModel {
        /// The camera.
        camera: CameraId,
        /// The zone.
        zone: String,
        /// The source the zone reads now (`learned`, `generic`, …), or why not.
        reply: oneshot::Sender<Result<&'static str, String>>,
    },
}

/// A zone edit that was saved and applied.
#[derive(Debug, Clone, Serialize)]
pub struct ZonesSaved {
    /// The previous config file, kept beside it.
    pub backup: PathBuf,
    /// Zones the camera now has.
    pub zones: usize,
}

/// Why a zone edit was refused; nothing was changed.
#[derive(Debug, Clone)]
pub enum EditRefused {
    /// No such camera in the config file.
    UnknownCamera,
    /// The edited config does not validate.
    Invalid(ConfigProblems),
    /// The file could not be read or written.
    Io(String),
}

/// Queue depths sampled by the run loop.
#[derive(Debug, Default)]
pub struct QueueDepths {
    /// Prepared frames waiting for a detector session.
    pub detector: AtomicUsize,
    /// Analysed frames waiting for the run loop.
    pub analysed: AtomicUsize,
}

/// What the console reads and the run loop keeps up to date.
pub struct Shared {
    /// Wall-clock time for what the console records (operators' answers, bin examples): the
    /// world's clock, as the run loop's and delivery's.
    pub clock: Arc<dyn crate::deliver::Clock>,
    /// Cameras' states and counters.
    pub health: Arc<HealthRegistry>,
    /// Incidents and their follow-up; answers go here.
    pub outbox: Arc<Outbox>,
    /// Delivery counters and the publisher's wake-up, when `[mqtt]` is configured.
    pub delivery: Option<(Arc<DeliveryStats>, Arc<Notify>)>,
    /// The config in force.
    pub config: RwLock<Arc<Config>>,
    /// The config file (what the zone editor edits).
    pub config_path: PathBuf,
    /// Latest analysed frame per camera.
    pub frames: Mutex<HashMap<CameraId, LatestFrame>>,
    /// Incident events committed, by (kind, event).
    pub incident_events: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
    /// Config reloads, by result (`applied`, `rejected`).
    pub reloads: Mutex<BTreeMap<&'static str, u64>>,
    /// Queue depths.
    pub queues: QueueDepths,
    /// The scheduler's figures, sampled by the run loop.
    pub schedule: Mutex<metrics::ScheduleView>,
    /// Frame arrival → detections in the run loop.
    pub analysis_latency: Mutex<crate::health::Summary>,
    /// Frame arrival → opened incident committed.
    pub incident_latency: Mutex<crate::health::Summary>,
    /// The run loop's time on one analysed frame (engine, the job handed to the recorder):
    /// how long it keeps the runtime's loop from everything else (issue 12's recorder measure).
    pub frame_handling: Mutex<crate::health::Summary>,
    /// When the run loop last turned.
    pub heartbeat: Mutex<Instant>,
    /// Cameras whose zones were just applied (for the live stream).
    pub zones_applied: broadcast::Sender<CameraId>,
    /// Where zone edits and reloads go.
    pub requests: mpsc::Sender<ConfigRequest>,
    /// Requests refused for want of a valid token.
    pub refused: AtomicU64,
    /// Requests refused for naming a host not allowed (DNS rebinding).
    pub refused_host: AtomicU64,
    /// Live streams refused because [`server::MAX_LIVE_STREAMS`] were open.
    pub refused_live_streams: AtomicU64,
    /// Slots for live streams.
    pub live_streams: Arc<tokio::sync::Semaphore>,
    /// The HTTP server's counters.
    pub http: Arc<server::HttpCounters>,
    /// Evidence retention's counters.
    pub evidence: crate::evidence::retention::RetentionStats,
    /// Whether incident events reach the outbox (degraded while a full disk refuses them).
    pub commits: Arc<crate::outbox::CommitHealth>,
    /// The recorder thread's queue and time per job (issue 12).
    pub recorder: Arc<crate::recorder::RecorderStats>,
    /// Reads of incidents' snapshots and clips (issue 16).
    pub access_log: access_log::AccessLog,
    /// The clip recorder (rings, captures, writer), set once at start (issue 16).
    pub clips: std::sync::OnceLock<Arc<crate::evidence::clips::ClipRecorder>>,
    /// The detector's models (names for `/metrics` and the camera list), set once at start.
    pub models: std::sync::OnceLock<crate::detect::Models>,
    /// Last time a refusal was logged (refusals are logged once per interval).
    pub(crate) last_refusal_log_ms: std::sync::atomic::AtomicI64,
    /// Ends the live streams when the gateway stops (graceful shutdown waits for them).
    pub shutdown: CancellationToken,
    /// Bin areas taught from the console: readings, held crops, the training slot.
    pub bins: bins::BinLearning,
}

impl Shared {
    /// Shared state for a gateway running `config`.
    // Each argument is a separate handle the app owns and the console keeps (no struct of
    // them exists anywhere else to pass instead).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        config: Arc<Config>,
        config_path: PathBuf,
        health: Arc<HealthRegistry>,
        outbox: Arc<Outbox>,
        delivery: Option<(Arc<DeliveryStats>, Arc<Notify>)>,
        requests: mpsc::Sender<ConfigRequest>,
        shutdown: CancellationToken,
        clock: Arc<dyn crate::deliver::Clock>,
    ) -> Self {
        let access_log = access_log::AccessLog::new(&config.state_dir);
        Shared {
            clock,
            commits: outbox.commit_health().clone(),
            health,
            outbox,
            delivery,
            config: RwLock::new(config),
            config_path,
            frames: Mutex::default(),
            incident_events: Mutex::default(),
            reloads: Mutex::default(),
            queues: QueueDepths::default(),
            schedule: Mutex::default(),
            analysis_latency: Mutex::default(),
            incident_latency: Mutex::default(),
            frame_handling: Mutex::default(),
            heartbeat: Mutex::new(Instant::now()),
            zones_applied: broadcast::channel(64).0,
            requests,
            refused: AtomicU64::new(0),
            refused_host: AtomicU64::new(0),
            refused_live_streams: AtomicU64::new(0),
            live_streams: Arc::new(tokio::sync::Semaphore::new(server::MAX_LIVE_STREAMS)),
            http: Arc::default(),
            evidence: Default::default(),
            recorder: Arc::default(),
            clips: std::sync::OnceLock::new(),
            models: std::sync::OnceLock::new(),
            access_log,
            last_refusal_log_ms: std::sync::atomic::AtomicI64::new(0),
            shutdown,
            bins: bins::BinLearning::default(),
        }
    }

    /// The config in force.
    pub fn config(&self) -> Arc<Config> {
        self.config.read().unwrap().clone()
    }

    /// Records that the run loop turned.
    pub fn beat(&self) {
        *self.heartbeat.lock().unwrap() = Instant::now();
    }

    /// Counts a committed incident event.
    pub fn count_incident_event(&self, kind: &'static str, event: &'static str) {
        *self.incident_events.lock().unwrap().entry((kind, event)).or_default() += 1;
    }

    /// Counts a config reload.
    pub fn count_reload(&self, result: &'static str) {
        *self.reloads.lock().unwrap().entry(result).or_default() += 1;
    }

    /// Keeps a camera's latest analysed frame.
    pub fn keep_frame(&self, camera: &CameraId, frame: LatestFrame) {
        self.frames.lock().unwrap().insert(camera.clone(), frame);
    }

    /// How long ago the run loop last turned.
    pub fn since_heartbeat(&self) -> Duration {
        self.heartbeat.lock().unwrap().elapsed()
    }

    fn wake_delivery(&self) {
        if let Some((_, wake)) = &self.delivery {
            wake.notify_one();
        }
    }

    fn mqtt_connected(&self) -> Option<bool> {
        self.delivery.as_ref().map(|(stats, _)| stats.connected.load(Ordering::Relaxed))
    }
}

/// Now, wall-clock ms: when a request or a refusal happened (the access log's and the
/// server's stamps; what goes into the outbox or a zone's store uses [`Shared::clock`]).
// An edge: the HTTP server stamps requests as they arrive, before any handler has `Shared`.
#[allow(clippy::disallowed_methods)]
pub(crate) fn wall_now_ms() -> i64 {
    epoch_ms(SystemTime::now())
}

/// Wall-clock ms of a `SystemTime`.
pub(crate) fn epoch_ms(time: SystemTime) -> i64 {
    time.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// Serves the console on `listener` until `shutdown`, within the limits of [`server`]; returns
/// at most [`server::SHUTDOWN_GRACE`] (plus a second) after `shutdown`, whatever clients do.
pub async fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>, shutdown: CancellationToken) {
    let max_connections = shared.config().console.as_ref().map_or(64, |console| console.max_connections);
    let counters = shared.http.clone();
    let app = api::router(shared);
    server::serve(listener, app, server::Limits::new(max_connections), counters, shutdown).await;
}
