//! The `gateway` command's subcommands. `main` parses arguments and dispatches here; each
//! subcommand returns the process exit code.

pub mod bin_state;
pub mod calibrate;
pub mod check_config;
pub mod detect;
pub mod eval_falls;
pub mod reference;
pub mod replay;
pub mod run;

use std::path::Path;

use crate::config::{self, Config, ConfigProblem, ConfigProblems};
use crate::detect::{Detector, Detectors};

/// Exit code for a bad config or bad usage (`EX_USAGE` from sysexits.h).
pub const EXIT_CONFIG: i32 = 64;

/// Loads a config and checks that its detector starts (library, models, shapes): everything
/// `check-config` promises. Problems of `[detector] model` are reported under `detector.model`,
/// those of `wide_model` (its sha256, shapes, a class list that differs) under
/// `detector.wide_model`.
pub fn load_and_check(path: &Path) -> Result<(Config, Detectors), ConfigProblems> {
    let config = config::load(path)?;
    let problem = |key: &str, error: anyhow::Error| {
        ConfigProblems(vec![ConfigProblem { path: key.to_string(), message: format!("{error:#}") }])
    };
    let square = Detector::load(&config.detector).map_err(|error| problem("detector.model", error))?;
    let wide = match &config.detector.wide_model_manifest {
        None => None,
        Some(manifest) => Some(
            crate::detect::Model::load(manifest)
                .and_then(|model| Detector::with_model(&config.detector, std::sync::Arc::new(model)))
                .map_err(|error| problem("detector.wide_model", error))?,
        ),
    };
    let detectors = Detectors::new(square, wide).map_err(|error| problem("detector.wide_model", error))?;
    let problems = model_problems(&config, &detectors.square().model().manifest.classes);
    if problems.is_empty() {
        Ok((config, detectors))
    } else {
        Err(ConfigProblems(problems))
    }
}

/// What only the model can tell about a validated config: zone class names unknown to it,
/// and zone classifiers that do not load. The running gateway re-checks reloaded and edited
/// configs with this against the model it runs.
pub fn model_problems(config: &Config, class_names: &[String]) -> Vec<ConfigProblem> {
    let mut problems = class_problems(config, class_names);
    for camera in &config.cameras {
        if let Err(error) = ZoneClassifiers::load(camera, &config.detector) {
            problems
                .push(ConfigProblem { path: format!("cameras.{}.zones", camera.id), message: format!("{error:#}") });
        }
    }
    problems
}

/// Loads the clean reference images of a camera's bin zones that have one configured.
pub fn load_references(
    camera: &crate::config::CameraConfig,
) -> anyhow::Result<Vec<(String, crate::rules::trash_overflow::GreyFrame)>> {
    use anyhow::Context;
    let mut references = Vec::new();
    for zone in &camera.zones {
        if let crate::zones::ZoneRule::Trash(params) = &zone.rule {
            let crate::zones::TrashSource::ReferenceDiff { reference: Some(path) } = &params.source else { continue };
            let image = crate::evidence::read_picture(path)
                .with_context(|| format!("cannot read reference image {}", path.display()))?;
            references.push((zone.id.clone(), crate::rules::trash_overflow::GreyFrame::from_rgb(&image.to_rgb8())));
        }
    }
    Ok(references)
}

/// The readers of a camera's bin zones that read a model (an ONNX classifier, or the
/// embedding + bin-state model: one embedder session per camera, shared by its zones), with
/// the zones' bounds.
pub struct ZoneClassifiers {
    zones: Vec<(String, crate::geometry::BoxNorm, ZoneReader, ModelSource)>,
    embedder: Option<crate::bin_state::embedder::Embedder>,
    /// The pose model, where a fall-watch zone has `pose = true`.
    pose: Option<Box<crate::detect::pose::PoseEstimator>>,
    /// Pose crops run so far, and their time (µs): the cost figure.
    pub pose_crops: u64,
    /// See `pose_crops`.
    pub pose_us: u64,
}

enum ZoneReader {
    Onnx(Box<crate::detect::classifier::ZoneClassifier>),
    Model(Box<crate::bin_state::BinStateModel>),
}

/// Which model a bin zone reads (shown in the console beside its reading).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelSource {
    /// An ONNX classifier (`source = "classifier"`).
    Classifier,
    /// The file named by the zone's `model = …`.
    File,
    /// The zone's own model, taught from the console (`bin_state::zone_store`).
    Learned,
    /// The generic default.
    Generic,
}

impl ModelSource {
    /// As the API names it.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelSource::Classifier => "classifier",
            ModelSource::File => "file",
            ModelSource::Learned => "learned",
            ModelSource::Generic => "generic",
        }
    }
}

/// The folder of the bundled models: where the detector's manifest is.
pub fn models_dir(detector: &crate::config::DetectorConfig) -> std::path::PathBuf {
    detector.model_manifest.parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Loads the embedder beside the detector's manifest and a bin-state model, and checks that
/// the model was made with that embedder.
pub fn load_bin_model(
    model_path: &Path,
    detector: &crate::config::DetectorConfig,
    embedder: &mut Option<crate::bin_state::embedder::Embedder>,
) -> anyhow::Result<crate::bin_state::BinStateModel> {
    use anyhow::Context;
    if embedder.is_none() {
        let manifest = models_dir(detector).join(crate::bin_state::EMBEDDER_MANIFEST_FILE);
        *embedder = Some(
            crate::bin_state::embedder::Embedder::load(&manifest, detector.onnxruntime_library.as_deref())
                .context("bin-state embedder")?,
        );
    }
    let sha256 = embedder.as_ref().map(|e| e.sha256().to_string()).unwrap_or_default();
    let model = crate::bin_state::BinStateModel::load(model_path)?;
    if model.embedder_sha256 != sha256 {
        anyhow::bail!(
            "bin-state model {} was made with embedder {}, this one is {sha256} (retrain it)",
            model_path.display(),
            model.embedder_sha256
        );
    }
    Ok(model)
}

impl ZoneClassifiers {
    /// Loads every classifier and bin-state model a camera's zones name (never a learned one).
    pub fn load(
        camera: &crate::config::CameraConfig,
        detector: &crate::config::DetectorConfig,
    ) -> anyhow::Result<Self> {
        Self::load_with_learned(camera, detector, None)
    }

    /// Like [`ZoneClassifiers::load`]; with `state_dir`, a zone with `source = "model"` and no
    /// `model = …` of its own reads the model ops taught it from the console, where there is
    /// one. A learned model that does not load is logged and the generic one read instead:
    /// state files never make a valid config fail.
    pub fn load_with_learned(
        camera: &crate::config::CameraConfig,
        detector: &crate::config::DetectorConfig,
        state_dir: Option<&Path>,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        let mut zones = Vec::new();
        let mut embedder = None;
        for zone in &camera.zones {
            let crate::zones::ZoneRule::Trash(params) = &zone.rule else { continue };
            let (reader, source) = match &params.source {
                crate::zones::TrashSource::Classifier { manifest } => (
                    ZoneReader::Onnx(Box::new(
                        crate::detect::classifier::ZoneClassifier::load(manifest, detector)
                            .with_context(|| format!("zone {} classifier", zone.id))?,
                    )),
                    ModelSource::Classifier,
                ),
                crate::zones::TrashSource::Model { model } => {
                    let (model, source) =
                        zone_model(camera.id.as_str(), &zone.id, model.as_deref(), detector, state_dir, &mut embedder)?;
                    (ZoneReader::Model(Box::new(model)), source)
                }
                crate::zones::TrashSource::ReferenceDiff { .. } => continue,
            };
            zones.push((zone.id.clone(), zone.polygon.bounds(), reader, source));
        }
        let pose = if camera.pose() {
            let manifest = models_dir(detector).join(crate::detect::pose::POSE_MANIFEST_FILE);
            Some(Box::new(
                crate::detect::pose::PoseEstimator::load(&manifest, detector.onnxruntime_library.as_deref())
                    .context("pose model (pose = true on a fall_watch zone)")?,
            ))
        } else {
            None
        };
        Ok(ZoneClassifiers { zones, embedder, pose, pose_crops: 0, pose_us: 0 })
    }

    /// The pose on each requested box (normalised to `picture`), read on a square crop around
    /// it; boxes the model gives no body axis for, or fails on (logged), are left out.
    pub fn poses(
        &mut self,
        picture: &image::RgbImage,
        requests: &[crate::geometry::BoxNorm],
    ) -> Vec<(crate::geometry::BoxNorm, crate::pose::PoseSummary)> {
        let Some(estimator) = self.pose.as_mut() else { return Vec::new() };
        let aspect = picture.width() as f32 / picture.height().max(1) as f32;
        let mut poses = Vec::new();
        for request in requests {
            let started = std::time::Instant::now();
            let crop = crate::pose::square_crop(request, aspect);
            match estimator.estimate(picture, &crop) {
                Ok(Some(pose)) => poses.push((*request, pose)),
                Ok(None) => {}
                Err(error) => tracing::warn!(error = format!("{error:#}"), "pose model failed"),
            }
            self.pose_crops += 1;
            self.pose_us += started.elapsed().as_micros() as u64;
        }
        tracing::debug!(?requests, ?poses, "poses");
        poses
    }

    /// One zone's reading on `picture` (`None`: the zone does not read a model).
    pub fn read_zone(&mut self, zone: &str, picture: &image::RgbImage) -> Option<anyhow::Result<f32>> {
        let (_, bounds, reader, _) = self.zones.iter_mut().find(|(id, ..)| id == zone)?;
        Some(match reader {
            ZoneReader::Onnx(classifier) => classifier.overflow_probability(picture, bounds),
            ZoneReader::Model(model) => {
                let crop = crate::bin_state::crop(picture, bounds);
                match self.embedder.as_mut() {
                    Some(embedder) => embedder
                        .embed(&crop)
                        .map(|embedding| model.probability(&crate::bin_state::ViewFeatures::new(&embedding, &crop))),
                    None => Err(anyhow::anyhow!("no embedder loaded")),
                }
            }
        })
    }

    /// Each model-read zone's reading on `picture`; a zone whose model fails gives none this
    /// frame (logged), and its state holds.
    pub fn read(&mut self, picture: &image::RgbImage) -> Vec<(String, f32)> {
        let ids: Vec<String> = self.zones.iter().map(|(id, ..)| id.clone()).collect();
        ids.into_iter()
            .filter_map(|zone| match self.read_zone(&zone, picture)? {
                Ok(probability) => Some((zone, probability)),
                Err(error) => {
                    tracing::warn!(zone = %zone, error = format!("{error:#}"), "zone classifier failed");
                    None
                }
            })
            .collect()
    }
}

impl ZoneClassifiers {
    /// Which model each model-read zone reads.
    pub fn sources(&self) -> Vec<(String, ModelSource)> {
        self.zones.iter().map(|(id, _, _, source)| (id.clone(), *source)).collect()
    }

    /// Reads again which model `zone` of `camera` should read (after ops trained it or
    /// forgot its model) and swaps it in; nothing else changes, so the zone's reading
    /// history and the trash rule's hysteresis carry on. Returns the source now read.
    pub fn reload_zone_model(
        &mut self,
        camera: &crate::config::CameraConfig,
        zone: &str,
        detector: &crate::config::DetectorConfig,
        state_dir: &Path,
    ) -> anyhow::Result<ModelSource> {
        let Some(config) = camera.zones.iter().find(|z| z.id == zone) else {
            anyhow::bail!("camera {} has no zone {zone:?}", camera.id);
        };
        let crate::zones::ZoneRule::Trash(params) = &config.rule else {
            anyhow::bail!("zone {zone:?} is not a bin_area");
        };
        let crate::zones::TrashSource::Model { model } = &params.source else {
            anyhow::bail!("zone {zone:?} does not read a model (its source is not \"model\")");
        };
        let Some(slot) = self.zones.iter_mut().find(|(id, ..)| id == zone) else {
            anyhow::bail!("zone {zone:?} has no reader");
        };
        let (loaded, source) =
            zone_model(camera.id.as_str(), zone, model.as_deref(), detector, Some(state_dir), &mut self.embedder)?;
        slot.2 = ZoneReader::Model(Box::new(loaded));
        slot.3 = source;
        Ok(source)
    }
}

/// The model a `source = "model"` zone reads: its own file, else its learned model (with a
/// state directory, where one loads), else the generic default.
fn zone_model(
    camera: &str,
    zone: &str,
    file: Option<&Path>,
    detector: &crate::config::DetectorConfig,
    state_dir: Option<&Path>,
    embedder: &mut Option<crate::bin_state::embedder::Embedder>,
) -> anyhow::Result<(crate::bin_state::BinStateModel, ModelSource)> {
    use anyhow::Context;
    if let Some(path) = file {
        let model = load_bin_model(path, detector, embedder).with_context(|| format!("zone {zone} model"))?;
        return Ok((model, ModelSource::File));
    }
    let learned = state_dir
        .and_then(|dir| crate::bin_state::zone_store::learned_model_path(dir, camera, zone))
        .filter(|path| path.is_file());
    if let Some(path) = learned {
        match load_bin_model(&path, detector, embedder) {
            Ok(model) => return Ok((model, ModelSource::Learned)),
            Err(error) => tracing::warn!(
                camera,
                zone,
                error = format!("{error:#}"),
                "the zone's learned bin-state model does not load: reading the generic one (retrain it from the zone editor)"
            ),
        }
    }
    let path = models_dir(detector).join(crate::bin_state::DEFAULT_MODEL_FILE);
    let model = load_bin_model(&path, detector, embedder).with_context(|| format!("zone {zone} model"))?;
    Ok((model, ModelSource::Generic))
}

/// Problems with zone class names, which only the model's class list can tell.
fn class_problems(config: &Config, class_names: &[String]) -> Vec<ConfigProblem> {
    let mut problems = Vec::new();
    for camera in &config.cameras {
        for (index, zone) in camera.zones.iter().enumerate() {
            for class in zone.classes.iter().filter(|class| !class_names.contains(class)) {
                problems.push(ConfigProblem {
                    path: format!("cameras.{}.zones[{index}].classes", camera.id),
                    message: format!("unknown class {class:?}: the model's classes are listed in its manifest"),
                });
            }
        }
    }
    problems
}

/// Prints every problem, one per line, to stderr.
pub fn print_problems(path: &Path, problems: &ConfigProblems) {
    eprintln!("{}: {} problem(s):", path.display(), problems.0.len());
    for problem in &problems.0 {
        eprintln!("{problem}");
    }
}
