//! The running gateway: wires ingest → decode → detect for every configured camera and hands
//! back the stream of analysed frames. Takes its world as arguments (config, shutdown token),
//! so tests start it with their own servers and stop it when they are done.

use std::collections::HashMap;
use std::sync::Arc;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::{CameraConfig, CameraId, Config, IngestConfig};
use crate::decode::DecodePool;
use crate::detect::gates::Gates;
use crate::detect::{AnalysedFrame, DetectorPool, Models};
use crate::evidence::clips::ClipRecorder;
use crate::health::HealthRegistry;
use crate::ingest::supervise_camera;

/// Analysed frames waiting for the consumer (tracking and rules) before detector threads wait.
const ANALYSED_QUEUE: usize = 256;

/// A running pipeline.
pub struct Pipeline {
    /// Every camera's state and counters.
    pub health: Arc<HealthRegistry>,
    /// Packet rings and clips of the cameras that record them (issue 16).
    pub clips: Arc<ClipRecorder>,
    decode: DecodePool,
    detect: DetectorPool,
    /// Every gated camera's change gate, in front of the detector sessions.
    gates: Arc<Gates>,
    cameras: HashMap<CameraId, CameraTask>,
    ingest: IngestConfig,
    shutdown: CancellationToken,
}

/// One camera's supervised ingest task.
struct CameraTask {
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Pipeline {
    /// Loads the detector, starts the decoder pool and one supervised task per camera.
    /// Fails only if the detector cannot start; cameras that fail are retried forever.
    pub async fn start(
        config: &Config,
        shutdown: CancellationToken,
    ) -> anyhow::Result<(Self, mpsc::Receiver<AnalysedFrame>)> {
        let (prepared_sender, prepared_receiver) = crossbeam_channel::bounded(config.detector.queue_capacity);
        let (analysed_sender, analysed_receiver) = mpsc::channel(ANALYSED_QUEUE);
        let detector_config = config.detector.clone();
        let gates = Arc::new(Gates::default());
        let detector_gates = gates.clone();
        let detect = tokio::task::spawn_blocking(move || {
            let models = Models::load(&detector_config)?;
            DetectorPool::start(&detector_config, &models, prepared_receiver, analysed_sender, detector_gates)
        })
        .await
        .context("detector start-up panicked")??;
        let decode = DecodePool::start(config.decode.workers, detect.models().input_sizes(), prepared_sender);
        let health = Arc::new(HealthRegistry::default());
        let clips = ClipRecorder::start(config.evidence.clone(), &config.state_dir);
        let mut pipeline = Pipeline {
            health,
            clips,
            decode,
            detect,
            gates,
            cameras: HashMap::new(),
            ingest: config.ingest.clone(),
            shutdown,
        };
        for camera in &config.cameras {
            pipeline.add_camera(camera).await;
        }
        Ok((pipeline, analysed_receiver))
    }

    /// Starts a camera's supervised ingest task. A camera already running is stopped first
    /// (and waited for, so its last state never overwrites the new task's).
    pub async fn add_camera(&mut self, camera: &CameraConfig) {
        if let Some(previous) = self.cameras.remove(&camera.id) {
            previous.stop.cancel();
            let _ = previous.task.await;
        }
        self.gates.configure(camera);
        let camera_health = self.health.camera(&camera.id);
        let sink = self.decode.sink_for(camera, camera_health.clone());
        // Cameras with clip-recording zones keep their packets in a ring on the way.
        let sink = self.clips.tap(camera, sink);
        let stop = self.shutdown.child_token();
        let task =
            tokio::spawn(supervise_camera(camera.clone(), self.ingest.clone(), camera_health, sink, stop.clone()));
        self.cameras.insert(camera.id.clone(), CameraTask { stop, task });
    }

    /// Stops a camera's ingest task and waits for it; the other cameras are not touched.
    pub async fn remove_camera(&mut self, id: &CameraId) {
        if let Some(camera) = self.cameras.remove(id) {
            camera.stop.cancel();
            let _ = camera.task.await;
        }
        self.gates.remove(id);
        self.health.remove(id);
    }

    /// Applies a running camera's new zones (or gating) to its change gate; the stream is not
    /// touched.
    pub fn rezone_camera(&self, camera: &CameraConfig) {
        self.gates.configure(camera);
    }

    /// Ids of the cameras running.
    pub fn camera_ids(&self) -> Vec<CameraId> {
        self.cameras.keys().cloned().collect()
    }

    /// The models the detector runs.
    pub fn models(&self) -> &Models {
        self.detect.models()
    }

    /// The frame scheduler: who is analysed next, people in view, figures.
    pub fn scheduler(&self) -> &Arc<crate::decode::FrameScheduler> {
        self.decode.scheduler()
    }

    /// Prepared frames waiting for a detector session.
    pub fn detector_queue_depth(&self) -> usize {
        self.decode.detector_queue_depth()
    }

    /// Stops every camera and waits for the stages to drain. The analysed-frame receiver must
    /// be dropped (or still drained) by the caller, or the detector threads wait on it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        for (_, camera) in self.cameras.drain() {
            let _ = camera.task.await;
        }
        let Pipeline { decode, detect, .. } = self;
        tokio::task::spawn_blocking(move || {
            decode.shutdown();
            detect.join();
        })
        .await
        .expect("pipeline shutdown panicked");
    }
}
