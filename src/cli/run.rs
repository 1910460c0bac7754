//! `gateway run --config FILE`: the service. Validates the config before anything starts
//! (exit 64 on problems), then runs the pipeline until SIGINT/SIGTERM (or `--run-for-secs`),
//! logging detections per analysed frame and a per-camera summary every `STATS_EVERY`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use super::{load_and_check, print_problems, EXIT_CONFIG};
use crate::config::{CameraConfig, CameraId, Config};
use crate::deliver::{Delivery, DeliverySettings, SystemClock};
use crate::detect::{AnalysedFrame, Model};
use crate::engine::{observations, CameraEngine, EngineFrame};
use crate::evidence;
use crate::pipeline::Pipeline;

/// How often the per-camera summary is logged.
const STATS_EVERY: Duration = Duration::from_secs(10);

/// Runs the subcommand.
pub async fn main(config_path: &Path, run_for: Option<Duration>) -> i32 {
    // Validate everything (model included) before binding anything.
    let (config, model_classes) = match load_and_check(config_path) {
        Ok((config, checked)) => (config, checked.model().manifest.classes.clone()),
        Err(problems) => {
            print_problems(config_path, &problems);
            return EXIT_CONFIG;
        }
    };
    let mut engines = match build_engines(&config, &model_classes) {
        Ok(engines) => engines,
        Err(err) => {
            eprintln!("{err:#}");
            return EXIT_CONFIG;
        }
    };
    let outbox_path = config.state_dir.join("outbox.redb");
    let outbox = match crate::outbox::Outbox::open(&outbox_path, config.outbox_max_entries) {
        Ok(outbox) => Arc::new(outbox),
        Err(err) => {
            error!(
                error = format!("{err:#}"),
                "cannot open the outbox: refusing to run without somewhere to keep incidents"
            );
            return 1;
        }
    };
    match outbox.depth() {
        Ok(0) => {}
        Ok(depth) => info!(depth, path = %outbox_path.display(), "outbox holds undelivered events"),
        Err(err) => error!(error = format!("{err:#}"), "cannot read the outbox"),
    }
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
    let delivery = match &config.mqtt {
        Some(mqtt) => {
            let settings = DeliverySettings {
                mqtt: mqtt.clone(),
                escalation: config.escalation.clone(),
                health: Some(pipeline.health.clone()),
            };
            match Delivery::start(settings, outbox.clone(), Arc::new(SystemClock), shutdown.clone()) {
                Ok(delivery) => Some(delivery),
                Err(err) => {
                    error!(error = format!("{err:#}"), "cannot set up MQTT delivery");
                    shutdown.cancel();
                    pipeline.stop().await;
                    return 1;
                }
            }
        }
        None => {
            tracing::warn!("no [mqtt] in the config: incident events are kept in the outbox, not delivered");
            None
        }
    };
    info!(cameras = config.cameras.len(), model = %model.manifest.name, "gateway running");
    let mut stats = tokio::time::interval(STATS_EVERY);
    stats.tick().await;
    loop {
        tokio::select! {
            frame = analysed.recv() => match frame {
                Some(frame) => {
                    log_frame(&frame, &model);
                    if handle_incidents(&mut engines, &config, &frame, &model, &outbox) {
                        if let Some(delivery) = &delivery {
                            delivery.wake();
                        }
                    }
                }
                None => break,
            },
            _ = stats.tick() => log_stats(&pipeline, delivery.as_ref(), &outbox),
            () = shutdown.cancelled() => break,
        }
    }
    drop(analysed);
    log_stats(&pipeline, delivery.as_ref(), &outbox);
    shutdown.cancel();
    pipeline.stop().await;
    if let Some(delivery) = delivery {
        delivery.stopped().await;
    }
    info!("gateway stopped");
    0
}

/// Each camera's engine, restored from the state saved before a restart.
fn build_engines(
    config: &Config,
    classes: &[String],
) -> anyhow::Result<HashMap<CameraId, (CameraConfig, CameraEngine, super::ZoneClassifiers)>> {
    let mut engines = HashMap::new();
    for camera in &config.cameras {
        let references = super::load_references(camera)?;
        let mut engine = CameraEngine::new(camera, classes, &references);
        if let Some(book) = evidence::load_book(&config.state_dir, camera.id.as_str())? {
            let open = book.open_incidents().len();
            engine.restore(book);
            if open > 0 {
                info!(camera = %camera.id, open, "restored open incidents");
            }
        }
        let classifiers = super::ZoneClassifiers::load(camera, &config.detector)?;
        engines.insert(camera.id.clone(), (camera.clone(), engine, classifiers));
    }
    Ok(engines)
}

/// Runs a frame through its camera's engine; logs, records evidence and commits each event to
/// the outbox. True when events were committed.
fn handle_incidents(
    engines: &mut HashMap<CameraId, (CameraConfig, CameraEngine, super::ZoneClassifiers)>,
    config: &Config,
    frame: &AnalysedFrame,
    model: &Model,
    outbox: &crate::outbox::Outbox,
) -> bool {
    let Some((camera, engine, classifiers)) = engines.get_mut(&frame.camera) else { return false };
    // Small crops, ~1 ms each; only cameras whose bin zones use a classifier pay it.
    let zone_readings = tokio::task::block_in_place(|| classifiers.read(&frame.picture));
    let received = SystemTime::now() - frame.received_at.elapsed();
    let now_ms = received.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let events = engine.update(EngineFrame {
        now_ms,
        observations: observations(&frame.detections, frame.frame_width, frame.frame_height),
        picture: Some(&frame.picture),
        frame_aspect: frame.frame_width as f32 / frame.frame_height.max(1) as f32,
        zone_readings: &zone_readings,
    });
    if events.is_empty() {
        return false;
    }
    let mut snapshots = Vec::with_capacity(events.len());
    for event in &events {
        let snapshot = if event.event == crate::incident::EventKind::Cleared {
            None
        } else {
            match evidence::write_evidence(&config.state_dir, camera, event, &frame.picture, &model.manifest) {
                Ok(path) => Some(path.display().to_string()),
                Err(err) => {
                    error!(error = format!("{err:#}"), "cannot write evidence");
                    None
                }
            }
        };
        if event.event == crate::incident::EventKind::Opened {
            spawn_main_stream_snapshot(config, camera, event);
        }
        info!(
            camera = %camera.id,
            incident_id = %event.incident_id,
            seq = event.seq,
            event = ?event.event,
            kind = event.kind.as_str(),
            zone = %event.zone,
            grid = %camera.place.grid,
            steward = %camera.place.steward,
            score = format!("{:.2}", event.score),
            detail = %event.detail,
            snapshot = snapshot.clone().unwrap_or_default(),
            "incident"
        );
        snapshots.push(snapshot);
    }
    let records: Vec<crate::outbox::OutboxRecord> = events
        .iter()
        .zip(snapshots)
        .map(|(event, snapshot)| crate::outbox::OutboxRecord {
            schema: crate::outbox::RECORD_SCHEMA,
            event: event.clone(),
            street: camera.place.street.clone(),
            community: camera.place.community.clone(),
            grid: camera.place.grid.clone(),
            steward: camera.place.steward.clone(),
            snapshot,
            followup: None,
        })
        .collect();
    let committed = match outbox.enqueue(&records, now_ms) {
        Ok(enqueued) => {
            if enqueued.compacted > 0 {
                tracing::warn!(
                    depth = enqueued.depth,
                    compacted = enqueued.compacted,
                    "outbox over its cap: oldest updates compacted"
                );
            }
            info!(depth = enqueued.depth, ids = ?enqueued.ids, "incident events committed to the outbox");
            true
        }
        Err(err) => {
            error!(error = format!("{err:#}"), "cannot commit incident events to the outbox: they will be lost");
            false
        }
    };
    if let Err(err) = evidence::save_book(&config.state_dir, camera.id.as_str(), engine.book()) {
        error!(error = format!("{err:#}"), "cannot persist incident state: open incidents would be lost on restart");
    }
    committed
}

/// For a camera analysed on its substream: fetch a main-stream keyframe and write it as the
/// incident's full-resolution snapshot, in the background (nothing waits on the camera).
fn spawn_main_stream_snapshot(config: &Config, camera: &CameraConfig, event: &crate::incident::IncidentEvent) {
    let (Some(url), crate::config::SourceSpec::Rtsp { credentials, transport, .. }) =
        (&camera.snapshot_url, &camera.source)
    else {
        return;
    };
    let (url, credentials, transport) = (url.clone(), credentials.clone(), *transport);
    let (ingest, state_dir, camera, event) =
        (config.ingest.clone(), config.state_dir.clone(), camera.clone(), event.clone());
    tokio::spawn(async move {
        let target = crate::ingest::rtsp::RtspTarget { url: &url, credentials: credentials.as_ref(), transport };
        let written = match crate::ingest::rtsp::first_keyframe(&target, &ingest).await {
            Ok(frame) => tokio::task::spawn_blocking(move || {
                let picture = crate::decode::picture_rgb(&frame)?;
                evidence::write_main_snapshot(&state_dir, &camera, &event, &picture)
            })
            .await
            .unwrap_or_else(|panic| Err(anyhow::anyhow!("snapshot task panicked: {panic}"))),
            Err(err) => Err(err),
        };
        match written {
            Ok(path) => info!(snapshot = %path.display(), "main-stream snapshot"),
            Err(err) => error!(error = format!("{err:#}"), url = %url, "main-stream snapshot failed"),
        }
    });
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

fn log_stats(pipeline: &Pipeline, delivery: Option<&Delivery>, outbox: &crate::outbox::Outbox) {
    let depth = outbox.depth().unwrap_or(0);
    match delivery {
        Some(delivery) => {
            let s = &delivery.stats;
            info!(
                connected = s.connected.load(Ordering::Relaxed),
                outbox_depth = depth,
                published = s.published.load(Ordering::Relaxed),
                acknowledged = s.acknowledged.load(Ordering::Relaxed),
                connections = s.connections.load(Ordering::Relaxed),
                answers = s.answers.load(Ordering::Relaxed),
                answers_ignored = s.answers_ignored.load(Ordering::Relaxed),
                followups_fired = s.followups_fired.load(Ordering::Relaxed),
                "delivery stats"
            );
        }
        None if depth > 0 => tracing::warn!(outbox_depth = depth, "undelivered events (no [mqtt] configured)"),
        None => {}
    }
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
