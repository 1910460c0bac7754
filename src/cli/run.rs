//! `gateway run --config FILE`: the service. Validates the config before anything starts
//! (exit 64 on problems), then runs the pipeline until SIGINT/SIGTERM (or `--run-for-secs`),
//! logging detections per analysed frame and a per-camera summary every `STATS_EVERY`.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::{load_and_check, print_problems, EXIT_CONFIG};
use crate::detect::AnalysedFrame;
use crate::pipeline::Pipeline;

/// How often the per-camera summary is logged.
const STATS_EVERY: Duration = Duration::from_secs(10);

/// Runs the subcommand.
pub async fn main(config_path: &Path, run_for: Option<Duration>) -> i32 {
    // Validate everything (model included) before binding anything.
    let config = match load_and_check(config_path) {
        Ok((config, _checked_detector)) => config,
        Err(problems) => {
            print_problems(config_path, &problems);
            return EXIT_CONFIG;
        }
    };
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone());
    if let Some(run_for) = run_for {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            tokio::time::sleep(run_for).await;
            info!(seconds = run_for.as_secs(), "--run-for-secs elapsed, stopping");
            shutdown.cancel();
        });
    }
    let (pipeline, mut analysed) = match Pipeline::start(&config, shutdown.clone()).await {
        Ok(started) => started,
        Err(err) => {
            error!(error = format!("{err:#}"), "cannot start the pipeline");
            return 1;
        }
    };
    let model = pipeline.model().clone();
    info!(cameras = config.cameras.len(), model = %model.manifest.name, "gateway running");
    let mut stats = tokio::time::interval(STATS_EVERY);
    stats.tick().await;
    loop {
        tokio::select! {
            frame = analysed.recv() => match frame {
                Some(frame) => log_frame(&frame, &model),
                None => break,
            },
            _ = stats.tick() => log_stats(&pipeline),
            () = shutdown.cancelled() => break,
        }
    }
    drop(analysed);
    log_stats(&pipeline);
    pipeline.stop().await;
    info!("gateway stopped");
    0
}

fn log_frame(frame: &AnalysedFrame, model: &crate::detect::Model) {
    let summary: Vec<String> =
        frame.detections.iter().map(|d| format!("{} {:.2}", model.class_name(d.class_id), d.score)).collect();
    info!(
        camera = %frame.camera,
        t_ms = frame.media_time_ms,
        decode_ms = format!("{:.1}", frame.decode_time.as_secs_f64() * 1e3),
        inference_ms = format!("{:.1}", frame.inference_time.as_secs_f64() * 1e3),
        count = frame.detections.len(),
        detections = summary.join(", "),
        "analysed"
    );
}

fn log_stats(pipeline: &Pipeline) {
    for camera in pipeline.health.cameras() {
        let (state, reason, _) = camera.snapshot();
        let c = &camera.counters;
        info!(
            camera = %camera.id,
            state = state.as_str(),
            reason = reason.unwrap_or_default(),
            frames_received = c.frames_received.load(Ordering::Relaxed),
            keyframes = c.keyframes_received.load(Ordering::Relaxed),
            decoded = c.frames_decoded.load(Ordering::Relaxed),
            analysed = c.frames_analysed.load(Ordering::Relaxed),
            skipped_decoder_busy = c.skipped_decoder_busy.load(Ordering::Relaxed),
            skipped_detector_busy = c.skipped_detector_busy.load(Ordering::Relaxed),
            reconnects = c.reconnects.load(Ordering::Relaxed),
            "camera stats"
        );
    }
}

fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut terminate = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(err) => {
                error!(error = %err, "cannot install SIGTERM handler");
                return;
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => info!("SIGINT received, stopping"),
            _ = terminate.recv() => info!("SIGTERM received, stopping"),
        }
        shutdown.cancel();
    });
}
