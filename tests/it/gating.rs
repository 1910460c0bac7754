//! Change gating against the replay scenarios (issue 14): every scenario of `replay.rs` is
//! replayed with gating off and on (`gateway replay --json --stats`); the incidents must be the
//! same, none opened or cleared later than one analysis interval after gating off, and gating
//! must save inferences where the scene holds still.

use std::path::{Path, PathBuf};

use crate::replay::{bin_area_clip, bin_area_config, fall_clip, parked_bike_clip, summary};
use crate::support::{self, project_root, shared_media};

/// A scenario: name, config file, footage, the camera's analysis interval (ms).
struct Scenario {
    name: &'static str,
    config: PathBuf,
    footage: PathBuf,
    interval_ms: i64,
}

/// The config at `path` with the model path made absolute and, unless `gating`, gating off;
/// written into `dir`.
fn with_gating(path: &Path, gating: bool, dir: &Path) -> PathBuf {
    let text = support::with_absolute_models(&std::fs::read_to_string(path).unwrap());
    assert!(text.contains("[detector]\n"), "{} has no [detector] section", path.display());
    let text = if gating { text } else { text.replacen("[detector]\n", "[detector]\ngate_max_stale_ms = 0\n", 1) };
    let name = format!("{}-{}.toml", path.file_stem().unwrap().to_string_lossy(), if gating { "on" } else { "off" });
    let written = dir.join(name);
    std::fs::write(&written, text).unwrap();
    written
}

#[test]
fn gating_opens_and_clears_every_replay_scenario_within_one_interval_and_saves_on_still_scenes() {
    let dir = tempfile::tempdir().unwrap();
    let examples = project_root().join("config/examples");
    let scenarios = [
        Scenario {
            name: "parked bike",
            config: examples.join("misparked_bikes.toml"),
            footage: parked_bike_clip(),
            interval_ms: 2000,
        },
        Scenario {
            name: "rubbish in the bin area",
            config: bin_area_config(dir.path()),
            footage: bin_area_clip(),
            interval_ms: 2000,
        },
        Scenario {
            name: "people crossing a plaza",
            config: examples.join("fall_watch.toml"),
            footage: shared_media("vtest_plaza_768x576_10fps_gop20.mp4"),
            interval_ms: 1000,
        },
        Scenario {
            name: "a fall, down 50 s",
            config: examples.join("fall_watch.toml"),
            footage: fall_clip(),
            interval_ms: 1000,
        },
    ];
    let mut saved = Vec::new();
    for scenario in &scenarios {
        let (off_events, off_stats) =
            support::replay_with_stats(&with_gating(&scenario.config, false, dir.path()), &scenario.footage);
        let (on_events, on_stats) =
            support::replay_with_stats(&with_gating(&scenario.config, true, dir.path()), &scenario.footage);
        let name = scenario.name;
        assert_eq!(off_stats["inferences_reused"], 0, "{name}: gating off reuses nothing: {off_stats}");
        assert_eq!(off_stats["analysed_frames"], on_stats["analysed_frames"], "{name}: the same frames are analysed");
        let (off, on) = (summary(&off_events), summary(&on_events));
        let kinds = |events: &[(String, String, String, i64)]| {
            events.iter().map(|(event, kind, zone, _)| (event.clone(), kind.clone(), zone.clone())).collect::<Vec<_>>()
        };
        assert_eq!(kinds(&on), kinds(&off), "{name}: the same incident events, gating on vs off: {on:?} vs {off:?}");
        for ((event, kind, _, off_ms), (_, _, _, on_ms)) in off.iter().zip(&on) {
            assert!(
                (on_ms - off_ms).abs() <= scenario.interval_ms,
                "{name}: {kind} {event} at {on_ms} ms with gating, {off_ms} ms without: more than one interval apart"
            );
        }
        saved.push((name, on_stats["saved_share"].as_f64().unwrap(), on_stats));
    }
    // The parked bike stands still for minutes on a still pavement: most frames reuse detections
    // (at most 29 of every 30 at 2 s with the 60 s staleness).
    let (_, bike_saved, bike_stats) = &saved[0];
    assert!(*bike_saved >= 0.5, "gating saved little on a still scene: {bike_stats}");
    // People cross the plaza all the time: nearly every frame is inferred.
    let (_, plaza_saved, plaza_stats) = &saved[2];
    assert!(*plaza_saved <= 0.2, "gating reused detections while people walked: {plaza_stats}");
}
