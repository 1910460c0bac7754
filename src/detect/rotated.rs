//! The rotated pass on crops (fall-watch cameras): instead of turning the whole picture ±90°
//! and running the model on each turn (two more inferences), cut a crop around each region the
//! fall rule asked about (the last box of a person just lost, a tipped box), turn each crop
//! +90° and −90°, and pack the turned crops side by side into ONE model input. Boxes found on
//! that input map back through the tile they lie in: tile → turned crop → crop → picture.
//!
//! The layout and the mapping are pure ([`plan`], [`Tile::to_picture`], [`map_back`]); only
//! [`render`] touches pixels. When there is no region, too many, or the crops would cover most
//! of the picture, [`plan`] says `None` and the caller runs the whole-picture pass.

use super::{unrotate_box, Rotation};
use crate::geometry::BoxNorm;

/// The crop is this many times the region's longer side wide: a person lying where they
/// stood reaches about their height to either side of where their feet were.
pub const CROP_WIDTH_PER_SIDE: f32 = 2.4;

/// ... and this many times as tall: a 2:1 crop turned is 1:2, so a pair of turns fills a
/// square input side by side.
pub const CROP_HEIGHT_PER_SIDE: f32 = 1.2;

/// The crop's centre sits this share of the longer side above the region's bottom edge: a
/// fallen person lies around where the feet were, often in front of them (lower in the
/// picture), not around the upright box's centre.
pub const CROP_CENTRE_ABOVE_BOTTOM: f32 = 0.35;

/// The smallest crop side, picture pixels: smaller regions are cut this big (a crop of a few
/// pixels blown up to a tile shows the model nothing).
pub const MIN_CROP_SIDE_PX: u32 = 48;

/// At most this many crops (after merging overlapping ones) share the one inference; more
/// (a crowd) → the whole-picture pass.
pub const MAX_CROPS: usize = 4;

/// Crops covering at least this share of the picture → the whole-picture pass (the crops
/// would show the model the picture smaller than the whole turn does).
pub const MAX_CROP_SHARE: f32 = 0.5;

/// Two crops overlapping by this share of the smaller one are cut as one (their union).
const MERGE_OVERLAP: f32 = 0.3;

/// A box within this share of the crop's side from one of its edges (not also the picture's)
/// is someone the crop cuts: dropped.
pub const CUT_MARGIN_SHARE: f32 = 0.02;

/// A rectangle of the picture, pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Crop {
    /// Left.
    pub x: u32,
    /// Top.
    pub y: u32,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

impl Crop {
    fn area(&self) -> u64 {
        u64::from(self.width) * u64::from(self.height)
    }

    fn union(&self, other: &Crop) -> Crop {
        let (x, y) = (self.x.min(other.x), self.y.min(other.y));
        let right = (self.x + self.width).max(other.x + other.width);
        let bottom = (self.y + self.height).max(other.y + other.height);
        Crop { x, y, width: right - x, height: bottom - y }
    }

    /// Whether `box_px` (picture pixels) touches one of the crop's edges that is not also the
    /// picture's edge: a person the crop cuts. Part of someone upright, or the whole blown-up
    /// crop, is often read as a wide "person" — a lying box where nobody lies (seen on the plaza
    /// crowd: a 243×122 px box over a whole crop, then a false fall).
    pub fn cuts(&self, box_px: &[f32; 4], picture_width: u32, picture_height: u32) -> bool {
        let margin_x = (CUT_MARGIN_SHARE * self.width as f32).max(1.0);
        let margin_y = (CUT_MARGIN_SHARE * self.height as f32).max(1.0);
        let (left, top) = (self.x as f32, self.y as f32);
        let (right, bottom) = ((self.x + self.width) as f32, (self.y + self.height) as f32);
        (self.x > 0 && box_px[0] <= left + margin_x)
            || (self.y > 0 && box_px[1] <= top + margin_y)
            || (self.x + self.width < picture_width && box_px[2] >= right - margin_x)
            || (self.y + self.height < picture_height && box_px[3] >= bottom - margin_y)
    }

    fn overlap_of_smaller(&self, other: &Crop) -> f32 {
        let width = (self.x + self.width).min(other.x + other.width).saturating_sub(self.x.max(other.x));
        let height = (self.y + self.height).min(other.y + other.height).saturating_sub(self.y.max(other.y));
        let smaller = self.area().min(other.area()).max(1);
        (u64::from(width) * u64::from(height)) as f32 / smaller as f32
    }
}

/// The crop around one region (normalised to the frame, which the picture scales) of a
/// `picture_width`×`picture_height` picture: [`CROP_WIDTH_PER_SIDE`] ×
/// [`CROP_HEIGHT_PER_SIDE`] times the region's longer side, centred horizontally on the
/// region and [`CROP_CENTRE_ABOVE_BOTTOM`] above its bottom edge, moved (not cut) to stay
/// inside the picture, and cut only where the picture is smaller than the crop.
pub fn crop_around(region: &BoxNorm, picture_width: u32, picture_height: u32) -> Crop {
    let (picture_w, picture_h) = (picture_width.max(1) as f32, picture_height.max(1) as f32);
    let longer = (region.width() * picture_w).max(region.height() * picture_h);
    let side = |share: f32, limit: u32| ((longer * share).round() as u32).max(MIN_CROP_SIDE_PX).clamp(1, limit.max(1));
    let width = side(CROP_WIDTH_PER_SIDE, picture_width);
    let height = side(CROP_HEIGHT_PER_SIDE, picture_height);
    let centre_x = (region.x1 + region.x2) / 2.0 * picture_w;
    let centre_y = region.y2 * picture_h - CROP_CENTRE_ABOVE_BOTTOM * longer;
    let place = |centre: f32, size: u32, limit: u32| {
        (centre - size as f32 / 2.0).round().clamp(0.0, limit.saturating_sub(size) as f32) as u32
    };
    Crop { x: place(centre_x, width, picture_width), y: place(centre_y, height, picture_height), width, height }
}

/// One turned crop's place in the packed model input.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tile {
    /// The rectangle of the picture it shows.
    pub crop: Crop,
    /// How the crop was turned.
    pub rotation: Rotation,
    /// Top-left corner in the model input, pixels.
    pub input_x: u32,
    /// Top-left corner in the model input, pixels.
    pub input_y: u32,
    /// Size of the turned crop once scaled into the input, pixels.
    pub input_width: u32,
    /// Size of the turned crop once scaled into the input, pixels.
    pub input_height: u32,
}

impl Tile {
    /// Whether a point of the model input lies on this tile.
    pub fn contains(&self, x: f32, y: f32) -> bool {
        let (left, top) = (self.input_x as f32, self.input_y as f32);
        x >= left && x < left + self.input_width as f32 && y >= top && y < top + self.input_height as f32
    }

    /// Maps a box in model-input pixels (on this tile) back onto the picture: clipped to the
    /// tile, unscaled to the turned crop, turned back, moved by the crop's corner.
    pub fn to_picture(&self, box_input: [f32; 4]) -> [f32; 4] {
        let (left, top) = (self.input_x as f32, self.input_y as f32);
        let (right, bottom) = (left + self.input_width as f32, top + self.input_height as f32);
        // The turned crop is crop.height wide and crop.width tall.
        let scale_x = self.input_width as f32 / self.crop.height as f32;
        let scale_y = self.input_height as f32 / self.crop.width as f32;
        let [x1, y1, x2, y2] = box_input;
        let turned = [
            (x1.clamp(left, right) - left) / scale_x,
            (y1.clamp(top, bottom) - top) / scale_y,
            (x2.clamp(left, right) - left) / scale_x,
            (y2.clamp(top, bottom) - top) / scale_y,
        ];
        let [cx1, cy1, cx2, cy2] = unrotate_box(turned, self.rotation, self.crop.width as f32, self.crop.height as f32);
        let (x, y) = (self.crop.x as f32, self.crop.y as f32);
        [cx1 + x, cy1 + y, cx2 + x, cy2 + y]
    }
}

/// Maps a box found on the packed input back onto the `picture_width`×`picture_height`
/// picture through the tile its centre lies on; `None` when its centre lies on the padding
/// between tiles, or the box touches an edge of its crop inside the picture ([`Crop::cuts`]).
pub fn map_back(tiles: &[Tile], box_input: [f32; 4], picture_width: u32, picture_height: u32) -> Option<[f32; 4]> {
    let centre = ((box_input[0] + box_input[2]) / 2.0, (box_input[1] + box_input[3]) / 2.0);
    let tile = tiles.iter().find(|tile| tile.contains(centre.0, centre.1))?;
    let in_picture = tile.to_picture(box_input);
    (!tile.crop.cuts(&in_picture, picture_width, picture_height)).then_some(in_picture)
}

/// The packed input for `regions` on a `picture_width`×`picture_height` picture and an
/// `input_width`×`input_height` model: each region's crop (overlapping crops merged) turned
/// +90° and −90°, laid out on a grid of equal cells (the grid that shows the crops largest),
/// each tile at its cell's top-left, scaled to fit it with its shape kept. `None` (run the
/// whole-picture pass) when there is no region, more than [`MAX_CROPS`] crops, or the crops
/// cover [`MAX_CROP_SHARE`] of the picture or more.
pub fn plan(
    regions: &[BoxNorm],
    picture_width: u32,
    picture_height: u32,
    input_width: u32,
    input_height: u32,
) -> Option<Vec<Tile>> {
    let mut crops: Vec<Crop> = Vec::new();
    for region in regions {
        let mut crop = crop_around(region, picture_width, picture_height);
        // Merge with every crop it overlaps much (a merge can make it overlap another).
        while let Some(index) = crops.iter().position(|other| other.overlap_of_smaller(&crop) >= MERGE_OVERLAP) {
            crop = crop.union(&crops.swap_remove(index));
        }
        crops.push(crop);
    }
    let picture_area = u64::from(picture_width) * u64::from(picture_height);
    let covered: u64 = crops.iter().map(Crop::area).sum();
    if crops.is_empty() || crops.len() > MAX_CROPS || covered as f32 >= MAX_CROP_SHARE * picture_area as f32 {
        return None;
    }
    let turned: Vec<(Crop, Rotation)> =
        crops.iter().flat_map(|&crop| [(crop, Rotation::Clockwise), (crop, Rotation::CounterClockwise)]).collect();
    let count = turned.len() as u32;
    // The grid whose smallest tile scale is largest.
    let scale_on = |rows: u32| {
        let columns = count.div_ceil(rows);
        let (cell_w, cell_h) = ((input_width / columns) as f32, (input_height / rows) as f32);
        let scale = turned
            .iter()
            .map(|(crop, _)| (cell_w / crop.height as f32).min(cell_h / crop.width as f32))
            .fold(f32::INFINITY, f32::min);
        (scale, rows, columns)
    };
    let (_, rows, columns) =
        (1..=count).map(scale_on).max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(&a.1))).expect("count ≥ 2");
    let (cell_w, cell_h) = (input_width / columns, input_height / rows);
    if cell_w == 0 || cell_h == 0 {
        return None;
    }
    let tiles = turned
        .iter()
        .enumerate()
        .map(|(index, &(crop, rotation))| {
            let index = index as u32;
            // Turned, the crop is crop.height wide and crop.width tall.
            let scale = (cell_w as f32 / crop.height as f32).min(cell_h as f32 / crop.width as f32);
            Tile {
                crop,
                rotation,
                input_x: (index % columns) * cell_w,
                input_y: (index / columns) * cell_h,
                input_width: ((crop.height as f32 * scale).round() as u32).clamp(1, cell_w),
                input_height: ((crop.width as f32 * scale).round() as u32).clamp(1, cell_h),
            }
        })
        .collect();
    Some(tiles)
}

/// Draws the packed input: each tile's crop of `picture`, turned and scaled, on a canvas of
/// the pad value.
pub fn render(picture: &image::RgbImage, tiles: &[Tile], input_width: u32, input_height: u32) -> image::RgbImage {
    let pad = crate::decode::letterbox::PAD_VALUE as u8;
    let mut canvas = image::RgbImage::from_pixel(input_width, input_height, image::Rgb([pad, pad, pad]));
    for tile in tiles {
        let Crop { x, y, width, height } = tile.crop;
        let crop = image::imageops::crop_imm(picture, x, y, width, height).to_image();
        let turned = match tile.rotation {
            Rotation::Clockwise => image::imageops::rotate90(&crop),
            Rotation::CounterClockwise => image::imageops::rotate270(&crop),
        };
        let scaled = image::imageops::resize(
            &turned,
            tile.input_width,
            tile.input_height,
            image::imageops::FilterType::Triangle,
        );
        image::imageops::replace(&mut canvas, &scaled, i64::from(tile.input_x), i64::from(tile.input_y));
    }
    canvas
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(x1: f32, y1: f32, x2: f32, y2: f32) -> BoxNorm {
        BoxNorm { x1, y1, x2, y2 }
    }

    #[test]
    fn crops_surround_the_region_and_stay_inside_the_picture() {
        // (region, picture) → crop
        let table = [
            // A 40×100 px upright person in the middle of a 416×234 picture: 240×120 crop,
            // centred on x (228), its centre 35 px above the feet (146.8 − 35).
            (
                (region(0.5, 0.2, 0.5 + 40.0 / 416.0, 0.2 + 100.0 / 234.0), (416, 234)),
                Crop { x: 108, y: 52, width: 240, height: 120 },
            ),
            // At the left edge: moved right, not cut.
            ((region(0.0, 0.1, 0.05, 0.5), (416, 234)), Crop { x: 0, y: 28, width: 225, height: 112 }),
            // Larger than the picture: cut to it.
            ((region(0.3, 0.0, 0.5, 1.0), (416, 234)), Crop { x: 0, y: 0, width: 416, height: 234 }),
            // Tiny: the minimum side.
            ((region(0.5, 0.5, 0.51, 0.52), (416, 234)), Crop { x: 186, y: 96, width: 48, height: 48 }),
        ];
        for ((region, (width, height)), expected) in table {
            assert_eq!(crop_around(&region, width, height), expected, "{region:?}");
        }
    }

    #[test]
    fn the_whole_picture_pass_when_there_is_nothing_small_to_crop() {
        let person = region(0.45, 0.3, 0.5, 0.6);
        assert!(plan(&[], 416, 234, 416, 416).is_none(), "no region");
        assert!(plan(&[region(0.2, 0.0, 0.6, 1.0)], 416, 234, 416, 416).is_none(), "most of the picture");
        let crowd: Vec<BoxNorm> =
            (0..5).map(|i| region(0.02 + 0.2 * i as f32, 0.1, 0.05 + 0.2 * i as f32, 0.2)).collect();
        assert!(plan(&crowd, 1280, 720, 416, 416).is_none(), "more crops than fit");
        let tiles = plan(&[person], 416, 234, 416, 416).expect("one small region");
        assert_eq!(tiles.len(), 2, "one crop, two turns");
        assert_eq!(tiles[0].crop, tiles[1].crop);
        assert_eq!((tiles[0].rotation, tiles[1].rotation), (Rotation::Clockwise, Rotation::CounterClockwise));
        // Two overlapping regions share one crop.
        let beside = region(0.47, 0.3, 0.52, 0.6);
        assert_eq!(plan(&[person, beside], 416, 234, 416, 416).expect("merged").len(), 2);
    }

    #[test]
    fn tiles_do_not_overlap_and_fit_the_input() {
        let regions = [region(0.1, 0.1, 0.15, 0.3), region(0.6, 0.5, 0.64, 0.7), region(0.3, 0.6, 0.34, 0.8)];
        for (input_width, input_height) in [(416, 416), (416, 256)] {
            let tiles = plan(&regions, 416, 234, input_width, input_height).expect("small regions");
            assert_eq!(tiles.len(), 6);
            for (index, tile) in tiles.iter().enumerate() {
                assert!(
                    tile.input_x + tile.input_width <= input_width && tile.input_y + tile.input_height <= input_height
                );
                for other in &tiles[index + 1..] {
                    let apart = tile.input_x + tile.input_width <= other.input_x
                        || other.input_x + other.input_width <= tile.input_x
                        || tile.input_y + tile.input_height <= other.input_y
                        || other.input_y + other.input_height <= tile.input_y;
                    assert!(apart, "{tile:?} overlaps {other:?}");
                }
            }
        }
    }

    #[test]
    fn boxes_touching_a_crop_edge_inside_the_picture_are_cut() {
        let inside = Crop { x: 100, y: 50, width: 200, height: 100 };
        let at_corner = Crop { x: 0, y: 0, width: 200, height: 100 };
        // (crop, box in picture px) → cut
        let table = [
            (inside, [150.0, 80.0, 250.0, 120.0], false),
            (inside, [101.0, 80.0, 250.0, 120.0], true),
            (inside, [150.0, 51.0, 250.0, 120.0], true),
            (inside, [150.0, 80.0, 299.0, 120.0], true),
            (inside, [150.0, 80.0, 250.0, 149.5], true),
            // The crop's left and top edges are the picture's: a box there is not cut by the crop.
            (at_corner, [0.0, 0.0, 150.0, 60.0], false),
            (at_corner, [0.0, 0.0, 199.0, 60.0], true),
        ];
        for (crop, box_px, cut) in table {
            assert_eq!(crop.cuts(&box_px, 416, 234), cut, "{crop:?} {box_px:?}");
        }
    }

    /// The white pixels' bounding box, `[x1, y1, x2, y2)` in pixels.
    fn white_box(image: &image::RgbImage, within: (u32, u32, u32, u32)) -> [f32; 4] {
        let (left, top, width, height) = within;
        let white: Vec<(u32, u32)> = image
            .enumerate_pixels()
            .filter(|(x, y, p)| (left..left + width).contains(x) && (top..top + height).contains(y) && p[0] > 127)
            .map(|(x, y, _)| (x, y))
            .collect();
        assert!(!white.is_empty(), "no white on the tile at {within:?}");
        [
            white.iter().map(|p| p.0).min().unwrap() as f32,
            white.iter().map(|p| p.1).min().unwrap() as f32,
            white.iter().map(|p| p.0).max().unwrap() as f32 + 1.0,
            white.iter().map(|p| p.1).max().unwrap() as f32 + 1.0,
        ]
    }

    #[test]
    fn boxes_found_on_the_packed_input_map_back_onto_the_picture() {
        // A 416×234 picture with two "lying people" (white bars, wider than tall), each near
        // the last box of a person lost there; the bars sit off-centre in their crops so a
        // mirrored or swapped mapping lands elsewhere.
        let bars = [[60u32, 150, 130, 170], [300, 60, 350, 75]];
        let picture = image::RgbImage::from_fn(416, 234, |x, y| {
            let inside = bars.iter().any(|b| (b[0]..b[2]).contains(&x) && (b[1]..b[3]).contains(&y));
            image::Rgb(if inside { [255, 255, 255] } else { [0, 0, 0] })
        });
        let lost = [
            region(70.0 / 416.0, 100.0 / 234.0, 95.0 / 416.0, 168.0 / 234.0),
            region(330.0 / 416.0, 30.0 / 234.0, 345.0 / 416.0, 74.0 / 234.0),
        ];
        for (input_width, input_height) in [(416, 416), (416, 256)] {
            let tiles = plan(&lost, 416, 234, input_width, input_height).expect("two small regions");
            assert_eq!(tiles.len(), 4);
            let packed = render(&picture, &tiles, input_width, input_height);
            assert_eq!(packed.dimensions(), (input_width, input_height));
            for tile in &tiles {
                // What the detector would find on this tile: the turned bar.
                let on_tile = white_box(&packed, (tile.input_x, tile.input_y, tile.input_width, tile.input_height));
                let mapped = map_back(&tiles, on_tile, 416, 234).expect("on a tile, inside its crop");
                let bar = bars
                    .iter()
                    .find(|b| {
                        let crop = tile.crop;
                        b[0] >= crop.x && b[2] <= crop.x + crop.width && b[1] >= crop.y && b[3] <= crop.y + crop.height
                    })
                    .expect("each crop holds one bar");
                // Within a pixel and a half of resampling (the tiles scale the crops).
                for (got, want) in mapped.iter().zip(bar.map(|v| v as f32)) {
                    assert!((got - want).abs() <= 1.5, "{input_width}x{input_height} {tile:?}: {mapped:?} vs {bar:?}");
                }
            }
            // A box centred on the padding maps to nothing.
            let last = tiles.last().unwrap();
            let (x, y) = (last.input_x + last.input_width + 1, last.input_y + last.input_height + 1);
            if x < input_width && y < input_height {
                assert!(map_back(&tiles, [x as f32, y as f32, x as f32 + 2.0, y as f32 + 2.0], 416, 234).is_none());
            }
            // A box over a whole tile touches its crop's edges: someone cut, dropped.
            let first = tiles[0];
            let whole = [
                first.input_x as f32,
                first.input_y as f32,
                (first.input_x + first.input_width) as f32,
                (first.input_y + first.input_height) as f32,
            ];
            assert!(map_back(&tiles, whole, 416, 234).is_none(), "{first:?}");
        }
    }
}
