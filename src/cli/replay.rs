//! `gateway replay --config FILE --camera ID [--json] FOOTAGE`: the tuning and evaluation
//! tool. Runs a footage file through that camera's full pipeline — same sampling, decoding,
//! detector, tracker and rules — as fast as the CPU allows, with footage time as the clock,
//! and prints each incident event. With `--json`, one line per event:
//! `{"incident_id":…,"event":"opened|updated|cleared","kind":"misparked_bike|trash_overflow|fallen_person","t_ms":…,"zone":…,"score":…}`.
//! With `--stats FILE`, the clip's figures go to FILE as one JSON object ([`ClipStats`]):
//! frames analysed, inferences the change gate let run (by reason) or reused, its cost.
//!
//! Nothing is skipped for lack of time here (the live service may skip frames under load),
//! so a replay is the reference result for a clip.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use serde::Serialize;

use super::{load_and_check, print_problems, EXIT_CONFIG};
use crate::config::DecodeMode;
use crate::config::ModelRule;
use crate::decode::{Decoder, DecoderKey, Letterboxers};
use crate::detect::{Detectors, RotatedPass};
use crate::engine::{observations, CameraEngine, EngineFrame};
use crate::gate::{Decision, Gate, Signature};
use crate::incident::IncidentEvent;
use crate::ingest::file::{play, Pace};
use crate::media::{EncodedFrame, FrameSink};
use crate::schedule::Scheduler;

#[derive(Serialize)]
struct JsonEvent<'a> {
    incident_id: &'a str,
    event: crate::incident::EventKind,
    kind: crate::rules::IncidentKind,
    t_ms: i64,
    zone: &'a str,
    score: f32,
}

/// What a replayed clip cost, and what the change gate saved (`--stats`).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ClipStats {
    /// Frames analysed (the engine saw them).
    pub analysed_frames: u64,
    /// Of those, frames the model ran on.
    pub inferences_run: u64,
    /// Of those, frames that reused the last inference's detections.
    pub inferences_reused: u64,
    /// Why the model ran: `first`, `unsettled`, `stale`, `changed`, or `ungated` (gating off).
    pub runs_by_reason: std::collections::BTreeMap<&'static str, u64>,
    /// Share of analysed frames that reused detections (0–1).
    pub saved_share: f64,
    /// The change gate's time per analysed frame (signature, decision, record), µs.
    pub gate_us_per_frame: f64,
    /// The model's time per frame it ran on (inference and postprocessing), ms.
    pub inference_ms_per_run: f64,
    /// Analysed frames by the name of the model that analysed them (the camera's
    /// `detector_model` rule on the frame's size, as live).
    pub analysed_by_model: std::collections::BTreeMap<String, u64>,
    /// Frames the rotated pass (fall watch) ran on.
    pub rotated_frames: u64,
    /// Model runs of the rotated pass: one per frame on crops, two per whole-picture pass.
    pub rotated_inferences: u64,
    #[serde(skip)]
    gate_us: u64,
    #[serde(skip)]
    inference_us: u64,
}

impl ClipStats {
    fn count_run(&mut self, reason: &'static str) {
        self.inferences_run += 1;
        *self.runs_by_reason.entry(reason).or_default() += 1;
    }

    /// The derived figures, once the clip is done.
    fn finish(&mut self) {
        let analysed = self.analysed_frames.max(1) as f64;
        self.saved_share = self.inferences_reused as f64 / analysed;
        self.gate_us_per_frame = self.gate_us as f64 / analysed;
        self.inference_ms_per_run = self.inference_us as f64 / 1000.0 / self.inferences_run.max(1) as f64;
    }
}

/// Runs the subcommand: 0 on success, 64 for a bad config or unknown camera, 1 if the footage
/// cannot be read (or `stats` cannot be written).
pub fn main(config_path: &Path, camera_id: &str, json: bool, stats: Option<&Path>, footage: &Path) -> i32 {
    let (config, detectors) = match load_and_check(config_path) {
        Ok(loaded) => loaded,
        Err(problems) => {
            print_problems(config_path, &problems);
            return EXIT_CONFIG;
        }
    };
    let Some(camera) = config.cameras.iter().find(|c| c.id.as_str() == camera_id) else {
        let known: Vec<&str> = config.cameras.iter().map(|c| c.id.as_str()).collect();
        eprintln!("--camera: no enabled camera {camera_id:?} in {} (cameras: {known:?})", config_path.display());
        return EXIT_CONFIG;
    };
    let references = match super::load_references(camera) {
        Ok(references) => references,
        Err(error) => {
            eprintln!("{error:#}");
            return EXIT_CONFIG;
        }
    };
    let mut detectors = detectors;
    let print = |event: &IncidentEvent| print_event(event, json);
    let played = run_clip_with_stats(camera, &references, &mut detectors, &config.detector, footage, 0, &mut |event| {
        print(event)
    });
    match played {
        Ok(figures) => match stats.map(|path| write_stats(path, &figures)) {
            Some(Err(error)) => {
                eprintln!("--stats: {error:#}");
                1
            }
            _ => 0,
        },
        Err(ClipError::Config(error)) => {
            eprintln!("{error:#}");
            EXIT_CONFIG
        }
        Err(ClipError::Footage(error)) => {
            eprintln!("{}: {error:#}", footage.display());
            1
        }
    }
}

/// Why a clip could not be replayed.
pub(crate) enum ClipError {
    /// The camera's zone classifiers do not load (a config problem).
    Config(anyhow::Error),
    /// The footage cannot be read or decoded.
    Footage(anyhow::Error),
}

fn write_stats(path: &Path, stats: &ClipStats) -> anyhow::Result<()> {
    let text = serde_json::to_string(stats).context("serialise")? + "\n";
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}

/// Replays one footage file through `camera`'s pipeline with a fresh engine, handing every
/// incident event to `on_event`. With `pad_ms > 0`, the clip's last decoded picture is
/// analysed again, on the same schedule, for that much more footage time after its end (a
/// person who stays down; `eval-falls`).
pub(crate) fn run_clip(
    camera: &crate::config::CameraConfig,
    references: &[(String, crate::rules::trash_overflow::GreyFrame)],
    detectors: &mut Detectors,
    detector_config: &crate::config::DetectorConfig,
    footage: &Path,
    pad_ms: i64,
    on_event: &mut dyn FnMut(&IncidentEvent),
) -> Result<(), ClipError> {
    run_clip_with_stats(camera, references, detectors, detector_config, footage, pad_ms, on_event).map(|_| ())
}

/// [`run_clip`], returning the clip's figures.
pub(crate) fn run_clip_with_stats(
    camera: &crate::config::CameraConfig,
    references: &[(String, crate::rules::trash_overflow::GreyFrame)],
    detectors: &mut Detectors,
    detector_config: &crate::config::DetectorConfig,
    footage: &Path,
    pad_ms: i64,
    on_event: &mut dyn FnMut(&IncidentEvent),
) -> Result<ClipStats, ClipError> {
    let engine = CameraEngine::new(camera, &detectors.square().model().manifest.classes, references);
    let models = detectors.models();
    let classifiers = super::ZoneClassifiers::load(camera, detector_config).map_err(ClipError::Config)?;
    let mut events = Vec::new();
    let mut replay = Replay {
        schedule: {
            let mut schedule = Scheduler::default();
            schedule.add((), camera.cadence());
            schedule
        },
        watches_people: camera.active_interval.is_some(),
        every_frame: camera.decode_mode == DecodeMode::EveryFrame,
        rotated_pass: camera.rotated_pass(),
        letterboxers: Letterboxers::new(models.input_sizes()),
        model_rule: camera.model_rule(models.wide.is_some()),
        detectors,
        decoder: None,
        engine,
        classifiers,
        events: &mut events,
        last_picture: None,
        last_ms: None,
        error: None,
        gate: camera.gate_max_stale.map(|max_stale| Gate::new(&camera.zones, max_stale.as_millis() as i64)),
        stats: ClipStats::default(),
        rotated_regions: Vec::new(),
    };
    let played = play(footage, Pace::AsFastAsPossible, None, &mut replay, &|| false);
    let flush = |replay: &mut Replay, on_event: &mut dyn FnMut(&IncidentEvent)| {
        for event in replay.events.drain(..) {
            on_event(&event);
        }
    };
    flush(&mut replay, on_event);
    played.map_err(ClipError::Footage)?;
    if let Some(error) = replay.error.take() {
        return Err(ClipError::Footage(error));
    }
    if let (Some(picture), Some(last_ms)) = (replay.last_picture.take(), replay.last_ms) {
        // Padding: the last picture, every PAD_STEP_MS of footage time; the schedule decides
        // which of these are analysed, as it does for real frames.
        let mut t_ms = last_ms + PAD_STEP_MS;
        while t_ms <= last_ms + pad_ms {
            if replay.schedule.is_due(&(), t_ms) {
                replay.analyse_picture(&picture, t_ms).map_err(ClipError::Footage)?;
                flush(&mut replay, on_event);
            }
            t_ms += PAD_STEP_MS;
        }
    }
    let mut stats = std::mem::take(&mut replay.stats);
    stats.finish();
    tracing::info!(
        clip = %footage.display(),
        analysed_frames = stats.analysed_frames,
        inferences_run = stats.inferences_run,
        inferences_reused = stats.inferences_reused,
        gate_us_per_frame = format!("{:.0}", stats.gate_us_per_frame),
        "change gate"
    );
    if camera.has_fall_watch() {
        let (crops, us) = (replay.classifiers.pose_crops, replay.classifiers.pose_us);
        tracing::info!(
            clip = %footage.display(),
            analysed_frames = stats.analysed_frames,
            rotated_frames = stats.rotated_frames,
            rotated_inferences = stats.rotated_inferences,
            pose_crops = crops,
            pose_ms_per_crop = if crops == 0 { 0.0 } else { us as f64 / crops as f64 / 1000.0 },
            "pose cost"
        );
    }
    Ok(stats)
}

/// Spacing of the padded frames, ms (a 10 fps stream).
const PAD_STEP_MS: i64 = 100;

struct Replay<'a> {
    /// The live scheduler's policy for this one camera, on footage time: the same due frames
    /// (and the same faster sampling while people are in a fall-watch zone), never late.
    schedule: Scheduler<(), ()>,
    watches_people: bool,
    every_frame: bool,
    rotated_pass: bool,
    letterboxers: Letterboxers,
    /// Which model a frame goes to, by its size (as the live decoders decide).
    model_rule: ModelRule,
    detectors: &'a mut Detectors,
    decoder: Option<Decoder>,
    engine: CameraEngine,
    classifiers: super::ZoneClassifiers,
    events: &'a mut Vec<IncidentEvent>,
    /// The latest decoded picture and its footage time (padding).
    last_picture: Option<ffmpeg_next::frame::Video>,
    last_ms: Option<i64>,
    error: Option<anyhow::Error>,
    /// The camera's change gate, as live (`None`: gating off).
    gate: Option<Gate>,
    /// Frames analysed, inferences run and reused, costs.
    stats: ClipStats,
    /// Where the fall rule asked for the rotated pass on the next frame (as live); empty:
    /// not asked.
    rotated_regions: Vec<crate::geometry::BoxNorm>,
}

impl FrameSink for Replay<'_> {
    fn push(&mut self, frame: EncodedFrame) {
        if self.error.is_none() {
            if let Err(error) = self.analyse(&frame) {
                self.error = Some(error);
            }
        }
    }
}

impl Replay<'_> {
    fn analyse(&mut self, frame: &EncodedFrame) -> anyhow::Result<()> {
        let due = self.schedule.is_due(&(), frame.media_time_ms);
        if !self.every_frame && (!frame.is_keyframe || !due) {
            return Ok(());
        }
        let key = DecoderKey { codec: frame.codec, extradata: frame.extradata.clone() };
        if self.decoder.as_ref().is_none_or(|d| *d.key() != key) {
            self.decoder = Some(Decoder::open(key)?);
        }
        let decoder = self.decoder.as_mut().expect("opened above");
        let picture = if self.every_frame {
            match decoder.decode_next(&frame.data) {
                Ok(Some(picture)) if due => picture,
                Ok(Some(picture)) => {
                    self.last_picture = Some(picture);
                    self.last_ms = Some(frame.media_time_ms);
                    return Ok(());
                }
                Ok(None) => return Ok(()),
                Err(error) if frame.is_keyframe => return Err(error),
                Err(_) => return Ok(()), // a broken P-frame: wait for the next one, as live does
            }
        } else {
            decoder.decode_keyframe(&frame.data).context("decode keyframe")?
        };
        self.analyse_picture(&picture, frame.media_time_ms)?;
        self.last_picture = Some(picture);
        self.last_ms = Some(frame.media_time_ms);
        Ok(())
    }

    /// Analyses one due picture at footage time `t_ms`.
    fn analyse_picture(&mut self, picture: &ffmpeg_next::frame::Video, t_ms: i64) -> anyhow::Result<()> {
        self.schedule.offer(&(), (), t_ms);
        self.schedule.take(t_ms);
        let mut tensor = Vec::new();
        let (letterboxer, variant) = self.letterboxers.get(self.model_rule.variant(picture.width(), picture.height()));
        let letterbox = letterboxer.run(picture, &mut tensor)?;
        let scaled = Arc::new(letterboxer.scaled_picture());
        let detections = self.gated_detections(&tensor, &letterbox, &scaled, t_ms, variant)?;
        let model = &self.detectors.get_mut(variant).model().manifest.name;
        if !self.stats.analysed_by_model.contains_key(model) {
            tracing::info!(t_ms, model = %model, variant = variant.as_str(), "analysed with");
        }
        *self.stats.analysed_by_model.entry(model.clone()).or_default() += 1;
        tracing::debug!(
            t_ms,
            detections = ?detections.iter().map(|d| (d.class_id, (d.score * 100.0).round() / 100.0, d.box_px.map(f32::round))).collect::<Vec<_>>(),
            "analysed"
        );
        let zone_readings = self.classifiers.read(&scaled);
        let observations = observations(&detections, letterbox.frame_width, letterbox.frame_height);
        if self.watches_people {
            let people = self.engine.people_in_fall_zones(&observations);
            self.schedule.people_in_view(&(), people, t_ms);
        }
        let frame_aspect = letterbox.frame_width as f32 / letterbox.frame_height.max(1) as f32;
        let requests = self.engine.pose_requests(&observations, frame_aspect, t_ms);
        let poses = self.classifiers.poses(&scaled, &requests);
        self.stats.analysed_frames += 1;
        let events = self.engine.update(EngineFrame {
            now_ms: t_ms,
            observations,
            picture: Some(&scaled),
            frame_aspect,
            zone_readings: &zone_readings,
            poses: &poses,
        });
        self.events.extend(events);
        self.rotated_regions = self.engine.rotated_regions();
        Ok(())
    }
}

impl Replay<'_> {
    /// The frame's detections: the camera's change gate decides whether the model runs or the
    /// last inference's detections stand (the live detector threads do the same).
    fn gated_detections(
        &mut self,
        tensor: &[f32],
        letterbox: &crate::decode::letterbox::Letterbox,
        scaled: &image::RgbImage,
        t_ms: i64,
        variant: crate::config::ModelVariant,
    ) -> anyhow::Result<Vec<crate::detect::Detection>> {
        let frame = (letterbox.frame_width, letterbox.frame_height);
        let gate_started = Instant::now();
        let Some(gate) = self.gate.as_mut() else {
            let detections = self.detect(tensor, letterbox, scaled, variant)?;
            self.stats.count_run("ungated");
            return Ok(detections);
        };
        let signature = Signature::of_rgb(scaled);
        let reason = match gate.decide(t_ms, frame, &signature, !self.rotated_regions.is_empty()) {
            Decision::Reuse(detections) => {
                let detections = detections.to_vec();
                self.stats.inferences_reused += 1;
                self.stats.gate_us += gate_started.elapsed().as_micros() as u64;
                return Ok(detections);
            }
            Decision::Infer(reason) => reason,
        };
        self.stats.gate_us += gate_started.elapsed().as_micros() as u64;
        let detections = self.detect(tensor, letterbox, scaled, variant)?;
        self.stats.count_run(reason.as_str());
        let record_started = Instant::now();
        if let Some(gate) = self.gate.as_mut() {
            gate.record(t_ms, signature, detections.clone(), frame);
        }
        self.stats.gate_us += record_started.elapsed().as_micros() as u64;
        Ok(detections)
    }

    fn detect(
        &mut self,
        tensor: &[f32],
        letterbox: &crate::decode::letterbox::Letterbox,
        scaled: &image::RgbImage,
        variant: crate::config::ModelVariant,
    ) -> anyhow::Result<Vec<crate::detect::Detection>> {
        let started = Instant::now();
        // As the live decoders decide (`decode::prepare`).
        let rotated = if self.rotated_pass {
            RotatedPass::Whole
        } else if self.rotated_regions.is_empty() {
            RotatedPass::Off
        } else {
            RotatedPass::Regions(self.rotated_regions.clone())
        };
        self.stats.rotated_frames += u64::from(rotated.is_on());
        let detector = self.detectors.get_mut(variant);
        let inferences = detector.rotated_inferences();
        let detections = detector.detect_frame(tensor, letterbox, scaled, &rotated)?;
        self.stats.rotated_inferences += detector.rotated_inferences() - inferences;
        self.stats.inference_us += started.elapsed().as_micros() as u64;
        Ok(detections)
    }
}

/// Prints one event: a line for people, or with `json` one JSON object.
fn print_event(event: &IncidentEvent, json: bool) {
    if json {
        let line = JsonEvent {
            incident_id: &event.incident_id,
            event: event.event,
            kind: event.kind,
            t_ms: event.t_ms,
            zone: &event.zone,
            score: (event.score * 1000.0).round() / 1000.0,
        };
        println!("{}", serde_json::to_string(&line).expect("event serialises"));
    } else {
        println!(
            "{:>9.1} s  {:<8} {:<15} zone {:<12} score {:.2}  {}  [{} #{}]",
            event.t_ms as f64 / 1000.0,
            format!("{:?}", event.event).to_lowercase(),
            event.kind.as_str(),
            event.zone,
            event.score,
            event.detail,
            event.incident_id,
            event.seq
        );
    }
}
