//! The derived detector variants (issue 14): scripts/setup derives them into models/ with
//! scripts/derive_models.py; each must have its manifest's sha256, load, and find what the
//! shipped square fp32 model finds; `check-config` and `calibrate` name the variant. (The int8
//! manifests are derived on demand only, so they are not tested here.)

use std::path::Path;
use std::process::Command;

use serde_json::Value;

use crate::support::{self, project_root, shared_media};

/// The manifests of the variants scripts/setup derives, relative to the project root.
const VARIANTS: [&str; 1] = ["models/yolox_nano_416x256.toml"];

fn gateway() -> Command {
    support::require_runtime();
    let mut command = Command::new(env!("CARGO_BIN_EXE_gateway"));
    command.current_dir(project_root());
    command
}

/// `gateway detect --json [--model MANIFEST] IMAGE`'s persons, as boxes.
fn persons(model: Option<&str>, image: &Path) -> Vec<[f64; 4]> {
    let mut command = gateway();
    command.args(["detect", "--json"]);
    if let Some(model) = model {
        command.args(["--model", model]);
    }
    let output = command.arg(image).output().unwrap();
    assert!(output.status.success(), "{model:?}: {}", String::from_utf8_lossy(&output.stderr));
    let line: Value = serde_json::from_slice(&output.stdout).unwrap();
    line["detections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|d| d["class"] == "person")
        .map(|d| {
            let b: Vec<f64> = d["box"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
            [b[0], b[1], b[2], b[3]]
        })
        .collect()
}

fn iou(a: &[f64; 4], b: &[f64; 4]) -> f64 {
    let width = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let height = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let intersection = width * height;
    intersection / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - intersection)
}

fn manifest_value(manifest: &toml::Table, key: &str) -> String {
    manifest[key].as_str().unwrap_or_else(|| panic!("manifest has no {key}")).to_string()
}

#[test]
fn each_derived_variant_has_its_manifests_sha256() {
    use sha2::Digest;
    for variant in VARIANTS {
        let path = project_root().join(variant);
        let manifest: toml::Table = toml::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        let file = path.parent().unwrap().join(manifest_value(&manifest, "file"));
        let bytes = std::fs::read(&file)
            .unwrap_or_else(|error| panic!("{}: {error} (scripts/setup derives it)", file.display()));
        let actual: String = sha2::Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(actual, manifest_value(&manifest, "sha256"), "{variant}");
    }
}

#[test]
fn each_variant_finds_the_persons_the_square_model_finds() {
    let image = shared_media("images/yolox_assets_demo.png");
    let reference = persons(None, &image);
    assert_eq!(reference.len(), 2, "the square model finds two persons: {reference:?}");
    for variant in VARIANTS {
        let found = persons(Some(variant), &image);
        assert_eq!(found.len(), 2, "{variant}: {found:?}");
        for person in &reference {
            let best = found.iter().map(|f| iou(person, f)).fold(0.0, f64::max);
            assert!(best >= 0.7, "{variant}: the person {person:?} is matched only at IoU {best:.2}: {found:?}");
        }
    }
}

#[test]
fn check_config_and_calibrate_name_the_variant() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    let manifest = project_root().join("models/yolox_nano_416x256.toml");
    std::fs::write(&config, format!("[detector]\nmodel = \"{}\"\n", manifest.display())).unwrap();
    let output = gateway().arg("check-config").arg(&config).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("model yolox_nano_416x256 ") && stdout.contains("416x256"), "{stdout}");

    let clip = shared_media("vtest_plaza_768x576_10fps_gop20.mp4");
    let output = gateway()
        .args(["calibrate", "--json", "--frames", "2", "--model", "models/yolox_nano_416x256.toml"])
        .arg(&clip)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let line: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!((line["model"].as_str(), line["model_input"].as_str()), (Some("yolox_nano_416x256"), Some("416x256")));

    // A variant file that is not what its manifest says is refused by its sha256.
    let copy = dir.path().join("variant.toml");
    std::fs::copy(&manifest, &copy).unwrap();
    std::fs::write(dir.path().join("yolox_nano_416x256.onnx"), b"not the derived model").unwrap();
    std::fs::write(&config, format!("[detector]\nmodel = \"{}\"\n", copy.display())).unwrap();
    let output = gateway().arg("check-config").arg(&config).output().unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("wrong or corrupt file"));
}

/// A still grey clip of `size` (`WxH`), 6 s at 5 fps, a keyframe every 2 s.
fn still_clip(name: &str, size: &str) -> std::path::PathBuf {
    let source = format!("color=c=0x808080:s={size}:r=5");
    crate::replay::make_clip(name, &["-f", "lavfi", "-i", &source], "[0]null", 6)
}

/// The live gateway picks each camera's model as replay does, runs both (a session of each),
/// and shows the choice in /metrics and /api/cameras: a 16:9 camera without fall watch on the
/// wide model, a 16:9 fall-watch camera and a 4:3 camera on the square one.
#[test]
fn the_running_gateway_analyses_each_camera_with_its_model_and_says_which() {
    support::require_runtime();
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let (wide_clip, plaza) =
        (still_clip("grey_640x360.mp4", "640x360"), shared_media("vtest_plaza_768x576_10fps_gop20.mp4"));
    let cameras = format!(
        r#"
[console]
bind = "127.0.0.1:{port}"

[cameras.street-16x9]
url = "file:{wide}"
analysis_interval_ms = 1000

[cameras.fall-16x9]
url = "file:{wide}"
[[cameras.fall-16x9.zones]]
id = "square"
kind = "fall_watch"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]

[cameras.plaza-4x3]
url = "file:{plaza}"
analysis_interval_ms = 1000
"#,
        wide = wide_clip.display(),
        plaza = plaza.display()
    );
    let text = support::config_text_in(&dir.path().join("state"), &cameras).replacen(
        "[detector]\n",
        &format!("[detector]\nwide_model = {:?}\n", project_root().join("models/yolox_nano_416x256.toml")),
        1,
    );
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, text).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["run", "--run-for-secs", "14", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_secs(10));
    let get = |path: &str| {
        let output = Command::new("curl").args(["-sf", &format!("http://127.0.0.1:{port}{path}")]).output().unwrap();
        assert!(output.status.success(), "GET {path} failed");
        String::from_utf8(output.stdout).unwrap()
    };
    let (metrics, api) = (get("/metrics"), get("/api/cameras"));
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    for (camera, variant, model) in [
        ("street-16x9", "wide", "yolox_nano_416x256"),
        ("fall-16x9", "square", "yolox_nano"),
        ("plaza-4x3", "square", "yolox_nano"),
    ] {
        let line =
            format!("gateway_camera_model_info{{camera=\"{camera}\",variant=\"{variant}\",model=\"{model}\"}} 1");
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in\n{metrics}");
        let analysed = format!("gateway_detect_frames_analysed_total{{camera=\"{camera}\"}} ");
        let frames: f64 = metrics.lines().find_map(|l| l.strip_prefix(&analysed)).unwrap().parse().unwrap();
        assert!(frames >= 3.0, "{camera}: {frames} frames analysed");
    }
    let api: Value = serde_json::from_str(&api).unwrap();
    let shown: Vec<_> = api["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["id"].as_str().unwrap(), c["detector_model"].as_str(), c["model"].as_str()))
        .collect();
    assert_eq!(
        shown,
        [
            ("fall-16x9", Some("auto"), Some("yolox_nano")),
            ("plaza-4x3", Some("auto"), Some("yolox_nano")),
            ("street-16x9", Some("auto"), Some("yolox_nano_416x256")),
        ]
    );
}

/// `gateway replay --stats`'s analysed frames by model, for camera `example` of `config`.
fn analysed_by_model(config: &Path, footage: &Path) -> serde_json::Map<String, Value> {
    let (_, stats) = support::replay_with_stats(config, footage);
    stats["analysed_by_model"].as_object().unwrap_or_else(|| panic!("no analysed_by_model in {stats}")).clone()
}

/// Per-camera model choice (issue 14): with `[detector] wide_model` set, as the shipped
/// examples do, `replay` analyses a 16:9 camera without fall watch with the 416x256 model and
/// a fall-watch camera or a 4:3 one with the square model — the rule the live decoders apply
/// (`config::ModelRule`, from each decoded frame's size); `detector_model` overrides it.
#[test]
fn sixteen_by_nine_cameras_without_fall_watch_are_analysed_with_the_wide_model() {
    let (wide_clip, four_three_clip) =
        (still_clip("grey_640x360.mp4", "640x360"), still_clip("grey_768x576.mp4", "768x576"));
    let dir = tempfile::tempdir().unwrap();
    let example = |name: &str, camera_keys: &str| {
        let text =
            std::fs::read_to_string(project_root().join("config/examples").join(format!("{name}.toml"))).unwrap();
        assert!(text.contains("\nwide_model = "), "{name}.toml sets no [detector] wide_model");
        let text = support::with_absolute_models(&text).replacen(
            "[cameras.example]\n",
            &format!("[cameras.example]\n{camera_keys}"),
            1,
        );
        let path = dir.path().join(format!("{name}-{}.toml", camera_keys.len()));
        std::fs::write(&path, text).unwrap();
        path
    };
    let only = |model: &str, found: serde_json::Map<String, Value>, what: &str| {
        assert_eq!(found.keys().collect::<Vec<_>>(), [model], "{what}: {found:?}");
        assert!(found[model].as_u64().unwrap() > 0, "{what}: {found:?}");
    };
    let bikes = example("misparked_bikes", "");
    only("yolox_nano_416x256", analysed_by_model(&bikes, &wide_clip), "16:9, no fall watch");
    only("yolox_nano", analysed_by_model(&bikes, &four_three_clip), "4:3, no fall watch");
    only("yolox_nano", analysed_by_model(&example("fall_watch", ""), &wide_clip), "16:9 with a fall-watch zone");
    let forced_square = example("misparked_bikes", "detector_model = \"square\"\n");
    only("yolox_nano", analysed_by_model(&forced_square, &wide_clip), "16:9 forced square");
    let forced_wide = example("misparked_bikes", "detector_model = \"wide\"\n");
    only("yolox_nano_416x256", analysed_by_model(&forced_wide, &four_three_clip), "4:3 forced wide");
}

/// check-config verifies every model's sha256 and names the key of the one that fails; a
/// camera asking for "wide" without a wide model, or for a model that does not exist, is a
/// config problem (exit 64) with its key path; calibrate measures each model in use.
#[test]
fn check_config_verifies_both_models_and_calibrate_measures_each() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("gateway.toml");
    let models = project_root().join("models");
    let detector = format!(
        "[detector]\nmodel = \"{}\"\nwide_model = \"{}\"\n",
        models.join("yolox_nano.toml").display(),
        models.join("yolox_nano_416x256.toml").display()
    );
    std::fs::write(&config, &detector).unwrap();
    let output = gateway().arg("check-config").arg(&config).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(" 416x416, wide model yolox_nano_416x256 ") && stdout.contains("model yolox_nano "),
        "{stdout}"
    );

    let clip = shared_media("vtest_plaza_768x576_10fps_gop20.mp4");
    let output =
        gateway().args(["calibrate", "--json", "--frames", "2", "--config"]).arg(&config).arg(&clip).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let lines: Vec<Value> =
        String::from_utf8_lossy(&output.stdout).lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let measured: Vec<_> = lines.iter().map(|l| (l["variant"].as_str(), l["model"].as_str())).collect();
    assert_eq!(measured, [(Some("square"), Some("yolox_nano")), (Some("wide"), Some("yolox_nano_416x256"))]);

    // A wide model file that is not what its manifest says.
    let manifest = std::fs::read_to_string(models.join("yolox_nano_416x256.toml")).unwrap();
    let sha_line = manifest.lines().find(|line| line.starts_with("sha256")).unwrap();
    let wrong = manifest
        .replace(sha_line, &format!("sha256 = \"{}\"", "0".repeat(64)))
        .replace("file = \"yolox_nano_416x256.onnx\"", &format!("file = {:?}", models.join("yolox_nano_416x256.onnx")));
    let wrong_manifest = dir.path().join("wide.toml");
    std::fs::write(&wrong_manifest, wrong).unwrap();
    let with_wrong_wide = format!(
        "[detector]\nmodel = \"{}\"\nwide_model = \"{}\"\n",
        models.join("yolox_nano.toml").display(),
        wrong_manifest.display()
    );
    std::fs::write(&config, with_wrong_wide).unwrap();
    let output = gateway().arg("check-config").arg(&config).output().unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("detector.wide_model: ") && stderr.contains("wrong or corrupt file"), "{stderr}");

    std::fs::write(
        &config,
        "[cameras.a]\nurl = \"rtsp://192.0.2.1/\"\ndetector_model = \"wide\"\n[cameras.b]\nurl = \"rtsp://192.0.2.2/\"\ndetector_model = \"big\"\n",
    )
    .unwrap();
    let output = gateway().arg("check-config").arg(&config).output().unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cameras.a.detector_model: \"wide\" needs [detector] wide_model"), "{stderr}");
    assert!(stderr.contains("cameras.b.detector_model: unknown model \"big\""), "{stderr}");
}
