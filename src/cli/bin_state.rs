//! `gateway bin-state [--config FILE] [--camera ID --zone ZONE] [--json] IMAGE...`: reads each
//! image as one bin area and prints its state. Without `--camera`/`--zone`, the whole image
//! is read by the generic default model (`bin_state_default.json` beside the detector's
//! manifest: the bundled one, or `--config`'s); with them, the image is a frame of that
//! camera and the zone's crop is read by the zone's own model (its `model = …`, else the model
//! ops taught it from the console in the state directory, else the generic one). With `--json`, one line per
//! image: `{"file":…,"state":"overflowing"|"normal","score":0.0–1.0}` (score: P(overflowing);
//! the state is "overflowing" from 0.5). Unreadable images are reported on stderr after the
//! others are printed, and the exit code is then 1; 64 for a bad config or a missing model.
//!
//! `gateway bin-train [--dataset DIR] [--output FILE] [--evaluate] [--zone]`: makes the generic
//! default from a labelled set (`labels.csv` + photos; default `$GATEWAY_BINS_DATASET`, else
//! `../shared/media/bins` beside the project), deterministically, and skips the work when the
//! output already names the same training set and embedder. `--evaluate` also prints
//! leave-one-scene-out and few-shot figures. `--zone --output FILE`: a zone's own model from
//! a labelled set of that zone's crops, starting from the generic default (for `model = …`).

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use serde::Serialize;

use super::{load_and_check, print_problems, ZoneClassifiers, EXIT_CONFIG};
use crate::bin_state::embedder::Embedder;
use crate::bin_state::{
    self, BinStateModel, Confusion, FeatureSet, LabelledImage, ViewFeatures, DEFAULT_L2, DEFAULT_MODEL_FILE,
    EMBEDDER_MANIFEST_FILE,
};
use crate::config::DetectorConfig;

/// Training views per photo of the generic default (as is, mirrored, centre 80 % and mirrored).
pub const DEFAULT_VIEWS: usize = 4;
/// The generic default's features.
pub const DEFAULT_FEATURES: FeatureSet = FeatureSet::Embedding;
/// Pull of a zone's few-shot model towards the generic one.
pub const FEW_SHOT_L2: f64 = 0.03;
/// Largest image file read (bytes): anything bigger is refused before decoding.
const MAX_IMAGE_BYTES: u64 = 64 * 1024 * 1024;

#[derive(Serialize)]
struct Reading<'a> {
    file: &'a str,
    state: &'static str,
    score: f64,
}

/// The bin-state reader: a zone's, or the generic default on the whole image.
enum Reader {
    Generic { embedder: Embedder, model: Box<BinStateModel> },
    Zone { classifiers: ZoneClassifiers, zone: String },
}

impl Reader {
    fn read(&mut self, picture: &image::RgbImage) -> anyhow::Result<f32> {
        match self {
            Reader::Generic { embedder, model } => {
                let embedding = embedder.embed(picture)?;
                Ok(model.probability(&ViewFeatures::new(&embedding, picture)))
            }
            Reader::Zone { classifiers, zone } => {
                classifiers.read_zone(zone, picture).context("the zone reads no model")?
            }
        }
    }
}

/// Runs `bin-state`.
pub fn main(
    config_path: Option<&Path>,
    camera: Option<&str>,
    zone: Option<&str>,
    json: bool,
    images: &[PathBuf],
) -> i32 {
    let mut reader = match reader_for(config_path, camera, zone) {
        Ok(reader) => reader,
        Err(code) => return code,
    };
    let mut failures = Vec::new();
    for path in images {
        let outcome = read_image(path).and_then(|picture| reader.read(&picture));
        match outcome {
            Ok(score) => {
                let file = path.display().to_string();
                let score = (f64::from(score.clamp(0.0, 1.0)) * 10_000.0).round() / 10_000.0;
                let state = if score >= 0.5 { "overflowing" } else { "normal" };
                if json {
                    let line = serde_json::to_string(&Reading { file: &file, state, score }).expect("serialises");
                    println!("{line}");
                } else {
                    println!("{file}: {state} (score {score:.2})");
                }
            }
            Err(error) => failures.push(format!("{}: {error:#}", path.display())),
        }
    }
    for failure in &failures {
        eprintln!("{failure}");
    }
    i32::from(!failures.is_empty())
}

fn reader_for(config_path: Option<&Path>, camera: Option<&str>, zone: Option<&str>) -> Result<Reader, i32> {
    let detector = match config_path {
        Some(path) => match load_and_check(path) {
            Ok((config, detector)) => match (camera, zone) {
                (Some(camera_id), Some(zone_id)) => {
                    let Some(camera) = config.cameras.iter().find(|c| c.id.as_str() == camera_id) else {
                        eprintln!("{}: no camera {camera_id:?}", path.display());
                        return Err(EXIT_CONFIG);
                    };
                    if !camera
                        .zones
                        .iter()
                        .any(|z| z.id == zone_id && matches!(z.rule, crate::zones::ZoneRule::Trash(_)))
                    {
                        eprintln!("{}: camera {camera_id} has no bin_area zone {zone_id:?}", path.display());
                        return Err(EXIT_CONFIG);
                    }
                    let classifiers =
                        match ZoneClassifiers::load_with_learned(camera, &config.detector, Some(&config.state_dir)) {
                            Ok(classifiers) => classifiers,
                            Err(error) => {
                                eprintln!("{}: {error:#}", path.display());
                                return Err(EXIT_CONFIG);
                            }
                        };
                    return Ok(Reader::Zone { classifiers, zone: zone_id.to_string() });
                }
                (None, None) => {
                    drop(detector);
                    config.detector
                }
                _ => {
                    eprintln!("--camera and --zone go together");
                    return Err(EXIT_CONFIG);
                }
            },
            Err(problems) => {
                print_problems(path, &problems);
                return Err(EXIT_CONFIG);
            }
        },
        None if camera.is_some() || zone.is_some() => {
            eprintln!("--camera and --zone need --config");
            return Err(EXIT_CONFIG);
        }
        None => DetectorConfig::default_in(&super::detect::default_model_base()),
    };
    let models = super::models_dir(&detector);
    let model_path = models.join(DEFAULT_MODEL_FILE);
    if !model_path.is_file() {
        // First use: make the default from the development set, if it is here.
        eprintln!("{} is missing: training it (gateway bin-train)", model_path.display());
        let dataset = default_dataset(&models);
        if let Err(error) = train_default(&dataset, &model_path, &detector) {
            eprintln!("bin-state model: {error:#}");
            return Err(EXIT_CONFIG);
        }
    }
    let mut embedder = None;
    match super::load_bin_model(&model_path, &detector, &mut embedder) {
        Ok(model) => Ok(Reader::Generic { embedder: embedder.expect("loaded with the model"), model: Box::new(model) }),
        Err(error) => {
            eprintln!("bin-state model: {error:#}");
            Err(EXIT_CONFIG)
        }
    }
}

/// Reads an image file (JPEG or PNG), bounded in size. A file cut short is refused even where
/// the decoder would fill in the missing part (JPEG: no end-of-image marker after the last
/// scan; PNG: no IEND chunk): half a picture would give a confident wrong reading.
pub fn read_image(path: &Path) -> anyhow::Result<image::RgbImage> {
    let size = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?.len();
    if size > MAX_IMAGE_BYTES {
        bail!("{size} bytes is more than the {MAX_IMAGE_BYTES} read");
    }
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if is_truncated(&bytes) {
        bail!("the image is truncated");
    }
    let image = image::ImageReader::new(std::io::Cursor::new(&bytes))
        .with_guessed_format()
        .context("cannot read the image")?
        .decode()
        .context("cannot decode the image")?;
    Ok(image.to_rgb8())
}

/// Whether a JPEG or PNG file ends before its end marker.
fn is_truncated(bytes: &[u8]) -> bool {
    let find_last = |needle: &[u8]| bytes.windows(needle.len()).rposition(|w| w == needle);
    if bytes.starts_with(&[0xFF, 0xD8]) {
        // Inside entropy-coded data 0xFF is always followed by 0x00 or a restart marker, so
        // an end-of-image marker after the last start-of-scan is the real end.
        let last_scan = find_last(&[0xFF, 0xDA]).unwrap_or(0);
        return !bytes[last_scan..].windows(2).any(|w| w == [0xFF, 0xD9]);
    }
    if bytes.starts_with(b"\x89PNG") {
        return find_last(b"IEND").is_none();
    }
    false
}

/// The development set's default location: `$GATEWAY_BINS_DATASET`, else
/// `../shared/media/bins` beside the project that holds `models`.
pub fn default_dataset(models_dir: &Path) -> PathBuf {
    std::env::var_os("GATEWAY_BINS_DATASET")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| models_dir.join("../../shared/media/bins"))
}

/// Every photo of a set with its training views' features.
struct Embedded {
    images: Vec<LabelledImage>,
    views: Vec<Vec<ViewFeatures>>,
    /// With `--evaluate`: each photo as is, then at gains 0.55 and 0.4 (flicker, dusk).
    tests: Vec<Vec<ViewFeatures>>,
    training_sha256: String,
    embedder_sha256: String,
    /// Mean cost of one view: squeezing it to the embedder's input, ms of wall time…
    resize_ms: f64,
    /// …and the embedder's inference, ms.
    embed_ms: f64,
    /// Mean cost of the colour statistics of one view, ms.
    colour_ms: f64,
}

/// Gains at which `--evaluate` also reads each held-out photo.
const TEST_GAINS: [f32; 2] = [0.55, 0.4];

fn embed_set(dataset: &Path, detector: &DetectorConfig, views: usize, tests: bool) -> anyhow::Result<Embedded> {
    let images = bin_state::load_labels(dataset)?;
    let training_sha256 = bin_state::training_sha256(dataset, &images)?;
    let manifest = super::models_dir(detector).join(EMBEDDER_MANIFEST_FILE);
    let mut embedder = Embedder::load(&manifest, detector.onnxruntime_library.as_deref())?;
    let (mut resize_ms, mut embed_ms, mut colour_ms, mut count) = (0.0, 0.0, 0.0, 0usize);
    let mut all = Vec::with_capacity(images.len());
    let mut all_tests = Vec::new();
    for image in &images {
        let picture = read_image(&dataset.join(&image.file)).with_context(|| image.file.clone())?;
        if tests {
            let mut dimmed = Vec::new();
            for gain in TEST_GAINS {
                let view = bin_state::with_gain(&picture, gain);
                dimmed.push(ViewFeatures::new(&embedder.embed(&view)?, &view));
            }
            all_tests.push(dimmed);
        }
        let mut features = Vec::new();
        for view in bin_state::training_views(&picture, views) {
            let started = Instant::now();
            let (width, height) = embedder.input_size();
            let squeezed = image::imageops::thumbnail(&view, width, height);
            let resized = Instant::now();
            let embedding = embedder.embed(&squeezed)?;
            let embedded = Instant::now();
            let colour = bin_state::colour_stats(&view);
            colour_ms += embedded.elapsed().as_secs_f64() * 1000.0;
            resize_ms += (resized - started).as_secs_f64() * 1000.0;
            embed_ms += (embedded - resized).as_secs_f64() * 1000.0;
            count += 1;
            features.push(ViewFeatures { embedding: bin_state::normalise_embedding(&embedding), colour });
        }
        if let Some(dimmed) = all_tests.last_mut() {
            dimmed.insert(0, features[0].clone());
        }
        all.push(features);
    }
    let count = count.max(1) as f64;
    Ok(Embedded {
        images,
        views: all,
        tests: all_tests,
        training_sha256,
        embedder_sha256: embedder.sha256().to_string(),
        resize_ms: resize_ms / count,
        embed_ms: embed_ms / count,
        colour_ms: colour_ms / count,
    })
}

fn default_model(set: &Embedded) -> BinStateModel {
    let training: Vec<(&ViewFeatures, bool)> = set
        .images
        .iter()
        .zip(&set.views)
        .flat_map(|(image, views)| views.iter().take(DEFAULT_VIEWS).map(move |v| (v, image.overflowing)))
        .collect();
    let positives = set.images.iter().filter(|i| i.overflowing).count();
    let trained_on = format!(
        "{} photos ({} overflowing, {} normal), {DEFAULT_VIEWS} views each",
        set.images.len(),
        positives,
        set.images.len() - positives
    );
    bin_state::train(
        &training,
        DEFAULT_FEATURES,
        DEFAULT_L2,
        None,
        &set.embedder_sha256,
        &set.training_sha256,
        &trained_on,
    )
}

/// Trains the generic default from `dataset` into `output` (written whole, then renamed).
fn train_default(dataset: &Path, output: &Path, detector: &DetectorConfig) -> anyhow::Result<()> {
    let set = embed_set(dataset, detector, DEFAULT_VIEWS, false)?;
    write_model(output, &default_model(&set))
}

fn write_model(output: &Path, model: &BinStateModel) -> anyhow::Result<()> {
    let temporary = output.with_extension("json.tmp");
    std::fs::write(&temporary, model.to_json()).with_context(|| format!("cannot write {}", temporary.display()))?;
    std::fs::rename(&temporary, output).with_context(|| format!("cannot write {}", output.display()))?;
    Ok(())
}

/// Runs `bin-train`.
pub fn train_main(dataset: Option<&Path>, output: Option<&Path>, evaluate: bool, zone: bool) -> i32 {
    let detector = DetectorConfig::default_in(&super::detect::default_model_base());
    let models = super::models_dir(&detector);
    let dataset = dataset.map(Path::to_path_buf).unwrap_or_else(|| default_dataset(&models));
    let output = output.map(Path::to_path_buf).unwrap_or_else(|| models.join(DEFAULT_MODEL_FILE));
    let outcome = if zone {
        if output == models.join(DEFAULT_MODEL_FILE) {
            eprintln!("bin-train --zone needs --output (a zone's model is not the default)");
            return EXIT_CONFIG;
        }
        train_zone_command(&dataset, &output, &detector)
    } else {
        train_command(&dataset, &output, &detector, evaluate)
    };
    match outcome {
        Ok(()) => 0,
        Err(error) => {
            eprintln!("bin-train: {error:#}");
            EXIT_CONFIG
        }
    }
}

/// A zone's model from its labelled crops (`labels.csv` + crops, as the development set),
/// starting from the generic default.
fn train_zone_command(dataset: &Path, output: &Path, detector: &DetectorConfig) -> anyhow::Result<()> {
    let generic_path = super::models_dir(detector).join(DEFAULT_MODEL_FILE);
    let mut embedder = None;
    let generic = super::load_bin_model(&generic_path, detector, &mut embedder)?;
    let set = embed_set(dataset, detector, 1, false)?;
    let examples: Vec<(ViewFeatures, bool)> =
        set.images.iter().zip(&set.views).map(|(image, views)| (views[0].clone(), image.overflowing)).collect();
    let (model, accuracy) = bin_state::train_zone(&examples, &generic, FEW_SHOT_L2, &set.training_sha256);
    write_model(output, &model)?;
    let accuracy =
        accuracy.map_or("n/a (fewer than 2 examples of a state)".to_string(), |a| format!("{:.1} %", a * 100.0));
    let method = bin_state::cross_validation_name(examples.len());
    println!("{}: trained on {}; {method} balanced accuracy {accuracy}", output.display(), model.trained_on);
    Ok(())
}

fn train_command(dataset: &Path, output: &Path, detector: &DetectorConfig, evaluate: bool) -> anyhow::Result<()> {
    if !evaluate {
        // Up to date: same training set, same embedder.
        if let Ok(existing) = BinStateModel::load(output) {
            let images = bin_state::load_labels(dataset)?;
            let training_sha256 = bin_state::training_sha256(dataset, &images)?;
            let manifest = super::models_dir(detector).join(EMBEDDER_MANIFEST_FILE);
            let embedder_sha256 = std::fs::read_to_string(&manifest)
                .ok()
                .and_then(|text| toml::from_str::<bin_state::embedder::EmbedderManifest>(&text).ok())
                .map(|m| m.sha256)
                .unwrap_or_default();
            if existing.training_sha256 == training_sha256 && existing.embedder_sha256 == embedder_sha256 {
                println!("{}: up to date (training set {training_sha256})", output.display());
                return Ok(());
            }
        }
    }
    let started = Instant::now();
    let set = embed_set(dataset, detector, DEFAULT_VIEWS, evaluate)?;
    let model = default_model(&set);
    write_model(output, &model)?;
    println!(
        "{}: trained on {} (training set {}) in {:.1} s",
        output.display(),
        model.trained_on,
        model.training_sha256,
        started.elapsed().as_secs_f64()
    );
    if evaluate {
        print_evaluation(&set);
        print_few_shot(&set, dataset, detector)?;
    }
    Ok(())
}

fn print_evaluation(set: &Embedded) {
    println!(
        "cost per view (wall, one thread): resize to the input {:.1} ms, inference {:.1} ms, colour statistics {:.2} ms",
        set.resize_ms, set.embed_ms, set.colour_ms
    );
    let scenes = {
        let mut s: Vec<&str> = set.images.iter().map(|i| i.scene.as_str()).collect();
        s.sort_unstable();
        s.dedup();
        s.len()
    };
    println!(
        "leave-one-scene-out over {} photos, {scenes} scenes (threshold 0.5, balanced accuracy):",
        set.images.len()
    );
    let mut viewpoints: Vec<&str> = set.images.iter().map(|i| i.viewpoint.as_str()).collect();
    viewpoints.sort_unstable();
    viewpoints.dedup();
    let mut variants: Vec<(FeatureSet, usize, f64)> = Vec::new();
    for features in [FeatureSet::Embedding, FeatureSet::EmbeddingColour] {
        for views in [1, 2, 4] {
            variants.push((features, views, DEFAULT_L2));
        }
    }
    for l2 in [0.001, 0.003, 0.03, 0.1] {
        variants.push((DEFAULT_FEATURES, DEFAULT_VIEWS, l2));
    }
    for (features, views, l2) in variants {
        let started = Instant::now();
        let probabilities = bin_state::leave_one_scene_out(&set.images, &set.views, &set.tests, features, l2, views);
        let confusion = |filter: &dyn Fn(&LabelledImage) -> bool, test: usize| {
            Confusion::of(
                set.images
                    .iter()
                    .zip(&probabilities)
                    .filter(|(image, _)| filter(image))
                    .map(|(image, p)| (image.overflowing, p[test] >= 0.5)),
            )
        };
        let all = confusion(&|_| true, 0);
        let per_viewpoint: Vec<String> = viewpoints
            .iter()
            .map(|v| {
                let c = confusion(&|image| image.viewpoint == *v, 0);
                let n = c.true_positive + c.false_negative + c.true_negative + c.false_positive;
                format!("{v} {:.1} % (n={n})", c.balanced_accuracy().unwrap_or(0.0) * 100.0)
            })
            .collect();
        let dimmed: Vec<String> = TEST_GAINS
            .iter()
            .enumerate()
            .map(|(i, gain)| {
                format!("x{gain} {:.1} %", confusion(&|_| true, i + 1).balanced_accuracy().unwrap_or(0.0) * 100.0)
            })
            .collect();
        let default = features == DEFAULT_FEATURES && views == DEFAULT_VIEWS && l2 == DEFAULT_L2;
        println!(
            "  {:<16} views {views} l2 {l2:<6} balanced {:.1} %  [{}]  dimmed [{}]  TP {} FN {} TN {} FP {}{}",
            format!("{features:?}"),
            all.balanced_accuracy().unwrap_or(0.0) * 100.0,
            per_viewpoint.join(", "),
            dimmed.join(", "),
            all.true_positive,
            all.false_negative,
            all.true_negative,
            all.false_positive,
            if default { "  <- default" } else { "" }
        );
        tracing::debug!(seconds = started.elapsed().as_secs_f64(), "leave-one-scene-out run");
        if default {
            let wrong: Vec<String> = set
                .images
                .iter()
                .zip(&probabilities)
                .filter(|(image, p)| image.overflowing != (p[0] >= 0.5))
                .map(|(image, p)| format!("{} {:.2}", image.file, p[0]))
                .collect();
            println!("    misread: {}", if wrong.is_empty() { "none".to_string() } else { wrong.join(", ") });
            let flipped: Vec<String> = set
                .images
                .iter()
                .zip(&probabilities)
                .filter(|(_, p)| p[1..].iter().any(|dim| (*dim >= 0.5) != (p[0] >= 0.5)))
                .map(|(image, p)| {
                    let scores: Vec<String> = p.iter().map(|v| format!("{v:.2}")).collect();
                    format!("{} {}", image.file, scores.join("/"))
                })
                .collect();
            println!(
                "    photos whose state changes when dimmed to x0.55 or x0.4 (as is/x0.55/x0.4): {} of {}: {}",
                flipped.len(),
                set.images.len(),
                flipped.join(", ")
            );
        }
    }
}

/// Frames made per photo for the few-shot figures, and draws per k.
const FEW_SHOT_FRAMES: usize = 30;
const FEW_SHOT_DRAWS: usize = 10;

/// Few-shot learning per zone, on footage made from each scene that has photos of both
/// states (see [`bin_state::made_frames`]): k frames per state teach a zone model that starts
/// from (and is pulled towards) the generic model trained without the scene; the other frames
/// test it. Also: the generic model alone (k = 0), and a model from the k examples alone.
fn print_few_shot(set: &Embedded, dataset: &Path, detector: &DetectorConfig) -> anyhow::Result<()> {
    let manifest = super::models_dir(detector).join(EMBEDDER_MANIFEST_FILE);
    let mut embedder = Embedder::load(&manifest, detector.onnxruntime_library.as_deref())?;
    let mut scenes: Vec<&str> = set.images.iter().map(|i| i.scene.as_str()).collect();
    scenes.sort_unstable();
    scenes.dedup();
    let mut rng = bin_state::Lcg(15);
    for scene in scenes {
        let photos: Vec<&LabelledImage> = set.images.iter().filter(|i| i.scene == scene).collect();
        if !(photos.iter().any(|p| p.overflowing) && photos.iter().any(|p| !p.overflowing)) {
            continue;
        }
        let prior =
            bin_state::train_without_scene(&set.images, &set.views, scene, DEFAULT_FEATURES, DEFAULT_L2, DEFAULT_VIEWS);
        let mut frames: Vec<(ViewFeatures, bool)> = Vec::new();
        for photo in &photos {
            let picture = read_image(&dataset.join(&photo.file))?;
            for frame in bin_state::made_frames(&picture, FEW_SHOT_FRAMES, &mut rng) {
                frames.push((ViewFeatures::new(&embedder.embed(&frame)?, &frame), photo.overflowing));
            }
        }
        println!(
            "few-shot on footage made from scene {scene} ({} photos, {FEW_SHOT_FRAMES} frames each; \
             mean balanced accuracy over {FEW_SHOT_DRAWS} draws of the k examples, tested on the other frames):",
            photos.len()
        );
        for l2 in [FEW_SHOT_L2, 0.1, 0.3] {
            let mut line = format!("  l2 {l2:<5}");
            for k in [0usize, 1, 3, 5] {
                let (mut tuned, mut scratch) = (0.0, 0.0);
                for _ in 0..FEW_SHOT_DRAWS {
                    let mut order: Vec<usize> = (0..frames.len()).collect();
                    // Fisher–Yates with the fixed generator.
                    for i in (1..order.len()).rev() {
                        let j = ((rng.next_unit() * (i + 1) as f32) as usize).min(i);
                        order.swap(i, j);
                    }
                    let mut chosen = Vec::new();
                    for state in [true, false] {
                        chosen.extend(order.iter().copied().filter(|&i| frames[i].1 == state).take(k));
                    }
                    let examples: Vec<(&ViewFeatures, bool)> =
                        chosen.iter().map(|&i| (&frames[i].0, frames[i].1)).collect();
                    let zone = bin_state::train(&examples, DEFAULT_FEATURES, l2, Some(&prior), "", "", "");
                    let own = bin_state::train(&examples, DEFAULT_FEATURES, DEFAULT_L2, None, "", "", "");
                    let score = |model: &BinStateModel| {
                        Confusion::of(
                            (0..frames.len())
                                .filter(|i| !chosen.contains(i))
                                .map(|i| (frames[i].1, model.probability(&frames[i].0) >= 0.5)),
                        )
                        .balanced_accuracy()
                        .unwrap_or(0.0)
                    };
                    tuned += score(&zone);
                    scratch += if k == 0 { 0.0 } else { score(&own) };
                }
                let draws = FEW_SHOT_DRAWS as f64;
                if k == 0 {
                    line.push_str(&format!("  k=0 (generic) {:.1} %", tuned / draws * 100.0));
                } else {
                    line.push_str(&format!(
                        "  k={k} {:.1} % (alone {:.1} %)",
                        tuned / draws * 100.0,
                        scratch / draws * 100.0
                    ));
                }
            }
            println!("{line}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::is_truncated;

    #[test]
    fn a_jpeg_or_png_cut_short_is_truncated_and_a_whole_one_is_not() {
        let mut jpeg = Vec::new();
        image::RgbImage::from_fn(32, 32, |x, y| image::Rgb([(x * 8) as u8, (y * 8) as u8, 90]))
            .write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
            .unwrap();
        let mut png = Vec::new();
        image::RgbImage::new(8, 8).write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png).unwrap();
        for whole in [&jpeg, &png] {
            assert!(!is_truncated(whole));
            assert!(is_truncated(&whole[..whole.len() * 2 / 3]));
        }
        let mut trailing = jpeg.clone();
        trailing.extend_from_slice(b"trailer after the end marker");
        assert!(!is_truncated(&trailing));
    }
}
