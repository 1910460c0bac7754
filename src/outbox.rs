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
//! Architecture invariant: the outbox knows nothing of MQTT; it stores records and hands
//! them back in commit order.

use std::path::Path;

use anyhow::Context;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::incident::{EventKind, IncidentEvent};

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

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
}

impl Outbox {
    /// Opens (or creates) the outbox at `path`. A corrupt file is an error naming the file;
    /// it is never silently replaced.
    pub fn open(path: &Path, max_entries: u64) -> anyhow::Result<Self> {
        if let Some(directory) = path.parent() {
            std::fs::create_dir_all(directory).with_context(|| format!("create {}", directory.display()))?;
        }
        let db =
            Database::create(path).with_context(|| format!("open outbox {} (corrupt or locked?)", path.display()))?;
        let txn = db.begin_write().context("outbox write transaction")?;
        txn.open_table(EVENTS).context("outbox table")?;
        txn.commit().context("outbox commit")?;
        Ok(Outbox { db, max_entries: max_entries.max(1) })
    }

    /// Commits `records` in one transaction (durable when this returns), then compacts the
    /// oldest `updated` records if the outbox is over its cap.
    pub fn enqueue(&self, records: &[OutboxRecord]) -> anyhow::Result<Enqueued> {
        let txn = self.db.begin_write().context("outbox write transaction")?;
        let (ids, compacted, depth) = {
            let mut table = txn.open_table(EVENTS).context("outbox table")?;
            let mut next = table.last().context("outbox read")?.map_or(1, |(key, _)| key.value() + 1);
            let mut ids = Vec::with_capacity(records.len());
            for record in records {
                let bytes = serde_json::to_vec(record).expect("record serialises");
                table.insert(next, bytes.as_slice()).context("outbox insert (disk full?)")?;
                ids.push(next);
                next += 1;
            }
            let mut depth = table.len().context("outbox length")?;
            let mut compacted = 0;
            if depth > self.max_entries {
                let excess = depth - self.max_entries;
                let oldest_updates: Vec<u64> = table
                    .iter()
                    .context("outbox scan")?
                    .filter_map(Result::ok)
                    .filter(|(_, value)| {
                        serde_json::from_slice::<OutboxRecord>(value.value())
                            .is_ok_and(|record| record.event.event == EventKind::Updated)
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
        Ok(Enqueued { ids, compacted, depth })
    }

    /// Up to `limit` records with ids greater than `after`, oldest first.
    pub fn pending(&self, after: u64, limit: usize) -> anyhow::Result<Vec<(u64, OutboxRecord)>> {
        let txn = self.db.begin_read().context("outbox read transaction")?;
        let table = txn.open_table(EVENTS).context("outbox table")?;
        let mut records = Vec::new();
        for entry in table.range(after + 1..).context("outbox scan")?.take(limit) {
            let (key, value) = entry.context("outbox read")?;
            let record = serde_json::from_slice(value.value())
                .with_context(|| format!("outbox record {} is unreadable", key.value()))?;
            records.push((key.value(), record));
        }
        Ok(records)
    }

    /// Removes an acknowledged record; `false` if it was already gone.
    pub fn acknowledge(&self, id: u64) -> anyhow::Result<bool> {
        let txn = self.db.begin_write().context("outbox write transaction")?;
        let removed = txn.open_table(EVENTS).context("outbox table")?.remove(&id).context("outbox remove")?.is_some();
        txn.commit().context("outbox commit")?;
        Ok(removed)
    }

    /// Records waiting for delivery.
    pub fn depth(&self) -> anyhow::Result<u64> {
        let txn = self.db.begin_read().context("outbox read transaction")?;
        Ok(txn.open_table(EVENTS).context("outbox table")?.len().context("outbox length")?)
    }
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
        }
    }

    #[test]
    fn keeps_order_survives_reopening_and_removes_only_on_acknowledgement() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("outbox.redb");
        {
            let outbox = Outbox::open(&path, 100).unwrap();
            let enqueued = outbox.enqueue(&[record(EventKind::Opened, 1), record(EventKind::Updated, 2)]).unwrap();
            assert_eq!(enqueued, Enqueued { ids: vec![1, 2], compacted: 0, depth: 2 });
            assert!(outbox.acknowledge(1).unwrap());
            assert!(!outbox.acknowledge(1).unwrap(), "already gone");
        }
        let outbox = Outbox::open(&path, 100).unwrap();
        let pending = outbox.pending(0, 10).unwrap();
        assert_eq!(pending.iter().map(|(id, r)| (*id, r.event.seq)).collect::<Vec<_>>(), vec![(2, 2)]);
        assert_eq!(outbox.enqueue(&[record(EventKind::Cleared, 3)]).unwrap().ids, vec![3], "ids keep increasing");
        assert_eq!(outbox.pending(2, 10).unwrap().len(), 1);
    }

    #[test]
    fn over_the_cap_only_the_oldest_updates_are_compacted() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(&dir.path().join("outbox.redb"), 3).unwrap();
        let events =
            [EventKind::Opened, EventKind::Updated, EventKind::Updated, EventKind::Updated, EventKind::Cleared];
        let records: Vec<OutboxRecord> = events.iter().enumerate().map(|(i, e)| record(*e, i as u32 + 1)).collect();
        let enqueued = outbox.enqueue(&records).unwrap();
        assert_eq!((enqueued.compacted, enqueued.depth), (2, 3));
        let kept: Vec<u32> = outbox.pending(0, 10).unwrap().iter().map(|(_, r)| r.event.seq).collect();
        assert_eq!(kept, vec![1, 4, 5], "opened and cleared kept, the newest update kept");
        // Only opened/cleared left beyond the cap: kept anyway, never dropped.
        let more: Vec<OutboxRecord> = (6..9).map(|seq| record(EventKind::Opened, seq)).collect();
        let enqueued = outbox.enqueue(&more).unwrap();
        assert_eq!((enqueued.compacted, enqueued.depth), (1, 5), "the last update goes, the rest stay");
    }
}
