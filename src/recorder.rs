//! The recorder: one named OS thread (`recorder`) that does the slow, blocking part of an
//! incident — JPEG encoding, evidence files written and fsynced, the outbox's fsynced redb
//! commit — behind a bounded queue that never drops, so the run loop (on the async runtime)
//! only decides and hands over.
//!
//! Why: the run loop is one task on the runtime that owns every camera's engine. Before the
//! recorder it wrote evidence and committed inline: the frame that opened an incident held it
//! 312 ms (debug build; annotated snapshot, crop and sidecar encoded and fsynced, then the
//! commit), during which no other camera's frame, reload, console request or watchdog tick was
//! served, and on a slow or failing disk that grows without bound. moonfire-nvr does the same
//! for its database flushes and sample-file syncs: a dedicated thread owns them, fed by a channel.
//!
//! # The backpressure rule
//!
//! Incident events are never dropped, so a full queue cannot refuse: the **sender waits**.
//! [`Recorder::try_submit`] hands a job back when the queue is full; the run loop keeps it
//! (in order, behind any other it kept), stops taking analysed frames and awaits
//! [`Recorder::room`] inside its `select!`, so ticks, watchdog pings, requests and shutdown go
//! on. Frames then wait in their bounded channel and the scheduler skips (counted), as for
//! any stage that cannot keep up. The worker may also stop taking jobs ([`Worker::saturated`]:
//! for the run loop's commits, too many events held behind a failing disk); the queue fills
//! and the same rule applies. Nothing is lost but by a process that exits while the worker
//! still holds work, and [`Worker::finish`] logs each such item.
//!
//! Order: one thread, one FIFO queue; a worker that holds work keeps it in order, so jobs are
//! done (and, for incidents, committed) in the order they were submitted — per camera too.
//!
//! Shutdown: [`Recorder::close`] hands over what the sender still kept (past the queue's
//! capacity: nothing may be left behind), the worker does every queued job, then
//! [`Worker::finish`] is its last chance; `close` returns once the thread has ended.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

/// Jobs the queue holds (a job is one camera's events of one frame, with their picture: ~300 KB
/// at the model's view resolution, so the queue stays under ~20 MB).
pub const QUEUE_CAPACITY: usize = 64;

/// What the recorder thread does with jobs.
pub trait Worker: Send + 'static {
    /// One unit of work.
    type Job: Send + 'static;
    /// Does `job` (or holds it for a retry: a worker that holds work keeps it in order).
    fn work(&mut self, job: Self::Job, now: Instant);
    /// Whether the worker holds so much that it takes no more jobs for now.
    fn saturated(&self) -> bool;
    /// When held work should be retried; `None` when nothing is held.
    fn retry_at(&self) -> Option<Instant>;
    /// Retries held work whose time has come.
    fn retry(&mut self, now: Instant);
    /// The queue is closed and empty: the last chance for held work (and to log what is lost).
    fn finish(&mut self, now: Instant);
}

/// The recorder's figures, shown on `/metrics`.
#[derive(Debug, Default)]
pub struct RecorderStats {
    /// Jobs waiting in the queue.
    depth: AtomicUsize,
    /// Times the sender found the queue full and waited.
    waits: AtomicU64,
    /// Time the sender spent waiting, in microseconds.
    wait_us: AtomicU64,
    /// The worker's time per job.
    job_seconds: Mutex<crate::health::Summary>,
    /// Since when the worker is on its current job (or retry), if it is on one.
    busy_since: Mutex<Option<Instant>>,
}

impl RecorderStats {
    /// Jobs waiting in the queue now.
    pub fn depth(&self) -> usize {
        self.depth.load(Ordering::Relaxed)
    }

    /// Times the sender found the queue full.
    pub fn waits(&self) -> u64 {
        self.waits.load(Ordering::Relaxed)
    }

    /// The sender waited `waited` for room in the queue (once per full queue it met).
    pub fn waited(&self, waited: Duration) {
        self.waits.fetch_add(1, Ordering::Relaxed);
        self.wait_us.fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
    }

    /// How long the worker has been on its current job or retry (zero when idle): a disk that
    /// hangs shows here, and the run loop stops the watchdog's pings for it.
    pub fn busy_for(&self) -> Duration {
        self.busy_since.lock().unwrap_or_else(PoisonError::into_inner).map_or(Duration::ZERO, |since| since.elapsed())
    }

    fn busy(&self, since: Option<Instant>) {
        *self.busy_since.lock().unwrap_or_else(PoisonError::into_inner) = since;
    }

    /// Starts a new period of the recent maximum of the time per job.
    pub fn rotate(&self) {
        self.job_seconds.lock().unwrap_or_else(PoisonError::into_inner).rotate();
    }

    /// The `/metrics` families.
    pub fn render(&self) -> String {
        let series = [
            (
                "gateway_recorder_queue_depth",
                "gauge",
                "Incident jobs waiting for the recorder thread (evidence, outbox commit).",
                self.depth() as f64,
            ),
            (
                "gateway_recorder_queue_capacity",
                "gauge",
                "Jobs the recorder's queue holds; when full the run loop waits (nothing is dropped).",
                QUEUE_CAPACITY as f64,
            ),
            (
                "gateway_recorder_waits_total",
                "counter",
                "Times the run loop found the recorder's queue full and waited for room.",
                self.waits() as f64,
            ),
            (
                "gateway_recorder_wait_seconds_total",
                "counter",
                "Time the run loop waited for room in the recorder's queue (taking no frames meanwhile).",
                self.wait_us.load(Ordering::Relaxed) as f64 / 1e6,
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in series {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
        }
        let job = self.job_seconds.lock().unwrap_or_else(PoisonError::into_inner).clone();
        let what = "the recorder thread taking an incident job to being done with it (JPEG encoding, evidence fsyncs, outbox commit)";
        let summary = [
            (
                "gateway_recorder_job_seconds_sum",
                "counter",
                format!("Sum of the time from {what}."),
                format!("{:.6}", job.sum),
            ),
            (
                "gateway_recorder_job_seconds_count",
                "counter",
                format!("Observations of the time from {what}."),
                job.count.to_string(),
            ),
            (
                "gateway_recorder_job_seconds_max",
                "gauge",
                format!("The longest time from {what} since start."),
                format!("{:.6}", job.max),
            ),
            (
                "gateway_recorder_job_seconds_recent_max",
                "gauge",
                format!("The longest time from {what} in the last 10-20 s."),
                format!("{:.6}", job.recent_max()),
            ),
        ];
        for (name, kind, help, value) in summary {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
        }
        out
    }
}

struct State<J> {
    jobs: VecDeque<J>,
    closed: bool,
}

struct Queue<J> {
    state: Mutex<State<J>>,
    /// Wakes the recorder thread: a job, or the close.
    job_ready: Condvar,
    /// Wakes the sender: room in the queue. `notify_one` keeps a permit when nobody waits, so
    /// a job taken between the sender's check and its wait is not missed.
    room: Notify,
    stats: Arc<RecorderStats>,
    capacity: usize,
}

impl<J> Queue<J> {
    fn lock(&self) -> std::sync::MutexGuard<'_, State<J>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The sender's handle on the recorder thread.
pub struct Recorder<J> {
    queue: Arc<Queue<J>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl<J: Send + 'static> Recorder<J> {
    /// Starts the `recorder` thread doing `worker`'s jobs, counting on `stats`.
    pub fn start<W: Worker<Job = J>>(worker: W, stats: Arc<RecorderStats>) -> Self {
        Self::with_capacity(worker, stats, QUEUE_CAPACITY)
    }

    /// [`Recorder::start`] with a queue of `capacity` jobs (tests).
    pub fn with_capacity<W: Worker<Job = J>>(worker: W, stats: Arc<RecorderStats>, capacity: usize) -> Self {
        let queue = Arc::new(Queue {
            state: Mutex::new(State { jobs: VecDeque::new(), closed: false }),
            job_ready: Condvar::new(),
            room: Notify::new(),
            stats,
            capacity: capacity.max(1),
        });
        let thread_queue = queue.clone();
        let thread = std::thread::Builder::new()
            .name("recorder".to_string())
            .spawn(move || run(worker, &thread_queue))
            .expect("spawn the recorder thread");
        Recorder { queue, thread: Some(thread) }
    }

    /// Queues `job`, or hands it back when the queue is full (then wait for [`Recorder::room`]
    /// and try again; never drop it).
    pub fn try_submit(&self, job: J) -> Result<(), J> {
        let mut state = self.queue.lock();
        if state.closed || state.jobs.len() >= self.queue.capacity {
            return Err(job);
        }
        state.jobs.push_back(job);
        self.queue.stats.depth.store(state.jobs.len(), Ordering::Relaxed);
        drop(state);
        self.queue.job_ready.notify_one();
        Ok(())
    }

    /// Returns once the queue has room (cancel-safe: for a `select!` branch).
    pub async fn room(&self) {
        loop {
            {
                let state = self.queue.lock();
                if state.jobs.len() < self.queue.capacity {
                    return;
                }
            }
            self.queue.room.notified().await;
        }
    }

    /// Jobs waiting in the queue.
    pub fn depth(&self) -> usize {
        self.queue.lock().jobs.len()
    }

    /// Hands over `kept` (jobs the sender still holds, in order; taken past the capacity),
    /// closes the queue and waits (blocking) until the thread has done every job and
    /// [`Worker::finish`]ed. Later submissions are handed back.
    pub fn close(&mut self, kept: impl IntoIterator<Item = J>) {
        self.shut(kept);
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the recorder thread panicked");
            }
        }
    }

    /// [`Recorder::close`] for async callers: the wait for the thread runs on tokio's blocking
    /// pool, so it works on any runtime (`block_in_place` would panic on a current-thread one,
    /// which the paused-clock tests use).
    pub async fn close_async(&mut self, kept: impl IntoIterator<Item = J>) {
        self.shut(kept);
        if let Some(thread) = self.thread.take() {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!("the recorder thread panicked");
            }
        }
    }

    fn shut(&self, kept: impl IntoIterator<Item = J>) {
        {
            let mut state = self.queue.lock();
            state.jobs.extend(kept);
            state.closed = true;
            self.queue.stats.depth.store(state.jobs.len(), Ordering::Relaxed);
        }
        self.queue.job_ready.notify_one();
    }
}

impl<J> Drop for Recorder<J> {
    /// Without [`Recorder::close`] (a panic unwinding): the thread still does what is queued
    /// and finishes, unwaited.
    fn drop(&mut self) {
        self.queue.lock().closed = true;
        self.queue.job_ready.notify_one();
    }
}

/// What the thread does next.
enum Next<J> {
    Job(J),
    Retry,
    Finish,
}

fn run<W: Worker>(mut worker: W, queue: &Queue<W::Job>) {
    let stats = &queue.stats;
    loop {
        let next = next(&worker, queue);
        let started = Instant::now();
        stats.busy(Some(started));
        match next {
            Next::Job(job) => {
                worker.work(job, started);
                let seconds = started.elapsed().as_secs_f64();
                stats.job_seconds.lock().unwrap_or_else(PoisonError::into_inner).record(seconds);
            }
            Next::Retry => worker.retry(started),
            Next::Finish => {
                worker.finish(started);
                stats.busy(None);
                return;
            }
        }
        stats.busy(None);
    }
}

/// Waits for the next thing to do: a job (unless the worker is saturated and the queue still
/// open), a retry whose time has come, or the end.
fn next<W: Worker>(worker: &W, queue: &Queue<W::Job>) -> Next<W::Job> {
    let mut state = queue.lock();
    loop {
        if worker.retry_at().is_some_and(|at| Instant::now() >= at) {
            return Next::Retry;
        }
        // At close, everything is taken: the worker holds it, or finish logs it.
        if !worker.saturated() || state.closed {
            if let Some(job) = state.jobs.pop_front() {
                queue.stats.depth.store(state.jobs.len(), Ordering::Relaxed);
                queue.room.notify_one();
                return Next::Job(job);
            }
            if state.closed {
                return Next::Finish;
            }
        }
        state = match worker.retry_at() {
            Some(at) => {
                let wait = at.saturating_duration_since(Instant::now());
                queue.job_ready.wait_timeout(state, wait).unwrap_or_else(PoisonError::into_inner).0
            }
            None => queue.job_ready.wait(state).unwrap_or_else(PoisonError::into_inner),
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::FutureExt;
    use std::sync::atomic::AtomicBool;

    /// A worker that records what it did; until the gate opens, each job waits on it, and
    /// while `failing`, jobs are held (saturated past `max_held`) and retried every 1 ms.
    #[derive(Clone, Default)]
    struct Probe {
        done: Arc<Mutex<Vec<u32>>>,
        held: Arc<Mutex<VecDeque<u32>>>,
        retry_at: Arc<Mutex<Option<Instant>>>,
        failing: Arc<AtomicBool>,
        gate: Arc<(Mutex<bool>, Condvar)>,
        finished: Arc<AtomicBool>,
        max_held: usize,
    }

    impl Probe {
        fn open_gate(&self) {
            *self.gate.0.lock().unwrap() = true;
            self.gate.1.notify_all();
        }
        fn done(&self) -> Vec<u32> {
            self.done.lock().unwrap().clone()
        }
    }

    impl Worker for Probe {
        type Job = u32;
        fn work(&mut self, job: u32, _now: Instant) {
            let (open, opened) = &*self.gate;
            let mut open = open.lock().unwrap();
            while !*open {
                open = opened.wait(open).unwrap();
            }
            let mut held = self.held.lock().unwrap();
            if self.failing.load(Ordering::SeqCst) || !held.is_empty() {
                held.push_back(job);
                self.retry_at.lock().unwrap().get_or_insert(Instant::now() + Duration::from_millis(1));
            } else {
                self.done.lock().unwrap().push(job);
            }
        }
        fn saturated(&self) -> bool {
            self.held.lock().unwrap().len() >= self.max_held
        }
        fn retry_at(&self) -> Option<Instant> {
            *self.retry_at.lock().unwrap()
        }
        fn retry(&mut self, now: Instant) {
            if self.failing.load(Ordering::SeqCst) {
                *self.retry_at.lock().unwrap() = Some(now + Duration::from_millis(1));
            } else {
                self.done.lock().unwrap().extend(self.held.lock().unwrap().drain(..));
                *self.retry_at.lock().unwrap() = None;
            }
        }
        fn finish(&mut self, now: Instant) {
            self.retry(now);
            self.finished.store(true, Ordering::SeqCst);
        }
    }

    fn wait_until(mut condition: impl FnMut() -> bool) {
        // Bounded by the test harness, not by a speed assumption.
        while !condition() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn the_queue_the_waits_and_the_time_per_job_are_on_metrics() {
        let probe = Probe { max_held: usize::MAX, ..Probe::default() };
        let stats = Arc::new(RecorderStats::default());
        let mut recorder = Recorder::with_capacity(probe.clone(), stats.clone(), 4);
        recorder.try_submit(0).unwrap();
        wait_until(|| recorder.depth() == 0);
        recorder.try_submit(1).unwrap();
        stats.waited(Duration::from_millis(1500));
        let text = stats.render();
        for line in [
            "gateway_recorder_queue_depth 1\n",
            "gateway_recorder_queue_capacity 64\n",
            "gateway_recorder_waits_total 1\n",
            "gateway_recorder_wait_seconds_total 1.5\n",
            "# TYPE gateway_recorder_job_seconds_max gauge\n",
        ] {
            assert!(text.contains(line), "{line:?} in\n{text}");
        }
        assert!(stats.busy_for() > Duration::ZERO, "on job 0, waiting at the gate");
        probe.open_gate();
        recorder.close([]);
        assert_eq!(stats.busy_for(), Duration::ZERO);
        assert!(stats.render().contains("gateway_recorder_job_seconds_count 2\n"));
    }

    #[test]
    fn jobs_are_done_in_the_order_they_were_submitted() {
        let probe = Probe { max_held: usize::MAX, ..Probe::default() };
        probe.open_gate();
        let mut recorder = Recorder::with_capacity(probe.clone(), Arc::default(), 1000);
        for job in 0..500 {
            recorder.try_submit(job).unwrap();
        }
        recorder.close([]);
        assert_eq!(probe.done(), (0..500).collect::<Vec<_>>());
        assert!(probe.finished.load(Ordering::SeqCst));
    }

    #[test]
    fn a_full_queue_hands_the_job_back_and_the_sender_waits_for_room_losing_nothing() {
        let probe = Probe { max_held: usize::MAX, ..Probe::default() };
        let stats = Arc::new(RecorderStats::default());
        let mut recorder = Recorder::with_capacity(probe.clone(), stats.clone(), 2);
        // The worker takes job 0 and blocks on the gate; 1 and 2 fill the queue.
        recorder.try_submit(0).unwrap();
        wait_until(|| recorder.depth() == 0);
        recorder.try_submit(1).unwrap();
        recorder.try_submit(2).unwrap();
        assert_eq!(stats.depth(), 2);
        assert_eq!(recorder.try_submit(3), Err(3), "full: the job comes back, not dropped");
        assert!(recorder.room().now_or_never().is_none(), "the sender waits while the queue is full");

        // The sender keeps what came back, in order, and waits for room like the run loop.
        let mut kept: VecDeque<u32> = (3..10).collect();
        probe.open_gate();
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(async {
            while let Some(job) = kept.pop_front() {
                if let Err(job) = recorder.try_submit(job) {
                    kept.push_front(job);
                    recorder.room().await;
                }
            }
        });
        recorder.close([]);
        assert_eq!(probe.done(), (0..10).collect::<Vec<_>>(), "everything, in order");
    }

    #[test]
    fn a_saturated_worker_takes_no_more_jobs_until_its_retry_goes_through() {
        let probe = Probe { max_held: 3, ..Probe::default() };
        probe.open_gate();
        probe.failing.store(true, Ordering::SeqCst);
        let mut recorder = Recorder::with_capacity(probe.clone(), Arc::default(), 2);
        for job in 0..3 {
            recorder.try_submit(job).unwrap();
            wait_until(|| recorder.depth() == 0);
        }
        // Three held: saturated. The queue fills and stays full while the disk fails.
        recorder.try_submit(3).unwrap();
        recorder.try_submit(4).unwrap();
        assert_eq!(recorder.try_submit(5), Err(5));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!((recorder.depth(), probe.done().len()), (2, 0), "held, not taken, not dropped");

        probe.failing.store(false, Ordering::SeqCst);
        wait_until(|| recorder.depth() == 0);
        recorder.try_submit(5).unwrap();
        recorder.close([6, 7]);
        assert_eq!(probe.done(), (0..8).collect::<Vec<_>>());
    }

    #[test]
    fn close_hands_over_the_kept_jobs_past_the_capacity_and_finish_sees_what_is_still_held() {
        let probe = Probe { max_held: 1, ..Probe::default() };
        probe.open_gate();
        probe.failing.store(true, Ordering::SeqCst);
        let mut recorder = Recorder::with_capacity(probe.clone(), Arc::default(), 1);
        recorder.try_submit(0).unwrap();
        wait_until(|| recorder.depth() == 0);
        recorder.try_submit(1).unwrap();
        // Saturated and full: the kept jobs still go in at close, and are held.
        recorder.close([2, 3, 4]);
        assert!(probe.finished.load(Ordering::SeqCst));
        assert_eq!(probe.held.lock().unwrap().iter().copied().collect::<Vec<_>>(), vec![0, 1, 2, 3, 4]);
        assert!(probe.done().is_empty());
    }
}
