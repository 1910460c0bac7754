//! Geometry in normalised frame coordinates (0–1 on both axes, origin top-left), so zones
//! drawn on one stream apply to its substream too. Pure.

use serde::{Deserialize, Serialize};

/// A point, normalised.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PointNorm {
    /// 0 = left edge, 1 = right edge.
    pub x: f32,
    /// 0 = top edge, 1 = bottom edge.
    pub y: f32,
}

/// An axis-aligned box, normalised: `x1 < x2`, `y1 < y2`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BoxNorm {
    /// Left.
    pub x1: f32,
    /// Top.
    pub y1: f32,
    /// Right.
    pub x2: f32,
    /// Bottom.
    pub y2: f32,
}

impl BoxNorm {
    /// A box from pixel coordinates in a `width`×`height` frame.
    pub fn from_pixels(box_px: [f32; 4], width: u32, height: u32) -> Self {
        let (w, h) = (width.max(1) as f32, height.max(1) as f32);
        BoxNorm { x1: box_px[0] / w, y1: box_px[1] / h, x2: box_px[2] / w, y2: box_px[3] / h }
    }

    /// Width.
    pub fn width(&self) -> f32 {
        (self.x2 - self.x1).max(0.0)
    }

    /// Height.
    pub fn height(&self) -> f32 {
        (self.y2 - self.y1).max(0.0)
    }

    /// Area as a share of the frame.
    pub fn area(&self) -> f32 {
        self.width() * self.height()
    }

    /// Width ÷ height (0 for a degenerate box).
    pub fn aspect(&self) -> f32 {
        if self.height() > 0.0 {
            self.width() / self.height()
        } else {
            0.0
        }
    }

    /// Bottom-centre: where an object touches the ground, the point zones are tested with.
    pub fn anchor(&self) -> PointNorm {
        PointNorm { x: (self.x1 + self.x2) / 2.0, y: self.y2 }
    }

    /// Intersection over union.
    pub fn iou(&self, other: &BoxNorm) -> f32 {
        let width = (self.x2.min(other.x2) - self.x1.max(other.x1)).max(0.0);
        let height = (self.y2.min(other.y2) - self.y1.max(other.y1)).max(0.0);
        let intersection = width * height;
        let union = self.area() + other.area() - intersection;
        if union <= 0.0 {
            0.0
        } else {
            intersection / union
        }
    }
}

/// A simple polygon, normalised, at least 3 points (validated by config).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Polygon {
    /// Vertices in order (either winding).
    pub points: Vec<PointNorm>,
}

impl Polygon {
    /// The whole frame.
    pub fn whole_frame() -> Self {
        let p = |x, y| PointNorm { x, y };
        Polygon { points: vec![p(0.0, 0.0), p(1.0, 0.0), p(1.0, 1.0), p(0.0, 1.0)] }
    }

    /// Whether `point` is inside (even-odd rule). Points on the bottom or right edge of the
    /// whole-frame polygon count as inside, so a box touching the frame's edge is in it.
    pub fn contains(&self, point: PointNorm) -> bool {
        let points = &self.points;
        let mut inside = false;
        let mut previous = points[points.len() - 1];
        for &current in points {
            if (current.y > point.y) != (previous.y > point.y) {
                let crossing_x =
                    (previous.x - current.x) * (point.y - current.y) / (previous.y - current.y) + current.x;
                if point.x < crossing_x {
                    inside = !inside;
                }
            }
            previous = current;
        }
        inside || self.on_edge(point)
    }

    fn on_edge(&self, point: PointNorm) -> bool {
        let points = &self.points;
        (0..points.len()).any(|i| {
            let (a, b) = (points[i], points[(i + 1) % points.len()]);
            let cross = (b.x - a.x) * (point.y - a.y) - (b.y - a.y) * (point.x - a.x);
            let within = point.x >= a.x.min(b.x) - 1e-6
                && point.x <= a.x.max(b.x) + 1e-6
                && point.y >= a.y.min(b.y) - 1e-6
                && point.y <= a.y.max(b.y) + 1e-6;
            cross.abs() < 1e-6 && within
        })
    }

    /// Twice the signed area; zero for degenerate (collinear) polygons.
    pub fn doubled_area(&self) -> f32 {
        let points = &self.points;
        (0..points.len())
            .map(|i| {
                let (a, b) = (points[i], points[(i + 1) % points.len()]);
                a.x * b.y - b.x * a.y
            })
            .sum()
    }

    /// Bounding box.
    pub fn bounds(&self) -> BoxNorm {
        let fold =
            |f: fn(f32, f32) -> f32, init: f32, get: fn(&PointNorm) -> f32| self.points.iter().map(get).fold(init, f);
        BoxNorm {
            x1: fold(f32::min, f32::MAX, |p| p.x),
            y1: fold(f32::min, f32::MAX, |p| p.y),
            x2: fold(f32::max, f32::MIN, |p| p.x),
            y2: fold(f32::max, f32::MIN, |p| p.y),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn polygon(points: &[(f32, f32)]) -> Polygon {
        Polygon { points: points.iter().map(|&(x, y)| PointNorm { x, y }).collect() }
    }

    #[test]
    fn point_in_polygon_table() {
        let square = polygon(&[(0.2, 0.2), (0.6, 0.2), (0.6, 0.6), (0.2, 0.6)]);
        // An L shape: the notch at top-right is outside.
        let l_shape = polygon(&[(0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (1.0, 0.5), (1.0, 1.0), (0.0, 1.0)]);
        let table = [
            (&square, (0.4, 0.4), true),
            (&square, (0.1, 0.4), false),
            (&square, (0.6, 0.4), true), // on an edge
            (&square, (0.7, 0.7), false),
            (&l_shape, (0.75, 0.25), false),
            (&l_shape, (0.75, 0.75), true),
            (&l_shape, (0.25, 0.25), true),
        ];
        for (polygon, (x, y), expected) in table {
            assert_eq!(polygon.contains(PointNorm { x, y }), expected, "({x}, {y}) in {:?}", polygon.points);
        }
        assert!(Polygon::whole_frame().contains(PointNorm { x: 0.5, y: 1.0 }), "bottom edge of the frame");
    }

    #[test]
    fn box_measures() {
        let b = BoxNorm { x1: 0.1, y1: 0.2, x2: 0.5, y2: 0.4 };
        assert!((b.area() - 0.08).abs() < 1e-6);
        assert!((b.aspect() - 2.0).abs() < 1e-5);
        assert_eq!(b.anchor(), PointNorm { x: 0.3, y: 0.4 });
        assert!((b.iou(&b) - 1.0).abs() < 1e-6);
        assert_eq!(b.iou(&BoxNorm { x1: 0.6, y1: 0.6, x2: 0.7, y2: 0.7 }), 0.0);
        assert_eq!(
            BoxNorm::from_pixels([64.0, 36.0, 128.0, 72.0], 640, 360),
            BoxNorm { x1: 0.1, y1: 0.1, x2: 0.2, y2: 0.2 }
        );
        assert!(polygon(&[(0.0, 0.0), (0.5, 0.5), (1.0, 1.0)]).doubled_area().abs() < 1e-6, "collinear");
    }
}
