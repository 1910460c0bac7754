//! Change gating, pure: whether a camera's zones changed since its last *inferred* frame, and
//! so whether that frame's detections can stand for this one instead of running the model.
//!
//! A picture's [`Signature`] is the mean luma of each cell of a fixed [`GRID_COLUMNS`] ×
//! [`GRID_ROWS`] grid (≈ 6.5 px cells on the model's 416-wide view: a small person covers
//! several). The [`Regions`] are the cells of the camera's zones (their bounds, one cell of
//! margin; the whole frame for a camera without zones). Per region, the current cells are
//! matched to the reference cells for lighting (`current ≈ gain · reference + offset`, from the
//! two regions' means and spreads), and the region has changed when any cell is off that fit by
//! more than [`CHANGED_GREY`] grey levels: a global lighting change moves every cell alike and
//! fits; a person moving moves a few cells and does not. One cell is enough, in every zone
//! kind: motion in a fall-watch zone is always a change.
//!
//! A [`Gate`] reuses the reference's detections only when all of these hold:
//! - nothing changed beyond noise in any region ([`difference`] ≤ [`CHANGED_GREY`]);
//! - the reference is younger than the camera's maximum staleness (default 60 s);
//! - the reference is *settled*: its detections agree with those of the inference before it
//!   (same classes, boxes at IoU ≥ [`AGREE_IOU`], counted where they touch a region). A frame
//!   whose inference missed something the one before saw (detector flicker, a person just
//!   landed) is not repeated for a minute; the next unchanged frame is inferred again.
//!
//! No I/O, no clock: time is passed in (the live shell uses arrival time, `replay` footage
//! time), as in every other core.

use crate::detect::Detection;
use crate::geometry::BoxNorm;
use crate::zones::{Zone, ZoneKind};

/// Cells across the picture.
pub const GRID_COLUMNS: usize = 64;
/// Cells down the picture.
pub const GRID_ROWS: usize = 36;
const CELLS: usize = GRID_COLUMNS * GRID_ROWS;

/// A cell off the lighting fit by more than this many grey levels (0–255) is a change.
/// Sensor and compression noise on a cell's mean stays within about 3 (measured in
/// BENCHMARKS.md, "Change gating"); a person crossing a cell moves it by tens.
pub const CHANGED_GREY: f32 = 8.0;

/// Below this spread (grey levels) a region is flat (night, a blank wall): no gain is fitted
/// from it, only the offset.
const FLAT_SPREAD_GREY: f32 = 6.0;

/// The lighting gain fitted between two signatures is held within this factor either way.
const MAX_GAIN: f32 = 2.0;

/// Two detections agree when of one class with boxes overlapping at least this much.
pub const AGREE_IOU: f32 = 0.5;

/// The mean luma of each grid cell of a picture.
#[derive(Debug, Clone, PartialEq)]
pub struct Signature {
    /// Row-major, [`GRID_COLUMNS`] × [`GRID_ROWS`], grey levels 0–255.
    cells: Vec<f32>,
}

impl Signature {
    /// The signature of an RGB picture of any size (luma ≈ BT.601). A picture smaller than the
    /// grid leaves some cells empty (0), the same way every time.
    pub fn of_rgb(picture: &image::RgbImage) -> Self {
        let (width, height) = (picture.width() as usize, picture.height() as usize);
        let mut sums = vec![0u32; CELLS];
        let mut counts = vec![0u32; CELLS];
        if width > 0 && height > 0 {
            let columns: Vec<usize> = (0..width).map(|x| x * GRID_COLUMNS / width).collect();
            for (y, row) in picture.as_raw().chunks_exact(width * 3).enumerate() {
                let base = y * GRID_ROWS / height * GRID_COLUMNS;
                for (pixel, column) in row.chunks_exact(3).zip(&columns) {
                    let luma = 77 * u32::from(pixel[0]) + 150 * u32::from(pixel[1]) + 29 * u32::from(pixel[2]);
                    sums[base + column] += luma;
                    counts[base + column] += 1;
                }
            }
        }
        let cells = sums.iter().zip(&counts).map(|(&sum, &count)| sum as f32 / 256.0 / count.max(1) as f32).collect();
        Signature { cells }
    }

    /// A signature from cell values (tests, tools): `cells` row-major, [`GRID_COLUMNS`] ×
    /// [`GRID_ROWS`] of them (missing ones are 0, extra ones ignored).
    pub fn from_cells(cells: &[f32]) -> Self {
        let mut all = vec![0.0; CELLS];
        for (slot, value) in all.iter_mut().zip(cells) {
            *slot = *value;
        }
        Signature { cells: all }
    }
}

/// The grid cells the gate compares: one region per zone (masks excluded).
#[derive(Debug, Clone, PartialEq)]
pub struct Regions {
    regions: Vec<Region>,
}

#[derive(Debug, Clone, PartialEq)]
struct Region {
    /// The cells compared, indices into a signature.
    cells: Vec<u16>,
    /// Where they lie, normalised (detections touching it count for agreement).
    bounds: BoxNorm,
}

impl Regions {
    /// The regions of a camera's zones: each zone's bounds, widened by one cell (a person whose
    /// feet step into a zone moves the cells around its edge first). A camera without zones
    /// (or with masks only) gets the whole frame, so its detections stay current too.
    pub fn of_zones(zones: &[Zone]) -> Self {
        let mut regions: Vec<Region> = zones
            .iter()
            .filter(|zone| zone.kind != ZoneKind::Mask)
            .map(|zone| Region::covering(&zone.polygon.bounds()))
            .collect();
        if regions.is_empty() {
            regions.push(Region::covering(&BoxNorm { x1: 0.0, y1: 0.0, x2: 1.0, y2: 1.0 }));
        }
        Regions { regions }
    }

    /// Whether a box (normalised) overlaps any region.
    fn touches(&self, bbox: &BoxNorm) -> bool {
        self.regions.iter().any(|region| {
            let b = &region.bounds;
            bbox.x1 < b.x2 && bbox.x2 > b.x1 && bbox.y1 < b.y2 && bbox.y2 > b.y1
        })
    }
}

impl Region {
    fn covering(bounds: &BoxNorm) -> Self {
        // Cells the bounds touch, one more on each side, at least one.
        let to_cells = |low: f32, high: f32, count: usize| {
            let first = ((low * count as f32).floor() as i64 - 1).clamp(0, count as i64 - 1);
            let end = ((high * count as f32).ceil() as i64 + 1).clamp(first + 1, count as i64);
            first as usize..end as usize
        };
        let columns = to_cells(bounds.x1, bounds.x2, GRID_COLUMNS);
        let rows = to_cells(bounds.y1, bounds.y2, GRID_ROWS);
        let region_bounds = BoxNorm {
            x1: columns.start as f32 / GRID_COLUMNS as f32,
            y1: rows.start as f32 / GRID_ROWS as f32,
            x2: columns.end as f32 / GRID_COLUMNS as f32,
            y2: rows.end as f32 / GRID_ROWS as f32,
        };
        let cells =
            rows.flat_map(|row| columns.clone().map(move |column| (row * GRID_COLUMNS + column) as u16)).collect();
        Region { cells, bounds: region_bounds }
    }
}

/// Mean and spread of a region's cells in a signature.
fn spread(signature: &Signature, cells: &[u16]) -> (f32, f32) {
    let count = cells.len().max(1) as f32;
    let mean = cells.iter().map(|&c| signature.cells[usize::from(c)]).sum::<f32>() / count;
    let variance = cells.iter().map(|&c| (signature.cells[usize::from(c)] - mean).powi(2)).sum::<f32>() / count;
    (mean, variance.sqrt())
}

/// The largest change between two signatures over the regions, in grey levels: per region, how
/// far the most changed cell of `current` is from `reference` once the region's lighting is
/// matched (gain from the two spreads, within [`MAX_GAIN`], offset from the two means).
pub fn difference(reference: &Signature, current: &Signature, regions: &Regions) -> f32 {
    let mut largest: f32 = 0.0;
    for region in &regions.regions {
        let (reference_mean, reference_spread) = spread(reference, &region.cells);
        let (current_mean, current_spread) = spread(current, &region.cells);
        let gain = if reference_spread >= FLAT_SPREAD_GREY && current_spread >= FLAT_SPREAD_GREY {
            (current_spread / reference_spread).clamp(1.0 / MAX_GAIN, MAX_GAIN)
        } else {
            1.0
        };
        for &cell in &region.cells {
            let cell = usize::from(cell);
            let expected = current_mean + gain * (reference.cells[cell] - reference_mean);
            largest = largest.max((current.cells[cell] - expected).abs());
        }
    }
    largest
}

/// Whether two inferences saw the same things where the regions are: the same number of
/// detections touching them, each matched one to one by class and IoU ≥ [`AGREE_IOU`].
pub fn agree(before: &[Detection], after: &[Detection], frame: (u32, u32), regions: &Regions) -> bool {
    let relevant = |detections: &[Detection]| -> Vec<(u16, BoxNorm)> {
        detections
            .iter()
            .map(|d| (d.class_id, BoxNorm::from_pixels(d.box_px, frame.0, frame.1)))
            .filter(|(_, bbox)| regions.touches(bbox))
            .collect()
    };
    let before = relevant(before);
    let mut after = relevant(after);
    if before.len() != after.len() {
        return false;
    }
    before.iter().all(|(class, bbox)| {
        let best = after
            .iter()
            .enumerate()
            .filter(|(_, (other_class, _))| other_class == class)
            .map(|(index, (_, other))| (index, bbox.iou(other)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        match best {
            Some((index, iou)) if iou >= AGREE_IOU => {
                after.swap_remove(index);
                true
            }
            _ => false,
        }
    })
}

/// Why a frame is inferred rather than reusing detections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InferReason {
    /// No inference yet (start, or the zones changed).
    First,
    /// The last inference disagreed with the one before it.
    Unsettled,
    /// The last inference is as old as the maximum staleness.
    Stale,
    /// Something changed in a region.
    Changed,
    /// The frame must be inferred whatever it looks like: the fall rule asked for the rotated
    /// person pass on it.
    Asked,
}

impl InferReason {
    /// Every reason, in a fixed order (metrics).
    pub const ALL: [InferReason; 5] =
        [InferReason::First, InferReason::Unsettled, InferReason::Stale, InferReason::Changed, InferReason::Asked];

    /// Its name in metrics and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            InferReason::First => "first",
            InferReason::Unsettled => "unsettled",
            InferReason::Stale => "stale",
            InferReason::Changed => "changed",
            InferReason::Asked => "asked",
        }
    }
}

/// The gate's call for one frame.
#[derive(Debug, PartialEq)]
pub enum Decision<'a> {
    /// Nothing changed: these detections (the last inference's, in frame pixels) stand for
    /// the frame.
    Reuse(&'a [Detection]),
    /// Run the model.
    Infer(InferReason),
}

/// The last inferred frame.
#[derive(Debug, Clone)]
struct Reference {
    signature: Signature,
    at_ms: i64,
    detections: Vec<Detection>,
    frame: (u32, u32),
    settled: bool,
}

/// One camera's gate: its regions, maximum staleness and last inferred frame.
#[derive(Debug, Clone)]
pub struct Gate {
    regions: Regions,
    max_stale_ms: i64,
    reference: Option<Reference>,
}

impl Gate {
    /// A gate for a camera's zones that reuses detections at most `max_stale_ms` after the
    /// inference that made them.
    pub fn new(zones: &[Zone], max_stale_ms: i64) -> Self {
        Gate { regions: Regions::of_zones(zones), max_stale_ms, reference: None }
    }

    /// The same gate for (possibly) new zones and staleness; the reference is dropped when the
    /// zones' regions changed.
    pub fn reconfigure(&mut self, zones: &[Zone], max_stale_ms: i64) {
        let regions = Regions::of_zones(zones);
        if regions != self.regions {
            self.regions = regions;
            self.reference = None;
        }
        self.max_stale_ms = max_stale_ms;
    }

    /// Whether the frame at `now_ms`, `frame` pixels large, with `signature` must be inferred.
    /// `asked`: the frame must be inferred (the rotated pass was asked for on it).
    pub fn decide(&self, now_ms: i64, frame: (u32, u32), signature: &Signature, asked: bool) -> Decision<'_> {
        let Some(reference) = self.reference.as_ref().filter(|reference| reference.frame == frame) else {
            // Nothing inferred yet, or the camera's resolution changed (boxes are in pixels).
            return Decision::Infer(InferReason::First);
        };
        if asked {
            return Decision::Infer(InferReason::Asked);
        }
        if now_ms.saturating_sub(reference.at_ms) >= self.max_stale_ms || now_ms < reference.at_ms {
            return Decision::Infer(InferReason::Stale);
        }
        if difference(&reference.signature, signature, &self.regions) > CHANGED_GREY {
            return Decision::Infer(InferReason::Changed);
        }
        if !reference.settled {
            return Decision::Infer(InferReason::Unsettled);
        }
        Decision::Reuse(&reference.detections)
    }

    /// Records an inferred frame as the new reference. An inference older than the reference
    /// (two sessions finishing out of order) is ignored.
    pub fn record(&mut self, now_ms: i64, signature: Signature, detections: Vec<Detection>, frame: (u32, u32)) {
        if self.reference.as_ref().is_some_and(|reference| now_ms < reference.at_ms) {
            return;
        }
        let settled = self.reference.as_ref().is_some_and(|reference| {
            reference.frame == frame && agree(&reference.detections, &detections, frame, &self.regions)
        });
        self.reference = Some(Reference { signature, at_ms: now_ms, detections, frame, settled });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::geometry::{PointNorm, Polygon};
    use crate::zones::{LifecycleParams, MisparkedParams, ZoneRule};

    const W: u32 = 416;
    const H: u32 = 234;

    /// A street-like grey picture: a gradient with texture, and seeded noise.
    fn street(noise: u8, seed: u32) -> image::RgbImage {
        let mut state = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        image::RgbImage::from_fn(W, H, |x, y| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            let jitter = if noise == 0 { 0 } else { (state % (2 * u32::from(noise) + 1)) as i32 - i32::from(noise) };
            let texture = ((x / 12 + y / 9) % 3) as i32 * 25;
            let base = 60 + (x * 80 / W) as i32 + texture;
            let v = (base + jitter).clamp(0, 255) as u8;
            image::Rgb([v, v, v])
        })
    }

    /// Draws a filled box of grey `value` (a person, a bike) at pixel `[x1, y1, x2, y2]`.
    fn with_box(mut picture: image::RgbImage, rect: [u32; 4], value: u8) -> image::RgbImage {
        for y in rect[1]..rect[3] {
            for x in rect[0]..rect[2] {
                picture.put_pixel(x, y, image::Rgb([value, value, value]));
            }
        }
        picture
    }

    fn lit(picture: &image::RgbImage, gain: f32, offset: f32) -> image::RgbImage {
        image::RgbImage::from_fn(picture.width(), picture.height(), |x, y| {
            let v = (f32::from(picture.get_pixel(x, y)[0]) * gain + offset).clamp(0.0, 255.0) as u8;
            image::Rgb([v, v, v])
        })
    }

    fn zone(kind: ZoneKind, points: [[f32; 2]; 4]) -> Zone {
        Zone {
            id: "z".into(),
            kind,
            polygon: Polygon { points: points.iter().map(|p| PointNorm { x: p[0], y: p[1] }).collect() },
            classes: vec!["bicycle".into()],
            min_score: 0.4,
            min_area: 0.0,
            max_area: 1.0,
            rule: match kind {
                ZoneKind::Mask => ZoneRule::Mask,
                _ => ZoneRule::Misparked(MisparkedParams { dwell_ms: 1, pile_up_count: 5, pile_up_dwell_ms: 1 }),
            },
            lifecycle: LifecycleParams {
                clear_after_ms: 1,
                cooldown_ms: 1,
                heartbeat_ms: 1,
                update_min_interval_ms: 1,
            },
        }
    }

    fn lower_half() -> Zone {
        zone(ZoneKind::NoParking, [[0.0, 0.5], [1.0, 0.5], [1.0, 1.0], [0.0, 1.0]])
    }

    fn changed(before: &image::RgbImage, after: &image::RgbImage, zones: &[Zone]) -> f32 {
        difference(&Signature::of_rgb(before), &Signature::of_rgb(after), &Regions::of_zones(zones))
    }

    #[test]
    fn what_counts_as_a_change() {
        let zones = [lower_half()];
        let scene = street(0, 1);
        // (case, after, changed?)
        let cases: Vec<(&str, image::RgbImage, bool)> = vec![
            ("same picture", scene.clone(), false),
            ("sensor noise ±12 per pixel", street(12, 2), false),
            ("dusk: 60% as bright", lit(&scene, 0.6, 0.0), false),
            ("street lights on: +40 grey", lit(&scene, 1.0, 40.0), false),
            ("contrast up 30% and brighter", lit(&scene, 1.3, 10.0), false),
            ("a small person (8x20 px) in the zone", with_box(scene.clone(), [200, 150, 208, 170], 20), true),
            ("a dark person at dusk", with_box(lit(&scene, 0.6, 0.0), [200, 150, 208, 170], 10), true),
            ("a person above the zone only", with_box(scene.clone(), [200, 10, 208, 30], 20), false),
            ("a bike parked in the zone", with_box(scene.clone(), [100, 180, 140, 200], 230), true),
        ];
        for (case, after, expected) in cases {
            let difference = changed(&scene, &after, &zones);
            assert_eq!(difference > CHANGED_GREY, expected, "{case}: difference {difference:.1} grey levels");
        }
    }

    #[test]
    fn a_parked_bike_that_stays_is_no_change_against_a_frame_that_has_it() {
        let parked = with_box(street(0, 1), [100, 180, 140, 200], 230);
        let later = with_box(street(10, 7), [100, 180, 140, 200], 230);
        assert!(changed(&parked, &later, &[lower_half()]) <= CHANGED_GREY);
    }

    #[test]
    fn a_night_scene_with_noise_is_no_change_but_a_dim_figure_is() {
        let night = |noise, seed| lit(&street(noise, seed), 0.15, 0.0);
        let zones = [lower_half()];
        assert!(changed(&night(0, 1), &night(12, 3), &zones) <= CHANGED_GREY);
        let figure = with_box(night(12, 4), [200, 150, 210, 175], 45);
        assert!(changed(&night(0, 1), &figure, &zones) > CHANGED_GREY);
    }

    #[test]
    fn masks_are_not_watched_and_a_camera_without_zones_watches_the_whole_frame() {
        let scene = street(0, 1);
        let person_top = with_box(scene.clone(), [200, 10, 208, 30], 20);
        let mask = zone(ZoneKind::Mask, [[0.0, 0.0], [1.0, 0.0], [1.0, 0.4], [0.0, 0.4]]);
        assert!(changed(&scene, &person_top, std::slice::from_ref(&mask)) > CHANGED_GREY, "masks only: whole frame");
        assert!(changed(&scene, &person_top, &[mask, lower_half()]) <= CHANGED_GREY);
        assert!(changed(&scene, &person_top, &[]) > CHANGED_GREY);
    }

    fn detection(class_id: u16, box_px: [f32; 4]) -> Detection {
        Detection { class_id, score: 0.8, box_px, rotated: false }
    }

    #[test]
    fn inferences_agree_on_matching_boxes_where_the_zones_are() {
        let regions = Regions::of_zones(&[lower_half()]);
        let frame = (640, 360);
        let bike = detection(1, [100.0, 250.0, 160.0, 300.0]);
        let moved = detection(1, [130.0, 250.0, 190.0, 300.0]);
        let person_above = detection(0, [300.0, 10.0, 320.0, 60.0]);
        // (case, before, after, agree?)
        let cases: Vec<(&str, Vec<Detection>, Vec<Detection>, bool)> = vec![
            ("both empty", vec![], vec![], true),
            ("same bike", vec![bike.clone()], vec![bike.clone()], true),
            ("bike missed", vec![bike.clone()], vec![], false),
            ("bike appeared", vec![], vec![bike.clone()], false),
            ("bike moved", vec![bike.clone()], vec![moved], false),
            ("another class", vec![bike.clone()], vec![detection(0, bike.box_px)], false),
            ("flicker outside the zones", vec![bike.clone(), person_above], vec![bike.clone()], true),
        ];
        for (case, before, after, expected) in cases {
            assert_eq!(agree(&before, &after, frame, &regions), expected, "{case}");
        }
    }

    #[test]
    fn the_gate_reuses_only_settled_fresh_detections_of_an_unchanged_scene() {
        let scene = Signature::of_rgb(&street(0, 1));
        let moved = Signature::of_rgb(&with_box(street(0, 1), [200, 150, 208, 170], 20));
        let frame = (640, 360);
        let bike = vec![detection(1, [100.0, 250.0, 160.0, 300.0])];
        let mut gate = Gate::new(&[lower_half()], 60_000);
        assert_eq!(gate.decide(0, frame, &scene, false), Decision::Infer(InferReason::First));
        gate.record(0, scene.clone(), bike.clone(), frame);
        // One inference is not yet settled: the next unchanged frame is inferred too.
        assert_eq!(gate.decide(10_000, frame, &scene, false), Decision::Infer(InferReason::Unsettled));
        assert_eq!(gate.decide(10_000, frame, &moved, false), Decision::Infer(InferReason::Changed));
        gate.record(10_000, scene.clone(), bike.clone(), frame);
        assert_eq!(gate.decide(20_000, frame, &scene, false), Decision::Reuse(&bike));
        assert_eq!(gate.decide(20_000, frame, &scene, true), Decision::Infer(InferReason::Asked));
        assert_eq!(gate.decide(69_999, frame, &scene, false), Decision::Reuse(&bike));
        assert_eq!(gate.decide(70_000, frame, &scene, false), Decision::Infer(InferReason::Stale));
        assert_eq!(gate.decide(20_000, frame, &moved, false), Decision::Infer(InferReason::Changed));
        // A clock that went back (a reconnect) is stale, not trusted.
        assert_eq!(gate.decide(5_000, frame, &scene, false), Decision::Infer(InferReason::Stale));
        // A miss after a sighting unsettles the gate; an older result arriving late is ignored.
        gate.record(20_000, scene.clone(), vec![], frame);
        gate.record(15_000, scene.clone(), vec![], frame);
        assert_eq!(gate.decide(21_000, frame, &scene, false), Decision::Infer(InferReason::Unsettled));
        // Another resolution: boxes in pixels do not carry over.
        assert_eq!(gate.decide(21_000, (1280, 720), &scene, false), Decision::Infer(InferReason::First));
    }

    #[test]
    fn new_zones_drop_the_reference_and_a_new_staleness_keeps_it() {
        let scene = Signature::of_rgb(&street(0, 1));
        let frame = (640, 360);
        let mut gate = Gate::new(&[lower_half()], 60_000);
        gate.record(0, scene.clone(), vec![], frame);
        gate.record(1_000, scene.clone(), vec![], frame);
        gate.reconfigure(&[lower_half()], 5_000);
        assert_eq!(gate.decide(2_000, frame, &scene, false), Decision::Reuse(&[]));
        assert_eq!(gate.decide(6_000, frame, &scene, false), Decision::Infer(InferReason::Stale));
        gate.reconfigure(&[zone(ZoneKind::NoParking, [[0.0, 0.0], [0.5, 0.0], [0.5, 0.5], [0.0, 0.5]])], 5_000);
        assert_eq!(gate.decide(2_000, frame, &scene, false), Decision::Infer(InferReason::First));
    }

    #[test]
    fn regions_cover_the_zone_bounds_with_a_cell_of_margin() {
        let regions = Regions::of_zones(&[lower_half()]);
        let region = &regions.regions[0];
        assert_eq!(region.cells.len(), GRID_COLUMNS * (GRID_ROWS / 2 + 1));
        assert!(regions.touches(&BoxNorm { x1: 0.1, y1: 0.3, x2: 0.2, y2: 0.49 }));
        assert!(!regions.touches(&BoxNorm { x1: 0.1, y1: 0.1, x2: 0.2, y2: 0.4 }));
        // A sliver of a zone still has a cell.
        let sliver = Regions::of_zones(&[zone(ZoneKind::NoParking, [[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 1.0]])]);
        assert!(!sliver.regions[0].cells.is_empty());
    }

    #[test]
    fn the_signature_of_a_picture_smaller_than_the_grid_is_defined() {
        let tiny = image::RgbImage::from_pixel(3, 2, image::Rgb([100, 100, 100]));
        let signature = Signature::of_rgb(&tiny);
        assert_eq!(signature.cells.len(), CELLS);
        assert!((signature.cells[0] - 100.0).abs() < 1.0);
        let empty = Signature::of_rgb(&image::RgbImage::new(0, 0));
        assert!(empty.cells.iter().all(|&c| c == 0.0));
    }
}
