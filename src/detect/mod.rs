//! Detect: the ONNX object detector. A few ONNX Runtime sessions on named threads take
//! prepared frames from one bounded queue (not one session per camera: a session holds the
//! model's weights and arena), run the model, decode YOLOX boxes and apply class-wise NMS.
//! With `[detector] wide_model`, each thread holds a session of each model ([`Detectors`]) and
//! runs a frame on the one its tensor was letterboxed for (`PreparedFrame::variant`).
//!
//! The ONNX Runtime library is loaded at run time (`ort`'s `load-dynamic`) from the file the
//! config or `ORT_DYLIB_PATH` names; scripts/setup installs the pinned version. A missing or
//! wrong library or model is a clear error at start, never a panic.

pub mod classifier;
pub mod gates;
pub mod model;
pub mod onnx;
pub mod pose;
pub mod rotated;
pub mod yolox;

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use crossbeam_channel::Receiver;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::Session;
use ort::value::TensorRef;
use tracing::warn;

use crate::config::{CameraId, DetectorConfig, ModelVariant};
use crate::decode::letterbox::Letterbox;
use crate::decode::PreparedFrame;
pub use crate::engine::Detection;
pub use model::Model;
use yolox::Grid;

/// The detector's result for one analysed frame: what the tracker and rules consume.
#[derive(Debug, Clone)]
pub struct AnalysedFrame {
    /// The camera.
    pub camera: CameraId,
    /// Footage time of the frame, ms.
    pub media_time_ms: i64,
    /// When its access unit arrived.
    pub received_at: Instant,
    /// Frame size.
    pub frame_width: u32,
    /// Frame size.
    pub frame_height: u32,
    /// Detections after NMS, best first.
    pub detections: Vec<Detection>,
    /// Decode + preprocess time.
    pub decode_time: Duration,
    /// Inference + postprocess time.
    pub inference_time: Duration,
    /// The scaled picture the detector saw.
    pub picture: Arc<image::RgbImage>,
    /// The model that analysed it (its manifest goes into evidence).
    pub model: Arc<Model>,
}

/// Loads the ONNX Runtime library once per process and returns its environment.
pub(crate) fn runtime(library: Option<&Path>) -> anyhow::Result<ort::environment::Environment> {
    static ENVIRONMENT: OnceLock<Mutex<Option<ort::environment::Environment>>> = OnceLock::new();
    let slot = ENVIRONMENT.get_or_init(|| Mutex::new(None));
    let mut environment = slot.lock().unwrap();
    if let Some(existing) = environment.as_ref() {
        return Ok(existing.clone());
    }
    let library = library.context(
        "the ONNX Runtime library is not configured: set detector.onnxruntime_library or ORT_DYLIB_PATH \
         (scripts/setup installs it under .cache/onnxruntime/)",
    )?;
    if !library.is_file() {
        bail!("ONNX Runtime library {} does not exist (run scripts/setup)", library.display());
    }
    let builder = ort::init_from(library)
        .map_err(|error| anyhow!("cannot load ONNX Runtime from {}: {error}", library.display()))?;
    let built =
        builder.with_name("street-gateway").build().map_err(|error| anyhow!("cannot start ONNX Runtime: {error}"))?;
    *environment = Some(built.clone());
    Ok(built)
}

/// One inference session with the model's geometry; used by the pool and by `gateway detect`.
pub struct Detector {
    session: Session,
    model: Arc<Model>,
    grid: Grid,
    score_threshold: f32,
    nms_iou_threshold: f32,
    rotated_inferences: u64,
}

impl Detector {
    /// Loads the library and the model, and checks the graph's inputs and outputs against the
    /// manifest.
    pub fn load(config: &DetectorConfig) -> anyhow::Result<Self> {
        let model = Arc::new(Model::load(&config.model_manifest)?);
        Self::with_model(config, model)
    }

    /// A session for an already verified model.
    pub fn with_model(config: &DetectorConfig, model: Arc<Model>) -> anyhow::Result<Self> {
        let environment = runtime(config.onnxruntime_library.as_deref())?;
        let configure = |error: String| anyhow!("configure ONNX Runtime session: {error}");
        let session = Session::builder(&environment)
            .map_err(|error| configure(error.to_string()))?
            .with_optimization_level(GraphOptimizationLevel::Level3)
            .map_err(|error| configure(error.to_string()))?
            .with_intra_threads(config.intra_op_threads)
            .map_err(|error| configure(error.to_string()))?
            .with_inter_threads(1)
            .map_err(|error| configure(error.to_string()))?
            .commit_from_file(&model.onnx_path)
            .map_err(|error| anyhow!("load model {}: {error}", model.onnx_path.display()))?;
        let manifest = &model.manifest;
        let grid = Grid::new(manifest.input_width, manifest.input_height, &manifest.strides);
        onnx::check_outlet(
            &session,
            true,
            &manifest.input_name,
            &[1, 3, i64::from(manifest.input_height), i64::from(manifest.input_width)],
            ort::value::TensorElementType::Float32,
        )?;
        onnx::check_outlet(
            &session,
            false,
            &manifest.output_name,
            &[1, grid.len() as i64, 5 + manifest.classes.len() as i64],
            ort::value::TensorElementType::Float32,
        )?;
        Ok(Detector {
            session,
            model,
            grid,
            score_threshold: config.score_threshold,
            nms_iou_threshold: config.nms_iou_threshold,
            rotated_inferences: 0,
        })
    }

    /// The model this detector runs.
    pub fn model(&self) -> &Arc<Model> {
        &self.model
    }

    /// The model's input size.
    pub fn input_size(&self) -> (u32, u32) {
        (self.model.manifest.input_width, self.model.manifest.input_height)
    }

    /// Runs the model on a letterboxed tensor; detections in frame pixels, after NMS.
    pub fn detect(&mut self, tensor: &[f32], letterbox: &Letterbox) -> anyhow::Result<Vec<Detection>> {
        let rows = self.infer(tensor)?;
        Ok(self.postprocess(&rows, letterbox))
    }

    /// Runs the model only: the raw output rows (`[N, 5 + classes]`, flattened).
    pub fn infer(&mut self, tensor: &[f32]) -> anyhow::Result<Vec<f32>> {
        let (width, height) = self.input_size();
        let manifest = &self.model.manifest;
        let input = TensorRef::from_array_view(([1usize, 3, height as usize, width as usize], tensor))
            .map_err(|error| anyhow!("input tensor: {error}"))?;
        let outputs = self
            .session
            .run(ort::inputs![manifest.input_name.as_str() => input])
            .map_err(|error| anyhow!("inference: {error}"))?;
        let (_, rows) = outputs[manifest.output_name.as_str()]
            .try_extract_tensor::<f32>()
            .map_err(|error| anyhow!("output tensor: {error}"))?;
        Ok(rows.to_vec())
    }

    /// One analysed frame: the upright pass, then the rotated pass when the camera asks for
    /// it (on crops around the regions the fall rule named, else on the whole picture). The
    /// live detector threads and `replay` both go through here.
    pub fn detect_frame(
        &mut self,
        tensor: &[f32],
        letterbox: &Letterbox,
        picture: &image::RgbImage,
        rotated_pass: &RotatedPass,
    ) -> anyhow::Result<Vec<Detection>> {
        let upright = self.detect(tensor, letterbox)?;
        match rotated_pass {
            RotatedPass::Off => Ok(upright),
            RotatedPass::Whole => self.detect_with_rotations(upright, picture, letterbox),
            RotatedPass::Regions(regions) => {
                let (input_width, input_height) = self.input_size();
                match rotated::plan(regions, picture.width(), picture.height(), input_width, input_height) {
                    Some(tiles) => self.detect_on_turned_crops(upright, picture, letterbox, &tiles),
                    // No region, too many, or most of the picture: the whole turns.
                    None => self.detect_with_rotations(upright, picture, letterbox),
                }
            }
        }
    }

    /// Model runs of the rotated pass since this session started (one per packed input of
    /// turned crops, two per whole-picture pass): what `replay --stats` reports.
    pub fn rotated_inferences(&self) -> u64 {
        self.rotated_inferences
    }

    /// The second pass for fall-watch cameras: runs the model on the picture (the scaled
    /// frame the first pass saw) rotated by +90° and −90°, keeps the persons found, maps their
    /// boxes back to frame pixels and merges them with `upright` by class-wise NMS. Lying people
    /// are often missed by a detector trained on upright ones.
    pub fn detect_with_rotations(
        &mut self,
        upright: Vec<Detection>,
        picture: &image::RgbImage,
        letterbox: &Letterbox,
    ) -> anyhow::Result<Vec<Detection>> {
        let Some(person) = self.model.manifest.classes.iter().position(|c| c == "person") else { return Ok(upright) };
        let (input_width, input_height) = self.input_size();
        let mut merged = upright;
        for rotation in [Rotation::Clockwise, Rotation::CounterClockwise] {
            let rotated = match rotation {
                Rotation::Clockwise => image::imageops::rotate90(picture),
                Rotation::CounterClockwise => image::imageops::rotate270(picture),
            };
            let mut tensor = Vec::new();
            let rotated_letterbox =
                crate::decode::letterbox::letterbox_image(&rotated, input_width, input_height, &mut tensor);
            self.rotated_inferences += 1;
            for detection in self.detect(&tensor, &rotated_letterbox)? {
                if usize::from(detection.class_id) != person {
                    continue;
                }
                let in_picture =
                    unrotate_box(detection.box_px, rotation, picture.width() as f32, picture.height() as f32);
                let box_px = in_picture.map(|v| v / letterbox.scale);
                merged.push(Detection { box_px, rotated: true, ..detection });
            }
        }
        Ok(yolox::non_max_suppression(merged, self.nms_iou_threshold))
    }

    /// The rotated pass on crops ([`rotated`]): the turned crops packed into one model input,
    /// one inference; the persons found map back through their tile to frame pixels and merge
    /// with `upright` by class-wise NMS, as the whole-picture pass does.
    pub fn detect_on_turned_crops(
        &mut self,
        upright: Vec<Detection>,
        picture: &image::RgbImage,
        letterbox: &Letterbox,
        tiles: &[rotated::Tile],
    ) -> anyhow::Result<Vec<Detection>> {
        let Some(person) = self.model.manifest.classes.iter().position(|c| c == "person") else { return Ok(upright) };
        let (input_width, input_height) = self.input_size();
        let packed = rotated::render(picture, tiles, input_width, input_height);
        // The packed picture is the input's size: scale 1, no padding of its own.
        let packed_letterbox = Letterbox::new(input_width, input_height, input_width, input_height);
        let bgr: Vec<u8> = packed.pixels().flat_map(|pixel| [pixel[2], pixel[1], pixel[0]]).collect();
        let mut tensor = Vec::new();
        crate::decode::letterbox::bgr_rows_to_tensor(&packed_letterbox, &bgr, 3 * input_width as usize, &mut tensor);
        self.rotated_inferences += 1;
        let mut merged = upright;
        for detection in self.detect(&tensor, &packed_letterbox)? {
            if usize::from(detection.class_id) != person {
                continue;
            }
            // A box centred on the padding, or cut by its crop's edge, is no one.
            let Some(in_picture) = rotated::map_back(tiles, detection.box_px, picture.width(), picture.height()) else {
                continue;
            };
            let box_px = in_picture.map(|v| v / letterbox.scale);
            merged.push(Detection { box_px, rotated: true, ..detection });
        }
        Ok(yolox::non_max_suppression(merged, self.nms_iou_threshold))
    }

    /// YOLOX box decode and class-wise NMS on raw output rows.
    pub fn postprocess(&self, rows: &[f32], letterbox: &Letterbox) -> Vec<Detection> {
        let classes = self.model.manifest.classes.len();
        let candidates = yolox::decode(rows, classes, &self.grid, letterbox, self.score_threshold);
        yolox::non_max_suppression(candidates, self.nms_iou_threshold)
    }
}

/// The detector's models: `[detector] model` and, when configured, `wide_model`, verified.
#[derive(Debug, Clone)]
pub struct Models {
    /// `[detector] model`.
    pub square: Arc<Model>,
    /// `[detector] wide_model`.
    pub wide: Option<Arc<Model>>,
}

impl Models {
    /// Reads and verifies (sha256, shapes) `[detector] model` and `wide_model`; the wide one
    /// must list the same classes.
    pub fn load(config: &DetectorConfig) -> anyhow::Result<Self> {
        let square = Arc::new(Model::load(&config.model_manifest).context("detector.model")?);
        let wide = match &config.wide_model_manifest {
            None => None,
            Some(path) => {
                let wide = Model::load(path).context("detector.wide_model")?;
                if wide.manifest.classes != square.manifest.classes {
                    bail!(
                        "detector.wide_model: its classes ({} names) differ from [detector] model's ({} names): both must list the same classes in the same order",
                        wide.manifest.classes.len(),
                        square.manifest.classes.len()
                    );
                }
                Some(Arc::new(wide))
            }
        };
        Ok(Models { square, wide })
    }

    /// The loaded models with their variants, square first.
    pub fn loaded(&self) -> Vec<(ModelVariant, &Arc<Model>)> {
        let mut loaded = vec![(ModelVariant::Square, &self.square)];
        loaded.extend(self.wide.iter().map(|wide| (ModelVariant::Wide, wide)));
        loaded
    }

    /// Their input sizes, what the decoders letterbox to.
    pub fn input_sizes(&self) -> crate::decode::InputSizes {
        let size = |model: &Model| (model.manifest.input_width, model.manifest.input_height);
        crate::decode::InputSizes { square: size(&self.square), wide: self.wide.as_deref().map(size) }
    }
}

/// One session of each model: what a detector thread, `replay` and `eval-falls` run.
pub struct Detectors {
    square: Detector,
    wide: Option<Detector>,
}

impl Detectors {
    /// The square session, and the wide one if `[detector] wide_model` is set. A wide model
    /// whose class list differs from the square one's is refused: the cameras' engines and
    /// zones name classes by the one list.
    pub fn new(square: Detector, wide: Option<Detector>) -> anyhow::Result<Self> {
        if let Some(wide) = &wide {
            let (square_classes, wide_classes) = (&square.model.manifest.classes, &wide.model.manifest.classes);
            if square_classes != wide_classes {
                bail!(
                    "its classes ({} names) differ from [detector] model's ({} names): both must list the same classes in the same order",
                    wide_classes.len(),
                    square_classes.len()
                );
            }
        }
        Ok(Detectors { square, wide })
    }

    /// Sessions for already verified models.
    pub fn with_models(config: &DetectorConfig, models: &Models) -> anyhow::Result<Self> {
        let square = Detector::with_model(config, models.square.clone())?;
        let wide = models.wide.clone().map(|wide| Detector::with_model(config, wide)).transpose()?;
        Ok(Detectors { square, wide })
    }

    /// The session for `variant` (the square one when no wide model is loaded).
    pub fn get_mut(&mut self, variant: ModelVariant) -> &mut Detector {
        match (variant, self.wide.as_mut()) {
            (ModelVariant::Wide, Some(wide)) => wide,
            _ => &mut self.square,
        }
    }

    /// The square session (`[detector] model`).
    pub fn square(&self) -> &Detector {
        &self.square
    }

    /// The square session alone.
    pub fn into_square(self) -> Detector {
        self.square
    }

    /// Each session with its variant, square first.
    pub fn each_mut(&mut self) -> Vec<(ModelVariant, &mut Detector)> {
        let mut each = vec![(ModelVariant::Square, &mut self.square)];
        each.extend(self.wide.as_mut().map(|wide| (ModelVariant::Wide, wide)));
        each
    }

    /// The models the sessions run.
    pub fn models(&self) -> Models {
        Models { square: self.square.model.clone(), wide: self.wide.as_ref().map(|wide| wide.model.clone()) }
    }
}

/// What the rotated pass (fall-watch cameras: the picture turned ±90° shows a lying person
/// upright) runs on for one frame.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum RotatedPass {
    /// Not this frame.
    #[default]
    Off,
    /// The whole picture, each turn its own inference (`rotated_pass = true`).
    Whole,
    /// Crops around these regions (normalised to the frame) that the fall rule asked about,
    /// all turns packed into one inference ([`rotated`]); the whole picture when they do not
    /// fit ([`rotated::plan`]).
    Regions(Vec<crate::geometry::BoxNorm>),
}

impl RotatedPass {
    /// Whether the pass runs at all.
    pub fn is_on(&self) -> bool {
        !matches!(self, RotatedPass::Off)
    }
}

/// A quarter turn of a picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// 90° clockwise (`image::imageops::rotate90`).
    Clockwise,
    /// 90° counter-clockwise (`image::imageops::rotate270`).
    CounterClockwise,
}

/// Maps a box found on a picture of `width`×`height` rotated by `rotation` back onto the
/// unrotated picture. Pure.
pub fn unrotate_box(rotated: [f32; 4], rotation: Rotation, width: f32, height: f32) -> [f32; 4] {
    let [x1, y1, x2, y2] = rotated;
    match rotation {
        // (x, y) → (height − y, x): so x = y', y = height − x'.
        Rotation::Clockwise => [y1, height - x2, y2, height - x1],
        // (x, y) → (y, width − x): so x = width − y', y = x'.
        Rotation::CounterClockwise => [width - y2, x1, width - y1, x2],
    }
}

/// The detector pool: `sessions` threads sharing one queue of prepared frames, each with a
/// session of every model ([`Detectors`]).
pub struct DetectorPool {
    threads: Vec<JoinHandle<()>>,
    models: Models,
}

impl DetectorPool {
    /// Loads `config.sessions` sessions of each model in `models` (failing if any does), then
    /// starts their threads. Results go to `analysed`; when its receiver lags, the sessions
    /// wait (the prepared-frame queue in front of them is bounded and skips instead). Each
    /// frame passes its camera's change gate in `gates` first.
    pub fn start(
        config: &DetectorConfig,
        models: &Models,
        prepared: Receiver<PreparedFrame>,
        analysed: tokio::sync::mpsc::Sender<AnalysedFrame>,
        gates: Arc<gates::Gates>,
    ) -> anyhow::Result<Self> {
        let mut detectors = Vec::with_capacity(config.sessions);
        for _ in 0..config.sessions {
            detectors.push(Detectors::with_models(config, models)?);
        }
        let threads = detectors
            .into_iter()
            .enumerate()
            .map(|(index, detector)| {
                let prepared = prepared.clone();
                let analysed = analysed.clone();
                let gates = gates.clone();
                std::thread::Builder::new()
                    .name(format!("detect-{index}"))
                    .spawn(move || detector_worker(detector, prepared, analysed, &gates))
                    .expect("spawn detector thread")
            })
            .collect();
        Ok(DetectorPool { threads, models: models.clone() })
    }

    /// The models the sessions run.
    pub fn models(&self) -> &Models {
        &self.models
    }

    /// Waits for the sessions to finish (after the prepared-frame senders are gone).
    pub fn join(self) {
        for thread in self.threads {
            let _ = thread.join();
        }
    }
}

fn detector_worker(
    mut detectors: Detectors,
    prepared: Receiver<PreparedFrame>,
    analysed: tokio::sync::mpsc::Sender<AnalysedFrame>,
    gates: &gates::Gates,
) {
    for frame in prepared {
        let _span = tracing::debug_span!("camera", camera = %frame.camera.id).entered();
        let started = Instant::now();
        let size = (frame.letterbox.frame_width, frame.letterbox.frame_height);
        let rotated = frame.rotated_pass.is_on();
        let signature = match gates.check(&frame.camera, frame.received_at, &frame.picture, size, rotated) {
            gates::Check::Reuse(detections) => Err(detections),
            gates::Check::Infer(signature) => Ok(Some(signature)),
            gates::Check::Ungated => Ok(None),
        };
        let detections = match signature {
            // Nothing changed in the camera's zones: the last inference stands for this frame.
            Err(reused) => reused,
            Ok(signature) => {
                let detector = detectors.get_mut(frame.variant);
                let rotated_before = detector.rotated_inferences();
                let detected =
                    detector.detect_frame(&frame.tensor, &frame.letterbox, &frame.picture, &frame.rotated_pass);
                let rotated_runs = detector.rotated_inferences() - rotated_before;
                frame.camera.counters.rotated_inferences.fetch_add(rotated_runs, Ordering::Relaxed);
                match detected {
                    Ok(detections) => {
                        if let Some(signature) = signature {
                            gates.record(&frame.camera.id, frame.received_at, signature, &detections, size);
                        }
                        detections
                    }
                    Err(error) => {
                        warn!(error = format!("{error:#}"), "inference failed");
                        continue;
                    }
                }
            }
        };
        let inference_time = started.elapsed();
        let counters = &frame.camera.counters;
        counters.frames_analysed.fetch_add(1, Ordering::Relaxed);
        counters.inference_us_total.fetch_add(inference_time.as_micros() as u64, Ordering::Relaxed);
        counters.rotated_passes.fetch_add(u64::from(rotated), Ordering::Relaxed);
        let result = AnalysedFrame {
            camera: frame.camera.id.clone(),
            media_time_ms: frame.media_time_ms,
            received_at: frame.received_at,
            frame_width: frame.letterbox.frame_width,
            frame_height: frame.letterbox.frame_height,
            detections,
            decode_time: frame.decode_time,
            inference_time,
            picture: frame.picture,
            model: detectors.get_mut(frame.variant).model().clone(),
        };
        if analysed.blocking_send(result).is_err() {
            return; // The pipeline is shutting down.
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotated_boxes_map_back_onto_the_picture() {
        // A 40x20 picture with a box [2, 3, 12, 8] (x1, y1, x2, y2).
        let original = [2.0, 3.0, 12.0, 8.0];
        let picture = image::RgbImage::from_fn(40, 20, |x, y| {
            let inside = (2..12).contains(&x) && (3..8).contains(&y);
            image::Rgb(if inside { [255, 255, 255] } else { [0, 0, 0] })
        });
        for rotation in [Rotation::Clockwise, Rotation::CounterClockwise] {
            let rotated = match rotation {
                Rotation::Clockwise => image::imageops::rotate90(&picture),
                Rotation::CounterClockwise => image::imageops::rotate270(&picture),
            };
            // Where the white box lies in the rotated picture.
            let white: Vec<(u32, u32)> =
                rotated.enumerate_pixels().filter(|(_, _, p)| p[0] == 255).map(|(x, y, _)| (x, y)).collect();
            let found = [
                white.iter().map(|p| p.0).min().unwrap() as f32,
                white.iter().map(|p| p.1).min().unwrap() as f32,
                white.iter().map(|p| p.0).max().unwrap() as f32 + 1.0,
                white.iter().map(|p| p.1).max().unwrap() as f32 + 1.0,
            ];
            assert_eq!(unrotate_box(found, rotation, 40.0, 20.0), original, "{rotation:?}");
        }
    }
}
