//! The pixel kernel of bystander blurring (issue 16): coarse pixelation of a rectangle of an
//! RGB picture, each block replaced by its mean colour. Pixelation rather than a Gaussian blur:
//! one read and one write per pixel whatever the strength, and no detail survives inside a
//! block (a light blur can be partly undone; a block's mean cannot). Plain `std`, no crate
//! types, so `benches/privacy/pixelate_bench.rs` can time it on its own with `rustc -O`.

/// Pixelates `x0..x1` × `y0..y1` (pixels, clamped to the picture) of a packed RGB picture
/// `width` pixels wide with row stride `width * 3`, in square blocks of `block` pixels (at
/// least 1). Blocks at the right and bottom edges are cut by the rectangle.
pub fn pixelate_rgb(pixels: &mut [u8], width: u32, height: u32, rect: [u32; 4], block: u32) {
    let [x0, y0, x1, y1] = rect;
    let (x1, y1) = (x1.min(width), y1.min(height));
    if x0 >= x1 || y0 >= y1 || pixels.len() < width as usize * height as usize * 3 {
        return;
    }
    let block = block.max(1);
    let stride = width as usize * 3;
    let mut by = y0;
    while by < y1 {
        let bottom = (by + block).min(y1);
        let mut bx = x0;
        while bx < x1 {
            let right = (bx + block).min(x1);
            let mut sum = [0u64; 3];
            for y in by..bottom {
                let row = &pixels[y as usize * stride + bx as usize * 3..y as usize * stride + right as usize * 3];
                for pixel in row.chunks_exact(3) {
                    sum[0] += u64::from(pixel[0]);
                    sum[1] += u64::from(pixel[1]);
                    sum[2] += u64::from(pixel[2]);
                }
            }
            let count = u64::from((bottom - by) * (right - bx));
            let mean = [(sum[0] / count) as u8, (sum[1] / count) as u8, (sum[2] / count) as u8];
            for y in by..bottom {
                let row = &mut pixels[y as usize * stride + bx as usize * 3..y as usize * stride + right as usize * 3];
                for pixel in row.chunks_exact_mut(3) {
                    pixel.copy_from_slice(&mean);
                }
            }
            bx = right;
        }
        by = bottom;
    }
}

#[cfg(test)]
mod tests {
    use super::pixelate_rgb;

    #[test]
    fn each_block_becomes_its_mean_and_nothing_outside_changes() {
        // 4x2 picture: a 2x2 block of 0/100/200/100 (mean 100) and the rest untouched.
        let (width, height) = (4u32, 2u32);
        let mut pixels: Vec<u8> = [0u8, 100, 9, 9, 100, 200, 9, 9].iter().flat_map(|&v| [v, v, v]).collect();
        let before = pixels.clone();
        pixelate_rgb(&mut pixels, width, height, [0, 0, 2, 2], 2);
        for (index, chunk) in pixels.chunks_exact(3).enumerate() {
            let x = index as u32 % width;
            if x < 2 {
                assert_eq!(chunk, [100, 100, 100], "pixel {index}");
            } else {
                assert_eq!(chunk, &before[index * 3..index * 3 + 3], "pixel {index} outside the rectangle");
            }
        }
        // Rectangles outside the picture, empty ones, and a short buffer change nothing.
        let copy = pixels.clone();
        pixelate_rgb(&mut pixels, width, height, [3, 3, 9, 9], 2);
        pixelate_rgb(&mut pixels, width, height, [1, 1, 1, 2], 2);
        pixelate_rgb(&mut pixels[..5], width, height, [0, 0, 4, 2], 2);
        assert_eq!(pixels, copy);
    }
}
