//! Health: each camera's connection state (with the reason when it is not online, and since
//! when) and its counters, shared by the stages that update them. State changes are also
//! broadcast, for logs, tests and (later) the status topic and console.
//!
//! Counters are atomics so the hot path never takes a lock to count.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::broadcast;

use crate::config::CameraId;
use crate::logging::{LogLimiter, LogVerdict};

/// A duration's count, sum and maxima, seconds (latencies, revisits). `recent_max` covers the current and the
/// previous period of the run loop's statistics (10 s each), so a scrape every few seconds
/// sees every peak.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    /// Observations.
    pub count: u64,
    /// Their sum, seconds.
    pub sum: f64,
    /// The largest since start, seconds.
    pub max: f64,
    /// The largest in the current and the previous period, seconds.
    recent: [f64; 2],
}

impl Summary {
    /// Adds one observation.
    pub fn record(&mut self, seconds: f64) {
        self.count += 1;
        self.sum += seconds;
        self.max = self.max.max(seconds);
        self.recent[0] = self.recent[0].max(seconds);
    }

    /// Starts a new period.
    pub fn rotate(&mut self) {
        self.recent = [0.0, self.recent[0]];
    }

    /// The largest in the current and the previous period, seconds.
    pub fn recent_max(&self) -> f64 {
        self.recent[0].max(self.recent[1])
    }
}

/// A camera's connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CameraState {
    /// Configured, not yet tried.
    Starting,
    /// Connecting for the first time (a retry after a failure stays [`CameraState::Offline`]).
    Connecting,
    /// Frames are flowing.
    Online,
    /// Frames are flowing but some are skipped (the reason says which stage was busy);
    /// back to online once none has been skipped for [`DEGRADED_HOLD`].
    Degraded,
    /// The last attempt failed; waiting to retry, or retrying. The reason says why.
    Offline,
    /// Shut down.
    Stopped,
}

impl CameraState {
    /// Lower-case name for logs and APIs.
    pub fn as_str(self) -> &'static str {
        match self {
            CameraState::Starting => "starting",
            CameraState::Connecting => "connecting",
            CameraState::Online => "online",
            CameraState::Degraded => "degraded",
            CameraState::Offline => "offline",
            CameraState::Stopped => "stopped",
        }
    }
}

/// How long a camera stays degraded after its last skipped frame.
pub const DEGRADED_HOLD: Duration = Duration::from_secs(30);

/// Why a frame due for analysis was not analysed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SkipReason {
    /// A due frame was replaced by a newer one of the same camera before the gateway had
    /// capacity to analyse it (see `schedule`).
    OverCapacity,
    /// Waiting for a keyframe after a lost frame (`every_frame` mode).
    AwaitingKeyframe,
}

impl SkipReason {
    /// Every reason, for metrics.
    pub const ALL: [SkipReason; 2] = [SkipReason::OverCapacity, SkipReason::AwaitingKeyframe];

    /// Label for metrics and status.
    pub fn as_str(self) -> &'static str {
        match self {
            SkipReason::OverCapacity => "over_capacity",
            SkipReason::AwaitingKeyframe => "awaiting_keyframe",
        }
    }
}

/// The most bytes a camera's reason may have, wherever it is shown (logs, the retained MQTT
/// status, the console API, SSE). A reason comes from the camera's error chain, which quotes
/// what the camera sent: a camera answering DESCRIBE with a 500 KB page made a 501 KB retained
/// status, over the broker's packet limit, and stopped all delivery (issue 11).
pub const REASON_MAX_BYTES: usize = 512;

/// Room kept at the end of a cut reason for the marker `… [+N bytes cut]`.
const CUT_MARKER_MAX_BYTES: usize = 40;

/// A reason as it may be shown: one line (control characters and bidirectional-text overrides
/// escaped as `\n`, `\u{1b}`…, so a camera cannot forge log lines or reorder a terminal) and at
/// most [`REASON_MAX_BYTES`], cut at a character boundary with a marker saying how much was cut.
/// Idempotent: a capped reason comes back unchanged. [`CameraHealth::set_state`] applies it, so
/// every reader of the state gets the capped text.
pub fn cap_reason(text: &str) -> String {
    let shown_len = |character: char| {
        if needs_escape(character) {
            character.escape_default().len()
        } else {
            character.len_utf8()
        }
    };
    let total: usize = text.chars().map(shown_len).sum();
    let budget = if total <= REASON_MAX_BYTES { REASON_MAX_BYTES } else { REASON_MAX_BYTES - CUT_MARKER_MAX_BYTES };
    let mut capped = String::with_capacity(total.min(REASON_MAX_BYTES));
    for (index, character) in text.char_indices() {
        if capped.len() + shown_len(character) > budget {
            let _ = std::fmt::Write::write_fmt(&mut capped, format_args!("… [+{} bytes cut]", text.len() - index));
            break;
        }
        if needs_escape(character) {
            capped.extend(character.escape_default());
        } else {
            capped.push(character);
        }
    }
    capped
}

/// Characters that must not reach a log line or a terminal raw.
fn needs_escape(character: char) -> bool {
    character.is_control() || matches!(character, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// What ended a camera's session, for `gateway_camera_errors_total{kind}` and for the log's
/// rate limit (one line per kind and interval).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CameraErrorKind {
    /// TCP connect failed (refused, unreachable, name not resolved).
    Connect,
    /// The camera refused our credentials (401).
    Auth,
    /// No such stream (404).
    NotFound,
    /// Connect or a response took longer than `ingest.connect_timeout_ms`.
    Timeout,
    /// A response broke a size limit of the bounded relay (`ingest::relay`) and the
    /// connection was cut.
    ResponseRefused,
    /// The camera's answers made no sense (bad SDP, no H.264/H.265 stream, RTSP errors).
    Protocol,
    /// The session delivered no video for `ingest.no_frame_timeout_ms`, or ended.
    NoVideo,
    /// The camera's task panicked (a bug); it is restarted like any failure.
    Panic,
    /// Anything else (footage file errors, …).
    Other,
}

impl CameraErrorKind {
    /// Every kind, for metrics.
    pub const ALL: [CameraErrorKind; 9] = [
        CameraErrorKind::Connect,
        CameraErrorKind::Auth,
        CameraErrorKind::NotFound,
        CameraErrorKind::Timeout,
        CameraErrorKind::ResponseRefused,
        CameraErrorKind::Protocol,
        CameraErrorKind::NoVideo,
        CameraErrorKind::Panic,
        CameraErrorKind::Other,
    ];

    /// Label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CameraErrorKind::Connect => "connect",
            CameraErrorKind::Auth => "auth",
            CameraErrorKind::NotFound => "not_found",
            CameraErrorKind::Timeout => "timeout",
            CameraErrorKind::ResponseRefused => "response_refused",
            CameraErrorKind::Protocol => "protocol",
            CameraErrorKind::NoVideo => "no_video",
            CameraErrorKind::Panic => "panic",
            CameraErrorKind::Other => "other",
        }
    }

    fn index(self) -> usize {
        CameraErrorKind::ALL.iter().position(|kind| *kind == self).expect("listed in ALL")
    }
}

/// A camera's repeating log lines (offline, streaming again, a decoder that will not open):
/// each kind at most once per this interval, with the count held back since.
pub const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// At most this many such lines per camera and [`LOG_INTERVAL`], whatever the kinds.
pub const LOG_MAX_LINES_PER_INTERVAL: u32 = 10;

/// A state change, as broadcast.
#[derive(Debug, Clone)]
pub struct StateChange {
    /// The camera.
    pub camera: CameraId,
    /// Its new state.
    pub state: CameraState,
    /// Why, when not online.
    pub reason: Option<String>,
}

#[derive(Debug, Clone)]
struct StateRecord {
    state: CameraState,
    reason: Option<String>,
    since: SystemTime,
}

/// Per-camera counters. Names follow the metrics they become.
#[derive(Debug, Default)]
pub struct CameraCounters {
    /// Access units received from the source.
    pub frames_received: AtomicU64,
    /// Keyframes among them.
    pub keyframes_received: AtomicU64,
    /// Frames decoded (keyframes on the pool, or every frame in `every_frame` mode).
    pub frames_decoded: AtomicU64,
    /// Frames analysed: run through the detector, or given the last inference's detections by
    /// the change gate.
    pub frames_analysed: AtomicU64,
    /// Analysed frames the model ran on, by why ([`crate::gate::InferReason::ALL`] order, then
    /// cameras without gating).
    pub inferences_run: [AtomicU64; crate::gate::InferReason::ALL.len() + 1],
    /// Analysed frames that reused the last inference's detections (nothing changed).
    pub inferences_reused: AtomicU64,
    /// Sum of the change gate's time (signature and decision), µs.
    pub gate_us_total: AtomicU64,
    /// Due frames replaced by newer ones before there was capacity to analyse them.
    pub skipped_over_capacity: AtomicU64,
    /// Frames dropped while waiting for a keyframe after a loss (`every_frame` mode).
    pub skipped_awaiting_keyframe: AtomicU64,
    /// Frames that failed to decode.
    pub decode_errors: AtomicU64,
    /// Sessions that ended in failure.
    pub reconnects: AtomicU64,
    /// Sum of decode+preprocess time, µs.
    pub decode_us_total: AtomicU64,
    /// Sum of inference+postprocess time, µs.
    pub inference_us_total: AtomicU64,
    /// Failed sessions by kind ([`CameraErrorKind::ALL`] order); see [`CameraHealth::errors`].
    pub errors: [AtomicU64; CameraErrorKind::ALL.len()],
    /// Log lines about this camera held back by the per-camera log rate limit.
    pub log_lines_suppressed: AtomicU64,
    /// Reasons cut to [`REASON_MAX_BYTES`] (or escaped) before being shown.
    pub reasons_capped: AtomicU64,
    /// Arrival-time gap between the two latest analysed frames, ms.
    pub revisit_last_ms: AtomicU64,
    /// The longest such gap since start, ms.
    pub revisit_max_ms: AtomicU64,
    /// The priority the scheduler served the camera's latest due frame with (0 low, 1 normal,
    /// 2 high).
    pub priority: AtomicU64,
    /// Analysed frames the detector's rotated pass (±90°) also ran on (fall-watch cameras).
    pub rotated_passes: AtomicU64,
    /// Model runs of those passes (one per packed input of turned crops, two for the whole
    /// picture).
    pub rotated_inferences: AtomicU64,
    /// Person crops the pose second stage ran on (fall-watch zones with `pose = true`).
    pub pose_crops: AtomicU64,
    /// Sum of their time (three turns each), µs.
    pub pose_us_total: AtomicU64,
    /// Not a counter: where the fall rule asked for the rotated pass on the camera's next
    /// frame, empty when it did not (set by the consumer after each frame, read when the next
    /// one is prepared).
    pub rotated_regions: std::sync::Mutex<Vec<crate::geometry::BoxNorm>>,
    /// Not a counter: the model the camera's latest prepared frame was made for (0: none yet,
    /// 1: square, 2: wide; see [`CameraCounters::model`]).
    pub model_variant: AtomicU64,
}

impl CameraCounters {
    /// Records the model the camera's latest prepared frame was made for.
    pub fn set_model(&self, variant: crate::config::ModelVariant) {
        self.model_variant.store(variant.index() as u64 + 1, std::sync::atomic::Ordering::Relaxed);
    }

    /// The model the camera's latest prepared frame was made for; `None` before its first
    /// decoded frame (the automatic choice needs the frame's size).
    pub fn model(&self) -> Option<crate::config::ModelVariant> {
        match self.model_variant.load(std::sync::atomic::Ordering::Relaxed) {
            1 => Some(crate::config::ModelVariant::Square),
            2 => Some(crate::config::ModelVariant::Wide),
            _ => None,
        }
    }
}

/// One camera's health.
#[derive(Debug)]
pub struct CameraHealth {
    /// The camera.
    pub id: CameraId,
    /// Its counters.
    pub counters: CameraCounters,
    record: Mutex<StateRecord>,
    last_frame: Mutex<Option<Instant>>,
    last_skip: Mutex<Option<Instant>>,
    log_limit: Mutex<LogLimiter<&'static str>>,
    changes: broadcast::Sender<StateChange>,
}

impl CameraHealth {
    /// Whether a line of `kind` about this camera may be written now: `Some(suppressed)`, the
    /// count held back since the previous line, or `None` (held back and counted in
    /// `log_lines_suppressed`). Every stage logs what a camera can make it repeat through
    /// this, so one camera writes at most [`LOG_MAX_LINES_PER_INTERVAL`] such lines a minute.
    pub fn allow_log(&self, kind: &'static str) -> Option<u64> {
        let verdict =
            self.log_limit.lock().unwrap_or_else(std::sync::PoisonError::into_inner).check(Instant::now(), kind);
        match verdict {
            LogVerdict::Log { suppressed } => Some(suppressed),
            LogVerdict::Suppress => {
                self.counters.log_lines_suppressed.fetch_add(1, Ordering::Relaxed);
                None
            }
        }
    }

    /// Current state.
    pub fn state(&self) -> CameraState {
        self.record.lock().unwrap().state
    }

    /// Current state, the reason and since when.
    pub fn snapshot(&self) -> (CameraState, Option<String>, SystemTime) {
        let record = self.record.lock().unwrap();
        (record.state, record.reason.clone(), record.since)
    }

    /// Moves to `state`; broadcasts and stamps the time only on a real change. The reason is
    /// capped here ([`cap_reason`]), the one door every reason goes through.
    pub fn set_state(&self, state: CameraState, reason: Option<String>) {
        let reason = reason.map(|reason| self.cap(reason));
        self.store_state(state, reason);
    }

    /// Offline, with the failure's reason; returns the reason as shown (capped), for the log.
    pub fn set_offline(&self, reason: String) -> String {
        let shown = self.cap(reason);
        self.store_state(CameraState::Offline, Some(shown.clone()));
        shown
    }

    fn cap(&self, reason: String) -> String {
        let capped = cap_reason(&reason);
        if capped != reason {
            self.counters.reasons_capped.fetch_add(1, Ordering::Relaxed);
        }
        capped
    }

    fn store_state(&self, state: CameraState, reason: Option<String>) {
        let mut record = self.record.lock().unwrap();
        if record.state == state && record.reason == reason {
            return;
        }
        record.state = state;
        record.reason = reason.clone();
        record.since = wall_now();
        drop(record);
        // No receivers is fine: nobody is watching.
        let _ = self.changes.send(StateChange { camera: self.id.clone(), state, reason });
    }

    /// Frames are flowing: online, unless already online or degraded (a degraded camera
    /// recovers only when it stops skipping, see [`CameraHealth::recover`]).
    pub fn mark_streaming(&self) {
        if !matches!(self.state(), CameraState::Online | CameraState::Degraded) {
            self.set_state(CameraState::Online, None);
        }
    }

    /// Counts a received frame.
    pub fn record_frame(&self, is_keyframe: bool, at: Instant) {
        self.counters.frames_received.fetch_add(1, Ordering::Relaxed);
        if is_keyframe {
            self.counters.keyframes_received.fetch_add(1, Ordering::Relaxed);
        }
        *self.last_frame.lock().unwrap() = Some(at);
    }

    /// Counts a frame that was due for analysis but skipped, and marks an online camera
    /// degraded with the reason.
    pub fn record_skip(&self, reason: SkipReason) {
        let counter = match reason {
            SkipReason::OverCapacity => &self.counters.skipped_over_capacity,
            SkipReason::AwaitingKeyframe => &self.counters.skipped_awaiting_keyframe,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        *self.last_skip.lock().unwrap() = Some(Instant::now());
        if matches!(self.state(), CameraState::Online | CameraState::Degraded) {
            let why = match reason {
                SkipReason::OverCapacity => "over capacity: due frames waited a whole interval",
                SkipReason::AwaitingKeyframe => "frames skipped: awaiting keyframe",
            };
            self.set_state(CameraState::Degraded, Some(why.to_string()));
        }
    }

    /// Frames skipped, whatever the reason.
    pub fn frames_skipped(&self) -> u64 {
        let c = &self.counters;
        c.skipped_over_capacity.load(Ordering::Relaxed) + c.skipped_awaiting_keyframe.load(Ordering::Relaxed)
    }

    /// Records the arrival-time gap between the camera's two latest analysed frames.
    pub fn record_revisit(&self, revisit_ms: u64) {
        self.counters.revisit_last_ms.store(revisit_ms, Ordering::Relaxed);
        self.counters.revisit_max_ms.fetch_max(revisit_ms, Ordering::Relaxed);
    }

    /// Back to online when degraded and nothing was skipped for `hold`.
    pub fn recover(&self, hold: Duration) {
        let quiet = self.last_skip.lock().unwrap().is_none_or(|last| last.elapsed() >= hold);
        if quiet && self.state() == CameraState::Degraded {
            self.set_state(CameraState::Online, None);
        }
    }

    /// Counts a failed session.
    pub fn record_reconnect(&self) {
        self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a failed session by what ended it.
    pub fn record_error(&self, kind: CameraErrorKind) {
        self.counters.errors[kind.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Failed sessions of one kind since start.
    pub fn errors(&self, kind: CameraErrorKind) -> u64 {
        self.counters.errors[kind.index()].load(Ordering::Relaxed)
    }

    /// Whether a frame arrived at or after `instant`.
    pub fn frames_since(&self, instant: Instant) -> bool {
        self.last_frame.lock().unwrap().is_some_and(|last| last >= instant)
    }

    /// Age of the newest frame.
    pub fn last_frame_age(&self) -> Option<std::time::Duration> {
        self.last_frame.lock().unwrap().map(|last| last.elapsed())
    }
}

/// All cameras' health.
#[derive(Debug)]
pub struct HealthRegistry {
    cameras: Mutex<BTreeMap<CameraId, Arc<CameraHealth>>>,
    changes: broadcast::Sender<StateChange>,
}

impl Default for HealthRegistry {
    fn default() -> Self {
        HealthRegistry { cameras: Mutex::default(), changes: broadcast::channel(1024).0 }
    }
}

impl HealthRegistry {
    /// The camera's health record, created in `Starting` state on first use.
    pub fn camera(&self, id: &CameraId) -> Arc<CameraHealth> {
        self.cameras
            .lock()
            .unwrap()
            .entry(id.clone())
            .or_insert_with(|| {
                Arc::new(CameraHealth {
                    id: id.clone(),
                    counters: CameraCounters::default(),
                    record: Mutex::new(StateRecord { state: CameraState::Starting, reason: None, since: wall_now() }),
                    last_frame: Mutex::new(None),
                    last_skip: Mutex::new(None),
                    log_limit: Mutex::new(LogLimiter::new(LOG_INTERVAL, LOG_MAX_LINES_PER_INTERVAL)),
                    changes: self.changes.clone(),
                })
            })
            .clone()
    }

    /// Every camera's health, by id.
    pub fn cameras(&self) -> Vec<Arc<CameraHealth>> {
        self.cameras.lock().unwrap().values().cloned().collect()
    }

    /// Stops tracking a camera removed from the config.
    pub fn remove(&self, id: &CameraId) {
        self.cameras.lock().unwrap().remove(id);
    }

    /// Moves degraded cameras back to online once they stopped skipping (see
    /// [`CameraHealth::recover`]); called periodically.
    pub fn recover_all(&self) {
        for camera in self.cameras() {
            camera.recover(DEGRADED_HOLD);
        }
    }

    /// State changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.changes.subscribe()
    }
}

/// When a camera's state changed, shown to operators (`since_ms`).
// An edge: state changes happen on ingest and decode threads, which have no injected clock.
#[allow(clippy::disallowed_methods)]
fn wall_now() -> SystemTime {
    SystemTime::now()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_one_line_and_capped_at_a_character_boundary() {
        // (input, expected output)
        let table: [(&str, &str); 5] = [
            ("connection refused", "connection refused"),
            ("line one\nforged line\r\n", "line one\\nforged line\\r\\n"),
            ("bell \u{7} escape \u{1b}[31m", "bell \\u{7} escape \\u{1b}[31m"),
            ("right-to-left \u{202e}override", "right-to-left \\u{202e}override"),
            ("", ""),
        ];
        for (input, expected) in table {
            assert_eq!(cap_reason(input), expected, "{input:?}");
        }
        // 2-, 3- and 4-byte characters: never cut inside one.
        for filler in ["é", "摄", "🎥"] {
            let long = filler.repeat(1000);
            let capped = cap_reason(&long);
            assert!(capped.len() <= REASON_MAX_BYTES, "{filler}: {} bytes", capped.len());
            assert!(capped.ends_with(" bytes cut]"), "{capped}");
            let kept = capped.split('…').next().unwrap();
            assert!(kept.chars().all(|c| c.to_string() == filler));
        }
    }

    #[test]
    fn a_500_kb_reason_is_shown_as_at_most_512_bytes_and_capping_is_idempotent() {
        let page = format!("DESCRIBE failed: {}", "<html>\r\n<body>not sdp</body>\r\n".repeat(20_000));
        assert!(page.len() > 500_000);
        let capped = cap_reason(&page);
        assert!(capped.len() <= REASON_MAX_BYTES, "{} bytes", capped.len());
        assert!(capped.starts_with("DESCRIBE failed: <html>\\r\\n"), "{capped}");
        assert!(capped.ends_with(" bytes cut]"), "{capped}");
        assert!(!capped.contains(['\n', '\r']));
        assert_eq!(cap_reason(&capped), capped);
        // Exactly at the limit: kept whole.
        let full = "x".repeat(REASON_MAX_BYTES);
        assert_eq!(cap_reason(&full), full);
        // One escaped character over: cut.
        let over = format!("{}\n", "x".repeat(REASON_MAX_BYTES - 1));
        assert!(cap_reason(&over).len() <= REASON_MAX_BYTES);
    }

    #[test]
    fn every_reader_of_the_state_gets_the_capped_reason() {
        let registry = HealthRegistry::default();
        let mut changes = registry.subscribe();
        let camera = registry.camera(&CameraId::try_new("gate-1").unwrap());
        camera.set_state(CameraState::Offline, Some("x\n".repeat(300_000)));
        let (_, reason, _) = camera.snapshot();
        assert!(reason.as_ref().unwrap().len() <= REASON_MAX_BYTES);
        let change = changes.try_recv().unwrap();
        assert_eq!(change.reason, reason);
        assert_eq!(camera.counters.reasons_capped.load(Ordering::Relaxed), 1);
        camera.record_error(CameraErrorKind::ResponseRefused);
        assert_eq!(camera.errors(CameraErrorKind::ResponseRefused), 1);
        assert_eq!(camera.errors(CameraErrorKind::Connect), 0);
        // The camera's log limit: a repeat within the interval is held back and counted.
        assert_eq!(camera.allow_log("connect"), Some(0));
        assert_eq!(camera.allow_log("connect"), None);
        assert_eq!(camera.counters.log_lines_suppressed.load(Ordering::Relaxed), 1);
    }
}
