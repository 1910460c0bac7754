//! The gateway in-process: `app::run` with its world made by the test — the console on
//! `127.0.0.1:0`, a clock that follows tokio's paused time, a real mosquitto — so follow-up
//! timers and reloads are driven by `tokio::time::advance`, not by sleeping (issue 12).
//!
//! Virtual time moves only when a test advances it: while a test waits for something real
//! (the broker, an HTTP answer, the model loading), [`hold`] keeps the runtime busy, so tokio
//! never auto-advances its paused clock behind the test's back. No camera runs here (a
//! current-thread runtime cannot run the frame path's `block_in_place`): incidents are
//! committed to the outbox beforehand, as a previous run would have left them.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::app::{self, CheckedConfig, Failure, Requests, World};
use gateway::deliver::Clock;
use gateway::incident::{EventKind, IncidentEvent};
use gateway::outbox::{Outbox, OutboxRecord, RECORD_SCHEMA};
use gateway::rules::IncidentKind;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::broker::{Mosquitto, Subscriber};
use super::support::{config_text_in, require_runtime};

const TOKEN: &str = "app-console-token-0123456789";
/// Wall-clock milliseconds when the test's clock starts.
const EPOCH_MS: i64 = 1_800_000_000_000;

/// Wall-clock time that moves with tokio's (paused) clock.
struct PausedClock {
    start: tokio::time::Instant,
}

impl Clock for PausedClock {
    fn now_ms(&self) -> i64 {
        EPOCH_MS + self.start.elapsed().as_millis() as i64
    }
}

/// Lets real things happen (sockets, the broker, threads) without virtual time moving, until
/// `condition` holds or `limit` of real time passes (a liveness bound); returns whether it held.
async fn hold(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while !condition() {
        if Instant::now() > deadline {
            return false;
        }
        // Busy (never idle), so tokio does not auto-advance; the short sleep spares the CPU.
        std::thread::sleep(Duration::from_millis(2));
        tokio::task::yield_now().await;
    }
    true
}

/// An `opened` event of `camera`'s pavement zone in grid-08 of steward-zhang.
fn opened(camera: &str, start_ms: i64) -> OutboxRecord {
    OutboxRecord {
        schema: RECORD_SCHEMA,
        event: IncidentEvent {
            incident_id: format!("{camera}:pavement:misparked_bike:{start_ms}"),
            seq: 1,
            event: EventKind::Opened,
            kind: IncidentKind::MisparkedBike,
            camera: camera.into(),
            zone: "pavement".into(),
            t_ms: start_ms,
            started_ms: start_ms,
            score: 0.8,
            count: 1,
            detail: "1 bike stationary 3 s".into(),
            objects: Vec::new(),
        },
        street: "wenhua-east".into(),
        community: "shanda-road-3".into(),
        grid: "grid-08".into(),
        steward: "steward-zhang".into(),
        snapshot: None,
        clip_url: None,
        followup: None,
        answer: None,
    }
}

/// A gateway run in-process.
struct InProcess {
    dir: tempfile::TempDir,
    config: PathBuf,
    console: std::net::SocketAddr,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), Failure>>,
}

impl InProcess {
    /// Commits `records` as a previous run would have, then runs the gateway with a console,
    /// the broker on `mqtt_port`, follow-ups after 600 s and 1800 s, and no cameras.
    async fn start(mqtt_port: u16, records: &[OutboxRecord], clock: Arc<PausedClock>) -> InProcess {
        let filter = std::env::var("TEST_LOG").unwrap_or_else(|_| "info,ort=warn".into());
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter(filter).try_init();
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        std::fs::create_dir_all(&state).unwrap();
        let outbox = Outbox::open(&state.join("outbox.redb"), 100_000).unwrap();
        outbox.enqueue(records, clock.now_ms()).unwrap();
        drop(outbox);
        std::fs::write(dir.path().join("console.token"), format!("{TOKEN}\n")).unwrap();
        let text = format!(
            "[console]\nbind = \"127.0.0.1:0\"\ntoken_file = \"console.token\"\n\n\
             [mqtt]\nurl = \"mqtt://127.0.0.1:{mqtt_port}\"\nclient_id = \"gw-app-{mqtt_port}\"\n\n\
             [escalation]\nrenotify_after_secs = 600\nescalate_after_secs = 1800\n\
             [escalation.grids.grid-08]\nworker_topic = \"lixia/workers/grid-08\"\n"
        );
        let config = dir.path().join("gateway.toml");
        std::fs::write(&config, config_text_in(&state, &text)).unwrap();
        let checked = CheckedConfig::load(&config).expect("the test config validates");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let console = listener.local_addr().unwrap();
        let world = World {
            config_path: config.clone(),
            console: Some(listener),
            notifier: None,
            clock,
            requests: Requests::new(),
        };
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(app::run(checked, world, shutdown.clone()));
        InProcess { dir, config, console, shutdown, task }
    }

    /// `curl` on a thread (the runtime stays busy meanwhile); (status, body).
    async fn http(&self, method: &str, path: &str, body: Option<&str>) -> (u16, String) {
        let mut command = std::process::Command::new("curl");
        command.args(["-s", "-o", "-", "-w", "\n%{http_code}", "-X", method]);
        command.arg(format!("http://{}{path}", self.console));
        command.args(["-H", &format!("Authorization: Bearer {TOKEN}")]);
        if let Some(body) = body {
            command.args(["-H", "Content-Type: application/json", "--data-binary", body]);
        }
        let call = std::thread::spawn(move || command.output().expect("curl runs"));
        assert!(hold(Duration::from_secs(30), || call.is_finished()).await, "{method} {path}: no answer");
        let output = call.join().unwrap();
        let text = String::from_utf8_lossy(&output.stdout).to_string();
        let (body, status) = text.rsplit_once('\n').unwrap_or(("", "0"));
        (status.trim().parse().unwrap_or(0), body.to_string())
    }

    async fn stop(self) -> tempfile::TempDir {
        self.shutdown.cancel();
        assert!(hold(Duration::from_secs(30), || self.task.is_finished()).await, "the gateway did not stop");
        self.task.await.unwrap().expect("a clean stop");
        self.dir
    }
}

/// Waits (real time, virtual time still) until delivery is connected and `records` arrived.
async fn wait_online(everyone: &Subscriber, client_id: &str, events: usize) {
    let online = hold(Duration::from_secs(60), || {
        everyone.on(&format!("lixia/status/gateway/{client_id}")).last().is_some_and(|m| m.payload["state"] == "online")
            && everyone.on("/incidents/").len() >= events
    })
    .await;
    assert!(online, "not online with {events} events delivered: {:?}", everyone.on(""));
}

#[tokio::test(start_paused = true)]
async fn an_unanswered_incident_is_reminded_then_escalated_when_the_clock_says_so() {
    require_runtime();
    let broker = Mosquitto::start();
    let everyone = Subscriber::start(broker.port, "app-centre", "#");
    let clock = Arc::new(PausedClock { start: tokio::time::Instant::now() });
    let incident = opened("gate-5", EPOCH_MS);
    let gateway = InProcess::start(broker.port, std::slice::from_ref(&incident), clock.clone()).await;
    wait_online(&everyone, &format!("gw-app-{}", broker.port), 1).await;

    // T1 (600 s): one reminder to the steward; nothing to the workers or the centre.
    tokio::time::advance(Duration::from_secs(1799)).await;
    assert!(hold(Duration::from_secs(20), || everyone.on("/reminders/").len() == 1).await, "no reminder at T1");
    assert_eq!(everyone.on("/reminders/")[0].topic, "lixia/wenhua-east/shanda-road-3/grid-08/reminders/misparked_bike");
    // The tick after T1 has run, a second before T2: no escalation.
    assert!(!hold(Duration::from_millis(500), || !everyone.on("escalations").is_empty()).await, "escalated early");
    assert!(everyone.on("lixia/workers").is_empty(), "workers called before T2");

    // T2 (1800 s): the grid's workers and the centre.
    tokio::time::advance(Duration::from_secs(1)).await;
    let escalated = hold(Duration::from_secs(20), || {
        everyone.on("lixia/workers/grid-08").len() == 1 && everyone.on("lixia/centre/escalations").len() == 1
    })
    .await;
    assert!(escalated, "no escalation at T2: {:?}", everyone.on(""));
    let centre = &everyone.on("lixia/centre/escalations")[0];
    assert_eq!(centre.payload["incident_id"], incident.event.incident_id.as_str());
    assert_eq!(centre.payload["followup"]["unanswered_ms"], 1_800_000);
    assert_eq!(everyone.on("/reminders/").len(), 1, "a second reminder was sent");
    assert_eq!(clock.now_ms() - EPOCH_MS, 1_800_000, "virtual time moved on its own");
    gateway.stop().await;
}

#[tokio::test(start_paused = true)]
async fn an_answer_from_the_console_is_echoed_on_mqtt_and_stops_the_escalation() {
    require_runtime();
    let broker = Mosquitto::start();
    let everyone = Subscriber::start(broker.port, "app-steward", "#");
    let clock = Arc::new(PausedClock { start: tokio::time::Instant::now() });
    let (answered, ignored) = (opened("gate-6", EPOCH_MS), opened("gate-7", EPOCH_MS));
    let gateway = InProcess::start(broker.port, &[answered.clone(), ignored.clone()], clock.clone()).await;
    wait_online(&everyone, &format!("gw-app-{}", broker.port), 2).await;
    let (status, _) = gateway.http("GET", "/healthz", None).await;
    assert_eq!(status, 200);

    let id = answered.event.incident_id.replace(':', "%3A");
    let path = format!("/api/incidents/{id}/answer");
    let answer = r#"{"action":"ack","by":"operator li"}"#;
    assert_eq!(gateway.http("POST", &path, Some(answer)).await, (200, r#"{"outcome":"recorded"}"#.to_string()));
    let echoed = hold(Duration::from_secs(20), || {
        everyone.on("lixia/wenhua-east/shanda-road-3/grid-08/answers/misparked_bike").iter().any(|m| {
            m.payload["incident_id"] == answered.event.incident_id.as_str()
                && m.payload["answer"]["by"] == "operator li"
        })
    })
    .await;
    assert!(echoed, "no answer echo on MQTT: {:?}", everyone.on("answers"));
    // Stamped by the world's clock (virtual time), not the machine's.
    let echo = everyone.on("/answers/").into_iter().find(|m| m.payload["answer"]["by"] == "operator li").unwrap();
    let at_ms = echo.payload["answer"]["at_ms"].as_i64().unwrap_or_else(|| panic!("{}", echo.payload));
    assert!((EPOCH_MS..EPOCH_MS + 60_000).contains(&at_ms), "answered at {at_ms}: {}", echo.payload);
    let (status, body) = gateway.http("GET", &format!("/api/incidents/{id}"), None).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["state"], "acknowledged");

    // Past T2: only the unanswered incident is escalated.
    tokio::time::advance(Duration::from_secs(1800)).await;
    let escalated = hold(Duration::from_secs(20), || everyone.on("lixia/centre/escalations").len() == 1).await;
    assert!(escalated, "no escalation at T2: {:?}", everyone.on(""));
    assert!(!hold(Duration::from_millis(500), || everyone.on("lixia/centre/escalations").len() > 1).await);
    assert_eq!(everyone.on("lixia/centre/escalations")[0].payload["incident_id"], ignored.event.incident_id.as_str());
    assert!(everyone.on("/reminders/").iter().all(|m| m.payload["incident_id"] == ignored.event.incident_id.as_str()));
    gateway.stop().await;
}

#[tokio::test(start_paused = true)]
async fn a_config_file_that_fails_validation_is_refused_at_the_next_tick_and_the_running_one_stays() {
    require_runtime();
    let broker = Mosquitto::start();
    let clock = Arc::new(PausedClock { start: tokio::time::Instant::now() });
    let gateway = InProcess::start(broker.port, &[], clock).await;
    let (status, _) = gateway.http("GET", "/healthz", None).await;
    assert_eq!(status, 200);
    let good = std::fs::read_to_string(&gateway.config).unwrap();
    std::fs::write(&gateway.config, format!("{good}\n[cameras.broken]\nurl = \"http://nowhere\"\n")).unwrap();
    let rejected = "gateway_config_reloads_total{result=\"rejected\"} 1";
    // The file is looked at once a second (the run loop's tick): nothing before it turns.
    assert!(!gateway.http("GET", "/metrics", None).await.1.contains(rejected), "refused before the tick");
    tokio::time::advance(Duration::from_secs(1)).await;
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = gateway.http("GET", "/metrics", None).await.1;
        if metrics.contains(rejected) {
            break;
        }
    }
    assert!(metrics.contains(rejected), "a bad config was not refused:\n{metrics}");
    let (_, cameras) = gateway.http("GET", "/api/cameras", None).await;
    assert!(!cameras.contains("broken"), "{cameras}");
    gateway.stop().await;
}
