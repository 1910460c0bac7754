//! Event clips (issue 16) through the real pipeline: footage made by FFmpeg (lavfi), a real
//! `gateway run` with the real model; a bike parked in a no-parking zone whose kind records
//! clips opens an incident, and its clip is remuxed from the camera's own stream (H.264 and
//! H.265, the latter with B-frames). ffprobe checks what was written; the console serves it
//! to the token only, with range requests.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use super::support::{eventually, require_runtime};

const TOKEN: &str = "clips-token-0123456789abcdef";

/// The bike footage re-encoded as H.265 with B-frames (x265's default of 4) and a 2 s GOP.
fn parked_bike_h265() -> PathBuf {
    static MAKING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = MAKING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("footage").join("parked_bike_h265.mp4");
    if path.is_file() {
        return path;
    }
    let source = super::replay::parked_bike_clip();
    let partial = path.with_extension("partial.mp4");
    let status = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-i"])
        .arg(&source)
        .args([
            "-t",
            "60",
            "-c:v",
            "libx265",
            "-preset",
            "veryfast",
            "-x265-params",
            "keyint=10:min-keyint=10:log-level=error",
        ])
        .args(["-tag:v", "hvc1"])
        .arg(&partial)
        .status()
        .expect("ffmpeg");
    assert!(status.success(), "ffmpeg failed making the H.265 footage");
    std::fs::rename(&partial, &path).unwrap();
    path
}

/// A camera on `footage` with a whole-frame no-parking zone that opens after 8 s.
fn camera(id: &str, footage: &Path) -> String {
    format!(
        "\n[cameras.{id}]\nurl = \"file:{}\"\ngrid = \"grid-16\"\nanalysis_interval_ms = 1000\n\n\
         [[cameras.{id}.zones]]\nid = \"pavement\"\nkind = \"no_parking\"\n\
         polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]\ndwell_ms = 8000\n",
        footage.display()
    )
}

/// (codec name, duration in seconds) as ffprobe reads the file.
fn probe(path: &Path) -> (String, f64) {
    let output = Command::new("ffprobe")
        .args(["-v", "error", "-select_streams", "v:0", "-show_entries", "stream=codec_name:format=duration"])
        .args(["-of", "json"])
        .arg(path)
        .output()
        .expect("ffprobe runs");
    assert!(
        output.status.success(),
        "ffprobe cannot read {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    let codec = report["streams"][0]["codec_name"].as_str().unwrap_or("").to_string();
    let duration = report["format"]["duration"].as_str().and_then(|d| d.parse().ok()).unwrap_or(0.0);
    (codec, duration)
}

/// The clip of `camera`'s first incident, once written.
fn clip_of(evidence: &Path, camera: &str) -> Option<PathBuf> {
    std::fs::read_dir(evidence).ok()?.flatten().map(|entry| entry.path()).find(|path| {
        let name = path.file_name().unwrap_or_default().to_string_lossy().into_owned();
        name.starts_with(&format!("{camera}_")) && name.ends_with("-1-clip.mp4")
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `curl` with extra arguments; (status, headers lower-cased, body length).
fn curl(url: &str, args: &[&str]) -> (u16, String, usize) {
    let dir = tempfile::tempdir().unwrap();
    let (headers, body) = (dir.path().join("headers"), dir.path().join("body"));
    let output = Command::new("curl")
        .args(["-s", "-D"])
        .arg(&headers)
        .arg("-o")
        .arg(&body)
        .args(["-w", "%{http_code}"])
        .args(args)
        .arg(url)
        .output()
        .expect("curl runs");
    let status = String::from_utf8_lossy(&output.stdout).trim().parse().unwrap_or(0);
    let headers = std::fs::read_to_string(&headers).unwrap_or_default().to_ascii_lowercase();
    (status, headers, std::fs::metadata(&body).map_or(0, |m| m.len() as usize))
}

/// Kills the gateway when the test ends, however it ends.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incident_gets_a_clip_remuxed_from_the_cameras_own_h264_or_h265_stream() {
    require_runtime();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let port = free_port();
    std::fs::write(dir.path().join("console.token"), format!("{TOKEN}\n")).unwrap();
    let cameras = format!(
        "[console]\nbind = \"127.0.0.1:{port}\"\ntoken_file = \"console.token\"\n\n\
         [evidence.no_parking]\nclip = true\npre_roll_secs = 4\npost_roll_secs = 6\n{}{}",
        camera("cam-264", &super::replay::parked_bike_clip()),
        camera("cam-265", &parked_bike_h265()),
    );
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, super::support::config_text_in(&state, &cameras)).unwrap();
    let (child, logs) = super::support::spawn_run(&config, 150);
    let gateway = Running(child);
    let evidence = state.join("evidence");
    let written = eventually(Duration::from_secs(90), || {
        clip_of(&evidence, "cam-264").is_some() && clip_of(&evidence, "cam-265").is_some()
    })
    .await;
    let base = format!("http://127.0.0.1:{port}");
    let metrics = String::from_utf8_lossy(
        &Command::new("curl").args(["-s", &format!("{base}/metrics")]).output().unwrap().stdout,
    )
    .to_string();
    if written {
        console_serves_the_clip_to_the_token_only(&base, &evidence, &state);
        the_incident_card_plays_the_clip(&base, &state);
    }
    let _ = Command::new("kill").args(["-TERM", &gateway.0.id().to_string()]).status();
    drop(gateway);
    let (out, err) = logs.join();
    assert!(written, "no clips written; logs:\n{out}{err}");

    // Pre-roll 4 s (from the keyframe before: GOP 2 s; 6 s when that keyframe arrived a
    // moment late) + post-roll 6 s (+ up to 1 s for frames that arrive late in decode order).
    for (camera, codec) in [("cam-264", "h264"), ("cam-265", "hevc")] {
        let clip = clip_of(&evidence, camera).unwrap();
        let (probed_codec, duration) = probe(&clip);
        assert_eq!(probed_codec, codec, "{}", clip.display());
        assert!((9.5..=13.5).contains(&duration), "{camera}: clip of {duration} s, expected 10-13 s");
        // The opened event's sidecar lists it.
        let name = clip.file_name().unwrap().to_string_lossy().into_owned();
        let sidecar = evidence.join(name.replace("-1-clip.mp4", "-1.json"));
        let sidecar: Value = serde_json::from_slice(&std::fs::read(&sidecar).unwrap()).unwrap();
        assert_eq!(sidecar["clip"], name.as_str());
        let line = out.lines().chain(err.lines()).find(|l| l.contains("clip written") && l.contains(camera));
        println!(
            "{camera}: {codec}, {duration:.2} s, {} bytes; {}",
            std::fs::metadata(&clip).unwrap().len(),
            line.unwrap_or("")
        );
    }
    for expected in ["gateway_clips_written_total 2", "gateway_clip_ring_cameras 2"] {
        assert!(metrics.lines().any(|l| l == expected), "{expected:?} missing from /metrics:\n{metrics}");
    }
}

/// The incident of `camera` as the console lists it.
fn incident_of(base: &str, camera: &str) -> Value {
    let output = Command::new("curl")
        .args(["-s", "-H", &format!("Authorization: Bearer {TOKEN}"), &format!("{base}/api/incidents")])
        .output()
        .unwrap();
    let list: Value = serde_json::from_slice(&output.stdout).unwrap();
    list["incidents"].as_array().unwrap().iter().find(|i| i["camera"] == camera).cloned().unwrap_or(Value::Null)
}

fn console_serves_the_clip_to_the_token_only(base: &str, evidence: &Path, state: &Path) {
    let incident = incident_of(base, "cam-264");
    assert_eq!(incident["has_clip"], true, "{incident}");
    let id: String =
        url::form_urlencoded::byte_serialize(incident["incident_id"].as_str().unwrap().as_bytes()).collect();
    let clip_url = format!("{base}/api/incidents/{id}/clip.mp4");
    let length = std::fs::metadata(clip_of(evidence, "cam-264").unwrap()).unwrap().len() as usize;
    // Without the token: 401 for the snapshot, the main-stream snapshot, the frame and the clip.
    for path in [
        format!("/api/incidents/{id}/snapshot.jpg"),
        format!("/api/incidents/{id}/main.jpg"),
        format!("/api/incidents/{id}/clip.mp4"),
        "/api/cameras/cam-264/frame.jpg".to_string(),
    ] {
        assert_eq!(curl(&format!("{base}{path}"), &[]).0, 401, "{path} without the token");
        assert_eq!(curl(&format!("{base}{path}"), &["-H", "Authorization: Bearer wrong-token-0123456789"]).0, 401);
    }
    let bearer = format!("Authorization: Bearer {TOKEN}");
    let (status, headers, bytes) = curl(&clip_url, &["-H", &bearer, "-H", "X-Operator: operator li"]);
    assert_eq!((status, bytes), (200, length), "{headers}");
    for expected in ["content-type: video/mp4", "cache-control: no-store", "accept-ranges: bytes"] {
        assert!(headers.contains(expected), "{expected:?} missing:\n{headers}");
    }
    let (status, headers, bytes) = curl(&clip_url, &["-H", &bearer, "-H", "Range: bytes=100-199"]);
    assert_eq!((status, bytes), (206, 100), "{headers}");
    assert!(headers.contains(&format!("content-range: bytes 100-199/{length}")), "{headers}");
    let (status, headers, _) = curl(&clip_url, &["-H", &bearer, "-H", &format!("Range: bytes={length}-")]);
    assert_eq!(status, 416, "{headers}");
    assert!(headers.contains(&format!("content-range: bytes */{length}")), "{headers}");
    // The session cookie the pages use works too; the snapshot is served the same way.
    let jar = tempfile::NamedTempFile::new().unwrap();
    let jar = jar.path().to_str().unwrap();
    assert_eq!(curl(&format!("{base}/api/session"), &["-X", "POST", "-H", &bearer, "-c", jar]).0, 200);
    let (status, _, bytes) = curl(&format!("{clip_url}?operator=cookie%20user"), &["-b", jar, "-H", "Range: bytes=0-"]);
    assert_eq!((status, bytes), (206, length));
    let (status, headers, _) = curl(&format!("{base}/api/incidents/{id}/snapshot.jpg"), &["-b", jar]);
    assert_eq!(status, 200, "{headers}");
    assert!(headers.contains("cache-control: no-store"), "{headers}");
    // Every read is in the access log, with who read it.
    let log = std::fs::read_to_string(state.join("evidence-access.jsonl")).unwrap();
    let entries: Vec<Value> = log.lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    let incident_id = incident["incident_id"].as_str().unwrap();
    let read = |operator: &str, auth: &str, what: &str, status: u16| {
        entries.iter().any(|e| {
            e["operator"] == operator
                && e["auth"] == auth
                && e["what"] == what
                && e["status"] == status
                && e["incident_id"] == incident_id
        })
    };
    assert!(read("operator li", "bearer", "clip", 200), "{log}");
    assert!(read("cookie user", "cookie", "clip", 206), "{log}");
    assert!(read("unnamed", "cookie", "snapshot", 200), "{log}");
    assert!(!log.contains(TOKEN), "the token is in the access log");
}

fn the_incident_card_plays_the_clip(base: &str, state: &Path) {
    let browser = super::support::project_root().join("tests/browser");
    let chromium = std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".to_string());
    assert!(
        browser.join("node_modules/playwright-core").is_dir() && Path::new(&chromium).exists(),
        "the browser tests need Chromium and tests/browser/node_modules: run scripts/setup --for-tests"
    );
    let artefacts = super::support::project_root().join("tests/artifacts/browser");
    let output = Command::new("node")
        .arg(browser.join("run.mjs"))
        .arg("clip")
        .env("GATEWAY_URL", base)
        .env("GATEWAY_TOKEN", TOKEN)
        .env("CAMERA", "cam-264")
        .env("OPERATOR_NAME", "operator wang")
        .env("ARTEFACT_DIR", &artefacts)
        .env("CHROMIUM_PATH", &chromium)
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "browser scenario clip failed:\n{stdout}\n{stderr}");
    let report: Value = serde_json::from_str(stdout.lines().rev().find(|l| l.starts_with('{')).unwrap()).unwrap();
    println!("browser: {}", report["clip"]);
    assert!(report["clip"]["current_time"].as_f64().unwrap() > 1.0, "{report}");
    assert_eq!(report["clip"]["video_width"], 640, "{report}");
    // The page's reads are on record under the operator's name.
    let log = std::fs::read_to_string(state.join("evidence-access.jsonl")).unwrap();
    assert!(
        log.lines().any(|l| l.contains("\"operator\":\"operator wang\"") && l.contains("\"what\":\"clip\"")),
        "{log}"
    );
}

/// The plaza footage (pedestrians) with the demo photo's bicycle overlaid, made by FFmpeg.
fn bike_among_people() -> PathBuf {
    let plaza = super::support::shared_media("vtest_plaza_768x576_10fps_gop20.mp4");
    let dog = super::support::shared_media("images/yolox_assets_dog.jpg");
    let inputs = ["-i", plaza.to_str().unwrap(), "-framerate", "5", "-loop", "1", "-i", dog.to_str().unwrap()];
    super::replay::make_clip("bike_among_people.mp4", &inputs, "[1]scale=iw*0.4:-2[bike];[0][bike]overlay=60:300", 60)
}

/// Bystanders (issue 16): on a bike incident every person is pixelated in the snapshot that
/// leaves the gateway (MQTT and the console read the same file); the original stays on disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_in_a_bike_incidents_snapshot_are_blurred_and_the_original_kept() {
    require_runtime();
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("state");
    let port = free_port();
    std::fs::write(dir.path().join("console.token"), format!("{TOKEN}\n")).unwrap();
    let cameras = format!(
        "[console]\nbind = \"127.0.0.1:{port}\"\ntoken_file = \"console.token\"\n{}",
        camera("plaza", &bike_among_people()).replace("dwell_ms = 8000", "dwell_ms = 3000")
    );
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, super::support::config_text_in(&state, &cameras)).unwrap();
    let (child, logs) = super::support::spawn_run(&config, 90);
    let gateway = Running(child);
    let evidence = state.join("evidence");
    let sidecar = || -> Option<PathBuf> {
        std::fs::read_dir(&evidence)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .find(|p| p.file_name().unwrap().to_string_lossy().ends_with("-1.json"))
    };
    let written = eventually(Duration::from_secs(60), || sidecar().is_some()).await;
    let base = format!("http://127.0.0.1:{port}");
    let served = written.then(|| {
        let incident = incident_of(&base, "plaza");
        let id: String =
            url::form_urlencoded::byte_serialize(incident["incident_id"].as_str().unwrap().as_bytes()).collect();
        Command::new("curl")
            .args([
                "-s",
                "-H",
                &format!("Authorization: Bearer {TOKEN}"),
                &format!("{base}/api/incidents/{id}/snapshot.jpg"),
            ])
            .output()
            .unwrap()
            .stdout
    });
    let metrics = String::from_utf8_lossy(
        &Command::new("curl").args(["-s", &format!("{base}/metrics")]).output().unwrap().stdout,
    )
    .to_string();
    let _ = Command::new("kill").args(["-TERM", &gateway.0.id().to_string()]).status();
    drop(gateway);
    let (out, err) = logs.join();
    assert!(written, "no incident; logs:\n{out}{err}");
    let sidecar_path = sidecar().unwrap();
    let sidecar: Value = serde_json::from_slice(&std::fs::read(&sidecar_path).unwrap()).unwrap();
    let blurred_count = sidecar["bystanders_blurred"].as_u64().unwrap();
    assert!(blurred_count >= 1, "no bystander blurred: {sidecar}");
    let shared = evidence.join(sidecar["snapshot"].as_str().unwrap());
    let original = evidence.join(sidecar["original"].as_str().expect("the original is listed"));
    let (shared_picture, original_picture) =
        (image::open(&shared).unwrap().to_rgb8(), image::open(&original).unwrap().to_rgb8());
    assert_eq!(shared_picture.dimensions(), original_picture.dimensions());
    // Pixelation evens out the people's pixels: the shared picture differs from the original
    // there, and has less detail (sum of differences between neighbours) overall.
    let detail = |picture: &image::RgbImage| -> u64 {
        picture.pixels().zip(picture.pixels().skip(1)).map(|(a, b)| u64::from(a[1].abs_diff(b[1]))).sum()
    };
    assert!(detail(&shared_picture) < detail(&original_picture), "the shared snapshot is not blurred anywhere");
    // The console serves the blurred one.
    assert_eq!(
        served.unwrap(),
        std::fs::read(&shared).unwrap(),
        "the console served something else than the blurred snapshot"
    );
    let count_line = metrics.lines().find(|l| l.starts_with("gateway_snapshot_blur_seconds_count")).unwrap_or("");
    let sum_line = metrics.lines().find(|l| l.starts_with("gateway_snapshot_blur_seconds_sum")).unwrap_or("");
    println!("{blurred_count} bystanders blurred; {count_line}; {sum_line}");
    assert!(!count_line.ends_with(" 0") && !count_line.is_empty(), "{metrics}");
}
