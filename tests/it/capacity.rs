//! The frame-budget scheduler on a real gateway that is over capacity: ten cameras asking
//! for every frame (100 frames/s) against a detector that manages a few dozen, and one quiet
//! camera asking for a frame every 2 s. The quiet camera keeps its interval, the busy ones
//! share the rest (none starved), the overload is visible (degraded "over capacity", skips counted,
//! a warning), and the backlog does not grow.

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::support::{config_text_in, require_runtime, shared_media};

const BUSY: usize = 10;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn get(port: u16, path: &str) -> String {
    let output = Command::new("curl").args(["-sf", &format!("http://127.0.0.1:{port}{path}")]).output().unwrap();
    assert!(output.status.success(), "GET {path} failed");
    String::from_utf8(output.stdout).unwrap()
}

/// `name{camera="id"} value` → value by camera, for one metric (and one label filter).
fn by_camera(metrics: &str, name: &str, extra: &str) -> HashMap<String, f64> {
    metrics
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{camera=\"")) && line.contains(extra))
        .filter_map(|line| {
            let camera = line.split('"').nth(1)?.to_string();
            let value = line.rsplit(' ').next()?.parse().ok()?;
            Some((camera, value))
        })
        .collect()
}

fn scalar(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing"))
        .parse()
        .unwrap()
}

#[test]
fn over_capacity_the_quiet_camera_keeps_its_interval_and_the_busy_ones_share_the_rest() {
    require_runtime();
    let clip = shared_media("vtest_plaza_768x576_10fps_gop20.mp4");
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cameras = format!("[console]\nbind = \"127.0.0.1:{port}\"\n");
    for index in 0..BUSY {
        cameras.push_str(&format!(
            "\n[cameras.busy-{index}]\nurl = \"file:{}\"\nanalysis_interval_ms = 40\ndecode = \"every_frame\"\n",
            clip.display()
        ));
    }
    cameras.push_str(&format!("\n[cameras.quiet]\nurl = \"file:{}\"\nanalysis_interval_ms = 2000\n", clip.display()));
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, config_text_in(&dir.path().join("state"), &cameras)).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["run", "--run-for-secs", "30", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn,gateway::app=info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Let it settle, then take two readings 12 s apart.
    std::thread::sleep(Duration::from_secs(8));
    let before = get(port, "/metrics");
    std::thread::sleep(Duration::from_secs(12));
    let after = get(port, "/metrics");
    let cameras: Value = serde_json::from_str(&get(port, "/api/cameras")).unwrap();
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{log}");

    let analysed = |text: &str| by_camera(text, "gateway_detect_frames_analysed_total", "");
    let (first, second) = (analysed(&before), analysed(&after));
    let delta = |camera: &str| second[camera] - first[camera];
    // The quiet camera: one frame per 2 s keyframe, as if the others were not there.
    let quiet = delta("quiet");
    assert!((5.0..=7.0).contains(&quiet), "quiet camera analysed {quiet} frames in 12 s");
    let quiet_revisit = by_camera(&after, "gateway_camera_revisit_seconds", "")["quiet"];
    assert!(quiet_revisit <= 2.5, "quiet camera revisited after {quiet_revisit} s");
    // The busy ones: each got a share, none starved. (Well over capacity their decoders fall
    // back to keyframes plus a frame or two after each, so shares are counted in GOPs: 2 s
    // here, six in the window; how the cameras' keyframes fall against each other decides
    // the rest.)
    let busy: Vec<f64> = (0..BUSY).map(|i| delta(&format!("busy-{i}"))).collect();
    let (min, max) = busy.iter().fold((f64::MAX, 0.0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
    assert!(min >= 3.0 && min >= 0.3 * max, "busy cameras' shares are uneven: {busy:?}");
    // Over capacity, and it shows.
    assert!(busy.iter().sum::<f64>() < 0.9 * (BUSY as f64) * 120.0, "not over capacity: {busy:?}");
    let skipped = by_camera(&after, "gateway_frames_skipped_total", "reason=\"over_capacity\"");
    assert!((0..BUSY).all(|i| skipped[&format!("busy-{i}")] > 0.0), "{skipped:?}");
    let degraded = cameras["cameras"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["state"] == "degraded" && c["reason"].as_str().unwrap_or("").contains("over capacity"))
        .count();
    assert!(degraded >= BUSY / 2, "{cameras}");
    assert!(
        scalar(&after, "gateway_scheduler_demand_frames_per_second")
            > scalar(&after, "gateway_scheduler_capacity_frames_per_second")
    );
    assert!(log.contains("ask for more frames per second than this machine can analyse"), "{log}");
    // No backlog: at most one frame per camera waits, and nothing queues behind the detector.
    assert!(scalar(&after, "gateway_scheduler_waiting_frames") <= (BUSY + 1) as f64);
    assert!(scalar(&after, "gateway_detect_queue_depth") <= 2.0);
    let latency = scalar(&after, "gateway_analysis_latency_seconds_recent_max");
    assert!(latency < 3.0, "a frame waited {latency} s for its detections: a backlog is growing");
}
