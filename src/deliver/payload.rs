//! Topics and payloads, pure: an outbox record → (topic, JSON), a steward's ack message →
//! an [`Answer`]. The payload format is `schemas/incident-event.v1.schema.json`; acks are
//! `schemas/ack.v1.schema.json`. Both are checked against the schemas in the tests.
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
use serde_json::json;

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

/// The incident payload. `snapshot` is the JPEG, if it could be read; it is inlined (base64)
/// when at most `snapshot_max_bytes`, else left out with the reason.
pub fn incident_payload(
    prefix: &str,
    record: &OutboxRecord,
    snapshot: Option<&[u8]>,
    snapshot_max_bytes: usize,
) -> Vec<u8> {
    let event = &record.event;
    let (snapshot, snapshot_omitted) = match (snapshot, &record.snapshot) {
        (Some(jpeg), _) if jpeg.len() <= snapshot_max_bytes => (
            json!({
                "content_type": "image/jpeg",
                "encoding": "base64",
                "bytes": jpeg.len(),
                "data": base64::engine::general_purpose::STANDARD.encode(jpeg),
            }),
            None,
        ),
        (Some(jpeg), _) => {
            (serde_json::Value::Null, Some(format!("{} bytes is over the {snapshot_max_bytes}-byte cap", jpeg.len())))
        }
        (None, Some(_)) => (serde_json::Value::Null, Some("snapshot file missing".to_string())),
        (None, None) => (serde_json::Value::Null, None),
    };
    let mut payload = json!({
        "schema": INCIDENT_SCHEMA,
        "incident_id": event.incident_id,
        "seq": event.seq,
        "event": event.event,
        "kind": event.kind.as_str(),
        "camera": event.camera,
        "zone": event.zone,
        "t_ms": event.t_ms,
        "started_ms": event.started_ms,
        "score": (f64::from(event.score) * 1000.0).round() / 1000.0,
        "count": event.count,
        "detail": event.detail,
        "objects": event.objects,
        "place": {
            "street": record.street,
            "community": record.community,
            "grid": record.grid,
            "steward": record.steward,
        },
        "ack_topic": ack_topic(prefix, record),
        "followup": record.followup,
        "answer": record.answer,
        "snapshot": snapshot,
        "snapshot_omitted": snapshot_omitted,
    });
    // Optional (schema revision 2, issue 16): only on incidents whose clip is recorded, so
    // every other payload stays as it was.
    if let Some(clip_url) = &record.clip_url {
        payload["clip_url"] = json!(clip_url);
    }
    serde_json::to_vec(&payload).expect("payload serialises")
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
