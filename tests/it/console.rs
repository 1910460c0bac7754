//! The console against a real gateway on footage, a real broker and (for the pages) a real
//! browser: answers from the console reach the outbox and MQTT, zone edits are validated,
//! written and applied to one camera only, the config file is hot-reloaded, and a bad edit or
//! a bad file changes nothing. HTTP is spoken with curl, the pages are driven by headless
//! Chromium through `tests/browser/run.mjs`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::Duration;

use serde_json::Value;

use super::broker::{Mosquitto, Subscriber};
use super::support::{eventually, project_root, require_runtime};

pub(super) const TOKEN: &str = "console-token-0123456789abcdef";

/// A `gateway run` child with a console, its logs drained as it runs.
pub(super) struct Gateway {
    child: Child,
    port: u16,
    pub(super) config: PathBuf,
    logs: Option<super::support::DrainedOutput>,
    _dir: tempfile::TempDir,
}

impl Gateway {
    /// Starts a gateway whose config is `cameras` plus a console with the test token and the
    /// broker on `mqtt_port`.
    pub(super) fn start(mqtt_port: u16, cameras: &str) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        std::fs::write(dir.path().join("console.token"), format!("{TOKEN}\n")).unwrap();
        let text = format!(
            "[console]\nbind = \"127.0.0.1:{port}\"\ntoken_file = \"console.token\"\n\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{mqtt_port}\"\nclient_id = \"gw-console-{port}\"\n{cameras}"
        );
        let config = dir.path().join("gateway.toml");
        std::fs::write(&config, super::support::config_text_in(&dir.path().join("state"), &text)).unwrap();
        let (child, logs) = super::support::spawn_run(&config, 240);
        let logs = Some(logs);
        Gateway { child, port, config, logs, _dir: dir }
    }

    pub(super) fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// `curl` a path; (status, body).
    pub(super) fn http(&self, method: &str, path: &str, token: Option<&str>, body: Option<&str>) -> (u16, String) {
        let mut command = Command::new("curl");
        command.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method, &self.url(path)]);
        if let Some(token) = token {
            command.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        if let Some(body) = body {
            command.args(["-H", "Content-Type: application/json", "--data-binary", body]);
        }
        let output = command.output().expect("curl runs");
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (status.trim().parse().unwrap_or(0), body.to_string())
    }

    /// Response headers of a GET, lower-cased names.
    fn headers(&self, path: &str, token: Option<&str>) -> String {
        let mut command = Command::new("curl");
        command.args(["-s", "-D", "-", "-o", "/dev/null", &self.url(path)]);
        if let Some(token) = token {
            command.args(["-H", &format!("Authorization: Bearer {token}")]);
        }
        String::from_utf8_lossy(&command.output().expect("curl runs").stdout).to_ascii_lowercase()
    }

    /// GET with the token (camera and incident data need it, issue 11), as JSON.
    pub(super) fn json(&self, path: &str) -> Value {
        let (status, body) = self.http("GET", path, Some(TOKEN), None);
        assert_eq!(status, 200, "GET {path}: {body}");
        serde_json::from_str(&body).unwrap()
    }

    /// Stops the gateway (SIGTERM) and returns its logs.
    pub(super) fn stop(&mut self) -> String {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
        match self.logs.take() {
            Some(logs) => {
                let (out, err) = logs.join();
                out + &err
            }
            None => String::new(),
        }
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Two cameras on footage: `gate-8` with a bike parked in its no-parking zone (opens an
/// incident after 3 s), `yard` with no zones; `extra` adds more.
fn cameras(extra: &str) -> String {
    let bike = super::replay::parked_bike_clip();
    format!(
        r#"{gate_8}
[cameras.yard]
url = "file:{bike}"
grid = "grid-09"
analysis_interval_ms = 2000
{extra}"#,
        gate_8 = super::support::bike_camera_toml(),
        bike = bike.display()
    )
}

fn incidents_of(gateway: &Gateway, camera: &str) -> Vec<Value> {
    let list = gateway.json("/api/incidents");
    list["incidents"].as_array().unwrap().iter().filter(|i| i["camera"] == camera).cloned().collect()
}

fn camera<'a>(cameras: &'a Value, id: &str) -> Option<&'a Value> {
    cameras["cameras"].as_array().unwrap().iter().find(|c| c["id"] == id)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_answers_edits_zones_and_reloads_without_touching_other_cameras() {
    require_runtime();
    let broker = Mosquitto::start();
    let steward = Subscriber::start(broker.port, "console-watch", "lixia/#");
    let mut gateway = Gateway::start(broker.port, &cameras(""));

    // Health and metrics, read-only and open on loopback; camera and incident data need the
    // token (issue 11).
    assert!(eventually(Duration::from_secs(30), || gateway.http("GET", "/healthz", None, None).0 == 200).await);
    let opened = eventually(Duration::from_secs(60), || !incidents_of(&gateway, "gate-8").is_empty()).await;
    assert!(opened, "no incident listed; logs:\n{}", gateway.stop());
    let incident = incidents_of(&gateway, "gate-8").remove(0);
    assert_eq!((incident["state"].as_str(), incident["grid"].as_str()), (Some("open"), Some("grid-08")));
    let id = incident["incident_id"].as_str().unwrap().to_string();
    let (_, metrics) = gateway.http("GET", "/metrics", None, None);
    for expected in [
        "gateway_camera_state{camera=\"gate-8\",state=\"online\"} 1",
        "gateway_incident_events_total{kind=\"misparked_bike\",event=\"opened\"} 1",
        "gateway_mqtt_connected 1",
    ] {
        assert!(metrics.lines().any(|l| l == expected), "{expected:?} missing from /metrics:\n{metrics}");
    }
    let snapshot_path = format!("/api/incidents/{}/snapshot.jpg", encode(&id));
    for path in [snapshot_path.as_str(), "/api/incidents", "/api/cameras", "/api/cameras/gate-8/frame.jpg"] {
        assert_eq!(gateway.http("GET", path, None, None).0, 401, "{path} without the token");
    }
    let snapshot = gateway.http("GET", &snapshot_path, Some(TOKEN), None);
    assert_eq!(snapshot.0, 200, "snapshot: {}", &snapshot.1.chars().take(200).collect::<String>());
    let headers = gateway.headers(&snapshot_path, Some(TOKEN));
    assert!(headers.contains("cache-control: no-store"), "a snapshot may be cached:\n{headers}");

    // Answering needs the token; with it, the answer is recorded and echoed on MQTT.
    let answer = r#"{"action":"ack","by":"operator li"}"#;
    let path = format!("/api/incidents/{}/answer", encode(&id));
    assert_eq!(gateway.http("POST", &path, None, Some(answer)).0, 401);
    assert_eq!(gateway.http("POST", &path, Some("wrong-token-0123456789"), Some(answer)).0, 401);
    let (status, body) = gateway.http("POST", &path, Some(TOKEN), Some(answer));
    assert_eq!((status, body.as_str()), (200, r#"{"outcome":"recorded"}"#));
    assert_eq!(gateway.http("POST", &path, Some(TOKEN), Some(answer)).1, r#"{"outcome":"duplicate"}"#);
    let echoed = eventually(Duration::from_secs(20), || {
        steward.on("lixia/wenhua-east/shanda-road-3/grid-08/answers/misparked_bike").iter().any(|m| {
            m.payload["incident_id"] == id.as_str()
                && m.payload["answer"]["action"] == "ack"
                && m.payload["answer"]["by"] == "operator li"
        })
    })
    .await;
    assert!(echoed, "no answer echo on MQTT: {:?}", steward.on("answers"));
    assert_eq!(gateway.json(&format!("/api/incidents/{}", encode(&id)))["state"], "acknowledged");

    // A zone edit that does not validate is refused with the reason; the file is untouched.
    let before = std::fs::read_to_string(&gateway.config).unwrap();
    let flat = r#"{"zones":[{"id":"flat","kind":"no_parking","polygon":[[0.2,0.5],[0.5,0.5],[0.8,0.5]]}]}"#;
    let (status, body) = gateway.http("PUT", "/api/cameras/yard/zones", Some(TOKEN), Some(flat));
    assert_eq!(status, 422, "{body}");
    let refusal: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(refusal["problems"][0]["path"], "cameras.yard.zones[0].polygon");
    assert!(refusal["problems"][0]["message"].as_str().unwrap().contains("no area"), "{body}");
    assert_eq!(std::fs::read_to_string(&gateway.config).unwrap(), before);
    assert_eq!(gateway.http("PUT", "/api/cameras/yard/zones", None, Some(flat)).0, 401);

    // A good edit is written (previous version kept) and applied to that camera only: the
    // other camera's stream is not reconnected (same `since`), and the new zone opens an
    // incident on the yard camera.
    let gate_since = camera(&gateway.json("/api/cameras"), "gate-8").unwrap()["since_ms"].clone();
    let drawn = r#"{"zones":[{"id":"drawn","kind":"no_parking","polygon":[[0.1,0.1],[0.9,0.1],[0.9,0.9],[0.1,0.9]],"dwell_ms":2000}]}"#;
    let (status, body) = gateway.http("PUT", "/api/cameras/yard/zones", Some(TOKEN), Some(drawn));
    assert_eq!(status, 200, "{body}");
    let written = std::fs::read_to_string(&gateway.config).unwrap();
    assert!(written.contains("[[cameras.yard.zones]]\nid = \"drawn\"\nkind = \"no_parking\""), "{written}");
    assert!(written.contains("# The pavement in front of the gate."), "comments kept:\n{written}");
    let backup = PathBuf::from(format!("{}.prev", gateway.config.display()));
    assert_eq!(std::fs::read_to_string(backup).unwrap(), before);
    assert_eq!(gateway.json("/api/cameras/yard")["zones"][0]["id"], "drawn");
    let yard_incident = eventually(Duration::from_secs(40), || {
        incidents_of(&gateway, "yard").iter().any(|i| i["zone"] == "drawn" && i["state"] == "open")
    })
    .await;
    assert!(yard_incident, "the new zone did not take effect: {:?}", incidents_of(&gateway, "yard"));
    assert_eq!(camera(&gateway.json("/api/cameras"), "gate-8").unwrap()["since_ms"], gate_since);

    // Hot reload from the file: a bad file is refused and the running config stays.
    std::fs::write(&gateway.config, format!("{written}\n[cameras.broken]\nurl = \"http://nowhere\"\n")).unwrap();
    let rejected = eventually(Duration::from_secs(15), || {
        gateway.http("GET", "/metrics", None, None).1.contains("gateway_config_reloads_total{result=\"rejected\"} 1")
    })
    .await;
    assert!(rejected, "a bad config was not rejected");
    assert!(camera(&gateway.json("/api/cameras"), "broken").is_none());
    // A camera added to the file starts; a camera removed stops; gate-8 is not touched.
    let renamed =
        written.replace("[cameras.yard]", "[cameras.yard-2]").replace("cameras.yard.zones", "cameras.yard-2.zones");
    std::fs::write(&gateway.config, renamed).unwrap();
    let swapped = eventually(Duration::from_secs(15), || {
        let cameras = gateway.json("/api/cameras");
        camera(&cameras, "yard-2").is_some() && camera(&cameras, "yard").is_none()
    })
    .await;
    assert!(swapped, "reload did not add and remove cameras: {}", gateway.json("/api/cameras"));
    // The removal's `cleared` is committed by the run loop just after the swap is visible.
    let yard_cleared =
        eventually(Duration::from_secs(15), || incidents_of(&gateway, "yard").iter().all(|i| i["state"] != "open"))
            .await;
    assert!(yard_cleared, "the removed camera's incident stayed open: {:?}", incidents_of(&gateway, "yard"));
    assert_eq!(camera(&gateway.json("/api/cameras"), "gate-8").unwrap()["since_ms"], gate_since);
    let logs = gateway.stop();
    assert!(!logs.contains(TOKEN), "the console token was logged");
}

/// The pages in headless Chromium: an incident appears live and is acknowledged; a polygon
/// drawn in the editor is saved, written and takes effect; a flat one is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_console_and_zone_editor() {
    require_runtime();
    let browser = project_root().join("tests/browser");
    assert!(
        browser.join("node_modules/playwright-core").is_dir() && Path::new(&chromium()).exists(),
        "the browser tests need Chromium and tests/browser/node_modules: run scripts/setup --for-tests"
    );
    let artefacts = project_root().join("tests/artifacts/browser");
    std::fs::create_dir_all(&artefacts).unwrap();
    let broker = Mosquitto::start();
    let steward = Subscriber::start(broker.port, "browser-watch", "lixia/#");
    // `late` opens its incident 20 s after start: well after the page has loaded, so the test
    // sees it arrive live.
    let bike = super::replay::parked_bike_clip();
    let late = format!(
        "\n[cameras.late]\nurl = \"file:{}\"\ngrid = \"grid-10\"\nanalysis_interval_ms = 2000\n\n\
         [[cameras.late.zones]]\nid = \"steps\"\nkind = \"no_parking\"\n\
         polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]\ndwell_ms = 20000\n",
        bike.display()
    );
    let mut gateway = Gateway::start(broker.port, &cameras(&late));
    assert!(eventually(Duration::from_secs(30), || gateway.http("GET", "/healthz", None, None).0 == 200).await);

    let console = run_browser(&gateway, "console", "late", &artefacts, &[("REQUIRE_LIVE", "1")]);
    assert_eq!(console["state_after"], "acknowledged", "{console}");
    // The token was asked for once, at load, and traded for an HttpOnly, SameSite=Strict cookie.
    assert_eq!(console["token_form_used_at_load"], 1, "{console}");
    assert_eq!(console["session_cookie"]["httpOnly"], true, "{console}");
    assert_eq!(console["session_cookie"]["sameSite"], "Strict", "{console}");
    let id = console["incident_id"].as_str().unwrap().to_string();
    let echoed = eventually(Duration::from_secs(20), || {
        steward.on("/answers/misparked_bike").iter().any(|m| m.payload["incident_id"] == id.as_str())
    })
    .await;
    assert!(echoed, "the console's acknowledgement was not published: {:?}", steward.on("answers"));

    let editor =
        run_browser(&gateway, "editor", "yard", &artefacts, &[("NEW_ZONE_ID", "drawn"), ("NEW_ZONE_DWELL_MS", "2000")]);
    assert!(editor["refused_message"].as_str().unwrap_or("").contains("no area"), "{editor}");
    let written = std::fs::read_to_string(&gateway.config).unwrap();
    assert!(written.contains("id = \"drawn\""), "the drawn zone is not in the config file:\n{written}");
    assert!(!written.contains("id = \"bad\""), "the refused zone was written:\n{written}");
    let effect =
        eventually(Duration::from_secs(40), || incidents_of(&gateway, "yard").iter().any(|i| i["zone"] == "drawn"))
            .await;
    assert!(effect, "the drawn zone did not take effect");
    for screenshot in ["console.png", "console-phone.png", "editor.png", "editor-refused.png"] {
        let path = artefacts.join(screenshot);
        assert!(path.metadata().is_ok_and(|m| m.len() > 10_000), "screenshot {} missing or empty", path.display());
    }
    gateway.stop();
}

pub(super) fn chromium() -> String {
    std::env::var("CHROMIUM_PATH").unwrap_or_else(|_| "/usr/bin/chromium".to_string())
}

/// Runs one browser scenario; its last stdout line is its JSON report.
pub(super) fn run_browser(
    gateway: &Gateway,
    scenario: &str,
    camera: &str,
    artefacts: &Path,
    extra: &[(&str, &str)],
) -> Value {
    let output = Command::new("node")
        .arg(project_root().join("tests/browser/run.mjs"))
        .arg(scenario)
        .env("GATEWAY_URL", gateway.url(""))
        .env("GATEWAY_TOKEN", TOKEN)
        .env("CAMERA", camera)
        .env("ARTEFACT_DIR", artefacts)
        .env("CHROMIUM_PATH", chromium())
        .envs(extra.iter().copied())
        .output()
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "browser scenario {scenario} failed:\n{stdout}\n{stderr}");
    let report = stdout.lines().rev().find(|l| l.starts_with('{')).unwrap_or("{}");
    serde_json::from_str(report).unwrap_or_else(|_| panic!("scenario {scenario} printed no JSON report:\n{stdout}"))
}

/// Percent-encodes an incident id for a path (ids hold `:`).
pub(super) fn encode(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
