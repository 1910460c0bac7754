//! Fallen residents: a confirmed person track whose box turns wider than tall, or collapses
//! in height against the person's own upright height, and stays down for `down_ms`. A person
//! who vanishes while down (the detector often misses lying people) still counts for
//! `vanish_hold_ms`. Hard negatives: bending over (down briefly, never `down_ms`), sitting (a
//! shorter box, but still clearly taller than wide), cycling (upright, moving).

use std::collections::BTreeMap;

use super::{describe_ms, ObjectRef, ZoneSignal};
use crate::geometry::BoxNorm;
use crate::track::Track;
use crate::zones::{FallParams, Zone};

/// What the rule remembers about one person.
#[derive(Debug, Clone, PartialEq)]
struct Person {
    /// Running estimate of the box height when upright.
    upright_height: Option<f32>,
    /// Since when the person has been down.
    down_since_ms: Option<i64>,
    last_seen_ms: i64,
    last: ObjectRef,
}

/// The fall rule's state for one zone.
#[derive(Debug, Clone, Default)]
pub struct FallWatch {
    people: BTreeMap<u64, Person>,
}

/// Whether a box looks like a person down, given their upright height if known.
/// `frame_aspect` (width ÷ height of the frame) turns the normalised box into its shape in
/// pixels: on a 16:9 frame a box as wide as tall in pixels is 0.56 wide in normalised units.
pub fn is_down(bbox: &BoxNorm, upright_height: Option<f32>, frame_aspect: f32, params: &FallParams) -> bool {
    let aspect = bbox.aspect() * frame_aspect;
    if aspect >= params.lying_aspect {
        return true;
    }
    let collapsed = upright_height.is_some_and(|upright| bbox.height() <= params.collapse_ratio * upright);
    collapsed && aspect >= 0.7
}

impl FallWatch {
    /// Evaluates one fall-watch zone.
    pub fn evaluate(
        &mut self,
        zone: &Zone,
        class_ids: &[u16],
        params: &FallParams,
        tracks: &[Track],
        frame_aspect: f32,
        now_ms: i64,
    ) -> ZoneSignal {
        for track in tracks.iter().filter(|t| t.confirmed && t.seen_at(now_ms)) {
            if !zone.admits(class_ids, track.class_id, track.score, &track.bbox) {
                continue;
            }
            let object =
                ObjectRef { track_id: track.id, class_id: track.class_id, bbox: track.bbox, score: track.score };
            let person = self.people.entry(track.id).or_insert(Person {
                upright_height: None,
                down_since_ms: None,
                last_seen_ms: now_ms,
                last: object.clone(),
            });
            person.last_seen_ms = now_ms;
            person.last = object;
            if is_down(&track.bbox, person.upright_height, frame_aspect, params) {
                person.down_since_ms.get_or_insert(now_ms);
            } else {
                person.down_since_ms = None;
                // Upright: learn the height (slow average, so a crouch does not reset it).
                if track.bbox.aspect() * frame_aspect < 0.7 {
                    let height = track.bbox.height();
                    person.upright_height = Some(match person.upright_height {
                        Some(previous) => 0.8 * previous + 0.2 * height,
                        None => height,
                    });
                }
            }
        }
        // Forget people who left upright, or vanished while down longer than the hold.
        self.people.retain(|_, person| match person.down_since_ms {
            Some(_) => now_ms - person.last_seen_ms <= params.vanish_hold_ms,
            None => person.last_seen_ms == now_ms,
        });
        let down: Vec<&Person> = self.people.values().filter(|p| p.down_since_ms.is_some()).collect();
        let longest = down.iter().filter_map(|p| p.down_since_ms).map(|since| now_ms - since).max().unwrap_or(0);
        let vanished = down.iter().filter(|p| p.last_seen_ms != now_ms).count();
        ZoneSignal {
            raise: longest >= params.down_ms,
            present: !down.is_empty(),
            score: down.iter().map(|p| p.last.score).fold(0.0, f32::max),
            count: down.len(),
            detail: match (down.len(), vanished) {
                (0, _) => "nobody down".to_string(),
                (count, 0) => format!("{count} person(s) down for {}", describe_ms(longest)),
                (count, vanished) => {
                    format!("{count} person(s) down for {} ({vanished} no longer detected)", describe_ms(longest))
                }
            },
            objects: down.iter().map(|p| p.last.clone()).collect(),
        }
    }
}
