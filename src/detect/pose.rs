//! The pose second stage of fall-watch cameras: MoveNet SinglePose Lightning on a square
//! crop of the analysed picture around a person (or where a person was just lost), turned
//! 0°, 90° and 270° — a model trained on upright people reads lying ones best turned upright —
//! keeping the turn with the highest mean keypoint score. Its manifest
//! (`models/movenet_lightning.toml`) pins the file by sha256.

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use ort::session::Session;
use ort::value::TensorRef;
use serde::Deserialize;

use crate::geometry::BoxNorm;
use crate::pose::{PoseSummary, Turn};

/// The pose model's manifest, beside the detector's.
pub const POSE_MANIFEST_FILE: &str = "movenet_lightning.toml";

/// A pose manifest as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoseManifest {
    /// Short name.
    pub name: String,
    /// Version string.
    pub version: String,
    /// ONNX file, relative to the manifest.
    pub file: String,
    /// sha256 of the file.
    pub sha256: String,
    /// Where the same bytes can be had ("" when only a local mirror has them).
    pub url: String,
    /// What the file was made from.
    pub source: String,
    /// Licence of the weights.
    pub licence: String,
    /// Input tensor name (uint8 `[1, size, size, 3]`, RGB).
    pub input_name: String,
    /// Input side in pixels.
    pub input_size: u32,
    /// Output tensor name (float32 `[1, 1, 17, 3]`: y, x, score).
    pub output_name: String,
}

/// A loaded pose model: one ONNX Runtime session, one intra-op thread.
pub struct PoseEstimator {
    manifest: PoseManifest,
    session: Session,
}

impl PoseEstimator {
    /// Loads and checks the model (sha256, tensor names).
    pub fn load(manifest_path: &Path, onnxruntime_library: Option<&Path>) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(manifest_path)
            .with_context(|| format!("cannot read pose manifest {}", manifest_path.display()))?;
        let manifest: PoseManifest =
            toml::from_str(&text).with_context(|| format!("invalid pose manifest {}", manifest_path.display()))?;
        if manifest.input_size == 0 {
            bail!("pose manifest {}: input_size must be positive", manifest_path.display());
        }
        let file = super::onnx::read_verified(manifest_path, &manifest.file, &manifest.sha256, "pose model")?;
        let session = super::onnx::one_thread_session(onnxruntime_library, &file, "pose")?;
        for (input, name) in [(true, &manifest.input_name), (false, &manifest.output_name)] {
            let outlets = if input { session.inputs() } else { session.outputs() };
            if !outlets.iter().any(|outlet| outlet.name() == name.as_str()) {
                bail!("the pose model has no {} named {name:?}", if input { "input" } else { "output" });
            }
        }
        Ok(PoseEstimator { manifest, session })
    }

    /// The pose of the person in `bounds` (normalised, may reach beyond the picture: padded
    /// black), best of three turns; `None` when no turn gives a body axis.
    pub fn estimate(&mut self, picture: &image::RgbImage, bounds: &BoxNorm) -> anyhow::Result<Option<PoseSummary>> {
        let size = self.manifest.input_size;
        let crop = square_crop_pixels(picture, bounds, size);
        let mut best: Option<(f32, [[f32; 3]; 17], Turn)> = None;
        for turn in [Turn::None, Turn::Clockwise, Turn::CounterClockwise] {
            let turned = match turn {
                Turn::None => crop.clone(),
                Turn::Clockwise => image::imageops::rotate90(&crop),
                Turn::CounterClockwise => image::imageops::rotate270(&crop),
            };
            let keypoints = self.keypoints(&turned)?;
            let score = crate::pose::mean_score(&keypoints);
            if best.as_ref().is_none_or(|(best_score, _, _)| score > *best_score) {
                best = Some((score, keypoints, turn));
            }
        }
        Ok(best.and_then(|(_, keypoints, turn)| crate::pose::summarise(&keypoints, turn)))
    }

    /// The model's 17 keypoints on a picture of the input size.
    fn keypoints(&mut self, picture: &image::RgbImage) -> anyhow::Result<[[f32; 3]; 17]> {
        let size = self.manifest.input_size as usize;
        let tensor = TensorRef::from_array_view(([1usize, size, size, 3], picture.as_raw().as_slice()))
            .map_err(|e| anyhow!("pose input: {e}"))?;
        let outputs = self
            .session
            .run(ort::inputs![self.manifest.input_name.as_str() => tensor])
            .map_err(|e| anyhow!("pose inference: {e}"))?;
        let (_, values) = outputs[self.manifest.output_name.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| anyhow!("pose output: {e}"))?;
        if values.len() != 17 * 3 || values.iter().any(|v| !v.is_finite()) {
            bail!("pose output has {} numbers or is not finite", values.len());
        }
        let mut keypoints = [[0.0; 3]; 17];
        for (keypoint, chunk) in keypoints.iter_mut().zip(values.chunks_exact(3)) {
            keypoint.copy_from_slice(chunk);
        }
        Ok(keypoints)
    }
}

/// The part of `picture` inside `bounds` (normalised; outside the picture is black),
/// resized to `size`×`size`.
fn square_crop_pixels(picture: &image::RgbImage, bounds: &BoxNorm, size: u32) -> image::RgbImage {
    let (width, height) = (picture.width() as f32, picture.height() as f32);
    let x1 = (bounds.x1 * width).round() as i64;
    let y1 = (bounds.y1 * height).round() as i64;
    let crop_width = ((bounds.width() * width).round() as i64).clamp(1, 4 * i64::from(picture.width().max(1)));
    let crop_height = ((bounds.height() * height).round() as i64).clamp(1, 4 * i64::from(picture.height().max(1)));
    let mut canvas = image::RgbImage::new(crop_width as u32, crop_height as u32);
    let overlay_x = -x1;
    let overlay_y = -y1;
    image::imageops::overlay(&mut canvas, picture, overlay_x, overlay_y);
    image::imageops::resize(&canvas, size, size, image::imageops::FilterType::Triangle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_crop_beyond_the_picture_is_padded_black() {
        let picture = image::RgbImage::from_pixel(10, 10, image::Rgb([200, 200, 200]));
        // The left half of the crop lies left of the picture.
        let crop = square_crop_pixels(&picture, &BoxNorm { x1: -0.5, y1: 0.0, x2: 0.5, y2: 1.0 }, 8);
        assert_eq!(crop.dimensions(), (8, 8));
        assert_eq!(crop.get_pixel(0, 4).0, [0, 0, 0]);
        assert_eq!(crop.get_pixel(7, 4).0, [200, 200, 200]);
    }
}
