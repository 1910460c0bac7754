//! Delivery: outbox → MQTT, at least once, in commit order (so in order per camera), and the
//! answers back. One task owns the connection:
//!
//! ```text
//! outbox (redb) ──pending──▶ Window (≤ inflight) ──publish QoS 1──▶ broker
//!       ▲                         │ PUBACK(pkid) → record id
//!       └──────acknowledge────────┘
//! broker ──<prefix>/+/+/+/ack──▶ outbox.answer() ──▶ manual PUBACK to the broker
//! clock tick (1 s) ──▶ outbox.fire_due() ──▶ reminders / escalations, committed like events
//! ```
//!
//! MQTT 5 (rumqttc's `v5` client), because two of its CONNECT properties bound what the broker
//! may send us, which MQTT 3.1.1 cannot (issue 11):
//! - *Maximum Packet Size* ([`ANSWER_PACKET_MAX_BYTES`]): the broker discards a larger message
//!   for us instead of sending it (MQTT 5 §3.1.2.11.4), so one 1 MB message on an ack topic
//!   can no longer exceed the client's limit, drop the connection and be redelivered to our
//!   persistent session at every reconnect, forever. Under 3.1.1 the only choices were a
//!   limit the broker ignores (the loop) or no limit (any RSS an attacker likes). Answers
//!   that fit but are over [`payload::ANSWER_MAX_BYTES`] are acknowledged and dropped here.
//! - *Receive Maximum* ([`ANSWERS_IN_FLIGHT`]): the broker has at most that many answers
//!   unacknowledged with us, so a burst (2000 acks from `mosquitto_pub -l`, or hundreds
//!   queued while the gateway was down) arrives at our pace. Their PUBACKs (packet ids only)
//!   wait in a local queue bounded by it (by the 65 535 packet ids for a broker that ignores
//!   it) and go out as the request channel has room: a full channel no longer drops the
//!   connection.
//!
//! Answers are accepted only on their incident's own ack topic, with their time bounded, and
//! are recognised when redelivered; everything refused is counted by reason and logged once
//! a minute ([`answers`]).
//!
//! rumqttc drops unacknowledged QoS 1 publishes when the broker has no session for us, and
//! `publish()` returns no packet id. So the event loop is rebuilt for every connection (nothing
//! of an old one is replayed behind our back), everything still in the outbox is sent again
//! after each CONNACK, and PUBACKs are matched in [`window`]. Consumers de-duplicate by
//! `(incident_id, seq)`. A broker that takes publishes but never acknowledges them (hung) is
//! dropped after `ack_timeout`; the outbox on disk is the only thing that grows, to its cap.
//!
//! What it does not do: build incidents (the engine does) or decide what is worth sending
//! (the outbox holds only what must go out).

pub mod answers;
pub mod payload;
pub mod window;

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rumqttc::v5::mqttbytes::v5::{LastWill, Packet, Publish};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, Event, MqttOptions};
use rumqttc::{Outgoing, TlsConfiguration, Transport};
use serde_json::json;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::backoff::Backoff;
use crate::config::delivery::{EscalationConfig, MqttConfig};
use crate::followup::Answer;
use crate::followup::Timers;
use crate::health::{CameraState, HealthRegistry};
use crate::outbox::{AnswerOutcome, Outbox};
use answers::{DropCounters, DropLog, DropReason, RecentMessages};
use window::{Carried, Window};

/// Wall-clock milliseconds; injected so tests can move time (escalation timers).
pub trait Clock: Send + Sync + 'static {
    /// Now, ms since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
    // The clock implementation: the one wall-clock read the gateway's time comes from.
    #[allow(clippy::disallowed_methods)]
    fn now_ms(&self) -> i64 {
        SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
    }
}

/// Counters for logs and status.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    /// A broker session is up.
    pub connected: AtomicBool,
    /// Connections made (CONNACKs received).
    pub connections: AtomicU64,
    /// Outbox records published (re-sends included).
    pub published: AtomicU64,
    /// Outbox records acknowledged by the broker and removed.
    pub acknowledged: AtomicU64,
    /// Steward answers recorded.
    pub answers: AtomicU64,
    /// Ack messages ignored: every drop but duplicates (see `answers_dropped`).
    pub answers_ignored: AtomicU64,
    /// Ack messages acknowledged to the broker and dropped, by reason.
    pub answers_dropped: DropCounters,
    /// Answers whose `at_ms` was out of bounds and replaced by their arrival time.
    pub answer_times_replaced: AtomicU64,
    /// PUBACKs for answers waiting for room in the request channel, as of the last look.
    pub answer_acks_queued: AtomicU64,
    /// Unreadable outbox records moved to the dead table (since the file was created).
    pub records_quarantined: AtomicU64,
    /// Reminders and escalations fired.
    pub followups_fired: AtomicU64,
    /// Records in the outbox, as of the last look.
    pub outbox_depth: AtomicU64,
}

/// What the delivery task needs.
pub struct DeliverySettings {
    /// The broker.
    pub mqtt: MqttConfig,
    /// Follow-up timers and topics.
    pub escalation: EscalationConfig,
    /// Cameras whose status is published (retained); `None` publishes none.
    pub health: Option<Arc<HealthRegistry>>,
}

/// The running delivery task.
pub struct Delivery {
    wake: Arc<Notify>,
    /// Counters.
    pub stats: Arc<DeliveryStats>,
    task: tokio::task::JoinHandle<()>,
}

impl Delivery {
    /// Starts delivering from `outbox` until `shutdown`.
    pub fn start(
        settings: DeliverySettings,
        outbox: Arc<Outbox>,
        clock: Arc<dyn Clock>,
        shutdown: CancellationToken,
    ) -> anyhow::Result<Delivery> {
        let transport = transport(&settings.mqtt)?;
        let wake = Arc::new(Notify::new());
        let stats = Arc::new(DeliveryStats::default());
        stats.outbox_depth.store(outbox.depth()?, Ordering::Relaxed);
        let task = Task {
            settings,
            transport,
            outbox,
            clock,
            wake: wake.clone(),
            stats: stats.clone(),
            shutdown,
            started_ms: 0,
            recent: RecentMessages::new(RECENT_ANSWERS),
            drop_log: DropLog::new(Instant::now()),
        };
        Ok(Delivery { wake, stats, task: tokio::spawn(task.run()) })
    }

    /// New records were committed to the outbox.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// A handle that wakes the publisher, for parts of the gateway that commit records
    /// outside the run loop (the console's answers).
    pub fn waker(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Waits for the task to finish (after `shutdown`).
    pub async fn stopped(self) {
        if let Err(err) = self.task.await {
            error!(error = %err, "delivery task failed");
        }
    }
}

/// The TLS (or plain TCP) transport for the broker.
fn transport(mqtt: &MqttConfig) -> anyhow::Result<Transport> {
    let Some(tls) = &mqtt.tls else { return Ok(Transport::Tcp) };
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_file {
        Some(file) => {
            use rustls::pki_types::pem::PemObject;
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(file)
                .with_context(|| format!("read CA file {}", file.display()))?;
            for cert in certs {
                roots.add(cert.with_context(|| format!("parse CA file {}", file.display()))?)?;
            }
        }
        None => {
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                let _ = roots.add(cert);
            }
            anyhow::ensure!(!roots.is_empty(), "no system CA certificates found (install ca-certificates)");
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Transport::tls_with_config(TlsConfiguration::Rustls(Arc::new(config))))
}

/// Why a connection ended.
enum Ended {
    Shutdown,
    Lost(String),
}

struct Task {
    settings: DeliverySettings,
    transport: Transport,
    outbox: Arc<Outbox>,
    clock: Arc<dyn Clock>,
    wake: Arc<Notify>,
    stats: Arc<DeliveryStats>,
    shutdown: CancellationToken,
    started_ms: i64,
    recent: RecentMessages,
    drop_log: DropLog,
}

/// rumqttc's packet-id range (its outgoing in-flight limit, lowered to the broker's Receive
/// Maximum); our window stays within it so ids never collide.
const RUMQTTC_INFLIGHT: u16 = 100;
/// MQTT 5 Maximum Packet Size the gateway announces: the broker discards larger messages
/// for us. The gateway only subscribes to answers (about 150 bytes, capped at
/// [`payload::ANSWER_MAX_BYTES`]); the rest is room for the topic and properties.
pub const ANSWER_PACKET_MAX_BYTES: u32 = 16 * 1024;
/// MQTT 5 Receive Maximum the gateway announces: answers the broker may have sent us
/// unacknowledged at once. Bounds the queue of PUBACKs waiting for the request channel.
pub const ANSWERS_IN_FLIGHT: u16 = 32;
/// Answer messages remembered to recognise redeliveries.
const RECENT_ANSWERS: usize = 4096;
/// How often follow-ups and the hung-broker check run.
const TICK: Duration = Duration::from_secs(1);
/// How often the gateway's retained status is refreshed.
const STATUS_EVERY: Duration = Duration::from_secs(60);

impl Task {
    async fn run(mut self) {
        self.started_ms = self.clock.now_ms();
        let mqtt = &self.settings.mqtt;
        info!(broker = %format!("{}:{}", mqtt.host, mqtt.port), tls = mqtt.tls.is_some(), client_id = %mqtt.client_id,
            prefix = %mqtt.topic_prefix, "delivering incidents over MQTT");
        let mut backoff = Backoff::new(Duration::from_millis(500), self.settings.mqtt.reconnect_max);
        loop {
            let began = Instant::now();
            match self.session().await {
                Ended::Shutdown => break,
                Ended::Lost(reason) => {
                    self.stats.connected.store(false, Ordering::Relaxed);
                    if began.elapsed() > Duration::from_secs(60) {
                        backoff.reset();
                    }
                    let delay = backoff.next_delay(rand::random::<f64>());
                    warn!(reason = %reason, retry_in_ms = delay.as_millis() as u64,
                        outbox_depth = self.stats.outbox_depth.load(Ordering::Relaxed),
                        "MQTT connection lost; events stay in the outbox");
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        () = self.shutdown.cancelled() => break,
                    }
                }
            }
        }
        self.stats.connected.store(false, Ordering::Relaxed);
        info!("delivery stopped");
    }

    fn options(&self) -> MqttOptions {
        let mqtt = &self.settings.mqtt;
        let mut options = MqttOptions::new(mqtt.client_id.clone(), mqtt.host.clone(), mqtt.port);
        options
            .set_keep_alive(mqtt.keep_alive)
            // A persistent session: clean start off, and (MQTT 5) a session that outlives the
            // connection; u32::MAX is "never expires", as clean_session = false was.
            .set_clean_start(false)
            .set_session_expiry_interval(Some(u32::MAX))
            .set_manual_acks(true)
            .set_outgoing_inflight_upper_limit(RUMQTTC_INFLIGHT)
            .set_receive_maximum(Some(ANSWERS_IN_FLIGHT))
            .set_max_packet_size(Some(ANSWER_PACKET_MAX_BYTES))
            .set_request_channel_capacity(request_channel_capacity(mqtt.inflight))
            .set_last_will(LastWill::new(
                self.gateway_topic(),
                self.gateway_status("offline", Some("connection lost")),
                QoS::AtLeastOnce,
                true,
                None,
            ))
            .set_transport(self.transport.clone());
        if let Some((username, password)) = &mqtt.credentials {
            options.set_credentials(username.clone(), password.expose().to_string());
        }
        options
    }

    fn gateway_topic(&self) -> String {
        format!("{}/status/gateway/{}", self.settings.mqtt.topic_prefix, self.settings.mqtt.client_id)
    }

    /// The retained status while connected: `online`, or `degraded` with the reason while
    /// incident events cannot be committed to the outbox (a full or failing disk: they are
    /// held in memory and retried), so whoever watches the broker sees it without polling
    /// `/healthz`.
    fn live_status(&self) -> Vec<u8> {
        match self.outbox.commit_health().degraded() {
            Some(reason) => self.gateway_status("degraded", Some(&reason)),
            None => self.gateway_status("online", None),
        }
    }

    fn gateway_status(&self, state: &str, reason: Option<&str>) -> Vec<u8> {
        let false_alarms: BTreeMap<String, u64> = self.outbox.false_alarms().unwrap_or_default().into_iter().collect();
        serde_json::to_vec(&json!({
            "state": state,
            "reason": reason,
            "t_ms": self.clock.now_ms(),
            "started_ms": self.started_ms,
            "outbox_depth": self.outbox.depth().ok(),
            "waiting_for_answer": self.outbox.waiting_for_answer().ok(),
            "false_alarms": false_alarms,
            "events_held": self.outbox.commit_health().held_events(),
        }))
        .expect("status serialises")
    }

    /// Retained status messages of every camera.
    fn camera_statuses(&self) -> Vec<(String, Vec<u8>)> {
        let Some(health) = &self.settings.health else { return Vec::new() };
        health.cameras().iter().map(|camera| self.camera_status(camera)).collect()
    }

    fn camera_status(&self, camera: &crate::health::CameraHealth) -> (String, Vec<u8>) {
        let (state, reason, since) = camera.snapshot();
        let (state, reason) = match state {
            CameraState::Online => ("online", None),
            CameraState::Degraded => ("degraded", reason),
            CameraState::Offline => ("offline", reason),
            CameraState::Stopped => ("offline", Some("gateway stopped".to_string())),
            CameraState::Starting | CameraState::Connecting => {
                ("degraded", Some(reason.unwrap_or_else(|| "connecting".to_string())))
            }
        };
        let since_ms = since.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
        let topic = format!("{}/status/cameras/{}", self.settings.mqtt.topic_prefix, camera.id);
        let payload = json!({ "camera": camera.id.as_str(), "state": state, "reason": reason, "since_ms": since_ms });
        (topic, serde_json::to_vec(&payload).expect("status serialises"))
    }

    /// One connection, from connecting until it is lost or the gateway stops.
    async fn session(&mut self) -> Ended {
        let (client, mut event_loop) =
            AsyncClient::new(self.options(), request_channel_capacity(self.settings.mqtt.inflight));
        let (events_tx, mut events) = mpsc::channel(256);
        // `EventLoop::poll` is not documented as cancel-safe: it gets a task of its own.
        let poller = AbortOnDrop(tokio::spawn(async move {
            loop {
                let event = event_loop.poll().await;
                let failed = event.is_err();
                if events_tx.send(event).await.is_err() || failed {
                    break;
                }
            }
        }));
        let mut window = Window::new(self.settings.mqtt.inflight);
        // Packet ids of answers recorded (or dropped) whose PUBACK waits for room in the
        // request channel. The broker sends at most ANSWERS_IN_FLIGHT unacknowledged answers
        // (Receive Maximum); one that ignores it (mosquitto 2.0.11 was measured sending 1 944
        // at once) is still bounded by the 65 535 packet ids, a few bytes each: the payloads
        // are not kept.
        let mut acks: VecDeque<(u16, QoS)> = VecDeque::new();
        // Retained statuses to publish, newest per topic, ahead of records.
        let mut statuses: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut connected = false;
        let mut cursor = 0u64;
        let mut tick = tokio::time::interval(TICK);
        let mut last_status = Instant::now();
        // Whether the last retained gateway status said degraded.
        let mut published_degraded = self.outbox.commit_health().degraded().is_some();
        let mut health_changes = self.settings.health.as_ref().map(|health| health.subscribe());
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    None => return Ended::Lost("event loop ended".into()),
                    Some(Err(err)) => return Ended::Lost(err.to_string()),
                    Some(Ok(event)) => {
                        let handled = self.on_event(event, &client, &mut window, &mut connected, &mut statuses, &mut acks);
                        if let Err(reason) = handled {
                            return Ended::Lost(reason);
                        }
                    }
                },
                () = self.wake.notified() => {}
                _ = tick.tick() => {
                    self.fire_followups();
                    self.log_drops();
                    if let Some(wait) = window.oldest_wait(Instant::now()) {
                        if wait > self.settings.mqtt.ack_timeout {
                            return Ended::Lost(format!(
                                "no PUBACK for {} s (broker hung?); reconnecting to send everything unacknowledged again",
                                wait.as_secs()
                            ));
                        }
                    }
                    // A change of the commit state goes out at once, not with the minute's refresh.
                    let degraded = self.outbox.commit_health().degraded().is_some();
                    if connected && (last_status.elapsed() >= STATUS_EVERY || degraded != published_degraded) {
                        last_status = Instant::now();
                        published_degraded = degraded;
                        statuses.insert(self.gateway_topic(), self.live_status());
                    }
                }
                change = recv_change(&mut health_changes) => {
                    if let Some(health) = &self.settings.health {
                        let camera = health.camera(&change);
                        let (topic, payload) = self.camera_status(&camera);
                        statuses.insert(topic, payload);
                    }
                }
                () = self.shutdown.cancelled() => {
                    if connected {
                        self.say_goodbye(&client, &mut events, &mut window, &mut acks).await;
                    }
                    drop(poller);
                    return Ended::Shutdown;
                }
            }
            send_acks(&client, &mut acks);
            self.stats.answer_acks_queued.store(acks.len() as u64, Ordering::Relaxed);
            if connected {
                self.fill(&client, &mut window, &mut statuses, &mut cursor);
            }
        }
    }

    fn on_event(
        &mut self,
        event: Event,
        client: &AsyncClient,
        window: &mut Window,
        connected: &mut bool,
        statuses: &mut BTreeMap<String, Vec<u8>>,
        acks: &mut VecDeque<(u16, QoS)>,
    ) -> Result<(), String> {
        match event {
            Event::Incoming(Packet::ConnAck(ack)) => {
                // rumqttc cycles packet ids over the broker's Receive Maximum when it is
                // lower than ours: the window must stay within it.
                let broker_receive_max = ack.properties.as_ref().and_then(|p| p.receive_max).unwrap_or(u16::MAX);
                let capacity = self.settings.mqtt.inflight.min(usize::from(broker_receive_max.min(RUMQTTC_INFLIGHT)));
                window.set_capacity(capacity.max(1));
                *connected = true;
                self.stats.connected.store(true, Ordering::Relaxed);
                self.stats.connections.fetch_add(1, Ordering::Relaxed);
                let depth = self.outbox.depth().unwrap_or(0);
                self.stats.outbox_depth.store(depth, Ordering::Relaxed);
                info!(
                    session_present = ack.session_present,
                    outbox_depth = depth,
                    window = window.capacity(),
                    "MQTT connected; sending the outbox"
                );
                let filter = payload::ack_filter(&self.settings.mqtt.topic_prefix);
                client.try_subscribe(filter, QoS::AtLeastOnce).map_err(|err| format!("subscribe: {err}"))?;
                statuses.insert(self.gateway_topic(), self.live_status());
                statuses.extend(self.camera_statuses());
            }
            Event::Outgoing(Outgoing::Publish(pkid)) => {
                window.written(pkid, Instant::now()).map_err(|d| format!("publish {} not requested", d.0))?;
            }
            Event::Incoming(Packet::PubAck(ack)) => {
                match window.acknowledged(ack.pkid).map_err(|d| format!("PUBACK for unknown packet {}", d.0))? {
                    Carried::Record(id) => match self.outbox.acknowledge(id) {
                        Ok(_) => {
                            self.stats.acknowledged.fetch_add(1, Ordering::Relaxed);
                            self.stats.outbox_depth.store(self.outbox.depth().unwrap_or(0), Ordering::Relaxed);
                        }
                        // Still in the outbox: sent again after the next reconnect.
                        Err(err) => error!(error = format!("{err:#}"), id, "cannot remove an acknowledged record"),
                    },
                    Carried::Status => {}
                }
            }
            Event::Incoming(Packet::Publish(publish)) => {
                match std::str::from_utf8(&publish.topic) {
                    Ok(topic) => self.on_answer(topic, &publish.payload),
                    Err(_) => self.dropped(DropReason::Malformed, || "topic is not UTF-8".into()),
                }
                // Acknowledged only once the answer is on disk (or judged worthless), in
                // order, as the request channel has room (never by dropping the connection).
                if publish.qos != QoS::AtMostOnce {
                    acks.push_back((publish.pkid, publish.qos));
                }
            }
            Event::Incoming(Packet::SubAck(ack)) => debug!(codes = ?ack.return_codes, "subscribed to answers"),
            _ => {}
        }
        Ok(())
    }

    /// A steward's answer: recorded, or counted and dropped; never fatal. Taken only on its
    /// incident's own ack topic, with its time bounded; a redelivery is recognised by its
    /// bytes before the disk is touched.
    fn on_answer(&mut self, topic: &str, bytes: &[u8]) {
        if self.recent.contains(topic, bytes) {
            self.dropped(DropReason::Duplicate, || format!("{topic:?}"));
            return;
        }
        let received_ms = self.clock.now_ms();
        let message = match payload::parse_answer(bytes) {
            Ok(message) => message,
            Err(problem) => {
                let reason = match problem {
                    payload::AckProblem::Oversized(_) => DropReason::Oversized,
                    payload::AckProblem::Malformed(_) => DropReason::Malformed,
                };
                self.dropped(reason, || format!("{topic:?}: {:?}", problem.to_string()));
                self.recent.remember(topic, bytes);
                return;
            }
        };
        let incident_id = message.incident_id.as_str();
        let incident = match self.outbox.incident(incident_id) {
            Ok(Some(incident)) => incident,
            Ok(None) => {
                self.dropped(DropReason::UnknownIncident, || format!("{incident_id:?} on {topic:?}"));
                self.recent.remember(topic, bytes);
                return;
            }
            // Not remembered: a redelivery gets another chance.
            Err(err) => {
                return error!(error = format!("{err:#}"), incident_id = ?incident_id, "cannot read an incident")
            }
        };
        let own_topic = payload::ack_topic(&self.settings.mqtt.topic_prefix, &incident.latest);
        if topic != own_topic {
            self.dropped(DropReason::WrongTopic, || format!("{incident_id:?} on {topic:?}, expected {own_topic:?}"));
            self.recent.remember(topic, bytes);
            return;
        }
        let (at_ms, replaced) = payload::answer_time_ms(message.at_ms, incident.followup.opened_at_ms, received_ms);
        if replaced {
            self.stats.answer_times_replaced.fetch_add(1, Ordering::Relaxed);
            debug!(incident_id = ?incident_id, sent_at_ms = ?message.at_ms, at_ms, "answer time out of bounds: arrival time used");
        }
        let answer = Answer { action: message.action, by: message.by.clone(), at_ms };
        // Refused answers are the flood's bulk (2000 from `mosquitto_pub -l`): judged on the
        // state just read, they cost no write transaction. `Outbox::answer` judges again.
        let outcome = match incident.followup.refuses(&answer) {
            Some(crate::followup::Answered::TooMany) => Ok(AnswerOutcome::TooMany),
            Some(_) => Ok(AnswerOutcome::Duplicate),
            None => self.outbox.answer(incident_id, answer),
        };
        match outcome {
            Ok(AnswerOutcome::UnknownIncident) => {
                self.dropped(DropReason::UnknownIncident, || format!("{incident_id:?} on {topic:?}"))
            }
            Ok(AnswerOutcome::Duplicate) => self.dropped(DropReason::Duplicate, || format!("{incident_id:?}")),
            Ok(AnswerOutcome::TooMany) => self.dropped(DropReason::TooMany, || format!("{incident_id:?}")),
            Ok(AnswerOutcome::Recorded { false_alarms }) => {
                self.stats.answers.fetch_add(1, Ordering::Relaxed);
                info!(incident_id = ?incident_id, action = ?message.action, by = ?message.by, "steward answered");
                // Its echo was committed with it: publish it.
                self.wake.notify_one();
                if let Some((place, count)) = false_alarms {
                    warn!(place = ?place, count, "false alarm reported by a steward");
                }
            }
            // Not remembered: a redelivery gets another chance.
            Err(err) => {
                return error!(error = format!("{err:#}"), incident_id = ?incident_id, "cannot record an answer")
            }
        }
        self.recent.remember(topic, bytes);
    }

    /// Counts a dropped answer; `example` (debug-quoted) may appear in the next summary.
    fn dropped(&mut self, reason: DropReason, example: impl FnOnce() -> String) {
        self.stats.answers_dropped.add(reason);
        if reason != DropReason::Duplicate {
            self.stats.answers_ignored.fetch_add(1, Ordering::Relaxed);
        }
        self.drop_log.note(reason, example);
    }

    /// One line a minute at most about the answers dropped since the last.
    fn log_drops(&mut self) {
        if let Some((counts, examples)) = self.drop_log.take_due(Instant::now()) {
            warn!(dropped = %counts, examples = %examples, "steward answers dropped (counted in /metrics)");
        }
    }

    fn fire_followups(&self) {
        let escalation = &self.settings.escalation;
        let timers = |grid: &str| {
            let (remind, escalate) = escalation.timers(grid);
            Timers { remind_after_ms: remind.as_millis() as i64, escalate_after_ms: escalate.as_millis() as i64 }
        };
        match self.outbox.fire_due(self.clock.now_ms(), &timers) {
            Ok(fired) => {
                for (incident_id, due) in &fired.fired {
                    info!(incident_id, due = ?due, "unanswered incident followed up");
                }
                self.stats.followups_fired.fetch_add(fired.fired.len() as u64, Ordering::Relaxed);
            }
            Err(err) => error!(error = format!("{err:#}"), "cannot fire follow-ups"),
        }
    }

    /// Requests publishes until the window is full: statuses first, then outbox records
    /// after `cursor` in commit order. A full request channel is not an error: what did not
    /// fit is requested again on the next turn (the event loop drains the channel meanwhile).
    fn fill(
        &self,
        client: &AsyncClient,
        window: &mut Window,
        statuses: &mut BTreeMap<String, Vec<u8>>,
        cursor: &mut u64,
    ) {
        while window.free() > 0 {
            let Some((topic, payload)) = statuses.pop_first() else { break };
            if client.try_publish(topic.clone(), QoS::AtLeastOnce, true, payload.clone()).is_err() {
                // Unless a newer status for the topic arrived meanwhile.
                statuses.entry(topic).or_insert(payload);
                return;
            }
            window.requested(Carried::Status);
        }
        if window.free() == 0 {
            return;
        }
        let records = self.outbox.pending(*cursor, window.free());
        self.stats.records_quarantined.store(self.outbox.quarantined(), Ordering::Relaxed);
        let records = match records {
            Ok(records) => records,
            Err(err) => {
                error!(error = format!("{err:#}"), "cannot read the outbox");
                return;
            }
        };
        let mqtt = &self.settings.mqtt;
        for (id, record) in records {
            let topic = payload::topic(&mqtt.topic_prefix, &self.settings.escalation, &record);
            let jpeg = record.snapshot.as_ref().and_then(|path| std::fs::read(path).ok());
            let body = payload::incident_payload(&mqtt.topic_prefix, &record, jpeg.as_deref(), mqtt.snapshot_max_bytes);
            if client.try_publish(topic, QoS::AtLeastOnce, false, body).is_err() {
                return;
            }
            window.requested(Carried::Record(id));
            self.stats.published.fetch_add(1, Ordering::Relaxed);
            *cursor = id;
        }
    }

    /// On a clean stop: retained "offline" status, the in-flight PUBACKs from the broker and
    /// the queued ones to it (briefly: what is left is redelivered, and recognised, on the
    /// next start), DISCONNECT.
    async fn say_goodbye(
        &self,
        client: &AsyncClient,
        events: &mut mpsc::Receiver<Result<Event, rumqttc::v5::ConnectionError>>,
        window: &mut Window,
        acks: &mut VecDeque<(u16, QoS)>,
    ) {
        let goodbye = self.gateway_status("offline", Some("stopped"));
        if client.try_publish(self.gateway_topic(), QoS::AtLeastOnce, true, goodbye).is_ok() {
            window.requested(Carried::Status);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        send_acks(client, acks);
        while !window.is_empty() || !acks.is_empty() {
            match tokio::time::timeout_at(deadline, events.recv()).await {
                Ok(Some(Ok(Event::Outgoing(Outgoing::Publish(pkid))))) => {
                    let _ = window.written(pkid, Instant::now());
                }
                Ok(Some(Ok(Event::Incoming(Packet::PubAck(ack))))) => {
                    if let Ok(Carried::Record(id)) = window.acknowledged(ack.pkid) {
                        let _ = self.outbox.acknowledge(id);
                    }
                }
                Ok(Some(Ok(_))) => {}
                _ => break,
            }
            send_acks(client, acks);
        }
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(1), events.recv()).await;
    }
}

/// Room in the request channel for a full window of publishes, every answer the broker may
/// have in flight to us, and the odd subscribe, status and disconnect.
fn request_channel_capacity(inflight: usize) -> usize {
    inflight + usize::from(ANSWERS_IN_FLIGHT) + 16
}

/// Sends the queued PUBACKs, oldest first, while the request channel takes them. A full
/// channel leaves the rest for the next turn (the event loop drains it meanwhile); a closed
/// one means the event loop stopped, whose own error ends the connection.
fn send_acks(client: &AsyncClient, acks: &mut VecDeque<(u16, QoS)>) {
    while let Some(&(pkid, qos)) = acks.front() {
        // `try_ack` reads only the packet id and QoS.
        let mut publish = Publish::new("", qos, Vec::new(), None);
        publish.pkid = pkid;
        if client.try_ack(&publish).is_err() {
            break;
        }
        acks.pop_front();
    }
}

async fn recv_change(
    changes: &mut Option<tokio::sync::broadcast::Receiver<crate::health::StateChange>>,
) -> crate::config::CameraId {
    loop {
        match changes {
            None => std::future::pending::<()>().await,
            Some(receiver) => match receiver.recv().await {
                Ok(change) => return change.camera,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => *changes = None,
            },
        }
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
