//! The `gateway` command's subcommands. `main` parses arguments and dispatches here; each
//! subcommand returns the process exit code.

pub mod calibrate;
pub mod check_config;
pub mod detect;
pub mod eval_falls;
pub mod reference;
pub mod replay;
pub mod run;

use std::path::Path;

use crate::config::{self, Config, ConfigProblem, ConfigProblems};
use crate::detect::Detector;

/// Exit code for a bad config or bad usage (`EX_USAGE` from sysexits.h).
pub const EXIT_CONFIG: i32 = 64;

/// Loads a config and checks that its detector starts (library, model, shapes): everything
/// `check-config` promises. Model problems are reported under `detector.model`.
pub fn load_and_check(path: &Path) -> Result<(Config, Detector), ConfigProblems> {
    let config = config::load(path)?;
    match Detector::load(&config.detector) {
        Ok(detector) => {
            let problems = model_problems(&config, &detector.model().manifest.classes);
            if problems.is_empty() {
                Ok((config, detector))
            } else {
                Err(ConfigProblems(problems))
            }
        }
        Err(error) => Err(ConfigProblems(vec![ConfigProblem {
            path: "detector.model".to_string(),
            message: format!("{error:#}"),
        }])),
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
            let image = image::open(path).with_context(|| format!("cannot read reference image {}", path.display()))?;
            references.push((zone.id.clone(), crate::rules::trash_overflow::GreyFrame::from_rgb(&image.to_rgb8())));
        }
    }
    Ok(references)
}

/// The classifiers of a camera's bin zones that use one, with the zones' bounds.
pub struct ZoneClassifiers(Vec<(String, crate::geometry::BoxNorm, crate::detect::classifier::ZoneClassifier)>);

impl ZoneClassifiers {
    /// Loads every classifier a camera's zones name.
    pub fn load(
        camera: &crate::config::CameraConfig,
        detector: &crate::config::DetectorConfig,
    ) -> anyhow::Result<Self> {
        use anyhow::Context;
        let mut classifiers = Vec::new();
        for zone in &camera.zones {
            if let crate::zones::ZoneRule::Trash(params) = &zone.rule {
                if let crate::zones::TrashSource::Classifier { manifest } = &params.source {
                    let classifier = crate::detect::classifier::ZoneClassifier::load(manifest, detector)
                        .with_context(|| format!("zone {} classifier", zone.id))?;
                    classifiers.push((zone.id.clone(), zone.polygon.bounds(), classifier));
                }
            }
        }
        Ok(ZoneClassifiers(classifiers))
    }

    /// Each classified zone's reading on `picture`; a zone whose classifier fails gives none
    /// this frame (logged), and its state holds.
    pub fn read(&mut self, picture: &image::RgbImage) -> Vec<(String, f32)> {
        self.0
            .iter_mut()
            .filter_map(|(zone, bounds, classifier)| match classifier.overflow_probability(picture, bounds) {
                Ok(probability) => Some((zone.clone(), probability)),
                Err(error) => {
                    tracing::warn!(zone = %zone, error = format!("{error:#}"), "zone classifier failed");
                    None
                }
            })
            .collect()
    }
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
