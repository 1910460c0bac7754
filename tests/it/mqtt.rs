//! Delivery against a real mosquitto (and a scripted hung broker): every committed incident
//! event reaches a steward's persistent session across broker restarts, a hung broker and a
//! SIGKILLed gateway; reminders and escalations fire on time on an injected clock and survive
//! a restart; answers stop them and false alarms are counted; payloads match the schema.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use gateway::deliver::{Clock, Delivery, DeliverySettings};
use gateway::incident::EventKind;
use gateway::outbox::{Outbox, OutboxRecord};
use tokio_util::sync::CancellationToken;

use super::broker::{HungBroker, Mosquitto, Subscriber};
use super::fixtures::record;
use super::support::{eventually, project_root};

/// A clock the test moves.
#[derive(Default)]
struct ManualClock(AtomicI64);

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

/// `[mqtt]` and `[escalation]` as a gateway config would have them.
fn settings(port: u16, extra_mqtt: &str, escalation: &str) -> DeliverySettings {
    let text = format!(
        "[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"gw-test\"\nreconnect_max_secs = 2\n{extra_mqtt}\n\
         [escalation]\n{escalation}\n"
    );
    let config = gateway::config::parse(&text, Path::new("/")).unwrap();
    DeliverySettings { mqtt: config.mqtt.unwrap(), escalation: config.escalation, health: None }
}

/// The delivery side of a gateway, in process.
struct Gateway {
    clock: Arc<dyn Clock>,
    outbox: Arc<Outbox>,
    delivery: Option<Delivery>,
    shutdown: CancellationToken,
}

impl Gateway {
    fn start(settings: DeliverySettings, state: &Path, clock: Arc<dyn Clock>) -> Self {
        // The gateway's logs, shown for failing tests (`TEST_LOG=debug` for more).
        let filter = std::env::var("TEST_LOG").unwrap_or_else(|_| "info".into());
        let _ = tracing_subscriber::fmt().with_test_writer().with_env_filter(filter).try_init();
        let outbox = Arc::new(Outbox::open(&state.join("outbox.redb"), 100_000).unwrap());
        let shutdown = CancellationToken::new();
        let delivery = Delivery::start(settings, outbox.clone(), clock.clone(), shutdown.clone()).unwrap();
        Gateway { clock, outbox, delivery: Some(delivery), shutdown }
    }

    /// Commits records at the gateway's clock's now, as `gateway run` does.
    fn commit(&self, records: &[OutboxRecord]) {
        self.outbox.enqueue(records, self.clock.now_ms()).unwrap();
        self.delivery.as_ref().unwrap().wake();
    }

    async fn stop(mut self) {
        self.shutdown.cancel();
        self.delivery.take().unwrap().stopped().await;
    }
}

/// Seq numbers of the first arrival of each event of `incident`, in arrival order.
fn first_arrivals(subscriber: &Subscriber, incident: &str) -> Vec<u64> {
    let mut seen = BTreeSet::new();
    subscriber
        .on("/incidents/")
        .iter()
        .filter(|m| m.payload["incident_id"] == incident)
        .filter_map(|m| m.payload["seq"].as_u64())
        .filter(|seq| seen.insert(*seq))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_arrives_in_order_across_a_broker_restart() {
    let mut broker = Mosquitto::start();
    let steward = Subscriber::start(broker.port, "steward-wang", "lixia/+/+/+/incidents/#");
    let state = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(settings(broker.port, "", ""), state.path(), Arc::new(gateway::deliver::SystemClock));
    let mut sent = BTreeSet::new();
    for seq in 1..=300u32 {
        let camera = ["gate-1", "gate-2", "gate-3"][seq as usize % 3];
        let event = if seq <= 3 { EventKind::Opened } else { EventKind::Updated };
        let record = record(camera, 0, seq, event);
        sent.insert((record.event.incident_id.clone(), u64::from(seq)));
        gateway.commit(&[record]);
        tokio::time::sleep(Duration::from_millis(5)).await;
        if seq == 100 {
            tokio::task::block_in_place(|| broker.stop());
        }
        if seq == 200 {
            tokio::task::block_in_place(|| broker.restart());
        }
    }
    let all_there = eventually(Duration::from_secs(60), || steward.incident_events().is_superset(&sent)).await;
    let received = steward.incident_events();
    let missing: Vec<_> = sent.difference(&received).collect();
    assert!(
        all_there,
        "{} of {} events never arrived: {:?}",
        missing.len(),
        sent.len(),
        &missing[..missing.len().min(10)]
    );
    assert!(eventually(Duration::from_secs(10), || gateway.outbox.depth().unwrap() == 0).await, "outbox not drained");
    for camera in ["gate-1", "gate-2", "gate-3"] {
        let arrivals = first_arrivals(&steward, &format!("{camera}:pavement:misparked_bike:0"));
        assert!(arrivals.windows(2).all(|w| w[0] < w[1]), "{camera} out of order: {arrivals:?}");
    }
    let total = steward.on("/incidents/").len();
    eprintln!(
        "broker restart: {} events sent, {} received, {} duplicates, 0 lost",
        sent.len(),
        total,
        total - sent.len()
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_broker_loses_nothing_and_gets_no_more_than_the_window() {
    // The steward's session exists on the real broker before it goes away.
    let mut broker = Mosquitto::start();
    let port = broker.port;
    let steward = Subscriber::start(port, "steward-li", "lixia/+/+/+/incidents/#");
    tokio::task::block_in_place(|| broker.stop());
    let hung = HungBroker::start(Some(port));
    let state = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(
        settings(port, "inflight = 8\nack_timeout_secs = 2\n", ""),
        state.path(),
        Arc::new(gateway::deliver::SystemClock),
    );
    let records: Vec<OutboxRecord> = (1..=40).map(|i| record(&format!("cam-{i}"), 0, 1, EventKind::Opened)).collect();
    gateway.commit(&records);
    let reconnected = eventually(Duration::from_secs(30), || hung.connections.load(Ordering::Relaxed) >= 3).await;
    assert!(reconnected, "the gateway never gave up on the hung broker");
    let per_connection = hung.publishes_per_connection.lock().unwrap().clone();
    assert!(per_connection.iter().all(|n| *n <= 8), "more than the window in flight: {per_connection:?}");
    assert!(per_connection.iter().any(|n| *n > 0), "nothing was tried: {per_connection:?}");
    assert_eq!(gateway.outbox.depth().unwrap(), 40, "unacknowledged events must stay in the outbox");
    // The real broker comes back on the same port: everything arrives.
    hung.stop();
    tokio::task::block_in_place(|| broker.restart());
    let sent: BTreeSet<(String, u64)> = records.iter().map(|r| (r.event.incident_id.clone(), 1)).collect();
    let all_there = eventually(Duration::from_secs(60), || steward.incident_events().is_superset(&sent)).await;
    assert!(all_there, "{} of 40 arrived after the hung broker", steward.incident_events().len());
    eprintln!("hung broker: publishes per connection {per_connection:?}, 40 sent, 0 lost");
    gateway.stop().await;
}

/// The child of the SIGKILL test: commits `count` events from `first`, printing each seq once
/// its commit returned, while delivering; then keeps delivering. Ignored on its own.
#[test]
#[ignore = "a child process of the SIGKILL test"]
fn mqtt_kill_child() {
    let Ok(spec) = std::env::var("MQTT_KILL_CHILD") else { return };
    let parts: Vec<&str> = spec.split(',').collect();
    let (port, state, first, count): (u16, &str, u32, u32) =
        (parts[0].parse().unwrap(), parts[1], parts[2].parse().unwrap(), parts[3].parse().unwrap());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let gateway = Gateway::start(settings(port, "", ""), Path::new(state), Arc::new(gateway::deliver::SystemClock));
        for seq in first..first + count {
            gateway.commit(&[record("gate-9", 0, seq, EventKind::Updated)]);
            println!("committed {seq}");
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        std::future::pending::<()>().await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_committed_event_arrives_after_the_gateway_is_killed() {
    let broker = Mosquitto::start();
    let steward = Subscriber::start(broker.port, "steward-zhao", "lixia/+/+/+/incidents/#");
    let state = tempfile::tempdir().unwrap();
    let mut committed: BTreeSet<u64> = BTreeSet::new();
    let spawn = |first: u32, count: u32| {
        let spec = format!("{},{},{first},{count}", broker.port, state.path().display());
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["mqtt::mqtt_kill_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env("MQTT_KILL_CHILD", spec)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        (child, lines)
    };
    // Round 1: killed mid-stream.
    let (mut child, mut lines) = spawn(1, 100_000);
    while committed.len() < 400 {
        let line = lines.next().expect("child stopped early").unwrap();
        if let Some(seq) = line.strip_prefix("committed ") {
            committed.insert(seq.parse().unwrap());
        }
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    for line in lines.map_while(Result::ok) {
        if let Some(seq) = line.strip_prefix("committed ") {
            committed.insert(seq.parse().unwrap());
        }
    }
    // Round 2: restarted on the same state; it sends what was left, and 50 more.
    let next = committed.last().unwrap() + 1;
    let (mut child, lines) = spawn(next as u32, 50);
    let last = next + 49;
    for line in lines.map_while(Result::ok) {
        if let Some(seq) = line.strip_prefix("committed ") {
            let seq: u64 = seq.parse().unwrap();
            committed.insert(seq);
            if seq == last {
                break;
            }
        }
    }
    let incident = "gate-9:pavement:misparked_bike:0".to_string();
    let sent: BTreeSet<(String, u64)> = committed.iter().map(|seq| (incident.clone(), *seq)).collect();
    let all_there = eventually(Duration::from_secs(60), || steward.incident_events().is_superset(&sent)).await;
    child.kill().unwrap();
    child.wait().unwrap();
    let received = steward.incident_events();
    let lost = sent.difference(&received).count();
    assert!(all_there, "{lost} of {} committed events lost after SIGKILL", sent.len());
    let arrivals = first_arrivals(&steward, &incident);
    assert!(arrivals.windows(2).all(|w| w[0] < w[1]), "out of order after the restart");
    eprintln!(
        "gateway SIGKILL: {} committed, {} received with duplicates, 0 lost",
        sent.len(),
        steward.on("/incidents/").len()
    );
}

/// Issue 12: one unreadable outbox record used to fail every read of the outbox, and delivery
/// stalled behind it forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_outbox_record_is_quarantined_and_the_rest_delivered() {
    let broker = Mosquitto::start();
    let steward = Subscriber::start(broker.port, "steward-dead", "lixia/+/+/+/incidents/#");
    let state = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(settings(broker.port, "", ""), state.path(), Arc::new(gateway::deliver::SystemClock));
    gateway.commit(&[record("gate-2", 3, 1, EventKind::Opened)]);
    gateway.outbox.insert_raw_for_test(b"{\"schema\": 1, \"event\": tru").unwrap();
    let records: Vec<OutboxRecord> = (2..=5).map(|seq| record("gate-2", 3, seq, EventKind::Updated)).collect();
    gateway.commit(&records);
    let sent: BTreeSet<(String, u64)> =
        (1..=5).map(|seq| ("gate-2:pavement:misparked_bike:3".to_string(), seq)).collect();
    let all_there = eventually(Duration::from_secs(20), || steward.incident_events().is_superset(&sent)).await;
    assert!(all_there, "delivery stalled behind the bad record: {:?}", steward.incident_events());
    assert!(eventually(Duration::from_secs(10), || gateway.outbox.depth().unwrap() == 0).await, "outbox not drained");
    assert_eq!(gateway.outbox.quarantined(), 1);
    assert_eq!(gateway.delivery.as_ref().unwrap().stats.records_quarantined.load(Ordering::Relaxed), 1);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persistent_subscriber_that_was_offline_gets_everything_it_missed() {
    let broker = Mosquitto::start();
    let mut steward = Subscriber::start(broker.port, "steward-phone-offline", "lixia/+/+/+/incidents/#");
    steward.disconnect();
    let state = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(settings(broker.port, "", ""), state.path(), Arc::new(gateway::deliver::SystemClock));
    let records: Vec<OutboxRecord> = (1..=20).map(|seq| record("gate-4", 7, seq, EventKind::Updated)).collect();
    gateway.commit(&records);
    assert!(eventually(Duration::from_secs(20), || gateway.outbox.depth().unwrap() == 0).await, "not delivered");
    assert!(steward.on("").is_empty());
    steward.connect();
    let sent: BTreeSet<(String, u64)> =
        (1..=20).map(|seq| ("gate-4:pavement:misparked_bike:7".to_string(), seq)).collect();
    assert!(
        eventually(Duration::from_secs(20), || steward.incident_events() == sent).await,
        "got {:?}",
        steward.incident_events()
    );
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_incidents_are_reminded_then_escalated_on_time_even_across_a_restart() {
    let broker = Mosquitto::start();
    let everyone = Subscriber::start(broker.port, "centre-console", "#");
    let state = tempfile::tempdir().unwrap();
    let clock = Arc::new(ManualClock::default());
    let escalation = "renotify_after_secs = 600\nescalate_after_secs = 1800\n\
                      [escalation.grids.grid-02]\nworker_topic = \"lixia/workers/grid-02\"\n";
    let start = 1_000_000i64;
    clock.0.store(start, Ordering::SeqCst);
    let gateway = Gateway::start(settings(broker.port, "", escalation), state.path(), clock.clone());
    let unanswered = record("gate-5", start, 1, EventKind::Opened);
    let acked = record("gate-6", start, 1, EventKind::Opened);
    let false_alarm = record("gate-7", start, 1, EventKind::Opened);
    gateway.commit(&[unanswered.clone(), acked.clone(), false_alarm.clone()]);
    assert!(eventually(Duration::from_secs(20), || everyone.on("/incidents/").len() >= 3).await);
    // Answers, as a steward's phone sends them; and garbage, which must not hurt.
    let ack_topic = "lixia/lixia/heping-3/grid-02/ack";
    broker.publish(ack_topic, "{not json");
    broker.publish(ack_topic, r#"{"incident_id":"nope:1","action":"ack","by":"wang"}"#);
    broker
        .publish(ack_topic, &format!(r#"{{"incident_id":"{}","action":"ack","by":"wang"}}"#, acked.event.incident_id));
    broker.publish(
        ack_topic,
        &format!(r#"{{"incident_id":"{}","action":"false_alarm","by":"wang"}}"#, false_alarm.event.incident_id),
    );
    let answered = eventually(Duration::from_secs(10), || {
        gateway.delivery.as_ref().unwrap().stats.answers.load(Ordering::Relaxed) == 2
    })
    .await;
    assert!(answered, "answers not recorded");
    assert_eq!(gateway.delivery.as_ref().unwrap().stats.answers_ignored.load(Ordering::Relaxed), 2);

    // One second before T1: nothing. At T1: one reminder, for the unanswered incident only.
    clock.0.store(start + 599_000, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(everyone.on("/reminders/").is_empty(), "reminded before T1");
    clock.0.store(start + 600_000, Ordering::SeqCst);
    let reminded = eventually(Duration::from_secs(10), || !everyone.on("/reminders/").is_empty()).await;
    assert!(reminded, "no reminder at T1: {}", broker.log());
    let reminders = everyone.on("/reminders/");
    assert_eq!(reminders.len(), 1, "{reminders:?}");
    assert_eq!(reminders[0].topic, "lixia/lixia/heping-3/grid-02/reminders/misparked_bike");
    assert_eq!(reminders[0].payload["incident_id"], unanswered.event.incident_id.as_str());
    assert_eq!(reminders[0].payload["followup"]["unanswered_ms"], 600_000);

    // The gateway restarts before T2; the timer is on disk.
    gateway.stop().await;
    let gateway = Gateway::start(settings(broker.port, "", escalation), state.path(), clock.clone());
    clock.0.store(start + 1_799_000, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert!(everyone.on("escalations").is_empty() && everyone.on("workers").is_empty(), "escalated before T2");
    clock.0.store(start + 1_800_000, Ordering::SeqCst);
    let escalated = eventually(Duration::from_secs(10), || {
        everyone.on("lixia/workers/grid-02").len() == 1 && everyone.on("lixia/centre/escalations").len() == 1
    })
    .await;
    assert!(escalated, "no escalation at T2: {:?}", everyone.on(""));
    let centre = &everyone.on("lixia/centre/escalations")[0];
    assert_eq!(centre.payload["incident_id"], unanswered.event.incident_id.as_str());
    assert_eq!(centre.payload["followup"]["recipient"], "centre");
    assert_eq!(everyone.on("/reminders/").len(), 1, "a second reminder was sent");

    // Ops see the false alarm in the gateway's retained status.
    let status = everyone.on("lixia/status/gateway/gw-test");
    let last = status.last().expect("gateway status published");
    assert_eq!(last.payload["state"], "online");
    assert_eq!(last.payload["false_alarms"]["gate-7/pavement/misparked_bike"], 1);
    gateway.stop().await;
    let offline = eventually(Duration::from_secs(5), || {
        everyone.on("lixia/status/gateway/gw-test").last().is_some_and(|m| m.payload["state"] == "offline")
    })
    .await;
    assert!(offline, "no offline status on a clean stop");
}

#[test]
fn payloads_and_acks_follow_the_schemas_in_the_repo() {
    use gateway::deliver::payload::{incident_payload, INCIDENT_SCHEMA};
    use gateway::followup::Due;
    use gateway::outbox::{Notice, Recipient};
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(project_root().join("schemas/incident-event.v1.schema.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(schema["properties"]["schema"]["const"], INCIDENT_SCHEMA);
    let mut opened = record("gate-1", 5, 1, EventKind::Opened);
    opened.event.objects = vec![gateway::rules::ObjectRef {
        track_id: 3,
        class_id: 1,
        bbox: gateway::geometry::BoxNorm { x1: 0.1, y1: 0.2, x2: 0.3, y2: 0.4 },
        score: 0.9,
    }];
    opened.snapshot = Some("evidence.jpg".into());
    // Revision 2 of the schema (issue 16): the optional clip URL.
    opened.clip_url = Some("http://127.0.0.1:8080/api/incidents/gate-1%3Adoor%3Afallen_person%3A5/clip.mp4".into());
    let mut reminder = record("gate-1", 5, 1, EventKind::Opened);
    reminder.followup = Some(Notice { due: Due::Reminder, recipient: Recipient::Steward, unanswered_ms: 600_000 });
    let cleared = record("gate-1", 5, 2, EventKind::Cleared);
    let good = [
        incident_payload("lixia", &opened, Some(&[0xff, 0xd8, 0xff, 0xd9]), 1000),
        incident_payload("lixia", &opened, Some(&[0; 2000]), 1000),
        incident_payload("lixia", &reminder, None, 1000),
        incident_payload("lixia", &cleared, None, 1000),
    ];
    let mut bogus: serde_json::Value = serde_json::from_slice(&good[0]).unwrap();
    bogus["event"] = "exploded".into();
    let good: Vec<serde_json::Value> = good.iter().map(|p| serde_json::from_slice(p).unwrap()).collect();
    let acks_good = [
        serde_json::json!({"incident_id": "a:b:c:1", "action": "resolved", "by": "wang", "at_ms": 5}),
        serde_json::json!({"incident_id": "a:b:c:1", "action": "false_alarm", "by": "wang"}),
        serde_json::json!({"incident_id": "a:b:c:1", "action": "ack", "by": "王师傅 (grid 2)"}),
    ];
    let acks_bad = [
        serde_json::json!({"incident_id": "a", "action": "maybe", "by": "wang"}),
        serde_json::json!({"incident_id": "a", "action": "ack", "by": "wang\nINFO gateway: forged"}),
        serde_json::json!({"incident_id": "a", "action": "ack", "by": "  "}),
        serde_json::json!({"incident_id": "a", "action": "ack", "by": "x".repeat(65)}),
    ];
    // Whatever the schema accepts, the gateway's parser accepts, and the other way round.
    for ack in &acks_good {
        assert!(gateway::deliver::payload::parse_ack(ack.to_string().as_bytes(), 0).is_ok());
    }
    for ack in &acks_bad {
        assert!(gateway::deliver::payload::parse_ack(ack.to_string().as_bytes(), 0).is_err());
    }
    let cases = serde_json::json!({
        "incident": {"valid": good, "invalid": [bogus]},
        "ack": {"valid": acks_good, "invalid": acks_bad},
    });
    let script = r#"
import json, sys, jsonschema
root, cases = sys.argv[1], json.load(sys.stdin)
for name, file in (("incident", "incident-event.v1.schema.json"), ("ack", "ack.v1.schema.json")):
    schema = json.load(open(f"{root}/schemas/{file}"))
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    for instance in cases[name]["valid"]:
        validator.validate(instance)
    for instance in cases[name]["invalid"]:
        if validator.is_valid(instance):
            sys.exit(f"{name}: accepted an invalid instance {instance}")
print("ok")
"#;
    let mut child = Command::new("python3")
        .args(["-c", script, project_root().to_str().unwrap()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 (scripts/setup --for-tests installs python3-jsonschema)");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), cases.to_string().as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success() && String::from_utf8_lossy(&output.stdout).trim() == "ok",
        "schema check failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_run_delivers_an_incident_over_tls_with_a_password_it_never_logs() {
    super::support::require_runtime();
    let certificates = tempfile::tempdir().unwrap();
    let password = "s3cret-Gw-pw-4711";
    let listener =
        super::broker::tls_and_passwords(certificates.path(), &[("gateway", password), ("steward", "steward-pw")]);
    let broker = Mosquitto::start_with(super::support::closed_port(), &listener);
    let ca = certificates.path().join("ca.pem");
    let steward = Subscriber::start_with(
        broker.port,
        "steward-tls",
        "lixia/#",
        &["--cafile", ca.to_str().unwrap(), "-u", "steward", "-P", "steward-pw"],
    );
    let state = tempfile::tempdir().unwrap();
    let footage = super::replay::parked_bike_clip();
    let cameras = format!(
        r#"
[mqtt]
url = "mqtts://127.0.0.1:{port}"
ca_file = "{ca}"
username = "gateway"
password_env = "GATEWAY_TEST_MQTT_PASSWORD"
client_id = "gw-e2e"

[cameras.gate-8]
url = "file:{footage}"
street = "wenhua-east"
community = "shanda-road-3"
grid = "grid-08"
steward = "steward-zhang"
analysis_interval_ms = 1000
decode = "every_frame"

[[cameras.gate-8.zones]]
id = "pavement"
kind = "no_parking"
polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]]
dwell_ms = 3000
"#,
        port = broker.port,
        ca = ca.display(),
        footage = footage.display()
    );
    let config = state.path().join("gateway.toml");
    std::fs::write(&config, super::support::config_text_in(&state.path().join("state"), &cameras)).unwrap();
    let mut gateway = Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(["run", "--run-for-secs", "60", "--config"])
        .arg(&config)
        .env("GATEWAY_TEST_MQTT_PASSWORD", password)
        .env("RUST_LOG", "info,ort=warn,gateway=debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = super::support::DrainedOutput::of(&mut gateway);
    let opened = eventually(Duration::from_secs(45), || {
        steward
            .on("lixia/wenhua-east/shanda-road-3/grid-08/incidents/misparked_bike")
            .iter()
            .any(|m| m.payload["event"] == "opened")
    })
    .await;
    let online = steward.on("lixia/status/cameras/gate-8").iter().any(|m| m.payload["state"] == "online");
    // A clean stop: SIGTERM, then the retained gateway status says so.
    let _ = Command::new("kill").args(["-TERM", &gateway.id().to_string()]).status();
    let status = tokio::task::block_in_place(|| gateway.wait()).unwrap();
    let (stdout, stderr) = output.join();
    let logs = stdout + &stderr;
    let delivery_logs: Vec<&str> =
        logs.lines().filter(|l| l.contains("deliver") || l.contains("MQTT") || l.contains("incident")).collect();
    assert!(opened, "no incident arrived over TLS; gateway said:\n{}", delivery_logs.join("\n"));
    assert!(online, "no retained online status for the camera: {:?}", steward.on("status"));
    let incident =
        steward.on("/incidents/misparked_bike").into_iter().find(|m| m.payload["event"] == "opened").unwrap();
    assert_eq!(incident.payload["place"]["steward"], "steward-zhang");
    assert_eq!(incident.payload["ack_topic"], "lixia/wenhua-east/shanda-road-3/grid-08/ack");
    let jpeg = incident.payload["snapshot"]["data"].as_str().expect("snapshot inline");
    assert!(jpeg.starts_with("/9j/"), "not a JPEG");
    assert!(status.success(), "gateway exit {status:?}");
    let offline = eventually(Duration::from_secs(5), || {
        steward.on("lixia/status/gateway/gw-e2e").last().is_some_and(|m| m.payload["state"] == "offline")
    })
    .await;
    assert!(offline, "no offline status after SIGTERM: {:?}", steward.on("status/gateway"));
    assert!(!logs.contains(password), "the MQTT password appears in the gateway's logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retained_gateway_status_says_degraded_while_commits_fail() {
    let broker = Mosquitto::start();
    let ops = Subscriber::start(broker.port, "ops", "lixia/status/gateway/#");
    let state = tempfile::tempdir().unwrap();
    let gateway = Gateway::start(settings(broker.port, "", ""), state.path(), Arc::new(gateway::deliver::SystemClock));
    let topic = "lixia/status/gateway/gw-test";
    let last_state = |ops: &Subscriber| ops.on(topic).last().map(|m| m.payload.clone());
    let online = eventually(Duration::from_secs(10), || last_state(&ops).is_some_and(|s| s["state"] == "online")).await;
    assert!(online, "no online status: {:?}", ops.on(topic));

    // The run loop reports a failed commit (as a full disk makes it): the status follows at
    // once, not with the minute's refresh.
    gateway.outbox.commit_health().failed("No space left on device (os error 28)", 3);
    let degraded =
        eventually(Duration::from_secs(10), || last_state(&ops).is_some_and(|s| s["state"] == "degraded")).await;
    assert!(degraded, "no degraded status: {:?}", ops.on(topic));
    let status = last_state(&ops).unwrap();
    assert!(status["reason"].as_str().is_some_and(|r| r.contains("No space left")), "{status}");
    assert_eq!(status["events_held"], 3);

    gateway.outbox.commit_health().recovered();
    let recovered = eventually(Duration::from_secs(10), || {
        last_state(&ops).is_some_and(|s| s["state"] == "online" && s["events_held"] == 0)
    })
    .await;
    assert!(recovered, "still degraded after recovery: {:?}", ops.on(topic));
    gateway.stop().await;
}
