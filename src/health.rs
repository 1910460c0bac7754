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
    /// Connecting (or reconnecting).
    Connecting,
    /// Frames are flowing.
    Online,
    /// Frames are flowing but some are skipped (the reason says which stage was busy);
    /// back to online once none has been skipped for [`DEGRADED_HOLD`].
    Degraded,
    /// The last attempt failed; waiting to retry. The reason says why.
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
    /// Frames run through the detector.
    pub frames_analysed: AtomicU64,
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
    /// Arrival-time gap between the two latest analysed frames, ms.
    pub revisit_last_ms: AtomicU64,
    /// The longest such gap since start, ms.
    pub revisit_max_ms: AtomicU64,
    /// The priority the scheduler served the camera's latest due frame with (0 low, 1 normal,
    /// 2 high).
    pub priority: AtomicU64,
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
    changes: broadcast::Sender<StateChange>,
}

impl CameraHealth {
    /// Current state.
    pub fn state(&self) -> CameraState {
        self.record.lock().unwrap().state
    }

    /// Current state, the reason and since when.
    pub fn snapshot(&self) -> (CameraState, Option<String>, SystemTime) {
        let record = self.record.lock().unwrap();
        (record.state, record.reason.clone(), record.since)
    }

    /// Moves to `state`; broadcasts and stamps the time only on a real change.
    pub fn set_state(&self, state: CameraState, reason: Option<String>) {
        let mut record = self.record.lock().unwrap();
        if record.state == state && record.reason == reason {
            return;
        }
        record.state = state;
        record.reason = reason.clone();
        record.since = SystemTime::now();
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
                    record: Mutex::new(StateRecord {
                        state: CameraState::Starting,
                        reason: None,
                        since: SystemTime::now(),
                    }),
                    last_frame: Mutex::new(None),
                    last_skip: Mutex::new(None),
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
