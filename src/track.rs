//! Multi-object tracking: IoU association in the ByteTrack manner (confident detections first,
//! then weak ones only to extend existing tracks), track confirmation after a few hits, a miss
//! budget in time (cameras are sampled every few seconds, not every frame), and a stationary
//! flag with the time the object stopped. Pure: `update(now_ms, detections)`.

use serde::{Deserialize, Serialize};

use crate::geometry::BoxNorm;

/// A detection as the tracker sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    /// Class id in the detector's class list.
    pub class_id: u16,
    /// Detector score.
    pub score: f32,
    /// Box, normalised.
    #[serde(rename = "box")]
    pub bbox: BoxNorm,
    /// Found by the detector pass on the frame turned 90° (lying people).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rotated: bool,
}

/// Tracker tuning. Defaults suit cameras analysed every 0.5–2 s.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackerConfig {
    /// Minimum IoU for a detection to continue a track.
    pub match_iou: f32,
    /// Detections at or above this start tracks and are matched first.
    pub high_score: f32,
    /// Hits needed before a track is confirmed (and can raise anything).
    pub confirm_hits: u32,
    /// A track unseen for longer than this is dropped.
    pub max_missed_ms: i64,
    /// An object whose anchor stays within this distance (normalised) counts as stationary.
    pub stationary_radius: f32,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        TrackerConfig {
            match_iou: 0.3,
            high_score: 0.5,
            confirm_hits: 2,
            max_missed_ms: 8_000,
            stationary_radius: 0.03,
        }
    }
}

impl TrackerConfig {
    /// The defaults, with a miss budget of at least three analysis intervals: a camera
    /// revisited every 10 s (or later, over capacity) must not lose a parked bike between
    /// two looks at it.
    pub fn for_interval(interval_ms: i64) -> Self {
        let defaults = TrackerConfig::default();
        TrackerConfig { max_missed_ms: defaults.max_missed_ms.max(3 * interval_ms), ..defaults }
    }
}

/// One tracked object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Track {
    /// Unique within the camera, increasing.
    pub id: u64,
    /// Class of the detection that started it.
    pub class_id: u16,
    /// Latest box.
    pub bbox: BoxNorm,
    /// Latest score.
    pub score: f32,
    /// Whether the latest box came from the rotated detector pass.
    pub rotated: bool,
    /// Detections matched so far.
    pub hits: u32,
    /// Whether it has been seen often enough to be real.
    pub confirmed: bool,
    /// First seen.
    pub first_seen_ms: i64,
    /// Last matched.
    pub last_seen_ms: i64,
    /// Since when the anchor has stayed within the stationary radius of `rest_anchor`.
    pub stationary_since_ms: i64,
    rest_anchor: crate::geometry::PointNorm,
}

impl Track {
    /// Whether it was matched in the latest update.
    pub fn seen_at(&self, now_ms: i64) -> bool {
        self.last_seen_ms == now_ms
    }

    /// How long it has been stationary.
    pub fn stationary_ms(&self, now_ms: i64) -> i64 {
        now_ms - self.stationary_since_ms
    }
}

/// The tracker of one camera.
#[derive(Debug, Clone)]
pub struct Tracker {
    config: TrackerConfig,
    tracks: Vec<Track>,
    next_id: u64,
}

impl Tracker {
    /// An empty tracker.
    pub fn new(config: TrackerConfig) -> Self {
        Tracker { config, tracks: Vec::new(), next_id: 1 }
    }

    /// Live tracks (matched within the miss budget).
    pub fn tracks(&self) -> &[Track] {
        &self.tracks
    }

    /// Feeds one analysed frame; returns the ids of tracks dropped by the miss budget.
    pub fn update(&mut self, now_ms: i64, observations: &[Observation]) -> Vec<u64> {
        let mut unmatched: Vec<usize> = (0..observations.len()).collect();
        let (strong, weak): (Vec<usize>, Vec<usize>) =
            unmatched.drain(..).partition(|&i| observations[i].score >= self.config.high_score);
        let mut free_tracks: Vec<usize> = (0..self.tracks.len()).collect();
        let leftover_strong = self.associate(now_ms, observations, strong, &mut free_tracks);
        // Weak detections only extend existing tracks (ByteTrack's second pass): a bike
        // half-hidden behind a passer-by keeps its track without weak noise starting new ones.
        self.associate(now_ms, observations, weak, &mut free_tracks);
        for index in leftover_strong {
            let observation = &observations[index];
            self.tracks.push(Track {
                id: self.next_id,
                class_id: observation.class_id,
                bbox: observation.bbox,
                score: observation.score,
                rotated: observation.rotated,
                hits: 1,
                confirmed: self.config.confirm_hits <= 1,
                first_seen_ms: now_ms,
                last_seen_ms: now_ms,
                stationary_since_ms: now_ms,
                rest_anchor: observation.bbox.anchor(),
            });
            self.next_id += 1;
        }
        let max_missed_ms = self.config.max_missed_ms;
        let mut dropped = Vec::new();
        self.tracks.retain(|track| {
            let keep = now_ms - track.last_seen_ms <= max_missed_ms;
            if !keep {
                dropped.push(track.id);
            }
            keep
        });
        dropped
    }

    /// Greedy IoU matching of `candidates` to free tracks of the same class, best pairs first.
    /// Returns the candidates left unmatched.
    fn associate(
        &mut self,
        now_ms: i64,
        observations: &[Observation],
        candidates: Vec<usize>,
        free_tracks: &mut Vec<usize>,
    ) -> Vec<usize> {
        let mut pairs: Vec<(f32, usize, usize)> = Vec::new();
        for &observation_index in &candidates {
            let observation = &observations[observation_index];
            for &track_index in free_tracks.iter() {
                let track = &self.tracks[track_index];
                if track.class_id != observation.class_id {
                    continue;
                }
                let iou = track.bbox.iou(&observation.bbox);
                if iou >= self.config.match_iou {
                    pairs.push((iou, observation_index, track_index));
                }
            }
        }
        pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut used_observations = Vec::new();
        for (_, observation_index, track_index) in pairs {
            if used_observations.contains(&observation_index) || !free_tracks.contains(&track_index) {
                continue;
            }
            used_observations.push(observation_index);
            free_tracks.retain(|&t| t != track_index);
            self.continue_track(track_index, &observations[observation_index], now_ms);
        }
        candidates.into_iter().filter(|i| !used_observations.contains(i)).collect()
    }

    fn continue_track(&mut self, track_index: usize, observation: &Observation, now_ms: i64) {
        let config = &self.config;
        let track = &mut self.tracks[track_index];
        track.bbox = observation.bbox;
        track.score = observation.score;
        track.rotated = observation.rotated;
        track.hits += 1;
        track.confirmed |= track.hits >= config.confirm_hits;
        track.last_seen_ms = now_ms;
        let anchor = observation.bbox.anchor();
        let moved = ((anchor.x - track.rest_anchor.x).powi(2) + (anchor.y - track.rest_anchor.y).powi(2)).sqrt();
        if moved > config.stationary_radius {
            track.rest_anchor = anchor;
            track.stationary_since_ms = now_ms;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observation(class_id: u16, score: f32, x: f32, y: f32) -> Observation {
        Observation { class_id, score, bbox: BoxNorm { x1: x, y1: y, x2: x + 0.05, y2: y + 0.1 }, rotated: false }
    }

    #[test]
    #[allow(clippy::type_complexity)] // a table of steps reads best inline
    fn confirms_keeps_identity_and_drops_after_the_miss_budget() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        // (time, observations, expected (id, confirmed) of live tracks)
        let steps: Vec<(i64, Vec<Observation>, Vec<(u64, bool)>)> = vec![
            (0, vec![observation(1, 0.9, 0.40, 0.50)], vec![(1, false)]),
            (2000, vec![observation(1, 0.9, 0.401, 0.50)], vec![(1, true)]),
            // A weak detection continues the track; a weak one elsewhere starts nothing.
            (4000, vec![observation(1, 0.35, 0.402, 0.50), observation(1, 0.35, 0.9, 0.1)], vec![(1, true)]),
            // Another class at the same place is another object.
            (6000, vec![observation(1, 0.9, 0.40, 0.50), observation(0, 0.9, 0.40, 0.50)], vec![(1, true), (2, false)]),
            // Unseen for up to 8 s: kept; then dropped.
            (14_000, vec![], vec![(1, true), (2, false)]),
            (14_001, vec![], vec![]),
            // A new object gets a new id, never a recycled one.
            (16_000, vec![observation(1, 0.9, 0.40, 0.50)], vec![(3, false)]),
        ];
        for (now_ms, observations, expected) in steps {
            tracker.update(now_ms, &observations);
            let live: Vec<(u64, bool)> = tracker.tracks().iter().map(|t| (t.id, t.confirmed)).collect();
            assert_eq!(live, expected, "at {now_ms} ms");
        }
    }

    #[test]
    fn stationary_since_resets_only_when_the_object_moves() {
        let mut tracker = Tracker::new(TrackerConfig::default());
        // A bike rolled slowly: jitter of 0.01 keeps it stationary, a 0.05 move resets.
        let table = [(0, 0.40, 0), (2000, 0.41, 0), (4000, 0.40, 0), (6000, 0.46, 6000), (8000, 0.465, 6000)];
        for (now_ms, x, expected_since) in table {
            let bike = Observation {
                class_id: 1,
                score: 0.9,
                bbox: BoxNorm { x1: x, y1: 0.4, x2: x + 0.2, y2: 0.6 },
                rotated: false,
            };
            tracker.update(now_ms, &[bike]);
            assert_eq!(tracker.tracks().len(), 1);
            assert_eq!(tracker.tracks()[0].stationary_since_ms, expected_since, "at {now_ms} ms");
        }
        assert_eq!(tracker.tracks()[0].stationary_ms(8000), 2000);
    }
}
