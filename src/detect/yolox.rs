//! YOLOX output decoding and class-wise NMS. Pure: rows in, detections out.
//!
//! The graph's output is `[1, N, 5 + C]` with N = Σ (H/s)·(W/s) grid cells over the strides,
//! cells row-major, smallest stride first. Each row is `[dx, dy, log_w, log_h, obj, cls…]`
//! with `obj` and `cls` already sigmoided; the box decode is *not* in the graph:
//! `cx = (dx + gx)·s, cy = (dy + gy)·s, w = exp(log_w)·s, h = exp(log_h)·s`,
//! score = obj · cls.

use super::Detection;
use crate::decode::letterbox::Letterbox;

/// The anchor grid of a YOLOX model: `(gx, gy, stride)` per output row.
#[derive(Debug, Clone)]
pub struct Grid {
    cells: Vec<(f32, f32, f32)>,
}

impl Grid {
    /// The grid for an input of `width`×`height` and the given strides.
    pub fn new(width: u32, height: u32, strides: &[u32]) -> Self {
        let mut cells = Vec::new();
        for &stride in strides {
            for gy in 0..height / stride {
                for gx in 0..width / stride {
                    cells.push((gx as f32, gy as f32, stride as f32));
                }
            }
        }
        Grid { cells }
    }

    /// Rows the model must output.
    pub fn len(&self) -> usize {
        self.cells.len()
    }

    /// Whether the grid is empty (no strides).
    pub fn is_empty(&self) -> bool {
        self.cells.is_empty()
    }
}

/// Decodes rows of `5 + classes` floats into detections in frame pixels (before NMS).
pub fn decode(
    output: &[f32],
    classes: usize,
    grid: &Grid,
    letterbox: &Letterbox,
    score_threshold: f32,
) -> Vec<Detection> {
    let row_len = 5 + classes;
    let mut detections = Vec::new();
    for (row, &(gx, gy, stride)) in output.chunks_exact(row_len).zip(&grid.cells) {
        let objectness = row[4];
        if objectness < score_threshold {
            continue; // score = obj · cls ≤ obj: nothing in this cell can pass.
        }
        let (class_id, class_score) =
            row[5..].iter().enumerate().fold(
                (0, f32::MIN),
                |best, (id, &score)| {
                    if score > best.1 {
                        (id, score)
                    } else {
                        best
                    }
                },
            );
        let score = objectness * class_score;
        if score < score_threshold {
            continue;
        }
        let center_x = (row[0] + gx) * stride;
        let center_y = (row[1] + gy) * stride;
        let half_width = row[2].exp() * stride / 2.0;
        let half_height = row[3].exp() * stride / 2.0;
        let (x1, y1) = letterbox.to_frame(center_x - half_width, center_y - half_height);
        let (x2, y2) = letterbox.to_frame(center_x + half_width, center_y + half_height);
        if x2 <= x1 || y2 <= y1 {
            continue;
        }
        detections.push(Detection { class_id: class_id as u16, score, box_px: [x1, y1, x2, y2], rotated: false });
    }
    detections
}

/// Intersection over union of two `[x1, y1, x2, y2]` boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let width = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let height = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let intersection = width * height;
    let union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection;
    if union <= 0.0 {
        0.0
    } else {
        intersection / union
    }
}

/// Class-wise greedy NMS: keeps the best-scoring box and drops same-class boxes overlapping it
/// by more than `iou_threshold`. Output sorted by score, descending.
pub fn non_max_suppression(mut detections: Vec<Detection>, iou_threshold: f32) -> Vec<Detection> {
    detections.sort_by(|a, b| b.score.total_cmp(&a.score));
    let mut kept: Vec<Detection> = Vec::with_capacity(detections.len());
    for candidate in detections {
        let suppressed =
            kept.iter().any(|k| k.class_id == candidate.class_id && iou(&k.box_px, &candidate.box_px) > iou_threshold);
        if !suppressed {
            kept.push(candidate);
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detection(class_id: u16, score: f32, box_px: [f32; 4]) -> Detection {
        Detection { class_id, score, box_px, rotated: false }
    }

    #[test]
    fn grid_matches_yolox_nano() {
        assert_eq!(Grid::new(416, 416, &[8, 16, 32]).len(), 3549);
    }

    #[test]
    fn decodes_a_cell_into_frame_pixels() {
        // 2 strides' worth of grid on a 32x32 input, 2 classes; frame 64x64 (scale 0.5).
        let grid = Grid::new(32, 32, &[16, 32]); // 4 cells of stride 16, 1 of 32
        let letterbox = Letterbox::new(64, 64, 32, 32);
        let mut output = vec![0.0_f32; grid.len() * 7];
        // Cell (1, 0) at stride 16: dx=0.5, dy=0.5 → centre (24, 8); w = h = e^0·16 = 16.
        output[7..14].copy_from_slice(&[0.5, 0.5, 0.0, 0.0, 0.9, 0.1, 0.8]);
        // A cell below threshold.
        output[14..21].copy_from_slice(&[0.5, 0.5, 0.0, 0.0, 0.2, 0.9, 0.1]);
        let detections = decode(&output, 2, &grid, &letterbox, 0.3);
        assert_eq!(detections.len(), 1);
        let found = &detections[0];
        assert_eq!(found.class_id, 1);
        assert!((found.score - 0.72).abs() < 1e-6);
        assert_eq!(found.box_px, [32.0, 0.0, 64.0, 32.0], "input (16,0)-(32,16) doubled");
    }

    #[test]
    fn iou_table() {
        let table = [
            ([0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 10.0, 10.0], 1.0),
            ([0.0, 0.0, 10.0, 10.0], [5.0, 0.0, 15.0, 10.0], 50.0 / 150.0),
            ([0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], 0.0),
            ([0.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0], 0.0),
        ];
        for (a, b, expected) in table {
            assert!((iou(&a, &b) - expected).abs() < 1e-6, "{a:?} {b:?}");
        }
    }

    #[test]
    fn nms_is_class_wise() {
        let kept = non_max_suppression(
            vec![
                detection(0, 0.6, [0.0, 0.0, 10.0, 10.0]),
                detection(0, 0.9, [1.0, 0.0, 11.0, 10.0]), // overlaps the first: wins
                detection(1, 0.5, [0.0, 0.0, 10.0, 10.0]), // same box, other class: kept
                detection(0, 0.4, [50.0, 50.0, 60.0, 60.0]), // far away: kept
            ],
            0.45,
        );
        let scores: Vec<f32> = kept.iter().map(|d| d.score).collect();
        assert_eq!(scores, vec![0.9, 0.5, 0.4]);
    }
}
