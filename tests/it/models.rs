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
