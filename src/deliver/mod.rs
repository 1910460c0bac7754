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
//! rumqttc drops unacknowledged QoS 1 publishes when the broker has no session for us, and
//! `publish()` returns no packet id. So the event loop is rebuilt for every connection (nothing
//! of an old one is replayed behind our back), everything still in the outbox is sent again
//! after each CONNACK, and PUBACKs are matched in [`window`]. Consumers de-duplicate by
//! `(incident_id, seq)`. A broker that takes publishes but never acknowledges them (hung) is
//! dropped after `ack_timeout`; the outbox on disk is the only thing that grows, to its cap.
//!
//! What it does not do: build incidents (the engine does) or decide what is worth sending
//! (the outbox holds only what must go out).

pub mod payload;
pub mod window;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use rumqttc::{AsyncClient, Event, LastWill, MqttOptions, Outgoing, Packet, QoS, TlsConfiguration, Transport};
use serde_json::json;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use crate::config::delivery::{EscalationConfig, MqttConfig};
use crate::followup::Timers;
use crate::health::{CameraState, HealthRegistry};
use crate::ingest::backoff::Backoff;
use crate::outbox::{AnswerOutcome, Outbox};
use window::{Carried, Window};

/// Wall-clock milliseconds; injected so tests can move time (escalation timers).
pub trait Clock: Send + Sync + 'static {
    /// Now, ms since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// The system clock.
pub struct SystemClock;

impl Clock for SystemClock {
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
    /// Ack messages ignored (malformed or for unknown incidents).
    pub answers_ignored: AtomicU64,
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
}

/// rumqttc's packet-id range; our window stays below it so ids never collide.
const RUMQTTC_INFLIGHT: u16 = 100;
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
            .set_clean_session(false)
            .set_manual_acks(true)
            .set_inflight(RUMQTTC_INFLIGHT)
            .set_request_channel_capacity(mqtt.inflight + 64)
            .set_max_packet_size(1 << 20, mqtt.snapshot_max_bytes * 4 / 3 + (64 << 10))
            .set_last_will(LastWill::new(
                self.gateway_topic(),
                self.gateway_status("offline", Some("connection lost")),
                QoS::AtLeastOnce,
                true,
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
        let (client, mut event_loop) = AsyncClient::new(self.options(), self.settings.mqtt.inflight + 64);
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
        // Retained statuses to publish, newest per topic, ahead of records.
        let mut statuses: BTreeMap<String, Vec<u8>> = BTreeMap::new();
        let mut connected = false;
        let mut cursor = 0u64;
        let mut tick = tokio::time::interval(TICK);
        let mut last_status = Instant::now();
        let mut health_changes = self.settings.health.as_ref().map(|health| health.subscribe());
        loop {
            tokio::select! {
                event = events.recv() => match event {
                    None => return Ended::Lost("event loop ended".into()),
                    Some(Err(err)) => return Ended::Lost(err.to_string()),
                    Some(Ok(event)) => {
                        if let Err(reason) = self.on_event(event, &client, &mut window, &mut connected, &mut statuses) {
                            return Ended::Lost(reason);
                        }
                    }
                },
                () = self.wake.notified() => {}
                _ = tick.tick() => {
                    self.fire_followups();
                    if let Some(wait) = window.oldest_wait(Instant::now()) {
                        if wait > self.settings.mqtt.ack_timeout {
                            return Ended::Lost(format!(
                                "no PUBACK for {} s (broker hung?); reconnecting to send everything unacknowledged again",
                                wait.as_secs()
                            ));
                        }
                    }
                    if connected && last_status.elapsed() >= STATUS_EVERY {
                        last_status = Instant::now();
                        statuses.insert(self.gateway_topic(), self.gateway_status("online", None));
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
                        self.say_goodbye(&client, &mut events, &mut window).await;
                    }
                    drop(poller);
                    return Ended::Shutdown;
                }
            }
            if connected {
                if let Err(reason) = self.fill(&client, &mut window, &mut statuses, &mut cursor) {
                    return Ended::Lost(reason);
                }
            }
        }
    }

    fn on_event(
        &self,
        event: Event,
        client: &AsyncClient,
        window: &mut Window,
        connected: &mut bool,
        statuses: &mut BTreeMap<String, Vec<u8>>,
    ) -> Result<(), String> {
        match event {
            Event::Incoming(Packet::ConnAck(ack)) => {
                *connected = true;
                self.stats.connected.store(true, Ordering::Relaxed);
                self.stats.connections.fetch_add(1, Ordering::Relaxed);
                let depth = self.outbox.depth().unwrap_or(0);
                self.stats.outbox_depth.store(depth, Ordering::Relaxed);
                info!(
                    session_present = ack.session_present,
                    outbox_depth = depth,
                    "MQTT connected; sending the outbox"
                );
                let filter = payload::ack_filter(&self.settings.mqtt.topic_prefix);
                client.try_subscribe(filter, QoS::AtLeastOnce).map_err(|err| format!("subscribe: {err}"))?;
                statuses.insert(self.gateway_topic(), self.gateway_status("online", None));
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
                self.on_answer(&publish.topic, &publish.payload);
                // Acknowledged only once the answer is on disk (or judged worthless).
                client.try_ack(&publish).map_err(|err| format!("ack: {err}"))?;
            }
            Event::Incoming(Packet::SubAck(ack)) => debug!(codes = ?ack.return_codes, "subscribed to answers"),
            _ => {}
        }
        Ok(())
    }

    /// A steward's answer: recorded, or logged and ignored; never fatal.
    fn on_answer(&self, topic: &str, bytes: &[u8]) {
        let (incident_id, answer) = match payload::parse_ack(bytes, self.clock.now_ms()) {
            Ok(parsed) => parsed,
            Err(problem) => {
                self.stats.answers_ignored.fetch_add(1, Ordering::Relaxed);
                warn!(topic, problem = %problem, "malformed ack message ignored");
                return;
            }
        };
        let (action, by) = (answer.action, answer.by.clone());
        match self.outbox.answer(&incident_id, answer) {
            Ok(AnswerOutcome::UnknownIncident) => {
                self.stats.answers_ignored.fetch_add(1, Ordering::Relaxed);
                warn!(topic, incident_id, "ack for an unknown incident ignored");
            }
            Ok(AnswerOutcome::Duplicate) => debug!(incident_id, "repeated ack ignored"),
            Ok(AnswerOutcome::Recorded { false_alarms }) => {
                self.stats.answers.fetch_add(1, Ordering::Relaxed);
                info!(incident_id, action = ?action, by = %by, "steward answered");
                // Its echo was committed with it: publish it.
                self.wake.notify_one();
                if let Some((place, count)) = false_alarms {
                    warn!(place = %place, count, "false alarm reported by a steward");
                }
            }
            Err(err) => error!(error = format!("{err:#}"), incident_id, "cannot record an answer"),
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
    /// after `cursor` in commit order.
    fn fill(
        &self,
        client: &AsyncClient,
        window: &mut Window,
        statuses: &mut BTreeMap<String, Vec<u8>>,
        cursor: &mut u64,
    ) -> Result<(), String> {
        while window.free() > 0 {
            let Some((topic, payload)) = statuses.pop_first() else { break };
            client.try_publish(topic, QoS::AtLeastOnce, true, payload).map_err(|err| format!("publish: {err}"))?;
            window.requested(Carried::Status);
        }
        if window.free() == 0 {
            return Ok(());
        }
        let records = match self.outbox.pending(*cursor, window.free()) {
            Ok(records) => records,
            Err(err) => {
                error!(error = format!("{err:#}"), "cannot read the outbox");
                return Ok(());
            }
        };
        let mqtt = &self.settings.mqtt;
        for (id, record) in records {
            let topic = payload::topic(&mqtt.topic_prefix, &self.settings.escalation, &record);
            let jpeg = record.snapshot.as_ref().and_then(|path| std::fs::read(path).ok());
            let body = payload::incident_payload(&mqtt.topic_prefix, &record, jpeg.as_deref(), mqtt.snapshot_max_bytes);
            client.try_publish(topic, QoS::AtLeastOnce, false, body).map_err(|err| format!("publish: {err}"))?;
            window.requested(Carried::Record(id));
            self.stats.published.fetch_add(1, Ordering::Relaxed);
            *cursor = id;
        }
        Ok(())
    }

    /// On a clean stop: retained "offline" status, the in-flight PUBACKs (briefly), DISCONNECT.
    async fn say_goodbye(
        &self,
        client: &AsyncClient,
        events: &mut mpsc::Receiver<Result<Event, rumqttc::ConnectionError>>,
        window: &mut Window,
    ) {
        let goodbye = self.gateway_status("offline", Some("stopped"));
        if client.try_publish(self.gateway_topic(), QoS::AtLeastOnce, true, goodbye).is_ok() {
            window.requested(Carried::Status);
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        while !window.is_empty() {
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
        }
        let _ = client.try_disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(1), events.recv()).await;
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
