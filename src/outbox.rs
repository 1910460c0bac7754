//! The durable outbox: every incident event is committed to disk (redb, fsync on commit)
//! *before* anything tries to deliver it, and is removed only once the broker has
//! acknowledged it. A gateway killed at any instant loses no committed event; a broker down
//! for a day only makes the outbox longer.
//!
//! Bounded: past `max_entries`, the oldest `updated` events are compacted away first (an
//! update is superseded by the next one); `opened` and `cleared` are never dropped, so the
//! outbox may exceed its cap with them, which is logged. Why redb and not sled:
//! `docs/design/outbox-store.md`.
//!
//! The same file keeps each incident's follow-up state (the reminder/escalation timers of
//! [`crate::followup`]) and the false-alarm counters, so an `opened` event and its timer are
//! committed together, and a follow-up notice is committed together with the timer it fires.
//!
//! Architecture invariant: the outbox knows nothing of MQTT; it stores records and hands
//! them back in commit order.

use std::path::Path;

use anyhow::Context;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::followup::{Answer, Answered, Due, Followup, Timers};
use crate::incident::{EventKind, IncidentEvent};

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
/// incident id → [`Tracked`] (JSON).
const FOLLOWUPS: TableDefinition<&str, &[u8]> = TableDefinition::new("followups");
/// `next_id` → the next record id. Ids are never reused, even once the outbox is empty: the
/// publisher's cursor relies on new records having larger ids than any it has sent.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// `camera/zone/kind` → false alarms reported by stewards.
const FALSE_ALARMS: TableDefinition<&str, u64> = TableDefinition::new("false_alarms");
/// Record id → the bytes of an outbox record that could not be read, moved out of the way
/// so the records behind it are still delivered (issue 12), and kept for a post-mortem.
const DEAD: TableDefinition<u64, &[u8]> = TableDefinition::new("dead");

/// Answered or cleared incidents are remembered this long for late answers.
const FOLLOWUP_KEEP_MS: i64 = 7 * 86_400_000;

/// Version of [`OutboxRecord`]'s JSON (and of the incident payload built from it).
pub const RECORD_SCHEMA: u32 = 1;

/// What the outbox keeps per event: the event and where it happened.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OutboxRecord {
    /// [`RECORD_SCHEMA`].
    pub schema: u32,
    /// The incident event.
    pub event: IncidentEvent,
    /// Street (街道).
    pub street: String,
    /// Compound (小区).
    pub community: String,
    /// Grid (网格).
    pub grid: String,
    /// Steward (物业管家).
    pub steward: String,
    /// The phone-sized annotated snapshot (JPEG path), if one was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The console URL of the incident's clip, on the event that started one (issue 16).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clip_url: Option<String>,
    /// Set on reminders and escalations: the follow-up this record carries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub followup: Option<Notice>,
    /// Set on answer echoes: a steward's or operator's answer, told to everyone watching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<Answer>,
}

/// Who a follow-up goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recipient {
    /// The steward again (reminder).
    Steward,
    /// The grid worker (escalation).
    GridWorker,
    /// The governance centre (escalation).
    Centre,
}

/// A reminder or escalation of an unanswered incident.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    /// Reminder or escalation.
    pub due: Due,
    /// Who it goes to.
    pub recipient: Recipient,
    /// How long the incident had gone unanswered, ms.
    pub unanswered_ms: i64,
}

/// Follow-up state with the incident's latest event (what reminders repeat).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Tracked {
    followup: Followup,
    latest: OutboxRecord,
}

/// An incident as the outbox follows it: its latest event and where its follow-up stands.
#[derive(Debug, Clone, PartialEq)]
pub struct TrackedIncident {
    /// The latest event (with its place labels and snapshot).
    pub latest: OutboxRecord,
    /// Answers, reminders, escalation, clearing.
    pub followup: Followup,
}

/// What became of a steward's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnswerOutcome {
    /// No such incident (never opened here, or forgotten a week after it ended).
    UnknownIncident,
    /// Already recorded (a redelivery, or the same person giving the same answer again).
    Duplicate,
    /// The incident holds its [`crate::followup::MAX_ANSWERS`] answers: neither recorded
    /// nor echoed.
    TooMany,
    /// Recorded; `false_alarms` is the camera/zone's new count when this was a first
    /// false alarm.
    Recorded {
        /// `camera/zone/kind` and its count, after a first `false_alarm`.
        false_alarms: Option<(String, u64)>,
    },
}

/// Follow-ups fired by [`Outbox::fire_due`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fired {
    /// (incident id, what) per incident.
    pub fired: Vec<(String, Due)>,
    /// Notice records committed.
    pub ids: Vec<u64>,
}

/// Result of an enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    /// Ids given to the records, in order.
    pub ids: Vec<u64>,
    /// `updated` records dropped to stay within the cap.
    pub compacted: usize,
    /// Records in the outbox after the commit.
    pub depth: u64,
}

/// The outbox.
pub struct Outbox {
    db: Database,
    max_entries: u64,
    /// Ids of incidents whose follow-up state changed, sent after each commit.
    changes: tokio::sync::broadcast::Sender<String>,
    /// Records in the dead table (quarantined since the file was created).
    quarantined: std::sync::atomic::AtomicU64,
}

impl Outbox {
    /// Opens (or creates) the outbox at `path`. A corrupt file is an error naming the file;
    /// it is never silently replaced.
    pub fn open(path: &Path, max_entries: u64) -> anyhow::Result<Self> {
        if let Some(directory) = path.parent() {
            crate::evidence::create_private_dir(directory)
                .with_context(|| format!("create {}", directory.display()))?;
        }
        let db =
            Database::create(path).with_context(|| format!("open outbox {} (corrupt or locked?)", path.display()))?;
        let txn = db.begin_write().context("outbox write transaction")?;
        txn.open_table(EVENTS).context("outbox table")?;
        txn.open_table(FOLLOWUPS).context("followups table")?;
        txn.open_table(FALSE_ALARMS).context("false alarm table")?;
        txn.open_table(META).context("outbox meta table")?;
        let quarantined = txn.open_table(DEAD).context("outbox dead table")?.len().context("outbox dead table")?;
        txn.commit().context("outbox commit")?;
        Ok(Outbox {
            db,
            max_entries: max_entries.max(1),
            changes: tokio::sync::broadcast::channel(1024).0,
            quarantined: quarantined.into(),
        })
    }

    /// Commits `records` in one transaction (durable when this returns), then compacts the
    /// oldest `updated` records if the outbox is over its cap. In the same transaction, an
    /// `opened` event starts its incident's follow-up timers (at `now_ms`), an `updated` one
    /// becomes what reminders repeat, and a `cleared` one stops the chase.
    pub fn enqueue(&self, records: &[OutboxRecord], now_ms: i64) -> anyhow::Result<Enqueued> {
        let txn = self.db.begin_write().context("outbox write transaction")?;
        let mut changed = Vec::new();
        {
            let mut followups = txn.open_table(FOLLOWUPS).context("followups table")?;
            for record in records.iter().filter(|r| r.followup.is_none() && r.answer.is_none()) {
                let id = record.event.incident_id.as_str();
                let existing = followups.get(id).context("followups read")?.map(|v| v.value().to_vec());
                let mut tracked = match (record.event.event, existing) {
                    (EventKind::Opened, _) => Tracked { followup: Followup::opened(now_ms), latest: record.clone() },
                    (_, Some(bytes)) => match serde_json::from_slice::<Tracked>(&bytes) {
                        Ok(tracked) => tracked,
                        Err(_) => continue,
                    },
                    (_, None) => continue,
                };
                // A cleared event has no snapshot: keep showing the last one taken.
                let snapshot = record.snapshot.clone().or(tracked.latest.snapshot.take());
                // Likewise the clip, which only the `opened` event names.
                let clip_url = record.clip_url.clone().or(tracked.latest.clip_url.take());
                tracked.latest = record.clone();
                tracked.latest.snapshot = snapshot;
                tracked.latest.clip_url = clip_url;
                if record.event.event == EventKind::Cleared {
                    tracked.followup.cleared_at_ms = Some(now_ms);
                }
                let bytes = serde_json::to_vec(&tracked).expect("followup serialises");
                followups.insert(id, bytes.as_slice()).context("followups insert (disk full?)")?;
                changed.push(id.to_string());
            }
        }
        let (ids, compacted, depth) = {
            let mut table = txn.open_table(EVENTS).context("outbox table")?;
            let mut next = next_id(&txn, &table)?;
            let mut ids = Vec::with_capacity(records.len());
            for record in records {
                let bytes = serde_json::to_vec(record).expect("record serialises");
                table.insert(next, bytes.as_slice()).context("outbox insert (disk full?)")?;
                ids.push(next);
                next += 1;
            }
            set_next_id(&txn, next)?;
            let mut depth = table.len().context("outbox length")?;
            let mut compacted = 0;
            if depth > self.max_entries {
                let excess = depth - self.max_entries;
                let oldest_updates: Vec<u64> = table
                    .iter()
                    .context("outbox scan")?
                    .filter_map(Result::ok)
                    .filter(|(_, value)| {
                        serde_json::from_slice::<OutboxRecord>(value.value()).is_ok_and(|record| {
                            record.event.event == EventKind::Updated
                                && record.followup.is_none()
                                && record.answer.is_none()
                        })
                    })
                    .map(|(key, _)| key.value())
                    .take(excess as usize)
                    .collect();
                for key in &oldest_updates {
                    table.remove(key).context("outbox compaction")?;
                }
                compacted = oldest_updates.len();
                depth -= compacted as u64;
            }
            (ids, compacted, depth)
        };
        txn.commit().context("outbox commit (disk full?)")?;
        self.announce(changed);
        Ok(Enqueued { ids, compacted, depth })
    }

    /// Up to `limit` records with ids greater than `after`, oldest first. A record that
    /// cannot be read is moved to the dead table (counted in [`Outbox::quarantined`], logged)
    /// and skipped: one bad record must not stall every record behind it.
    pub fn pending(&self, after: u64, limit: usize) -> anyhow::Result<Vec<(u64, OutboxRecord)>> {
        let mut records = Vec::new();
        let mut unreadable = Vec::new();
        {
            let txn = self.db.begin_read().context("outbox read transaction")?;
            let table = txn.open_table(EVENTS).context("outbox table")?;
            for entry in table.range(after + 1..).context("outbox scan")?.take(limit) {
                let (key, value) = entry.context("outbox read")?;
                match serde_json::from_slice(value.value()) {
                    Ok(record) => records.push((key.value(), record)),
                    Err(err) => unreadable.push((key.value(), err.to_string())),
                }
            }
        }
        if !unreadable.is_empty() {
            self.quarantine(&unreadable)?;
        }
        Ok(records)
    }

    /// Moves unreadable records to the dead table, in one transaction, with one log line.
    fn quarantine(&self, unreadable: &[(u64, String)]) -> anyhow::Result<()> {
        let txn = self.db.begin_write().context("outbox write transaction")?;
        {
            let mut events = txn.open_table(EVENTS).context("outbox table")?;
            let mut dead = txn.open_table(DEAD).context("outbox dead table")?;
            for (id, _) in unreadable {
                let Some(bytes) = events.remove(id).context("outbox remove")?.map(|v| v.value().to_vec()) else {
                    continue;
                };
                dead.insert(id, bytes.as_slice()).context("outbox dead insert (disk full?)")?;
            }
        }
        txn.commit().context("outbox commit")?;
        let total = self.quarantined.fetch_add(unreadable.len() as u64, std::sync::atomic::Ordering::Relaxed)
            + unreadable.len() as u64;
        let (first_id, problem) = &unreadable[0];
        tracing::error!(
            count = unreadable.len(),
            first_id,
            problem = ?problem,
            quarantined_total = total,
            "unreadable outbox records moved to the dead table; delivery goes on"
        );
        Ok(())
    }

    /// Records moved to the dead table since the outbox file was created.
    pub fn quarantined(&self) -> u64 {
        self.quarantined.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Stores raw bytes as a record, bypassing serialisation: for tests of what an unreadable
    /// record (a bug, a downgrade, a flipped bit) does to delivery.
    #[doc(hidden)]
    pub fn insert_raw_for_test(&self, bytes: &[u8]) -> anyhow::Result<u64> {
        let txn = self.db.begin_write().context("outbox write transaction")?;
        let id = {
            let mut events = txn.open_table(EVENTS).context("outbox table")?;
            let id = next_id(&txn, &events)?;
            events.insert(id, bytes).context("outbox insert")?;
            set_next_id(&txn, id + 1)?;
            id
        };
        txn.commit().context("outbox commit")?;
        Ok(id)
    }

    /// Removes an acknowledged record; `false` if it was already gone.
    pub fn acknowledge(&self, id: u64) -> anyhow::Result<bool> {
        let txn = self.db.begin_write().context("outbox write transaction")?;
        let removed = txn.open_table(EVENTS).context("outbox table")?.remove(&id).context("outbox remove")?.is_some();
        txn.commit().context("outbox commit")?;
        Ok(removed)
    }

    /// Commits the reminders and escalations due at `now_ms` (with the timers they fire, in
    /// one transaction), and forgets follow-ups that ended over a week ago. `timers` gives T1
    /// and T2 for a grid.
    pub fn fire_due(&self, now_ms: i64, timers: &dyn Fn(&str) -> Timers) -> anyhow::Result<Fired> {
        // Most calls find nothing to do: look first with a read transaction.
        let mut work = Vec::new();
        {
            let txn = self.db.begin_read().context("outbox read transaction")?;
            let table = txn.open_table(FOLLOWUPS).context("followups table")?;
            for entry in table.iter().context("followups scan")? {
                let (key, value) = entry.context("followups read")?;
                let Ok(tracked) = serde_json::from_slice::<Tracked>(value.value()) else {
                    tracing::warn!(incident_id = key.value(), "unreadable follow-up state dropped");
                    work.push((key.value().to_string(), None));
                    continue;
                };
                let due = tracked.followup.due(now_ms, timers(&tracked.latest.grid));
                if due.is_some() || tracked.followup.expired(now_ms, FOLLOWUP_KEEP_MS) {
                    work.push((key.value().to_string(), Some((tracked, due))));
                }
            }
        }
        let mut fired = Fired { fired: Vec::new(), ids: Vec::new() };
        if work.is_empty() {
            return Ok(fired);
        }
        let txn = self.db.begin_write().context("outbox write transaction")?;
        {
            let mut followups = txn.open_table(FOLLOWUPS).context("followups table")?;
            let mut events = txn.open_table(EVENTS).context("outbox table")?;
            let mut next = next_id(&txn, &events)?;
            for (incident_id, state) in work {
                let Some((mut tracked, Some(due))) = state else {
                    followups.remove(incident_id.as_str()).context("followups remove")?;
                    continue;
                };
                let recipients: &[Recipient] = match due {
                    Due::Reminder => &[Recipient::Steward],
                    Due::Escalation => &[Recipient::GridWorker, Recipient::Centre],
                };
                for recipient in recipients {
                    let mut notice = tracked.latest.clone();
                    notice.followup = Some(Notice {
                        due,
                        recipient: *recipient,
                        unanswered_ms: now_ms - tracked.followup.opened_at_ms,
                    });
                    let bytes = serde_json::to_vec(&notice).expect("record serialises");
                    events.insert(next, bytes.as_slice()).context("outbox insert (disk full?)")?;
                    fired.ids.push(next);
                    next += 1;
                }
                tracked.followup.sent(due);
                let bytes = serde_json::to_vec(&tracked).expect("followup serialises");
                followups.insert(incident_id.as_str(), bytes.as_slice()).context("followups insert")?;
                fired.fired.push((incident_id, due));
            }
            set_next_id(&txn, next)?;
        }
        txn.commit().context("outbox commit (disk full?)")?;
        self.announce(fired.fired.iter().map(|(id, _)| id.clone()).collect());
        Ok(fired)
    }

    /// Records a steward's answer to an incident (durably, before the broker is told it was
    /// received), and in the same transaction commits its echo: a record carrying the answer,
    /// so everyone watching the incident learns who answered. A first `false_alarm` counts
    /// towards its camera/zone.
    pub fn answer(&self, incident_id: &str, answer: Answer) -> anyhow::Result<AnswerOutcome> {
        let txn = self.db.begin_write().context("outbox write transaction")?;
        let outcome = {
            let mut followups = txn.open_table(FOLLOWUPS).context("followups table")?;
            let existing = followups.get(incident_id).context("followups read")?.map(|v| v.value().to_vec());
            let Some(mut tracked) = existing.and_then(|bytes| serde_json::from_slice::<Tracked>(&bytes).ok()) else {
                return Ok(AnswerOutcome::UnknownIncident);
            };
            match tracked.followup.answer(answer.clone()) {
                Answered::Duplicate => AnswerOutcome::Duplicate,
                Answered::TooMany => AnswerOutcome::TooMany,
                Answered::Recorded { first_false_alarm } => {
                    let bytes = serde_json::to_vec(&tracked).expect("followup serialises");
                    followups.insert(incident_id, bytes.as_slice()).context("followups insert")?;
                    let mut echo = tracked.latest.clone();
                    echo.followup = None;
                    echo.snapshot = None;
                    echo.answer = Some(answer);
                    let mut events = txn.open_table(EVENTS).context("outbox table")?;
                    let next = next_id(&txn, &events)?;
                    let bytes = serde_json::to_vec(&echo).expect("record serialises");
                    events.insert(next, bytes.as_slice()).context("outbox insert (disk full?)")?;
                    set_next_id(&txn, next + 1)?;
                    let false_alarms = if first_false_alarm {
                        let event = &tracked.latest.event;
                        let key = format!("{}/{}/{}", event.camera, event.zone, event.kind.as_str());
                        let mut counters = txn.open_table(FALSE_ALARMS).context("false alarm table")?;
                        let count =
                            counters.get(key.as_str()).context("false alarm read")?.map_or(0, |v| v.value()) + 1;
                        counters.insert(key.as_str(), count).context("false alarm insert")?;
                        Some((key, count))
                    } else {
                        None
                    };
                    AnswerOutcome::Recorded { false_alarms }
                }
            }
        };
        txn.commit().context("outbox commit")?;
        if matches!(outcome, AnswerOutcome::Recorded { .. }) {
            self.announce(vec![incident_id.to_string()]);
        }
        Ok(outcome)
    }

    /// Every incident the outbox follows (open, and those ended less than a week ago),
    /// most recently opened first.
    pub fn incidents(&self) -> anyhow::Result<Vec<TrackedIncident>> {
        let txn = self.db.begin_read().context("outbox read transaction")?;
        let table = txn.open_table(FOLLOWUPS).context("followups table")?;
        let mut incidents = Vec::new();
        for entry in table.iter().context("followups scan")? {
            let (_, value) = entry.context("followups read")?;
            if let Ok(tracked) = serde_json::from_slice::<Tracked>(value.value()) {
                incidents.push(TrackedIncident { latest: tracked.latest, followup: tracked.followup });
            }
        }
        incidents.sort_by_key(|incident| std::cmp::Reverse(incident.followup.opened_at_ms));
        Ok(incidents)
    }

    /// One incident, if the outbox follows it.
    pub fn incident(&self, incident_id: &str) -> anyhow::Result<Option<TrackedIncident>> {
        let txn = self.db.begin_read().context("outbox read transaction")?;
        let table = txn.open_table(FOLLOWUPS).context("followups table")?;
        let found = table.get(incident_id).context("followups read")?;
        Ok(found
            .and_then(|value| serde_json::from_slice::<Tracked>(value.value()).ok())
            .map(|tracked| TrackedIncident { latest: tracked.latest, followup: tracked.followup }))
    }

    /// Ids of incidents whose state changes from now on (opened, updated, cleared, answered,
    /// reminded, escalated), each sent once its change is committed. A receiver that lags
    /// loses the oldest ids (and is told so); it should then re-read [`Outbox::incidents`].
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.changes.subscribe()
    }

    fn announce(&self, incident_ids: Vec<String>) {
        for id in incident_ids {
            // No receivers is fine: nobody is watching.
            let _ = self.changes.send(id);
        }
    }

    /// False alarms reported per `camera/zone/kind`.
    pub fn false_alarms(&self) -> anyhow::Result<Vec<(String, u64)>> {
        let txn = self.db.begin_read().context("outbox read transaction")?;
        let table = match txn.open_table(FALSE_ALARMS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(err) => return Err(err).context("false alarm table"),
        };
        let mut counts = Vec::new();
        for entry in table.iter().context("false alarm scan")? {
            let (key, value) = entry.context("false alarm read")?;
            counts.push((key.value().to_string(), value.value()));
        }
        Ok(counts)
    }

    /// Incidents still waiting for an answer.
    pub fn waiting_for_answer(&self) -> anyhow::Result<usize> {
        let txn = self.db.begin_read().context("outbox read transaction")?;
        let table = txn.open_table(FOLLOWUPS).context("followups table")?;
        let mut waiting = 0;
        for entry in table.iter().context("followups scan")? {
            let (_, value) = entry.context("followups read")?;
            if serde_json::from_slice::<Tracked>(value.value()).is_ok_and(|t| t.followup.is_waiting()) {
                waiting += 1;
            }
        }
        Ok(waiting)
    }

    /// Records waiting for delivery.
    pub fn depth(&self) -> anyhow::Result<u64> {
        let txn = self.db.begin_read().context("outbox read transaction")?;
        txn.open_table(EVENTS).context("outbox table")?.len().context("outbox length")
    }
}

/// The next record id: the stored counter, never below the last key + 1.
fn next_id(txn: &redb::WriteTransaction, events: &redb::Table<u64, &[u8]>) -> anyhow::Result<u64> {
    let stored =
        txn.open_table(META).context("outbox meta table")?.get("next_id").context("outbox meta")?.map(|v| v.value());
    let after_last = events.last().context("outbox read")?.map_or(1, |(key, _)| key.value() + 1);
    Ok(stored.unwrap_or(1).max(after_last))
}

fn set_next_id(txn: &redb::WriteTransaction, next: u64) -> anyhow::Result<()> {
    txn.open_table(META).context("outbox meta table")?.insert("next_id", next).context("outbox meta (disk full?)")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::IncidentKind;

    fn record(event: EventKind, seq: u32) -> OutboxRecord {
        OutboxRecord {
            schema: RECORD_SCHEMA,
            event: IncidentEvent {
                incident_id: "gate-3:pavement:misparked_bike:0".into(),
                seq,
                event,
                kind: IncidentKind::MisparkedBike,
                camera: "gate-3".into(),
                zone: "pavement".into(),
                t_ms: i64::from(seq),
                started_ms: 0,
                score: 0.8,
                count: 1,
                detail: String::new(),
                objects: Vec::new(),
            },
            street: String::new(),
            community: String::new(),
            grid: "g".into(),
            steward: "s".into(),
            snapshot: None,
            clip_url: None,
            followup: None,
            answer: None,
        }
    }

    #[test]
    fn keeps_order_survives_reopening_and_removes_only_on_acknowledgement() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.redb");
        {
            let outbox = Outbox::open(&path, 100).unwrap();
            let enqueued = outbox.enqueue(&[record(EventKind::Opened, 1), record(EventKind::Updated, 2)], 0).unwrap();
            assert_eq!(enqueued, Enqueued { ids: vec![1, 2], compacted: 0, depth: 2 });
            assert!(outbox.acknowledge(1).unwrap());
            assert!(!outbox.acknowledge(1).unwrap(), "already gone");
        }
        let outbox = Outbox::open(&path, 100).unwrap();
        let pending = outbox.pending(0, 10).unwrap();
        assert_eq!(pending.iter().map(|(id, r)| (*id, r.event.seq)).collect::<Vec<_>>(), vec![(2, 2)]);
        assert_eq!(outbox.enqueue(&[record(EventKind::Cleared, 3)], 0).unwrap().ids, vec![3], "ids keep increasing");
        assert_eq!(outbox.pending(2, 10).unwrap().len(), 1);
        // Emptied, ids still increase: a publisher's cursor never skips a new record.
        assert!(outbox.acknowledge(2).unwrap() && outbox.acknowledge(3).unwrap());
        assert_eq!(outbox.depth().unwrap(), 0);
        assert_eq!(outbox.enqueue(&[record(EventKind::Opened, 1)], 0).unwrap().ids, vec![4]);
    }

    #[test]
    fn over_the_cap_only_the_oldest_updates_are_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("outbox.redb"), 3).unwrap();
        let events =
            [EventKind::Opened, EventKind::Updated, EventKind::Updated, EventKind::Updated, EventKind::Cleared];
        let records: Vec<OutboxRecord> = events.iter().enumerate().map(|(i, e)| record(*e, i as u32 + 1)).collect();
        let enqueued = outbox.enqueue(&records, 0).unwrap();
        assert_eq!((enqueued.compacted, enqueued.depth), (2, 3));
        let kept: Vec<u32> = outbox.pending(0, 10).unwrap().iter().map(|(_, r)| r.event.seq).collect();
        assert_eq!(kept, vec![1, 4, 5], "opened and cleared kept, the newest update kept");
        // Only opened/cleared left beyond the cap: kept anyway, never dropped.
        let more: Vec<OutboxRecord> = (6..9).map(|seq| record(EventKind::Opened, seq)).collect();
        let enqueued = outbox.enqueue(&more, 0).unwrap();
        assert_eq!((enqueued.compacted, enqueued.depth), (1, 5), "the last update goes, the rest stay");
    }

    const TIMERS: Timers = Timers { remind_after_ms: 600_000, escalate_after_ms: 1_800_000 };

    #[test]
    fn follow_ups_fire_once_each_and_survive_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.redb");
        {
            let outbox = Outbox::open(&path, 100).unwrap();
            outbox.enqueue(&[record(EventKind::Opened, 1)], 1_000).unwrap();
            assert!(outbox.fire_due(600_999, &|_| TIMERS).unwrap().fired.is_empty());
            let fired = outbox.fire_due(601_000, &|_| TIMERS).unwrap();
            assert_eq!(fired.fired, vec![("gate-3:pavement:misparked_bike:0".to_string(), Due::Reminder)]);
            assert!(outbox.fire_due(601_500, &|_| TIMERS).unwrap().fired.is_empty(), "a reminder goes once");
        }
        // Restarted: the escalation timer is still there.
        let outbox = Outbox::open(&path, 100).unwrap();
        let fired = outbox.fire_due(1_801_000, &|_| TIMERS).unwrap();
        assert_eq!(fired.ids.len(), 2, "grid worker and centre");
        let notices: Vec<Recipient> = outbox
            .pending(0, 10)
            .unwrap()
            .into_iter()
            .filter_map(|(_, record)| record.followup.map(|notice| notice.recipient))
            .collect();
        assert_eq!(notices, vec![Recipient::Steward, Recipient::GridWorker, Recipient::Centre]);
        assert_eq!(outbox.waiting_for_answer().unwrap(), 0);
    }

    #[test]
    fn answers_stop_the_timers_and_false_alarms_are_counted_once() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("outbox.redb"), 100).unwrap();
        let id = "gate-3:pavement:misparked_bike:0";
        let answer = Answer { action: crate::followup::AckAction::FalseAlarm, by: "wang".into(), at_ms: 5 };
        assert_eq!(outbox.answer(id, answer.clone()).unwrap(), AnswerOutcome::UnknownIncident);
        outbox.enqueue(&[record(EventKind::Opened, 1)], 0).unwrap();
        let key = "gate-3/pavement/misparked_bike".to_string();
        assert_eq!(
            outbox.answer(id, answer.clone()).unwrap(),
            AnswerOutcome::Recorded { false_alarms: Some((key.clone(), 1)) }
        );
        assert_eq!(outbox.answer(id, answer).unwrap(), AnswerOutcome::Duplicate);
        assert!(outbox.fire_due(10_000_000, &|_| TIMERS).unwrap().fired.is_empty());
        assert_eq!(outbox.false_alarms().unwrap(), vec![(key, 1)]);
    }

    #[test]
    fn an_unreadable_record_is_quarantined_and_the_rest_still_come() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.redb");
        {
            let outbox = Outbox::open(&path, 100).unwrap();
            outbox.enqueue(&[record(EventKind::Opened, 1)], 0).unwrap();
            let bad = outbox.insert_raw_for_test(b"{\"schema\": 99, \"garbage\"").unwrap();
            outbox.enqueue(&[record(EventKind::Updated, 2)], 0).unwrap();
            let pending: Vec<u64> = outbox.pending(0, 10).unwrap().iter().map(|(id, _)| *id).collect();
            assert_eq!(pending, vec![1, 3], "the bad record {bad} is skipped, not fatal");
            assert_eq!((outbox.quarantined(), outbox.depth().unwrap()), (1, 2), "moved out of the outbox");
            assert_eq!(outbox.pending(0, 10).unwrap().len(), 2, "and only once");
        }
        assert_eq!(Outbox::open(&path, 100).unwrap().quarantined(), 1, "the count survives a restart");
    }

    #[test]
    fn a_cleared_incident_is_not_chased() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("outbox.redb"), 100).unwrap();
        outbox.enqueue(&[record(EventKind::Opened, 1)], 0).unwrap();
        outbox.enqueue(&[record(EventKind::Cleared, 2)], 1_000).unwrap();
        assert!(outbox.fire_due(10_000_000, &|_| TIMERS).unwrap().fired.is_empty());
    }
}
