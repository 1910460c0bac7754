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
    let payload = json!({
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
        "ack_topic": format!("{}/ack", place_topic(prefix, record)),
        "followup": record.followup,
        "answer": record.answer,
        "snapshot": snapshot,
        "snapshot_omitted": snapshot_omitted,
    });
    serde_json::to_vec(&payload).expect("payload serialises")
}

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

/// Parses an ack message; the error says what is wrong, for the log.
pub fn parse_ack(bytes: &[u8], received_ms: i64) -> Result<(String, Answer), String> {
    let message: AckMessage = serde_json::from_slice(bytes).map_err(|error| error.to_string())?;
    if message.incident_id.is_empty() || message.incident_id.len() > 512 {
        return Err("incident_id must be 1-512 characters".into());
    }
    if message.by.trim().is_empty() || message.by.len() > 256 {
        return Err("by must be 1-256 characters".into());
    }
    let answer = Answer { action: message.action, by: message.by, at_ms: message.at_ms.unwrap_or(received_ms) };
    Ok((message.incident_id, answer))
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
        ] {
            assert!(parse_ack(bad, 0).is_err(), "{:?} accepted", String::from_utf8_lossy(bad));
        }
    }
}
