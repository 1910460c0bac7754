//! The frozen backbone: MobileNetV2 (ImageNet) cut at its global average pool, run by ONNX
//! Runtime on a bin area's crop squeezed to 224×224 (uint8 RGB, no normalisation). Its
//! manifest (`models/mobilenet_v2_embedding.toml`) pins the file by sha256.

use std::path::Path;

use anyhow::{anyhow, bail, Context};
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef};
use serde::Deserialize;

use crate::detect::onnx;

/// Where the embedder's manifest lives, relative to the project (or install) directory.
pub const DEFAULT_EMBEDDER_MANIFEST: &str = "models/mobilenet_v2_embedding.toml";

/// An embedder manifest as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedderManifest {
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
    /// Input tensor name (uint8 `[1, height, width, 3]`, RGB).
    pub input_name: String,
    /// Output tensor name (float32 `[1, embedding_len]`).
    pub output_name: String,
    /// Input width in pixels.
    pub input_width: u32,
    /// Input height in pixels.
    pub input_height: u32,
    /// Numbers per embedding.
    pub embedding_len: usize,
}

/// A loaded embedder: one ONNX Runtime session, one intra-op thread.
pub struct Embedder {
    manifest: EmbedderManifest,
    sha256: String,
    session: Session,
}

impl Embedder {
    /// Loads and checks the embedder (sha256, tensor names, shapes, types).
    pub fn load(manifest_path: &Path, onnxruntime_library: Option<&Path>) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(manifest_path)
            .with_context(|| format!("cannot read embedder manifest {}", manifest_path.display()))?;
        let manifest: EmbedderManifest =
            toml::from_str(&text).with_context(|| format!("invalid embedder manifest {}", manifest_path.display()))?;
        let file = onnx::read_verified(manifest_path, &manifest.file, &manifest.sha256, "embedder")?;
        let session = onnx::one_thread_session(onnxruntime_library, &file, "embedder")?;
        let input_shape = [1, i64::from(manifest.input_height), i64::from(manifest.input_width), 3];
        onnx::check_outlet(&session, true, &manifest.input_name, &input_shape, TensorElementType::Uint8)?;
        let output_shape = [1, manifest.embedding_len as i64];
        onnx::check_outlet(&session, false, &manifest.output_name, &output_shape, TensorElementType::Float32)?;
        Ok(Embedder { manifest, sha256: file.sha256, session })
    }

    /// sha256 of the ONNX file: a trained bin-state model names the embedder it was made with.
    pub fn sha256(&self) -> &str {
        &self.sha256
    }

    /// The input size, (width, height).
    pub fn input_size(&self) -> (u32, u32) {
        (self.manifest.input_width, self.manifest.input_height)
    }

    /// The embedding of a picture (any size: it is squeezed to the input size by area
    /// averaging, without keeping the aspect ratio — a zone crop fills the input).
    pub fn embed(&mut self, picture: &image::RgbImage) -> anyhow::Result<Vec<f32>> {
        let (width, height) = self.input_size();
        let input = if (picture.width(), picture.height()) == (width, height) {
            picture.clone()
        } else {
            image::imageops::thumbnail(picture, width, height)
        };
        let shape = [1usize, height as usize, width as usize, 3];
        let tensor = TensorRef::from_array_view((shape, input.as_raw().as_slice()))
            .map_err(|e| anyhow!("embedder input: {e}"))?;
        let outputs = self
            .session
            .run(ort::inputs![self.manifest.input_name.as_str() => tensor])
            .map_err(|e| anyhow!("embedder inference: {e}"))?;
        let (_, values) = outputs[self.manifest.output_name.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|e| anyhow!("embedder output: {e}"))?;
        if values.len() != self.manifest.embedding_len || values.iter().any(|v| !v.is_finite()) {
            bail!("embedder output has {} numbers or is not finite", values.len());
        }
        Ok(values.to_vec())
    }
}

/// Lower-case hex sha256 of `bytes` (the training set's listing names photos by it).
pub use crate::detect::onnx::hex_sha256;
