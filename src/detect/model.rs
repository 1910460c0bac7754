//! The model manifest (`models/*.toml`): which file, its sha256, where it comes from, and what
//! the graph expects — so a wrong or swapped model is refused at start, not discovered as
//! nonsense detections.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

/// Channel order of the model's input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChannelOrder {
    /// Blue, green, red planes (YOLOX's convention).
    Bgr,
}

/// A model manifest as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelManifest {
    /// Short name, reported with every incident.
    pub name: String,
    /// Version string, reported with every incident.
    pub version: String,
    /// Decoder of the output: only `yolox` so far.
    pub architecture: String,
    /// ONNX file name, relative to the manifest.
    pub file: String,
    /// sha256 of the file, lower-case hex.
    pub sha256: String,
    /// Where the same bytes can be downloaded.
    pub url: String,
    /// Licence of the weights.
    pub licence: String,
    /// Input tensor name.
    pub input_name: String,
    /// Output tensor name.
    pub output_name: String,
    /// Input width in pixels.
    pub input_width: u32,
    /// Input height in pixels.
    pub input_height: u32,
    /// Input channel order.
    pub channel_order: ChannelOrder,
    /// Output strides (YOLOX: 8, 16, 32).
    pub strides: Vec<u32>,
    /// Class names, by class id.
    pub classes: Vec<String>,
}

impl ModelManifest {
    /// Refuses shapes the decoder cannot use (a zero stride would divide by zero when the
    /// output grid is laid out; an input not a multiple of every stride has no whole grid).
    fn check_shapes(&self) -> anyhow::Result<()> {
        if self.input_width == 0 || self.input_height == 0 {
            bail!("input_width and input_height must be positive");
        }
        if self.strides.is_empty() {
            bail!("strides: needs at least one stride");
        }
        for stride in &self.strides {
            if *stride == 0 || !self.input_width.is_multiple_of(*stride) || !self.input_height.is_multiple_of(*stride) {
                bail!(
                    "strides: {stride} does not divide the {}x{} input into a whole grid",
                    self.input_width,
                    self.input_height
                );
            }
        }
        if self.classes.is_empty() {
            bail!("classes: needs at least one class name");
        }
        Ok(())
    }
}

/// A manifest together with the verified model file.
#[derive(Debug, Clone)]
pub struct Model {
    /// The manifest.
    pub manifest: ModelManifest,
    /// Absolute path of the ONNX file, whose sha256 matched.
    pub onnx_path: PathBuf,
}

impl Model {
    /// Reads the manifest and checks the model file's presence and sha256.
    pub fn load(manifest_path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(manifest_path)
            .with_context(|| format!("cannot read model manifest {}", manifest_path.display()))?;
        let manifest: ModelManifest =
            toml::from_str(&text).with_context(|| format!("invalid model manifest {}", manifest_path.display()))?;
        if manifest.architecture != "yolox" {
            bail!("model architecture {:?} is not supported (only \"yolox\")", manifest.architecture);
        }
        manifest.check_shapes().with_context(|| format!("invalid model manifest {}", manifest_path.display()))?;
        let onnx_path = manifest_path.parent().unwrap_or(Path::new(".")).join(&manifest.file);
        let bytes = std::fs::read(&onnx_path).with_context(|| {
            format!(
                "model file {} is missing: run scripts/setup (it finds the file by sha256 {} in ../shared/models or downloads it from {})",
                onnx_path.display(),
                manifest.sha256,
                manifest.url
            )
        })?;
        let actual = super::onnx::hex_sha256(&bytes);
        if actual != manifest.sha256.to_ascii_lowercase() {
            bail!(
                "model file {} has sha256 {actual}, but the manifest expects {}: wrong or corrupt file",
                onnx_path.display(),
                manifest.sha256
            );
        }
        Ok(Model { manifest, onnx_path })
    }

    /// Name of a class id, or `class_<id>` when out of range.
    pub fn class_name(&self, class_id: u16) -> String {
        self.manifest.classes.get(usize::from(class_id)).cloned().unwrap_or_else(|| format!("class_{class_id}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(width: u32, height: u32, strides: &[u32], classes: usize) -> ModelManifest {
        ModelManifest {
            name: "test".into(),
            version: "1".into(),
            architecture: "yolox".into(),
            file: "m.onnx".into(),
            sha256: String::new(),
            url: String::new(),
            licence: String::new(),
            input_name: "images".into(),
            output_name: "output".into(),
            input_width: width,
            input_height: height,
            channel_order: ChannelOrder::Bgr,
            strides: strides.to_vec(),
            classes: (0..classes).map(|i| format!("c{i}")).collect(),
        }
    }

    #[test]
    fn shapes_the_decoder_cannot_use_are_refused() {
        // (width, height, strides, classes, accepted)
        let table: &[(u32, u32, &[u32], usize, bool)] = &[
            (416, 416, &[8, 16, 32], 80, true),
            (416, 256, &[8, 16, 32], 80, true),
            (416, 416, &[0], 80, false), // divide by zero, formerly a panic in check-config
            (416, 416, &[], 80, false),
            (416, 400, &[32], 80, false), // 400 is not a multiple of 32
            (0, 416, &[8], 80, false),
            (416, 416, &[8], 0, false),
        ];
        for (width, height, strides, classes, accepted) in table {
            let result = manifest(*width, *height, strides, *classes).check_shapes();
            assert_eq!(result.is_ok(), *accepted, "{width}x{height} {strides:?} {classes}: {result:?}");
        }
    }
}
