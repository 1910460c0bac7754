//! Zone rules: for each zone, turn the tracks (and, for bin areas, a pixel reading) into a
//! [`ZoneSignal`]. Rules say whether the condition holds *now*; the incident lifecycle
//! ([`crate::incident`]) decides when that opens, updates or clears an incident. Pure.

pub mod fallen_person;
pub mod misparked_bike;
pub mod trash_overflow;

use serde::Serialize;

use crate::geometry::BoxNorm;

/// The three incident kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IncidentKind {
    /// Shared bikes left in a no-parking zone, or piling up.
    MisparkedBike,
    /// A bin area that stays overflowing.
    TrashOverflow,
    /// A person down who does not get up.
    FallenPerson,
}

impl IncidentKind {
    /// Every kind.
    pub const ALL: [IncidentKind; 3] =
        [IncidentKind::MisparkedBike, IncidentKind::TrashOverflow, IncidentKind::FallenPerson];

    /// The kind named `name` (as in events and topics).
    pub fn from_name(name: &str) -> Option<IncidentKind> {
        IncidentKind::ALL.into_iter().find(|kind| kind.as_str() == name)
    }

    /// Name in events and topics.
    pub fn as_str(self) -> &'static str {
        match self {
            IncidentKind::MisparkedBike => "misparked_bike",
            IncidentKind::TrashOverflow => "trash_overflow",
            IncidentKind::FallenPerson => "fallen_person",
        }
    }
}

/// An object that supports a signal (evidence).
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct ObjectRef {
    /// Track id.
    pub track_id: u64,
    /// Detector class id.
    pub class_id: u16,
    /// Latest box, normalised.
    #[serde(rename = "box")]
    pub bbox: BoxNorm,
    /// Latest score.
    pub score: f32,
}

/// What a zone's rule says about the current frame.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ZoneSignal {
    /// The condition is established (dwell, duration reached): an incident may open.
    pub raise: bool,
    /// The problem is still visible: an open incident stays open.
    pub present: bool,
    /// Confidence of the signal, 0–1.
    pub score: f32,
    /// How many objects (bikes, people) support it; 0 for trash.
    pub count: usize,
    /// One line for people: "3 bikes, longest stationary 7 min".
    pub detail: String,
    /// The supporting objects.
    pub objects: Vec<ObjectRef>,
}

/// Human-readable duration for details.
pub fn describe_ms(ms: i64) -> String {
    let seconds = ms / 1000;
    if seconds < 120 {
        format!("{seconds} s")
    } else {
        format!("{} min", seconds / 60)
    }
}
