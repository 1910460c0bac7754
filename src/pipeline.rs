//! The running gateway: wires ingest → decode → detect for every configured camera and hands
//! back the stream of analysed frames. Takes its world as arguments (config, shutdown token),
//! so tests start it with their own servers and stop it when they are done.

use std::sync::Arc;

use anyhow::Context;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::decode::DecodePool;
use crate::detect::{AnalysedFrame, DetectorPool, Model};
use crate::health::HealthRegistry;
use crate::ingest::supervise_camera;

/// Analysed frames waiting for the consumer (tracking and rules) before detector threads wait.
const ANALYSED_QUEUE: usize = 256;

/// A running pipeline.
pub struct Pipeline {
    /// Every camera's state and counters.
    pub health: Arc<HealthRegistry>,
    decode: DecodePool,
    detect: DetectorPool,
    cameras: JoinSet<()>,
    shutdown: CancellationToken,
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
        let detect = tokio::task::spawn_blocking(move || {
            DetectorPool::start(&detector_config, prepared_receiver, analysed_sender)
        })
        .await
        .context("detector start-up panicked")??;
        let manifest = &detect.model().manifest;
        let decode = DecodePool::start(
            config.decode.workers,
            config.decode.queue_capacity,
            (manifest.input_width, manifest.input_height),
            prepared_sender,
        );
        let health = Arc::new(HealthRegistry::default());
        let mut cameras = JoinSet::new();
        for camera in &config.cameras {
            let camera_health = health.camera(&camera.id);
            let sink = decode.sink_for(camera, camera_health.clone());
            cameras.spawn(supervise_camera(
                camera.clone(),
                config.ingest.clone(),
                camera_health,
                sink,
                shutdown.child_token(),
            ));
        }
        Ok((Pipeline { health, decode, detect, cameras, shutdown }, analysed_receiver))
    }

    /// The model the detector runs.
    pub fn model(&self) -> &Arc<Model> {
        self.detect.model()
    }

    /// Keyframes waiting for a decoder.
    pub fn decode_queue_depth(&self) -> usize {
        self.decode.queue_depth()
    }

    /// Stops every camera and waits for the stages to drain. The analysed-frame receiver must
    /// be dropped (or still drained) by the caller, or the detector threads wait on it.
    pub async fn stop(mut self) {
        self.shutdown.cancel();
        while self.cameras.join_next().await.is_some() {}
        let Pipeline { decode, detect, .. } = self;
        tokio::task::spawn_blocking(move || {
            decode.shutdown();
            detect.join();
        })
        .await
        .expect("pipeline shutdown panicked");
    }
}
