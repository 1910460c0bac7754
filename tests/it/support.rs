//! Shared test support: footage the tests make with ffmpeg, a real RTSP server (GStreamer's,
//! via tests/support/rtsp_server.py) as a child process, and gateway configs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The project root.
pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// An example config's text (`config/examples/`) with its model paths (`"../../models/…"`:
/// `[detector] model` and `wide_model`) made absolute, for a copy written elsewhere.
pub fn with_absolute_models(example: &str) -> String {
    example.replace("\"../../models/", &format!("\"{}/", project_root().join("models").display()))
}

/// `../shared` beside the checkout (or `$GATEWAY_SHARED_DIR`): the model mirror and media.
pub fn shared_dir() -> PathBuf {
    std::env::var_os("GATEWAY_SHARED_DIR").map(PathBuf::from).unwrap_or_else(|| project_root().join("../shared"))
}

/// A file from the shared media folder; panics with a clear message if absent.
pub fn shared_media(relative: &str) -> PathBuf {
    let path = shared_dir().join("media").join(relative);
    assert!(path.is_file(), "test media {} is missing (expected ../shared beside the checkout)", path.display());
    path
}

/// Fails early with a clear message when scripts/setup has not been run.
pub fn require_runtime() {
    let library =
        std::env::var_os("ORT_DYLIB_PATH").expect("ORT_DYLIB_PATH is not set: run the tests with scripts/test");
    assert!(Path::new(&library).is_file(), "ORT_DYLIB_PATH {library:?} does not exist: run scripts/setup");
}

/// The codecs the tests serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    H264,
    H265,
    /// H.264 at 1280x720: a camera's main stream beside its 768x576 "substream".
    H264Main,
}

/// Frame rate of the test footage; keyframe every 2 s.
pub const FOOTAGE_FPS: u32 = 10;

/// Annex B footage with access unit delimiters, made once per test run from the plaza clip
/// (people walking: the detector finds persons): 12 s, 10 fps, keyframe every 2 s, no B-frames.
pub fn annex_b_footage(codec: Codec) -> PathBuf {
    static MAKING: Mutex<()> = Mutex::new(());
    let _guard = MAKING.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let directory = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("footage");
    std::fs::create_dir_all(&directory).unwrap();
    let (name, codec_args): (&str, &[&str]) = match codec {
        Codec::H264 => (
            "plaza.h264",
            &["-c:v", "libx264", "-preset", "veryfast", "-g", "20", "-bf", "0", "-x264-params", "aud=1", "-f", "h264"],
        ),
        Codec::H264Main => (
            "plaza_main.h264",
            &[
                "-vf",
                "scale=1280:720",
                "-c:v",
                "libx264",
                "-preset",
                "veryfast",
                "-g",
                "20",
                "-bf",
                "0",
                "-x264-params",
                "aud=1",
                "-f",
                "h264",
            ],
        ),
        Codec::H265 => (
            "plaza.h265",
            &[
                "-c:v",
                "libx265",
                "-preset",
                "veryfast",
                "-x265-params",
                "aud=1:keyint=20:min-keyint=20:bframes=0:log-level=error",
                "-f",
                "hevc",
            ],
        ),
    };
    let path = directory.join(name);
    if path.is_file() {
        return path;
    }
    let partial = directory.join(format!("{name}.partial"));
    let source = shared_media("vtest_plaza_768x576_10fps_gop20.mp4");
    let status = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-i"])
        .arg(&source)
        .args(["-t", "12", "-an", "-r", &FOOTAGE_FPS.to_string(), "-pix_fmt", "yuv420p"])
        .args(codec_args)
        .arg(&partial)
        .status()
        .expect("run ffmpeg (scripts/setup installs it)");
    assert!(status.success(), "ffmpeg failed making {name}");
    std::fs::rename(&partial, &path).unwrap();
    path
}

/// A real RTSP server (GStreamer's) serving `/h264` and `/h265` footage, killed on drop.
pub struct RtspServer {
    child: Option<Child>,
    /// The port it listens on (kept across restarts).
    pub port: u16,
    credentials: Option<(String, String)>,
    basic_auth: bool,
}

/// User name and password the authenticated test server accepts.
pub const USER: &str = "steward";
/// Password the authenticated test server accepts.
pub const PASSWORD: &str = "correct horse";

impl RtspServer {
    /// Starts a server on a free loopback port, with Digest auth when `authenticated`.
    pub fn start(authenticated: bool) -> Self {
        let credentials = authenticated.then(|| (USER.to_string(), PASSWORD.to_string()));
        let mut server = RtspServer { child: None, port: 0, credentials, basic_auth: false };
        server.spawn();
        server
    }

    /// Starts a server that demands Basic authentication (older cameras).
    pub fn start_basic_auth() -> Self {
        let credentials = Some((USER.to_string(), PASSWORD.to_string()));
        let mut server = RtspServer { child: None, port: 0, credentials, basic_auth: true };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let h264 = annex_b_footage(Codec::H264);
        let h265 = annex_b_footage(Codec::H265);
        let main = annex_b_footage(Codec::H264Main);
        let mut command = Command::new("/usr/bin/python3");
        command
            .arg(project_root().join("tests/support/rtsp_server.py"))
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--fps", &FOOTAGE_FPS.to_string()])
            .arg("--mount")
            .arg(format!("/h264={}:h264", h264.display()))
            .arg("--mount")
            .arg(format!("/h265={}:h265", h265.display()))
            .arg("--mount")
            .arg(format!("/main={}:h264", main.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if let Some((user, password)) = &self.credentials {
            command.args(["--user", user, "--password", password]);
            if self.basic_auth {
                command.args(["--auth-method", "basic"]);
            }
        }
        let mut child = command.spawn().expect("start tests/support/rtsp_server.py with /usr/bin/python3");
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read RTSP server readiness");
        let port = line
            .trim()
            .strip_prefix("READY port=")
            .unwrap_or_else(|| panic!("RTSP server did not start: {line:?}"))
            .parse()
            .unwrap();
        self.port = port;
        self.child = Some(child);
    }

    /// `rtsp://127.0.0.1:PORT/PATH`.
    pub fn url(&self, path: &str) -> String {
        format!("rtsp://127.0.0.1:{}/{path}", self.port)
    }

    /// Kills the server (as a crash would: SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the server: a hung camera whose TCP session
    /// stays open while nothing flows.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.as_ref().expect("server running").id();
        let status = Command::new("kill").args([signal, &pid.to_string()]).status().unwrap();
        assert!(status.success());
    }

    /// Starts it again on the same port.
    pub fn restart(&mut self) {
        self.kill();
        // The port may linger for a moment; retry briefly.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let attempt = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.spawn()));
            match attempt {
                Ok(()) => return,
                Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(200)),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    }
}

impl Drop for RtspServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A loopback port with nothing listening on it.
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// Polls `condition` every 100 ms until it holds or `limit` passes (a liveness bound, not a
/// speed assertion); returns whether it held.
pub async fn eventually(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if condition() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    condition()
}

/// Config text for tests: quick reconnects, the bundled model, state in a fresh temporary
/// directory, the given camera tables.
pub fn config_text(cameras: &str) -> String {
    config_text_in(&tempfile::tempdir().unwrap().keep(), cameras)
}

/// [`config_text`] with state kept in `state_dir`.
pub fn config_text_in(state_dir: &Path, cameras: &str) -> String {
    format!(
        r#"
[ingest]
reconnect_initial_ms = 200
reconnect_max_ms = 1000
no_frame_timeout_ms = 3000
connect_timeout_ms = 3000

[detector]
model = "{}"

[storage]
state_dir = "{}"

{cameras}
"#,
        project_root().join("models/yolox_nano.toml").display(),
        state_dir.display()
    )
}

/// The camera most delivery tests share: `gate-8`, footage of a bike parked on the pavement
/// (`replay::parked_bike_clip`) with a whole-frame no-parking zone `pavement` that opens a
/// `misparked_bike` incident after 3 s, placed in grid `grid-08` of steward `steward-zhang`
/// (topics under `lixia/wenhua-east/shanda-road-3/grid-08/`).
pub fn bike_camera_toml() -> String {
    let bike = super::replay::parked_bike_clip();
    format!(
        r#"
[cameras.gate-8]
url = "file:{bike}"
street = "wenhua-east"
community = "shanda-road-3"
grid = "grid-08"
steward = "steward-zhang"
analysis_interval_ms = 1000
decode = "every_frame"

# The pavement in front of the gate.
[[cameras.gate-8.zones]]
id = "pavement"
kind = "no_parking"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
dwell_ms = 3000
"#,
        bike = bike.display()
    )
}

/// `gateway run --run-for-secs seconds --config config` (logs at info, ONNX Runtime's at
/// warn), its output drained as it runs.
pub fn spawn_run(config: &Path, seconds: u64) -> (Child, DrainedOutput) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["run", "--run-for-secs", &seconds.to_string(), "--config"])
        .arg(config)
        .env("RUST_LOG", "info,ort=warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let logs = DrainedOutput::of(&mut child);
    (child, logs)
}

/// A child's stdout and stderr, read to the end on threads as it runs (a full pipe would
/// block the gateway's logging).
pub struct DrainedOutput {
    stdout: std::thread::JoinHandle<String>,
    stderr: std::thread::JoinHandle<String>,
}

impl DrainedOutput {
    /// Takes the child's piped stdout and stderr.
    pub fn of(child: &mut Child) -> DrainedOutput {
        fn drain(pipe: Box<dyn std::io::Read + Send>) -> std::thread::JoinHandle<String> {
            std::thread::spawn(move || {
                let mut text = String::new();
                let _ = std::io::Read::read_to_string(&mut BufReader::new(pipe), &mut text);
                text
            })
        }
        DrainedOutput {
            stdout: drain(Box::new(child.stdout.take().expect("stdout piped"))),
            stderr: drain(Box::new(child.stderr.take().expect("stderr piped"))),
        }
    }

    /// (stdout, stderr), once the child has exited.
    pub fn join(self) -> (String, String) {
        (self.stdout.join().unwrap_or_default(), self.stderr.join().unwrap_or_default())
    }
}

/// `gateway replay --json --stats` of camera `example` of `config` on `footage`: the event
/// lines and the stats document.
pub fn replay_with_stats(config: &Path, footage: &Path) -> (Vec<serde_json::Value>, serde_json::Value) {
    require_runtime();
    let stats = config.with_extension("stats.json");
    let output = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["replay", "--json", "--camera", "example", "--stats"])
        .arg(&stats)
        .arg("--config")
        .arg(config)
        .arg(footage)
        .output()
        .unwrap();
    assert!(output.status.success(), "replay failed: {}", String::from_utf8_lossy(&output.stderr));
    let events =
        String::from_utf8(output.stdout).unwrap().lines().map(|line| serde_json::from_str(line).unwrap()).collect();
    (events, serde_json::from_str(&std::fs::read_to_string(&stats).unwrap()).unwrap())
}
