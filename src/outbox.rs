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

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::followup::{Answer, Answered, Due, Followup, Timers};
use crate::incident::{EventKind, IncidentBook, IncidentEvent};

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

/// Camera id → its [`IncidentBook`] (JSON), committed in the same transaction as the events
/// that advanced it, so a book never runs ahead of (or behind) the events in the outbox.
const BOOKS: TableDefinition<&str, &[u8]> = TableDefinition::new("books");
/// `camera@unix_ms` → the bytes of a stored book that could not be read, kept for a post-mortem.
const DEAD_BOOKS: TableDefinition<&str, &[u8]> = TableDefinition::new("dead_books");

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

/// Whether the run loop's commits to the outbox go through: a full or failing disk makes the
/// gateway *degraded* (events held in memory and retried, issue 12), shown on `/healthz`, the
/// console and `/metrics`, never a loss.
#[derive(Debug, Default)]
pub struct CommitHealth {
    failing: AtomicBool,
    failures: AtomicU64,
    held_events: AtomicU64,
    /// Why the last commit failed (capped, one line).
    reason: Mutex<Option<String>>,
}

impl CommitHealth {
    /// A commit failed; `held_events` events now wait in memory.
    pub fn failed(&self, reason: &str, held_events: usize) {
        self.failing.store(true, Ordering::Relaxed);
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.held_events.store(held_events as u64, Ordering::Relaxed);
        *self.reason.lock().unwrap_or_else(PoisonError::into_inner) = Some(crate::health::cap_reason(reason));
    }

    /// `held_events` events wait in memory (behind a failed commit).
    pub fn holding(&self, held_events: usize) {
        self.held_events.store(held_events as u64, Ordering::Relaxed);
    }

    /// Everything held was committed.
    pub fn recovered(&self) {
        self.failing.store(false, Ordering::Relaxed);
        self.held_events.store(0, Ordering::Relaxed);
        *self.reason.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Why the gateway is degraded, while commits fail.
    pub fn degraded(&self) -> Option<String> {
        self.failing
            .load(Ordering::Relaxed)
            .then(|| self.reason.lock().unwrap_or_else(PoisonError::into_inner).clone().unwrap_or_default())
    }

    /// Incident events held in memory, waiting for a commit.
    pub fn held_events(&self) -> u64 {
        self.held_events.load(Ordering::Relaxed)
    }

    /// The `/metrics` families: the alarm, the failures and what waits.
    pub fn render(&self) -> String {
        let series = [
            (
                "gateway_outbox_commit_failing",
                "gauge",
                "1 while incident events cannot be committed to the outbox (disk full or failing): the gateway is degraded. Alarm on it.",
                u64::from(self.failing.load(Ordering::Relaxed)),
            ),
            (
                "gateway_outbox_commit_failures_total",
                "counter",
                "Commits of incident events to the outbox that failed (each retried, none dropped).",
                self.failures.load(Ordering::Relaxed),
            ),
            (
                "gateway_outbox_events_held",
                "gauge",
                "Incident events held in memory behind a failed commit, waiting for the retry.",
                self.held_events.load(Ordering::Relaxed),
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in series {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
        }
        out
    }
}

/// Opens the database file (a seam for tests that fail the disk under it).
type Opener = Box<dyn Fn(&Path) -> Result<Database, redb::DatabaseError> + Send + Sync>;

/// The outbox.
pub struct Outbox {
    path: PathBuf,
    /// The open database; `None` after a storage failure until it is reopened.
    db: Mutex<Option<Arc<Database>>>,
    /// A storage operation failed: redb refuses every later one (`PreviousIo`, or a discarded
    /// allocator state after a failed commit) until the file is reopened, so the next
    /// operation reopens it first. That is how a full disk that got space back recovers.
    broken: AtomicBool,
    opener: Opener,
    max_entries: u64,
    /// Ids of incidents whose follow-up state changed, sent after each commit.
    changes: tokio::sync::broadcast::Sender<String>,
    /// Records in the dead table (quarantined since the file was created).
    quarantined: AtomicU64,
    /// Whether the run loop's commits go through: kept with the outbox so that everyone who
    /// holds it (the console, the delivery task's retained status) sees the same state.
    commit_health: Arc<CommitHealth>,
}

/// A camera's incident book as the outbox holds it.
#[derive(Debug)]
pub enum StoredBook {
    /// None stored: the camera starts afresh.
    None,
    /// The book committed with the camera's latest events.
    Restored(IncidentBook),
    /// The stored book could not be read; it was moved to the dead books table (kept for a
    /// post-mortem) and the camera starts afresh.
    Quarantined {
        /// The parse error.
        reason: String,
    },
}

/// What became of an `incidents/<camera>.json` file (where books were kept before they moved
/// into the outbox) at start.
#[derive(Debug)]
pub enum BookMigration {
    /// Committed to the outbox; the file was renamed `<camera>.json.migrated`.
    Migrated {
        /// The camera.
        camera: String,
        /// Open incidents in the book.
        open: usize,
    },
    /// The outbox already had a book for the camera (a migration interrupted after its
    /// commit): the file was only renamed.
    AlreadyMigrated {
        /// The camera.
        camera: String,
    },
    /// The file was unreadable and was moved aside (`evidence::load_book`).
    Corrupt {
        /// The camera.
        camera: String,
        /// Where the file went.
        moved_to: PathBuf,
        /// The parse error.
        reason: String,
    },
}

impl Outbox {
    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens (or creates) the outbox at `path`. A corrupt file is an error naming the file;
    /// it is never silently replaced.
    pub fn open(path: &Path, max_entries: u64) -> anyhow::Result<Self> {
        Self::open_with(path, max_entries, Box::new(|path: &Path| Database::create(path)))
    }

    /// [`Outbox::open`] with the database opened by `opener` (tests put a failing disk
    /// under it); the outbox calls it again to reopen the file after a storage failure.
    pub(crate) fn open_with(path: &Path, max_entries: u64, opener: Opener) -> anyhow::Result<Self> {
        if let Some(directory) = path.parent() {
            crate::evidence::create_private_dir(directory)
                .with_context(|| format!("create {}", directory.display()))?;
        }
        let db = opener(path).with_context(|| format!("open outbox {} (corrupt or locked?)", path.display()))?;
        let txn = db.begin_write().context("outbox write transaction")?;
        txn.open_table(EVENTS).context("outbox table")?;
        txn.open_table(FOLLOWUPS).context("followups table")?;
        txn.open_table(FALSE_ALARMS).context("false alarm table")?;
        txn.open_table(META).context("outbox meta table")?;
        txn.open_table(BOOKS).context("incident books table")?;
        let quarantined = txn.open_table(DEAD).context("outbox dead table")?.len().context("outbox dead table")?;
        txn.commit().context("outbox commit")?;
        Ok(Outbox {
            path: path.to_path_buf(),
            db: Mutex::new(Some(Arc::new(db))),
            broken: AtomicBool::new(false),
            opener,
            max_entries: max_entries.max(1),
            changes: tokio::sync::broadcast::channel(1024).0,
            quarantined: quarantined.into(),
            commit_health: Arc::default(),
        })
    }

    /// Whether incident events reach this outbox: the run loop reports its commits here;
    /// `/healthz`, the console, `/metrics` and the retained MQTT status read it.
    pub fn commit_health(&self) -> &Arc<CommitHealth> {
        &self.commit_health
    }

    /// The database, reopened first if a storage operation failed since it was opened.
    fn database(&self) -> anyhow::Result<Arc<Database>> {
        let mut slot = self.db.lock().unwrap_or_else(PoisonError::into_inner);
        if self.broken.load(Ordering::Acquire) || slot.is_none() {
            // Ours goes first: the file lock goes with the last handle (an operation in
            // flight on another thread holds one a moment longer: then this fails, and the
            // next operation tries again).
            *slot = None;
            let db = (self.opener)(&self.path)
                .with_context(|| format!("reopen outbox {} after a storage failure", self.path.display()))?;
            *slot = Some(Arc::new(db));
            self.broken.store(false, Ordering::Release);
            tracing::info!(path = %self.path.display(), "outbox reopened after a storage failure");
        }
        Ok(slot.as_ref().expect("set above").clone())
    }

    /// Notes a failed storage operation: the next one reopens the file.
    fn failed<T, E>(&self, result: Result<T, E>) -> Result<T, E> {
        if result.is_err() {
            self.broken.store(true, Ordering::Release);
        }
        result
    }

    fn begin_write(&self) -> anyhow::Result<redb::WriteTransaction> {
        let db = self.database()?;
        self.failed(db.begin_write()).context("outbox write transaction")
    }

    fn begin_read(&self) -> anyhow::Result<redb::ReadTransaction> {
        let db = self.database()?;
        self.failed(db.begin_read()).context("outbox read transaction")
    }

    fn finish(&self, txn: redb::WriteTransaction, what: &'static str) -> anyhow::Result<()> {
        self.failed(txn.commit()).context(what)
    }

    /// Commits `records` in one transaction (durable when this returns), then compacts the
    /// oldest `updated` records if the outbox is over its cap. In the same transaction, an
    /// `opened` event starts its incident's follow-up timers (at `now_ms`), an `updated` one
    /// becomes what reminders repeat, and a `cleared` one stops the chase.
    pub fn enqueue(&self, records: &[OutboxRecord], now_ms: i64) -> anyhow::Result<Enqueued> {
        self.commit(records, &[], now_ms)
    }

    /// [`Outbox::enqueue`], with the incident books the events advanced (camera id, book)
    /// stored in the same transaction: both are committed, or neither is (issue 12: a book
    /// saved after its events failed to commit would never send them).
    pub fn commit(
        &self,
        records: &[OutboxRecord],
        books: &[(&str, &IncidentBook)],
        now_ms: i64,
    ) -> anyhow::Result<Enqueued> {
        let result = self.commit_once(records, books, now_ms);
        // A failure inside the transaction (an insert, not only the commit) may have latched
        // redb's storage: reopen before the next try.
        self.failed(result)
    }

    fn commit_once(
        &self,
        records: &[OutboxRecord],
        books: &[(&str, &IncidentBook)],
        now_ms: i64,
    ) -> anyhow::Result<Enqueued> {
        let txn = self.begin_write()?;
        let mut changed = Vec::new();
        {
            let mut table = txn.open_table(BOOKS).context("incident books table")?;
            for (camera, book) in books {
                let bytes = serde_json::to_vec(book).expect("incident book serialises");
                table.insert(*camera, bytes.as_slice()).context("incident book insert (disk full?)")?;
            }
        }
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
        self.finish(txn, "outbox commit (disk full?)")?;
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
            let txn = self.begin_read()?;
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
        let txn = self.begin_write()?;
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
        self.finish(txn, "outbox commit")?;
        let total = self.quarantined.fetch_add(unreadable.len() as u64, Ordering::Relaxed) + unreadable.len() as u64;
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
        self.quarantined.load(Ordering::Relaxed)
    }

    /// A camera's incident book, as committed with its latest events. One that cannot be
    /// read is state, not config: it is moved to the dead books table and the camera starts
    /// afresh ([`StoredBook::Quarantined`]).
    pub fn book(&self, camera: &str, now_ms: i64) -> anyhow::Result<StoredBook> {
        let bytes = {
            let txn = self.begin_read()?;
            let table = txn.open_table(BOOKS).context("incident books table")?;
            let found = table.get(camera).context("incident book read")?;
            match found {
                None => return Ok(StoredBook::None),
                Some(value) => value.value().to_vec(),
            }
        };
        let reason = match serde_json::from_slice(&bytes) {
            Ok(book) => return Ok(StoredBook::Restored(book)),
            Err(err) => err.to_string(),
        };
        let txn = self.begin_write()?;
        {
            let mut dead = txn.open_table(DEAD_BOOKS).context("dead books table")?;
            dead.insert(format!("{camera}@{now_ms}").as_str(), bytes.as_slice()).context("dead books insert")?;
            txn.open_table(BOOKS).context("incident books table")?.remove(camera).context("incident book remove")?;
        }
        self.finish(txn, "outbox commit")?;
        Ok(StoredBook::Quarantined { reason })
    }

    /// Moves the incident books an older version kept in `<state_dir>/incidents/<camera>.json`
    /// into the outbox, once: each file is committed, then renamed `<camera>.json.migrated`
    /// (kept, not deleted). A file whose camera already has a book in the outbox (a migration
    /// interrupted between the two steps) is only renamed: the outbox's book is the newer.
    pub fn migrate_book_files(&self, state_dir: &Path, now_ms: i64) -> anyhow::Result<Vec<BookMigration>> {
        let directory = state_dir.join("incidents");
        let entries = match std::fs::read_dir(&directory) {
            Ok(entries) => entries,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(err).with_context(|| format!("list {}", directory.display())),
        };
        let mut cameras: Vec<String> = entries
            .filter_map(Result::ok)
            .filter(|entry| entry.file_type().is_ok_and(|t| t.is_file()))
            .filter_map(|entry| entry.file_name().to_str()?.strip_suffix(".json").map(str::to_string))
            .collect();
        cameras.sort();
        let mut done = Vec::new();
        for camera in cameras {
            let file = directory.join(format!("{camera}.json"));
            let migrated = directory.join(format!("{camera}.json.migrated"));
            if !matches!(self.book(&camera, now_ms)?, StoredBook::None) {
                std::fs::rename(&file, &migrated).with_context(|| format!("rename {}", file.display()))?;
                done.push(BookMigration::AlreadyMigrated { camera });
                continue;
            }
            match crate::evidence::load_book(state_dir, &camera, now_ms)? {
                crate::evidence::SavedBook::None => {}
                crate::evidence::SavedBook::Restored(book) => {
                    self.commit(&[], &[(camera.as_str(), &book)], now_ms)?;
                    std::fs::rename(&file, &migrated).with_context(|| format!("rename {}", file.display()))?;
                    done.push(BookMigration::Migrated { open: book.open_incidents().len(), camera });
                }
                crate::evidence::SavedBook::Quarantined { moved_to, reason } => {
                    done.push(BookMigration::Corrupt { camera, moved_to, reason })
                }
            }
        }
        Ok(done)
    }

    /// Stores raw bytes as a record, bypassing serialisation: for tests of what an unreadable
    /// record (a bug, a downgrade, a flipped bit) does to delivery.
    #[doc(hidden)]
    pub fn insert_raw_for_test(&self, bytes: &[u8]) -> anyhow::Result<u64> {
        let txn = self.begin_write()?;
        let id = {
            let mut events = txn.open_table(EVENTS).context("outbox table")?;
            let id = next_id(&txn, &events)?;
            events.insert(id, bytes).context("outbox insert")?;
            set_next_id(&txn, id + 1)?;
            id
        };
        self.finish(txn, "outbox commit")?;
        Ok(id)
    }

    /// Removes an acknowledged record; `false` if it was already gone.
    pub fn acknowledge(&self, id: u64) -> anyhow::Result<bool> {
        let txn = self.begin_write()?;
        let removed = txn.open_table(EVENTS).context("outbox table")?.remove(&id).context("outbox remove")?.is_some();
        self.finish(txn, "outbox commit")?;
        Ok(removed)
    }

    /// Commits the reminders and escalations due at `now_ms` (with the timers they fire, in
    /// one transaction), and forgets follow-ups that ended over a week ago. `timers` gives T1
    /// and T2 for a grid.
    pub fn fire_due(&self, now_ms: i64, timers: &dyn Fn(&str) -> Timers) -> anyhow::Result<Fired> {
        // Most calls find nothing to do: look first with a read transaction.
        let mut work = Vec::new();
        {
            let txn = self.begin_read()?;
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
        let txn = self.begin_write()?;
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
        self.finish(txn, "outbox commit (disk full?)")?;
        self.announce(fired.fired.iter().map(|(id, _)| id.clone()).collect());
        Ok(fired)
    }

    /// Records a steward's answer to an incident (durably, before the broker is told it was
    /// received), and in the same transaction commits its echo: a record carrying the answer,
    /// so everyone watching the incident learns who answered. A first `false_alarm` counts
    /// towards its camera/zone.
    pub fn answer(&self, incident_id: &str, answer: Answer) -> anyhow::Result<AnswerOutcome> {
        let txn = self.begin_write()?;
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
        self.finish(txn, "outbox commit")?;
        if matches!(outcome, AnswerOutcome::Recorded { .. }) {
            self.announce(vec![incident_id.to_string()]);
        }
        Ok(outcome)
    }

    /// Every incident the outbox follows (open, and those ended less than a week ago),
    /// most recently opened first.
    pub fn incidents(&self) -> anyhow::Result<Vec<TrackedIncident>> {
        let txn = self.begin_read()?;
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
        let txn = self.begin_read()?;
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
        let txn = self.begin_read()?;
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
        let txn = self.begin_read()?;
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
        let txn = self.begin_read()?;
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

/// A disk that can fill up, for tests of what a full disk does to the outbox: redb's own file
/// backend, whose writes, growth and syncs fail with `ENOSPC` while [`Disk::full`] is set.
/// redb's real failure handling runs (it latches the error and refuses every later operation
/// until the file is reopened), which a hook above redb would not show.
#[cfg(test)]
pub(crate) mod testing {
    use std::ops::Bound;
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use redb::backends::FileBackend;
    use redb::{BackendError, Database, StorageBackend};

    /// The switch shared by every backend opened on it.
    #[derive(Debug, Clone, Default)]
    pub(crate) struct Disk {
        /// While set, every write fails with "No space left on device".
        pub full: Arc<AtomicBool>,
    }

    #[derive(Debug)]
    struct Backend {
        inner: FileBackend,
        full: Arc<AtomicBool>,
    }

    impl Backend {
        fn check(&self) -> Result<(), std::io::Error> {
            if self.full.load(Ordering::SeqCst) {
                Err(std::io::Error::from_raw_os_error(28))
            } else {
                Ok(())
            }
        }
    }

    impl StorageBackend for Backend {
        fn len(&self) -> Result<u64, std::io::Error> {
            self.inner.len()
        }
        fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), std::io::Error> {
            self.inner.read(offset, out)
        }
        fn set_len(&self, len: u64) -> Result<(), std::io::Error> {
            if len > self.inner.len()? {
                self.check()?;
            }
            self.inner.set_len(len)
        }
        fn sync_data(&self) -> Result<(), std::io::Error> {
            self.check()?;
            self.inner.sync_data()
        }
        fn write(&self, offset: u64, data: &[u8]) -> Result<(), std::io::Error> {
            self.check()?;
            self.inner.write(offset, data)
        }
        fn close(&self) -> Result<(), std::io::Error> {
            self.inner.close()
        }
        fn try_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
            self.inner.try_lock_range(start, end)
        }
        fn try_lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
            self.inner.try_lock_shared_range(start, end)
        }
        fn lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
            self.inner.lock_range(start, end)
        }
        fn lock_shared_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
            self.inner.lock_shared_range(start, end)
        }
        fn unlock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<(), BackendError> {
            self.inner.unlock_range(start, end)
        }
        fn query_lock_range(&self, start: Bound<u64>, end: Bound<u64>) -> Result<bool, BackendError> {
            self.inner.query_lock_range(start, end)
        }
    }

    impl Disk {
        /// An outbox at `path` on this disk.
        pub(crate) fn outbox(&self, path: &Path, max_entries: u64) -> super::Outbox {
            let full = self.full.clone();
            super::Outbox::open_with(
                path,
                max_entries,
                Box::new(move |path: &Path| {
                    let file =
                        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
                    Database::builder()
                        .create_with_backend(Backend { inner: FileBackend::new(file)?, full: full.clone() })
                }),
            )
            .expect("outbox opens on a disk with room")
        }
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

    /// A book with one open incident at `seq`.
    fn book(seq: u32) -> IncidentBook {
        serde_json::from_value(serde_json::json!({
            "camera": "gate-3",
            "slots": { "pavement": { "open": {
                "id": "gate-3:pavement:misparked_bike:0", "started_ms": 0, "seq": seq,
                "last_present_ms": 0, "last_sent_ms": 0, "last_count": 1
            }, "cooldown_until_ms": 0 } }
        }))
        .unwrap()
    }

    fn stored(outbox: &Outbox) -> IncidentBook {
        match outbox.book("gate-3", 0).unwrap() {
            StoredBook::Restored(book) => book,
            other => panic!("expected a stored book, got {other:?}"),
        }
    }

    #[test]
    fn on_a_full_disk_events_and_book_fail_together_and_commit_once_space_returns() {
        let dir = tempfile::tempdir().unwrap();
        let disk = testing::Disk::default();
        let outbox = disk.outbox(&dir.path().join("outbox.redb"), 100);
        outbox.commit(&[record(EventKind::Opened, 1)], &[("gate-3", &book(1))], 0).unwrap();

        disk.full.store(true, Ordering::SeqCst);
        for _ in 0..3 {
            let error = outbox.commit(&[record(EventKind::Updated, 2)], &[("gate-3", &book(2))], 0).unwrap_err();
            assert!(format!("{error:#}").contains("No space left"), "{error:#}");
        }
        disk.full.store(false, Ordering::SeqCst);

        // Nothing of the failed commits got in: neither the event nor the advanced book.
        assert_eq!(outbox.depth().unwrap(), 1);
        assert_eq!(stored(&outbox), book(1));
        // The same commit again, now that there is room: the outbox reopened and takes it.
        let enqueued = outbox.commit(&[record(EventKind::Updated, 2)], &[("gate-3", &book(2))], 0).unwrap();
        assert_eq!(enqueued.ids, vec![2]);
        assert_eq!(stored(&outbox), book(2));
        let seqs: Vec<u32> = outbox.pending(0, 10).unwrap().iter().map(|(_, r)| r.event.seq).collect();
        assert_eq!(seqs, vec![1, 2]);
    }

    #[test]
    fn book_files_are_migrated_once_and_kept_and_a_corrupt_stored_book_is_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let incidents = dir.path().join("incidents");
        std::fs::create_dir_all(&incidents).unwrap();
        std::fs::write(incidents.join("gate-3.json"), serde_json::to_vec(&book(4)).unwrap()).unwrap();
        std::fs::write(incidents.join("gate-9.json"), b"{\"cut short").unwrap();
        let outbox = Outbox::open(&dir.path().join("outbox.redb"), 100).unwrap();
        let migrated = outbox.migrate_book_files(dir.path(), 7).unwrap();
        assert!(
            matches!(&migrated[..], [
            BookMigration::Migrated { camera, open: 1 },
            BookMigration::Corrupt { .. },
        ] if camera == "gate-3"),
            "{migrated:?}"
        );
        assert_eq!(stored(&outbox), book(4));
        assert!(incidents.join("gate-3.json.migrated").is_file() && !incidents.join("gate-3.json").exists());
        assert!(outbox.migrate_book_files(dir.path(), 8).unwrap().is_empty(), "once");

        // Interrupted between commit and rename: the outbox's (newer) book wins.
        outbox.commit(&[], &[("gate-3", &book(5))], 9).unwrap();
        std::fs::write(incidents.join("gate-3.json"), serde_json::to_vec(&book(4)).unwrap()).unwrap();
        let migrated = outbox.migrate_book_files(dir.path(), 10).unwrap();
        assert!(matches!(&migrated[..], [BookMigration::AlreadyMigrated { .. }]), "{migrated:?}");
        assert_eq!(stored(&outbox), book(5));

        // A stored book that does not parse (a bug, a downgrade) is moved out, not fatal.
        {
            let txn = outbox.begin_write().unwrap();
            txn.open_table(BOOKS).unwrap().insert("gate-3", b"{".as_slice()).unwrap();
            outbox.finish(txn, "test").unwrap();
        }
        assert!(matches!(outbox.book("gate-3", 11).unwrap(), StoredBook::Quarantined { .. }));
        assert!(matches!(outbox.book("gate-3", 12).unwrap(), StoredBook::None), "starts afresh");
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
