//! The per-camera core: detections → track → zone rules → incident lifecycle. Pure and
//! deterministic: the live service and `gateway replay` feed it the same way, with time passed
//! in (wall-clock ms live, footage ms in replay), so both give the same incidents on the same
//! frames.

use crate::config::CameraConfig;
use crate::geometry::{BoxNorm, Polygon};
use crate::incident::{IncidentBook, IncidentEvent};
use crate::rules::fallen_person::FallWatch;
use crate::rules::trash_overflow::{changed_share, GreyFrame, TrashWatch};
use crate::rules::{misparked_bike, IncidentKind};
use crate::track::{Observation, Track, Tracker, TrackerConfig};
use crate::zones::{Zone, ZoneRule};

/// One detected object, in frame pixels: what a detector reports and the engine takes (owned
/// here, the pure side, so the core does not depend on the ONNX shell; `detect` re-exports it).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Detection {
    /// Class id in the model's class list.
    pub class_id: u16,
    /// objectness × class probability.
    pub score: f32,
    /// `[x1, y1, x2, y2]` in frame pixels.
    pub box_px: [f32; 4],
    /// Found by the rotated pass (fall-watch cameras), not the upright one.
    #[serde(skip)]
    pub rotated: bool,
}

/// Classes masked out of the trash reading: they move through bin areas without being rubbish.
const TRANSIENT_CLASSES: [&str; 6] = ["person", "bicycle", "car", "motorcycle", "bus", "truck"];

/// A model-read bin zone whose bounds are covered this much by people and vehicles gives no
/// reading that frame.
const HIDDEN_SHARE: f32 = 0.3;

/// Share (0–1) of `bounds` covered by the union of `boxes`, sampled on a 20×20 grid.
fn covered_share(bounds: &BoxNorm, boxes: &[BoxNorm]) -> f32 {
    if boxes.is_empty() {
        return 0.0;
    }
    const STEPS: usize = 20;
    let mut covered = 0;
    for row in 0..STEPS {
        let y = bounds.y1 + (bounds.y2 - bounds.y1) * (row as f32 + 0.5) / STEPS as f32;
        for column in 0..STEPS {
            let x = bounds.x1 + (bounds.x2 - bounds.x1) * (column as f32 + 0.5) / STEPS as f32;
            if boxes.iter().any(|b| x >= b.x1 && x <= b.x2 && y >= b.y1 && y <= b.y2) {
                covered += 1;
            }
        }
    }
    covered as f32 / (STEPS * STEPS) as f32
}

enum RuleState {
    Misparked,
    Trash { watch: TrashWatch, reference: Option<GreyFrame>, classified: bool },
    Fall(FallWatch),
    Mask,
}

struct ZoneRuntime {
    zone: Zone,
    class_ids: Vec<u16>,
    state: RuleState,
}

/// One analysed frame, as the engine needs it.
pub struct EngineFrame<'a> {
    /// The camera clock, ms.
    pub now_ms: i64,
    /// Detections, boxes normalised.
    pub observations: Vec<Observation>,
    /// The analysed picture (for bin-area readings); any resolution.
    pub picture: Option<&'a image::RgbImage>,
    /// Frame width ÷ height: box shapes in pixels (fall rule) need it.
    pub frame_aspect: f32,
    /// Readings of bin zones that use a model or classifier, by zone id (computed by the
    /// caller, which owns the ONNX sessions).
    pub zone_readings: &'a [(String, f32)],
    /// Poses read on the boxes [`CameraEngine::pose_requests`] asked for (empty without the
    /// pose stage).
    pub poses: &'a [(BoxNorm, crate::pose::PoseSummary)],
}

/// Tracker, zones, rules and incidents of one camera.
pub struct CameraEngine {
    tracker: Tracker,
    zones: Vec<ZoneRuntime>,
    masks: Vec<Polygon>,
    transient_class_ids: Vec<u16>,
    book: IncidentBook,
}

/// Detections in frame pixels → tracker observations with normalised boxes.
pub fn observations(detections: &[Detection], width: u32, height: u32) -> Vec<Observation> {
    detections
        .iter()
        .map(|d| Observation {
            class_id: d.class_id,
            score: d.score,
            bbox: BoxNorm::from_pixels(d.box_px, width, height),
            rotated: d.rotated,
        })
        .collect()
}

/// Resolves class names to ids in the model's class list (unknown names are dropped; config
/// validation reports them).
pub fn class_ids(names: &[String], class_names: &[String]) -> Vec<u16> {
    names.iter().filter_map(|name| class_names.iter().position(|c| c == name)).map(|id| id as u16).collect()
}

impl CameraEngine {
    /// An engine for `camera`. `references` gives the clean reference image of each bin zone
    /// that has one configured (by zone id); bin zones without one take their first frame.
    pub fn new(camera: &CameraConfig, class_names: &[String], references: &[(String, GreyFrame)]) -> Self {
        let zones = camera
            .zones
            .iter()
            .map(|zone| ZoneRuntime {
                class_ids: class_ids(&zone.classes, class_names),
                state: match &zone.rule {
                    ZoneRule::Misparked(_) => RuleState::Misparked,
                    ZoneRule::Trash(params) => RuleState::Trash {
                        watch: TrashWatch::default(),
                        reference: references.iter().find(|(id, _)| *id == zone.id).map(|(_, r)| r.clone()),
                        classified: !matches!(params.source, crate::zones::TrashSource::ReferenceDiff { .. }),
                    },
                    ZoneRule::Fall(_) => RuleState::Fall(FallWatch::default()),
                    ZoneRule::Mask => RuleState::Mask,
                },
                zone: zone.clone(),
            })
            .collect::<Vec<_>>();
        let masks =
            zones.iter().filter(|z| matches!(z.state, RuleState::Mask)).map(|z| z.zone.polygon.clone()).collect();
        let transient: Vec<String> = TRANSIENT_CLASSES.iter().map(|c| c.to_string()).collect();
        CameraEngine {
            tracker: Tracker::new(TrackerConfig::for_interval(camera.analysis_interval.as_millis() as i64)),
            zones,
            masks,
            transient_class_ids: class_ids(&transient, class_names),
            book: IncidentBook::new(camera.id.as_str()),
        }
    }

    /// The incident state, for persisting.
    pub fn book(&self) -> &IncidentBook {
        &self.book
    }

    /// Restores incident state saved before a restart.
    pub fn restore(&mut self, book: IncidentBook) {
        self.book = book;
    }

    /// Restores incident state from an engine built for the camera's previous config, and
    /// clears the incidents of zones the new config no longer has (or gave another kind).
    pub fn take_over(&mut self, book: IncidentBook, now_ms: i64) -> Vec<IncidentEvent> {
        self.book = book;
        let zones: Vec<(String, IncidentKind)> = self
            .zones
            .iter()
            .filter_map(|runtime| {
                let kind = match runtime.zone.rule {
                    ZoneRule::Misparked(_) => IncidentKind::MisparkedBike,
                    ZoneRule::Trash(_) => IncidentKind::TrashOverflow,
                    ZoneRule::Fall(_) => IncidentKind::FallenPerson,
                    ZoneRule::Mask => return None,
                };
                Some((runtime.zone.id.clone(), kind))
            })
            .collect();
        self.book.retire(now_ms, &|zone, kind| zones.iter().any(|(id, k)| id == zone && *k == kind))
    }

    /// Where the rotated pass should look on the camera's next analysed frame: the regions
    /// every fall-watch zone asked about (see [`FallWatch::rotated_regions`]); empty when none
    /// asks. The detector crops around them.
    pub fn rotated_regions(&self) -> Vec<BoxNorm> {
        let mut regions: Vec<BoxNorm> = Vec::new();
        for runtime in &self.zones {
            if let RuleState::Fall(watch) = &runtime.state {
                // Two zones may name the same person.
                for region in watch.rotated_regions() {
                    if !regions.contains(region) {
                        regions.push(*region);
                    }
                }
            }
        }
        regions
    }

    /// Whether any of `observations` is a person (as the zone's rule counts them) inside one
    /// of the camera's fall-watch zones: the scheduler then samples the camera faster.
    pub fn people_in_fall_zones(&self, observations: &[Observation]) -> bool {
        self.zones.iter().filter(|runtime| matches!(runtime.state, RuleState::Fall(_))).any(|runtime| {
            observations
                .iter()
                .any(|o| !self.masked(o) && runtime.zone.admits(&runtime.class_ids, o.class_id, o.score, &o.bbox))
        })
    }

    /// Where the pose model should look on this frame, given its detections: only fall-watch
    /// zones with `pose = true` ask, and only for boxes that matter (see
    /// [`FallWatch::pose_requests`]). Deduplicated.
    pub fn pose_requests(&self, observations: &[Observation], frame_aspect: f32, now_ms: i64) -> Vec<BoxNorm> {
        let mut requests: Vec<BoxNorm> = Vec::new();
        for runtime in &self.zones {
            let (RuleState::Fall(watch), ZoneRule::Fall(params)) = (&runtime.state, &runtime.zone.rule) else {
                continue;
            };
            if !params.pose {
                continue;
            }
            let admitted: Vec<BoxNorm> = observations
                .iter()
                .filter(|o| !self.masked(o) && runtime.zone.admits(&runtime.class_ids, o.class_id, o.score, &o.bbox))
                .map(|o| o.bbox)
                .collect();
            for request in watch.pose_requests(&admitted, params, frame_aspect, now_ms) {
                if !requests.contains(&request) {
                    requests.push(request);
                }
            }
        }
        requests
    }

    /// Whether an observation stands in a mask zone (and is ignored).
    fn masked(&self, observation: &Observation) -> bool {
        self.masks.iter().any(|mask| mask.contains(observation.bbox.anchor()))
    }

    /// Live tracks.
    pub fn tracks(&self) -> &[Track] {
        self.tracker.tracks()
    }

    /// Feeds one analysed frame; returns the incident events it causes.
    pub fn update(&mut self, frame: EngineFrame<'_>) -> Vec<IncidentEvent> {
        let now_ms = frame.now_ms;
        let observations: Vec<Observation> = frame.observations.into_iter().filter(|o| !self.masked(o)).collect();
        let transient_boxes: Vec<BoxNorm> =
            observations.iter().filter(|o| self.transient_class_ids.contains(&o.class_id)).map(|o| o.bbox).collect();
        self.tracker.update(now_ms, &observations);
        let tracks = self.tracker.tracks();
        // Only bin areas read pixels; other cameras skip the conversion.
        let needs_pixels = self.zones.iter().any(|z| matches!(z.state, RuleState::Trash { classified: false, .. }));
        let grey = frame.picture.filter(|_| needs_pixels).map(GreyFrame::from_rgb);
        let mut events = Vec::new();
        for runtime in &mut self.zones {
            let zone = &runtime.zone;
            let (kind, signal) = match (&mut runtime.state, &zone.rule) {
                (RuleState::Misparked, ZoneRule::Misparked(params)) => (
                    IncidentKind::MisparkedBike,
                    misparked_bike::evaluate(zone, &runtime.class_ids, params, tracks, now_ms),
                ),
                (RuleState::Trash { watch, classified: true, .. }, ZoneRule::Trash(params)) => {
                    // A model sees the whole crop: with people or vehicles (a parked tricycle,
                    // a delivery van) covering much of it, this frame's reading says nothing
                    // about the bins, and the state holds.
                    let hidden = covered_share(&zone.polygon.bounds(), &transient_boxes) >= HIDDEN_SHARE;
                    let reading =
                        frame.zone_readings.iter().find(|(id, _)| *id == zone.id).map(|(_, r)| *r).filter(|_| !hidden);
                    (IncidentKind::TrashOverflow, watch.evaluate(params, reading, now_ms))
                }
                (RuleState::Trash { watch, reference, .. }, ZoneRule::Trash(params)) => {
                    let share = match (&grey, reference.as_ref()) {
                        (Some(grey), Some(reference)) => {
                            changed_share(grey, reference, &zone.polygon, &transient_boxes)
                        }
                        (Some(grey), None) => {
                            *reference = Some(grey.clone());
                            None
                        }
                        (None, _) => None,
                    };
                    (IncidentKind::TrashOverflow, watch.evaluate(params, share, now_ms))
                }
                (RuleState::Fall(watch), ZoneRule::Fall(params)) => (
                    IncidentKind::FallenPerson,
                    watch.evaluate(
                        zone,
                        &runtime.class_ids,
                        params,
                        tracks,
                        &self.masks,
                        frame.poses,
                        frame.frame_aspect,
                        now_ms,
                    ),
                ),
                _ => continue,
            };
            events.extend(self.book.update(now_ms, &zone.id, kind, &signal, &zone.lifecycle));
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covered_share_counts_the_union_of_boxes_inside_the_bounds() {
        let bounds = BoxNorm { x1: 0.0, y1: 0.0, x2: 0.5, y2: 0.5 };
        assert_eq!(covered_share(&bounds, &[]), 0.0);
        let left_half = BoxNorm { x1: 0.0, y1: 0.0, x2: 0.25, y2: 1.0 };
        assert!((covered_share(&bounds, &[left_half, left_half]) - 0.5).abs() < 0.01);
        let outside = BoxNorm { x1: 0.6, y1: 0.6, x2: 1.0, y2: 1.0 };
        assert_eq!(covered_share(&bounds, &[outside]), 0.0);
    }
}
