//! Zones: the polygons ops staff draw on each camera, with what they watch for. A detection
//! belongs to a zone when its anchor (bottom-centre of the box) is inside the polygon and its
//! class, score and area pass the zone's filters; masks remove detections from every zone.
//! Pure.

use crate::geometry::{BoxNorm, Polygon};

/// What a zone watches for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ZoneKind {
    /// Bikes must not be left here.
    NoParking,
    /// A trash point that must not overflow.
    BinArea,
    /// Where a fall must be noticed.
    FallWatch,
    /// Ignored by every rule (a bike shop's display, a poster with people on it).
    Mask,
}

impl ZoneKind {
    /// Name in config files.
    pub fn as_str(self) -> &'static str {
        match self {
            ZoneKind::NoParking => "no_parking",
            ZoneKind::BinArea => "bin_area",
            ZoneKind::FallWatch => "fall_watch",
            ZoneKind::Mask => "mask",
        }
    }
}

/// Misparked-bike rule parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct MisparkedParams {
    /// A bike stationary in the zone this long raises an incident. Default 5 min.
    pub dwell_ms: i64,
    /// This many bikes stationary for `pile_up_dwell_ms` raise an incident too. Default 5.
    pub pile_up_count: usize,
    /// Default 1 min.
    pub pile_up_dwell_ms: i64,
}

/// Where a bin zone's "overflowing" reading comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum TrashSource {
    /// Share of the zone that differs from a clean reference image (people and vehicles
    /// masked out, normalised for lighting). `None`: the first analysed frame becomes the
    /// reference (demos, replays of arbitrary footage).
    ReferenceDiff {
        /// PNG/JPEG of the clean bin area, same camera view.
        reference: Option<std::path::PathBuf>,
    },
    /// An ONNX classifier on the zone's crop; the reading is P(overflow classes).
    Classifier {
        /// The classifier's manifest.
        manifest: std::path::PathBuf,
    },
    /// The bin-state model (frozen embedding + logistic regression) on the zone's crop; the
    /// reading is P(overflowing). The default source.
    Model {
        /// The model file; `None`: the generic default beside the detector's manifest.
        model: Option<std::path::PathBuf>,
    },
}

/// Trash-overflow rule parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct TrashParams {
    /// Raise after the zone has read "overflowing" this long. Default 10 min.
    pub raise_after_ms: i64,
    /// A changed share (or model score) at or above this reads "overflowing". Default 0.15
    /// for the reference difference, 0.6 for a model.
    pub overflow_share: f32,
    /// A changed share at or below this reads "normal"; between the two, the reading holds
    /// (hysteresis). Default 0.06 for the reference difference, 0.4 for a model.
    pub normal_share: f32,
    /// The reading's source.
    pub source: TrashSource,
}

/// Fallen-person rule parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct FallParams {
    /// A person seen to fall who stays down this long raises an incident. Default 5 s.
    pub down_ms: i64,
    /// A box at least this much wider than tall is lying. Default 1.0.
    pub lying_aspect: f32,
    /// A box whose height fell to this share of the person's upright height (and is not
    /// clearly upright, aspect ≥ 0.7) is down. Default 0.5.
    pub collapse_ratio: f32,
    /// A person who vanishes while down still counts as down for this long. Default 30 s.
    pub vanish_hold_ms: i64,
    /// A fall: seen upright, then down, within this long (a deliberate lowering to the floor
    /// takes longer). Default 3 s.
    pub fall_window_ms: i64,
    /// A person down without a witnessed fall (lowered themselves, or fell out of view) raises
    /// after this long. Default 2 min.
    pub unwitnessed_down_ms: i64,
    /// Also run the detector on the frame rotated ±90° (lying people are often missed by an
    /// upright-trained detector). Default false: costs two more inferences per frame.
    pub rotated_pass: bool,
    /// Run the pose model (MoveNet) on person crops that matter (a tipped or dropped box, a
    /// person just lost): the body axis and head-below-hips say "down" where the box cannot.
    pub pose: bool,
}

/// What a zone does.
#[derive(Debug, Clone, PartialEq)]
pub enum ZoneRule {
    /// Misparked bikes.
    Misparked(MisparkedParams),
    /// Overflowing trash point.
    Trash(TrashParams),
    /// Fallen residents.
    Fall(FallParams),
    /// Masked out.
    Mask,
}

/// When an incident clears, and how often it is repeated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LifecycleParams {
    /// Clear once the condition has been absent this long.
    pub clear_after_ms: i64,
    /// After a clear, the same zone and rule cannot open again for this long.
    pub cooldown_ms: i64,
    /// An open incident is re-sent (`updated`) at least this often.
    pub heartbeat_ms: i64,
    /// A changed count is sent (`updated`) at most this often, and only once the new count
    /// held for [`crate::incident::COUNT_HELD_ANALYSES`] analyses in a row: flicker and
    /// passing riders must not page a steward every analysed frame (issue 11).
    pub update_min_interval_ms: i64,
}

/// A validated zone.
#[derive(Debug, Clone, PartialEq)]
pub struct Zone {
    /// Unique within the camera; appears in incident ids and topics.
    pub id: String,
    /// Kind.
    pub kind: ZoneKind,
    /// Area, normalised.
    pub polygon: Polygon,
    /// Detector classes the zone considers (names from the model manifest).
    pub classes: Vec<String>,
    /// Detections below this score are ignored here.
    pub min_score: f32,
    /// Boxes smaller than this share of the frame are ignored (far-away noise).
    pub min_area: f32,
    /// Boxes larger than this share of the frame are ignored (a bus passing close).
    pub max_area: f32,
    /// The rule.
    pub rule: ZoneRule,
    /// Lifecycle of its incidents.
    pub lifecycle: LifecycleParams,
}

impl Zone {
    /// Whether a detection of `class_id` (resolved from `classes`) counts in this zone.
    pub fn admits(&self, class_ids: &[u16], class_id: u16, score: f32, bbox: &BoxNorm) -> bool {
        class_ids.contains(&class_id)
            && score >= self.min_score
            && (self.min_area..=self.max_area).contains(&bbox.area())
            && self.polygon.contains(bbox.anchor())
    }
}
