//! Cost of the per-camera incident core on one analysed frame: tracker + three zone rules +
//! lifecycle (`CameraEngine::update`), and the bin-area pixel reading on its own.
//! Run: `cargo bench --bench incidents` (needs no model or library).

// criterion_group! defines an undocumented `pub fn`; the crate's lints ask for docs.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use gateway::config;
use gateway::engine::{CameraEngine, EngineFrame};
use gateway::geometry::{BoxNorm, Polygon};
use gateway::rules::trash_overflow::{changed_share, GreyFrame};
use gateway::track::Observation;

const CAMERA: &str = r#"
[cameras.example]
url = "rtsp://192.0.2.1/stream"
[[cameras.example.zones]]
id = "pavement"
kind = "no_parking"
polygon = [[0.0, 0.4], [1.0, 0.4], [1.0, 1.0], [0.0, 1.0]]
[[cameras.example.zones]]
id = "bins"
kind = "bin_area"
polygon = [[0.0, 0.0], [0.4, 0.0], [0.4, 0.4], [0.0, 0.4]]
[[cameras.example.zones]]
id = "courtyard"
kind = "fall_watch"
polygon = [[0.4, 0.0], [1.0, 0.0], [1.0, 0.4], [0.4, 0.4]]
"#;

fn classes() -> Vec<String> {
    let manifest: toml::Table = toml::from_str(
        &std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/models/yolox_nano.toml")).unwrap(),
    )
    .unwrap();
    manifest["classes"].as_array().unwrap().iter().map(|c| c.as_str().unwrap().to_string()).collect()
}

fn picture() -> image::RgbImage {
    image::RgbImage::from_fn(416, 234, |x, y| {
        let v = if (x / 8 + y / 4) % 2 == 0 { 90 } else { 150 };
        image::Rgb([v, v, v])
    })
}

fn engine(c: &mut Criterion) {
    let classes = classes();
    // 20 objects (bikes and people) spread over the frame, a busy street.
    let observations: Vec<Observation> = (0..20)
        .map(|i| {
            let x = 0.02 + 0.045 * i as f32;
            let y = if i % 2 == 0 { 0.6 } else { 0.2 };
            Observation {
                class_id: (i % 2) as u16,
                score: 0.8,
                bbox: BoxNorm { x1: x, y1: y, x2: x + 0.04, y2: y + 0.1 },
                rotated: false,
            }
        })
        .collect();
    let picture = picture();
    let bench_update = |c: &mut Criterion, name: &str, camera: &str| {
        let config = config::parse(camera, std::path::Path::new(".")).unwrap();
        let mut engine = CameraEngine::new(&config.cameras[0], &classes, &[]);
        let mut now_ms = 0;
        c.bench_function(name, |b| {
            b.iter(|| {
                now_ms += 2000;
                let observations = observations.clone();
                engine.update(EngineFrame {
                    now_ms,
                    observations,
                    picture: Some(&picture),
                    frame_aspect: 16.0 / 9.0,
                    zone_readings: &[],
                    poses: &[],
                })
            })
        });
    };
    bench_update(c, "engine_update/20_objects_3_zones", CAMERA);
    // The same street without the bin area: no pixel reading at all.
    bench_update(c, "engine_update/20_objects_no_bin_area", &CAMERA.replace("kind = \"bin_area\"", "kind = \"mask\""));
    let grey = GreyFrame::from_rgb(&picture);
    let zone = Polygon::whole_frame();
    c.bench_function("bin_area_reading/416x234_whole_frame", |b| b.iter(|| changed_share(&grey, &grey, &zone, &[])));
    c.bench_function("grey_conversion/416x234", |b| b.iter(|| GreyFrame::from_rgb(&picture)));
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(3));
    targets = engine
}
criterion_main!(benches);
