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

    /// The first two edges that cross or touch, as edge indices `(i, j)` with `i < j` (edge `i`
    /// runs from point `i` to point `i + 1`, the last one back to point 0); `None` for a simple
    /// polygon. Neighbouring edges may share their common point but must not fold back over
    /// each other. A self-intersecting zone has no clear inside (issue 11: the even-odd rule
    /// makes the overlap "outside"), so config refuses it. O(n²), n ≤ a few dozen points.
    pub fn self_intersection(&self) -> Option<(usize, usize)> {
        let points = &self.points;
        let n = points.len();
        if n < 3 {
            return None;
        }
        let edge = |i: usize| (points[i], points[(i + 1) % n]);
        for i in 0..n {
            for j in i + 1..n {
                let (a, b) = edge(i);
                let (c, d) = edge(j);
                let neighbours = j == i + 1 || (i == 0 && j == n - 1);
                let crossing = if neighbours {
                    // They share one point; they intersect elsewhere only when collinear and
                    // folding back (a spike), or when an edge has no length.
                    let shared = if j == i + 1 { b } else { a };
                    let (other_first, other_second) = if j == i + 1 { (a, d) } else { (b, c) };
                    a == b || c == d || folds_back(shared, other_first, other_second)
                } else {
                    segments_touch(a, b, c, d)
                };
                if crossing {
                    return Some((i, j));
                }
            }
        }
        None
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

/// Orientation of `c` relative to the line `a → b`: >0 left, <0 right, 0 on it (in f64, exact
/// enough for f32 inputs).
fn orientation(a: PointNorm, b: PointNorm, c: PointNorm) -> f64 {
    let (ax, ay, bx, by, cx, cy) =
        (f64::from(a.x), f64::from(a.y), f64::from(b.x), f64::from(b.y), f64::from(c.x), f64::from(c.y));
    (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
}

/// Whether `p`, known to be on the line through `a` and `b`, lies within the segment.
fn within(a: PointNorm, b: PointNorm, p: PointNorm) -> bool {
    p.x >= a.x.min(b.x) && p.x <= a.x.max(b.x) && p.y >= a.y.min(b.y) && p.y <= a.y.max(b.y)
}

/// Whether segments `a–b` and `c–d` have any point in common.
fn segments_touch(a: PointNorm, b: PointNorm, c: PointNorm, d: PointNorm) -> bool {
    let (o1, o2, o3, o4) = (orientation(a, b, c), orientation(a, b, d), orientation(c, d, a), orientation(c, d, b));
    if o1 * o2 < 0.0 && o3 * o4 < 0.0 {
        return true;
    }
    (o1 == 0.0 && within(a, b, c))
        || (o2 == 0.0 && within(a, b, d))
        || (o3 == 0.0 && within(c, d, a))
        || (o4 == 0.0 && within(c, d, b))
}

/// Whether the edges `shared → first` and `shared → second` lie on one line on the same side of
/// `shared`, i.e. the outline turns back on itself.
fn folds_back(shared: PointNorm, first: PointNorm, second: PointNorm) -> bool {
    if orientation(shared, first, second) != 0.0 {
        return false;
    }
    let dot = f64::from(first.x - shared.x) * f64::from(second.x - shared.x)
        + f64::from(first.y - shared.y) * f64::from(second.y - shared.y);
    dot > 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn self_intersection_table() {
        // (name, points, first crossing edges)
        type Row<'a> = (&'a str, &'a [(f32, f32)], Option<(usize, usize)>);
        let table: &[Row] = &[
            ("triangle", &[(0.1, 0.1), (0.9, 0.1), (0.5, 0.9)], None),
            ("square", &[(0.2, 0.2), (0.6, 0.2), (0.6, 0.6), (0.2, 0.6)], None),
            ("concave L", &[(0.0, 0.0), (0.5, 0.0), (0.5, 0.5), (1.0, 0.5), (1.0, 1.0), (0.0, 1.0)], None),
            ("collinear point on an edge", &[(0.0, 0.0), (0.5, 0.0), (1.0, 0.0), (1.0, 1.0)], None),
            ("bow tie", &[(0.1, 0.1), (0.9, 0.9), (0.9, 0.1), (0.1, 0.9)], Some((0, 2))),
            ("bow tie, other winding", &[(0.1, 0.1), (0.1, 0.9), (0.9, 0.1), (0.9, 0.9)], Some((1, 3))),
            ("star drawn in one stroke", &[(0.5, 0.0), (0.8, 1.0), (0.0, 0.35), (1.0, 0.35), (0.2, 1.0)], Some((0, 2))),
            ("vertex touching an edge", &[(0.0, 0.0), (1.0, 0.0), (0.5, 0.5), (1.0, 1.0), (0.5, 0.0)], Some((0, 3))),
            ("spike folding back", &[(0.0, 0.0), (1.0, 0.0), (0.5, 0.0), (0.5, 1.0)], Some((0, 1))),
            ("repeated point", &[(0.0, 0.0), (1.0, 0.0), (1.0, 0.0), (1.0, 1.0)], Some((0, 1))),
            (
                "figure eight through a shared point",
                &[(0.0, 0.0), (0.5, 0.5), (1.0, 0.0), (1.0, 1.0), (0.5, 0.5), (0.0, 1.0)],
                Some((0, 3)),
            ),
        ];
        for (name, points, expected) in table {
            assert_eq!(polygon(points).self_intersection(), *expected, "{name}");
        }
    }

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
