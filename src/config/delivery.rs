//! `[mqtt]` and `[escalation]`: where incident events go and how unanswered ones are chased.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::validate::{resolve, secret, Problems};
use super::Secret;

/// `[mqtt]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMqtt {
    /// `mqtt://host[:port]` (default port 1883) or `mqtts://host[:port]` (TLS, default port
    /// 8883). Required. Credentials never go in the URL.
    pub url: Option<String>,
    /// MQTT client id; the broker keeps this gateway's session under it. Default
    /// `street-gateway`. `[A-Za-z0-9_-]{1,64}`.
    pub client_id: Option<String>,
    /// First level of every topic. Default `lixia`.
    pub topic_prefix: Option<String>,
    /// User name. Default none.
    pub username: Option<String>,
    /// Name of an environment variable holding the password.
    pub password_env: Option<String>,
    /// File whose first line is the password.
    pub password_file: Option<String>,
    /// mqtts: PEM file of the CA(s) that sign the broker's certificate, relative to this
    /// config file. Default: the system's trusted roots.
    pub ca_file: Option<String>,
    /// Keep-alive interval. Default 30.
    pub keep_alive_secs: Option<u64>,
    /// Publishes awaiting PUBACK at once. Default 32, at most 64.
    pub inflight: Option<usize>,
    /// A publish not acknowledged within this long means the broker is hung: the connection
    /// is dropped and everything unacknowledged is sent again. Default 30.
    pub ack_timeout_secs: Option<u64>,
    /// Cap of the reconnection backoff. Default 30.
    pub reconnect_max_secs: Option<u64>,
    /// Inline snapshot JPEGs (base64) up to this size; larger ones are left out of the
    /// payload (and said so). Default 262144.
    pub snapshot_max_bytes: Option<usize>,
}

/// `[escalation]`: the "whistle" loop.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEscalation {
    /// An opened incident nobody answered is sent to the steward again after this long.
    /// Default 600.
    pub renotify_after_secs: Option<u64>,
    /// ... and escalated to the grid worker and the governance centre after this long.
    /// Default 1800.
    pub escalate_after_secs: Option<u64>,
    /// The governance centre's topic. Default `<prefix>/centre/escalations`.
    pub centre_topic: Option<String>,
    /// Per-grid overrides, keyed by the cameras' `grid` label (`[escalation.grids."lixia-07"]`).
    #[serde(default)]
    pub grids: BTreeMap<String, RawGridEscalation>,
}

/// `[escalation.grids.<grid>]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGridEscalation {
    /// Overrides `escalation.renotify_after_secs` for this grid.
    pub renotify_after_secs: Option<u64>,
    /// Overrides `escalation.escalate_after_secs` for this grid.
    pub escalate_after_secs: Option<u64>,
    /// The grid worker's topic. Default `<prefix>/<street>/<community>/<grid>/escalations`.
    pub worker_topic: Option<String>,
}

/// A validated `[mqtt]`.
#[derive(Debug, Clone, PartialEq)]
pub struct MqttConfig {
    /// Broker host.
    pub host: String,
    /// Broker port.
    pub port: u16,
    /// TLS (`mqtts://`), with an optional private CA.
    pub tls: Option<MqttTls>,
    /// Client id (and the broker-side session's name).
    pub client_id: String,
    /// First topic level.
    pub topic_prefix: String,
    /// User name and password.
    pub credentials: Option<(String, Secret)>,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// Publishes awaiting PUBACK at once.
    pub inflight: usize,
    /// Longest wait for a PUBACK before the connection is considered hung.
    pub ack_timeout: Duration,
    /// Reconnection backoff cap.
    pub reconnect_max: Duration,
    /// Largest snapshot inlined in a payload.
    pub snapshot_max_bytes: usize,
}

/// TLS settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttTls {
    /// PEM CA file; `None` uses the system roots.
    pub ca_file: Option<PathBuf>,
}

/// A validated `[escalation]`.
#[derive(Debug, Clone, PartialEq)]
pub struct EscalationConfig {
    /// Default T1.
    pub renotify_after: Duration,
    /// Default T2.
    pub escalate_after: Duration,
    /// Governance centre topic; `None` means `<prefix>/centre/escalations`.
    pub centre_topic: Option<String>,
    /// Per-grid overrides.
    pub grids: BTreeMap<String, GridEscalation>,
}

/// One grid's escalation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GridEscalation {
    /// T1 for this grid.
    pub renotify_after: Duration,
    /// T2 for this grid.
    pub escalate_after: Duration,
    /// The grid worker's topic, when not the default.
    pub worker_topic: Option<String>,
}

impl Default for EscalationConfig {
    fn default() -> Self {
        EscalationConfig {
            renotify_after: Duration::from_secs(600),
            escalate_after: Duration::from_secs(1800),
            centre_topic: None,
            grids: BTreeMap::new(),
        }
    }
}

impl EscalationConfig {
    /// (T1, T2) for a grid.
    pub fn timers(&self, grid: &str) -> (Duration, Duration) {
        match self.grids.get(grid) {
            Some(g) => (g.renotify_after, g.escalate_after),
            None => (self.renotify_after, self.escalate_after),
        }
    }
}

/// Whether `text` can be one topic level: non-empty, no `/`, `+`, `#` or NUL.
pub fn is_topic_level(text: &str) -> bool {
    !text.is_empty() && !text.contains(['/', '+', '#', '\0'])
}

/// Whether `text` can be a topic to publish to: levels separated by `/`, no wildcards.
pub fn is_publish_topic(text: &str) -> bool {
    !text.is_empty() && !text.starts_with('/') && !text.ends_with('/') && text.split('/').all(is_topic_level)
}

pub(super) fn validate_mqtt(
    raw: &RawMqtt,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> Option<MqttConfig> {
    let before = problems.0.len();
    let (host, port, tls) = match raw.url.as_deref() {
        None => {
            problems.push("mqtt.url", "is required");
            (String::new(), 0, None)
        }
        Some(text) => match url::Url::parse(text) {
            Err(error) => {
                problems.push("mqtt.url", format!("not a URL ({error})"));
                (String::new(), 0, None)
            }
            Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                problems
                    .push("mqtt.url", "must not contain credentials; use username and password_env or password_file");
                (String::new(), 0, None)
            }
            Ok(url) => {
                let tls = match url.scheme() {
                    "mqtt" => None,
                    "mqtts" => Some(MqttTls { ca_file: raw.ca_file.as_deref().map(|file| resolve(base_dir, file)) }),
                    other => {
                        problems
                            .push("mqtt.url", format!("unsupported scheme {other:?}; expected \"mqtt\" or \"mqtts\""));
                        None
                    }
                };
                let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']).to_string();
                if host.is_empty() {
                    problems.push("mqtt.url", "has no host");
                }
                let port = url.port().unwrap_or(if tls.is_some() { 8883 } else { 1883 });
                (host, port, tls)
            }
        },
    };
    if let (Some(_), None) = (&raw.ca_file, &tls) {
        problems.push("mqtt.ca_file", "applies only to mqtts:// brokers");
    }
    if let Some(MqttTls { ca_file: Some(file) }) = &tls {
        if !file.is_file() {
            problems.push("mqtt.ca_file", format!("{} does not exist", file.display()));
        }
    }
    let client_id = raw.client_id.clone().unwrap_or_else(|| "street-gateway".to_string());
    if super::CameraId::try_new(&client_id).is_err() {
        problems.push("mqtt.client_id", "must be 1-64 characters of A-Z, a-z, 0-9, '-' and '_'");
    }
    let topic_prefix = raw.topic_prefix.clone().unwrap_or_else(|| "lixia".to_string());
    if !is_publish_topic(&topic_prefix) {
        problems.push("mqtt.topic_prefix", "must be topic levels separated by '/', without '+', '#' or empty levels");
    }
    let password = secret("mqtt", raw.password_env.as_deref(), raw.password_file.as_deref(), base_dir, env, problems);
    let credentials = match (&raw.username, password) {
        (Some(username), Some(password)) => Some((username.clone(), Secret::new(password))),
        (Some(_), None) if raw.password_env.is_none() && raw.password_file.is_none() => {
            problems.push("mqtt.username", "needs password_env or password_file");
            None
        }
        (None, Some(_)) => {
            problems.push("mqtt.username", "is required when a password is configured");
            None
        }
        _ => None,
    };
    let keep_alive = problems.secs("mqtt.keep_alive_secs", raw.keep_alive_secs, 30, 5, 3600);
    let inflight = problems.count("mqtt.inflight", raw.inflight, 32, 1, 64);
    let ack_timeout = problems.secs("mqtt.ack_timeout_secs", raw.ack_timeout_secs, 30, 1, 3600);
    let reconnect_max = problems.secs("mqtt.reconnect_max_secs", raw.reconnect_max_secs, 30, 1, 3600);
    let snapshot_max_bytes = problems.count("mqtt.snapshot_max_bytes", raw.snapshot_max_bytes, 262_144, 0, 8 << 20);
    if problems.0.len() > before {
        return None;
    }
    Some(MqttConfig {
        host,
        port,
        tls,
        client_id,
        topic_prefix,
        credentials,
        keep_alive,
        inflight,
        ack_timeout,
        reconnect_max,
        snapshot_max_bytes,
    })
}

pub(super) fn validate_escalation(raw: &RawEscalation, problems: &mut Problems) -> EscalationConfig {
    let defaults = EscalationConfig::default();
    // 1 s to 30 days.
    let secs = |problems: &mut Problems, path: &str, value: Option<u64>, default: Duration| {
        problems.secs(path, value, default.as_secs(), 1, 30 * 86_400)
    };
    let renotify_after =
        secs(problems, "escalation.renotify_after_secs", raw.renotify_after_secs, defaults.renotify_after);
    let escalate_after =
        secs(problems, "escalation.escalate_after_secs", raw.escalate_after_secs, defaults.escalate_after);
    if escalate_after <= renotify_after {
        problems.push("escalation.escalate_after_secs", "must be more than escalation.renotify_after_secs");
    }
    if let Some(topic) = &raw.centre_topic {
        if !is_publish_topic(topic) {
            problems.push("escalation.centre_topic", "must be a topic without '+', '#' or empty levels");
        }
    }
    let mut grids = BTreeMap::new();
    for (grid, raw_grid) in &raw.grids {
        let path = format!("escalation.grids.{grid}");
        let renotify =
            secs(problems, &format!("{path}.renotify_after_secs"), raw_grid.renotify_after_secs, renotify_after);
        let escalate =
            secs(problems, &format!("{path}.escalate_after_secs"), raw_grid.escalate_after_secs, escalate_after);
        if escalate <= renotify {
            problems.push(format!("{path}.escalate_after_secs"), "must be more than renotify_after_secs");
        }
        if let Some(topic) = &raw_grid.worker_topic {
            if !is_publish_topic(topic) {
                problems.push(format!("{path}.worker_topic"), "must be a topic without '+', '#' or empty levels");
            }
        }
        grids.insert(
            grid.clone(),
            GridEscalation {
                renotify_after: renotify,
                escalate_after: escalate,
                worker_topic: raw_grid.worker_topic.clone(),
            },
        );
    }
    EscalationConfig { renotify_after, escalate_after, centre_topic: raw.centre_topic.clone(), grids }
}

#[cfg(test)]
mod tests {
    use crate::config::parse;
    use crate::config::validate::problems_of;

    #[test]
    fn mqtt_defaults_and_tls_port() {
        let dir = tempfile::tempdir().unwrap();
        let config = parse("[mqtt]\nurl = \"mqtts://broker.lixia\"\n", dir.path()).unwrap();
        let mqtt = config.mqtt.unwrap();
        assert_eq!((mqtt.host.as_str(), mqtt.port), ("broker.lixia", 8883));
        assert_eq!(mqtt.tls, Some(super::MqttTls { ca_file: None }));
        assert_eq!(
            (mqtt.client_id.as_str(), mqtt.topic_prefix.as_str(), mqtt.inflight),
            ("street-gateway", "lixia", 32)
        );
        let plain = parse("[mqtt]\nurl = \"mqtt://127.0.0.1\"\n", dir.path()).unwrap().mqtt.unwrap();
        assert_eq!((plain.port, plain.tls), (1883, None));
    }

    #[test]
    fn mqtt_and_escalation_problems_are_reported_with_paths() {
        let problems = problems_of(
            r#"
            [mqtt]
            url = "mqtt://gw:hunter2@broker"
            topic_prefix = "lixia/#"
            inflight = 500
            [escalation]
            renotify_after_secs = 600
            escalate_after_secs = 300
            [escalation.grids.g1]
            worker_topic = "a//b"
            "#,
        );
        let expected = [
            "mqtt.url: must not contain credentials; use username and password_env or password_file",
            "mqtt.topic_prefix: must be topic levels separated by '/', without '+', '#' or empty levels",
            "mqtt.inflight: 500 is out of range 1..=64",
            "escalation.escalate_after_secs: must be more than escalation.renotify_after_secs",
            "escalation.grids.g1.escalate_after_secs: must be more than renotify_after_secs",
            "escalation.grids.g1.worker_topic: must be a topic without '+', '#' or empty levels",
        ];
        assert_eq!(problems, expected);
        assert!(!problems.iter().any(|p| p.contains("hunter2")), "password leaked: {problems:?}");
    }

    #[test]
    fn place_labels_must_be_usable_as_topic_levels() {
        let problems = problems_of("[cameras.a]\nurl = \"rtsp://h/\"\ngrid = \"grid/7\"\n");
        assert_eq!(problems, ["cameras.a.grid: \"grid/7\" cannot be an MQTT topic level (no '/', '+', '#')"]);
    }
}
