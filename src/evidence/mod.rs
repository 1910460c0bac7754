//! Evidence and incident state on disk (the shell around the pure incident core):
//! - per `opened`/`updated` event, a JPEG of the analysed frame with the zone (yellow) and the
//!   supporting boxes (red) drawn, a JPEG crop of the supporting objects (unannotated, with a
//!   margin; the zone's bounds when there are no objects, as for bin areas), and a JSON sidecar
//!   with the event, the rule and its parameters, the model's name and version, and the
//!   camera's place labels;
//! - reading a camera's incident book as older versions kept it (`incidents/<camera>.json`),
//!   for its move into the outbox, where it is now committed with its events.
//!
//! Snapshots are at the model's view resolution (416 px wide for YOLOX-Nano).

pub mod clips;
pub mod mux;
pub mod pixelate;
pub mod privacy;
pub mod retention;

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use image::{Rgb, RgbImage};
use serde::Serialize;

use crate::config::CameraConfig;
use crate::geometry::{BoxNorm, Polygon};
use crate::incident::{IncidentBook, IncidentEvent};

/// Mode of the directories the gateway creates for its state and evidence: snapshots show
/// faces, so other local users get nothing (the systemd unit adds `UMask=0027` and a 0700
/// `StateDirectory`; this holds outside systemd too, issue 11).
pub const PRIVATE_DIR_MODE: u32 = 0o750;
/// Mode of the files written there.
pub const PRIVATE_FILE_MODE: u32 = 0o640;

/// Creates `directory` and its missing parents with [`PRIVATE_DIR_MODE`] (an existing one is
/// left as it is).
pub fn create_private_dir(directory: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(PRIVATE_DIR_MODE).create(directory)
}

/// Writes `bytes` to `path` atomically: temporary file, fsync, rename, fsync of the directory.
/// The file gets [`PRIVATE_FILE_MODE`], a created directory [`PRIVATE_DIR_MODE`].
pub fn write_atomically(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let directory = path.parent().context("path has no directory")?;
    create_private_dir(directory).with_context(|| format!("create {}", directory.display()))?;
    let temporary = path.with_extension("tmp");
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(PRIVATE_FILE_MODE)
        .open(&temporary)
        .with_context(|| format!("create {}", temporary.display()))?;
    // A temporary left by a crash keeps its old mode through `open`: set it.
    file.set_permissions(std::fs::Permissions::from_mode(PRIVATE_FILE_MODE))
        .with_context(|| format!("chmod {}", temporary.display()))?;
    file.write_all(bytes).and_then(|()| file.sync_all()).with_context(|| format!("write {}", temporary.display()))?;
    std::fs::rename(&temporary, path).with_context(|| format!("rename to {}", path.display()))?;
    std::fs::File::open(directory)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("sync {}", directory.display()))?;
    Ok(())
}

/// Largest picture file `read_picture` reads, in bytes.
pub const MAX_PICTURE_BYTES: u64 = 64 * 1024 * 1024;
/// Largest picture side `read_picture` decodes, in pixels.
pub const MAX_PICTURE_SIDE_PX: u32 = 16384;

/// Reads a PNG or JPEG picture from a file made by someone else (`gateway detect` inputs,
/// reference pictures): a regular file of at most [`MAX_PICTURE_BYTES`], at most
/// [`MAX_PICTURE_SIDE_PX`] a side, decoded completely. A JPEG cut short is an error, although
/// the decoder would fill the missing part with grey (issue 11: "0 detections" on a truncated
/// file). Errors do not name the file: callers add it.
pub fn read_picture(path: &Path) -> anyhow::Result<image::DynamicImage> {
    let metadata = std::fs::metadata(path)?;
    anyhow::ensure!(metadata.is_file(), "not a regular file");
    anyhow::ensure!(metadata.len() <= MAX_PICTURE_BYTES, "larger than {} MiB", MAX_PICTURE_BYTES / (1024 * 1024));
    let bytes = std::fs::read(path)?;
    let format = image::guess_format(&bytes).context("not a picture")?;
    match format {
        image::ImageFormat::Jpeg => {
            anyhow::ensure!(jpeg_is_complete(&bytes), "a truncated JPEG (no end-of-image marker after its last scan)")
        }
        image::ImageFormat::Png => {}
        other => anyhow::bail!("a {other:?} picture; expected PNG or JPEG"),
    }
    let mut reader = image::ImageReader::with_format(std::io::Cursor::new(&bytes), format);
    let mut limits = image::Limits::default();
    limits.max_image_width = Some(MAX_PICTURE_SIDE_PX);
    limits.max_image_height = Some(MAX_PICTURE_SIDE_PX);
    reader.limits(limits);
    Ok(reader.decode()?)
}

/// Whether a JPEG has an end-of-image marker after its last start-of-scan. Inside entropy-coded
/// data every 0xFF is stuffed (0xFF 0x00), so `FF D9` there is the real marker; an embedded
/// EXIF thumbnail's markers all come before the main image's scans.
pub fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let last = |marker: u8| bytes.windows(2).rposition(|pair| pair == [0xFF, marker]);
    match (last(0xDA), last(0xD9)) {
        (Some(scan), Some(end)) => end > scan,
        _ => false,
    }
}

fn book_path(state_dir: &Path, camera: &str) -> PathBuf {
    state_dir.join("incidents").join(format!("{camera}.json"))
}

/// A camera's incident book as found at start.
#[derive(Debug)]
pub enum SavedBook {
    /// None saved: the camera starts afresh.
    None,
    /// The book saved before the restart.
    Restored(IncidentBook),
    /// The file could not be read as a book. It was moved aside (never deleted: it may hold
    /// open incidents an operator wants to see) and the camera starts afresh; `reason` says why.
    Quarantined {
        /// Where the unreadable file now is.
        moved_to: PathBuf,
        /// Why it could not be read.
        reason: String,
    },
}

/// Loads a camera's incident book saved before a restart. A corrupt file is state, not
/// config: it is moved aside to `<camera>.json.corrupt-<unix_ms>` rather than stopping the
/// gateway (an exit would leave every other camera unwatched). Only an I/O error other than
/// "not found" (permissions, a failing disk) is an error.
pub fn load_book(state_dir: &Path, camera: &str, now_ms: i64) -> anyhow::Result<SavedBook> {
    let path = book_path(state_dir, camera);
    let bytes = match std::fs::read(&path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(SavedBook::None),
        Err(error) => return Err(error).with_context(|| format!("read {}", path.display())),
    };
    match serde_json::from_slice(&bytes) {
        Ok(book) => Ok(SavedBook::Restored(book)),
        Err(error) => {
            let moved_to = path.with_file_name(format!("{camera}.json.corrupt-{now_ms}"));
            std::fs::rename(&path, &moved_to)
                .with_context(|| format!("move the corrupt incident state {} aside", path.display()))?;
            Ok(SavedBook::Quarantined { moved_to, reason: error.to_string() })
        }
    }
}

#[derive(Serialize)]
struct Sidecar<'a> {
    event: &'a IncidentEvent,
    street: &'a str,
    community: &'a str,
    grid: &'a str,
    steward: &'a str,
    rule: String,
    model: &'a str,
    model_version: &'a str,
    snapshot: String,
    crop: String,
    /// The clip being recorded for this event (issue 16), once written beside it.
    #[serde(skip_serializing_if = "Option::is_none")]
    clip: Option<String>,
    /// The unblurred snapshot, kept on the gateway, when bystanders were blurred in `snapshot`.
    #[serde(skip_serializing_if = "Option::is_none")]
    original: Option<String>,
    /// People pixelated in `snapshot` (not the incident's subject).
    bystanders_blurred: usize,
}

/// What an event's evidence holds besides its picture (issue 16).
#[derive(Debug, Clone, Default)]
pub struct EventExtras {
    /// The file name of the clip being recorded for it, listed in the sidecar.
    pub clip: Option<String>,
    /// People in the picture who are not the incident's subject (normalised boxes), pixelated
    /// in the snapshots that leave the gateway; empty when the zone kind does not blur.
    pub bystanders: Vec<BoxNorm>,
}

/// Writes the snapshot and sidecar of an event; returns the JPEG's path.
pub fn write_evidence(
    state_dir: &Path,
    camera: &CameraConfig,
    event: &IncidentEvent,
    picture: &RgbImage,
    model: &crate::detect::model::ModelManifest,
    extras: &EventExtras,
) -> anyhow::Result<PathBuf> {
    let zone = camera.zones.iter().find(|z| z.id == event.zone);
    let stem = stem(event);
    let directory = state_dir.join("evidence");
    let jpeg_path = directory.join(format!("{stem}.jpg"));
    let original = write_shared_and_original(&jpeg_path, picture, camera, event, &extras.bystanders)?;
    let region = crop_region(event, zone.map(|z| &z.polygon));
    let crop_path = directory.join(format!("{stem}-crop.jpg"));
    if let Some(crop) = crop(picture, &region) {
        write_atomically(&crop_path, &encode_jpeg(&crop)?)?;
    }
    let sidecar = Sidecar {
        event,
        street: &camera.place.street,
        community: &camera.place.community,
        grid: &camera.place.grid,
        steward: &camera.place.steward,
        rule: zone.map(|z| format!("{:?} {:?}", z.rule, z.lifecycle)).unwrap_or_default(),
        model: &model.name,
        model_version: &model.version,
        snapshot: jpeg_path.file_name().unwrap_or_default().to_string_lossy().into_owned(),
        crop: crop_path.file_name().unwrap_or_default().to_string_lossy().into_owned(),
        clip: extras.clip.clone(),
        original: original.and_then(|path| path.file_name().map(|name| name.to_string_lossy().into_owned())),
        bystanders_blurred: extras.bystanders.len(),
    };
    write_atomically(
        &directory.join(format!("{stem}.json")),
        &serde_json::to_vec_pretty(&sidecar).expect("sidecar serialises"),
    )?;
    Ok(jpeg_path)
}

fn stem(event: &IncidentEvent) -> String {
    format!("{}-{}", retention::sanitised(&event.incident_id), event.seq)
}

/// The picture with the event's zone (yellow) and supporting boxes (red) drawn; coordinates
/// are normalised, so any resolution of the same view works.
fn annotate(picture: &RgbImage, camera: &CameraConfig, event: &IncidentEvent) -> RgbImage {
    let mut snapshot = picture.clone();
    if let Some(zone) = camera.zones.iter().find(|z| z.id == event.zone) {
        draw_polygon(&mut snapshot, &zone.polygon, Rgb([255, 220, 0]));
    }
    for object in &event.objects {
        draw_box(&mut snapshot, &object.bbox, Rgb([230, 30, 30]));
    }
    snapshot
}

/// Writes the main-stream snapshot of an event (`<stem>-main.jpg`), annotated like the
/// analysed one; returns its path.
pub fn write_main_snapshot(
    state_dir: &Path,
    camera: &CameraConfig,
    event: &IncidentEvent,
    picture: &RgbImage,
    bystanders: &[BoxNorm],
) -> anyhow::Result<PathBuf> {
    let path = state_dir.join("evidence").join(format!("{}-main.jpg", stem(event)));
    write_shared_and_original(&path, picture, camera, event, bystanders)?;
    Ok(path)
}

/// Writes the annotated snapshot that may leave the gateway to `path`, with `bystanders`
/// pixelated; when there are any, the unblurred one goes beside it (`-original.jpg`), for the
/// gateway's disk only. Returns the original's path, if one was written.
fn write_shared_and_original(
    path: &Path,
    picture: &RgbImage,
    camera: &CameraConfig,
    event: &IncidentEvent,
    bystanders: &[BoxNorm],
) -> anyhow::Result<Option<PathBuf>> {
    if bystanders.is_empty() {
        write_atomically(path, &encode_jpeg(&annotate(picture, camera, event))?)?;
        return Ok(None);
    }
    let stem = path.file_stem().unwrap_or_default().to_string_lossy().into_owned();
    let original = path.with_file_name(format!("{stem}-original.jpg"));
    write_atomically(&original, &encode_jpeg(&annotate(picture, camera, event))?)?;
    let started = std::time::Instant::now();
    let mut blurred = picture.clone();
    privacy::pixelate_people(&mut blurred, bystanders);
    privacy::BLUR_STATS.record(started.elapsed());
    write_atomically(path, &encode_jpeg(&annotate(&blurred, camera, event))?)?;
    Ok(Some(original))
}

/// Encodes a picture as a JPEG (quality as for snapshots).
pub fn encode_jpeg(image: &RgbImage) -> anyhow::Result<Vec<u8>> {
    let mut jpeg = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut jpeg, 85).encode_image(image).context("encode JPEG")?;
    Ok(jpeg)
}

/// The union of the supporting objects' boxes with a 25% margin, or the zone's bounds.
fn crop_region(event: &IncidentEvent, zone: Option<&Polygon>) -> BoxNorm {
    let union = event.objects.iter().map(|o| o.bbox).reduce(|a, b| BoxNorm {
        x1: a.x1.min(b.x1),
        y1: a.y1.min(b.y1),
        x2: a.x2.max(b.x2),
        y2: a.y2.max(b.y2),
    });
    match union {
        Some(b) => {
            let (mx, my) = (b.width() * 0.25, b.height() * 0.25);
            BoxNorm { x1: b.x1 - mx, y1: b.y1 - my, x2: b.x2 + mx, y2: b.y2 + my }
        }
        None => zone.map(Polygon::bounds).unwrap_or(BoxNorm { x1: 0.0, y1: 0.0, x2: 1.0, y2: 1.0 }),
    }
}

fn crop(image: &RgbImage, region: &BoxNorm) -> Option<RgbImage> {
    let (width, height) = (image.width() as f32, image.height() as f32);
    let x1 = (region.x1.clamp(0.0, 1.0) * width) as u32;
    let y1 = (region.y1.clamp(0.0, 1.0) * height) as u32;
    let x2 = (region.x2.clamp(0.0, 1.0) * width).ceil() as u32;
    let y2 = (region.y2.clamp(0.0, 1.0) * height).ceil() as u32;
    (x2 > x1 && y2 > y1).then(|| image::imageops::crop_imm(image, x1, y1, x2 - x1, y2 - y1).to_image())
}

fn draw_line(image: &mut RgbImage, from: (f32, f32), to: (f32, f32), colour: Rgb<u8>) {
    let (width, height) = (image.width() as f32, image.height() as f32);
    let (x0, y0, x1, y1) = (from.0 * width, from.1 * height, to.0 * width, to.1 * height);
    let steps = (x1 - x0).abs().max((y1 - y0).abs()).ceil().max(1.0) as usize;
    for step in 0..=steps {
        let t = step as f32 / steps as f32;
        let (x, y) = (x0 + (x1 - x0) * t, y0 + (y1 - y0) * t);
        for (dx, dy) in [(0, 0), (1, 0), (0, 1)] {
            let (px, py) = (x as i64 + dx, y as i64 + dy);
            if px >= 0 && py >= 0 && (px as u32) < image.width() && (py as u32) < image.height() {
                image.put_pixel(px as u32, py as u32, colour);
            }
        }
    }
}

fn draw_box(image: &mut RgbImage, bbox: &BoxNorm, colour: Rgb<u8>) {
    let corners = [(bbox.x1, bbox.y1), (bbox.x2, bbox.y1), (bbox.x2, bbox.y2), (bbox.x1, bbox.y2)];
    for i in 0..4 {
        draw_line(image, corners[i], corners[(i + 1) % 4], colour);
    }
}

fn draw_polygon(image: &mut RgbImage, polygon: &Polygon, colour: Rgb<u8>) {
    let points = &polygon.points;
    for i in 0..points.len() {
        let (a, b) = (points[i], points[(i + 1) % points.len()]);
        draw_line(image, (a.x, a.y), (b.x, b.y), colour);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_corrupt_book_is_moved_aside_and_a_good_one_restored() {
        let state = tempfile::tempdir().unwrap();
        assert!(matches!(load_book(state.path(), "gate-3", 1).unwrap(), SavedBook::None));
        let book = serde_json::to_vec(&IncidentBook::new("gate-3")).unwrap();
        write_atomically(&book_path(state.path(), "gate-3"), &book).unwrap();
        assert!(matches!(load_book(state.path(), "gate-3", 2).unwrap(), SavedBook::Restored(_)));
        std::fs::write(book_path(state.path(), "gate-3"), b"{\"truncated\": ").unwrap();
        match load_book(state.path(), "gate-3", 3).unwrap() {
            SavedBook::Quarantined { moved_to, reason } => {
                assert_eq!(moved_to.file_name().unwrap(), "gate-3.json.corrupt-3");
                assert_eq!(std::fs::read(&moved_to).unwrap(), b"{\"truncated\": ", "kept for the operator");
                assert!(!reason.is_empty());
            }
            other => panic!("expected quarantine, got {other:?}"),
        }
        assert!(matches!(load_book(state.path(), "gate-3", 4).unwrap(), SavedBook::None), "starts afresh");
    }

    #[test]
    fn a_truncated_jpeg_is_refused_and_a_whole_one_read() {
        let dir = tempfile::tempdir().unwrap();
        let picture = RgbImage::from_fn(64, 48, |x, y| Rgb([(x * 4) as u8, (y * 5) as u8, 90]));
        let jpeg = encode_jpeg(&picture).unwrap();
        assert!(jpeg_is_complete(&jpeg));
        let whole = dir.path().join("whole.jpg");
        std::fs::write(&whole, &jpeg).unwrap();
        assert_eq!(read_picture(&whole).unwrap().width(), 64);
        // (file, bytes, part of the error)
        let table: [(&str, Vec<u8>, &str); 4] = [
            ("half.jpg", jpeg[..jpeg.len() / 2].to_vec(), "truncated JPEG"),
            ("no-end.jpg", jpeg[..jpeg.len() - 2].to_vec(), "truncated JPEG"),
            ("text.jpg", b"just some text\n".to_vec(), "not a picture"),
            ("empty.png", Vec::new(), "not a picture"),
        ];
        for (name, bytes, expected) in table {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let error = format!("{:#}", read_picture(&path).unwrap_err());
            assert!(error.contains(expected), "{name}: {error}");
        }
        assert!(format!("{:#}", read_picture(dir.path()).unwrap_err()).contains("not a regular file"));
        assert!(read_picture(Path::new("/dev/zero")).is_err());
    }

    #[test]
    fn state_files_and_directories_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/evidence/a.jpg");
        write_atomically(&path, b"x").unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        // The umask may take bits away, never add them.
        assert_eq!(mode(&path) & !PRIVATE_FILE_MODE, 0, "file mode {:o}", mode(&path));
        for directory in [dir.path().join("state"), dir.path().join("state/evidence")] {
            assert_eq!(mode(&directory) & !PRIVATE_DIR_MODE, 0, "{} mode {:o}", directory.display(), mode(&directory));
        }
    }
}
