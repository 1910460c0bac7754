//! Fallen residents. A person is *down* when their box turns wider than tall ("lying box"),
//! or collapses in height against their own upright height ("collapsed"). A fall is a person
//! seen upright and down within `fall_window_ms`: the fast descent tells a fall from someone
//! who lowers themselves to the floor on purpose. A witnessed fall raises once the person has
//! stayed down for `down_ms`; a person found down without a witnessed fall (lowered
//! themselves, or fell out of view) only after `unwitnessed_down_ms`.
//!
//! The detector often loses people once they are on the floor, so:
//! - a lying box that appears as a new track close to where an upright person was just lost
//!   continues that person (the tracker's IoU cannot follow a box turning on its side);
//! - "collapsed and lost": a person whose box drops fast (the top edge, by a good share of
//!   their upright height) and who is then lost inside the zone — not at the frame edge, not
//!   behind a mask — counts as down from the drop;
//! - anyone down who vanishes still counts for `vanish_hold_ms`;
//! - after someone seen upright is lost with nobody near, or when a box tips, the rule asks
//!   for the detector's rotated pass on the next look ([`FallWatch::rotated_regions`]: the
//!   last box of the person lost, the tipped box): the region cut out and turned ±90° shows a
//!   lying person upright, which the detector finds. Once per
//!   person until they are seen upright again: a person who stays lost or tipped is not asked
//!   for on every look (a crowd, someone crouched or cut by the frame edge).
//!
//! With `pose = true` the shell runs a pose model where the box cannot tell (a tipped or
//! dropped box, a person just lost: on the region where they were last seen) and passes a
//! [`PoseSummary`] per crop: a confident body axis far from vertical (or a lean with the
//! head below the hips) is down ("pose"), on a detected box or on a just-lost person's last
//! region.
//!
//! Hard negatives: bending over (down briefly, never `down_ms`), sitting (a shorter box, but
//! still clearly taller than wide), cycling (upright, moving), lowering oneself slowly to the
//! floor (no fast descent).

use std::collections::BTreeMap;

use super::{describe_ms, ObjectRef, ZoneSignal};
use crate::geometry::{BoxNorm, Polygon};
use crate::pose::PoseSummary;
use crate::track::Track;
use crate::zones::{FallParams, Zone};

/// A box this much taller than wide (in pixels) is upright.
const UPRIGHT_ASPECT: f32 = 0.7;

/// "Dropping": the top edge of the box moved down, beyond any move of its bottom edge, by at
/// least this share of the person's upright height between two looks.
const DROP_SHARE: f32 = 0.3;

/// "Tipped": a box upright on the previous look is now at least this wide (width ÷ height in
/// pixels), short of lying.
const TIPPED_ASPECT: f32 = 0.85;

/// Two looks further apart than this say nothing about how fast a box dropped, ms.
const DROP_MAX_GAP_MS: i64 = 2_500;

/// A box this close to the frame edge (normalised) may have left the picture.
const EDGE_MARGIN: f32 = 0.02;

/// Which cue says the person is down (the incident's detail names it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cue {
    /// The box is wider than tall.
    LyingBox,
    /// The box shrank to a share of the person's upright height.
    Collapsed,
    /// The box dropped fast, then the detector lost the person inside the zone.
    CollapsedAndLost,
    /// Found by the detector pass on the frame turned 90°.
    RotatedPass,
    /// The pose model reads the person lying (body axis, head below the hips).
    Pose,
}

impl Cue {
    /// Words for the incident's detail.
    pub fn as_str(self) -> &'static str {
        match self {
            Cue::LyingBox => "lying box",
            Cue::Collapsed => "collapsed",
            Cue::CollapsedAndLost => "collapsed and lost",
            Cue::RotatedPass => "rotated pass",
            Cue::Pose => "pose",
        }
    }
}

/// What the rule remembers about one person.
#[derive(Debug, Clone, PartialEq)]
struct Person {
    /// Running estimate of the box height when upright.
    upright_height: Option<f32>,
    /// When and where the person was last seen upright.
    upright: Option<(i64, BoxNorm)>,
    /// The previous look (time, box): how fast the box moves.
    previous: Option<(i64, BoxNorm)>,
    /// The box dropped fast at this time (and is not down yet).
    dropping_ms: Option<i64>,
    /// Since when the person has been down, and the cue.
    down_since_ms: Option<i64>,
    cue: Cue,
    /// The descent from upright to down was seen, and was fast: a fall.
    witnessed: bool,
    /// Seen on enough looks to be real (the tracker's confirmation).
    confirmed: bool,
    /// The rotated pass was already asked for this person since they were last seen upright
    /// (lost, or tipped): one look is what finds a lying person; asking again on every look
    /// while someone stays lost or crouched costs the pass (one inference on crops, two on the
    /// whole picture) a frame for nothing.
    rotated_asked: bool,
    last_seen_ms: i64,
    last: ObjectRef,
}

impl Person {
    fn new(object: ObjectRef, now_ms: i64) -> Self {
        Person {
            upright_height: None,
            upright: None,
            previous: None,
            dropping_ms: None,
            down_since_ms: None,
            cue: Cue::LyingBox,
            witnessed: false,
            confirmed: false,
            rotated_asked: false,
            last_seen_ms: now_ms,
            last: object,
        }
    }
}

/// The fall rule's state for one zone.
#[derive(Debug, Clone, Default)]
pub struct FallWatch {
    people: BTreeMap<u64, Person>,
    /// After the latest look: where the detector's rotated pass would help on the next one
    /// (the last box of each person just lost, each tipped box); empty: not wanted.
    rotated_regions: Vec<BoxNorm>,
}

/// Whether a box looks like a person down, given their upright height if known, and which
/// cue says so. `frame_aspect` (width ÷ height of the frame) turns the normalised box into its
/// shape in pixels: on a 16:9 frame a box as wide as tall in pixels is 0.56 wide in normalised
/// units.
pub fn down_cue(bbox: &BoxNorm, upright_height: Option<f32>, frame_aspect: f32, params: &FallParams) -> Option<Cue> {
    let aspect = bbox.aspect() * frame_aspect;
    if aspect >= params.lying_aspect {
        return Some(Cue::LyingBox);
    }
    let collapsed = upright_height.is_some_and(|upright| bbox.height() <= params.collapse_ratio * upright);
    (collapsed && aspect >= UPRIGHT_ASPECT).then_some(Cue::Collapsed)
}

/// Whether a box looks like a person down (see [`down_cue`]).
pub fn is_down(bbox: &BoxNorm, upright_height: Option<f32>, frame_aspect: f32, params: &FallParams) -> bool {
    down_cue(bbox, upright_height, frame_aspect, params).is_some()
}

/// Whether a person last seen in `bbox` may simply have walked out of view: at the frame's
/// edge, or touching a mask (masked detections are dropped before tracking).
fn may_have_left(bbox: &BoxNorm, masks: &[Polygon]) -> bool {
    let at_edge = bbox.x1 <= EDGE_MARGIN
        || bbox.y1 <= EDGE_MARGIN
        || bbox.x2 >= 1.0 - EDGE_MARGIN
        || bbox.y2 >= 1.0 - EDGE_MARGIN;
    let points = [
        (bbox.x1, bbox.y1),
        (bbox.x2, bbox.y1),
        (bbox.x1, bbox.y2),
        (bbox.x2, bbox.y2),
        ((bbox.x1 + bbox.x2) / 2.0, (bbox.y1 + bbox.y2) / 2.0),
    ];
    at_edge || masks.iter().any(|mask| points.iter().any(|&(x, y)| mask.contains(crate::geometry::PointNorm { x, y })))
}

/// The intersection of two boxes as a share of the smaller one.
fn overlap_of_smaller(a: &BoxNorm, b: &BoxNorm) -> f32 {
    let width = (a.x2.min(b.x2) - a.x1.max(b.x1)).max(0.0);
    let height = (a.y2.min(b.y2) - a.y1.max(b.y1)).max(0.0);
    let smaller = a.area().min(b.area());
    if smaller <= 0.0 {
        0.0
    } else {
        width * height / smaller
    }
}

/// `bbox` widened by its own width on each side: someone inside may hide the person.
fn widened(bbox: &BoxNorm) -> BoxNorm {
    BoxNorm { x1: bbox.x1 - bbox.width(), x2: bbox.x2 + bbox.width(), ..*bbox }
}

/// The pose read on a crop whose box matches `bbox` (the box it was asked for), if any.
fn pose_at<'a>(poses: &'a [(BoxNorm, PoseSummary)], bbox: &BoxNorm) -> Option<&'a PoseSummary> {
    poses.iter().find(|(at, _)| at.iou(bbox) >= 0.9).map(|(_, pose)| pose)
}

impl FallWatch {
    /// Where the pose model should look this frame (`admitted`: the boxes of this frame's
    /// detections the zone admits): boxes neither clearly upright nor already lying, boxes
    /// much shorter than the person's upright height, and the last box of a person seen
    /// upright within the fall window and not detected now (unless at the frame's edge).
    pub fn pose_requests(
        &self,
        admitted: &[BoxNorm],
        params: &FallParams,
        frame_aspect: f32,
        now_ms: i64,
    ) -> Vec<BoxNorm> {
        if !params.pose {
            return Vec::new();
        }
        let mut requests: Vec<BoxNorm> = admitted
            .iter()
            .filter(|bbox| {
                let aspect = bbox.aspect() * frame_aspect;
                let tipped = aspect >= UPRIGHT_ASPECT && aspect < params.lying_aspect;
                let shrunk = self.people.values().any(|p| {
                    p.last.bbox.iou(bbox) >= 0.3
                        && p.upright_height.is_some_and(|height| bbox.height() <= 0.75 * height)
                        && aspect < params.lying_aspect
                });
                tipped || shrunk
            })
            .copied()
            .collect();
        for person in self.people.values() {
            let just_lost = person.down_since_ms.is_none()
                && person.upright.is_some_and(|(seen, _)| now_ms - seen <= params.fall_window_ms)
                && person.last_seen_ms < now_ms
                && !admitted.iter().any(|bbox| overlap_of_smaller(bbox, &widened(&person.last.bbox)) > 0.0)
                && !may_have_left(&person.last.bbox, &[]);
            if just_lost {
                requests.push(person.last.bbox);
            }
        }
        requests
    }

    /// Evaluates one fall-watch zone. `masks` are the camera's mask zones (a person lost
    /// behind one is not "collapsed and lost"); `poses` the pose read on the boxes
    /// [`FallWatch::pose_requests`] asked for (empty without the pose stage).
    #[allow(clippy::too_many_arguments)]
    pub fn evaluate(
        &mut self,
        zone: &Zone,
        class_ids: &[u16],
        params: &FallParams,
        tracks: &[Track],
        masks: &[Polygon],
        poses: &[(BoxNorm, PoseSummary)],
        frame_aspect: f32,
        now_ms: i64,
    ) -> ZoneSignal {
        // Unconfirmed tracks count too: a person seen upright once, just before they fell, is
        // what tells a fall from a person found down. Raising needs a confirmed track.
        for track in tracks.iter().filter(|t| t.seen_at(now_ms)) {
            if !zone.admits(class_ids, track.class_id, track.score, &track.bbox) {
                continue;
            }
            let object =
                ObjectRef { track_id: track.id, class_id: track.class_id, bbox: track.bbox, score: track.score };
            let pose_down = pose_at(poses, &track.bbox).is_some_and(PoseSummary::is_down).then_some(Cue::Pose);
            let cue =
                down_cue(&track.bbox, self.people.get(&track.id).and_then(|p| p.upright_height), frame_aspect, params)
                    .or(pose_down);
            if !self.people.contains_key(&track.id) {
                let mut person = Person::new(object.clone(), now_ms);
                let upright = track.bbox.aspect() * frame_aspect < UPRIGHT_ASPECT;
                if cue.is_some() || !upright {
                    // A new track that is down, or tipped: most often the same person, whose box
                    // changed too much for the tracker to follow.
                    if let Some(lost) = self.lost_upright_near(&track.bbox, track.first_seen_ms, params.fall_window_ms)
                    {
                        let lost = self.people.remove(&lost).expect("found above");
                        person.upright_height = lost.upright_height;
                        person.upright = lost.upright;
                        person.previous = lost.previous;
                    }
                }
                if cue.is_some() {
                    // Down since it was first detected (confirmation takes a second look).
                    person.down_since_ms = Some(track.first_seen_ms);
                } else {
                    // Someone upright where a person was just "collapsed and lost": they got up
                    // (and the tracker gave them a new id).
                    let window = params.fall_window_ms;
                    self.people.retain(|_, p| {
                        !(matches!(p.cue, Cue::CollapsedAndLost | Cue::Pose)
                            && p.down_since_ms.is_some()
                            && p.last_seen_ms < now_ms
                            && now_ms - p.last_seen_ms <= window
                            && overlap_of_smaller(&p.last.bbox, &track.bbox) >= 0.5)
                    });
                }
                self.people.insert(track.id, person);
            }
            let person = self.people.get_mut(&track.id).expect("inserted above");
            person.last_seen_ms = now_ms;
            person.last = object;
            person.confirmed |= track.confirmed;
            let cue = down_cue(&track.bbox, person.upright_height, frame_aspect, params).or(pose_down);
            match cue {
                Some(cue) => {
                    let since = *person.down_since_ms.get_or_insert(now_ms);
                    if person.dropping_ms.is_none() && !person.witnessed {
                        person.cue = if track.rotated { Cue::RotatedPass } else { cue };
                    }
                    let descent_from = person.dropping_ms.or(person.upright.map(|(t, _)| t));
                    if descent_from.is_some_and(|from| since - from <= params.fall_window_ms) {
                        person.witnessed = true;
                    }
                }
                None => {
                    person.down_since_ms = None;
                    person.witnessed = false;
                    let aspect = track.bbox.aspect() * frame_aspect;
                    // Dropping: since the previous look (upright), the top edge went down fast by a
                    // good share of the upright height, or the box tipped from upright to wide.
                    person.dropping_ms = match (person.previous, person.upright_height) {
                        (Some((then, before)), Some(height)) if now_ms - then <= DROP_MAX_GAP_MS => {
                            // The top edge's fall beyond the bottom edge's: walking down the picture
                            // moves both.
                            let fell = (track.bbox.y1 - before.y1) - (track.bbox.y2 - before.y2).max(0.0);
                            let dropped = fell >= DROP_SHARE * height;
                            let tipped = before.aspect() * frame_aspect < UPRIGHT_ASPECT && aspect >= TIPPED_ASPECT;
                            (dropped || tipped).then_some(now_ms)
                        }
                        _ => None,
                    };
                    if aspect < UPRIGHT_ASPECT && person.dropping_ms.is_none() {
                        // Upright: learn the height (slow average, so a crouch does not reset it).
                        let height = track.bbox.height();
                        person.upright_height = Some(match person.upright_height {
                            Some(previous) => 0.8 * previous + 0.2 * height,
                            None => height,
                        });
                        person.upright = Some((now_ms, track.bbox));
                        person.rotated_asked = false;
                    }
                }
            }
            person.previous = Some((now_ms, track.bbox));
        }
        // People not seen now: one whose box had just dropped fast, lost inside the zone, is
        // down ("collapsed and lost") — unless they may be hidden behind someone seen now
        // within a body width (a crowd: boxes merge and part); one who was down still counts for the vanish hold; one
        // seen upright is kept for the fall window (a lying box may continue them).
        let seen_now: Vec<BoxNorm> =
            self.people.values().filter(|p| p.last_seen_ms == now_ms).map(|p| p.last.bbox).collect();
        self.rotated_regions.clear();
        for person in self.people.values_mut().filter(|p| p.last_seen_ms != now_ms) {
            // Hidden: someone seen now stands within one body width of the last box.
            let near = widened(&person.last.bbox);
            let hidden = seen_now.iter().any(|other| overlap_of_smaller(other, &near) > 0.0);
            // Lost just after being seen upright (a confirmed track: in a crowd, short-lived
            // tracks come and go), nobody near: they may be lying where the
            // upright detector no longer sees them; the rotated pass looks next time. (At the
            // frame's edge too: the pass only finds people, it raises nothing by itself.)
            // Once per spell (see `rotated_asked`).
            if person.down_since_ms.is_none()
                && person.confirmed
                && !hidden
                && !person.rotated_asked
                && person.upright.is_some_and(|(seen, _)| now_ms - seen <= params.fall_window_ms)
            {
                person.rotated_asked = true;
                self.rotated_regions.push(person.last.bbox);
            }
            if let Some(dropped) = person.dropping_ms {
                if person.down_since_ms.is_none() && !hidden && !may_have_left(&person.last.bbox, masks) {
                    person.down_since_ms = Some(dropped);
                    person.cue = Cue::CollapsedAndLost;
                    person.witnessed = true;
                }
            }
            // Just lost, and the pose model reads someone lying where they were (nobody else
            // near, whose pose the crop could hold): down now; a fall if they stood there
            // within the fall window.
            let lying_there = pose_at(poses, &person.last.bbox).is_some_and(PoseSummary::is_down);
            if person.down_since_ms.is_none() && lying_there && !hidden && !may_have_left(&person.last.bbox, masks) {
                person.down_since_ms = Some(now_ms);
                person.cue = Cue::Pose;
                person.witnessed = person.upright.is_some_and(|(seen, _)| now_ms - seen <= params.fall_window_ms);
            }
        }
        // A tipped box (neither upright nor lying) of someone not down: the rotated pass may
        // see them lying (once per spell: a box that stays tipped is someone crouched, sitting
        // or cut by the frame edge, whom the pass did not find lying).
        for person in self.people.values_mut() {
            let aspect = person.last.bbox.aspect() * frame_aspect;
            if person.last_seen_ms == now_ms
                && person.down_since_ms.is_none()
                && !person.rotated_asked
                && (UPRIGHT_ASPECT..params.lying_aspect).contains(&aspect)
            {
                person.rotated_asked = true;
                self.rotated_regions.push(person.last.bbox);
            }
        }
        self.people.retain(|_, person| match person.down_since_ms {
            Some(_) => now_ms - person.last_seen_ms <= params.vanish_hold_ms,
            None => now_ms - person.last_seen_ms <= params.fall_window_ms,
        });
        let down: Vec<&Person> = self.people.values().filter(|p| p.down_since_ms.is_some()).collect();
        let held = |p: &&Person| now_ms - p.down_since_ms.unwrap_or(now_ms);
        let raised: Vec<&&Person> = down
            .iter()
            // A single look is enough where the fall was seen (a lying box right where a
            // person stood a moment before); otherwise the track must be confirmed.
            .filter(|p| p.confirmed || p.witnessed)
            .filter(|p| held(p) >= if p.witnessed { params.down_ms } else { params.unwitnessed_down_ms })
            .collect();
        let longest = down.iter().map(held).max().unwrap_or(0);
        let vanished = down.iter().filter(|p| p.last_seen_ms != now_ms).count();
        // The cue of the person down longest among those raising (else among those down).
        let cue = raised.iter().copied().chain(down.iter()).max_by_key(|p| held(p)).map(|p| {
            let how = if p.witnessed { "fell" } else { "found down" };
            format!("{}, {how}", p.cue.as_str())
        });
        ZoneSignal {
            raise: !raised.is_empty(),
            present: !down.is_empty(),
            score: down.iter().map(|p| p.last.score).fold(0.0, f32::max),
            count: down.len(),
            detail: match (down.len(), vanished) {
                (0, _) => "nobody down".to_string(),
                (count, 0) => {
                    format!("{count} person(s) down for {} ({})", describe_ms(longest), cue.unwrap_or_default())
                }
                (count, vanished) => format!(
                    "{count} person(s) down for {} ({}; {vanished} no longer detected, box where last seen)",
                    describe_ms(longest),
                    cue.unwrap_or_default()
                ),
            },
            objects: down.iter().map(|p| p.last.clone()).collect(),
        }
    }

    /// Whether the detector's rotated pass (the picture turned ±90°: lying people are found
    /// as upright ones) should run on the next look: someone was just lost after being seen
    /// upright with nobody near, or someone's box tipped (each once until that person is seen
    /// upright again). The shell runs it only then
    /// (unless `rotated_pass = true` runs it on every look).
    pub fn wants_rotated_pass(&self) -> bool {
        !self.rotated_regions.is_empty()
    }

    /// Where the rotated pass should look on the next look (see
    /// [`FallWatch::wants_rotated_pass`]): the last box of each person just lost, each tipped
    /// box. The detector cuts a crop around each instead of turning the whole picture.
    pub fn rotated_regions(&self) -> &[BoxNorm] {
        &self.rotated_regions
    }

    /// A person seen upright (and not since) within the fall window before `first_seen_ms`,
    /// close to `bbox`: the lying box's centre within one upright height of where they stood.
    fn lost_upright_near(&self, bbox: &BoxNorm, first_seen_ms: i64, fall_window_ms: i64) -> Option<u64> {
        let centre = ((bbox.x1 + bbox.x2) / 2.0, (bbox.y1 + bbox.y2) / 2.0);
        self.people
            .iter()
            .filter(|(_, p)| p.down_since_ms.is_none() && p.last_seen_ms < first_seen_ms)
            .filter_map(|(&id, p)| {
                let (seen_ms, upright) = p.upright?;
                if first_seen_ms - seen_ms > fall_window_ms {
                    return None;
                }
                let anchor = upright.anchor();
                let distance = ((centre.0 - anchor.x).powi(2) + (centre.1 - anchor.y).powi(2)).sqrt();
                (distance <= upright.height()).then_some((distance, id))
            })
            .min_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, id)| id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::track::{Observation, Tracker, TrackerConfig};
    use crate::zones::{LifecycleParams, ZoneKind, ZoneRule};

    const PARAMS: FallParams = FallParams {
        down_ms: 5_000,
        lying_aspect: 1.0,
        collapse_ratio: 0.5,
        vanish_hold_ms: 30_000,
        fall_window_ms: 3_000,
        unwitnessed_down_ms: 120_000,
        rotated_pass: false,
        pose: true,
    };

    fn zone() -> Zone {
        Zone {
            id: "courtyard".into(),
            kind: ZoneKind::FallWatch,
            polygon: Polygon::whole_frame(),
            classes: vec!["person".into()],
            min_score: 0.3,
            min_area: 0.0,
            max_area: 1.0,
            rule: ZoneRule::Fall(PARAMS),
            lifecycle: LifecycleParams {
                clear_after_ms: 30_000,
                cooldown_ms: 300_000,
                heartbeat_ms: 300_000,
                update_min_interval_ms: 60_000,
            },
        }
    }

    fn person(x1: f32, y1: f32, x2: f32, y2: f32) -> Observation {
        Observation { class_id: 0, score: 0.8, bbox: BoxNorm { x1, y1, x2, y2 }, rotated: false }
    }

    const STANDING: [f32; 4] = [0.45, 0.30, 0.55, 0.60];
    const LYING: [f32; 4] = [0.35, 0.50, 0.65, 0.60];

    /// Feeds one look a second: `(from_s, to_s, box or none)`; returns the times (s) at
    /// which the zone raised, and the last signal.
    fn run(script: &[(i64, i64, Option<[f32; 4]>)], masks: &[Polygon]) -> (Vec<i64>, ZoneSignal) {
        let mut tracker = Tracker::new(TrackerConfig::default());
        let mut watch = FallWatch::default();
        let (mut raised, mut last) = (Vec::new(), ZoneSignal::default());
        for &(from, to, bbox) in script {
            for second in from..to {
                let now_ms = second * 1000;
                let observations: Vec<Observation> = bbox.iter().map(|b| person(b[0], b[1], b[2], b[3])).collect();
                tracker.update(now_ms, &observations);
                last = watch.evaluate(&zone(), &[0], &PARAMS, tracker.tracks(), masks, &[], 16.0 / 9.0, now_ms);
                if last.raise {
                    raised.push(second);
                }
            }
        }
        (raised, last)
    }

    #[test]
    fn a_fall_seen_raises_after_down_ms_and_a_person_found_down_only_after_the_long_hold() {
        // Upright, then lying from 20 s (a new track: the tracker cannot follow the box turning).
        let (raised, signal) = run(&[(0, 20, Some(STANDING)), (20, 40, Some(LYING))], &[]);
        assert_eq!(raised.first(), Some(&25), "{raised:?}");
        assert!(signal.detail.contains("lying box, fell"), "{}", signal.detail);
        // Found lying, nobody seen standing there before (or lowered over more than 3 s):
        // only after 2 min.
        let (raised, signal) = run(&[(0, 200, Some(LYING))], &[]);
        assert_eq!(raised.first(), Some(&120), "{raised:?}");
        assert!(signal.detail.contains("found down"), "{}", signal.detail);
        // Kneeling for 5 s (neither upright nor down), then lying: lowered, not fallen.
        let slow = [0.46, 0.40, 0.54, 0.60];
        let (raised, _) = run(&[(0, 20, Some(STANDING)), (20, 25, Some(slow)), (25, 60, Some(LYING))], &[]);
        assert!(raised.is_empty(), "{raised:?}");
    }

    #[test]
    fn a_person_whose_box_drops_and_is_then_lost_inside_the_zone_is_down() {
        let dropping = [0.45, 0.42, 0.55, 0.60]; // top edge 0.12 lower = 0.4 of the height
        let (raised, signal) = run(&[(0, 20, Some(STANDING)), (20, 21, Some(dropping)), (21, 40, None)], &[]);
        assert_eq!(raised.first(), Some(&25), "{raised:?}");
        assert!(signal.detail.contains("collapsed and lost"), "{}", signal.detail);
        // The incident's object (the snapshot's box) is where the person was last seen.
        let last = BoxNorm { x1: dropping[0], y1: dropping[1], x2: dropping[2], y2: dropping[3] };
        assert_eq!(signal.objects.iter().map(|o| o.bbox).collect::<Vec<_>>(), vec![last]);
        // Cleared once the vanish hold is over.
        let (raised, signal) = run(&[(0, 20, Some(STANDING)), (20, 21, Some(dropping)), (21, 60, None)], &[]);
        assert_eq!(raised.last(), Some(&50));
        assert!(!signal.present);
        // Lost at the frame edge, or behind a mask: may have walked out of view.
        let edge = |b: [f32; 4]| [b[0] + 0.44, b[1], b[2] + 0.44, b[3]];
        let (raised, _) = run(&[(0, 20, Some(edge(STANDING))), (20, 21, Some(edge(dropping))), (21, 40, None)], &[]);
        assert!(raised.is_empty(), "{raised:?}");
        let mask = Polygon {
            points: vec![(0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)]
                .into_iter()
                .map(|(x, y)| crate::geometry::PointNorm { x, y })
                .collect(),
        };
        let (raised, _) = run(&[(0, 20, Some(STANDING)), (20, 21, Some(dropping)), (21, 40, None)], &[mask]);
        assert!(raised.is_empty(), "{raised:?}");
        // Lost without a drop (walked behind something): nothing.
        let (raised, _) = run(&[(0, 20, Some(STANDING)), (20, 40, None)], &[]);
        assert!(raised.is_empty(), "{raised:?}");
    }

    #[test]
    fn a_person_lost_behind_someone_seen_is_not_collapsed_and_lost() {
        // Two people side by side; one's box drops and then only the other is detected (the
        // first walked behind them).
        let mut tracker = Tracker::new(TrackerConfig::default());
        let mut watch = FallWatch::default();
        let other = person(0.50, 0.30, 0.60, 0.60);
        for second in 0..40 {
            let now_ms = second * 1000;
            let observations = match second {
                0..20 => vec![person(0.45, 0.30, 0.55, 0.60), other.clone()],
                20 => vec![person(0.45, 0.42, 0.55, 0.60), other.clone()],
                _ => vec![other.clone()],
            };
            tracker.update(now_ms, &observations);
            let signal = watch.evaluate(&zone(), &[0], &PARAMS, tracker.tracks(), &[], &[], 16.0 / 9.0, now_ms);
            assert!(!signal.present, "at {second} s: {}", signal.detail);
        }
    }

    #[test]
    fn the_rotated_pass_is_asked_for_only_after_someone_is_lost_or_tipped() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        let mut watch = FallWatch::default();
        let mut look = |second: i64, observations: &[Observation]| {
            tracker.update(second * 1000, observations);
            let signal = watch.evaluate(&zone(), &[0], &PARAMS, tracker.tracks(), &[], &[], 16.0 / 9.0, second * 1000);
            (watch.rotated_regions().to_vec(), signal)
        };
        let standing = person(STANDING[0], STANDING[1], STANDING[2], STANDING[3]);
        for second in 0..20 {
            assert!(look(second, std::slice::from_ref(&standing)).0.is_empty(), "standing people need no rotated pass");
        }
        // Lost right after being seen upright: asked for (even at the frame's edge: the pass
        // only finds people), once: still lost on the next looks, not asked again.
        // Where: the last box they were seen in (the detector crops around it).
        assert_eq!(look(20, &[]).0, vec![standing.bbox]);
        assert!(look(21, &[]).0.is_empty(), "asked once per person lost");
        // The pass finds them lying where they stood: a fall, named by its cue.
        let lying = Observation { rotated: true, ..person(LYING[0], LYING[1], LYING[2], LYING[3]) };
        let mut raised = None;
        for second in 22..30 {
            let (wants, signal) = look(second, std::slice::from_ref(&lying));
            assert!(wants.is_empty(), "at {second} s: already down");
            if signal.raise && raised.is_none() {
                raised = Some(second);
                assert!(signal.detail.contains("rotated pass, fell"), "{}", signal.detail);
            }
        }
        assert_eq!(raised, Some(27));
        // A tipped box (0.8 wide for its height in pixels) is asked for on the look it tips,
        // not again while it stays tipped; again once the person was upright in between.
        let mut watch = FallWatch::default();
        let mut tracker = Tracker::new(TrackerConfig::default());
        let tipped = person(0.45, 0.42, 0.45 + 0.18 * 0.8 * 9.0 / 16.0, 0.60);
        let upright = person(0.45, 0.30, 0.45 + 0.30 * 0.4 * 9.0 / 16.0, 0.60);
        let script = [(&tipped, true), (&tipped, false), (&tipped, false), (&upright, false), (&tipped, true)];
        for (second, (observation, asked)) in script.into_iter().enumerate() {
            let now_ms = second as i64 * 1000;
            tracker.update(now_ms, std::slice::from_ref(observation));
            watch.evaluate(&zone(), &[0], &PARAMS, tracker.tracks(), &[], &[], 16.0 / 9.0, now_ms);
            assert_eq!(watch.wants_rotated_pass(), asked, "at {second} s");
            if asked {
                assert_eq!(watch.rotated_regions(), [tipped.bbox], "at {second} s: around the tipped box");
            }
        }
        let mut watch = FallWatch::default();
        let mut tracker = Tracker::new(TrackerConfig::default());
        let other = person(0.56, 0.30, 0.66, 0.60);
        for second in 0..22 {
            let observations = if second < 20 { vec![standing.clone(), other.clone()] } else { vec![other.clone()] };
            tracker.update(second * 1000, &observations);
            watch.evaluate(&zone(), &[0], &PARAMS, tracker.tracks(), &[], &[], 16.0 / 9.0, second * 1000);
            assert!(!watch.wants_rotated_pass(), "at {second} s");
        }
    }

    #[test]
    fn bending_over_briefly_and_sitting_raise_nothing() {
        let crouch = [0.44, 0.46, 0.56, 0.60];
        let sitting = [0.46, 0.42, 0.54, 0.60];
        let (raised, _) = run(&[(0, 30, Some(STANDING)), (30, 34, Some(crouch)), (34, 60, Some(STANDING))], &[]);
        assert!(raised.is_empty(), "{raised:?}");
        let (raised, _) = run(&[(0, 30, Some(STANDING)), (30, 330, Some(sitting))], &[]);
        assert!(raised.is_empty(), "{raised:?}");
    }

    const LYING_POSE: PoseSummary = PoseSummary { axis_deg: 80.0, head_below_hips: false, mean_score: 0.5 };
    const UPRIGHT_POSE: PoseSummary = PoseSummary { axis_deg: 5.0, head_below_hips: false, mean_score: 0.6 };

    /// Like [`run`], one look a second, with the pose stage: where the rule asks for a pose,
    /// the script's pose for that second is read there. Returns the raise times (s), the last
    /// signal and how many poses were asked for.
    fn run_with_pose(script: &[(i64, i64, Option<[f32; 4]>, PoseSummary)]) -> (Vec<i64>, ZoneSignal, usize) {
        let mut tracker = Tracker::new(TrackerConfig::default());
        let mut watch = FallWatch::default();
        let (mut raised, mut last, mut asked) = (Vec::new(), ZoneSignal::default(), 0);
        for &(from, to, bbox, pose) in script {
            for second in from..to {
                let now_ms = second * 1000;
                let observations: Vec<Observation> = bbox.iter().map(|b| person(b[0], b[1], b[2], b[3])).collect();
                let admitted: Vec<BoxNorm> = observations.iter().map(|o| o.bbox).collect();
                let requests = watch.pose_requests(&admitted, &PARAMS, 16.0 / 9.0, now_ms);
                asked += requests.len();
                let poses: Vec<(BoxNorm, PoseSummary)> = requests.iter().map(|r| (*r, pose)).collect();
                tracker.update(now_ms, &observations);
                last = watch.evaluate(&zone(), &[0], &PARAMS, tracker.tracks(), &[], &poses, 16.0 / 9.0, now_ms);
                if last.raise {
                    raised.push(second);
                }
            }
        }
        (raised, last, asked)
    }

    #[test]
    fn a_tipped_box_the_pose_reads_lying_is_a_fall_and_one_it_reads_upright_is_not() {
        // Box 0.8 wide for its height in pixels: neither upright nor a lying box.
        let tipped = [0.45, 0.42, 0.55, 0.60];
        let tipped = [tipped[0], tipped[1], tipped[0] + (tipped[3] - tipped[1]) * 0.8 * 9.0 / 16.0, tipped[3]];
        let (raised, signal, asked) =
            run_with_pose(&[(0, 20, Some(STANDING), UPRIGHT_POSE), (20, 40, Some(tipped), LYING_POSE)]);
        assert_eq!(raised.first(), Some(&25), "{raised:?}");
        assert!(signal.detail.contains("pose, fell"), "{}", signal.detail);
        assert_eq!(asked, 20, "standing people are never cropped; the tipped box every look");
        let (raised, _, _) =
            run_with_pose(&[(0, 20, Some(STANDING), UPRIGHT_POSE), (20, 40, Some(tipped), UPRIGHT_POSE)]);
        assert!(raised.is_empty(), "{raised:?}");
        // Found tipped and lying by pose, nobody seen standing before: only after the long hold.
        let (raised, _, _) = run_with_pose(&[(0, 200, Some(tipped), LYING_POSE)]);
        assert_eq!(raised.first(), Some(&120), "{raised:?}");
    }

    #[test]
    fn a_person_lost_where_the_pose_then_reads_someone_lying_is_down() {
        let (raised, signal, asked) =
            run_with_pose(&[(0, 20, Some(STANDING), UPRIGHT_POSE), (20, 40, None, LYING_POSE)]);
        assert_eq!(raised.first(), Some(&25), "{raised:?}");
        assert!(
            signal.detail.contains("pose, fell") && signal.detail.contains("no longer detected"),
            "{}",
            signal.detail
        );
        assert_eq!(asked, 1, "one look at the last box, then the person is down");
        // Walked behind something: the crop shows nobody lying (or someone upright).
        let (raised, signal, asked) =
            run_with_pose(&[(0, 20, Some(STANDING), UPRIGHT_POSE), (20, 40, None, UPRIGHT_POSE)]);
        assert!(raised.is_empty() && !signal.present, "{raised:?}");
        assert_eq!(asked, 3, "asked while within the fall window (3 s) of the last upright look");
        // Unsure pose (low mean score): nothing.
        let unsure = PoseSummary { mean_score: 0.1, ..LYING_POSE };
        let (raised, _, _) = run_with_pose(&[(0, 20, Some(STANDING), UPRIGHT_POSE), (20, 40, None, unsure)]);
        assert!(raised.is_empty(), "{raised:?}");
        // Got up again (upright where they lay, a new track): cleared, nothing raised.
        let (raised, signal, _) = run_with_pose(&[
            (0, 20, Some(STANDING), UPRIGHT_POSE),
            (20, 22, None, LYING_POSE),
            (22, 40, Some(STANDING), UPRIGHT_POSE),
        ]);
        assert!(raised.is_empty() && !signal.present, "{raised:?} {}", signal.detail);
    }

    #[test]
    fn without_pose_in_the_zone_nothing_is_asked() {
        let watch = FallWatch::default();
        let tipped = BoxNorm { x1: 0.45, y1: 0.42, x2: 0.53, y2: 0.60 };
        assert_eq!(watch.pose_requests(&[tipped], &PARAMS, 16.0 / 9.0, 0), vec![tipped]);
        let off = FallParams { pose: false, ..PARAMS };
        assert!(watch.pose_requests(&[tipped], &off, 16.0 / 9.0, 0).is_empty());
    }
}
