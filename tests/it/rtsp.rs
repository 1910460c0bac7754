//! Ingest → decode → detect against a real RTSP server (GStreamer), with the real model.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gateway::config::{self, CameraId};
use gateway::detect::AnalysedFrame;
use gateway::health::CameraState;
use gateway::pipeline::Pipeline;
use tokio_util::sync::CancellationToken;

use crate::support::{self, config_text, eventually, RtspServer, PASSWORD, USER};

/// Class id of "person" in the bundled model.
const PERSON: u16 = 0;
/// Generous bound for things that take a few seconds on a loaded 2-core CI box.
const LIVENESS: Duration = Duration::from_secs(45);

/// A pipeline under test, with every analysed frame collected.
struct Running {
    pipeline: Pipeline,
    frames: Arc<Mutex<Vec<AnalysedFrame>>>,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn start(cameras: &str) -> Self {
        support::require_runtime();
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("password"), format!("{PASSWORD}\n")).unwrap();
        std::fs::write(dir.path().join("wrong-password"), "not the password\n").unwrap();
        let config = config::parse(&config_text(cameras), dir.path()).unwrap_or_else(|p| panic!("test config: {p}"));
        let (pipeline, mut analysed) =
            Pipeline::start(&config, CancellationToken::new()).await.expect("pipeline starts");
        let frames = Arc::new(Mutex::new(Vec::new()));
        let sink = frames.clone();
        tokio::spawn(async move {
            while let Some(frame) = analysed.recv().await {
                sink.lock().unwrap().push(frame);
            }
        });
        Running { pipeline, frames, _dir: dir }
    }

    fn analysed(&self, camera: &str) -> Vec<AnalysedFrame> {
        self.frames.lock().unwrap().iter().filter(|f| f.camera.as_str() == camera).cloned().collect()
    }

    fn frames_with_person(&self, camera: &str) -> usize {
        self.analysed(camera).iter().filter(|f| f.detections.iter().any(|d| d.class_id == PERSON)).count()
    }

    fn state(&self, camera: &str) -> (CameraState, Option<String>) {
        let (state, reason, _) = self.pipeline.health.camera(&CameraId::try_new(camera).unwrap()).snapshot();
        (state, reason)
    }

    fn reconnects(&self, camera: &str) -> u64 {
        self.pipeline.health.camera(&CameraId::try_new(camera).unwrap()).counters.reconnects.load(Ordering::Relaxed)
    }
}

fn camera(id: &str, url: &str, password_file: Option<&str>, extra: &str) -> String {
    let credentials =
        password_file.map(|file| format!("username = \"{USER}\"\npassword_file = \"{file}\"\n")).unwrap_or_default();
    format!("[cameras.{id}]\nurl = \"{url}\"\nanalysis_interval_ms = 1000\n{credentials}{extra}\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h264_and_h265_over_digest_auth_yield_person_detections() {
    let server = RtspServer::start(true);
    let cameras = [
        camera("gate-h264", &server.url("h264"), Some("password"), ""),
        camera("gate-h265", &server.url("h265"), Some("password"), ""),
        camera("gate-h264-every-frame", &server.url("h264"), Some("password"), "decode = \"every_frame\"\n"),
    ]
    .concat();
    let running = Running::start(&cameras).await;
    for id in ["gate-h264", "gate-h265", "gate-h264-every-frame"] {
        assert!(
            eventually(LIVENESS, || running.frames_with_person(id) >= 2).await,
            "{id}: no person detections; state {:?}, frames {:?}",
            running.state(id),
            running.analysed(id).len()
        );
        assert_eq!(running.state(id).0, CameraState::Online);
        let frame = &running.analysed(id)[0];
        assert_eq!((frame.frame_width, frame.frame_height), (768, 576), "{id}: frame size");
        for detection in &frame.detections {
            let [x1, y1, x2, y2] = detection.box_px;
            assert!(
                0.0 <= x1 && x1 < x2 && x2 <= 768.0 && 0.0 <= y1 && y1 < y2 && y2 <= 576.0,
                "{id}: box {:?}",
                detection.box_px
            );
        }
    }
    // Every-frame mode at a 1 s interval analyses more frames than there are keyframes (2 s GOP).
    let health = running.pipeline.health.camera(&CameraId::try_new("gate-h264-every-frame").unwrap());
    let decoded = health.counters.frames_decoded.load(Ordering::Relaxed);
    let keyframes = health.counters.keyframes_received.load(Ordering::Relaxed);
    assert!(decoded > keyframes, "every_frame mode decoded {decoded} frames for {keyframes} keyframes");
    running.pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn camera_recovers_by_itself_after_the_server_restarts() {
    let mut server = RtspServer::start(false);
    let running = Running::start(&camera("yard", &server.url("h264"), None, "")).await;
    assert!(eventually(LIVENESS, || running.analysed("yard").len() >= 2).await, "no frames before the restart");

    server.kill();
    assert!(
        eventually(LIVENESS, || running.state("yard").0 == CameraState::Offline).await,
        "camera not reported offline after the server died: {:?}",
        running.state("yard")
    );
    let before_restart = running.analysed("yard").len();
    server.restart();
    assert!(
        eventually(LIVENESS, || running.analysed("yard").len() >= before_restart + 2).await,
        "camera did not recover after the server restarted: {:?}",
        running.state("yard")
    );
    assert_eq!(running.state("yard").0, CameraState::Online);
    assert!(running.reconnects("yard") >= 1);
    running.pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_is_reported_and_retried_while_other_cameras_run() {
    let server = RtspServer::start(true);
    let cameras = [
        camera("good", &server.url("h264"), Some("password"), ""),
        camera("bad", &server.url("h264"), Some("wrong-password"), ""),
    ]
    .concat();
    let running = Running::start(&cameras).await;
    assert!(
        eventually(LIVENESS, || running.reconnects("bad") >= 3).await,
        "wrong password not retried: {:?}",
        running.state("bad")
    );
    let (state, reason) = running.state("bad");
    assert!(matches!(state, CameraState::Offline | CameraState::Connecting), "{state:?}");
    // The reason is read while offline; poll for it because a retry may be in flight.
    assert!(
        eventually(LIVENESS, || running.state("bad").1.is_some_and(|r| r.contains("authentication failed (401"))).await,
        "unclear reason: {reason:?}"
    );
    let reason = running.state("bad").1.unwrap();
    assert!(!reason.contains("not the password") && !reason.contains(PASSWORD), "password leaked: {reason}");
    assert!(running.analysed("bad").is_empty());
    // The good camera is unaffected: it keeps producing frames while "bad" keeps failing.
    let good_so_far = running.analysed("good").len();
    assert!(
        eventually(LIVENESS, || running.analysed("good").len() >= good_so_far + 2).await,
        "the good camera stalled"
    );
    assert_eq!(running.state("good").0, CameraState::Online);
    assert_eq!(running.reconnects("good"), 0);
    running.pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_camera_is_reported_offline() {
    let url = format!("rtsp://127.0.0.1:{}/stream", support::closed_port());
    let running = Running::start(&camera("nowhere", &url, None, "")).await;
    assert!(
        eventually(LIVENESS, || running.reconnects("nowhere") >= 2).await,
        "not retried: {:?}",
        running.state("nowhere")
    );
    assert!(
        eventually(LIVENESS, || {
            let (state, reason) = running.state("nowhere");
            state == CameraState::Offline && reason.is_some_and(|r| r.starts_with("connection refused"))
        })
        .await,
        "not reported offline with the reason: {:?}",
        running.state("nowhere")
    );
    running.pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_camera_hits_the_no_frame_timeout_and_recovers_when_it_wakes() {
    let server = RtspServer::start(false);
    let running = Running::start(&camera("stalled", &server.url("h264"), None, "")).await;
    assert!(eventually(LIVENESS, || running.analysed("stalled").len() >= 2).await, "no frames at first");
    server.signal("-STOP");
    assert!(
        eventually(LIVENESS, || running.state("stalled").1.is_some_and(|r| r.contains("no video frame for 3s"))).await,
        "the no-frame timeout did not fire: {:?}",
        running.state("stalled")
    );
    server.signal("-CONT");
    let before = running.analysed("stalled").len();
    assert!(
        eventually(LIVENESS, || running.analysed("stalled").len() >= before + 2).await,
        "did not recover after the camera woke up: {:?}",
        running.state("stalled")
    );
    running.pipeline.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_annex_b_footage_file_plays_as_a_camera() {
    for (id, codec) in [("annexb-h264", support::Codec::H264), ("annexb-h265", support::Codec::H265)] {
        let footage = support::annex_b_footage(codec);
        let running = Running::start(&camera(id, &format!("file:{}", footage.display()), None, "")).await;
        assert!(
            eventually(LIVENESS, || running.frames_with_person(id) >= 2).await,
            "{id}: no person detections from the raw stream: {:?}",
            running.state(id)
        );
        running.pipeline.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_camera_that_demands_basic_auth_streams_and_a_wrong_password_is_refused() {
    let server = RtspServer::start_basic_auth();
    let cameras = [
        camera("basic-good", &server.url("h264"), Some("password"), ""),
        camera("basic-bad", &server.url("h264"), Some("wrong-password"), ""),
    ]
    .concat();
    let running = Running::start(&cameras).await;
    assert!(
        eventually(LIVENESS, || running.frames_with_person("basic-good") >= 2).await,
        "no detections over Basic auth: {:?}",
        running.state("basic-good")
    );
    assert!(
        eventually(LIVENESS, || running.state("basic-bad").1.is_some_and(|r| r.contains("authentication failed (401")))
            .await,
        "wrong password over Basic auth not reported: {:?}",
        running.state("basic-bad")
    );
    running.pipeline.stop().await;
}
