//! Incidents from analysed frames: each camera's engine turns a frame into incident events;
//! the run loop decides what goes with them ([`prepare`]: clips started, bystanders, the
//! main-stream snapshot fetch) and hands them to the recorder thread as an [`Evidence`] job,
//! which writes their evidence ([`write`]) and commits them to the outbox with the camera's
//! incident book (then the delivery task is woken). Events that come from a config change
//! (zones removed) take the same path.

use std::path::Path;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use tracing::{error, info};

use super::commits::Commit;
use super::CameraRuntime;
use crate::config::{CameraConfig, Config};
use crate::console::Shared;
use crate::detect::{AnalysedFrame, Model};
use crate::engine::{observations, EngineFrame};
use crate::evidence;
use crate::incident::{EventKind, IncidentBook, IncidentEvent};
use crate::outbox::{OutboxRecord, RECORD_SCHEMA};

/// What deciding about incident events needs.
pub(super) struct Sinks<'a> {
    /// The config in force (clip URLs, privacy, snapshot sources).
    pub config: &'a Config,
    /// The model (its classes).
    pub model: &'a Model,
    /// Counters shown on `/metrics`, the clip recorder.
    pub shared: &'a Shared,
}

/// What a frame led to.
pub(super) struct FrameOutcome {
    /// Events to record: the recorder's job, when the frame made any.
    pub job: Option<Evidence>,
    /// People are in view of a fall-watch zone (the camera is sampled faster).
    pub people_in_fall_zones: bool,
}

/// A recorder job: one camera's events of one frame (or config change), with what their
/// evidence needs, and the incident book they advanced.
pub(super) struct Evidence {
    /// The camera's config when the events happened (zones drawn on the snapshot).
    camera: CameraConfig,
    /// Its incident book after the events.
    book: IncidentBook,
    /// The events.
    events: Vec<IncidentEvent>,
    /// The analysed frame (`None` for events of a config change: no snapshot).
    picture: Option<Arc<image::RgbImage>>,
    /// Per event: its clip and the bystanders to pixelate.
    extras: Vec<evidence::EventExtras>,
    /// Per event: the console URL of its clip.
    clip_urls: Vec<Option<String>>,
    /// When the events happened.
    now_ms: i64,
    /// When the frame arrived.
    received_at: Option<Instant>,
}

/// Runs a frame through its camera's engine; see [`prepare`].
pub(super) fn handle_frame(
    runtime: &mut CameraRuntime,
    frame: &AnalysedFrame,
    health: &crate::health::CameraHealth,
    sinks: &Sinks<'_>,
) -> FrameOutcome {
    let CameraRuntime { camera, engine, classifiers } = runtime;
    // Small crops, ~1 ms each; only cameras whose bin zones use a classifier pay it.
    let zone_readings = tokio::task::block_in_place(|| classifiers.read(&frame.picture));
    let received = SystemTime::now() - frame.received_at.elapsed();
    let now_ms = received.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    if !zone_readings.is_empty() {
        // For the zone editor's live reading.
        let sources: Vec<(String, &'static str)> =
            classifiers.sources().into_iter().map(|(zone, source)| (zone, source.as_str())).collect();
        sinks.shared.bins.keep_readings(camera.id.as_str(), &zone_readings, &sources, now_ms);
    }
    let observations = observations(&frame.detections, frame.frame_width, frame.frame_height);
    // Everyone in view, for blurring the people who are not an incident's subject.
    let person = sinks.model.manifest.classes.iter().position(|class| class == "person");
    let people: Vec<crate::geometry::BoxNorm> = observations
        .iter()
        .filter(|observation| Some(usize::from(observation.class_id)) == person)
        .map(|observation| observation.bbox)
        .collect();
    let people_in_fall_zones = engine.people_in_fall_zones(&observations);
    let frame_aspect = frame.frame_width as f32 / frame.frame_height.max(1) as f32;
    // The pose stage: only fall-watch zones with `pose = true`, only boxes that matter.
    let requests = engine.pose_requests(&observations, frame_aspect, now_ms);
    let poses = if requests.is_empty() {
        Vec::new()
    } else {
        let (crops, us) = (classifiers.pose_crops, classifiers.pose_us);
        let poses = tokio::task::block_in_place(|| classifiers.poses(&frame.picture, &requests));
        // Counted per camera: /metrics, and the capacity estimate (a frame with crops costs more).
        health.counters.pose_crops.fetch_add(classifiers.pose_crops - crops, std::sync::atomic::Ordering::Relaxed);
        health.counters.pose_us_total.fetch_add(classifiers.pose_us - us, std::sync::atomic::Ordering::Relaxed);
        poses
    };
    let events = engine.update(EngineFrame {
        now_ms,
        observations,
        picture: Some(&frame.picture),
        frame_aspect,
        zone_readings: &zone_readings,
        poses: &poses,
    });
    // The fall rule's wish for the rotated pass (where to crop), read when the camera's next
    // frame is prepared.
    *health.counters.rotated_regions.lock().unwrap_or_else(std::sync::PoisonError::into_inner) =
        engine.rotated_regions();
    let picture = Some((&frame.picture, frame.received_at));
    let job = prepare(camera, engine.book(), events, picture, &people, now_ms, sinks);
    FrameOutcome { job, people_in_fall_zones }
}

/// On the run loop: what goes with `events` besides their files — an opened incident's clip
/// is started (its pre-roll is taken from the camera's ring now), the bystanders to pixelate
/// are chosen, a main-stream snapshot is fetched in the background — as a job for the
/// recorder, which writes the evidence and commits the events with `book`. `picture`: the
/// analysed frame and when it arrived. `None` when there are no events.
pub(super) fn prepare(
    camera: &CameraConfig,
    book: &IncidentBook,
    events: Vec<IncidentEvent>,
    picture: Option<(&Arc<image::RgbImage>, Instant)>,
    people: &[crate::geometry::BoxNorm],
    now_ms: i64,
    sinks: &Sinks<'_>,
) -> Option<Evidence> {
    let Sinks { config, shared, .. } = *sinks;
    if events.is_empty() {
        return None;
    }
    let mut extras = Vec::with_capacity(events.len());
    let mut clip_urls = Vec::with_capacity(events.len());
    for event in &events {
        let clip = match (event.event, picture, shared.clips.get()) {
            (EventKind::Opened, Some(_), Some(clips)) => clips.start_capture(&camera.id, event, instant_of(now_ms)),
            _ => None,
        };
        clip_urls.push(clip.as_ref().and_then(|_| clip_url(config, &event.incident_id)));
        let bystanders = if config.evidence.for_incident(event.kind).blur_bystanders {
            evidence::privacy::bystanders(event, people)
        } else {
            Vec::new()
        };
        if event.event == EventKind::Opened {
            spawn_main_stream_snapshot(config, camera, event, bystanders.clone());
        }
        extras.push(evidence::EventExtras { clip, bystanders });
    }
    Some(Evidence {
        camera: camera.clone(),
        book: book.clone(),
        events,
        picture: picture.map(|(picture, _)| picture.clone()),
        extras,
        clip_urls,
        now_ms,
        received_at: picture.map(|(_, received_at)| received_at),
    })
}

/// On the recorder thread: writes the job's evidence (snapshot, crop and sidecar, each JPEG
/// encoded and fsynced), logs its events and returns the commit of the events with their book.
/// Evidence that cannot be written (or whose writing panics) is logged; the event goes on
/// without a snapshot: evidence is never a reason to lose an event.
pub(super) fn write(job: Evidence, state_dir: &Path, model: &crate::detect::model::ModelManifest) -> Commit {
    let Evidence { camera, book, events, picture, extras, clip_urls, now_ms, received_at } = job;
    let _span = tracing::info_span!("camera", camera = %camera.id).entered();
    let mut records = Vec::with_capacity(events.len());
    for ((event, extras), clip_url) in events.into_iter().zip(&extras).zip(clip_urls) {
        let snapshot = match picture.as_deref().filter(|_| event.event != EventKind::Cleared) {
            None => None,
            Some(picture) => {
                let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    evidence::write_evidence(state_dir, &camera, &event, picture, model, extras)
                }))
                .unwrap_or_else(|_| Err(anyhow::anyhow!("writing the evidence panicked")));
                match written {
                    Ok(path) => Some(path.display().to_string()),
                    Err(err) => {
                        error!(error = format!("{err:#}"), "cannot write evidence");
                        None
                    }
                }
            }
        };
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
        records.push(OutboxRecord {
            schema: RECORD_SCHEMA,
            event,
            street: camera.place.street.clone(),
            community: camera.place.community.clone(),
            grid: camera.place.grid.clone(),
            steward: camera.place.steward.clone(),
            snapshot,
            clip_url,
            followup: None,
            answer: None,
        });
    }
    // The events and the book they advanced, in one commit; held and retried if it fails.
    Commit { camera: camera.id.to_string(), book, records, now_ms, received_at }
}

/// For a camera analysed on its substream: fetch a main-stream keyframe and write it as the
/// incident's full-resolution snapshot, in the background (nothing waits on the camera).
fn spawn_main_stream_snapshot(
    config: &Config,
    camera: &CameraConfig,
    event: &crate::incident::IncidentEvent,
    bystanders: Vec<crate::geometry::BoxNorm>,
) {
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
                evidence::write_main_snapshot(&state_dir, &camera, &event, &picture, &bystanders)
            })
            .await
            .unwrap_or_else(|panic| Err(anyhow::anyhow!("snapshot task panicked: {panic}"))),
            Err(err) => Err(err),
        };
        match written {
            Ok(path) => info!(snapshot = %path.display(), "main-stream snapshot"),
            // The chain may quote what the camera sent: capped like a camera's reason.
            Err(err) => {
                error!(error = crate::health::cap_reason(&format!("{err:#}")), url = %url, "main-stream snapshot failed")
            }
        }
    });
}

/// The console URL of an incident's clip (`[evidence] public_console_url`); `None` without a
/// console.
fn clip_url(config: &Config, incident_id: &str) -> Option<String> {
    let base = config.evidence.public_console_url.as_deref()?;
    let id: String = url::form_urlencoded::byte_serialize(incident_id.as_bytes()).collect();
    Some(format!("{base}/api/incidents/{id}/clip.mp4"))
}

/// The monotonic instant of a wall-clock time in the recent past (a frame's arrival).
fn instant_of(wall_ms: i64) -> std::time::Instant {
    let now_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let ago = std::time::Duration::from_millis(now_ms.saturating_sub(wall_ms).max(0) as u64);
    let now = std::time::Instant::now();
    now.checked_sub(ago).unwrap_or(now)
}

pub(super) fn event_name(event: EventKind) -> &'static str {
    match event {
        EventKind::Opened => "opened",
        EventKind::Updated => "updated",
        EventKind::Cleared => "cleared",
    }
}
