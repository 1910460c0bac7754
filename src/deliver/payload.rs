//! Topics and payloads, pure: an outbox record → (topic, JSON), a steward's ack message →
//! an [`Answer`]. The payload ([`IncidentPayload`]) follows `schemas/incident-event.v1.schema.json`;
//! acks are `schemas/ack.v1.schema.json`. A unit test checks every kind of payload against the
//! schema file (and its bytes against v1's); the MQTT integration test runs the full
//! validator on both schemas.
//!
//! Topics (an empty place label becomes `unassigned`):
//! - `<prefix>/<street>/<community>/<grid>/incidents/<kind>`: incident events;
//! - `<prefix>/<street>/<community>/<grid>/reminders/<kind>`: T1 reminders to the steward;
//! - the grid worker's topic (default `<prefix>/<street>/<community>/<grid>/escalations`) and
//!   the centre's (default `<prefix>/centre/escalations`): T2 escalations;
//! - `<prefix>/<street>/<community>/<grid>/ack`: stewards' answers (subscribed as `+/+/+`);
//! - `<prefix>/status/gateway/<client_id>` and `<prefix>/status/cameras/<camera>`: retained.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::config::delivery::EscalationConfig;
use crate::followup::{AckAction, Answer};
use crate::outbox::{OutboxRecord, Recipient};

/// `schema` of an incident payload.
pub const INCIDENT_SCHEMA: &str = "street-gateway/incident-event/1";

/// Topic level for a place label.
fn level(label: &str) -> &str {
    if label.is_empty() {
        "unassigned"
    } else {
        label
    }
}

/// `<prefix>/<street>/<community>/<grid>`.
pub fn place_topic(prefix: &str, record: &OutboxRecord) -> String {
    format!("{prefix}/{}/{}/{}", level(&record.street), level(&record.community), level(&record.grid))
}

/// The topic a record is published to.
pub fn topic(prefix: &str, escalation: &EscalationConfig, record: &OutboxRecord) -> String {
    let place = place_topic(prefix, record);
    let kind = record.event.kind.as_str();
    if record.answer.is_some() {
        return format!("{place}/answers/{kind}");
    }
    match record.followup.as_ref().map(|notice| notice.recipient) {
        None => format!("{place}/incidents/{kind}"),
        Some(Recipient::Steward) => format!("{place}/reminders/{kind}"),
        Some(Recipient::GridWorker) => escalation
            .grids
            .get(&record.grid)
            .and_then(|grid| grid.worker_topic.clone())
            .unwrap_or_else(|| format!("{place}/escalations")),
        Some(Recipient::Centre) => {
            escalation.centre_topic.clone().unwrap_or_else(|| format!("{prefix}/centre/escalations"))
        }
    }
}

/// The filter the gateway subscribes to for answers.
pub fn ack_filter(prefix: &str) -> String {
    format!("{prefix}/+/+/+/ack")
}

/// An incident payload (`schemas/incident-event.v1.schema.json`): what consumers receive on
/// the incident, reminder, escalation and answer topics. Field names and types are the v1
/// contract: add optional fields freely, never rename or retype one (a Rust test checks the
/// payloads against the schema file).
#[derive(Debug, Clone, Serialize)]
pub struct IncidentPayload<'a> {
    /// [`INCIDENT_SCHEMA`].
    pub schema: &'static str,
    /// `camera:zone:kind:start_ms`.
    pub incident_id: &'a str,
    /// 1 for opened, +1 per event.
    pub seq: u32,
    /// `opened`, `updated` or `cleared`.
    pub event: crate::incident::EventKind,
    /// The incident kind (`misparked_bike`, …).
    pub kind: &'static str,
    /// The camera.
    pub camera: &'a str,
    /// The zone.
    pub zone: &'a str,
    /// When the event happened, ms since the epoch.
    pub t_ms: i64,
    /// When the incident opened, ms since the epoch.
    pub started_ms: i64,
    /// Score, rounded to three decimals.
    pub score: f64,
    /// Objects supporting the incident.
    pub count: usize,
    /// One line for people.
    pub detail: &'a str,
    /// The supporting objects.
    pub objects: &'a [crate::rules::ObjectRef],
    /// Where.
    pub place: Place<'a>,
    /// Where to answer.
    pub ack_topic: String,
    /// Set on reminders and escalations.
    pub followup: Option<&'a crate::outbox::Notice>,
    /// Set on answer echoes.
    pub answer: Option<&'a Answer>,
    /// The snapshot inline, when within the cap.
    pub snapshot: Option<InlineSnapshot>,
    /// Why a snapshot the gateway took is not inline.
    pub snapshot_omitted: Option<String>,
    /// The console URL of the incident's clip (schema revision 2, issue 16): only on incidents
    /// whose clip is recorded, so every other payload stays as it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clip_url: Option<&'a str>,
}

/// The place labels of an incident payload.
#[derive(Debug, Clone, Serialize)]
pub struct Place<'a> {
    /// Street (街道).
    pub street: &'a str,
    /// Compound (小区).
    pub community: &'a str,
    /// Grid (网格).
    pub grid: &'a str,
    /// Steward (物业管家).
    pub steward: &'a str,
}

/// A JPEG inlined in a payload.
#[derive(Debug, Clone, Serialize)]
pub struct InlineSnapshot {
    /// `image/jpeg`.
    pub content_type: &'static str,
    /// `base64`.
    pub encoding: &'static str,
    /// Size of the JPEG.
    pub bytes: usize,
    /// The JPEG, base64.
    pub data: String,
}

impl<'a> IncidentPayload<'a> {
    /// The payload of `record`. `snapshot` is the JPEG, if it could be read; it is inlined
    /// (base64) when at most `snapshot_max_bytes`, else left out with the reason.
    pub fn new(prefix: &str, record: &'a OutboxRecord, snapshot: Option<&[u8]>, snapshot_max_bytes: usize) -> Self {
        let event = &record.event;
        let (snapshot, snapshot_omitted) = match (snapshot, &record.snapshot) {
            (Some(jpeg), _) if jpeg.len() <= snapshot_max_bytes => (
                Some(InlineSnapshot {
                    content_type: "image/jpeg",
                    encoding: "base64",
                    bytes: jpeg.len(),
                    data: base64::engine::general_purpose::STANDARD.encode(jpeg),
                }),
                None,
            ),
            (Some(jpeg), _) => (None, Some(format!("{} bytes is over the {snapshot_max_bytes}-byte cap", jpeg.len()))),
            (None, Some(_)) => (None, Some("snapshot file missing".to_string())),
            (None, None) => (None, None),
        };
        IncidentPayload {
            schema: INCIDENT_SCHEMA,
            incident_id: &event.incident_id,
            seq: event.seq,
            event: event.event,
            kind: event.kind.as_str(),
            camera: &event.camera,
            zone: &event.zone,
            t_ms: event.t_ms,
            started_ms: event.started_ms,
            score: (f64::from(event.score) * 1000.0).round() / 1000.0,
            count: event.count,
            detail: &event.detail,
            objects: &event.objects,
            place: Place {
                street: &record.street,
                community: &record.community,
                grid: &record.grid,
                steward: &record.steward,
            },
            ack_topic: ack_topic(prefix, record),
            followup: record.followup.as_ref(),
            answer: record.answer.as_ref(),
            snapshot,
            snapshot_omitted,
            clip_url: record.clip_url.as_deref(),
        }
    }

    /// The JSON bytes. Through a `serde_json::Value`, as v1 has always been built: keys in
    /// sorted order and `f32` values (object scores, boxes) widened to `f64`, so consumers
    /// get the same bytes as before the payload was a struct.
    pub fn to_json(&self) -> Vec<u8> {
        let value = serde_json::to_value(self).expect("payload serialises");
        serde_json::to_vec(&value).expect("payload serialises")
    }
}

/// The incident payload of `record` as JSON ([`IncidentPayload`]).
pub fn incident_payload(
    prefix: &str,
    record: &OutboxRecord,
    snapshot: Option<&[u8]>,
    snapshot_max_bytes: usize,
) -> Vec<u8> {
    IncidentPayload::new(prefix, record, snapshot, snapshot_max_bytes).to_json()
}

/// Largest ack payload taken, bytes: a steward's answer is about 150. Larger ones (up to the
/// MQTT 5 Maximum Packet Size the gateway announces, [`super::ANSWER_PACKET_MAX_BYTES`]) are
/// acknowledged and dropped as `oversized`; the broker discards anything larger for us.
pub const ANSWER_MAX_BYTES: usize = 4096;
/// Longest `incident_id`, characters: `camera:zone:kind:start_ms` with 64-character ids fits.
/// In characters, as `maxLength` in `schemas/ack.v1.schema.json` counts.
pub const INCIDENT_ID_MAX_CHARS: usize = 256;
/// Longest `by`, characters (a name or a phone's id; at most 256 bytes of UTF-8).
pub const BY_MAX_CHARS: usize = 64;
/// How long before its incident opened an answer may say it was given (phones' clocks run
/// off by minutes); earlier, the arrival time is recorded instead.
pub const ANSWER_EARLY_SLACK_MS: i64 = 10 * 60_000;
/// How long after its arrival an answer may say it was given; later, the arrival time is
/// recorded instead (an `at_ms` far ahead would keep the incident from ever expiring).
pub const ANSWER_LATE_SLACK_MS: i64 = 60_000;

/// A steward's answer as sent on an ack topic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AckMessage {
    /// The incident answered.
    pub incident_id: String,
    /// `ack`, `resolved` or `false_alarm`.
    pub action: AckAction,
    /// Who answered.
    pub by: String,
    /// When, ms since the epoch (optional: the arrival time is used without it).
    #[serde(default)]
    pub at_ms: Option<i64>,
}

/// Why an ack message was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckProblem {
    /// Over [`ANSWER_MAX_BYTES`]; the size.
    Oversized(usize),
    /// Not an ack message; what is wrong (for the log, debug-quoted there).
    Malformed(String),
}

impl std::fmt::Display for AckProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AckProblem::Oversized(bytes) => write!(f, "{bytes} bytes is over the {ANSWER_MAX_BYTES}-byte cap"),
            AckProblem::Malformed(problem) => f.write_str(problem),
        }
    }
}

/// Parses an ack message strictly: at most [`ANSWER_MAX_BYTES`], the schema's fields only,
/// `incident_id` and `by` within their caps and free of control characters (they end up in
/// logs, the console and stewards' phones). Never panics, whatever the bytes.
pub fn parse_answer(bytes: &[u8]) -> Result<AckMessage, AckProblem> {
    if bytes.len() > ANSWER_MAX_BYTES {
        return Err(AckProblem::Oversized(bytes.len()));
    }
    let message: AckMessage =
        serde_json::from_slice(bytes).map_err(|error| AckProblem::Malformed(error.to_string()))?;
    let malformed = |problem: &str| Err(AckProblem::Malformed(problem.to_string()));
    if message.incident_id.is_empty() || message.incident_id.chars().count() > INCIDENT_ID_MAX_CHARS {
        return malformed("incident_id must be 1-256 characters");
    }
    if message.by.trim().is_empty() || message.by.chars().count() > BY_MAX_CHARS {
        return malformed("by must be 1-64 characters, not only spaces");
    }
    if message.incident_id.chars().chain(message.by.chars()).any(char::is_control) {
        return malformed("incident_id and by must not hold control characters");
    }
    Ok(message)
}

/// Parses an ack message into an answer, with `received_ms` as its time when it gives none.
/// The time is taken as sent: [`answer_time_ms`] bounds it once the incident is known.
pub fn parse_ack(bytes: &[u8], received_ms: i64) -> Result<(String, Answer), String> {
    let message = parse_answer(bytes).map_err(|problem| problem.to_string())?;
    let answer = Answer { action: message.action, by: message.by, at_ms: message.at_ms.unwrap_or(received_ms) };
    Ok((message.incident_id, answer))
}

/// The time recorded for an answer: the sender's `at_ms` if it falls between
/// [`ANSWER_EARLY_SLACK_MS`] before the incident opened and [`ANSWER_LATE_SLACK_MS`] after the
/// answer arrived, else the arrival time. The second value says whether it was replaced.
pub fn answer_time_ms(sent_ms: Option<i64>, opened_at_ms: i64, received_ms: i64) -> (i64, bool) {
    let earliest = opened_at_ms.saturating_sub(ANSWER_EARLY_SLACK_MS);
    let latest = received_ms.saturating_add(ANSWER_LATE_SLACK_MS);
    match sent_ms {
        None => (received_ms, false),
        Some(at_ms) if (earliest..=latest).contains(&at_ms) => (at_ms, false),
        Some(_) => (received_ms, true),
    }
}

/// The ack topic of a record's place: the only topic answers to its incident are taken from.
pub fn ack_topic(prefix: &str, record: &OutboxRecord) -> String {
    format!("{}/ack", place_topic(prefix, record))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::followup::Due;
    use crate::incident::{EventKind, IncidentEvent};
    use crate::outbox::{Notice, RECORD_SCHEMA};
    use crate::rules::IncidentKind;

    pub(crate) fn record() -> OutboxRecord {
        OutboxRecord {
            schema: RECORD_SCHEMA,
            event: IncidentEvent {
                incident_id: "gate-3:pavement:misparked_bike:1700000000000".into(),
                seq: 1,
                event: EventKind::Opened,
                kind: IncidentKind::MisparkedBike,
                camera: "gate-3".into(),
                zone: "pavement".into(),
                t_ms: 1_700_000_300_000,
                started_ms: 1_700_000_000_000,
                score: 0.8123,
                count: 1,
                detail: "1 bike stationary 300 s".into(),
                objects: Vec::new(),
            },
            street: "文化东路街道".into(),
            community: "山大路小区".into(),
            grid: "".into(),
            steward: "王师傅".into(),
            snapshot: None,
            clip_url: None,
            followup: None,
            answer: None,
        }
    }

    #[test]
    fn topics_follow_the_place_and_the_recipient() {
        let escalation = EscalationConfig::default();
        let mut record = record();
        assert_eq!(
            topic("lixia", &escalation, &record),
            "lixia/文化东路街道/山大路小区/unassigned/incidents/misparked_bike"
        );
        record.followup = Some(Notice { due: Due::Reminder, recipient: Recipient::Steward, unanswered_ms: 1 });
        assert_eq!(
            topic("lixia", &escalation, &record),
            "lixia/文化东路街道/山大路小区/unassigned/reminders/misparked_bike"
        );
        record.followup = Some(Notice { due: Due::Escalation, recipient: Recipient::Centre, unanswered_ms: 1 });
        assert_eq!(topic("lixia", &escalation, &record), "lixia/centre/escalations");
        record.followup = None;
        record.answer = Some(crate::followup::Answer { action: AckAction::Ack, by: "wang".into(), at_ms: 5 });
        assert_eq!(
            topic("lixia", &escalation, &record),
            "lixia/文化东路街道/山大路小区/unassigned/answers/misparked_bike"
        );
    }

    #[test]
    fn snapshots_are_inlined_under_the_cap_and_said_missing_otherwise() {
        let mut record = record();
        record.snapshot = Some("x.jpg".into());
        let inline: serde_json::Value =
            serde_json::from_slice(&incident_payload("lixia", &record, Some(&[0xff, 0xd8, 0xff]), 10)).unwrap();
        assert_eq!(inline["snapshot"]["data"], "/9j/");
        assert_eq!(inline["score"], 0.812);
        let big: serde_json::Value =
            serde_json::from_slice(&incident_payload("lixia", &record, Some(&[0; 11]), 10)).unwrap();
        assert!(big["snapshot"].is_null());
        assert_eq!(big["snapshot_omitted"], "11 bytes is over the 10-byte cap");
        let missing: serde_json::Value = serde_json::from_slice(&incident_payload("lixia", &record, None, 10)).unwrap();
        assert_eq!(missing["snapshot_omitted"], "snapshot file missing");
        assert!(missing.get("clip_url").is_none(), "no clip: the payload is as before");
        record.clip_url = Some("http://127.0.0.1:8080/api/incidents/a%3Ab/clip.mp4".into());
        let clipped: serde_json::Value = serde_json::from_slice(&incident_payload("lixia", &record, None, 10)).unwrap();
        assert_eq!(clipped["clip_url"], "http://127.0.0.1:8080/api/incidents/a%3Ab/clip.mp4");
    }

    /// The payload as v1 built it with `json!` before it was a struct: the reference the
    /// struct's bytes must keep matching.
    fn v1_reference(prefix: &str, record: &OutboxRecord, snapshot: Option<&[u8]>, max: usize) -> Vec<u8> {
        use serde_json::json;
        let event = &record.event;
        let (snapshot, snapshot_omitted) = match (snapshot, &record.snapshot) {
            (Some(jpeg), _) if jpeg.len() <= max => (
                json!({
                    "content_type": "image/jpeg",
                    "encoding": "base64",
                    "bytes": jpeg.len(),
                    "data": base64::engine::general_purpose::STANDARD.encode(jpeg),
                }),
                None,
            ),
            (Some(jpeg), _) => {
                (serde_json::Value::Null, Some(format!("{} bytes is over the {max}-byte cap", jpeg.len())))
            }
            (None, Some(_)) => (serde_json::Value::Null, Some("snapshot file missing".to_string())),
            (None, None) => (serde_json::Value::Null, None),
        };
        serde_json::to_vec(&json!({
            "schema": INCIDENT_SCHEMA, "incident_id": event.incident_id, "seq": event.seq,
            "event": event.event, "kind": event.kind.as_str(), "camera": event.camera,
            "zone": event.zone, "t_ms": event.t_ms, "started_ms": event.started_ms,
            "score": (f64::from(event.score) * 1000.0).round() / 1000.0, "count": event.count,
            "detail": event.detail, "objects": event.objects,
            "place": { "street": record.street, "community": record.community, "grid": record.grid, "steward": record.steward },
            "ack_topic": ack_topic(prefix, record), "followup": record.followup, "answer": record.answer,
            "snapshot": snapshot, "snapshot_omitted": snapshot_omitted,
        }))
        .unwrap()
    }

    /// Every kind of payload: opened with objects and an inline snapshot, one over the cap,
    /// a missing snapshot file, a reminder, an answer echo, a cleared event.
    fn every_kind_of_payload() -> Vec<(OutboxRecord, Option<Vec<u8>>)> {
        let mut opened = record();
        opened.event.objects = vec![crate::rules::ObjectRef {
            track_id: 3,
            class_id: 1,
            bbox: crate::geometry::BoxNorm { x1: 0.1, y1: 0.2, x2: 0.3, y2: 0.4 },
            score: 0.9,
        }];
        opened.snapshot = Some("evidence.jpg".into());
        let mut reminder = opened.clone();
        reminder.followup = Some(Notice { due: Due::Escalation, recipient: Recipient::GridWorker, unanswered_ms: 1 });
        let mut echo = opened.clone();
        echo.snapshot = None;
        echo.answer = Some(Answer { action: AckAction::FalseAlarm, by: "王师傅".into(), at_ms: 7 });
        let mut cleared = record();
        cleared.event.event = EventKind::Cleared;
        cleared.event.seq = 2;
        vec![
            (opened.clone(), Some(vec![0xff, 0xd8, 0xff, 0xd9])),
            (opened.clone(), Some(vec![0; 2000])),
            (opened, None),
            (reminder, None),
            (echo, None),
            (cleared, None),
        ]
    }

    #[test]
    fn the_payload_struct_sends_the_bytes_v1_always_sent() {
        for (record, jpeg) in every_kind_of_payload() {
            let payload = incident_payload("lixia", &record, jpeg.as_deref(), 1000);
            assert_eq!(
                String::from_utf8(payload).unwrap(),
                String::from_utf8(v1_reference("lixia", &record, jpeg.as_deref(), 1000)).unwrap()
            );
        }
    }

    /// What `value` breaks of `schema`, for the part of JSON Schema 2020-12 the shipped
    /// schemas use (type, enum, const, required, properties, additionalProperties: false,
    /// items, oneOf, minimum, maximum, minLength). `pattern` and content keywords are left
    /// to the full validator of the MQTT integration test.
    fn violations(value: &serde_json::Value, schema: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        use serde_json::Value;
        let Some(schema) = schema.as_object() else { return };
        if let Some(types) = schema.get("type") {
            let types: Vec<&str> = match types {
                Value::Array(types) => types.iter().filter_map(Value::as_str).collect(),
                other => other.as_str().into_iter().collect(),
            };
            let is = |t: &str| match t {
                "null" => value.is_null(),
                "string" => value.is_string(),
                "integer" => value.is_i64() || value.is_u64(),
                "number" => value.is_number(),
                "object" => value.is_object(),
                "array" => value.is_array(),
                "boolean" => value.is_boolean(),
                _ => false,
            };
            if !types.iter().any(|t| is(t)) {
                out.push(format!("{path}: {value} is not {types:?}"));
                return;
            }
        }
        if schema.get("enum").and_then(Value::as_array).is_some_and(|options| !options.contains(value)) {
            out.push(format!("{path}: {value} not in the enum"));
        }
        if schema.get("const").is_some_and(|constant| constant != value) {
            out.push(format!("{path}: {value} is not the const"));
        }
        let number = value.as_f64();
        if let (Some(min), Some(v)) = (schema.get("minimum").and_then(Value::as_f64), number) {
            if v < min {
                out.push(format!("{path}: {v} < {min}"));
            }
        }
        if let (Some(max), Some(v)) = (schema.get("maximum").and_then(Value::as_f64), number) {
            if v > max {
                out.push(format!("{path}: {v} > {max}"));
            }
        }
        if let (Some(min), Some(text)) = (schema.get("minLength").and_then(Value::as_u64), value.as_str()) {
            if (text.chars().count() as u64) < min {
                out.push(format!("{path}: shorter than {min}"));
            }
        }
        if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
            let matching = options
                .iter()
                .filter(|option| {
                    let mut found = Vec::new();
                    violations(value, option, path, &mut found);
                    found.is_empty()
                })
                .count();
            if matching != 1 {
                out.push(format!("{path}: {value} matches {matching} of oneOf"));
            }
        }
        if let Some(object) = value.as_object() {
            for required in schema.get("required").and_then(Value::as_array).into_iter().flatten() {
                if let Some(key) = required.as_str().filter(|key| !object.contains_key(*key)) {
                    out.push(format!("{path}: {key} missing"));
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            for (key, item) in object {
                match properties.and_then(|properties| properties.get(key)) {
                    Some(property) => violations(item, property, &format!("{path}.{key}"), out),
                    None if schema.get("additionalProperties") == Some(&Value::Bool(false)) => {
                        out.push(format!("{path}: {key} is not in the schema"))
                    }
                    None => {}
                }
            }
        }
        if let (Some(items), Some(array)) = (schema.get("items"), value.as_array()) {
            for (i, item) in array.iter().enumerate() {
                violations(item, items, &format!("{path}[{i}]"), out);
            }
        }
    }

    #[test]
    fn every_payload_follows_the_schema_file_the_project_ships() {
        let schema: serde_json::Value =
            serde_json::from_str(include_str!("../../schemas/incident-event.v1.schema.json")).unwrap();
        assert_eq!(schema["properties"]["schema"]["const"], INCIDENT_SCHEMA);
        for (record, jpeg) in every_kind_of_payload() {
            let payload: serde_json::Value =
                serde_json::from_slice(&incident_payload("lixia", &record, jpeg.as_deref(), 1000)).unwrap();
            let mut found = Vec::new();
            violations(&payload, &schema, "$", &mut found);
            assert!(found.is_empty(), "{found:?} in {payload}");
        }
        // The check can fail: a field the schema does not know, a missing one, a wrong type.
        let good: serde_json::Value = serde_json::from_slice(&incident_payload("lixia", &record(), None, 10)).unwrap();
        let mut extra = good.clone();
        extra["clip"] = "x".into();
        let mut missing = good.clone();
        missing.as_object_mut().unwrap().remove("ack_topic");
        let mut retyped = good.clone();
        retyped["seq"] = "1".into();
        let mut bad_object = good;
        bad_object["objects"] = serde_json::json!([{ "track_id": 1, "class_id": 1, "score": 2.0,
            "box": { "x1": 0, "y1": 0, "x2": 1, "y2": 1 } }]);
        for bad in [extra, missing, retyped, bad_object] {
            let mut found = Vec::new();
            violations(&bad, &schema, "$", &mut found);
            assert!(!found.is_empty(), "accepted {bad}");
        }
    }

    #[test]
    fn acks_are_parsed_strictly() {
        let (id, answer) = parse_ack(br#"{"incident_id":"a:b:c:1","action":"false_alarm","by":"wang"}"#, 42).unwrap();
        assert_eq!((id.as_str(), answer.action, answer.at_ms), ("a:b:c:1", AckAction::FalseAlarm, 42));
        for bad in [
            &b"not json"[..],
            br#"{"incident_id":"a","action":"maybe","by":"wang"}"#,
            br#"{"incident_id":"a","action":"ack"}"#,
            br#"{"incident_id":"","action":"ack","by":"wang"}"#,
            br#"{"incident_id":"a","action":"ack","by":"wang","extra":1}"#,
            br#"{"incident_id":"a","action":"ack","by":"wang\nINFO forged line"}"#,
            br#"{"incident_id":"a\u001b[31m","action":"ack","by":"wang"}"#,
            br#"{"incident_id":"a","action":"ack","by":"   "}"#,
        ] {
            assert!(parse_ack(bad, 0).is_err(), "{:?} accepted", String::from_utf8_lossy(bad));
        }
        let big = format!(r#"{{"incident_id":"a","action":"ack","by":"{}"}}"#, "x".repeat(ANSWER_MAX_BYTES));
        assert_eq!(parse_answer(big.as_bytes()), Err(AckProblem::Oversized(big.len())));
    }

    #[test]
    fn answer_times_are_bounded_by_the_incident_and_the_arrival() {
        let (opened, received) = (1_000_000_000, 1_000_600_000);
        // (sent, recorded, replaced)
        let table = [
            (None, received, false),
            (Some(1_000_300_000), 1_000_300_000, false),
            (Some(opened - ANSWER_EARLY_SLACK_MS), opened - ANSWER_EARLY_SLACK_MS, false),
            (Some(opened - ANSWER_EARLY_SLACK_MS - 1), received, true),
            (Some(received + ANSWER_LATE_SLACK_MS), received + ANSWER_LATE_SLACK_MS, false),
            (Some(received + ANSWER_LATE_SLACK_MS + 1), received, true),
            (Some(i64::MAX), received, true),
            (Some(i64::MIN), received, true),
        ];
        for (sent, recorded, replaced) in table {
            assert_eq!(answer_time_ms(sent, opened, received), (recorded, replaced), "sent {sent:?}");
        }
    }

    mod properties {
        use super::super::*;
        use proptest::prelude::*;

        fn action() -> impl Strategy<Value = AckAction> {
            prop_oneof![Just(AckAction::Ack), Just(AckAction::Resolved), Just(AckAction::FalseAlarm)]
        }

        proptest! {
            #[test]
            fn arbitrary_bytes_never_panic_and_what_passes_is_within_the_caps(
                bytes in proptest::collection::vec(any::<u8>(), 0..6000)
            ) {
                if let Ok(message) = parse_answer(&bytes) {
                    prop_assert!(bytes.len() <= ANSWER_MAX_BYTES);
                    prop_assert!((1..=INCIDENT_ID_MAX_CHARS).contains(&message.incident_id.chars().count()));
                    prop_assert!((1..=BY_MAX_CHARS).contains(&message.by.chars().count()));
                    prop_assert!(!message.by.chars().any(char::is_control));
                }
            }

            #[test]
            fn json_shaped_garbage_never_panics(
                id in ".{0,300}", by in ".{0,200}", at in any::<Option<i64>>(), extra in any::<bool>()
            ) {
                let mut value = serde_json::json!({"incident_id": id, "action": "ack", "by": by, "at_ms": at});
                if extra {
                    value["x"] = serde_json::json!(1);
                }
                let parsed = parse_answer(value.to_string().as_bytes());
                if let Ok(message) = parsed {
                    prop_assert!(!extra);
                    prop_assert!(message.incident_id.chars().count() <= INCIDENT_ID_MAX_CHARS);
                    prop_assert!(message.by.chars().count() <= BY_MAX_CHARS);
                    prop_assert!(!message.incident_id.chars().chain(message.by.chars()).any(char::is_control));
                }
            }

            #[test]
            fn a_valid_answer_round_trips(
                id in "[a-z0-9-]{1,64}:[a-z0-9-]{1,64}:[a-z_]{1,20}:[0-9]{1,13}",
                by in "[^\\p{Cc}]{1,40}",
                action in action(),
                at in any::<Option<i64>>(),
            ) {
                prop_assume!(!by.trim().is_empty());
                let message = AckMessage { incident_id: id, action, by, at_ms: at };
                let bytes = serde_json::to_vec(&message).unwrap();
                prop_assert_eq!(parse_answer(&bytes), Ok(message));
            }

            #[test]
            fn a_recorded_time_is_never_far_ahead_of_arrival(
                sent in any::<Option<i64>>(), opened in 0i64..4_000_000_000_000, delay in 0i64..1_000_000_000
            ) {
                let received = opened + delay;
                let (at, _) = answer_time_ms(sent, opened, received);
                prop_assert!(at <= received + ANSWER_LATE_SLACK_MS);
                prop_assert!(at >= opened - ANSWER_EARLY_SLACK_MS);
            }
        }
    }
}
