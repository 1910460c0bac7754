//! The bin-state model with the real embedder (MobileNetV2 through ONNX Runtime) on real
//! photos of collection points (`../shared/media/bins`): the `gateway bin-state` contract,
//! `gateway bin-train`'s determinism, check-config on zone models, and incidents opened and
//! cleared by the model source through the engine. Needs `models/bin_state_default.json`,
//! which scripts/setup makes (`gateway bin-train`).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use gateway::engine::{CameraEngine, EngineFrame};
use serde_json::Value;

use crate::support::{project_root, require_runtime, shared_media};

/// A clearly tidy and a clearly overflowing photo of the development set.
const TIDY: &str = "bins/dordns_016_normal.jpg";
const OVERFLOWING: &str = "bins/dordns_003_overflowing.jpg";

fn gateway(args: &[&str], files: &[&Path]) -> Output {
    require_runtime();
    assert!(
        project_root().join("models/bin_state_default.json").is_file(),
        "models/bin_state_default.json is missing: run scripts/setup (it runs `gateway bin-train`)"
    );
    Command::new(env!("CARGO_BIN_EXE_gateway")).args(args).args(files).output().unwrap()
}

fn truncated_copy(dir: &Path) -> PathBuf {
    let bytes = std::fs::read(shared_media(OVERFLOWING)).unwrap();
    let path = dir.join("truncated.jpg");
    std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    path
}

#[test]
fn bin_state_prints_one_json_line_per_readable_image_and_reports_the_others_on_stderr() {
    let dir = tempfile::tempdir().unwrap();
    let truncated = truncated_copy(dir.path());
    let missing = dir.path().join("missing.jpg");
    let (tidy, overflowing) = (shared_media(TIDY), shared_media(OVERFLOWING));
    let output = gateway(&["bin-state", "--json"], &[&truncated, &tidy, &missing, &overflowing]);
    assert_eq!(output.status.code(), Some(1), "an unreadable image makes the exit non-zero");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<Value> = stdout.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    for (line, file, state) in [(&lines[0], &tidy, "normal"), (&lines[1], &overflowing, "overflowing")] {
        let object = line.as_object().unwrap();
        let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(keys, ["file", "score", "state"], "{line}");
        assert_eq!(line["file"], file.display().to_string());
        assert_eq!(line["state"], state, "{line}");
        let score = line["score"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&score), "{line}");
        assert_eq!(score >= 0.5, state == "overflowing", "{line}");
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("truncated.jpg") && stderr.contains("missing.jpg"), "{stderr}");

    // Without --json: one readable line per image, exit 0 when all were read.
    let output = gateway(&["bin-state"], &[&tidy]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.starts_with(&format!("{}: normal (score 0.", tidy.display())), "{text}");
}

fn config_text(zone_extra: &str) -> String {
    format!(
        r#"[detector]
model = {:?}

[cameras.yard]
url = "rtsp://192.0.2.1/stream"

[[cameras.yard.zones]]
id = "bins"
kind = "bin_area"
polygon = [[0.0, 0.0], [0.5, 0.0], [0.5, 0.5], [0.0, 0.5]]
raise_after_ms = 120000
clear_after_ms = 120000
{zone_extra}"#,
        project_root().join("models/yolox_nano.toml")
    )
}

#[test]
fn a_zone_reads_its_crop_of_the_frame_with_its_model() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("bins.toml");
    std::fs::write(&config, config_text("")).unwrap();
    // The photo in the top-left quarter of a grey frame twice its size: the zone's crop is
    // exactly the photo, so the zone reads what the generic reading of the photo gives.
    let photo = image::open(shared_media(OVERFLOWING)).unwrap().to_rgb8();
    let mut frame = image::RgbImage::from_pixel(photo.width() * 2, photo.height() * 2, image::Rgb([128, 128, 128]));
    image::imageops::replace(&mut frame, &photo, 0, 0);
    let frame_path = dir.path().join("frame.png");
    frame.save(&frame_path).unwrap();
    let alone = gateway(&["bin-state", "--json"], &[&shared_media(OVERFLOWING)]);
    let zone = gateway(
        &["bin-state", "--json", "--config", config.to_str().unwrap(), "--camera", "yard", "--zone", "bins"],
        &[&frame_path],
    );
    assert!(zone.status.success(), "{}", String::from_utf8_lossy(&zone.stderr));
    let score = |output: &Output| {
        let line: Value = serde_json::from_str(String::from_utf8_lossy(&output.stdout).trim()).unwrap();
        line["score"].as_f64().unwrap()
    };
    assert_eq!(score(&zone), score(&alone));

    // An unknown zone is a usage error.
    let output = gateway(
        &["bin-state", "--config", config.to_str().unwrap(), "--camera", "yard", "--zone", "nope"],
        &[&frame_path],
    );
    assert_eq!(output.status.code(), Some(64));
}

#[test]
fn check_config_refuses_a_zone_model_made_with_another_embedder_or_unreadable() {
    let dir = tempfile::tempdir().unwrap();
    let default = std::fs::read_to_string(project_root().join("models/bin_state_default.json")).unwrap();
    let mut other: Value = serde_json::from_str(&default).unwrap();
    other["embedder_sha256"] = Value::String("0".repeat(64));
    std::fs::write(dir.path().join("other.json"), other.to_string()).unwrap();
    std::fs::write(dir.path().join("broken.json"), "{\"format\":").unwrap();
    std::fs::write(dir.path().join("own.json"), &default).unwrap();
    let config = dir.path().join("bins.toml");
    for (model, expected_in_stderr) in [("other.json", "embedder"), ("broken.json", "invalid bin-state model")] {
        std::fs::write(&config, config_text(&format!("model = {model:?}\n"))).unwrap();
        let output = gateway(&["check-config"], &[&config]);
        assert_eq!(output.status.code(), Some(64), "{model}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(expected_in_stderr), "{model}: {stderr}");
    }
    std::fs::write(&config, config_text("model = \"own.json\"\n")).unwrap();
    let output = gateway(&["check-config"], &[&config]);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn bin_train_gives_the_same_bytes_from_the_same_set_skips_an_up_to_date_model_and_makes_zone_models() {
    let dir = tempfile::tempdir().unwrap();
    let set = dir.path().join("set");
    std::fs::create_dir(&set).unwrap();
    let mut labels = String::from("file,label,scene_id,viewpoint\n");
    for (file, label) in [
        ("dordns_003_overflowing.jpg", "overflowing"),
        ("dordns_016_normal.jpg", "normal"),
        ("abhisigningin_001_overflowing.jpg", "overflowing"),
        ("abhisigningin_002_normal.jpg", "normal"),
    ] {
        std::fs::copy(shared_media(&format!("bins/{file}")), set.join(file)).unwrap();
        labels.push_str(&format!("{file},{label},{file},street\n"));
    }
    std::fs::write(set.join("labels.csv"), labels).unwrap();
    let train = |output: &Path| {
        gateway(&["bin-train", "--dataset", set.to_str().unwrap(), "--output", output.to_str().unwrap()], &[])
    };
    let (first, second) = (dir.path().join("first.json"), dir.path().join("second.json"));
    for output in [&first, &second] {
        let result = train(output);
        assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    }
    assert_eq!(std::fs::read(&first).unwrap(), std::fs::read(&second).unwrap(), "same set, same bytes");
    let model: Value = serde_json::from_slice(&std::fs::read(&first).unwrap()).unwrap();
    assert_eq!(model["training_sha256"].as_str().unwrap().len(), 64);
    let again = train(&first);
    assert!(String::from_utf8_lossy(&again.stdout).contains("up to date"));

    // The same set as one zone's examples: a zone model from the generic default, which the
    // zone's `model` key takes.
    let zone_model = dir.path().join("zone.json");
    let zone = gateway(
        &["bin-train", "--zone", "--dataset", set.to_str().unwrap(), "--output", zone_model.to_str().unwrap()],
        &[],
    );
    assert!(zone.status.success(), "{}", String::from_utf8_lossy(&zone.stderr));
    assert!(String::from_utf8_lossy(&zone.stdout).contains("leave-one-out balanced accuracy"));
    let config = dir.path().join("zone.toml");
    std::fs::write(&config, config_text("model = \"zone.json\"\n")).unwrap();
    let check = gateway(&["check-config"], &[&config]);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
}

/// A camera frame as the gateway analyses it: the photo scaled to 416 pixels wide.
fn frame(relative: &str, gain: f32) -> image::RgbImage {
    let photo = image::open(shared_media(relative)).unwrap().to_rgb8();
    let height = photo.height() * 416 / photo.width();
    let scaled = image::imageops::resize(&photo, 416, height, image::imageops::FilterType::Triangle);
    gateway::bin_state::with_gain(&scaled, gain)
}

/// Runs `(picture, from_ms, to_ms)` segments, one frame every 10 s, through the engine with
/// the zone's real model; returns (event, t_ms).
fn run_engine(segments: &[(&image::RgbImage, i64, i64)]) -> Vec<(String, i64)> {
    require_runtime();
    let dir = tempfile::tempdir().unwrap();
    let text = config_text("").replace(
        "[[0.0, 0.0], [0.5, 0.0], [0.5, 0.5], [0.0, 0.5]]",
        "[[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]",
    );
    let config = gateway::config::parse(&text, dir.path()).unwrap_or_else(|p| panic!("{p}"));
    let camera = &config.cameras[0];
    let mut classifiers = gateway::cli::ZoneClassifiers::load(camera, &config.detector).unwrap();
    let mut engine = CameraEngine::new(camera, &[], &[]);
    let mut events = Vec::new();
    for (picture, from_ms, to_ms) in segments {
        let readings = classifiers.read(picture);
        assert_eq!(readings.len(), 1);
        for now_ms in (*from_ms..*to_ms).step_by(10_000) {
            let frame = EngineFrame {
                now_ms,
                observations: Vec::new(),
                picture: Some(picture),
                frame_aspect: 16.0 / 9.0,
                zone_readings: &readings,
                poses: &[],
            };
            events.extend(engine.update(frame).into_iter().map(|e| (format!("{:?}", e.event).to_lowercase(), e.t_ms)));
        }
    }
    events
}

#[test]
fn rubbish_that_appears_stays_and_is_cleared_opens_and_clears_one_incident_with_the_model() {
    let (tidy, overflowing) = (frame(TIDY, 1.0), frame(OVERFLOWING, 1.0));
    let events = run_engine(&[(&tidy, 0, 60_000), (&overflowing, 60_000, 400_000), (&tidy, 400_000, 700_000)]);
    assert_eq!(events, [("opened".to_string(), 180_000), ("cleared".to_string(), 510_000)]);
}

#[test]
fn a_tidy_bin_area_under_flicker_and_at_dusk_raises_nothing_with_the_model() {
    let (day, flicker, dusk) = (frame(TIDY, 1.0), frame(TIDY, 0.55), frame(TIDY, 0.4));
    let mut segments = Vec::new();
    for minute in 0..10 {
        let picture = if minute % 2 == 0 { &day } else { &flicker };
        segments.push((picture, minute * 60_000, (minute + 1) * 60_000));
    }
    segments.push((&dusk, 600_000, 1_800_000));
    assert_eq!(run_engine(&segments), []);
}
