//! The commits of incident events to the outbox, each with the incident book its events
//! advanced (one redb transaction: both or neither), and what a failed commit (a full or
//! failing disk) does: the events and their book are *held* in memory, in order, and retried
//! with backoff; later commits queue behind them so the outbox keeps commit order. Nothing is
//! dropped. While commits fail the gateway is degraded (`/healthz`, the console, systemd's
//! status line) and `/metrics` raises `gateway_outbox_commit_failing`.
//!
//! They run on the recorder thread ([`Recording`] is its [`Worker`]: evidence first, then the
//! commit), never on the async runtime.
//!
//! Bounded: past [`MAX_HELD_EVENTS`] held events the recorder takes no more jobs; its queue
//! fills and the run loop stops taking analysed frames (they wait in their bounded channel,
//! the detectors wait, and the scheduler skips frames, counted) until the disk takes commits
//! again; so memory stays bounded and no event that was made is lost. A process that exits
//! while commits fail writes what it holds to a spill file ([`super::spill`]: another
//! directory, by default systemd's RAM-backed runtime directory), which the next start puts
//! back in front of everything; only without a spill directory, or when that write fails too,
//! are the held events lost, each logged.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::{error, info, warn};

use crate::backoff::Backoff;
use crate::incident::IncidentBook;
use crate::outbox::{CommitHealth, Enqueued, Outbox, OutboxRecord};
use crate::recorder::Worker;

use super::spill::Spilled;

/// Past this many held events, the recorder takes no more jobs (and so the run loop no more
/// frames) until they are committed.
pub(super) const MAX_HELD_EVENTS: usize = 10_000;
/// First retry after a failed commit; doubles up to [`RETRY_MAX`] (jittered).
const RETRY_INITIAL: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(30);

/// One commit: a camera's events and the book they advanced.
#[derive(Debug, Clone)]
pub(super) struct Commit {
    /// The camera.
    pub camera: String,
    /// Its incident book after the events.
    pub book: IncidentBook,
    /// The events, as the outbox keeps them.
    pub records: Vec<OutboxRecord>,
    /// When they happened (starts the follow-up timers).
    pub now_ms: i64,
    /// When the frame that made them arrived (for the incident latency); `None` for events
    /// of a config change.
    pub received_at: Option<Instant>,
}

/// A commit that went through.
#[derive(Debug)]
pub(super) struct Committed {
    /// What was committed.
    pub commit: Commit,
    /// What the outbox said.
    pub enqueued: Enqueued,
}

struct Held {
    queue: VecDeque<Commit>,
    events: usize,
    backoff: Backoff,
    retry_at: Option<Instant>,
    failing_since: Option<Instant>,
}

/// The recorder's door to the outbox.
pub(super) struct Commits {
    outbox: Arc<Outbox>,
    health: Arc<CommitHealth>,
    held: Mutex<Held>,
    /// [`MAX_HELD_EVENTS`] (smaller in tests).
    max_held_events: usize,
    /// Where held commits go when the gateway stops before the disk takes them.
    spill_dir: Option<PathBuf>,
    /// Spill files whose commits are at the front of the held queue (deleted once committed).
    spill_files: Mutex<Vec<PathBuf>>,
}

impl Commits {
    /// Commits to `outbox`, telling `health` how it goes.
    pub(super) fn new(outbox: Arc<Outbox>, health: Arc<CommitHealth>) -> Self {
        let held = Held {
            queue: VecDeque::new(),
            events: 0,
            backoff: Backoff::new(RETRY_INITIAL, RETRY_MAX),
            retry_at: None,
            failing_since: None,
        };
        Commits {
            outbox,
            health,
            held: Mutex::new(held),
            max_held_events: MAX_HELD_EVENTS,
            spill_dir: None,
            spill_files: Mutex::new(Vec::new()),
        }
    }

    /// Spills held commits to `dir` at exit; `spilled`, read back from an earlier spill that
    /// the outbox would not take at start, is held first (retried at once, in order).
    pub(super) fn with_spill(mut self, dir: Option<PathBuf>, spilled: Spilled, now: Instant) -> Self {
        self.spill_dir = dir;
        if !spilled.commits.is_empty() {
            let held = self.held.get_mut().unwrap_or_else(PoisonError::into_inner);
            held.events += spilled.commits.iter().map(|commit| commit.records.len()).sum::<usize>();
            held.queue.extend(spilled.commits);
            held.retry_at = Some(now);
            held.failing_since = Some(now);
            self.health.holding(held.events);
            *self.spill_files.get_mut().unwrap_or_else(PoisonError::into_inner) = spilled.files;
        }
        self
    }

    /// Commits now, or holds the commit (behind earlier held ones, or because this one
    /// failed). `Some` when it was committed now.
    pub(super) fn commit(&self, commit: Commit, now: Instant) -> Option<Committed> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if !held.queue.is_empty() {
            held.events += commit.records.len();
            held.queue.push_back(commit);
            self.health.holding(held.events);
            return None;
        }
        match self.try_commit(&commit) {
            Ok(enqueued) => Some(Committed { commit, enqueued }),
            Err(err) => {
                held.events += commit.records.len();
                held.queue.push_back(commit);
                self.failed(&mut held, &err, now);
                None
            }
        }
    }

    /// Retries the held commits, in order, once their backoff has passed (`force`: now);
    /// returns those that went through.
    pub(super) fn retry(&self, now: Instant, force: bool) -> Vec<Committed> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let due = held.retry_at.is_some_and(|at| now >= at) || force;
        let mut committed = Vec::new();
        if held.queue.is_empty() || !due {
            return committed;
        }
        while let Some(commit) = held.queue.pop_front() {
            match self.try_commit(&commit) {
                Ok(enqueued) => {
                    held.events -= commit.records.len();
                    committed.push(Committed { commit, enqueued });
                }
                Err(err) => {
                    held.queue.push_front(commit);
                    self.failed(&mut held, &err, now);
                    return committed;
                }
            }
        }
        self.remove_spill_files();
        let failed_for = held.failing_since.take().map_or(Duration::ZERO, |since| now - since);
        info!(
            events = committed.iter().map(|c| c.commit.records.len()).sum::<usize>(),
            failed_for_s = failed_for.as_secs(),
            "outbox commits go through again: every held incident event is committed"
        );
        held.backoff.reset();
        held.retry_at = None;
        self.health.recovered();
        committed
    }

    /// When the held commits are next retried; `None` when none is held.
    pub(super) fn retry_at(&self) -> Option<Instant> {
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if held.queue.is_empty() {
            None
        } else {
            held.retry_at
        }
    }

    /// Whether so many events are held that the recorder should take no more jobs.
    pub(super) fn backpressure(&self) -> bool {
        self.held.lock().unwrap_or_else(PoisonError::into_inner).events >= self.max_held_events
    }

    /// At exit: one last try, then the commits still held go to a spill file; without one
    /// (no spill directory, or it cannot be written either) every event still held is logged
    /// as lost.
    pub(super) fn flush_at_exit(&self, now: Instant) -> Vec<Committed> {
        let committed = self.retry(now, true);
        let held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        if let (Some(dir), Some(newest)) = (&self.spill_dir, held.queue.back()) {
            match super::spill::write(dir, &held.queue, newest.now_ms) {
                Ok(path) => {
                    error!(
                        events = held.events,
                        file = %path.display(),
                        "stopping while the outbox takes no commits: the held incident events are written to a \
                         spill file, which the next start puts into the outbox"
                    );
                    // The new file holds the commits of the ones read at start too.
                    self.remove_spill_files();
                    return committed;
                }
                Err(err) => error!(error = format!("{err:#}"), "cannot write the held incident events to a spill file"),
            }
        }
        if !held.queue.is_empty() {
            for commit in &held.queue {
                for record in &commit.records {
                    error!(
                        incident_id = %record.event.incident_id,
                        seq = record.event.seq,
                        event = ?record.event.event,
                        "incident event lost: the outbox took no commit before the gateway stopped"
                    );
                }
            }
        }
        committed
    }

    /// Deletes the spill files read at start: their commits are in the outbox (or in a newer file).
    fn remove_spill_files(&self) {
        let files = std::mem::take(&mut *self.spill_files.lock().unwrap_or_else(PoisonError::into_inner));
        if files.is_empty() {
            return;
        }
        super::spill::remove_logged(&files);
        info!(files = files.len(), "spilled incident events are in the outbox: spill files deleted");
    }

    fn try_commit(&self, commit: &Commit) -> anyhow::Result<Enqueued> {
        self.outbox.commit(&commit.records, &[(commit.camera.as_str(), &commit.book)], commit.now_ms)
    }

    fn failed(&self, held: &mut Held, err: &anyhow::Error, now: Instant) {
        let delay = held.backoff.next_delay(rand::random::<f64>());
        held.retry_at = Some(now + delay);
        let reason = format!("cannot commit incident events to the outbox: {err:#}");
        if held.failing_since.is_none() {
            held.failing_since = Some(now);
            error!(
                error = format!("{err:#}"),
                held_events = held.events,
                "cannot commit incident events to the outbox (disk full?): the gateway is degraded; \
                 the events are held in memory and retried, none is dropped"
            );
        } else {
            warn!(
                error = format!("{err:#}"),
                held_events = held.events,
                attempt = held.backoff.attempt(),
                retry_in_ms = delay.as_millis() as u64,
                "outbox commit failed again"
            );
        }
        self.health.failed(&reason, held.events);
    }
}

/// Writes a job's evidence; returns the commit of its events.
pub(super) type WriteEvidence<J> = Box<dyn FnMut(J) -> Commit + Send>;
/// Hears of commits that went through, in order.
pub(super) type OnCommitted = Box<dyn FnMut(&[Committed]) + Send>;

/// The recorder thread's work: a job's evidence is written (`write`), then its events and book
/// are committed, or held and retried; `committed` hears of every commit that went through
/// (counts, delivery woken).
pub(super) struct Recording<J> {
    /// The commits, held ones included.
    pub commits: Commits,
    /// Evidence of a job → its commit.
    pub write: WriteEvidence<J>,
    /// Commits that went through, in order.
    pub committed: OnCommitted,
}

impl<J: Send + 'static> Worker for Recording<J> {
    type Job = J;

    fn work(&mut self, job: J, now: Instant) {
        let commit = (self.write)(job);
        if let Some(committed) = self.commits.commit(commit, now) {
            (self.committed)(std::slice::from_ref(&committed));
        }
    }

    fn saturated(&self) -> bool {
        self.commits.backpressure()
    }

    fn retry_at(&self) -> Option<Instant> {
        self.commits.retry_at()
    }

    fn retry(&mut self, now: Instant) {
        let committed = self.commits.retry(now, false);
        if !committed.is_empty() {
            (self.committed)(&committed);
        }
    }

    fn finish(&mut self, now: Instant) {
        let committed = self.commits.flush_at_exit(now);
        if !committed.is_empty() {
            (self.committed)(&committed);
        }
    }
}

/// Logs commits that went through and counts their events on `/metrics`.
pub(super) fn report(committed: &[Committed], shared: &crate::console::Shared) {
    for Committed { commit, enqueued } in committed {
        if enqueued.compacted > 0 {
            warn!(
                depth = enqueued.depth,
                compacted = enqueued.compacted,
                "outbox over its cap: oldest updates compacted"
            );
        }
        info!(depth = enqueued.depth, ids = ?enqueued.ids, "incident events committed to the outbox");
        for record in &commit.records {
            shared.count_incident_event(record.event.kind.as_str(), super::incidents::event_name(record.event.event));
        }
        // Frame arrival → its opened incident committed (after a retry too: that is the truth).
        if let (Some(received_at), true) =
            (commit.received_at, commit.records.iter().any(|r| r.event.event == crate::incident::EventKind::Opened))
        {
            shared
                .incident_latency
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .record(received_at.elapsed().as_secs_f64());
        }
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::incident::{EventKind, IncidentEvent};
    use crate::outbox::testing::Disk;
    use crate::outbox::{StoredBook, RECORD_SCHEMA};
    use std::sync::atomic::Ordering;

    /// A commit of one misparked-bike event, `seq`, with a book that names it.
    pub(in crate::app) fn commit(seq: u32) -> Commit {
        let event = IncidentEvent {
            incident_id: "gate-3:pavement:misparked_bike:0".into(),
            seq,
            event: if seq == 1 { EventKind::Opened } else { EventKind::Updated },
            kind: crate::rules::IncidentKind::MisparkedBike,
            camera: "gate-3".into(),
            zone: "pavement".into(),
            t_ms: i64::from(seq),
            started_ms: 0,
            score: 0.8,
            count: seq as usize,
            detail: String::new(),
            objects: Vec::new(),
        };
        // The book's content only has to tell commits apart: its camera field says which.
        let book: IncidentBook = serde_json::from_value(serde_json::json!({
            "camera": format!("gate-3 after {seq}"), "slots": {}
        }))
        .unwrap();
        let record = OutboxRecord {
            schema: RECORD_SCHEMA,
            event,
            street: String::new(),
            community: String::new(),
            grid: "g".into(),
            steward: "s".into(),
            snapshot: None,
            followup: None,
            answer: None,
            clip_url: None,
        };
        Commit { camera: "gate-3".into(), book, records: vec![record], now_ms: i64::from(seq), received_at: None }
    }

    #[test]
    fn a_full_disk_loses_no_event_and_the_held_ones_commit_in_order_when_space_returns() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::default();
        let outbox = Arc::new(disk.outbox(&dir.path().join("outbox.redb"), 100));
        let health = Arc::new(CommitHealth::default());
        let commits = Commits::new(outbox.clone(), health.clone());
        let start = Instant::now();
        assert!(commits.commit(commit(1), start).is_some());

        disk.full.store(true, Ordering::SeqCst);
        for seq in 2..=4 {
            assert!(commits.commit(commit(seq), start).is_none(), "held, not dropped");
        }
        assert!(health.degraded().is_some_and(|reason| reason.contains("No space left")), "{:?}", health.degraded());
        assert_eq!(health.held_events(), 3);
        assert!(health.render().contains("gateway_outbox_commit_failing 1\n"));
        // Retries while the disk is full keep everything held.
        assert!(commits.retry(start + Duration::from_secs(60), false).is_empty());
        assert!(commits.retry(start + Duration::from_secs(120), true).is_empty());
        assert_eq!(health.held_events(), 3);

        disk.full.store(false, Ordering::SeqCst);
        // Not before the backoff has passed: the second failure backed off ≥ 1 s.
        assert!(commits.retry(start + Duration::from_secs(120), false).is_empty());
        let committed = commits.retry(start + Duration::from_secs(300), false);
        assert_eq!(committed.iter().map(|c| c.commit.records[0].event.seq).collect::<Vec<_>>(), vec![2, 3, 4]);
        assert_eq!((health.degraded(), health.held_events()), (None, 0));
        assert!(health.render().contains("gateway_outbox_commit_failing 0\n"));
        assert!(health.render().contains("gateway_outbox_commit_failures_total 3\n"), "{}", health.render());

        // Every event is in the outbox, in order, and the book is the one after the last.
        let seqs: Vec<u32> = outbox.pending(0, 10).unwrap().iter().map(|(_, r)| r.event.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4]);
        match outbox.book("gate-3", 0).unwrap() {
            StoredBook::Restored(book) => assert_eq!(book, commit(4).book),
            other => panic!("{other:?}"),
        }
        // And the next commit goes straight through.
        assert!(commits.commit(commit(5), start + Duration::from_secs(301)).is_some());
    }

    #[test]
    fn past_the_cap_the_run_loop_is_held_back_not_an_event_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::default();
        let outbox = Arc::new(disk.outbox(&dir.path().join("outbox.redb"), 100));
        let mut commits = Commits::new(outbox.clone(), Arc::new(CommitHealth::default()));
        commits.max_held_events = 20;
        disk.full.store(true, Ordering::SeqCst);
        let now = Instant::now();
        let mut big = commit(1);
        big.records = vec![big.records[0].clone(); 19];
        assert!(commits.commit(big, now).is_none());
        assert!(!commits.backpressure());
        assert!(commits.commit(commit(2), now).is_none());
        assert!(commits.backpressure(), "full: the run loop stops taking frames");
        disk.full.store(false, Ordering::SeqCst);
        assert_eq!(commits.retry(now, true).len(), 2);
        assert!(!commits.backpressure());
        assert_eq!(outbox.depth().unwrap(), 20);
    }

    #[test]
    fn a_stop_while_the_disk_refuses_spills_the_held_commits_and_the_next_start_commits_them_first() {
        let dir = tempfile::tempdir().unwrap();
        let spill_dir = dir.path().join("run");
        let disk = Disk::default();
        let outbox = Arc::new(disk.outbox(&dir.path().join("outbox.redb"), 100));
        let now = Instant::now();
        let commits = Commits::new(outbox.clone(), Arc::new(CommitHealth::default())).with_spill(
            Some(spill_dir.clone()),
            Spilled::default(),
            now,
        );
        assert!(commits.commit(commit(1), now).is_some());
        disk.full.store(true, Ordering::SeqCst);
        assert!(commits.commit(commit(2), now).is_none());
        assert!(commits.commit(commit(3), now).is_none());
        // Stopped while the disk refuses: nothing committed, both held commits in one file.
        assert!(commits.flush_at_exit(now).is_empty());
        drop(commits);
        let (spilled, problems) = super::super::spill::read(&spill_dir);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(spilled.files.len(), 1);
        assert_eq!(spilled.commits.iter().map(|c| c.records[0].event.seq).collect::<Vec<_>>(), vec![2, 3]);

        // Started again, the disk still full: held in front of the new commit, the file kept.
        let health = Arc::new(CommitHealth::default());
        let commits = Commits::new(outbox.clone(), health.clone()).with_spill(Some(spill_dir.clone()), spilled, now);
        assert_eq!(health.held_events(), 2);
        assert!(commits.commit(commit(4), now).is_none());
        assert!(commits.retry(now, false).is_empty(), "retried at once, still refused");
        assert_eq!(super::super::spill::read(&spill_dir).0.files.len(), 1);

        // Space back: everything in order, the book the newest, the spill file gone.
        disk.full.store(false, Ordering::SeqCst);
        let committed = commits.retry(now + Duration::from_secs(60), true);
        assert_eq!(committed.iter().map(|c| c.commit.records[0].event.seq).collect::<Vec<_>>(), vec![2, 3, 4]);
        let seqs: Vec<u32> = outbox.pending(0, 10).unwrap().iter().map(|(_, r)| r.event.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3, 4]);
        match outbox.book("gate-3", 0).unwrap() {
            StoredBook::Restored(book) => assert_eq!(book, commit(4).book),
            other => panic!("{other:?}"),
        }
        assert!(super::super::spill::read(&spill_dir).0.files.is_empty(), "spill file deleted");
    }

    #[test]
    fn without_a_spill_directory_a_stop_while_the_disk_refuses_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::default();
        let outbox = Arc::new(disk.outbox(&dir.path().join("outbox.redb"), 100));
        let commits = Commits::new(outbox, Arc::new(CommitHealth::default()));
        disk.full.store(true, Ordering::SeqCst);
        assert!(commits.commit(commit(1), Instant::now()).is_none());
        assert!(commits.flush_at_exit(Instant::now()).is_empty());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1, "only the outbox file");
    }

    /// A recorder doing [`Recording`] without evidence (the job is its commit), telling the
    /// seqs of the commits that went through.
    fn recorder(
        outbox: &Arc<Outbox>,
        health: &Arc<CommitHealth>,
        max_held_events: usize,
    ) -> (crate::recorder::Recorder<Commit>, Arc<Mutex<Vec<u32>>>) {
        let seqs = Arc::new(Mutex::new(Vec::new()));
        let seen = seqs.clone();
        let mut commits = Commits::new(outbox.clone(), health.clone());
        commits.max_held_events = max_held_events;
        let recording = Recording {
            commits,
            write: Box::new(|commit: Commit| commit),
            committed: Box::new(move |committed: &[Committed]| {
                seen.lock().unwrap().extend(committed.iter().flat_map(|c| c.commit.records.iter().map(|r| r.event.seq)))
            }),
        };
        (crate::recorder::Recorder::start(recording, Arc::default()), seqs)
    }

    fn wait_until(mut condition: impl FnMut() -> bool) {
        // Bounded by the test harness, not by a speed assumption.
        while !condition() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn on_the_recorder_thread_a_full_disk_holds_the_commits_and_the_backoff_retry_commits_them_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::default();
        let outbox = Arc::new(disk.outbox(&dir.path().join("outbox.redb"), 100));
        let health = Arc::new(CommitHealth::default());
        let (mut recorder, seqs) = recorder(&outbox, &health, MAX_HELD_EVENTS);
        recorder.try_submit(commit(1)).unwrap();
        wait_until(|| *seqs.lock().unwrap() == [1]);

        disk.full.store(true, Ordering::SeqCst);
        for seq in 2..=4 {
            recorder.try_submit(commit(seq)).unwrap();
        }
        wait_until(|| health.held_events() == 3);
        assert!(health.degraded().is_some(), "degraded while the disk refuses");
        assert_eq!(*seqs.lock().unwrap(), [1]);

        // Nobody asks: the recorder retries on its own once the backoff has passed.
        disk.full.store(false, Ordering::SeqCst);
        wait_until(|| seqs.lock().unwrap().len() == 4);
        assert_eq!(*seqs.lock().unwrap(), [1, 2, 3, 4]);
        assert_eq!((health.degraded(), health.held_events()), (None, 0));
        recorder.try_submit(commit(5)).unwrap();
        recorder.close([]);
        let stored: Vec<u32> = outbox.pending(0, 10).unwrap().iter().map(|(_, r)| r.event.seq).collect();
        assert_eq!(stored, vec![1, 2, 3, 4, 5]);
    }

    #[test]
    fn a_saturated_recorder_still_takes_everything_at_shutdown_and_commits_it_in_order_if_the_disk_lets_it() {
        let dir = tempfile::tempdir().unwrap();
        let disk = Disk::default();
        let outbox = Arc::new(disk.outbox(&dir.path().join("outbox.redb"), 100));
        let health = Arc::new(CommitHealth::default());
        let (mut recorder, seqs) = recorder(&outbox, &health, 2);
        disk.full.store(true, Ordering::SeqCst);
        for seq in 1..=5 {
            recorder.try_submit(commit(seq)).unwrap();
        }
        // Two held: the recorder takes no more; the other three wait in its queue.
        wait_until(|| health.held_events() == 2);
        assert_eq!(recorder.depth(), 3);
        disk.full.store(false, Ordering::SeqCst);
        // The run loop hands over what it kept; the last flush commits everything, in order.
        recorder.close([commit(6)]);
        assert_eq!(*seqs.lock().unwrap(), [1, 2, 3, 4, 5, 6]);
        let stored: Vec<u32> = outbox.pending(0, 10).unwrap().iter().map(|(_, r)| r.event.seq).collect();
        assert_eq!(stored, vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(health.held_events(), 0);
    }
}
