//! Overflowing trash points. COCO has no class for bins or rubbish, so the state source is a
//! reading per frame: by default P(overflowing) from the bin-state model on the zone's crop
//! ([`crate::bin_state`], computed by the caller), or — the fallback, `source = "reference"` —
//! the share of the bin zone that differs from a clean reference image captured by ops, with
//! people and vehicles masked out and normalised for lighting. The rule adds hysteresis twice: on the reading (overflow above one share, normal below a lower
//! one, unchanged between) and in time (raise after `raise_after_ms` of "overflowing"; the
//! lifecycle clears after its `clear_after_ms` of "normal").
//!
//! What the reference difference can see: bags and boxes piled beside or on the bins, lids
//! propped open by rubbish, bins moved or knocked over — anything that changes the zone's
//! appearance relative to its own brightness pattern. What it cannot: *why* the zone changed
//! (a parked delivery tricycle or a market stall reads as overflow unless it is a detected
//! vehicle class), rubbish inside a closed bin, or change under heavy shadow edges that move
//! through the day (a shadow boundary crossing the zone is structure, not a gain change).
//! A reference taken in another season or after the bins were replaced must be re-captured.

use super::ZoneSignal;
use crate::geometry::{BoxNorm, Polygon};
use crate::zones::TrashParams;

/// A grey image with its size, for the pixel reading.
#[derive(Debug, Clone, PartialEq)]
pub struct GreyFrame {
    /// Width in pixels.
    pub width: usize,
    /// Height in pixels.
    pub height: usize,
    /// Row-major luma.
    pub luma: Vec<u8>,
}

impl GreyFrame {
    /// From an RGB image (BT.601 luma).
    pub fn from_rgb(image: &image::RgbImage) -> Self {
        let luma = image
            .pixels()
            .map(|p| ((299 * u32::from(p[0]) + 587 * u32::from(p[1]) + 114 * u32::from(p[2])) / 1000) as u8)
            .collect();
        GreyFrame { width: image.width() as usize, height: image.height() as usize, luma }
    }

    /// Nearest-neighbour resize (references may be captured at another resolution).
    pub fn resized(&self, width: usize, height: usize) -> GreyFrame {
        if (width, height) == (self.width, self.height) {
            return self.clone();
        }
        let luma = (0..height)
            .flat_map(|y| {
                let source_y = y * self.height / height;
                (0..width).map(move |x| self.luma[source_y * self.width + x * self.width / width])
            })
            .collect();
        GreyFrame { width, height, luma }
    }
}

/// A pixel whose lighting-normalised value differs by more than this many standard
/// deviations counts as changed.
const CHANGED_Z: f32 = 1.0;
/// Fewer usable pixels than this (zone hidden by people, tiny zone): no reading.
const MIN_SAMPLES: usize = 64;

/// Share (0–1) of the zone's visible pixels that differ from the reference, or `None` when too
/// little of the zone is visible. Each image is normalised over the zone to zero mean and unit
/// variance first, so a global change of brightness or contrast (clouds, street lights,
/// camera gain) changes nothing. Pixels inside `excluded` boxes (people, vehicles) are skipped.
pub fn changed_share(frame: &GreyFrame, reference: &GreyFrame, zone: &Polygon, excluded: &[BoxNorm]) -> Option<f32> {
    let reference = reference.resized(frame.width, frame.height);
    let bounds = zone.bounds();
    let (width, height) = (frame.width as f32, frame.height as f32);
    let x_range = ((bounds.x1 * width).floor().max(0.0) as usize)..((bounds.x2 * width).ceil().min(width) as usize);
    let y_range = ((bounds.y1 * height).floor().max(0.0) as usize)..((bounds.y2 * height).ceil().min(height) as usize);
    let mut samples: Vec<(f32, f32)> = Vec::new();
    for y in y_range.step_by(2) {
        for x in x_range.clone().step_by(2) {
            let point = crate::geometry::PointNorm { x: (x as f32 + 0.5) / width, y: (y as f32 + 0.5) / height };
            if !zone.contains(point)
                || excluded.iter().any(|b| point.x >= b.x1 && point.x <= b.x2 && point.y >= b.y1 && point.y <= b.y2)
            {
                continue;
            }
            let index = y * frame.width + x;
            samples.push((f32::from(frame.luma[index]), f32::from(reference.luma[index])));
        }
    }
    if samples.len() < MIN_SAMPLES {
        return None;
    }
    let stats = |pick: fn(&(f32, f32)) -> f32| {
        let mean = samples.iter().map(pick).sum::<f32>() / samples.len() as f32;
        let variance = samples.iter().map(|s| (pick(s) - mean).powi(2)).sum::<f32>() / samples.len() as f32;
        // A flat zone (a blank wall) has no structure to normalise: a floor of 8 grey levels
        // keeps sensor noise from reading as change.
        (mean, variance.sqrt().max(8.0))
    };
    let (frame_mean, frame_std) = stats(|s| s.0);
    let (reference_mean, reference_std) = stats(|s| s.1);
    let changed = samples
        .iter()
        .filter(|(f, r)| ((f - frame_mean) / frame_std - (r - reference_mean) / reference_std).abs() > CHANGED_Z)
        .count();
    Some(changed as f32 / samples.len() as f32)
}

/// The trash rule's state for one zone.
#[derive(Debug, Clone, Default)]
pub struct TrashWatch {
    overflowing_since_ms: Option<i64>,
    last_share: Option<f32>,
}

impl TrashWatch {
    /// Evaluates one bin zone with this frame's reading (`None`: no reading this frame, the
    /// state holds).
    pub fn evaluate(&mut self, params: &TrashParams, share: Option<f32>, now_ms: i64) -> ZoneSignal {
        if let Some(share) = share {
            self.last_share = Some(share);
            if share >= params.overflow_share {
                self.overflowing_since_ms.get_or_insert(now_ms);
            } else if share <= params.normal_share {
                self.overflowing_since_ms = None;
            }
        }
        let overflowing_ms = self.overflowing_since_ms.map(|since| now_ms - since);
        let share = self.last_share.unwrap_or(0.0);
        ZoneSignal {
            raise: overflowing_ms.is_some_and(|ms| ms >= params.raise_after_ms),
            present: overflowing_ms.is_some(),
            score: share.clamp(0.0, 1.0),
            count: 0,
            detail: match (overflowing_ms, &params.source) {
                (Some(ms), crate::zones::TrashSource::ReferenceDiff { .. }) => {
                    format!("{:.0}% of the bin area changed for {}", share * 100.0, super::describe_ms(ms))
                }
                (None, crate::zones::TrashSource::ReferenceDiff { .. }) => {
                    format!("normal ({:.0}% changed)", share * 100.0)
                }
                (Some(ms), _) => format!("overflowing (score {share:.2}) for {}", super::describe_ms(ms)),
                (None, _) => format!("normal (score {share:.2})"),
            },
            objects: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scene(width: usize, height: usize, f: impl Fn(usize, usize) -> u8) -> GreyFrame {
        GreyFrame {
            width,
            height,
            luma: (0..height).flat_map(|y| (0..width).map(move |x| (x, y))).map(|(x, y)| f(x, y)).collect(),
        }
    }

    /// A textured clean bin area (a brick-like pattern).
    fn clean(x: usize, y: usize) -> u8 {
        if (x / 8 + y / 4).is_multiple_of(2) {
            90
        } else {
            150
        }
    }

    #[test]
    fn lighting_changes_read_as_unchanged_and_rubbish_reads_as_changed() {
        let reference = scene(160, 120, clean);
        let zone = Polygon::whole_frame();
        // (case, frame, expected share range)
        let table: Vec<(&str, GreyFrame, std::ops::RangeInclusive<f32>)> = vec![
            ("same", scene(160, 120, clean), 0.0..=0.01),
            (
                "dusk: darker, less contrast",
                scene(160, 120, |x, y| (f32::from(clean(x, y)) * 0.5 + 10.0) as u8),
                0.0..=0.01,
            ),
            ("flicker: brighter", scene(160, 120, |x, y| clean(x, y).saturating_add(60)), 0.0..=0.01),
            (
                "bags over the left 40%",
                scene(160, 120, |x, y| if x < 64 { 30 + ((x * 7 + y * 3) % 50) as u8 * 4 } else { clean(x, y) }),
                0.2..=0.6,
            ),
        ];
        for (case, frame, expected) in table {
            let share = changed_share(&frame, &reference, &zone, &[]).unwrap();
            assert!(expected.contains(&share), "{case}: share {share}");
        }
    }

    #[test]
    fn excluded_boxes_are_not_counted_and_a_hidden_zone_gives_no_reading() {
        let reference = scene(160, 120, clean);
        let person_over_left_half = scene(160, 120, |x, y| if x < 80 { 20 } else { clean(x, y) });
        let person = BoxNorm { x1: 0.0, y1: 0.0, x2: 0.5, y2: 1.0 };
        let share = changed_share(&person_over_left_half, &reference, &Polygon::whole_frame(), &[person]).unwrap();
        assert!(share < 0.01, "the person is masked out: {share}");
        let everything = BoxNorm { x1: 0.0, y1: 0.0, x2: 1.0, y2: 1.0 };
        assert_eq!(changed_share(&reference, &reference, &Polygon::whole_frame(), &[everything]), None);
    }
}
