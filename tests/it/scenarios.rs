//! Scenario files (`tests/scenarios/*.toml`): timed detections (and, for bin areas, synthetic
//! pictures or scripted model scores) in, incident events out, through the real engine (tracker, zones, rules,
//! lifecycle) with footage time as the clock. No model needed.
//!
//! A scenario holds the camera exactly as a config file would (`[cameras.example]` with its
//! zones), `[[segment]]`s of frames, an optional `restart_at_ms` (the incident book is
//! serialised and a fresh engine restored from it, as after a gateway restart), and the exact
//! list of `[[expect]]`ed events.

use std::path::Path;

use gateway::config;
use gateway::engine::{CameraEngine, EngineFrame};
use gateway::geometry::BoxNorm;
use gateway::incident::IncidentBook;
use gateway::track::Observation;
use serde::Deserialize;

use crate::support::project_root;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Scenario {
    #[allow(dead_code)]
    description: String,
    #[serde(default)]
    restart_at_ms: Option<i64>,
    /// Frame width ÷ height. Default 16/9.
    #[serde(default)]
    frame_aspect: Option<f32>,
    segment: Vec<Segment>,
    #[serde(default)]
    expect: Vec<Expected>,
    cameras: toml::Table,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Segment {
    from_ms: i64,
    to_ms: i64,
    every_ms: i64,
    #[serde(default)]
    objects: Vec<Object>,
    /// Drop every n-th frame's detections (detector flicker).
    #[serde(default)]
    miss_every: Option<i64>,
    /// Synthetic picture: "clean" or "rubbish" (bin-area readings).
    #[serde(default)]
    picture: Option<String>,
    /// Picture brightness factor (lighting changes).
    #[serde(default)]
    brightness: Option<f32>,
    /// Alternate brightness between this and `brightness` on every frame (flicker).
    #[serde(default)]
    flicker_to: Option<f32>,
    /// The bin-state model's score for every bin zone that reads a model (the scripted
    /// reading of `source = "model"` zones; the real model is tested in tests/it/bins.rs).
    #[serde(default)]
    reading: Option<f32>,
    /// Alternate the score between this and `reading` on every frame.
    #[serde(default)]
    reading_flicker_to: Option<f32>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Object {
    class: String,
    score: f32,
    #[serde(rename = "box")]
    bbox: [f32; 4],
    /// Box at the end of the segment; linear motion in between.
    #[serde(default)]
    box_to: Option<[f32; 4]>,
}

#[derive(Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct Expected {
    event: String,
    kind: String,
    zone: String,
    t_ms: i64,
}

fn class_names() -> Vec<String> {
    #[derive(Deserialize)]
    struct Manifest {
        classes: Vec<String>,
    }
    let text = std::fs::read_to_string(project_root().join("models/yolox_nano.toml")).unwrap();
    toml::from_str::<toml::Table>(&text).unwrap().try_into::<Manifest>().unwrap().classes
}

/// A textured "clean bin area" picture, or one with rubbish over its left part.
fn picture(kind: &str, brightness: f32) -> image::RgbImage {
    image::RgbImage::from_fn(160, 120, |x, y| {
        let clean = if (x / 8 + y / 4) % 2 == 0 { 90.0 } else { 150.0 };
        let value = if kind == "rubbish" && x < 72 { 30.0 + ((x * 7 + y * 3) % 50) as f32 * 4.0 } else { clean };
        let v = (value * brightness).clamp(0.0, 255.0) as u8;
        image::Rgb([v, v, v])
    })
}

fn run(path: &Path) -> Vec<Expected> {
    let text = std::fs::read_to_string(path).unwrap();
    let scenario: Scenario = toml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut camera_config = toml::Table::new();
    camera_config.insert("cameras".into(), toml::Value::Table(scenario.cameras.clone()));
    let config = config::parse(&toml::to_string(&camera_config).unwrap(), &project_root())
        .unwrap_or_else(|p| panic!("{}: {p}", path.display()));
    let camera = config.cameras.iter().find(|c| c.id.as_str() == "example").expect("scenario camera `example`");
    let classes = class_names();
    let mut engine = CameraEngine::new(camera, &classes, &[]);
    let mut events = Vec::new();
    let mut restarted = false;
    for segment in &scenario.segment {
        let steps = ((segment.to_ms - segment.from_ms) / segment.every_ms).max(1);
        for step in 0..steps {
            let now_ms = segment.from_ms + step * segment.every_ms;
            if let Some(restart_ms) = scenario.restart_at_ms {
                if !restarted && now_ms >= restart_ms {
                    let saved = serde_json::to_string(engine.book()).unwrap();
                    engine = CameraEngine::new(camera, &classes, &[]);
                    engine.restore(serde_json::from_str::<IncidentBook>(&saved).unwrap());
                    restarted = true;
                }
            }
            let t = step as f32 / steps as f32;
            let missed = segment.miss_every.is_some_and(|n| step % n == n - 1);
            let observations = if missed {
                Vec::new()
            } else {
                segment
                    .objects
                    .iter()
                    .map(|o| {
                        let to = o.box_to.unwrap_or(o.bbox);
                        let b: Vec<f32> = (0..4).map(|i| o.bbox[i] + (to[i] - o.bbox[i]) * t).collect();
                        Observation {
                            class_id: classes.iter().position(|c| *c == o.class).expect("known class") as u16,
                            score: o.score,
                            bbox: BoxNorm { x1: b[0], y1: b[1], x2: b[2], y2: b[3] },
                            rotated: false,
                        }
                    })
                    .collect()
            };
            let brightness = match (segment.brightness, segment.flicker_to) {
                (Some(a), Some(b)) => {
                    if step % 2 == 0 {
                        a
                    } else {
                        b
                    }
                }
                (Some(a), None) => a,
                _ => 1.0,
            };
            let image = segment.picture.as_deref().map(|kind| picture(kind, brightness));
            let reading = match (segment.reading, segment.reading_flicker_to) {
                (Some(_), Some(b)) if step % 2 == 1 => Some(b),
                (reading, _) => reading,
            };
            let zone_readings: Vec<(String, f32)> = camera
                .zones
                .iter()
                .filter(|z| {
                    matches!(&z.rule, gateway::zones::ZoneRule::Trash(p)
                        if matches!(p.source, gateway::zones::TrashSource::Model { .. }))
                })
                .filter_map(|z| reading.map(|r| (z.id.clone(), r)))
                .collect();
            for event in engine.update(EngineFrame {
                now_ms,
                observations,
                picture: image.as_ref(),
                frame_aspect: scenario.frame_aspect.unwrap_or(16.0 / 9.0),
                zone_readings: &zone_readings,
                poses: &[],
            }) {
                events.push(Expected {
                    event: format!("{:?}", event.event).to_lowercase(),
                    kind: event.kind.as_str().to_string(),
                    zone: event.zone.clone(),
                    t_ms: event.t_ms,
                });
            }
        }
    }
    assert_eq!(events, scenario.expect, "{}", path.display());
    events
}

#[test]
fn every_scenario_file_gives_exactly_its_expected_events() {
    let directory = project_root().join("tests/scenarios");
    let mut files: Vec<_> = std::fs::read_dir(&directory).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert!(files.len() >= 10, "scenario files missing in {}", directory.display());
    for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "toml")) {
        run(file);
    }
}
