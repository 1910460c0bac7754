//! A real write failure under a real gateway: the `gateway run` child runs with a file-size
//! limit (RLIMIT_FSIZE) lowered while it runs, SIGXFSZ ignored, so every write past the first
//! 4 KiB of any file fails with EFBIG, as a full disk fails them with ENOSPC: the redb outbox
//! cannot commit. No root, no tmpfs. The gateway must say so (`/healthz`, the retained MQTT
//! status), hold the incident event, and deliver it once the limit is lifted.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::broker::{Mosquitto, Subscriber};
use super::support::{config_text_in, eventually, require_runtime, DrainedOutput};

/// The soft file-size limit while the "disk" fails: redb's header page fits, nothing else.
const FAILING_FSIZE_BYTES: u64 = 4096;

/// Sets the soft RLIMIT_FSIZE of a running process (`prlimit`, util-linux); the hard limit
/// stays unlimited, so an unprivileged test can raise it again.
fn set_fsize(pid: u32, soft: &str) {
    let status = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--fsize={soft}:unlimited")])
        .status()
        .expect("prlimit runs (util-linux)");
    assert!(status.success(), "prlimit --fsize={soft} failed");
}

fn http_get(port: u16, path: &str) -> (u16, String) {
    let output = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", &format!("http://127.0.0.1:{port}{path}")])
        .output()
        .expect("curl runs");
    let text = String::from_utf8_lossy(&output.stdout).to_string();
    let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (status.trim().parse().unwrap_or(0), body.to_string())
}

fn healthz(port: u16) -> Option<Value> {
    let (status, body) = http_get(port, "/healthz");
    (status == 200).then(|| serde_json::from_str(&body).ok()).flatten()
}

/// `gate-8` on the parked-bike footage with a 30 s dwell, so the incident opens well after
/// the console answers and the limit is in place, even on a loaded machine.
fn camera_toml() -> String {
    super::support::bike_camera_toml().replace("dwell_ms = 3000", "dwell_ms = 30000")
}

fn spawn(config: &Path, runtime_dir: Option<&Path>) -> Child {
    // `trap '' XFSZ` before `exec`: an ignored signal stays ignored across exec, so a write
    // past the limit fails with EFBIG instead of killing the gateway (SIGXFSZ's default).
    Command::new("sh")
        .args(["-c", "trap '' XFSZ; exec \"$0\" \"$@\"", env!("CARGO_BIN_EXE_gateway")])
        .args(["run", "--run-for-secs", "240", "--config"])
        .arg(config)
        .env("RUST_LOG", "info,ort=warn")
        .env("RUNTIME_DIRECTORY", runtime_dir.map(Path::as_os_str).unwrap_or_default())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// The gateway child, stopped (and its logs returned) once; killed if the test panics.
struct Gateway {
    child: Child,
    logs: Option<DrainedOutput>,
}

impl Gateway {
    fn spawn(config: &Path, runtime_dir: Option<&Path>) -> Gateway {
        let mut child = spawn(config, runtime_dir);
        let logs = Some(DrainedOutput::of(&mut child));
        Gateway { child, logs }
    }

    /// SIGTERM, wait, and the logs (empty after the first call).
    fn stop(&mut self) -> String {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        self.logs.take().map(|logs| logs.join()).map(|(out, err)| out + &err).unwrap_or_default()
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_disk_makes_the_gateway_degraded_and_no_event_is_lost() {
    require_runtime();
    let broker = Mosquitto::start();
    let steward = Subscriber::start(broker.port, "steward-zhang", "lixia/#");
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let text = format!(
        "[console]\nbind = \"127.0.0.1:{port}\"\n\n[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\nclient_id = \"gw-disk\"\n{}",
        broker.port,
        camera_toml()
    );
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, config_text_in(&dir.path().join("state"), &text)).unwrap();
    let mut gateway = Gateway::spawn(&config, None);
    let pid = gateway.child.id();
    let mut stop = || gateway.stop();

    let up = eventually(Duration::from_secs(30), || healthz(port).is_some_and(|h| h["status"] == "ok")).await;
    assert!(up, "the gateway did not come up; logs:\n{}", stop());
    let status_topic = "lixia/status/gateway/gw-disk";
    let online = eventually(Duration::from_secs(10), || {
        steward.on(status_topic).last().is_some_and(|m| m.payload["state"] == "online")
    })
    .await;
    assert!(online, "no online status; logs:\n{}", stop());
    assert!(steward.on("/incidents/").is_empty(), "an incident opened before the disk failed");

    // The disk fails; the incident opens (30 s of footage) and cannot be committed.
    set_fsize(pid, &FAILING_FSIZE_BYTES.to_string());
    let degraded =
        eventually(Duration::from_secs(90), || healthz(port).is_some_and(|h| h["status"] == "degraded")).await;
    assert!(degraded, "/healthz never said degraded: {:?}; logs:\n{}", healthz(port), stop());
    let health = healthz(port).unwrap();
    assert!(health["degraded"].as_str().is_some_and(|r| !r.is_empty()), "{health}");
    assert!(health["events_held"].as_u64().is_some_and(|held| held >= 1), "{health}");
    let retained = eventually(Duration::from_secs(10), || {
        steward.on(status_topic).last().is_some_and(|m| m.payload["state"] == "degraded")
    })
    .await;
    assert!(retained, "the retained status did not say degraded: {:?}", steward.on(status_topic));
    let status = steward.on(status_topic).last().unwrap().payload.clone();
    assert!(status["reason"].as_str().is_some_and(|r| !r.is_empty()), "{status}");
    let (_, metrics) = http_get(port, "/metrics");
    assert!(metrics.lines().any(|l| l == "gateway_outbox_commit_failing 1"), "{metrics}");
    assert!(steward.on("/incidents/").is_empty(), "an event was delivered without a commit");

    // The disk recovers: the held event is committed and delivered, the gateway is ok again.
    set_fsize(pid, "unlimited");
    let recovered = eventually(Duration::from_secs(60), || healthz(port).is_some_and(|h| h["status"] == "ok")).await;
    assert!(recovered, "/healthz still {:?}; logs:\n{}", healthz(port), stop());
    let delivered = eventually(Duration::from_secs(30), || {
        steward.on("/incidents/").iter().any(|m| m.payload["event"] == "opened" && m.payload["camera"] == "gate-8")
    })
    .await;
    assert!(delivered, "the held opened event never arrived: {:?}; logs:\n{}", steward.on("/incidents/"), stop());
    let back = eventually(Duration::from_secs(10), || {
        steward.on(status_topic).last().is_some_and(|m| m.payload["state"] == "online")
    })
    .await;
    assert!(back, "the retained status stayed {:?}", steward.on(status_topic).last());
    stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_while_the_disk_fails_spills_the_held_event_and_the_next_start_delivers_it() {
    require_runtime();
    let broker = Mosquitto::start();
    let steward = Subscriber::start(broker.port, "steward-zhang", "lixia/#");
    let dir = tempfile::tempdir().unwrap();
    let runtime_dir = dir.path().join("run");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let text = format!(
        "[console]\nbind = \"127.0.0.1:{port}\"\n\n[mqtt]\nurl = \"mqtt://127.0.0.1:{}\"\nclient_id = \"gw-spill\"\n{}",
        broker.port,
        camera_toml()
    );
    let config = dir.path().join("gateway.toml");
    std::fs::write(&config, config_text_in(&dir.path().join("state"), &text)).unwrap();
    let mut gateway = Gateway::spawn(&config, Some(&runtime_dir));
    let pid = gateway.child.id();

    let up = eventually(Duration::from_secs(30), || healthz(port).is_some_and(|h| h["status"] == "ok")).await;
    assert!(up, "the gateway did not come up; logs:\n{}", gateway.stop());
    // The disk fails; the incident opens and is held.
    set_fsize(pid, &FAILING_FSIZE_BYTES.to_string());
    let held = eventually(Duration::from_secs(90), || {
        healthz(port).is_some_and(|h| h["events_held"].as_u64().is_some_and(|held| held >= 1))
    })
    .await;
    assert!(held, "no event held: {:?}; logs:\n{}", healthz(port), gateway.stop());
    // Stopped in that state: the held events go to a spill file, none is lost.
    let logs = gateway.stop();
    assert!(!logs.contains("incident event lost"), "{logs}");
    let files: Vec<_> = std::fs::read_dir(&runtime_dir)
        .unwrap_or_else(|err| panic!("no spill directory ({err}); logs:\n{logs}"))
        .map(|entry| entry.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}; logs:\n{logs}");
    let spilled = std::fs::read_to_string(&files[0]).unwrap();
    assert!(spilled.contains("\"opened\"") && spilled.contains("gate-8"), "{spilled}");
    assert!(steward.on("/incidents/").is_empty(), "an event was delivered without a commit");

    // Started again with a working disk: the spilled event is committed, then delivered.
    let mut gateway = Gateway::spawn(&config, Some(&runtime_dir));
    let delivered = eventually(Duration::from_secs(60), || {
        steward.on("/incidents/").iter().any(|m| m.payload["event"] == "opened" && m.payload["camera"] == "gate-8")
    })
    .await;
    assert!(
        delivered,
        "the spilled opened event never arrived: {:?}; logs:\n{}",
        steward.on("/incidents/"),
        gateway.stop()
    );
    let logs = gateway.stop();
    assert!(logs.contains("spilled at the last stop are in the outbox now"), "{logs}");
    assert_eq!(std::fs::read_dir(&runtime_dir).unwrap().count(), 0, "the spill file is deleted");
}
