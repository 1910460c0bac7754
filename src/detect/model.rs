//! The model manifest (`models/*.toml`): which file, its sha256, where it comes from, and what
//! the graph expects — so a wrong or swapped model is refused at start, not discovered as
//! nonsense detections.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;
use sha2::{Digest, Sha256};

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
        let onnx_path = manifest_path.parent().unwrap_or(Path::new(".")).join(&manifest.file);
        let bytes = std::fs::read(&onnx_path).with_context(|| {
            format!(
                "model file {} is missing: run scripts/setup (it finds the file by sha256 {} in ../shared/models or downloads it from {})",
                onnx_path.display(),
                manifest.sha256,
                manifest.url
            )
        })?;
        let actual = hex(&Sha256::digest(&bytes));
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

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
