//! Zone classifiers: an ONNX image classifier run on a zone's crop, as the state source of a
//! bin area (`classifier = "…toml"` on a `bin_area` zone). Its manifest names the classes and
//! which of them mean "overflowing"; the reading is the probability of those classes, which
//! the trash rule treats like the reference-difference share (with its own thresholds).
//!
//! The manifest (TOML) mirrors the detector's: file, sha256, url, tensor names, input size,
//! channel order, `scale` (pixel × scale), per-channel `mean` and `std` (after scaling),
//! whether the output holds `logits` or `probabilities`, the class names and
//! `overflow_classes`.

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use ort::session::Session;
use ort::value::TensorRef;
use serde::Deserialize;

use crate::config::DetectorConfig;
use crate::geometry::BoxNorm;

/// What the classifier's output holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputKind {
    /// Unnormalised scores: softmax is applied.
    Logits,
    /// Already probabilities.
    Probabilities,
}

/// Channel order of the classifier's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ClassifierChannels {
    /// Red, green, blue planes.
    Rgb,
    /// Blue, green, red planes.
    Bgr,
}

/// A classifier manifest as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierManifest {
    /// Short name.
    pub name: String,
    /// Version string.
    pub version: String,
    /// ONNX file, relative to the manifest.
    pub file: String,
    /// sha256 of the file.
    pub sha256: String,
    /// Where the same bytes can be had.
    pub url: String,
    /// Input tensor name.
    pub input_name: String,
    /// Output tensor name (`[1, classes]`).
    pub output_name: String,
    /// Input width.
    pub input_width: u32,
    /// Input height.
    pub input_height: u32,
    /// Channel order.
    pub channel_order: ClassifierChannels,
    /// Pixel values (0–255) are multiplied by this first.
    pub scale: f32,
    /// Per-channel mean subtracted after scaling.
    pub mean: [f32; 3],
    /// Per-channel standard deviation divided by after that.
    pub std: [f32; 3],
    /// Logits or probabilities.
    pub output: OutputKind,
    /// Class names, by output index.
    pub classes: Vec<String>,
    /// The classes that mean "overflowing".
    pub overflow_classes: Vec<String>,
}

/// A loaded zone classifier.
pub struct ZoneClassifier {
    manifest: ClassifierManifest,
    session: Session,
    overflow_indices: Vec<usize>,
}

impl ZoneClassifier {
    /// Loads and checks a classifier (sha256, classes, shapes), with the detector's library.
    pub fn load(manifest_path: &Path, detector: &DetectorConfig) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(manifest_path)
            .with_context(|| format!("cannot read classifier manifest {}", manifest_path.display()))?;
        let manifest: ClassifierManifest = toml::from_str(&text)
            .with_context(|| format!("invalid classifier manifest {}", manifest_path.display()))?;
        let file = super::onnx::read_verified(manifest_path, &manifest.file, &manifest.sha256, "classifier")?;
        let overflow_indices: Vec<usize> = manifest
            .overflow_classes
            .iter()
            .map(|name| {
                manifest
                    .classes
                    .iter()
                    .position(|c| c == name)
                    .with_context(|| format!("overflow class {name:?} is not in classes"))
            })
            .collect::<anyhow::Result<_>>()?;
        if overflow_indices.is_empty() {
            bail!("overflow_classes is empty");
        }
        let session = super::onnx::one_thread_session(detector.onnxruntime_library.as_deref(), &file, "classifier")?;
        let shape = [1, 3, i64::from(manifest.input_height), i64::from(manifest.input_width)];
        let float = ort::value::TensorElementType::Float32;
        super::onnx::check_outlet(&session, true, &manifest.input_name, &shape, float)?;
        super::onnx::check_outlet(&session, false, &manifest.output_name, &[1, manifest.classes.len() as i64], float)?;
        Ok(ZoneClassifier { manifest, session, overflow_indices })
    }

    /// Probability that the zone (its bounds, cropped from `picture`) is overflowing.
    pub fn overflow_probability(&mut self, picture: &image::RgbImage, zone: &BoxNorm) -> anyhow::Result<f32> {
        let manifest = &self.manifest;
        let (width, height) = (picture.width() as f32, picture.height() as f32);
        let x1 = (zone.x1.clamp(0.0, 1.0) * width) as u32;
        let y1 = (zone.y1.clamp(0.0, 1.0) * height) as u32;
        let crop_width = ((zone.x2.clamp(0.0, 1.0) * width) as u32).saturating_sub(x1).max(1);
        let crop_height = ((zone.y2.clamp(0.0, 1.0) * height) as u32).saturating_sub(y1).max(1);
        let crop = image::imageops::crop_imm(picture, x1, y1, crop_width, crop_height).to_image();
        let resized = image::imageops::resize(
            &crop,
            manifest.input_width,
            manifest.input_height,
            image::imageops::FilterType::Triangle,
        );
        let plane = (manifest.input_width * manifest.input_height) as usize;
        let mut tensor = vec![0.0_f32; 3 * plane];
        for (index, pixel) in resized.pixels().enumerate() {
            for channel in 0..3 {
                let source = match manifest.channel_order {
                    ClassifierChannels::Rgb => channel,
                    ClassifierChannels::Bgr => 2 - channel,
                };
                let value = f32::from(pixel[source]) * manifest.scale;
                tensor[channel * plane + index] = (value - manifest.mean[channel]) / manifest.std[channel];
            }
        }
        let shape = [1usize, 3, manifest.input_height as usize, manifest.input_width as usize];
        let input =
            TensorRef::from_array_view((shape, tensor.as_slice())).map_err(|e| anyhow!("classifier input: {e}"))?;
        let outputs = self
            .session
            .run(ort::inputs![manifest.input_name.as_str() => input])
            .map_err(|e| anyhow!("classifier inference: {e}"))?;
        let (_, scores) = outputs[manifest.output_name.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| anyhow!("classifier output: {e}"))?;
        let probabilities = match manifest.output {
            OutputKind::Probabilities => scores.to_vec(),
            OutputKind::Logits => softmax(scores),
        };
        Ok(self.overflow_indices.iter().map(|&i| probabilities[i]).sum::<f32>().clamp(0.0, 1.0))
    }
}

/// Numerically stable softmax.
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::MIN, f32::max);
    let exps: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    exps.iter().map(|e| e / sum).collect()
}
