//! Fixtures shared by the integration tests (`tests/it`) and the benches, included by path
//! (`#[path = ".../tests/support/fixtures.rs"] mod fixtures;`) rather than through a cargo
//! feature, so the library carries no test code: outbox records and a real mosquitto started
//! on a free loopback port.

// Each includer uses a part of it.
#![allow(dead_code)]

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use gateway::incident::{EventKind, IncidentEvent};
use gateway::outbox::{OutboxRecord, RECORD_SCHEMA};
use gateway::rules::IncidentKind;

/// A `misparked_bike` incident event of `camera`'s `pavement` zone, in grid `grid-02` of
/// steward `steward-wang` (topics under `<prefix>/lixia/heping-3/grid-02/`): the incident
/// started at `started_ms`, the event is its `seq`th, at `started_ms + seq`.
pub fn record(camera: &str, started_ms: i64, seq: u32, event: EventKind) -> OutboxRecord {
    OutboxRecord {
        schema: RECORD_SCHEMA,
        event: IncidentEvent {
            incident_id: format!("{camera}:pavement:misparked_bike:{started_ms}"),
            seq,
            event,
            kind: IncidentKind::MisparkedBike,
            camera: camera.into(),
            zone: "pavement".into(),
            t_ms: started_ms + i64::from(seq),
            started_ms,
            score: 0.8,
            count: 1,
            detail: "1 bike stationary 5 min".into(),
            objects: Vec::new(),
        },
        street: "lixia".into(),
        community: "heping-3".into(),
        grid: "grid-02".into(),
        steward: "steward-wang".into(),
        snapshot: None,
        clip_url: None,
        followup: None,
        answer: None,
    }
}

/// A loopback port with nothing listening on it.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A mosquitto process (scripts/setup installs it).
pub struct Mosquitto {
    /// Its loopback port.
    pub port: u16,
    dir: tempfile::TempDir,
    extra: String,
    /// Persistence on (a restart keeps sessions and queued messages) and a full log.
    persistent: bool,
    child: Option<Child>,
}

impl Mosquitto {
    /// Plain MQTT on a free port, anonymous, persistent.
    pub fn start() -> Self {
        Self::start_with(free_port(), "allow_anonymous true\n")
    }

    /// On `port`, with extra config lines (listener options, auth), persistent.
    pub fn start_with(port: u16, extra: &str) -> Self {
        Self::launched(port, extra, true)
    }

    /// Plain MQTT on a free port, anonymous, nothing written to disk (benchmarks: no autosave
    /// or log lines competing with the gateway's fsyncs).
    pub fn start_ephemeral() -> Self {
        Self::launched(free_port(), "allow_anonymous true\n", false)
    }

    fn launched(port: u16, extra: &str, persistent: bool) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut broker = Mosquitto { port, dir, extra: extra.to_string(), persistent, child: None };
        broker.launch();
        broker
    }

    fn launch(&mut self) {
        let dir = self.dir.path();
        // Started as root, mosquitto drops to its own user; it must still be able to write
        // its persistence file and log here.
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
        let config = dir.join("mosquitto.conf");
        let mut text = format!("listener {} 127.0.0.1\n{}", self.port, self.extra);
        if self.persistent {
            text.push_str(&format!(
                "persistence true\npersistence_location {0}/\nautosave_interval 1\n\
                 max_queued_messages 100000\nmax_inflight_messages 0\nlog_dest file {0}/mosquitto.log\n\
                 log_type all\n",
                dir.display()
            ));
        }
        std::fs::write(&config, text).unwrap();
        let child = Command::new(mosquitto_binary())
            .arg("-c")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mosquitto (scripts/setup installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "mosquitto did not listen on {}: {}", self.port, self.log());
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops the broker cleanly (SIGTERM: it saves sessions and queued messages).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same state.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// The broker's log, for failure messages (empty when not persistent).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("mosquitto.log")).unwrap_or_default()
    }

    /// Publishes one message with `mosquitto_pub` (QoS 1).
    pub fn publish(&self, topic: &str, payload: &str) {
        let status = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-q", "1", "-t", topic, "-m", payload])
            .status()
            .unwrap();
        assert!(status.success(), "mosquitto_pub failed");
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn mosquitto_binary() -> PathBuf {
    ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"]
        .iter()
        .map(PathBuf::from)
        .find(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("mosquitto"))
}
