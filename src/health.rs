//! Health: each camera's connection state (with the reason when it is not online, and since
//! when) and its counters, shared by the stages that update them. State changes are also
//! broadcast, for logs, tests and (later) the status topic and console.
//!
//! Counters are atomics so the hot path never takes a lock to count.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use tokio::sync::broadcast;

use crate::config::CameraId;

/// A camera's connection state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CameraState {
    /// Configured, not yet tried.
    Starting,
    /// Connecting (or reconnecting).
    Connecting,
    /// Frames are flowing.
    Online,
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
            CameraState::Offline => "offline",
            CameraState::Stopped => "stopped",
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
    /// Due frames skipped because the decoder queue was full.
    pub skipped_decoder_busy: AtomicU64,
    /// Decoded frames skipped because the detector queue was full.
    pub skipped_detector_busy: AtomicU64,
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

    /// Counts a received frame.
    pub fn record_frame(&self, is_keyframe: bool, at: Instant) {
        self.counters.frames_received.fetch_add(1, Ordering::Relaxed);
        if is_keyframe {
            self.counters.keyframes_received.fetch_add(1, Ordering::Relaxed);
        }
        *self.last_frame.lock().unwrap() = Some(at);
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
                    changes: self.changes.clone(),
                })
            })
            .clone()
    }

    /// Every camera's health, by id.
    pub fn cameras(&self) -> Vec<Arc<CameraHealth>> {
        self.cameras.lock().unwrap().values().cloned().collect()
    }

    /// State changes from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<StateChange> {
        self.changes.subscribe()
    }
}
