//! Bin-area state from a learned model: "is this trash point overflowing?" read from one crop.
//!
//! Features: the embedding of the crop by a frozen ImageNet backbone ([`embedder`]:
//! MobileNetV2, 1280 numbers), square-rooted and scaled to unit length, optionally followed
//! by a few lighting-invariant colour and texture statistics ([`colour_stats`]). On them, an
//! L2-regularised logistic regression ([`logistic`]) gives P(overflowing) — the reading the
//! trash rule's hysteresis takes, like a classifier's.
//!
//! The generic default is trained at set-up (`gateway bin-train`) on the development photos
//! (`labels.csv` + images); the model file names the sha256 of the training set and of the
//! embedder, so a model is never used with another backbone than it was made for, and the
//! same inputs give the same bytes.

pub mod embedder;
pub mod logistic;
pub mod zone_store;

use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use crate::geometry::BoxNorm;
use logistic::Logistic;

/// The file format tag written into every model.
pub const MODEL_FORMAT: &str = "street-gateway/bin-state/1";
/// The generic default model's file name, beside the detector's manifest (`models/`).
pub const DEFAULT_MODEL_FILE: &str = "bin_state_default.json";
/// The embedder manifest's file name, beside the detector's manifest.
pub const EMBEDDER_MANIFEST_FILE: &str = "mobilenet_v2_embedding.toml";
/// Regularisation of the generic model (per mean example; features have unit length).
pub const DEFAULT_L2: f64 = 0.01;
/// Numbers in [`colour_stats`].
pub const COLOUR_STATS_LEN: usize = 8;
/// The colour block is scaled by this after standardising, so its length is comparable with
/// the unit-length embedding block instead of dominating it.
const COLOUR_BLOCK_SCALE: f32 = 0.35;

/// Which features a model reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeatureSet {
    /// The embedding only.
    Embedding,
    /// The embedding, then the colour and texture statistics.
    EmbeddingColour,
}

/// What is computed once per view of a crop; models pick from it.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewFeatures {
    /// The embedding, square-rooted and unit length.
    pub embedding: Vec<f32>,
    /// [`colour_stats`] of the view.
    pub colour: [f32; COLOUR_STATS_LEN],
}

impl ViewFeatures {
    /// From a raw embedding and the view it came from.
    pub fn new(raw_embedding: &[f32], view: &image::RgbImage) -> Self {
        ViewFeatures { embedding: normalise_embedding(raw_embedding), colour: colour_stats(view) }
    }
}

/// A trained bin-state model, as stored (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BinStateModel {
    /// [`MODEL_FORMAT`].
    pub format: String,
    /// sha256 of the embedder's ONNX file the features came from.
    pub embedder_sha256: String,
    /// sha256 of the training set (see [`training_sha256`]), or of the zone's examples.
    pub training_sha256: String,
    /// What it was trained on, in words.
    pub trained_on: String,
    /// The features read.
    pub features: FeatureSet,
    /// The regularisation used.
    pub l2: f64,
    /// Mean of the training set's (square-rooted, unit-length) embeddings, subtracted first…
    pub embedding_mean: Vec<f32>,
    /// …then divided by this: the root mean square distance of the training embeddings from
    /// their mean, so the block that carries the differences has unit length on average.
    pub embedding_scale: f32,
    /// Per-statistic mean of the training set (empty without colour features).
    pub colour_mean: Vec<f32>,
    /// Per-statistic standard deviation of the training set.
    pub colour_std: Vec<f32>,
    /// One weight per feature.
    pub weights: Vec<f32>,
    /// Intercept.
    pub bias: f32,
}

impl BinStateModel {
    /// Reads and checks a model file.
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text = std::fs::read_to_string(path).with_context(|| {
            format!("cannot read bin-state model {} (the default is made by `gateway bin-train`)", path.display())
        })?;
        let model: BinStateModel =
            serde_json::from_str(&text).with_context(|| format!("invalid bin-state model {}", path.display()))?;
        model.check().with_context(|| format!("invalid bin-state model {}", path.display()))?;
        Ok(model)
    }

    /// Checks the format tag and that the lengths agree with the feature set.
    pub fn check(&self) -> anyhow::Result<()> {
        if self.format != MODEL_FORMAT {
            bail!("format {:?}, expected {MODEL_FORMAT:?}", self.format);
        }
        let colour = match self.features {
            FeatureSet::Embedding => 0,
            FeatureSet::EmbeddingColour => COLOUR_STATS_LEN,
        };
        if self.colour_mean.len() != colour || self.colour_std.len() != colour {
            bail!("colour statistics have the wrong length");
        }
        if self.weights.len() != self.embedding_mean.len() + colour || self.embedding_mean.is_empty() {
            bail!("{} weights for {} embedding numbers", self.weights.len(), self.embedding_mean.len());
        }
        let finite = self.weights.iter().chain(&self.embedding_mean).chain([&self.bias]).all(|w| w.is_finite());
        if !(finite && self.embedding_scale.is_finite() && self.embedding_scale > 0.0) {
            bail!("weights are not finite");
        }
        Ok(())
    }

    /// Serialised, with a final newline (what `bin-train` writes; same model, same bytes).
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a model serialises") + "\n"
    }

    /// The length of embedding the model expects.
    pub fn embedding_len(&self) -> usize {
        self.embedding_mean.len()
    }

    fn normalisation(&self) -> Normalisation {
        Normalisation {
            features: self.features,
            embedding_mean: self.embedding_mean.clone(),
            embedding_scale: self.embedding_scale,
            colour_mean: self.colour_mean.clone(),
            colour_std: self.colour_std.clone(),
        }
    }

    /// The feature vector of a view, as this model reads it.
    pub fn features(&self, view: &ViewFeatures) -> Vec<f32> {
        self.normalisation().apply(view)
    }

    /// P(overflowing) for a view.
    pub fn probability(&self, view: &ViewFeatures) -> f32 {
        self.as_logistic().probability(&self.features(view)) as f32
    }

    /// The weights as a [`Logistic`] (a prior for a zone's few-shot model).
    pub fn as_logistic(&self) -> Logistic {
        Logistic { weights: self.weights.iter().map(|&w| f64::from(w)).collect(), bias: f64::from(self.bias) }
    }
}

/// Trains a model on labelled views (`true`: overflowing). `prior`: a model to start from and
/// be pulled towards (few-shot); its feature set and normalisation are kept.
pub fn train(
    views: &[(&ViewFeatures, bool)],
    features: FeatureSet,
    l2: f64,
    prior: Option<&BinStateModel>,
    embedder_sha256: &str,
    training_sha256: &str,
    trained_on: &str,
) -> BinStateModel {
    let normalisation = match prior {
        Some(prior) => prior.normalisation(),
        None => Normalisation::of(features, views.iter().map(|(v, _)| *v)),
    };
    let rows: Vec<Vec<f32>> = views.iter().map(|(v, _)| normalisation.apply(v)).collect();
    let examples: Vec<(&[f32], bool)> = rows.iter().zip(views).map(|(row, (_, y))| (row.as_slice(), *y)).collect();
    let prior_logistic = prior.map(BinStateModel::as_logistic);
    let fitted = logistic::fit(&examples, l2, prior_logistic.as_ref());
    BinStateModel {
        format: MODEL_FORMAT.to_string(),
        embedder_sha256: embedder_sha256.to_string(),
        training_sha256: training_sha256.to_string(),
        trained_on: trained_on.to_string(),
        features: normalisation.features,
        l2,
        embedding_mean: normalisation.embedding_mean,
        embedding_scale: normalisation.embedding_scale,
        colour_mean: normalisation.colour_mean,
        colour_std: normalisation.colour_std,
        weights: fitted.weights.iter().map(|&w| w as f32).collect(),
        bias: fitted.bias as f32,
    }
}

/// How views become feature rows: learnt from a training set, kept in the model.
struct Normalisation {
    features: FeatureSet,
    embedding_mean: Vec<f32>,
    embedding_scale: f32,
    colour_mean: Vec<f32>,
    colour_std: Vec<f32>,
}

impl Normalisation {
    fn of<'a>(features: FeatureSet, views: impl Iterator<Item = &'a ViewFeatures> + Clone) -> Self {
        let n = views.clone().count().max(1) as f64;
        let dims = views.clone().next().map_or(0, |v| v.embedding.len());
        let mut mean = vec![0.0_f64; dims];
        for view in views.clone() {
            for (m, &v) in mean.iter_mut().zip(&view.embedding) {
                *m += f64::from(v) / n;
            }
        }
        let spread = views
            .clone()
            .map(|view| view.embedding.iter().zip(&mean).map(|(&v, m)| (f64::from(v) - m).powi(2)).sum::<f64>())
            .sum::<f64>()
            / n;
        let (colour_mean, colour_std) = match features {
            FeatureSet::Embedding => (Vec::new(), Vec::new()),
            FeatureSet::EmbeddingColour => (0..COLOUR_STATS_LEN)
                .map(|i| {
                    let m = views.clone().map(|v| f64::from(v.colour[i])).sum::<f64>() / n;
                    let variance = views.clone().map(|v| (f64::from(v.colour[i]) - m).powi(2)).sum::<f64>() / n;
                    (m as f32, (variance.sqrt() as f32).max(1e-4))
                })
                .unzip(),
        };
        Normalisation {
            features,
            embedding_mean: mean.iter().map(|&m| m as f32).collect(),
            embedding_scale: (spread.sqrt() as f32).max(1e-6),
            colour_mean,
            colour_std,
        }
    }

    fn apply(&self, view: &ViewFeatures) -> Vec<f32> {
        let mut row: Vec<f32> =
            view.embedding.iter().zip(&self.embedding_mean).map(|(v, m)| (v - m) / self.embedding_scale).collect();
        if self.features == FeatureSet::EmbeddingColour {
            row.extend(
                view.colour
                    .iter()
                    .zip(self.colour_mean.iter().zip(&self.colour_std))
                    .map(|(v, (m, s))| (v - m) / s * COLOUR_BLOCK_SCALE / (COLOUR_STATS_LEN as f32).sqrt()),
            );
        }
        row
    }
}

/// Square root (the backbone's pooled activations are non-negative and heavy-tailed), then
/// unit length: a brighter or larger crop does not scale the features.
pub fn normalise_embedding(raw: &[f32]) -> Vec<f32> {
    let rooted: Vec<f32> = raw.iter().map(|v| v.max(0.0).sqrt()).collect();
    let norm = rooted.iter().map(|v| v * v).sum::<f32>().sqrt();
    if norm > 0.0 {
        rooted.iter().map(|v| v / norm).collect()
    } else {
        rooted
    }
}

/// Colour and texture statistics that a global gain (dusk, camera exposure) leaves unchanged:
/// mean and spread of the red and green chromaticities, mean and spread of saturation, luma
/// contrast (std ÷ mean) and edge density (mean |∇luma| ÷ mean luma). Computed on at most
/// 112×112 pixels of the picture.
pub fn colour_stats(picture: &image::RgbImage) -> [f32; COLOUR_STATS_LEN] {
    let small = if picture.width() > 112 || picture.height() > 112 {
        image::imageops::thumbnail(picture, 112.min(picture.width()), 112.min(picture.height()))
    } else {
        picture.clone()
    };
    let (width, height) = (small.width() as usize, small.height() as usize);
    let n = (width * height).max(1) as f64;
    let mut sums = [0.0_f64; 6]; // r, g, sat, and their squares
    let mut luma = Vec::with_capacity(width * height);
    for p in small.pixels() {
        let [r, g, b] = p.0.map(f64::from);
        let total = r + g + b + 3.0;
        let (cr, cg) = ((r + 1.0) / total, (g + 1.0) / total);
        let (max, min) = (r.max(g).max(b), r.min(g).min(b));
        let saturation = (max - min) / (max + 1.0);
        for (i, v) in [cr, cg, saturation].into_iter().enumerate() {
            sums[i] += v;
            sums[i + 3] += v * v;
        }
        luma.push(0.299 * r + 0.587 * g + 0.114 * b);
    }
    let mean = |i: usize| sums[i] / n;
    let std = |i: usize| (sums[i + 3] / n - mean(i).powi(2)).max(0.0).sqrt();
    let luma_mean = luma.iter().sum::<f64>() / n;
    let luma_std = (luma.iter().map(|l| (l - luma_mean).powi(2)).sum::<f64>() / n).sqrt();
    let mut gradient = 0.0;
    for y in 0..height.saturating_sub(1) {
        for x in 0..width.saturating_sub(1) {
            let here = luma[y * width + x];
            gradient += (luma[y * width + x + 1] - here).abs() + (luma[(y + 1) * width + x] - here).abs();
        }
    }
    let gradient = gradient / n;
    let floor = luma_mean.max(1.0);
    [mean(0), mean(1), std(0), std(1), mean(2), std(2), luma_std / floor, gradient / floor].map(|v| v as f32)
}

/// The crop of `picture` inside `bounds` (normalised), at least one pixel.
pub fn crop(picture: &image::RgbImage, bounds: &BoxNorm) -> image::RgbImage {
    let (width, height) = (picture.width() as f32, picture.height() as f32);
    let x1 = ((bounds.x1.clamp(0.0, 1.0) * width) as u32).min(picture.width().saturating_sub(1));
    let y1 = ((bounds.y1.clamp(0.0, 1.0) * height) as u32).min(picture.height().saturating_sub(1));
    let crop_width = ((bounds.x2.clamp(0.0, 1.0) * width) as u32).saturating_sub(x1).max(1);
    let crop_height = ((bounds.y2.clamp(0.0, 1.0) * height) as u32).saturating_sub(y1).max(1);
    image::imageops::crop_imm(picture, x1, y1, crop_width, crop_height).to_image()
}

/// Training views of one photo: as is, mirrored, and the central 80 % (as is and mirrored) —
/// a bin area drawn a little tighter or from the other side is still the same state.
pub fn training_views(picture: &image::RgbImage, count: usize) -> Vec<image::RgbImage> {
    let mut views = vec![picture.clone()];
    if count >= 2 {
        views.push(image::imageops::flip_horizontal(picture));
    }
    if count >= 4 {
        let centre = crop(picture, &BoxNorm { x1: 0.1, y1: 0.1, x2: 0.9, y2: 0.9 });
        views.push(image::imageops::flip_horizontal(&centre));
        views.push(centre);
    }
    views
}

/// A picture with every channel multiplied by `gain` (dusk, exposure).
pub fn with_gain(picture: &image::RgbImage, gain: f32) -> image::RgbImage {
    let mut out = picture.clone();
    for p in out.pixels_mut() {
        p.0 = p.0.map(|v| (f32::from(v) * gain).round().clamp(0.0, 255.0) as u8);
    }
    out
}

/// One labelled photo of the development set.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledImage {
    /// File name inside the set's folder.
    pub file: String,
    /// `true`: overflowing.
    pub overflowing: bool,
    /// Photos of the same place share it.
    pub scene: String,
    /// `street` or `cctv`.
    pub viewpoint: String,
}

/// Most rows a `labels.csv` may have (the input is bounded).
const MAX_LABELLED: usize = 10_000;

/// Reads `labels.csv` (`file,label,scene_id,viewpoint,…`; the first four columns are plain).
pub fn load_labels(dir: &Path) -> anyhow::Result<Vec<LabelledImage>> {
    let path = dir.join("labels.csv");
    let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap_or("").split(',').take(4).collect();
    if header != ["file", "label", "scene_id", "viewpoint"] {
        bail!("{}: the header must start with file,label,scene_id,viewpoint", path.display());
    }
    let mut images = Vec::new();
    for (index, line) in lines.enumerate().filter(|(_, l)| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.splitn(5, ',').collect();
        let [file, label, scene, viewpoint] = fields[..fields.len().min(4)] else {
            bail!("{} line {}: too few columns", path.display(), index + 2);
        };
        if file.contains('/') || file.contains('\\') || file.starts_with('.') {
            bail!("{} line {}: file {file:?} must be a plain name in the folder", path.display(), index + 2);
        }
        let overflowing = match label {
            "overflowing" => true,
            "normal" => false,
            other => bail!("{} line {}: label {other:?} is not overflowing or normal", path.display(), index + 2),
        };
        images.push(LabelledImage {
            file: file.to_string(),
            overflowing,
            scene: scene.to_string(),
            viewpoint: viewpoint.to_string(),
        });
        if images.len() > MAX_LABELLED {
            bail!("{}: more than {MAX_LABELLED} rows", path.display());
        }
    }
    if images.is_empty() {
        bail!("{}: no labelled images", path.display());
    }
    Ok(images)
}

/// sha256 of a training set: over one line `file label sha256(bytes)` per image, in the
/// order of `labels.csv`. Renaming a scene or editing a note does not change it; changing a
/// label or a picture does.
pub fn training_sha256(dir: &Path, images: &[LabelledImage]) -> anyhow::Result<String> {
    let mut listing = String::new();
    for image in images {
        let path = dir.join(&image.file);
        let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let label = if image.overflowing { "overflowing" } else { "normal" };
        listing.push_str(&format!("{} {label} {}\n", image.file, embedder::hex_sha256(&bytes)));
    }
    Ok(embedder::hex_sha256(listing.as_bytes()))
}

/// Counts of a binary confusion matrix (positive: overflowing).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Confusion {
    /// Overflowing read as overflowing.
    pub true_positive: usize,
    /// Overflowing read as normal.
    pub false_negative: usize,
    /// Normal read as normal.
    pub true_negative: usize,
    /// Normal read as overflowing.
    pub false_positive: usize,
}

impl Confusion {
    /// Tallies (truth, predicted) pairs.
    pub fn of(pairs: impl IntoIterator<Item = (bool, bool)>) -> Self {
        let mut c = Confusion::default();
        for (truth, predicted) in pairs {
            match (truth, predicted) {
                (true, true) => c.true_positive += 1,
                (true, false) => c.false_negative += 1,
                (false, false) => c.true_negative += 1,
                (false, true) => c.false_positive += 1,
            }
        }
        c
    }

    /// Mean of the recall of each class present (`None` when there is nothing).
    pub fn balanced_accuracy(&self) -> Option<f64> {
        let recall = |hit: usize, miss: usize| (hit + miss > 0).then(|| hit as f64 / (hit + miss) as f64);
        let recalls: Vec<f64> =
            [recall(self.true_positive, self.false_negative), recall(self.true_negative, self.false_positive)]
                .into_iter()
                .flatten()
                .collect();
        (!recalls.is_empty()).then(|| recalls.iter().sum::<f64>() / recalls.len() as f64)
    }
}

/// Leave-one-scene-out: for each scene, a model trained on the other scenes' training views
/// (the first `views_used` of each photo) reads the scene's photos. Returns P(overflowing)
/// per photo and per test view (`test_views[i]`: photo i as is, dimmed, …), in order.
///
/// The same models as [`train`] gives, fitted through inner products
/// ([`logistic::fit_gram`]): the raw inner products of every view are computed once, and each
/// fold's normalisation (mean, scale, colour standardisation) is applied to them.
pub fn leave_one_scene_out(
    images: &[LabelledImage],
    training_views: &[Vec<ViewFeatures>],
    test_views: &[Vec<ViewFeatures>],
    features: FeatureSet,
    l2: f64,
    views_used: usize,
) -> Vec<Vec<f32>> {
    // Every view, with its photo and whether it trains.
    let mut all: Vec<(&ViewFeatures, usize, bool)> = Vec::new();
    for (index, (train_views, tests)) in training_views.iter().zip(test_views).enumerate() {
        all.extend(train_views.iter().take(views_used).map(|v| (v, index, true)));
        all.extend(tests.iter().map(|v| (v, index, false)));
    }
    let count = all.len();
    let mut raw = vec![0.0_f64; count * count];
    for a in 0..count {
        for b in a..count {
            let (x, y) = (&all[a].0.embedding, &all[b].0.embedding);
            let mut dot = 0.0;
            for j in 0..x.len().min(y.len()) {
                dot += f64::from(x[j]) * f64::from(y[j]);
            }
            raw[a * count + b] = dot;
            raw[b * count + a] = dot;
        }
    }
    let mut scenes: Vec<&str> = images.iter().map(|i| i.scene.as_str()).collect();
    scenes.sort_unstable();
    scenes.dedup();
    let mut probabilities = vec![Vec::new(); images.len()];
    for scene in scenes {
        let training: Vec<usize> = (0..count).filter(|&a| all[a].2 && images[all[a].1].scene != scene).collect();
        let n = training.len() as f64;
        // Centring: x·μ for every view, μ·μ, and the scale.
        let mean_dot: Vec<f64> =
            (0..count).map(|a| training.iter().map(|&t| raw[a * count + t]).sum::<f64>() / n).collect();
        let mean_mean = training.iter().map(|&t| mean_dot[t]).sum::<f64>() / n;
        let spread = training.iter().map(|&t| raw[t * count + t]).sum::<f64>() / n - mean_mean;
        let scale_squared = f64::from((spread.max(0.0).sqrt() as f32).max(1e-6)).powi(2);
        let colour: Vec<Vec<f64>> = if features == FeatureSet::EmbeddingColour {
            let norm = Normalisation::of(features, training.iter().map(|&t| all[t].0));
            let weight = f64::from(COLOUR_BLOCK_SCALE) / (COLOUR_STATS_LEN as f64).sqrt();
            all.iter()
                .map(|(v, _, _)| {
                    (0..COLOUR_STATS_LEN)
                        .map(|k| f64::from(v.colour[k] - norm.colour_mean[k]) / f64::from(norm.colour_std[k]) * weight)
                        .collect()
                })
                .collect()
        } else {
            vec![Vec::new(); count]
        };
        let kernel = |a: usize, b: usize| {
            let centred = (raw[a * count + b] - mean_dot[a] - mean_dot[b] + mean_mean) / scale_squared;
            centred + colour[a].iter().zip(&colour[b]).map(|(x, y)| x * y).sum::<f64>()
        };
        let m = training.len();
        let mut gram = vec![0.0; m * m];
        for (i, &a) in training.iter().enumerate() {
            for (j, &b) in training.iter().enumerate() {
                gram[i * m + j] = kernel(a, b);
            }
        }
        let labels: Vec<bool> = training.iter().map(|&t| images[all[t].1].overflowing).collect();
        let (alpha, bias) = logistic::fit_gram(&gram, &labels, l2);
        for (v, &(_, photo, trains)) in all.iter().enumerate() {
            if trains || images[photo].scene != scene {
                continue;
            }
            let z = bias + training.iter().zip(&alpha).map(|(&t, a)| a * kernel(t, v)).sum::<f64>();
            probabilities[photo].push(logistic::sigmoid(z) as f32);
        }
    }
    probabilities
}

/// A model trained on every scene but `scene`.
pub fn train_without_scene(
    images: &[LabelledImage],
    training_views: &[Vec<ViewFeatures>],
    scene: &str,
    features: FeatureSet,
    l2: f64,
    views_used: usize,
) -> BinStateModel {
    let training: Vec<(&ViewFeatures, bool)> = images
        .iter()
        .zip(training_views)
        .filter(|(image, _)| image.scene != scene)
        .flat_map(|(image, v)| v.iter().take(views_used).map(move |view| (view, image.overflowing)))
        .collect();
    train(&training, features, l2, None, "", "", "")
}

/// Up to this many examples a zone's accuracy is cross-validated leaving one out; above,
/// with [`CROSS_VALIDATION_FOLDS`] folds (60 examples: 6 fits instead of 61).
pub const LEAVE_ONE_OUT_MAX: usize = 20;
/// Folds of the cross-validation above [`LEAVE_ONE_OUT_MAX`] examples.
pub const CROSS_VALIDATION_FOLDS: usize = 5;

/// How [`train_zone`] cross-validates `count` examples, in words.
pub fn cross_validation_name(count: usize) -> &'static str {
    if count <= LEAVE_ONE_OUT_MAX {
        "leave-one-out"
    } else {
        "5-fold"
    }
}

/// A zone's own model from its examples (few-shot): starts from, and is pulled towards
/// (`l2`), the generic model, keeping its normalisation. Returns the model and the
/// cross-validated balanced accuracy over the examples (`None` with fewer than 2 of a state):
/// leave-one-out up to [`LEAVE_ONE_OUT_MAX`] examples, else [`CROSS_VALIDATION_FOLDS`] folds
/// dealt round-robin within each state (deterministic: the same examples, the same figure).
pub fn train_zone(
    examples: &[(ViewFeatures, bool)],
    generic: &BinStateModel,
    l2: f64,
    training_sha256: &str,
) -> (BinStateModel, Option<f64>) {
    let labelled: Vec<(&ViewFeatures, bool)> = examples.iter().map(|(v, y)| (v, *y)).collect();
    let positives = examples.iter().filter(|(_, y)| *y).count();
    let trained_on = format!("{} zone examples ({positives} overflowing), from the generic model", examples.len());
    let sha = generic.embedder_sha256.clone();
    let model = train(&labelled, generic.features, l2, Some(generic), &sha, training_sha256, &trained_on);
    let accuracy = (positives >= 2 && examples.len() - positives >= 2).then(|| {
        let (folds, fold_of) = if examples.len() <= LEAVE_ONE_OUT_MAX {
            (examples.len(), (0..examples.len()).collect::<Vec<_>>())
        } else {
            let mut seen = [0usize; 2];
            let fold_of = examples
                .iter()
                .map(|(_, y)| {
                    let fold = seen[usize::from(*y)] % CROSS_VALIDATION_FOLDS;
                    seen[usize::from(*y)] += 1;
                    fold
                })
                .collect();
            (CROSS_VALIDATION_FOLDS, fold_of)
        };
        let mut pairs = Vec::with_capacity(examples.len());
        for fold in 0..folds {
            let others: Vec<(&ViewFeatures, bool)> =
                labelled.iter().zip(&fold_of).filter(|(_, f)| **f != fold).map(|(e, _)| *e).collect();
            let model = train(&others, generic.features, l2, Some(generic), "", "", "");
            for (example, _) in examples.iter().zip(&fold_of).filter(|(_, f)| **f == fold) {
                pairs.push((example.1, model.probability(&example.0) >= 0.5));
            }
        }
        Confusion::of(pairs).balanced_accuracy().unwrap_or(0.0)
    });
    (model, accuracy)
}

/// A small deterministic generator (64-bit LCG, Knuth's constants) for made footage and
/// example draws: the same seed gives the same figures on every machine.
#[derive(Debug, Clone)]
pub struct Lcg(pub u64);

impl Lcg {
    /// Uniform in [0, 1).
    pub fn next_unit(&mut self) -> f32 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 40) as f32) / (1u64 << 24) as f32
    }
}

/// Frames of "footage" of a fixed camera made from one photo: each a slightly shifted and
/// scaled window (90–100 % of the photo, like a camera's small drift and re-encoding) at a
/// gain between 0.5 and 1.15 (time of day).
pub fn made_frames(picture: &image::RgbImage, count: usize, rng: &mut Lcg) -> Vec<image::RgbImage> {
    (0..count)
        .map(|_| {
            let scale = 0.9 + 0.1 * rng.next_unit();
            let x1 = (1.0 - scale) * rng.next_unit();
            let y1 = (1.0 - scale) * rng.next_unit();
            let window = crop(picture, &BoxNorm { x1, y1, x2: x1 + scale, y2: y1 + scale });
            with_gain(&window, 0.5 + 0.65 * rng.next_unit())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(direction: f32, colour: f32) -> ViewFeatures {
        let raw: Vec<f32> = (0..16).map(|i| if i < 8 { 1.0 + direction } else { 1.0 - direction }).collect();
        ViewFeatures { embedding: normalise_embedding(&raw), colour: [colour; COLOUR_STATS_LEN] }
    }

    #[test]
    fn colour_statistics_ignore_a_global_gain_but_see_structure() {
        let picture = image::RgbImage::from_fn(64, 48, |x, y| {
            image::Rgb([(60 + (x * 3) % 90) as u8, (80 + (y * 5) % 70) as u8, (40 + ((x + y) * 2) % 60) as u8])
        });
        let dim = with_gain(&picture, 0.5);
        let (a, b) = (colour_stats(&picture), colour_stats(&dim));
        for (i, (x, y)) in a.iter().zip(&b).enumerate() {
            assert!((x - y).abs() < 0.02 + 0.05 * x.abs(), "statistic {i}: {x} vs {y} at half brightness");
        }
        let flat = image::RgbImage::from_pixel(64, 48, image::Rgb([120, 120, 120]));
        let flat_stats = colour_stats(&flat);
        assert!(flat_stats[7] < 0.01 && a[7] > 0.05, "edge density: flat {} vs textured {}", flat_stats[7], a[7]);
    }

    #[test]
    fn a_trained_model_round_trips_through_json_and_reads_its_classes() {
        let views: Vec<ViewFeatures> = (0..12).map(|i| view(if i % 2 == 0 { 0.5 } else { -0.5 }, i as f32)).collect();
        let labelled: Vec<(&ViewFeatures, bool)> = views.iter().enumerate().map(|(i, v)| (v, i % 2 == 0)).collect();
        for features in [FeatureSet::Embedding, FeatureSet::EmbeddingColour] {
            let model = train(&labelled, features, DEFAULT_L2, None, "e", "t", "test");
            model.check().unwrap();
            assert!(model.probability(&view(0.5, 3.0)) > 0.5);
            assert!(model.probability(&view(-0.5, 3.0)) < 0.5);
            let back: BinStateModel = serde_json::from_str(&model.to_json()).unwrap();
            assert_eq!(back, model);
            assert_eq!(back.to_json(), model.to_json(), "same model, same bytes");
        }
    }

    #[test]
    fn a_zone_model_learns_its_examples_from_the_generic_one_and_reports_leave_one_out_accuracy() {
        // The generic model reads direction +0.5 as overflowing; at this zone it is the other
        // way round (say, the tidy bins are dark and the rubbish bright).
        let generic_views: Vec<ViewFeatures> =
            (0..12).map(|i| view(if i % 2 == 0 { 0.5 } else { -0.5 }, 1.0)).collect();
        let labelled: Vec<(&ViewFeatures, bool)> =
            generic_views.iter().enumerate().map(|(i, v)| (v, i % 2 == 0)).collect();
        let generic = train(&labelled, FeatureSet::Embedding, DEFAULT_L2, None, "e", "t", "generic");
        let zone_examples: Vec<(ViewFeatures, bool)> =
            (0..6).map(|i| (view(if i % 2 == 0 { -0.4 - 0.02 * i as f32 } else { 0.4 }, 1.0), i % 2 == 0)).collect();
        let (zone, accuracy) = train_zone(&zone_examples, &generic, 0.1, "z");
        assert!(zone.probability(&view(-0.45, 1.0)) > 0.5, "the zone's overflowing look");
        assert!(zone.probability(&view(0.45, 1.0)) < 0.5, "the zone's tidy look");
        assert_eq!(zone.embedder_sha256, "e");
        assert_eq!(accuracy, Some(1.0));
        let (_, too_few) = train_zone(&zone_examples[..3], &generic, 0.1, "z");
        assert_eq!(too_few, None);
        // Above LEAVE_ONE_OUT_MAX examples: 5 folds, the same separable examples all right.
        let many: Vec<(ViewFeatures, bool)> = (0..LEAVE_ONE_OUT_MAX + 10)
            .map(|i| (view(if i % 2 == 0 { -0.4 - 0.005 * i as f32 } else { 0.4 }, 1.0), i % 2 == 0))
            .collect();
        assert_eq!(cross_validation_name(many.len()), "5-fold");
        assert_eq!(train_zone(&many, &generic, 0.1, "z").1, Some(1.0));
    }

    #[test]
    fn leave_one_scene_out_gives_what_training_without_the_scene_gives() {
        let images: Vec<LabelledImage> = (0..8)
            .map(|i| LabelledImage {
                file: format!("{i}.jpg"),
                overflowing: i % 2 == 0,
                scene: format!("s{}", i / 3),
                viewpoint: "street".into(),
            })
            .collect();
        let views: Vec<Vec<ViewFeatures>> = (0..8)
            .map(|i| {
                let d = if i % 2 == 0 { 0.3 } else { -0.3 } + 0.05 * (i % 3) as f32;
                vec![view(d, i as f32), view(d * 0.8, i as f32 + 0.5)]
            })
            .collect();
        let tests: Vec<Vec<ViewFeatures>> = views.iter().map(|v| vec![v[0].clone()]).collect();
        for features in [FeatureSet::Embedding, FeatureSet::EmbeddingColour] {
            let loso = leave_one_scene_out(&images, &views, &tests, features, 0.05, 2);
            for (i, image) in images.iter().enumerate() {
                let model = train_without_scene(&images, &views, &image.scene, features, 0.05, 2);
                let direct = model.probability(&views[i][0]);
                assert!((loso[i][0] - direct).abs() < 1e-4, "{features:?} photo {i}: {} vs {direct}", loso[i][0]);
            }
        }
    }

    #[test]
    fn balanced_accuracy_weighs_each_class_equally() {
        // 9 of 10 normal right, 1 of 2 overflowing: (0.9 + 0.5) / 2.
        let pairs = (0..10).map(|i| (false, i == 0)).chain([(true, true), (true, false)]);
        let confusion = Confusion::of(pairs);
        assert!((confusion.balanced_accuracy().unwrap() - 0.7).abs() < 1e-12);
        assert_eq!(Confusion::default().balanced_accuracy(), None);
    }

    #[test]
    fn labels_are_read_and_bad_rows_refused() {
        let dir = tempfile::tempdir().unwrap();
        let header = "file,label,scene_id,viewpoint,source_repo,note\n";
        std::fs::write(dir.path().join("labels.csv"), format!("{header}a.jpg,overflowing,s1,street,r,\"x, y\"\n"))
            .unwrap();
        let labels = load_labels(dir.path()).unwrap();
        assert_eq!(labels.len(), 1);
        assert!(labels[0].overflowing && labels[0].scene == "s1" && labels[0].viewpoint == "street");
        for bad in ["a.jpg,full,s1,street\n", "../a.jpg,normal,s1,street\n", "a.jpg,normal\n"] {
            std::fs::write(dir.path().join("labels.csv"), format!("{header}{bad}")).unwrap();
            assert!(load_labels(dir.path()).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn the_crop_stays_inside_the_picture() {
        let picture = image::RgbImage::new(100, 50);
        let inside = crop(&picture, &BoxNorm { x1: 0.2, y1: 0.2, x2: 0.6, y2: 1.0 });
        assert_eq!((inside.width(), inside.height()), (40, 40));
        let edge = crop(&picture, &BoxNorm { x1: 1.0, y1: 1.0, x2: 1.0, y2: 1.0 });
        assert_eq!((edge.width(), edge.height()), (1, 1));
    }
}
