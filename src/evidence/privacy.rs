//! Privacy of the snapshots that leave the gateway (issue 16): the people who are not an
//! incident's subject are pixelated in the snapshot sent over MQTT and served by the console,
//! using the person boxes the detector already found (no face detector: a person box covers
//! the face whatever the pose, and costs nothing more to find). For bike and bin incidents
//! every person is a bystander; for a fall, everyone but the fallen person. The unblurred
//! original stays on the gateway's disk (`-original.jpg`), under retention.
//!
//! Pure but for the picture it changes.

use image::RgbImage;

use crate::geometry::BoxNorm;
use crate::incident::IncidentEvent;
use crate::rules::IncidentKind;

/// A person box overlapping a subject's this much (IoU) is the subject.
pub const SUBJECT_IOU: f32 = 0.5;
/// Each side of a person box is widened by this share of its size before pixelation (hair,
/// a raised arm, a box a little off).
pub const MARGIN_SHARE: f32 = 0.1;
/// Blocks per person height: at 6, a face is about one block.
pub const BLOCKS_PER_HEIGHT: u32 = 6;
/// The smallest block, pixels.
pub const MIN_BLOCK_PX: u32 = 4;

/// Time spent pixelating snapshots, for `/metrics` (and the figure in BENCHMARKS.md).
#[derive(Debug, Default)]
pub struct BlurStats {
    /// Snapshots pixelated.
    pub snapshots: std::sync::atomic::AtomicU64,
    /// Time spent, µs.
    pub micros: std::sync::atomic::AtomicU64,
}

/// The process's blur counters (pixelation happens where evidence is written, which has no
/// handle on the console's state).
pub static BLUR_STATS: BlurStats =
    BlurStats { snapshots: std::sync::atomic::AtomicU64::new(0), micros: std::sync::atomic::AtomicU64::new(0) };

impl BlurStats {
    /// Records one snapshot's pixelation.
    pub fn record(&self, took: std::time::Duration) {
        use std::sync::atomic::Ordering::Relaxed;
        self.snapshots.fetch_add(1, Relaxed);
        self.micros.fetch_add(took.as_micros() as u64, Relaxed);
    }

    /// The Prometheus text.
    pub fn render(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let name = "gateway_snapshot_blur_seconds";
        format!(
            "# HELP {name} Time spent pixelating bystanders in snapshots that leave the gateway.\n\
             # TYPE {name} summary\n{name}_sum {}\n{name}_count {}\n",
            self.micros.load(Relaxed) as f64 / 1e6,
            self.snapshots.load(Relaxed)
        )
    }
}

/// The people in `people` (normalised person boxes of the frame) who are not the subject of
/// `event`: for a fall, the ones that do not overlap a supporting object; otherwise everyone.
pub fn bystanders(event: &IncidentEvent, people: &[BoxNorm]) -> Vec<BoxNorm> {
    let subjects: Vec<&BoxNorm> = match event.kind {
        IncidentKind::FallenPerson => event.objects.iter().map(|object| &object.bbox).collect(),
        IncidentKind::MisparkedBike | IncidentKind::TrashOverflow => Vec::new(),
    };
    people.iter().filter(|person| !subjects.iter().any(|subject| subject.iou(person) >= SUBJECT_IOU)).copied().collect()
}

/// Pixelates each box (normalised, so any resolution of the same view works) of `picture`.
pub fn pixelate_people(picture: &mut RgbImage, boxes: &[BoxNorm]) {
    let (width, height) = picture.dimensions();
    for person in boxes {
        let (margin_x, margin_y) = (person.width() * MARGIN_SHARE, person.height() * MARGIN_SHARE);
        let to_px = |value: f32, size: u32, round_up: bool| {
            let px = value.clamp(0.0, 1.0) * size as f32;
            (if round_up { px.ceil() } else { px.floor() }) as u32
        };
        let rect = [
            to_px(person.x1 - margin_x, width, false),
            to_px(person.y1 - margin_y, height, false),
            to_px(person.x2 + margin_x, width, true),
            to_px(person.y2 + margin_y, height, true),
        ];
        let block = (rect[3].saturating_sub(rect[1]) / BLOCKS_PER_HEIGHT).max(MIN_BLOCK_PX);
        super::pixelate::pixelate_rgb(picture.as_mut(), width, height, rect, block);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::incident::EventKind;
    use crate::rules::ObjectRef;

    fn event(kind: IncidentKind, subjects: &[BoxNorm]) -> IncidentEvent {
        IncidentEvent {
            incident_id: "cam:zone:kind:1".into(),
            seq: 1,
            event: EventKind::Opened,
            kind,
            camera: "cam".into(),
            zone: "zone".into(),
            t_ms: 1,
            started_ms: 1,
            score: 0.9,
            count: subjects.len(),
            detail: String::new(),
            objects: subjects.iter().map(|&bbox| ObjectRef { track_id: 1, class_id: 0, bbox, score: 0.9 }).collect(),
        }
    }

    const FALLEN: BoxNorm = BoxNorm { x1: 0.1, y1: 0.6, x2: 0.5, y2: 0.8 };
    const HELPER: BoxNorm = BoxNorm { x1: 0.55, y1: 0.3, x2: 0.65, y2: 0.8 };
    const PASSER_BY: BoxNorm = BoxNorm { x1: 0.8, y1: 0.2, x2: 0.9, y2: 0.6 };

    #[test]
    fn bystanders_are_everyone_but_the_fallen_person_or_everyone() {
        // The fallen person's box as this frame's detector saw it, a little off the track's.
        let fallen_now = BoxNorm { x1: 0.12, y1: 0.61, x2: 0.5, y2: 0.8 };
        let people = [fallen_now, HELPER, PASSER_BY];
        assert_eq!(bystanders(&event(IncidentKind::FallenPerson, &[FALLEN]), &people), vec![HELPER, PASSER_BY]);
        assert_eq!(bystanders(&event(IncidentKind::MisparkedBike, &[FALLEN]), &people), people.to_vec());
        assert_eq!(bystanders(&event(IncidentKind::TrashOverflow, &[]), &people), people.to_vec());
        assert!(bystanders(&event(IncidentKind::FallenPerson, &[FALLEN]), &[]).is_empty());
    }

    #[test]
    fn a_bystander_is_pixelated_and_the_rest_of_the_picture_kept() {
        // A striped picture: any pixelation evens the stripes out.
        let mut picture = RgbImage::from_fn(200, 100, |x, _| image::Rgb([if x % 2 == 0 { 0 } else { 255 }; 3]));
        let original = picture.clone();
        pixelate_people(&mut picture, &[PASSER_BY]);
        // Inside the box: blocks of one colour (the stripes' mean).
        let (cx, cy) = ((0.85 * 200.0) as u32, (0.4 * 100.0) as u32);
        assert_eq!(picture.get_pixel(cx, cy), picture.get_pixel(cx + 1, cy));
        assert_ne!(original.get_pixel(cx, cy), original.get_pixel(cx + 1, cy));
        // Far from it: untouched.
        for (x, y) in [(10, 10), (100, 90), (150, 50)] {
            assert_eq!(picture.get_pixel(x, y), original.get_pixel(x, y), "({x}, {y})");
        }
    }
}
