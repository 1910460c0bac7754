//! The change gate's shell in front of the detector sessions: one [`Gate`] per camera with
//! gating on, shared by the sessions behind one lock (held for a decision or a record, never
//! for the signature or an inference). Time is the frame's arrival, in ms since the registry
//! was made. The pipeline keeps it in step with the config (cameras added, re-zoned, removed).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use crate::config::{CameraConfig, CameraId};
use crate::gate::{Decision, Gate, InferReason, Signature};
use crate::health::CameraHealth;

use super::Detection;

/// What the gate says about a frame.
pub enum Check {
    /// Nothing changed: these detections stand for the frame.
    Reuse(Vec<Detection>),
    /// Run the model, then [`Gates::record`] the result with this signature.
    Infer(Signature),
    /// The camera has gating off: run the model.
    Ungated,
}

/// Every gated camera's gate.
pub struct Gates {
    cameras: Mutex<HashMap<CameraId, Gate>>,
    epoch: Instant,
}

impl Default for Gates {
    fn default() -> Self {
        Gates { cameras: Mutex::new(HashMap::new()), epoch: Instant::now() }
    }
}

impl Gates {
    /// The gates (plain data: usable after a panic elsewhere, as the scheduler's state is).
    fn lock(&self) -> MutexGuard<'_, HashMap<CameraId, Gate>> {
        self.cameras.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ms(&self, at: Instant) -> i64 {
        at.saturating_duration_since(self.epoch).as_millis() as i64
    }

    /// Sets a camera's gate from its config: made, reconfigured (zones changed: its reference
    /// is dropped) or removed (gating off).
    pub fn configure(&self, camera: &CameraConfig) {
        let mut cameras = self.lock();
        match camera.gate_max_stale {
            None => {
                cameras.remove(&camera.id);
            }
            Some(max_stale) => {
                let max_stale_ms = max_stale.as_millis() as i64;
                cameras
                    .entry(camera.id.clone())
                    .and_modify(|gate| gate.reconfigure(&camera.zones, max_stale_ms))
                    .or_insert_with(|| Gate::new(&camera.zones, max_stale_ms));
            }
        }
    }

    /// Forgets a camera.
    pub fn remove(&self, camera: &CameraId) {
        self.lock().remove(camera);
    }

    /// The gate's call on a frame that arrived at `at` (counted in the camera's counters);
    /// `asked`: the frame must be inferred (the rotated pass was asked for on it).
    pub fn check(
        &self,
        camera: &CameraHealth,
        at: Instant,
        picture: &image::RgbImage,
        frame: (u32, u32),
        asked: bool,
    ) -> Check {
        let started = Instant::now();
        if !self.lock().contains_key(&camera.id) {
            camera.counters.inferences_run[InferReason::ALL.len()].fetch_add(1, Ordering::Relaxed);
            return Check::Ungated;
        }
        let signature = Signature::of_rgb(picture);
        let now_ms = self.ms(at);
        let check = match self.lock().get(&camera.id).map(|gate| gate.decide(now_ms, frame, &signature, asked)) {
            Some(Decision::Reuse(detections)) => {
                camera.counters.inferences_reused.fetch_add(1, Ordering::Relaxed);
                Check::Reuse(detections.to_vec())
            }
            Some(Decision::Infer(reason)) => {
                let index = InferReason::ALL.iter().position(|r| *r == reason).unwrap_or_default();
                camera.counters.inferences_run[index].fetch_add(1, Ordering::Relaxed);
                Check::Infer(signature)
            }
            // Removed meanwhile (a reload turned gating off).
            None => {
                camera.counters.inferences_run[InferReason::ALL.len()].fetch_add(1, Ordering::Relaxed);
                Check::Ungated
            }
        };
        camera.counters.gate_us_total.fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
        check
    }

    /// Records an inferred frame as the camera's reference.
    pub fn record(
        &self,
        camera: &CameraId,
        at: Instant,
        signature: Signature,
        detections: &[Detection],
        frame: (u32, u32),
    ) {
        let now_ms = self.ms(at);
        if let Some(gate) = self.lock().get_mut(camera) {
            gate.record(now_ms, signature, detections.to_vec(), frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn camera(gate_max_stale_ms: Option<u64>) -> CameraConfig {
        let text = "[cameras.gate-3]\nurl = \"rtsp://192.0.2.1/s\"\n";
        let mut camera = crate::config::parse(text, std::path::Path::new("/")).unwrap().cameras.remove(0);
        camera.gate_max_stale = gate_max_stale_ms.map(Duration::from_millis);
        camera
    }

    #[test]
    fn cameras_are_gated_as_configured_and_counted() {
        let gates = Gates::default();
        let registry = crate::health::HealthRegistry::default();
        let health = registry.camera(&CameraId::try_new("gate-3").unwrap());
        let picture = image::RgbImage::from_pixel(64, 36, image::Rgb([90, 90, 90]));
        let frame = (640, 360);
        let at = Instant::now();
        let run = |reason: usize| health.counters.inferences_run[reason].load(Ordering::Relaxed);
        // Not configured (or gating off): every frame runs the model.
        assert!(matches!(gates.check(&health, at, &picture, frame, false), Check::Ungated));
        gates.configure(&camera(Some(60_000)));
        for _ in 0..2 {
            let Check::Infer(signature) = gates.check(&health, at, &picture, frame, false) else {
                panic!("expected Infer")
            };
            gates.record(&health.id, at, signature, &[], frame);
        }
        assert!(matches!(gates.check(&health, at, &picture, frame, false), Check::Reuse(d) if d.is_empty()));
        assert_eq!((run(0), run(1), run(InferReason::ALL.len())), (1, 1, 1), "first, unsettled, ungated");
        assert_eq!(health.counters.inferences_reused.load(Ordering::Relaxed), 1);
        gates.configure(&camera(None));
        assert!(matches!(gates.check(&health, at, &picture, frame, false), Check::Ungated));
        assert_eq!(run(InferReason::ALL.len()), 2);
    }
}
