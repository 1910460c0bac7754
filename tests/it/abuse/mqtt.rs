//! Abuse of the mqtt surface (see ../mod.rs): whoever can publish on an ack topic (every
//! steward's phone, or anyone holding one's credentials) replays the findings of issue 11
//! against `gateway run`, a real mosquitto and a footage camera whose parked bike opens an
//! incident: a 1.1 MB message, answers queued while the gateway was away, a burst of 530
//! answers, an answer on another grid's topic, `at_ms = i64::MAX`, a newline in `by`, more
//! answers than an incident keeps. The incident is still delivered, the outbox drains, the
//! connection holds, each answer is recorded once and echoed once, and every drop is counted
//! in /metrics.

use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::super::broker::{Mosquitto, Subscriber};
use super::super::support::{eventually, require_runtime};

const TOKEN: &str = "abuse-token-0123456789abcdef";
const CLIENT_ID: &str = "gw-abuse";

/// `gateway run` with a console and one footage camera, its logs drained as it runs.
struct Gateway {
    child: Child,
    console_port: u16,
    logs: Option<crate::support::DrainedOutput>,
    _dir: tempfile::TempDir,
}

impl Gateway {
    fn start(mqtt_port: u16) -> Gateway {
        let dir = tempfile::tempdir().unwrap();
        let console_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        std::fs::write(dir.path().join("console.token"), format!("{TOKEN}\n")).unwrap();
        let text = format!(
            r#"
[console]
bind = "127.0.0.1:{console_port}"
token_file = "console.token"

[mqtt]
url = "mqtt://127.0.0.1:{mqtt_port}"
client_id = "{CLIENT_ID}"
reconnect_max_secs = 2
{gate_8}"#,
            gate_8 = super::super::support::bike_camera_toml()
        );
        let config = dir.path().join("gateway.toml");
        std::fs::write(&config, super::super::support::config_text_in(&dir.path().join("state"), &text)).unwrap();
        let (child, logs) = crate::support::spawn_run(&config, 300);
        let logs = Some(logs);
        Gateway { child, console_port, logs, _dir: dir }
    }

    /// `/metrics` (with the token, in case reads need it), or "" while the console is not up.
    fn metrics(&self) -> String {
        let output = Command::new("curl")
            .args(["-s", "-H", &format!("Authorization: Bearer {TOKEN}")])
            .arg(format!("http://127.0.0.1:{}/metrics", self.console_port))
            .output()
            .expect("curl runs");
        String::from_utf8_lossy(&output.stdout).to_string()
    }

    /// One sample of `/metrics`, by its full series name.
    fn metric(&self, series: &str) -> Option<f64> {
        metric_in(&self.metrics(), series)
    }

    /// Resident memory, kB.
    fn rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap_or_default();
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Stops the gateway (SIGTERM) and returns its logs.
    fn stop(&mut self) -> String {
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

fn metric_in(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

fn dropped(reason: &str) -> String {
    format!("gateway_mqtt_answers_dropped_total{{reason=\"{reason}\"}}")
}

/// `mosquitto_pub` (QoS 1): `-l` with `lines` on stdin, or `-f file`.
fn publish(port: u16, topic: &str, lines: Option<&str>, file: Option<&PathBuf>) {
    let mut command = Command::new("mosquitto_pub");
    command.args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q", "1", "-t", topic]);
    match (lines, file) {
        (Some(_), _) => command.arg("-l"),
        (None, Some(file)) => command.arg("-f").arg(file),
        (None, None) => unreachable!(),
    };
    let mut child = command.stdin(Stdio::piped()).stderr(Stdio::inherit()).spawn().expect("mosquitto_pub");
    if let Some(lines) = lines {
        child.stdin.take().unwrap().write_all(lines.as_bytes()).unwrap();
    }
    assert!(child.wait().unwrap().success(), "mosquitto_pub failed");
}

/// An ack message.
fn ack(incident_id: &str, action: &str, by: &str, at_ms: Option<i64>) -> String {
    let mut message = serde_json::json!({"incident_id": incident_id, "action": action, "by": by});
    if let Some(at_ms) = at_ms {
        message["at_ms"] = at_ms.into();
    }
    message.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_answers_never_stop_delivery_and_are_recorded_once() {
    require_runtime();
    let broker = Mosquitto::start();
    let port = broker.port;
    let steward = Subscriber::start(port, "steward-zhang-phone", "lixia/#");
    let ack_topic = "lixia/wenhua-east/shanda-road-3/grid-08/ack";
    let big = tempfile::NamedTempFile::new().unwrap();
    let padding = "x".repeat(1_100_000);
    std::fs::write(big.path(), ack("gate-8:pavement:misparked_bike:1", "ack", &padding, None)).unwrap();
    let big = big.path().to_path_buf();

    // While the gateway is away: its persistent session exists (as after an earlier run), and
    // a 1.1 MB message and 300 answers queue up for it at the broker.
    let status = Command::new("mosquitto_sub")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-V", "mqttv5", "-c", "-i", CLIENT_ID, "-q", "1"])
        .args(["-t", "lixia/+/+/+/ack", "-E"])
        .status()
        .unwrap();
    assert!(status.success(), "could not create the gateway's session");
    publish(port, ack_topic, None, Some(&big));
    let queued: String =
        (0..300).map(|i| ack(&format!("gate-8:pavement:misparked_bike:{i}"), "ack", "wang", None) + "\n").collect();
    publish(port, ack_topic, Some(&queued), None);

    let mut gateway = Gateway::start(port);
    let opened = eventually(Duration::from_secs(90), || {
        steward.on("/incidents/misparked_bike").iter().any(|m| m.payload["event"] == "opened")
    })
    .await;
    assert!(opened, "the healthy camera's incident was never delivered; logs:\n{}", gateway.stop());
    let incident =
        steward.on("/incidents/misparked_bike").into_iter().find(|m| m.payload["event"] == "opened").unwrap();
    let id = incident.payload["incident_id"].as_str().unwrap().to_string();
    assert_eq!(incident.payload["ack_topic"], ack_topic);
    let queued_done = eventually(Duration::from_secs(60), || {
        gateway.metric(&dropped("unknown_incident")).is_some_and(|n| n >= 300.0)
    })
    .await;
    assert!(queued_done, "the queued answers were not all taken:\n{}", gateway.metrics());
    let rss_before_kb = gateway.rss_kb();

    // Another grid's steward answers our incident: refused.
    publish(port, "lixia/other-street/other-community/grid-99/ack", Some(&ack(&id, "false_alarm", "li", None)), None);
    // A forged log line in `by`, and a time far in the future.
    let hostile = [ack(&id, "ack", "li\nINFO gateway: forged line", None), ack(&id, "ack", "li", Some(i64::MAX))];
    publish(port, ack_topic, Some(&(hostile.join("\n") + "\n")), None);
    // Over the gateway's 4 KiB answer cap but within its packet limit: acknowledged, dropped.
    publish(port, ack_topic, Some(&(ack(&id, "ack", &"y".repeat(5000), None) + "\n")), None);
    // 1.1 MB, live this time.
    publish(port, ack_topic, None, Some(&big));
    // The burst: 500 times the same answer, then 30 different stewards (more than the 16
    // answers an incident keeps).
    let mut burst: String = (0..500).map(|_| ack(&id, "ack", "wang", None) + "\n").collect();
    burst.extend((0..30).map(|i| ack(&id, "resolved", &format!("steward-{i}"), None) + "\n"));
    let burst_started = Instant::now();
    publish(port, ack_topic, Some(&burst), None);
    let burst_done = eventually(Duration::from_secs(90), || {
        let metrics = gateway.metrics();
        let seen: f64 = ["duplicate", "too_many"].iter().filter_map(|r| metric_in(&metrics, &dropped(r))).sum::<f64>()
            + metric_in(&metrics, "gateway_mqtt_answers_total").unwrap_or(0.0);
        seen >= 530.0
    })
    .await;
    let burst_seconds = burst_started.elapsed().as_secs_f64();
    let drained = eventually(Duration::from_secs(60), || gateway.metric("gateway_outbox_depth") == Some(0.0)).await;
    // Echoes of the 16 recorded answers are delivered (a lagging one would still come).
    let echoed = eventually(Duration::from_secs(30), || steward.on("/answers/").len() >= 16).await;
    let metrics = gateway.metrics();
    let rss_after_kb = gateway.rss_kb();
    let logs = gateway.stop();
    let broker_log = broker.log();
    let context = || format!("/metrics:\n{metrics}\nlogs (tail):\n{}", tail(&logs, 60));
    assert!(burst_done, "the burst was not taken in time; {}", context());
    assert!(drained, "the outbox did not drain; {}", context());
    assert!(echoed, "answer echoes not delivered; {}", context());

    let value = |series: &str| metric_in(&metrics, series).unwrap_or_else(|| panic!("{series} missing; {}", context()));
    // li (its time replaced) + wang + 14 of the 30 stewards: the incident's 16 answers, once each.
    assert_eq!(value("gateway_mqtt_answers_total"), 16.0, "{}", context());
    assert_eq!(value(&dropped("too_many")), 16.0, "{}", context());
    assert!(value(&dropped("duplicate")) >= 499.0, "{}", context());
    assert!(value(&dropped("wrong_topic")) >= 1.0, "{}", context());
    assert!(value(&dropped("malformed")) >= 1.0, "{}", context());
    assert!(value(&dropped("oversized")) >= 1.0, "{}", context());
    assert!(value("gateway_mqtt_answer_times_replaced_total") >= 1.0, "{}", context());
    // One connection, or two at most if a keep-alive raced the start: never a flapping loop.
    let connections = value("gateway_mqtt_connections_total");
    assert!(connections <= 2.0, "{connections} connections: the connection flapped; {}", context());
    // Each recorded answer is echoed, and nothing past the cap is.
    let echoes = steward.on("/answers/");
    let distinct: std::collections::BTreeSet<String> =
        echoes.iter().map(|m| m.payload["answer"]["by"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(distinct.len(), 16, "echoed answers: {distinct:?}");
    assert!(!distinct.contains("li\nINFO gateway: forged line") && !distinct.contains("steward-29"));
    let li = echoes.iter().find(|m| m.payload["answer"]["by"] == "li").expect("li's answer echoed");
    assert!(li.payload["answer"]["at_ms"].as_i64().unwrap() < i64::MAX / 2, "at_ms not bounded: {li:?}");
    // No forged line, and no line per dropped answer.
    assert!(!logs.lines().any(|l| l.starts_with("INFO gateway: forged")), "a log line was forged");
    let drop_lines = logs.lines().filter(|l| l.contains("steward answers dropped")).count();
    assert!(drop_lines <= 6, "{drop_lines} drop summaries for ~850 drops: logged per item?");
    assert!(!logs.contains("payload size limit"), "the packet limit dropped the connection");
    // The 1.1 MB messages (queued and live) never reached the gateway: the broker discarded
    // them for its MQTT 5 Maximum Packet Size.
    assert!(
        broker_log.matches("Dropping too large outgoing PUBLISH for gw-abuse").count() >= 2,
        "the broker sent the 1.1 MB messages on: {}",
        tail(&broker_log, 20)
    );

    let sizes = [("1.1 MB", broker_log.matches("Dropping too large outgoing PUBLISH for gw-abuse").count())];
    eprintln!(
        "mqtt abuse: burst of 530 answers taken in {burst_seconds:.1} s ({:.0} answers/s), {connections} connection(s), \
         RSS {rss_before_kb} kB → {rss_after_kb} kB, broker discarded oversized: {sizes:?}, drops: {}",
        530.0 / burst_seconds,
        ["oversized", "malformed", "wrong_topic", "duplicate", "unknown_incident", "too_many"]
            .iter()
            .map(|r| format!("{r}={}", metric_in(&metrics, &dropped(r)).unwrap_or(0.0)))
            .collect::<Vec<_>>()
            .join(" ")
    );
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
