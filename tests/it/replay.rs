//! `gateway replay` end to end on footage the tests make with ffmpeg: the real decoder,
//! detector, tracker and rules, footage time as the clock.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use crate::support::{self, project_root, shared_media};

/// Makes (once per test run) a clip with ffmpeg; `args` go between the inputs and the output.
/// Tests that share a clip may ask for it at the same time: one makes it, the other waits.
pub fn make_clip(name: &str, inputs: &[&str], filter: &str, seconds: u32) -> PathBuf {
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = MAKING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("footage").join(name);
    if path.is_file() {
        return path;
    }
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let partial = path.with_extension("partial.mp4");
    let status = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y"])
        .args(inputs)
        .args(["-filter_complex", filter, "-t", &seconds.to_string(), "-r", "5", "-g", "10", "-bf", "0"])
        .args(["-c:v", "libx264", "-preset", "veryfast", "-crf", "28", "-pix_fmt", "yuv420p"])
        .arg(&partial)
        .status()
        .expect("ffmpeg");
    assert!(status.success(), "ffmpeg failed making {name}");
    std::fs::rename(&partial, &path).unwrap();
    path
}

/// A still, busy texture no detector class matches (a Mandelbrot render), standing in for
/// bags of rubbish.
fn rubbish_texture() -> String {
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = MAKING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("footage").join("rubbish.png");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let status = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i", "mandelbrot=s=260x300", "-frames:v", "1"])
        .arg(&path)
        .status()
        .expect("ffmpeg");
    assert!(status.success());
    path.display().to_string()
}

pub fn replay(config: &Path, footage: &Path) -> Vec<Value> {
    support::require_runtime();
    let output = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["replay", "--json", "--camera", "example", "--config"])
        .arg(config)
        .arg(footage)
        .output()
        .unwrap();
    assert!(output.status.success(), "replay failed: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect()
}

pub fn summary(events: &[Value]) -> Vec<(String, String, String, i64)> {
    events
        .iter()
        .map(|e| {
            let text = |key: &str| e[key].as_str().unwrap().to_string();
            (text("event"), text("kind"), text("zone"), e["t_ms"].as_i64().unwrap())
        })
        .collect()
}

/// The demo photo's bicycle (0.4x) on a plain 640x360 pavement for 340 s, then gone.
pub fn parked_bike_clip() -> PathBuf {
    let dog = shared_media("images/yolox_assets_dog.jpg");
    let inputs = ["-f", "lavfi", "-i", "color=c=0x808080:s=640x360:r=5", "-framerate", "5", "-loop", "1", "-i"];
    let inputs: Vec<&str> = inputs.iter().copied().chain([dog.to_str().unwrap()]).collect();
    make_clip("parked_bike.mp4", &inputs, "[1]scale=iw*0.4:-2[bike];[0][bike]overlay=100:50:enable='lt(t,340)'", 520)
}

#[test]
fn a_bike_left_in_the_zone_opens_one_incident_after_the_dwell_and_clears_after_removal() {
    let footage = parked_bike_clip();
    let events = replay(&project_root().join("config/examples/misparked_bikes.toml"), &footage);
    let events = summary(&events);
    assert_eq!(events.len(), 2, "exactly one incident, opened then cleared: {events:?}");
    let (opened, cleared) = (&events[0], &events[1]);
    assert_eq!((opened.0.as_str(), opened.1.as_str(), opened.2.as_str()), ("opened", "misparked_bike", "pavement"));
    // The bike is tracked from the first analysed keyframe (t = 0): opened at the 5 min dwell,
    // give or take one 2 s analysis interval for a missed detection.
    assert!((300_000..=302_000).contains(&opened.3), "opened at {} ms", opened.3);
    assert_eq!(cleared.0, "cleared");
    // Gone at 340 s; the tracker holds it 8 s; clear after 2 min of a clear zone.
    assert!((458_000..=470_000).contains(&cleared.3), "cleared at {} ms", cleared.3);
}

/// A street scene as the clean bin area, flickering (±8% brightness, 3 s period); a
/// rubbish-like texture covers a third of it from 20 s to 100 s.
pub fn bin_area_clip() -> PathBuf {
    let street = shared_media("images/parkmybike_PXL_20230320_134431090.jpg");
    let rubbish = rubbish_texture();
    make_clip(
        "bin_area.mp4",
        &[
            "-framerate",
            "5",
            "-loop",
            "1",
            "-i",
            street.to_str().unwrap(),
            "-framerate",
            "5",
            "-loop",
            "1",
            "-i",
            &rubbish,
        ],
        "[0]scale=640:360,format=yuv420p[street];[1]format=yuv420p[rubbish];\
         [street][rubbish]overlay=40:40:enable='between(t,20,100)',eq=brightness='0.08*sin(2*PI*t/3)':eval=frame",
        170,
    )
}

/// The trash example switched to the reference difference with 30 s timers, written to `dir`.
pub fn bin_area_config(dir: &Path) -> PathBuf {
    let config = dir.join("trash.toml");
    let example = std::fs::read_to_string(project_root().join("config/examples/trash_overflow.toml")).unwrap();
    let shortened = support::with_absolute_models(&example)
        // The reference difference, the fallback source: camera `example` switched to it.
        .replace("source = \"model\"", "source = \"reference\"")
        .replace("overflow_share = 0.6 ", "overflow_share = 0.15")
        .replace("normal_share = 0.4 ", "normal_share = 0.06")
        .replace("raise_after_ms = 600000", "raise_after_ms = 30000")
        .replace("clear_after_ms = 600000", "clear_after_ms = 30000");
    std::fs::write(&config, shortened).unwrap();
    config
}

#[test]
fn rubbish_in_the_bin_area_raises_despite_flickering_light_and_clears_when_removed() {
    let footage = bin_area_clip();
    let dir = tempfile::tempdir().unwrap();
    let config = bin_area_config(dir.path());
    let events = summary(&replay(&config, &footage));
    assert_eq!(events.len(), 2, "one incident, opened then cleared: {events:?}");
    assert_eq!((events[0].0.as_str(), events[0].1.as_str()), ("opened", "trash_overflow"));
    assert!((50_000..=54_000).contains(&events[0].3), "opened 30 s after the rubbish appeared: {events:?}");
    assert_eq!(events[1].0, "cleared");
    assert!((130_000..=134_000).contains(&events[1].3), "cleared 30 s after it was removed: {events:?}");
}

#[test]
fn people_walking_across_a_plaza_raise_no_fall() {
    let events = replay(
        &project_root().join("config/examples/fall_watch.toml"),
        &shared_media("vtest_plaza_768x576_10fps_gop20.mp4"),
    );
    assert!(events.is_empty(), "false fall incidents: {events:?}");
}

/// A person cut from the demo photo stands for 10 s, then lies (the same cut-out turned 90°)
/// until 60 s, then is gone (helped up and away).
pub fn fall_clip() -> PathBuf {
    let demo = shared_media("images/yolox_assets_demo.png");
    let inputs = ["-f", "lavfi", "-i", "color=c=0x707070:s=640x360:r=5", "-framerate", "5", "-loop", "1", "-i"];
    let inputs: Vec<&str> = inputs.iter().copied().chain([demo.to_str().unwrap()]).collect();
    make_clip(
        "fall.mp4",
        &inputs,
        "[1]crop=150:335:610:38,split[s][l];[s]scale=-2:200[standing];[l]transpose=1[lying];\
         [0][standing]overlay=250:100:enable='lt(t,10)'[a];[a][lying]overlay=150:200:enable='between(t,10,60)'",
        130,
    )
}

#[test]
fn a_resident_who_falls_and_stays_down_raises_one_incident_with_and_without_the_rotated_pass() {
    let footage = fall_clip();
    let example = std::fs::read_to_string(project_root().join("config/examples/fall_watch.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    for rotated_pass in [false, true] {
        let config = dir.path().join(format!("fall-{rotated_pass}.toml"));
        let text = support::with_absolute_models(&example) + &format!("rotated_pass = {rotated_pass}\n");
        std::fs::write(&config, text).unwrap();
        let events = summary(&replay(&config, &footage));
        assert_eq!(events.len(), 2, "rotated_pass = {rotated_pass}: one incident, opened then cleared: {events:?}");
        assert_eq!((events[0].0.as_str(), events[0].1.as_str()), ("opened", "fallen_person"));
        // Down from 10 s, where the person stood a moment before (a fall seen); down_ms = 5 s.
        assert!((15_000..=17_000).contains(&events[0].3), "rotated_pass = {rotated_pass}: {events:?}");
        // Last seen lying at 60 s; vanish hold 30 s; clear after 30 s.
        assert_eq!(events[1].0, "cleared");
        assert!((119_000..=122_000).contains(&events[1].3), "rotated_pass = {rotated_pass}: {events:?}");
    }
}
