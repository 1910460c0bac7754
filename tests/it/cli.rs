//! The `gateway` binary's command-line contract: `detect --json`, `check-config`, `run`.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;

use crate::support::{self, config_text, project_root, shared_media};

fn gateway() -> Command {
    support::require_runtime();
    let mut command = Command::new(env!("CARGO_BIN_EXE_gateway"));
    command.current_dir(project_root());
    command
}

fn detect_json(image: &Path) -> Value {
    let output = gateway().args(["detect", "--json"]).arg(image).output().unwrap();
    assert!(output.status.success(), "detect failed: {}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line per image: {stdout}");
    serde_json::from_str(lines[0]).unwrap()
}

fn detections_of<'a>(result: &'a Value, class: &str) -> Vec<&'a Value> {
    result["detections"].as_array().unwrap().iter().filter(|d| d["class"] == class).collect()
}

#[test]
fn detect_json_finds_the_bicycle_on_the_dog_image() {
    let image = shared_media("images/yolox_assets_dog.jpg");
    let result = detect_json(&image);
    assert_eq!(result["file"], image.display().to_string());
    assert_eq!((result["width"].as_u64(), result["height"].as_u64()), (Some(768), Some(576)));
    let bicycles = detections_of(&result, "bicycle");
    assert_eq!(bicycles.len(), 1, "{result}");
    let bicycle = bicycles[0];
    assert_eq!(bicycle["class_id"], 1);
    assert!(bicycle["score"].as_f64().unwrap() >= 0.7, "{bicycle}");
    // The reference box is about [48, 132, 572, 431] (image pixels).
    let bbox: Vec<f64> = bicycle["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    for (actual, expected) in bbox.iter().zip([48.0, 132.0, 572.0, 431.0]) {
        assert!((actual - expected).abs() < 15.0, "bicycle box {bbox:?}");
    }
    assert_eq!(detections_of(&result, "dog").len(), 1);
    assert_eq!(detections_of(&result, "car").len(), 1);
}

#[test]
fn detect_json_finds_two_persons_on_the_demo_image() {
    let result = detect_json(&shared_media("images/yolox_assets_demo.png"));
    let persons = detections_of(&result, "person");
    assert_eq!(persons.len(), 2, "{result}");
    let mut scores: Vec<f64> = persons.iter().map(|p| p["score"].as_f64().unwrap()).collect();
    scores.sort_by(f64::total_cmp);
    assert!(
        (scores[0] - 0.70).abs() < 0.03 && (scores[1] - 0.79).abs() < 0.03,
        "reference scores 0.70 and 0.79: {scores:?}"
    );
}

#[test]
fn detect_reports_an_unreadable_image_and_goes_on() {
    let output = gateway()
        .args(["detect", "--json", "no/such/image.jpg"])
        .arg(shared_media("images/yolox_assets_dog.jpg"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no/such/image.jpg: cannot read image"));
    assert_eq!(String::from_utf8(output.stdout).unwrap().lines().count(), 1, "the good image is still processed");
}

/// Issue 11: a JPEG cut short decoded as grey and gave "0 detections" with exit 0.
#[test]
fn detect_reports_a_truncated_jpeg_and_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let whole = std::fs::read(shared_media("images/yolox_assets_dog.jpg")).unwrap();
    let truncated = dir.path().join("truncated.jpg");
    std::fs::write(&truncated, &whole[..whole.len() * 2 / 3]).unwrap();
    let output = gateway()
        .args(["detect", "--json"])
        .arg(&truncated)
        .arg(shared_media("images/yolox_assets_dog.jpg"))
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("truncated.jpg") && stderr.contains("truncated JPEG"), "{stderr}");
    let stdout = String::from_utf8(output.stdout).unwrap();
    assert_eq!(stdout.lines().count(), 1, "only the good image is reported on stdout: {stdout}");
    let line: Value = serde_json::from_str(stdout.trim()).unwrap();
    assert!(line["file"].as_str().unwrap().ends_with("yolox_assets_dog.jpg"), "{line}");
}

#[test]
fn calibrate_json_reports_the_cost_of_one_analysed_frame() {
    let clip = shared_media("vtest_plaza_768x576_10fps_gop20.mp4");
    let output = gateway().args(["calibrate", "--json", "--frames", "3"]).arg(&clip).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let line: Value = serde_json::from_str(String::from_utf8(output.stdout).unwrap().trim()).unwrap();
    assert_eq!(
        (line["codec"].as_str(), line["width"].as_u64(), line["frames"].as_u64()),
        (Some("h264"), Some(768), Some(3))
    );
    let part = |key: &str| line[key].as_f64().unwrap_or_else(|| panic!("{key} missing: {line}"));
    for key in ["decode_ms", "preprocess_ms", "inference_ms"] {
        assert!(part(key) > 0.0, "{key} is not positive: {line}");
    }
    let sum = part("decode_ms") + part("preprocess_ms") + part("inference_ms");
    assert!((part("total_ms") - sum).abs() < 0.01, "{line}");
    // A file that is not footage fails with the file's name, exit 1.
    let output = gateway().args(["calibrate", "no/such/clip.mp4"]).output().unwrap();
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no/such/clip.mp4"));
}

fn check_config(text: &str) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    gateway().arg("check-config").arg(&path).output().unwrap()
}

#[test]
fn invalid_config_exits_64_listing_every_problem_with_its_key_path() {
    let output = check_config(&config_text(
        r#"
[cameras.gate-3]
url = "http://10.0.0.3/stream"
[cameras.gate-4]
url = "rtsp://10.0.0.4/"
analysis_interval_ms = 0
transport = "carrier-pigeon"
"#,
    ));
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8(output.stderr).unwrap();
    for expected in [
        "cameras.gate-3.url: unsupported scheme \"http\"",
        "cameras.gate-4.analysis_interval_ms: 0 is out of range",
        "cameras.gate-4.transport: unknown transport \"carrier-pigeon\"",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in:\n{stderr}");
    }
}

#[test]
fn a_model_that_does_not_match_its_manifest_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = std::fs::read_to_string(project_root().join("models/yolox_nano.toml")).unwrap();
    // The same model with a manifest claiming another input size: the shape check must catch it.
    let wrong = manifest.replace("input_width = 416", "input_width = 640");
    std::fs::write(dir.path().join("model.toml"), wrong).unwrap();
    std::fs::copy(project_root().join("models/yolox_nano.onnx"), dir.path().join("yolox_nano.onnx")).unwrap();
    let text = format!("[detector]\nmodel = \"{}\"\n", dir.path().join("model.toml").display());
    let output = check_config(&text);
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(stderr.contains("detector.model: model input \"images\" has shape [1, 3, 416, 416]"), "{stderr}");

    // A corrupt model file: refused by its sha256 before ONNX Runtime sees it.
    std::fs::write(dir.path().join("model.toml"), &manifest).unwrap();
    std::fs::write(dir.path().join("yolox_nano.onnx"), b"not a model").unwrap();
    let output = check_config(&text);
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("wrong or corrupt file"));
}

#[test]
fn the_example_config_validates() {
    let output = gateway()
        .args(["check-config", "config/gateway.example.toml"])
        .env("GATE3_RTSP_PASSWORD", "example")
        .env("GATEWAY_MQTT_PASSWORD", "example")
        .env("GATEWAY_CONSOLE_TOKEN", "example-console-token-0123")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    // Without its password variable, the same file is refused with the key path.
    let output = gateway()
        .args(["check-config", "config/gateway.example.toml"])
        .env_remove("GATE3_RTSP_PASSWORD")
        .env("GATEWAY_MQTT_PASSWORD", "example")
        .env("GATEWAY_CONSOLE_TOKEN", "example-console-token-0123")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr)
        .contains("cameras.gate-3.password_env: environment variable GATE3_RTSP_PASSWORD is not set"));
}

#[test]
fn run_on_footage_logs_detections_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    let clip = shared_media("vtest_plaza_768x576_10fps_gop20.mp4");
    std::fs::write(&path, config_text(&format!("[cameras.plaza]\nurl = \"file:{}\"\n", clip.display()))).unwrap();
    let output = gateway()
        .args(["run", "--run-for-secs", "6", "--config"])
        .arg(&path)
        .env("GATEWAY_LOG_FORMAT", "json")
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stderr = String::from_utf8(output.stderr).unwrap();
    let analysed: Vec<Value> = stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["fields"]["message"] == "analysed")
        .collect();
    assert!(analysed.len() >= 2, "expected analysed frames in the log:\n{stderr}");
    assert!(analysed.iter().any(|event| event["fields"]["detections"].as_str().unwrap_or("").contains("person")));
    assert!(stderr.contains("gateway stopped"));
}

#[test]
fn run_refuses_a_bad_config_before_starting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, "[cameras.x]\nurl = \"rtsp://h/\"\nbogus = 1\n").unwrap();
    let output = gateway().args(["run", "--config"]).arg(&path).output().unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("cameras.x.bogus: unknown field `bogus`"));
}

/// The JSON log lines of a `gateway run` whose message is `message`.
fn log_events(stderr: &str, message: &str) -> Vec<Value> {
    stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|event| event["fields"]["message"] == message)
        .collect()
}

#[test]
fn the_live_service_raises_an_incident_with_evidence_and_keeps_it_across_a_restart() {
    let footage = crate::replay::parked_bike_clip();
    let dir = tempfile::tempdir().unwrap();
    let state_dir = dir.path().join("state");
    let path = dir.path().join("gateway.toml");
    let camera = format!(
        r#"
[cameras.example]
url = "file:{}"
grid = "lixia-07"
steward = "steward-wang"

[[cameras.example.zones]]
id = "pavement"
kind = "no_parking"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
dwell_ms = 4000
clear_after_ms = 60000
"#,
        footage.display()
    );
    std::fs::write(&path, crate::support::config_text_in(&state_dir, &camera)).unwrap();
    let run = |seconds: &str| {
        let output = gateway()
            .args(["run", "--run-for-secs", seconds, "--config"])
            .arg(&path)
            .env("GATEWAY_LOG_FORMAT", "json")
            .output()
            .unwrap();
        let stderr = String::from_utf8(output.stderr).unwrap();
        assert!(output.status.success(), "{stderr}");
        stderr
    };

    let first = run("10");
    let incidents = log_events(&first, "incident");
    assert_eq!(incidents.len(), 1, "one incident event expected:\n{first}");
    let fields = &incidents[0]["fields"];
    assert_eq!(fields["event"], "Opened");
    assert_eq!(fields["kind"], "misparked_bike");
    assert_eq!(fields["grid"], "lixia-07");
    let snapshot = Path::new(fields["snapshot"].as_str().unwrap());
    let jpeg = std::fs::read(snapshot).expect("snapshot written");
    assert_eq!(&jpeg[..2], &[0xFF, 0xD8], "a JPEG");
    let sidecar: Value = serde_json::from_slice(&std::fs::read(snapshot.with_extension("json")).unwrap()).unwrap();
    assert_eq!(sidecar["steward"], "steward-wang");
    assert_eq!(sidecar["model"], "yolox_nano");
    assert_eq!(sidecar["event"]["seq"], 1);
    let crop = image::open(snapshot.parent().unwrap().join(sidecar["crop"].as_str().unwrap())).expect("crop written");
    assert!(crop.width() < 416 && crop.width() > 20, "a crop around the bike, not the frame: {}", crop.width());
    let incident_id = fields["incident_id"].as_str().unwrap().to_string();

    // Restart: the open incident is restored, not opened again.
    let second = run("8");
    assert_eq!(log_events(&second, "restored open incidents").len(), 1, "{second}");
    assert!(log_events(&second, "incident").is_empty(), "no new incident after the restart:\n{second}");
    // The event is in the durable outbox, waiting for delivery, with its place labels, and the
    // camera's incident book beside it (committed together).
    let outbox = gateway::outbox::Outbox::open(&state_dir.join("outbox.redb"), 1000).unwrap();
    match outbox.book("example", 0).unwrap() {
        gateway::outbox::StoredBook::Restored(book) => assert_eq!(book.open_incidents(), vec![incident_id.as_str()]),
        other => panic!("no stored book: {other:?}"),
    }
    let pending = outbox.pending(0, 10).unwrap();
    assert_eq!(pending.len(), 1, "exactly the one opened event");
    assert_eq!(
        (pending[0].1.event.incident_id.as_str(), pending[0].1.grid.as_str()),
        (incident_id.as_str(), "lixia-07")
    );
}

#[test]
fn a_reference_picture_is_captured_from_a_live_camera_and_then_validates_in_the_config() {
    let server = crate::support::RtspServer::start(true);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("password"), format!("{}\n", crate::support::PASSWORD)).unwrap();
    let camera = format!(
        "[cameras.yard]\nurl = \"{}\"\nusername = \"{}\"\npassword_file = \"{}\"\n",
        server.url("h264"),
        crate::support::USER,
        dir.path().join("password").display()
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config_text(&camera)).unwrap();
    let reference = dir.path().join("yard-bins.png");
    let output = gateway()
        .args(["reference", "--camera", "yard", "--config"])
        .arg(&path)
        .arg("--output")
        .arg(&reference)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let picture = image::open(&reference).unwrap();
    assert_eq!((picture.width(), picture.height()), (768, 576), "full-resolution frame of the camera");

    let with_zone = format!(
        "{camera}[[cameras.yard.zones]]\nid = \"bins\"\nkind = \"bin_area\"\npolygon = [[0.1, 0.5], [0.4, 0.5], [0.4, 0.9], [0.1, 0.9]]\nreference = \"{}\"\n",
        reference.display()
    );
    std::fs::write(&path, config_text(&with_zone)).unwrap();
    let output = gateway().arg("check-config").arg(&path).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

#[test]
fn an_incident_on_a_substream_camera_gets_a_main_stream_snapshot() {
    let server = crate::support::RtspServer::start(false);
    let dir = tempfile::tempdir().unwrap();
    // People count as "misparked" here with no dwell, so that an incident opens at once.
    let camera = format!(
        r#"[cameras.gate]
url = "{}"
snapshot_url = "{}"

[[cameras.gate.zones]]
id = "plaza"
kind = "no_parking"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
classes = ["person"]
dwell_ms = 0
"#,
        server.url("h264"),
        server.url("main")
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, config_text(&camera)).unwrap();
    let output = gateway()
        .args(["run", "--run-for-secs", "10", "--config"])
        .arg(&path)
        .env("GATEWAY_LOG_FORMAT", "json")
        .output()
        .unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(output.status.success(), "{stderr}");
    let snapshots = log_events(&stderr, "main-stream snapshot");
    assert!(!snapshots.is_empty(), "no main-stream snapshot:\n{stderr}");
    let main = image::open(snapshots[0]["fields"]["snapshot"].as_str().unwrap()).unwrap();
    assert_eq!((main.width(), main.height()), (1280, 720), "taken from the main stream");
    let analysed = log_events(&stderr, "incident");
    let substream = image::open(analysed[0]["fields"]["snapshot"].as_str().unwrap()).unwrap();
    assert!(substream.width() < 1280, "the analysed snapshot is the substream's view");
}
