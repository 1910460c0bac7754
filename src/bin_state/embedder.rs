//! The frozen backbone: MobileNetV2 (ImageNet) cut at its global average pool, run by ONNX
//! Runtime on a bin area's crop squeezed to 224×224 (uint8 RGB, no normalisation). Its
//! manifest (`models/mobilenet_v2_embedding.toml`) pins the file by sha256.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use ort::session::Session;
use ort::value::{TensorElementType, TensorRef};
use serde::Deserialize;
use sha2::{Digest, Sha256};

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
        let onnx_path: PathBuf = manifest_path.parent().unwrap_or(Path::new(".")).join(&manifest.file);
        let bytes = std::fs::read(&onnx_path)
            .with_context(|| format!("embedder file {} is missing (run scripts/setup)", onnx_path.display()))?;
        let actual = hex_sha256(&bytes);
        if actual != manifest.sha256.to_ascii_lowercase() {
            bail!("embedder {} has sha256 {actual}, the manifest expects {}", onnx_path.display(), manifest.sha256);
        }
        let environment = crate::detect::runtime(onnxruntime_library)?;
        let session = Session::builder(&environment)
            .map_err(|e| anyhow!("configure embedder session: {e}"))?
            .with_intra_threads(1)
            .map_err(|e| anyhow!("configure embedder session: {e}"))?
            .commit_from_memory(&bytes)
            .map_err(|e| anyhow!("load embedder {}: {e}", onnx_path.display()))?;
        let input_shape = [1, i64::from(manifest.input_height), i64::from(manifest.input_width), 3];
        check_outlet(&session, true, &manifest.input_name, &input_shape, TensorElementType::Uint8)?;
        let output_shape = [1, manifest.embedding_len as i64];
        check_outlet(&session, false, &manifest.output_name, &output_shape, TensorElementType::Float32)?;
        Ok(Embedder { manifest, sha256: actual, session })
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

/// Lower-case hex sha256 of `bytes`.
pub fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

fn check_outlet(
    session: &Session,
    input: bool,
    name: &str,
    shape: &[i64],
    element: TensorElementType,
) -> anyhow::Result<()> {
    let (kind, outlets) = if input { ("input", session.inputs()) } else { ("output", session.outputs()) };
    let outlet = outlets.iter().find(|outlet| outlet.name() == name).with_context(|| {
        let names: Vec<&str> = outlets.iter().map(|outlet| outlet.name()).collect();
        format!("the embedder has no {kind} named {name:?} (it has {names:?})")
    })?;
    let actual = outlet.dtype().tensor_shape().with_context(|| format!("{kind} {name:?} is not a tensor"))?;
    let matches = actual.len() == shape.len() && actual.iter().zip(shape).all(|(&a, &e)| a == e || a < 0);
    if !matches {
        bail!("embedder {kind} {name:?} has shape {:?}, the manifest implies {shape:?}", &actual[..]);
    }
    if outlet.dtype().tensor_type() != Some(element) {
        bail!("embedder {kind} {name:?} is not {element:?}");
    }
    Ok(())
}
