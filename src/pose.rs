//! Keypoint geometry for the fall rule's pose second stage. The shell runs a single-person
//! pose model (MoveNet, COCO-17 keypoints) on a square crop around a person and hands the
//! rule a [`PoseSummary`]: how far the body axis leans from vertical, whether the head is
//! below the hips, and how confident the model was. Pure: no I/O, no model.

use serde::Serialize;

use crate::geometry::BoxNorm;

/// A keypoint scored at least this counts.
pub const KEYPOINT_MIN_SCORE: f32 = 0.3;

/// A pose whose mean keypoint score is below this says nothing (an empty crop, a person
/// mostly hidden).
pub const POSE_MIN_MEAN_SCORE: f32 = 0.3;

/// A body axis at least this far from vertical is a person lying (standing people read
/// 3–9°, lying ones 56–86° on the development footage).
pub const LYING_AXIS_DEG: f32 = 55.0;

/// With the head below the hips, a lean of this much already counts as down.
pub const HEAD_DOWN_AXIS_DEG: f32 = 40.0;

/// COCO-17 indices.
const NOSE_EYES_EARS: [usize; 5] = [0, 1, 2, 3, 4];
const SHOULDERS: [usize; 2] = [5, 6];
const HIPS: [usize; 2] = [11, 12];
const KNEES: [usize; 2] = [13, 14];
const ANKLES: [usize; 2] = [15, 16];

/// One keypoint as the model gives it: (y, x, score), y and x normalised to the crop.
pub type Keypoint = [f32; 3];

/// A quarter turn applied to the crop before the model saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Turn {
    /// As is.
    None,
    /// 90° clockwise (`image::imageops::rotate90`).
    Clockwise,
    /// 90° counter-clockwise (`image::imageops::rotate270`).
    CounterClockwise,
}

/// What the rule learns from one pose.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct PoseSummary {
    /// Angle of the body axis (feet → shoulders) from upright, degrees: 0 standing, 90
    /// lying, 180 upside down.
    pub axis_deg: f32,
    /// The head's keypoints are below the hips' in the picture.
    pub head_below_hips: bool,
    /// Mean score of the 17 keypoints.
    pub mean_score: f32,
}

impl PoseSummary {
    /// Whether this pose is a person down: confident, and lying (body axis far from
    /// vertical), or leaning well over with the head below the hips.
    pub fn is_down(&self) -> bool {
        self.mean_score >= POSE_MIN_MEAN_SCORE
            && (self.axis_deg >= LYING_AXIS_DEG || (self.head_below_hips && self.axis_deg >= HEAD_DOWN_AXIS_DEG))
    }
}

/// Mean score of the keypoints.
pub fn mean_score(keypoints: &[Keypoint; 17]) -> f32 {
    keypoints.iter().map(|k| k[2]).sum::<f32>() / 17.0
}

/// Maps a keypoint found on the crop turned by `turn` back onto the unturned crop; returns
/// (x, y) normalised to the crop.
pub fn unturn(keypoint: &Keypoint, turn: Turn) -> (f32, f32) {
    let (y, x) = (keypoint[0], keypoint[1]);
    match turn {
        Turn::None => (x, y),
        // rotate90: (x, y) → (1 − y, x), so x = y', y = 1 − x'.
        Turn::Clockwise => (y, 1.0 - x),
        // rotate270: (x, y) → (y, 1 − x), so x = 1 − y', y = x'.
        Turn::CounterClockwise => (1.0 - y, x),
    }
}

/// The mean position (x, y) of the confident keypoints among `indices`.
fn centre_of(points: &[(f32, f32, f32)], indices: &[usize]) -> Option<(f32, f32)> {
    let confident: Vec<&(f32, f32, f32)> =
        indices.iter().map(|&i| &points[i]).filter(|p| p.2 >= KEYPOINT_MIN_SCORE).collect();
    if confident.is_empty() {
        return None;
    }
    let n = confident.len() as f32;
    Some((confident.iter().map(|p| p.0).sum::<f32>() / n, confident.iter().map(|p| p.1).sum::<f32>() / n))
}

/// The summary of keypoints found on a square crop turned by `turn`; `None` when the
/// body axis cannot be drawn (no confident shoulders or head, or nothing below them).
pub fn summarise(keypoints: &[Keypoint; 17], turn: Turn) -> Option<PoseSummary> {
    let points: Vec<(f32, f32, f32)> = keypoints
        .iter()
        .map(|k| {
            let (x, y) = unturn(k, turn);
            (x, y, k[2])
        })
        .collect();
    let head = centre_of(&points, &NOSE_EYES_EARS);
    let hips = centre_of(&points, &HIPS);
    let top = centre_of(&points, &SHOULDERS).or(head)?;
    // The lowest part of the body seen: ankles, else knees, else hips.
    let bottom = centre_of(&points, &ANKLES).or_else(|| centre_of(&points, &KNEES)).or(hips)?;
    let (dx, dy) = (top.0 - bottom.0, top.1 - bottom.1);
    if dx.hypot(dy) < 0.05 {
        return None; // shoulders on the feet: no axis
    }
    // Up is −y in the picture: 0° for shoulders straight above the feet.
    let axis_deg = dx.abs().atan2(-dy).to_degrees();
    let head_below_hips = matches!((head, hips), (Some(head), Some(hips)) if head.1 > hips.1 + 0.05);
    Some(PoseSummary { axis_deg, head_below_hips, mean_score: mean_score(keypoints) })
}

/// The square crop (normalised to a picture of `frame_aspect` = width ÷ height) around
/// `bbox`: centred on it, its side 1.5 × the box's longer side in pixels (a quarter of
/// margin each side). It may reach beyond the picture (the shell pads with black).
pub fn square_crop(bbox: &BoxNorm, frame_aspect: f32) -> BoxNorm {
    let width_px = bbox.width() * frame_aspect;
    let side_px = 1.5 * width_px.max(bbox.height());
    let (centre_x, centre_y) = ((bbox.x1 + bbox.x2) / 2.0, (bbox.y1 + bbox.y2) / 2.0);
    let (half_width, half_height) = (side_px / frame_aspect / 2.0, side_px / 2.0);
    BoxNorm {
        x1: centre_x - half_width,
        y1: centre_y - half_height,
        x2: centre_x + half_width,
        y2: centre_y + half_height,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pose with the given (x, y) per keypoint, every score 0.8 (unturned).
    fn pose(points: [(f32, f32); 17]) -> [Keypoint; 17] {
        points.map(|(x, y)| [y, x, 0.8])
    }

    /// A standing person: head at the top, feet at the bottom of the crop.
    fn standing() -> [Keypoint; 17] {
        let mut points = [(0.5, 0.5); 17];
        for i in NOSE_EYES_EARS {
            points[i] = (0.5, 0.15);
        }
        points[5] = (0.45, 0.25);
        points[6] = (0.55, 0.25);
        points[11] = (0.47, 0.5);
        points[12] = (0.53, 0.5);
        points[13] = (0.47, 0.7);
        points[14] = (0.53, 0.7);
        points[15] = (0.47, 0.9);
        points[16] = (0.53, 0.9);
        pose(points)
    }

    /// The same pose turned a quarter clockwise about the crop's centre: (x, y) → (1 − y, x).
    fn lying(keypoints: &[Keypoint; 17]) -> [Keypoint; 17] {
        keypoints.map(|[y, x, s]| [x, 1.0 - y, s])
    }

    #[test]
    fn standing_is_upright_and_lying_is_near_horizontal() {
        let up = summarise(&standing(), Turn::None).expect("axis");
        assert!(up.axis_deg < 5.0, "{up:?}");
        assert!(!up.head_below_hips);
        assert!(!up.is_down());
        let down = summarise(&lying(&standing()), Turn::None).expect("axis");
        assert!((down.axis_deg - 90.0).abs() < 5.0, "{down:?}");
        assert!(down.is_down());
        // Upside down (head below the hips).
        let flipped = standing().map(|[y, x, s]| [1.0 - y, x, s]);
        let summary = summarise(&flipped, Turn::None).expect("axis");
        assert!(summary.axis_deg > 170.0 && summary.head_below_hips && summary.is_down(), "{summary:?}");
    }

    #[test]
    fn keypoints_found_on_a_turned_crop_are_turned_back() {
        // The model, seeing the crop turned clockwise, finds a person lying in the turned
        // picture whose (unturned) picture shows them standing, and the other way round.
        let seen_on_turned = lying(&standing());
        let back = summarise(&seen_on_turned, Turn::Clockwise).expect("axis");
        assert!(back.axis_deg < 5.0, "{back:?}");
        let on_clockwise = summarise(&standing(), Turn::Clockwise).expect("axis");
        assert!((on_clockwise.axis_deg - 90.0).abs() < 5.0, "{on_clockwise:?}");
        // unturn inverts the image crate's turns: a point at (x, y) = (0.2, 0.1) is at
        // (0.9, 0.2) after rotate90 and at (0.1, 0.8) after rotate270.
        let close = |a: (f32, f32), b: (f32, f32)| (a.0 - b.0).abs() < 1e-6 && (a.1 - b.1).abs() < 1e-6;
        assert!(close(unturn(&[0.2, 0.9, 1.0], Turn::Clockwise), (0.2, 0.1)));
        assert!(close(unturn(&[0.8, 0.1, 1.0], Turn::CounterClockwise), (0.2, 0.1)));
    }

    #[test]
    fn unconfident_or_partial_poses_say_nothing() {
        let weak = lying(&standing()).map(|[y, x, _]| [y, x, 0.1]);
        assert_eq!(summarise(&weak, Turn::None), None, "no confident keypoint: no axis");
        let mut shaky = lying(&standing());
        for k in shaky.iter_mut().skip(5) {
            k[2] = 0.2;
        }
        // The head alone is confident: no lower body, no axis.
        assert_eq!(summarise(&shaky, Turn::None), None);
        // A confident axis with a low mean score is not down.
        let low = PoseSummary { axis_deg: 80.0, head_below_hips: false, mean_score: 0.2 };
        assert!(!low.is_down());
        // Bending over: a 45° lean with the head below the hips is down only with both.
        assert!(PoseSummary { axis_deg: 45.0, head_below_hips: true, mean_score: 0.6 }.is_down());
        assert!(!PoseSummary { axis_deg: 45.0, head_below_hips: false, mean_score: 0.6 }.is_down());
    }

    #[test]
    fn the_crop_is_square_in_pixels_with_a_margin() {
        // A person 0.1 wide and 0.4 tall on a 16:9 frame: the side is 1.5 × 0.4 of the height.
        let crop = square_crop(&BoxNorm { x1: 0.45, y1: 0.3, x2: 0.55, y2: 0.7 }, 16.0 / 9.0);
        assert!((crop.height() - 0.6).abs() < 1e-5, "{crop:?}");
        assert!((crop.width() * 16.0 / 9.0 - 0.6).abs() < 1e-5, "{crop:?}");
        assert!(((crop.x1 + crop.x2) / 2.0 - 0.5).abs() < 1e-6 && ((crop.y1 + crop.y2) / 2.0 - 0.5).abs() < 1e-6);
    }
}
