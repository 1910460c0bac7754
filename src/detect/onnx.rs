//! What every ONNX model of the gateway shares (the detector, the zone classifiers, the
//! bin-state embedder, the pose model): the file named by its manifest, found beside it and
//! checked by sha256 before ONNX Runtime sees it; a one-thread session; its tensors checked
//! against what the manifest says.

use std::path::{Path, PathBuf};

use anyhow::{anyhow, bail, Context};
use ort::session::Session;
use ort::value::TensorElementType;
use sha2::{Digest, Sha256};

/// Lower-case hex sha256 of `bytes`.
pub fn hex_sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A model file whose sha256 matched its manifest.
pub struct VerifiedFile {
    /// Where it is (beside the manifest).
    pub path: PathBuf,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// Its sha256, lower-case hex.
    pub sha256: String,
}

/// Reads `file` (relative to the manifest at `manifest_path`) and checks it has `sha256`;
/// `what` names the model in errors ("embedder", "pose model", …).
pub fn read_verified(manifest_path: &Path, file: &str, sha256: &str, what: &str) -> anyhow::Result<VerifiedFile> {
    let path = manifest_path.parent().unwrap_or(Path::new(".")).join(file);
    let bytes =
        std::fs::read(&path).with_context(|| format!("{what} {} is missing (run scripts/setup)", path.display()))?;
    let actual = hex_sha256(&bytes);
    if actual != sha256.to_ascii_lowercase() {
        bail!("{what} {} has sha256 {actual}, the manifest expects {sha256}", path.display());
    }
    Ok(VerifiedFile { path, bytes, sha256: actual })
}

/// A session with one intra-op thread on a verified file (the small second-stage models
/// run on the caller's thread, beside the detector's sessions).
pub fn one_thread_session(library: Option<&Path>, file: &VerifiedFile, what: &str) -> anyhow::Result<Session> {
    let environment = super::runtime(library)?;
    Session::builder(&environment)
        .map_err(|e| anyhow!("configure {what} session: {e}"))?
        .with_intra_threads(1)
        .map_err(|e| anyhow!("configure {what} session: {e}"))?
        .commit_from_memory(&file.bytes)
        .map_err(|e| anyhow!("load {what} {}: {e}", file.path.display()))
}

/// Checks that the session has an input (or output) `name` of `shape` (a negative dimension
/// in the graph matches any) and element type `element`.
pub fn check_outlet(
    session: &Session,
    input: bool,
    name: &str,
    shape: &[i64],
    element: TensorElementType,
) -> anyhow::Result<()> {
    let (kind, outlets) = if input { ("input", session.inputs()) } else { ("output", session.outputs()) };
    let outlet = outlets.iter().find(|outlet| outlet.name() == name).with_context(|| {
        let names: Vec<&str> = outlets.iter().map(|outlet| outlet.name()).collect();
        format!("the model has no {kind} named {name:?} (it has {names:?})")
    })?;
    let actual = outlet.dtype().tensor_shape().with_context(|| format!("{kind} {name:?} is not a tensor"))?;
    let matches = actual.len() == shape.len() && actual.iter().zip(shape).all(|(&a, &e)| a == e || a < 0);
    if !matches {
        bail!("model {kind} {name:?} has shape {:?}, but the manifest implies {shape:?}", &actual[..]);
    }
    if outlet.dtype().tensor_type() != Some(element) {
        bail!("model {kind} {name:?} is not {element:?}");
    }
    Ok(())
}
