//! A bin area's own examples and learned model, as ops teach them from the console (issue 15):
//! crops labelled "normal" or "overflowing", kept in the state directory, and the model
//! trained on them (few-shot, starting from the generic default: [`super::train_zone`]).
//!
//! ```text
//! <state_dir>/bin-zones/<camera>/<zone>/
//!     examples.json   the index: examples (id, label, when, from where), the last training
//!     <id>.jpg        one crop per example, its longest side at most MAX_EXAMPLE_SIDE_PX
//!     model.json      the learned model (a BinStateModel), read by the zone when it has
//!                     source = "model" and names no model file of its own
//! ```
//!
//! Bounded: at most [`MAX_EXAMPLES_PER_ZONE`] examples a zone, each a small JPEG. Every file
//! is written atomically (temporary, fsync, rename), so a crash leaves the old index or the
//! new one. The store does no locking of its own: its caller (the console) runs one write at
//! a time. Camera and zone ids are checked to be plain names before they become paths.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};

use super::{BinStateModel, ViewFeatures};

/// Most examples one zone keeps (refused beyond: delete some first). 60 crops of ≤ 448 px
/// are ~2 MB; training on them cross-validates with 5 folds (`super::train_zone`).
pub const MAX_EXAMPLES_PER_ZONE: usize = 60;
/// Longest side of a stored crop, pixels (the embedder reads 224×224).
pub const MAX_EXAMPLE_SIDE_PX: u32 = 448;
/// Largest example file read back, bytes.
const MAX_EXAMPLE_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// Largest index file read, bytes (60 examples are ~6 KB).
const MAX_INDEX_BYTES: u64 = 256 * 1024;
/// Longest "from" note kept with an example, characters.
const MAX_FROM_CHARS: usize = 200;
/// The index file's name.
const INDEX_FILE: &str = "examples.json";
/// The learned model's file name.
pub const MODEL_FILE: &str = "model.json";

/// What an example shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Label {
    /// A tidy bin area.
    Normal,
    /// An overflowing one.
    Overflowing,
}

impl Label {
    /// Whether the label is "overflowing" (the positive class).
    pub fn overflowing(self) -> bool {
        self == Label::Overflowing
    }
}

/// One example as the index lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Example {
    /// Its number in this zone (never reused).
    pub id: u64,
    /// What it shows.
    pub label: Label,
    /// When it was added, ms since the Unix epoch.
    pub added_ms: i64,
    /// Where the crop came from (`live frame …`, `incident …`), for the gallery.
    pub from: String,
}

/// The last training of a zone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Training {
    /// When, ms since the Unix epoch.
    pub trained_ms: i64,
    /// Examples it used, overflowing ones among them.
    pub examples: usize,
    /// See `examples`.
    pub overflowing: usize,
    /// Cross-validated balanced accuracy over the examples (leave-one-out up to 20, else
    /// 5-fold; None with fewer than 2 of a state).
    pub accuracy: Option<f64>,
    /// Wall time it took (embedding every crop, fitting, cross-validating), seconds.
    pub seconds: f64,
}

/// A zone's index file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// The next example's id.
    pub next_id: u64,
    /// The examples, oldest first.
    pub examples: Vec<Example>,
    /// The training the stored model came from (None: no model).
    pub trained: Option<Training>,
}

impl Index {
    /// (overflowing, normal) examples.
    pub fn counts(&self) -> (usize, usize) {
        let overflowing = self.examples.iter().filter(|e| e.label.overflowing()).count();
        (overflowing, self.examples.len() - overflowing)
    }
}

/// Why an example was not added.
#[derive(Debug)]
pub enum AddRefused {
    /// The zone holds [`MAX_EXAMPLES_PER_ZONE`] already.
    Full,
    /// An example from the same place (`from`) is there already (with `unique_from`).
    Duplicate,
    /// Reading or writing failed.
    Io(anyhow::Error),
}

/// The folder of one zone's examples and model.
#[derive(Debug, Clone)]
pub struct ZoneStore {
    dir: PathBuf,
}

/// Whether `id` is a plain name (as camera and zone ids are validated): 1–64 of A–Z, a–z,
/// 0–9, '-' and '_'. Nothing else becomes a path.
fn plain(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// Where a zone's learned model is (whether or not there is one).
pub fn learned_model_path(state_dir: &Path, camera: &str, zone: &str) -> Option<PathBuf> {
    ZoneStore::open(state_dir, camera, zone).ok().map(|store| store.model_path())
}

impl ZoneStore {
    /// The store of `camera`'s zone `zone` under `state_dir` (nothing is created yet).
    pub fn open(state_dir: &Path, camera: &str, zone: &str) -> anyhow::Result<Self> {
        if !plain(camera) || !plain(zone) {
            bail!("camera and zone ids must be 1-64 characters of A-Z, a-z, 0-9, '-' and '_'");
        }
        Ok(ZoneStore { dir: state_dir.join("bin-zones").join(camera).join(zone) })
    }

    /// The learned model's path.
    pub fn model_path(&self) -> PathBuf {
        self.dir.join(MODEL_FILE)
    }

    fn image_path(&self, id: u64) -> PathBuf {
        self.dir.join(format!("{id}.jpg"))
    }

    /// The index (empty when the zone has none yet).
    pub fn index(&self) -> anyhow::Result<Index> {
        let path = self.dir.join(INDEX_FILE);
        match std::fs::metadata(&path) {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Index::default()),
            Err(error) => return Err(error).with_context(|| format!("cannot read {}", path.display())),
            Ok(meta) if meta.len() > MAX_INDEX_BYTES => {
                bail!("{} is larger than {MAX_INDEX_BYTES} bytes", path.display())
            }
            Ok(_) => {}
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("{} is not a valid index", path.display()))
    }

    fn save_index(&self, index: &Index) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec_pretty(index).expect("the index serialises");
        crate::evidence::write_atomically(&self.dir.join(INDEX_FILE), &bytes)
    }

    /// Adds a crop as an example (scaled down to [`MAX_EXAMPLE_SIDE_PX`], kept as JPEG);
    /// with `unique_from`, not when an example from the same `from` is there already.
    pub fn add(
        &self,
        crop: &image::RgbImage,
        label: Label,
        from: &str,
        unique_from: bool,
        now_ms: i64,
    ) -> Result<Example, AddRefused> {
        let mut index = self.index().map_err(AddRefused::Io)?;
        if unique_from && index.examples.iter().any(|e| e.from == from) {
            return Err(AddRefused::Duplicate);
        }
        if index.examples.len() >= MAX_EXAMPLES_PER_ZONE {
            return Err(AddRefused::Full);
        }
        let small = bounded(crop);
        let jpeg = encode_example(&small).map_err(AddRefused::Io)?;
        let example = Example {
            id: index.next_id,
            label,
            added_ms: now_ms,
            from: from.chars().filter(|c| !c.is_control()).take(MAX_FROM_CHARS).collect(),
        };
        crate::evidence::write_atomically(&self.image_path(example.id), &jpeg).map_err(AddRefused::Io)?;
        index.next_id += 1;
        index.examples.push(example.clone());
        self.save_index(&index).map_err(AddRefused::Io)?;
        Ok(example)
    }

    /// The JPEG of example `id` (None: no such example).
    pub fn image(&self, id: u64) -> anyhow::Result<Option<Vec<u8>>> {
        if !self.index()?.examples.iter().any(|e| e.id == id) {
            return Ok(None);
        }
        read_bounded(&self.image_path(id)).map(Some)
    }

    /// Deletes example `id`; false when there was none. The model stays until retrained.
    pub fn delete(&self, id: u64) -> anyhow::Result<bool> {
        let mut index = self.index()?;
        let before = index.examples.len();
        index.examples.retain(|e| e.id != id);
        if index.examples.len() == before {
            return Ok(false);
        }
        self.save_index(&index)?;
        match std::fs::remove_file(self.image_path(id)) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(error).with_context(|| format!("cannot delete {}", self.image_path(id).display()))
            }
            _ => Ok(true),
        }
    }

    /// Every example's crop with its label, oldest first.
    pub fn crops(&self) -> anyhow::Result<Vec<(image::RgbImage, Label)>> {
        let index = self.index()?;
        let mut crops = Vec::with_capacity(index.examples.len());
        for example in &index.examples {
            let bytes = read_bounded(&self.image_path(example.id))?;
            let picture = image::load_from_memory_with_format(&bytes, image::ImageFormat::Jpeg)
                .with_context(|| format!("example {} of {}", example.id, self.dir.display()))?
                .to_rgb8();
            crops.push((picture, example.label));
        }
        Ok(crops)
    }

    /// Trains the zone's model on its examples (features from `embed`), starting from
    /// `generic`; writes it and records the training. Needs one example of each state.
    pub fn train(
        &self,
        generic: &BinStateModel,
        l2: f64,
        now_ms: i64,
        mut embed: impl FnMut(&image::RgbImage) -> anyhow::Result<Vec<f32>>,
    ) -> anyhow::Result<(BinStateModel, Training)> {
        let started = std::time::Instant::now();
        let crops = self.crops()?;
        let overflowing = crops.iter().filter(|(_, l)| l.overflowing()).count();
        if overflowing == 0 || overflowing == crops.len() {
            bail!(
                "training needs at least one \"normal\" and one \"overflowing\" example ({} normal, {overflowing} overflowing)",
                crops.len() - overflowing
            );
        }
        let mut examples = Vec::with_capacity(crops.len());
        let mut listing = String::new();
        for (index, (crop, label)) in crops.iter().enumerate() {
            let embedding = embed(crop)?;
            examples.push((ViewFeatures::new(&embedding, crop), label.overflowing()));
            listing.push_str(&format!("{index} {label:?} {}\n", crop.width()));
        }
        let sha = super::embedder::hex_sha256(listing.as_bytes());
        let (model, accuracy) = super::train_zone(&examples, generic, l2, &sha);
        let training = Training {
            trained_ms: now_ms,
            examples: crops.len(),
            overflowing,
            accuracy,
            seconds: (started.elapsed().as_secs_f64() * 100.0).round() / 100.0,
        };
        crate::evidence::write_atomically(&self.model_path(), model.to_json().as_bytes())?;
        let mut index = self.index()?;
        index.trained = Some(training.clone());
        self.save_index(&index)?;
        Ok((model, training))
    }

    /// Removes the learned model (the zone goes back to the generic one); false when none.
    pub fn forget_model(&self) -> anyhow::Result<bool> {
        let mut index = self.index()?;
        index.trained = None;
        if self.dir.is_dir() {
            self.save_index(&index)?;
        }
        match std::fs::remove_file(self.model_path()) {
            Ok(()) => Ok(true),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(false),
            Err(error) => Err(error).with_context(|| format!("cannot delete {}", self.model_path().display())),
        }
    }
}

/// The crop with its longest side at most [`MAX_EXAMPLE_SIDE_PX`].
fn bounded(crop: &image::RgbImage) -> image::RgbImage {
    let longest = crop.width().max(crop.height());
    if longest <= MAX_EXAMPLE_SIDE_PX {
        return crop.clone();
    }
    let scale = MAX_EXAMPLE_SIDE_PX as f32 / longest as f32;
    let width = ((crop.width() as f32 * scale).round() as u32).max(1);
    let height = ((crop.height() as f32 * scale).round() as u32).max(1);
    image::imageops::thumbnail(crop, width, height)
}

/// Examples are kept at a higher quality than snapshots: the model reads them again.
fn encode_example(picture: &image::RgbImage) -> anyhow::Result<Vec<u8>> {
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 92)
        .encode_image(picture)
        .context("encode the example")?;
    Ok(jpeg)
}

fn read_bounded(path: &Path) -> anyhow::Result<Vec<u8>> {
    let size = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?.len();
    if size > MAX_EXAMPLE_FILE_BYTES {
        bail!("{} is larger than {MAX_EXAMPLE_FILE_BYTES} bytes", path.display());
    }
    std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn picture(width: u32, height: u32, shade: u8) -> image::RgbImage {
        image::RgbImage::from_fn(width, height, |x, y| image::Rgb([shade, (x % 200) as u8, (y % 200) as u8]))
    }

    #[test]
    fn examples_are_added_listed_read_and_deleted_with_ids_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let store = ZoneStore::open(dir.path(), "gate-3", "bins").unwrap();
        assert_eq!(store.index().unwrap(), Index::default());
        let first = store.add(&picture(900, 300, 10), Label::Normal, "live frame 1", false, 1_000).unwrap();
        let second = store.add(&picture(40, 30, 200), Label::Overflowing, "incident\nx", false, 2_000).unwrap();
        assert_eq!((first.id, second.id), (0, 1));
        assert_eq!(second.from, "incidentx", "control characters are dropped");
        let index = store.index().unwrap();
        assert_eq!(index.examples, vec![first.clone(), second.clone()]);
        assert_eq!(index.counts(), (1, 1));
        let crops = store.crops().unwrap();
        assert_eq!((crops[0].0.width(), crops[0].0.height()), (MAX_EXAMPLE_SIDE_PX, 149), "scaled down");
        assert_eq!((crops[1].0.width(), crops[1].0.height()), (40, 30), "small crops kept as they are");
        assert!(store.image(1).unwrap().is_some_and(|jpeg| jpeg.starts_with(&[0xFF, 0xD8])));
        assert!(store.image(7).unwrap().is_none());
        assert!(store.delete(0).unwrap());
        assert!(!store.delete(0).unwrap());
        assert!(store.image(0).unwrap().is_none());
        let third = store.add(&picture(40, 30, 90), Label::Normal, "live", false, 3_000).unwrap();
        assert_eq!(third.id, 2, "ids are never reused");
    }

    #[test]
    fn a_full_zone_refuses_more_examples() {
        let dir = tempfile::tempdir().unwrap();
        let store = ZoneStore::open(dir.path(), "a", "b").unwrap();
        let tiny = picture(8, 8, 1);
        for _ in 0..MAX_EXAMPLES_PER_ZONE {
            store.add(&tiny, Label::Normal, "", false, 0).unwrap();
        }
        assert!(matches!(store.add(&tiny, Label::Normal, "", false, 0), Err(AddRefused::Full)));
        let other = ZoneStore::open(dir.path(), "a", "c").unwrap();
        other.add(&tiny, Label::Normal, "incident x", true, 0).unwrap();
        assert!(matches!(other.add(&tiny, Label::Normal, "incident x", true, 0), Err(AddRefused::Duplicate)));
    }

    #[test]
    fn ids_that_are_not_plain_names_never_become_paths() {
        let dir = tempfile::tempdir().unwrap();
        for (camera, zone) in [("..", "bins"), ("a/b", "bins"), ("cam", ""), ("cam", "../x")] {
            assert!(ZoneStore::open(dir.path(), camera, zone).is_err(), "{camera:?} {zone:?}");
        }
        assert!(learned_model_path(dir.path(), "cam", "..").is_none());
    }

    #[test]
    fn training_needs_both_states_and_writes_a_model_the_zone_reads() {
        let dir = tempfile::tempdir().unwrap();
        let store = ZoneStore::open(dir.path(), "cam", "bins").unwrap();
        // A stand-in embedder: bright crops point one way, dark ones the other.
        let embed = |crop: &image::RgbImage| {
            let bright = crop.get_pixel(0, 0).0[0] > 100;
            Ok((0..16).map(|i| if (i < 8) == bright { 1.0 } else { 0.1 }).collect::<Vec<f32>>())
        };
        let generic_views: Vec<ViewFeatures> =
            [picture(8, 8, 10), picture(8, 8, 200)].iter().map(|p| ViewFeatures::new(&embed(p).unwrap(), p)).collect();
        // The generic model reads bright as normal; this zone says the opposite.
        let generic = super::super::train(
            &[(&generic_views[0], true), (&generic_views[1], false)],
            super::super::FeatureSet::Embedding,
            0.01,
            None,
            "e",
            "t",
            "generic",
        );
        store.add(&picture(8, 8, 200), Label::Overflowing, "", false, 0).unwrap();
        assert!(store.train(&generic, 0.03, 5, embed).unwrap_err().to_string().contains("at least one"));
        for shade in [210, 220] {
            store.add(&picture(8, 8, shade), Label::Overflowing, "", false, 0).unwrap();
        }
        for shade in [10, 20, 30] {
            store.add(&picture(8, 8, shade), Label::Normal, "", false, 0).unwrap();
        }
        let (model, training) = store.train(&generic, 0.03, 5, embed).unwrap();
        assert_eq!((training.examples, training.overflowing, training.trained_ms), (6, 3, 5));
        assert_eq!(training.accuracy, Some(1.0));
        let bright = picture(8, 8, 230);
        assert!(model.probability(&ViewFeatures::new(&embed(&bright).unwrap(), &bright)) > 0.5);
        assert_eq!(BinStateModel::load(&store.model_path()).unwrap(), model);
        assert_eq!(store.index().unwrap().trained, Some(training));
        assert!(store.forget_model().unwrap());
        assert!(!store.model_path().exists() && store.index().unwrap().trained.is_none());
        assert!(!store.forget_model().unwrap());
    }
}
