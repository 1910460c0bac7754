//! Preprocessing into the detector's input: scale the frame by r = min(W_in/W, H_in/H), paste
//! it at the top-left of a canvas filled with the pad value, planar BGR float 0–255 (the
//! YOLOX convention; see models/yolox_nano.toml). Video frames go straight from YUV to the
//! scaled BGR picture in one swscale pass; still images (the `detect` command) go through
//! the `image` crate.

use anyhow::Context;
use ffmpeg_next as ffmpeg;

use crate::media::SendScaler;

/// Geometry of a letterbox: how frame pixels map to model-input pixels. Pure.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    /// Frame size.
    pub frame_width: u32,
    /// Frame size.
    pub frame_height: u32,
    /// Model input size.
    pub input_width: u32,
    /// Model input size.
    pub input_height: u32,
    /// Scale factor frame → input.
    pub scale: f32,
    /// Size of the scaled frame inside the input (top-left aligned).
    pub scaled_width: u32,
    /// Size of the scaled frame inside the input (top-left aligned).
    pub scaled_height: u32,
}

impl Letterbox {
    /// The letterbox of a `frame_width`×`frame_height` frame into a model input.
    pub fn new(frame_width: u32, frame_height: u32, input_width: u32, input_height: u32) -> Self {
        let scale = (input_width as f32 / frame_width as f32).min(input_height as f32 / frame_height as f32);
        let scaled_width = ((frame_width as f32 * scale).round() as u32).clamp(1, input_width);
        let scaled_height = ((frame_height as f32 * scale).round() as u32).clamp(1, input_height);
        Letterbox { frame_width, frame_height, input_width, input_height, scale, scaled_width, scaled_height }
    }

    /// Maps a point in model-input pixels back to frame pixels, clamped to the frame.
    pub fn to_frame(&self, x: f32, y: f32) -> (f32, f32) {
        ((x / self.scale).clamp(0.0, self.frame_width as f32), (y / self.scale).clamp(0.0, self.frame_height as f32))
    }
}

/// The value YOLOX pads with.
pub const PAD_VALUE: f32 = 114.0;

/// Writes packed BGR rows (`row_stride` bytes apart) into a planar BGR float tensor of the
/// letterbox's input size, padding the rest.
pub fn bgr_rows_to_tensor(letterbox: &Letterbox, bgr: &[u8], row_stride: usize, tensor: &mut Vec<f32>) {
    let (width, height) = (letterbox.input_width as usize, letterbox.input_height as usize);
    let plane = width * height;
    tensor.clear();
    tensor.resize(3 * plane, PAD_VALUE);
    let (blue, rest) = tensor.split_at_mut(plane);
    let (green, red) = rest.split_at_mut(plane);
    for y in 0..letterbox.scaled_height as usize {
        let row = &bgr[y * row_stride..y * row_stride + 3 * letterbox.scaled_width as usize];
        let out = y * width;
        for (x, pixel) in row.chunks_exact(3).enumerate() {
            blue[out + x] = f32::from(pixel[0]);
            green[out + x] = f32::from(pixel[1]);
            red[out + x] = f32::from(pixel[2]);
        }
    }
}

/// Letterboxes a decoded video frame with swscale (YUV → scaled BGR in one pass). Keeps the
/// scaler between calls while the geometry stays the same.
pub struct VideoLetterboxer {
    input_width: u32,
    input_height: u32,
    scaler: Option<(ScalerKey, SendScaler)>,
    scaled: ffmpeg::frame::Video,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ScalerKey {
    format: ffmpeg::format::Pixel,
    width: u32,
    height: u32,
}

impl VideoLetterboxer {
    /// A letterboxer for a model input of `input_width`×`input_height`.
    pub fn new(input_width: u32, input_height: u32) -> Self {
        VideoLetterboxer { input_width, input_height, scaler: None, scaled: ffmpeg::frame::Video::empty() }
    }

    /// Fills `tensor` from `frame`; returns the letterbox used.
    pub fn run(&mut self, frame: &ffmpeg::frame::Video, tensor: &mut Vec<f32>) -> anyhow::Result<Letterbox> {
        let letterbox = Letterbox::new(frame.width(), frame.height(), self.input_width, self.input_height);
        let key = ScalerKey { format: frame.format(), width: frame.width(), height: frame.height() };
        if self.scaler.as_ref().is_none_or(|(existing, _)| *existing != key) {
            let scaler = ffmpeg::software::scaling::Context::get(
                key.format,
                key.width,
                key.height,
                ffmpeg::format::Pixel::BGR24,
                letterbox.scaled_width,
                letterbox.scaled_height,
                ffmpeg::software::scaling::Flags::BILINEAR,
            )
            .with_context(|| format!("swscale {:?} {}x{} → BGR24", key.format, key.width, key.height))?;
            self.scaler = Some((key, SendScaler(scaler)));
            self.scaled = ffmpeg::frame::Video::empty();
        }
        let (_, scaler) = self.scaler.as_mut().expect("scaler set above");
        scaler.0.run(frame, &mut self.scaled).context("swscale")?;
        bgr_rows_to_tensor(&letterbox, self.scaled.data(0), self.scaled.stride(0), tensor);
        Ok(letterbox)
    }

    /// The scaled picture of the last `run` (the model's view, before padding), as RGB: what
    /// bin-area readings and evidence snapshots use.
    pub fn scaled_picture(&self) -> image::RgbImage {
        let (width, height) = (self.scaled.width(), self.scaled.height());
        let (data, stride) = (self.scaled.data(0), self.scaled.stride(0));
        let mut rgb = Vec::with_capacity(width as usize * height as usize * 3);
        for y in 0..height as usize {
            for pixel in data[y * stride..y * stride + 3 * width as usize].chunks_exact(3) {
                rgb.extend_from_slice(&[pixel[2], pixel[1], pixel[0]]);
            }
        }
        image::RgbImage::from_raw(width, height, rgb).expect("buffer matches size")
    }
}

/// Letterboxes a still image (RGB) for the `detect` command and tests.
///
/// The `image` crate's Triangle filter (antialiased bilinear) reproduces the model's published
/// reference scores (dog 0.83, car 0.81, bicycle 0.81 on yolox_assets_dog.jpg); an
/// OpenCV-`INTER_LINEAR`-style resize without antialiasing moved them by up to 0.05.
pub fn letterbox_image(
    image: &image::RgbImage,
    input_width: u32,
    input_height: u32,
    tensor: &mut Vec<f32>,
) -> Letterbox {
    let letterbox = Letterbox::new(image.width(), image.height(), input_width, input_height);
    let scaled = image::imageops::resize(
        image,
        letterbox.scaled_width,
        letterbox.scaled_height,
        image::imageops::FilterType::Triangle,
    );
    let mut bgr = Vec::with_capacity(scaled.as_raw().len());
    for pixel in scaled.pixels() {
        bgr.extend_from_slice(&[pixel[2], pixel[1], pixel[0]]);
    }
    bgr_rows_to_tensor(&letterbox, &bgr, 3 * letterbox.scaled_width as usize, tensor);
    letterbox
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn letterbox_geometry_table() {
        // (frame w, h) → (scale, scaled w, h)
        let table = [
            ((1280, 720), (0.325, 416, 234)),
            ((640, 360), (0.65, 416, 234)),
            ((768, 576), (0.541_666_7, 416, 312)),
            ((416, 416), (1.0, 416, 416)),
            ((300, 600), (0.693_333_3, 208, 416)),
        ];
        for ((width, height), (scale, scaled_width, scaled_height)) in table {
            let letterbox = Letterbox::new(width, height, 416, 416);
            assert!((letterbox.scale - scale).abs() < 1e-5, "{width}x{height}: {letterbox:?}");
            assert_eq!((letterbox.scaled_width, letterbox.scaled_height), (scaled_width, scaled_height));
        }
        let letterbox = Letterbox::new(1280, 720, 416, 416);
        assert_eq!(letterbox.to_frame(208.0, 117.0), (640.0, 360.0));
        assert_eq!(letterbox.to_frame(416.0, 416.0), (1280.0, 720.0), "padding maps onto the frame's edge");
    }

    #[test]
    fn tensor_is_planar_bgr_top_left_with_padding() {
        let letterbox = Letterbox::new(2, 1, 4, 4);
        // One row of 2 pixels scaled to 4x2: fake the scaled rows directly.
        let letterbox = Letterbox { scaled_width: 2, scaled_height: 1, ..letterbox };
        let bgr = [1, 2, 3, 4, 5, 6];
        let mut tensor = Vec::new();
        bgr_rows_to_tensor(&letterbox, &bgr, 6, &mut tensor);
        assert_eq!(tensor.len(), 3 * 16);
        assert_eq!(&tensor[0..3], &[1.0, 4.0, PAD_VALUE]); // blue plane
        assert_eq!(&tensor[16..18], &[2.0, 5.0]); // green plane
        assert_eq!(&tensor[32..34], &[3.0, 6.0]); // red plane
        assert_eq!(tensor[4], PAD_VALUE, "second row is padding");
    }
}
