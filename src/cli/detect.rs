//! `gateway detect [--config FILE] [--model MANIFEST] [--json] IMAGE...`: runs the configured
//! detector's `[detector] model` (or the model `--model` names) on image files. With `--json`, one object per line:
//! `{"file":…,"width":…,"height":…,"detections":[{"class":"bicycle","class_id":1,"score":0.81,"box":[x1,y1,x2,y2]}]}`
//! with boxes in image pixels.

use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::Serialize;

use super::{load_and_check, print_problems, EXIT_CONFIG};
use crate::config::DetectorConfig;
use crate::decode::letterbox::letterbox_image;
use crate::detect::{Detector, Detectors};

#[derive(Serialize)]
struct ImageResult<'a> {
    file: &'a str,
    width: u32,
    height: u32,
    detections: Vec<JsonDetection>,
}

#[derive(Serialize)]
struct JsonDetection {
    class: String,
    class_id: u16,
    score: f32,
    #[serde(rename = "box")]
    box_px: [f32; 4],
}

/// Runs the subcommand. Exit 0 if every image was processed, 1 if any failed, 64 for a bad
/// config or a detector that does not start.
pub fn main(config_path: Option<&Path>, model: Option<&Path>, json: bool, images: &[PathBuf]) -> i32 {
    let Some(mut detector) = detectors_for(config_path, model).map(Detectors::into_square) else {
        return EXIT_CONFIG;
    };
    let mut failed = false;
    for image_path in images {
        match detect_one(&mut detector, image_path) {
            Ok(result) => print_result(&detector, &result, json),
            Err(error) => {
                eprintln!("{}: {error:#}", image_path.display());
                failed = true;
            }
        }
    }
    i32::from(failed)
}

/// The detectors of `config_path`'s `[detector]` (`model`, and `wide_model` when set), or the
/// bundled model without a config; with `model`, that manifest alone instead of the config's
/// or the bundled one (the rest of `[detector]` kept). `None` (the problems printed) when
/// they cannot start.
pub(super) fn detectors_for(config_path: Option<&Path>, model: Option<&Path>) -> Option<Detectors> {
    let mut detector_config = match (config_path, model) {
        (Some(path), None) => {
            return match load_and_check(path) {
                Ok((_, detector)) => Some(detector),
                Err(problems) => {
                    print_problems(path, &problems);
                    None
                }
            }
        }
        (Some(path), Some(_)) => match crate::config::load(path) {
            Ok(config) => config.detector,
            Err(problems) => {
                print_problems(path, &problems);
                return None;
            }
        },
        (None, _) => DetectorConfig::default_in(&default_model_base()),
    };
    if let Some(model) = model {
        detector_config.model_manifest = model.to_path_buf();
    }
    match Detector::load(&detector_config).and_then(|detector| Detectors::new(detector, None)) {
        Ok(detectors) => Some(detectors),
        Err(error) => {
            eprintln!("detector.model: {error:#}");
            None
        }
    }
}

/// Where the bundled model is looked for without `--config`: the working directory, else the
/// project the binary was built in (`target/<profile>/gateway` → `../..`), else the install
/// prefix (`bin/gateway` → `../share/street-gateway`).
pub(super) fn default_model_base() -> PathBuf {
    let current = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let mut candidates = vec![current.clone()];
    if let Some(binary_dir) = std::env::current_exe().ok().and_then(|exe| exe.parent().map(Path::to_path_buf)) {
        candidates.push(binary_dir.join("../.."));
        candidates.push(binary_dir.join("../share/street-gateway"));
    }
    candidates.into_iter().find(|dir| dir.join(crate::config::DEFAULT_MODEL_MANIFEST).is_file()).unwrap_or(current)
}

struct Outcome {
    file: String,
    width: u32,
    height: u32,
    detections: Vec<crate::detect::Detection>,
}

fn detect_one(detector: &mut Detector, path: &Path) -> anyhow::Result<Outcome> {
    let image =
        crate::evidence::read_picture(path).with_context(|| format!("cannot read image {}", path.display()))?.to_rgb8();
    let (input_width, input_height) = detector.input_size();
    let mut tensor = Vec::new();
    let letterbox = letterbox_image(&image, input_width, input_height, &mut tensor);
    let detections = detector.detect(&tensor, &letterbox)?;
    Ok(Outcome { file: path.display().to_string(), width: image.width(), height: image.height(), detections })
}

fn print_result(detector: &Detector, outcome: &Outcome, json: bool) {
    let model = detector.model();
    if json {
        let result = ImageResult {
            file: &outcome.file,
            width: outcome.width,
            height: outcome.height,
            detections: outcome
                .detections
                .iter()
                .map(|d| JsonDetection {
                    class: model.class_name(d.class_id),
                    class_id: d.class_id,
                    score: (d.score * 1000.0).round() / 1000.0,
                    box_px: d.box_px.map(|v| (v * 10.0).round() / 10.0),
                })
                .collect(),
        };
        println!("{}", serde_json::to_string(&result).expect("detections serialise"));
    } else {
        println!("{} ({}x{}): {} detection(s)", outcome.file, outcome.width, outcome.height, outcome.detections.len());
        for d in &outcome.detections {
            let [x1, y1, x2, y2] = d.box_px;
            println!("  {:<12} {:.2}  [{x1:.0}, {y1:.0}, {x2:.0}, {y2:.0}]", model.class_name(d.class_id), d.score);
        }
    }
}
