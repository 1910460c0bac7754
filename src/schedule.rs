//! Schedule: shares the gateway's analysis capacity out among the cameras. Pure: the shell
//! (`decode::FrameScheduler`) owns the lock, the clock and the threads; this is the policy.
//!
//! Each camera has at most **one** frame waiting (newest wins), so nothing queues up behind a
//! busy detector: when demand exceeds capacity, older frames are replaced by newer ones of the
//! same camera and counted, and latency stays bounded by one frame per camera.
//!
//! - A camera is *due* on a fixed schedule: one frame per interval of arrival time (the first
//!   frame up to 10% of the interval early still counts, so a 2 s GOP with a 2 s interval
//!   analyses every keyframe without drifting).
//! - The interval is the camera's `analysis_interval` — its maximum revisit interval — or,
//!   while people are in one of its fall-watch zones (and [`ACTIVE_HOLD_MS`] after), its
//!   shorter `active_interval`.
//! - A free worker takes the waiting frame of the highest **priority**, then the one with the
//!   **earliest deadline** (the time the camera became due). A camera's priority is its
//!   configured [`Priority`] (default normal), raised to high while people are in view of one
//!   of its fall-watch zones (and [`ACTIVE_HOLD_MS`] after): life safety first. Over capacity,
//!   the lower-priority cameras (bikes, bins: their rules wait minutes anyway) are the ones
//!   revisited later; one that has waited [`PRIORITY_AGING_MS`] is served as high, so none
//!   starves for good — but an aged camera does not outrank the cameras that are high on
//!   their own (people in view, or configured high): it gets one take in
//!   [`AGED_SHARE_EVERY`] while those wait, so far over capacity (600 cameras on a box sized
//!   for 150) the aged bike and bin cameras share a tenth of the capacity among them instead
//!   of crowding out the fall-watch cameras by their older deadlines. Within a priority every
//!   camera is late by about the same time, and one
//!   busy camera cannot crowd out the others: a camera asking for a frame a second gets one a
//!   second only while the others' deadlines are not older.

use std::collections::BTreeMap;

/// How long a camera stays on its active interval (and high) after people were last seen in
/// a fall-watch zone (a person who lies down may be missed on a frame or two): until one of
/// its looks comes this long after the last sighting. Measured between looks, not on the
/// clock, so a camera kept waiting by a lack of capacity does not lose its priority for
/// want of being looked at.
pub const ACTIVE_HOLD_MS: i64 = 10_000;

/// A lower-priority camera whose due frame has waited this long is served as high priority:
/// over capacity, bike and bin cameras are revisited later, but not forever.
pub const PRIORITY_AGING_MS: i64 = 60_000;

/// While cameras that are high on their own (people in view of a fall-watch zone, or
/// configured high) have frames waiting, one take in this many goes to an aged camera (one
/// served as high only because it waited [`PRIORITY_AGING_MS`]), if one waits: the aged
/// cameras share a tenth of the capacity, the others get the rest.
pub const AGED_SHARE_EVERY: u32 = 10;

/// How urgently a camera's due frames are served when frames wait for a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum Priority {
    /// Served after the others (a camera nobody needs promptly).
    Low,
    /// The default.
    #[default]
    Normal,
    /// Served first; every fall-watch camera is high while people are in view of its zones.
    High,
}

impl Priority {
    /// The name in config files and the value in `/metrics` (0, 1, 2).
    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Normal => "normal",
            Priority::High => "high",
        }
    }

    /// The priority named `name` in a config file.
    pub fn from_name(name: &str) -> Option<Priority> {
        [Priority::Low, Priority::Normal, Priority::High].into_iter().find(|p| p.as_str() == name)
    }
}

/// When a camera's keyframes come: the next one expected, and the gap between the last two.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyframeTiming {
    /// Expected arrival of the next keyframe, ms.
    pub next_ms: i64,
    /// Gap between the last two keyframes, ms.
    pub gap_ms: i64,
}

/// A camera's sampling settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cadence {
    /// The maximum revisit interval, ms.
    pub interval_ms: i64,
    /// The interval while people are in view of a fall-watch zone, ms.
    pub active_interval_ms: Option<i64>,
    /// Configured priority (raised to high while people are in view of a fall-watch zone).
    pub priority: Priority,
}

/// What became of an offered frame.
#[derive(Debug, PartialEq, Eq)]
pub enum Offer<F> {
    /// Not wanted: the camera is not due, or its waiting frame is still fresh enough.
    /// Dropped (the normal case for most frames).
    NotDue,
    /// Waiting for a worker.
    Queued,
    /// Waiting for a worker, in place of the camera's older waiting frame, returned (it had
    /// waited at least [`late_after_ms`]).
    Replaced {
        /// The frame that will not be analysed.
        dropped: F,
        /// The camera has been waiting a whole interval (at least [`late_after_ms`]) since it
        /// became due: it is losing frames it asked for to a lack of capacity. A fresher frame
        /// replacing one that waited less is not a loss: the camera still gets its rate.
        late: bool,
    },
    /// The camera is not scheduled (being removed).
    Unknown,
}

/// A frame a worker took.
#[derive(Debug, PartialEq, Eq)]
pub struct Taken<K, F> {
    /// The camera.
    pub camera: K,
    /// The frame.
    pub frame: F,
    /// Arrival-time gap since the camera's previous analysed frame, ms (none for its first).
    pub revisit_ms: Option<i64>,
    /// How long the camera had a due frame waiting, ms.
    pub waited_ms: i64,
    /// Served as high only because it waited [`PRIORITY_AGING_MS`] (its share,
    /// [`AGED_SHARE_EVERY`], or nothing more urgent waited).
    pub aged: bool,
}

/// A camera's place in the order of waiting frames: its own priority (people in view raise it
/// to high), or high because its frame waited [`PRIORITY_AGING_MS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Urgency {
    Own(Priority),
    Aged,
}

impl Urgency {
    /// Order key, most urgent first: high on its own, then aged, then normal, then low.
    fn rank(self) -> u8 {
        match self {
            Urgency::Own(Priority::High) => 3,
            Urgency::Aged => 2,
            Urgency::Own(Priority::Normal) => 1,
            Urgency::Own(Priority::Low) => 0,
        }
    }
}

#[derive(Debug)]
struct Pending<F> {
    frame: F,
    arrived_ms: i64,
}

#[derive(Debug)]
struct Slot<F> {
    cadence: Cadence,
    /// When people were last in view of its fall-watch zones, and when it was last looked at
    /// ([`Scheduler::people_in_view`]).
    people_seen_ms: Option<i64>,
    looked_ms: Option<i64>,
    /// Whether `next_due_ms` follows the active interval.
    active: bool,
    next_due_ms: Option<i64>,
    last_taken_ms: Option<i64>,
    pending: Option<Pending<F>>,
    /// When the waiting frame's camera first had a due frame (deadline for the order).
    due_since_ms: i64,
    /// The first gap after the first analysed frame, as a fraction of the interval.
    first_gap: f64,
}

impl<F> Slot<F> {
    /// The priority the camera is served with now.
    fn priority(&self, now_ms: i64) -> Priority {
        match self.urgency(now_ms) {
            Urgency::Own(priority) => priority,
            Urgency::Aged => Priority::High,
        }
    }

    /// Whether people are in view of the camera's fall-watch zones, as far as its looks tell:
    /// seen within [`ACTIVE_HOLD_MS`] before its latest look. A fall-watch camera (one with an
    /// active interval) not looked at yet counts as having people, so its first look is served
    /// first: it cannot tell anyone is there until it is analysed.
    fn people(&self) -> bool {
        match self.looked_ms {
            None => self.cadence.active_interval_ms.is_some(),
            Some(looked) => self.people_seen_ms.is_some_and(|seen| looked - seen < ACTIVE_HOLD_MS),
        }
    }

    /// Why the camera is served with its priority now.
    fn urgency(&self, now_ms: i64) -> Urgency {
        let people = self.people();
        let aged = self.pending.is_some() && now_ms - self.due_since_ms >= PRIORITY_AGING_MS;
        if people {
            Urgency::Own(Priority::High)
        } else if aged && self.cadence.priority < Priority::High {
            Urgency::Aged
        } else {
            Urgency::Own(self.cadence.priority)
        }
    }

    fn interval_ms(&self) -> i64 {
        match (self.active, self.cadence.active_interval_ms) {
            (true, Some(active)) => active,
            _ => self.cadence.interval_ms,
        }
    }

    /// Follows the active hold: switching interval restarts the schedule from the last take.
    fn refresh(&mut self) {
        let active = self.cadence.active_interval_ms.is_some() && self.people();
        if active != self.active {
            self.active = active;
            self.next_due_ms = self.last_taken_ms.map(|last| last + self.interval_ms());
        }
    }

    /// Whether a frame arriving at `arrived_ms` is wanted: the camera is due, and any frame
    /// already waiting has waited [`late_after_ms`] (a fresher frame replaces it only then, so
    /// a camera decoding every frame does not prepare each one while it waits its turn).
    fn wants(&self, arrived_ms: i64) -> bool {
        let interval = self.interval_ms();
        let due = match self.next_due_ms {
            None => true,
            Some(next_due) => arrived_ms >= next_due - interval / 10,
        };
        due && self.pending.as_ref().is_none_or(|p| arrived_ms - p.arrived_ms >= late_after_ms(interval))
    }

    fn mark_taken(&mut self, arrived_ms: i64) {
        let interval = self.interval_ms();
        self.next_due_ms = Some(match (self.next_due_ms, self.last_taken_ms) {
            (Some(next_due), Some(last)) if arrived_ms >= last && arrived_ms < next_due + interval => {
                next_due + interval
            }
            // The first frame: the next one after a fraction of the interval, so cameras
            // started together do not stay due together.
            (_, None) => arrived_ms + (interval as f64 * self.first_gap) as i64,
            // Behind schedule (a gap, or the camera waited for capacity): restart from here.
            _ => arrived_ms + interval,
        });
        self.last_taken_ms = Some(arrived_ms);
    }
}

/// The scheduler over cameras keyed by `K`, holding frames `F`.
#[derive(Debug)]
pub struct Scheduler<K, F> {
    slots: BTreeMap<K, Slot<F>>,
    /// Takes of high-on-their-own cameras in a row while an aged camera waited
    /// ([`AGED_SHARE_EVERY`]).
    passed_over_aged: u32,
}

impl<K: Ord + Clone, F> Default for Scheduler<K, F> {
    fn default() -> Self {
        Scheduler { slots: BTreeMap::new(), passed_over_aged: 0 }
    }
}

impl<K: Ord + Clone, F> Scheduler<K, F> {
    /// Schedules a camera (or resets its cadence). Its waiting frame, if any, is kept.
    pub fn add(&mut self, camera: K, cadence: Cadence) {
        self.add_with_phase(camera, cadence, 1.0);
    }

    /// [`Scheduler::add`], with the gap after the camera's first analysed frame shortened to
    /// `phase` (0–1) of its interval. Cameras that start together (a gateway starting, 600
    /// cameras connecting within a second) would otherwise be due together every interval
    /// and queue up in bursts; spreading their phases evenly spreads the work.
    pub fn add_with_phase(&mut self, camera: K, cadence: Cadence, phase: f64) {
        let slot = self.slots.entry(camera).or_insert_with(|| Slot {
            cadence,
            people_seen_ms: None,
            looked_ms: None,
            active: false,
            next_due_ms: None,
            last_taken_ms: None,
            pending: None,
            due_since_ms: 0,
            first_gap: phase.clamp(0.0, 1.0),
        });
        slot.cadence = cadence;
    }

    /// Stops scheduling a camera; returns its waiting frame.
    pub fn remove(&mut self, camera: &K) -> Option<F> {
        Some(self.slots.remove(camera)?.pending?.frame)
    }

    /// Tells the scheduler whether people were in view of the camera's fall-watch zones on
    /// its latest analysed frame (at `now_ms`).
    pub fn people_in_view(&mut self, camera: &K, people: bool, now_ms: i64) {
        if let Some(slot) = self.slots.get_mut(camera) {
            if people {
                slot.people_seen_ms = Some(now_ms);
            }
            slot.looked_ms = Some(slot.looked_ms.map_or(now_ms, |looked| looked.max(now_ms)));
            slot.refresh();
        }
    }

    /// Whether a frame of `camera` arriving at `now_ms` would be due (lets a decoder skip
    /// preparing frames nobody will take).
    pub fn is_due(&mut self, camera: &K, now_ms: i64) -> bool {
        self.slots.get_mut(camera).is_some_and(|slot| {
            slot.refresh();
            slot.wants(now_ms)
        })
    }

    /// For a camera that decodes its stream itself (`every_frame`): whether the frame
    /// arriving at `now_ms` must be decoded.
    /// - With a frame waiting for a worker: every frame while the wait is under half the
    ///   interval (the decoder stays in step for the camera's next due frame, and a fresher
    ///   frame replaces a late one); after that, only keyframes, if keyframes alone come at
    ///   least every four intervals (well over capacity, decoding P-frames to throw them away
    ///   would take CPU from the detector; a camera asking for far more than its keyframes,
    ///   which would then drop out of the competition for a whole GOP, keeps decoding).
    /// - Otherwise: if the frame is due, or the camera will be due before the next keyframe
    ///   (`keyframes`: expected next one and the gap between the last two; within a tenth of
    ///   the interval of it, the keyframe is as good and cheaper).
    ///
    /// So a camera sampled once a second with a 2 s GOP decodes about half of each GOP, one
    /// idling at 10 s only the keyframes it analyses. The caller decodes a P-frame only if it
    /// decoded every frame since the last keyframe.
    pub fn needs_decoding(
        &mut self,
        camera: &K,
        now_ms: i64,
        is_keyframe: bool,
        keyframes: Option<KeyframeTiming>,
    ) -> bool {
        let Some(slot) = self.slots.get_mut(camera) else {
            return false;
        };
        slot.refresh();
        let interval = slot.interval_ms();
        let due_within_gop = match (slot.next_due_ms, keyframes) {
            (Some(next_due), Some(keyframes)) => next_due < keyframes.next_ms - interval / 10,
            // First frame, or the GOP is not known yet: decode.
            _ => true,
        };
        if slot.pending.is_some() {
            let keyframes_suffice = keyframes.is_some_and(|k| k.gap_ms <= 4 * interval);
            let short_wait = now_ms - slot.due_since_ms < (interval / 2).max(late_after_ms(interval));
            return is_keyframe || short_wait || !keyframes_suffice;
        }
        due_within_gop || slot.wants(now_ms)
    }

    /// Offers a frame that arrived at `now_ms`.
    pub fn offer(&mut self, camera: &K, frame: F, now_ms: i64) -> Offer<F> {
        let Some(slot) = self.slots.get_mut(camera) else {
            return Offer::Unknown;
        };
        slot.refresh();
        if !slot.wants(now_ms) {
            return Offer::NotDue;
        }
        let fresh = Pending { frame, arrived_ms: now_ms };
        match slot.pending.replace(fresh) {
            Some(older) => {
                let interval = slot.interval_ms();
                Offer::Replaced {
                    dropped: older.frame,
                    late: now_ms - slot.due_since_ms >= interval.max(late_after_ms(interval)),
                }
            }
            None => {
                slot.due_since_ms = now_ms;
                Offer::Queued
            }
        }
    }

    /// The waiting frame of the highest priority with the earliest deadline, if any; the
    /// camera's schedule moves on. Aged cameras get their share ([`AGED_SHARE_EVERY`]).
    pub fn take(&mut self, now_ms: i64) -> Option<Taken<K, F>> {
        // One pass: the most urgent waiting frame (earliest deadline within its urgency), and
        // the earliest aged one.
        let mut first: Option<(&K, Urgency, i64)> = None;
        let mut oldest_aged: Option<(&K, i64)> = None;
        for (camera, slot) in self.slots.iter().filter(|(_, slot)| slot.pending.is_some()) {
            let (urgency, due) = (slot.urgency(now_ms), slot.due_since_ms);
            if first.is_none_or(|(_, u, d)| (std::cmp::Reverse(urgency.rank()), due) < (std::cmp::Reverse(u.rank()), d))
            {
                first = Some((camera, urgency, due));
            }
            if urgency == Urgency::Aged && oldest_aged.is_none_or(|(_, d)| due < d) {
                oldest_aged = Some((camera, due));
            }
        }
        let (first, first_urgency, _) = first?;
        let own_high_first = first_urgency == Urgency::Own(Priority::High);
        let (camera, aged) = match oldest_aged {
            Some((aged, _)) if own_high_first && self.passed_over_aged + 1 >= AGED_SHARE_EVERY => {
                self.passed_over_aged = 0;
                (aged.clone(), true)
            }
            Some(_) if own_high_first => {
                self.passed_over_aged += 1;
                (first.clone(), false)
            }
            _ => {
                self.passed_over_aged = 0;
                (first.clone(), first_urgency == Urgency::Aged)
            }
        };
        let slot = self.slots.get_mut(&camera).expect("found above");
        let pending = slot.pending.take().expect("filtered above");
        let revisit_ms = slot.last_taken_ms.map(|last| pending.arrived_ms - last);
        slot.mark_taken(pending.arrived_ms);
        Some(Taken { camera, frame: pending.frame, revisit_ms, waited_ms: now_ms - slot.due_since_ms, aged })
    }

    /// Frames waiting for a worker (at most one per camera).
    pub fn waiting(&self) -> usize {
        self.slots.values().filter(|slot| slot.pending.is_some()).count()
    }

    /// Frames per second the cameras ask for at their current intervals.
    pub fn demand_per_second(&self) -> f64 {
        self.slots.values().map(|slot| 1000.0 / slot.interval_ms().max(1) as f64).sum()
    }

    /// Frames per second each camera asks for at its current interval.
    pub fn demand_by_camera(&self) -> Vec<(K, f64)> {
        self.slots.iter().map(|(camera, slot)| (camera.clone(), 1000.0 / slot.interval_ms().max(1) as f64)).collect()
    }

    /// Cameras on their active interval.
    pub fn active_cameras(&self) -> usize {
        self.slots.values().filter(|slot| slot.active).count()
    }

    /// The priority `camera` is served with at `now_ms` (none if not scheduled).
    pub fn priority(&self, camera: &K, now_ms: i64) -> Option<Priority> {
        self.slots.get(camera).map(|slot| slot.priority(now_ms))
    }

    /// Cameras served with high priority at `now_ms`.
    pub fn high_priority_cameras(&self, now_ms: i64) -> usize {
        self.slots.values().filter(|slot| slot.priority(now_ms) == Priority::High).count()
    }
}

/// Analysed frames per second a machine sustains, from the measured cost of one frame:
/// bounded by the CPUs (decode and inference both need one) and by the detector sessions'
/// threads (inference only). 0 until a cost was measured.
pub fn capacity_per_second(cpus: f64, detector_threads: f64, decode_ms: f64, inference_ms: f64) -> f64 {
    if decode_ms + inference_ms <= 0.0 {
        return 0.0;
    }
    let by_cpu = cpus * 1000.0 / (decode_ms + inference_ms);
    let by_detector = if inference_ms > 0.0 { detector_threads * 1000.0 / inference_ms } else { f64::INFINITY };
    by_cpu.min(by_detector)
}

/// One camera's measured cost and the frames per second it asks for ([`cost_at_demand`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CameraCost {
    /// Frames per second the camera asks for now.
    pub demand_per_second: f64,
    /// Its frames analysed so far.
    pub analysed: u64,
    /// Their decode + preprocess time (and the pose stage's: CPU, not a session), ms in all.
    pub decode_ms: f64,
    /// Their inference + postprocess time, ms in all.
    pub inference_ms: f64,
}

/// The mean cost of one analysed frame, `(decode_ms, inference_ms)`, at the cameras' demand
/// mix: each camera's own mean cost — its model (the 416×256 one costs 0.64× the square one),
/// its change gating, its rotated passes — weighted by the frames per second it asks for, so
/// a fall-watch camera asking for a frame a second weighs ten times a 10 s camera whatever
/// the scheduler managed to give each. Cameras not analysed yet are left out; `(0, 0)` when
/// none was.
pub fn cost_at_demand(cameras: &[CameraCost]) -> (f64, f64) {
    let (mut weight, mut decode_ms, mut inference_ms) = (0.0, 0.0, 0.0);
    for camera in cameras.iter().filter(|camera| camera.analysed > 0 && camera.demand_per_second > 0.0) {
        let frames = camera.analysed as f64;
        weight += camera.demand_per_second;
        decode_ms += camera.demand_per_second * camera.decode_ms / frames;
        inference_ms += camera.demand_per_second * camera.inference_ms / frames;
    }
    if weight > 0.0 {
        (decode_ms / weight, inference_ms / weight)
    } else {
        (0.0, 0.0)
    }
}

/// What the gateway can analyse per second, from two lower bounds: the estimate from the
/// measured cost of a frame ([`capacity_per_second`]; low under CPU contention, where stage
/// times include waiting for a core) and the throughput measured while frames waited the
/// whole time (the workers were never idle), kept for a minute.
#[derive(Debug, Default)]
pub struct CapacityMeter {
    previous: Option<(i64, u64, usize)>,
    saturated: Option<(f64, i64)>,
}

impl CapacityMeter {
    /// How long a throughput measured at saturation is trusted.
    const KEEP_MS: i64 = 60_000;

    /// Takes a sample (`analysed`: frames analysed since start; `waiting`: frames waiting in
    /// the scheduler now) and returns the capacity, frames/s.
    pub fn update(&mut self, now_ms: i64, analysed: u64, waiting: usize, estimate: f64) -> f64 {
        if let Some((then, analysed_then, waiting_then)) = self.previous {
            if waiting_then > 0 && waiting > 0 && now_ms > then {
                let rate = analysed.saturating_sub(analysed_then) as f64 * 1000.0 / (now_ms - then) as f64;
                let smoothed = match self.saturated {
                    Some((previous, at)) if now_ms - at <= Self::KEEP_MS => 0.8 * previous + 0.2 * rate,
                    _ => rate,
                };
                self.saturated = Some((smoothed, now_ms));
            }
        }
        self.previous = Some((now_ms, analysed, waiting));
        match self.saturated {
            Some((rate, at)) if now_ms - at <= Self::KEEP_MS => estimate.max(rate),
            _ => estimate,
        }
    }
}

/// How long a camera may wait with a due frame before it counts as over capacity: a tenth of
/// its interval (a 10 s camera whose keyframe is replaced by the next one, 2 s later, is late),
/// at least 200 ms (a worker busy with another camera's keyframe and inference is not late).
pub fn late_after_ms(interval_ms: i64) -> i64 {
    (interval_ms / 10).max(200)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cadence(interval_ms: i64) -> Cadence {
        Cadence { interval_ms, active_interval_ms: None, priority: Priority::Normal }
    }

    /// Runs `cameras` (interval ms, frame period ms) for `duration_ms` with `capacity` frames a
    /// second taken evenly; returns each camera's analysed arrival times.
    fn simulate(cameras: &[(Cadence, i64)], capacity_per_s: i64, duration_ms: i64) -> Vec<Vec<i64>> {
        let mut scheduler: Scheduler<usize, i64> = Scheduler::default();
        for (index, (cadence, _)) in cameras.iter().enumerate() {
            scheduler.add(index, *cadence);
        }
        let take_every = 1000 / capacity_per_s;
        let mut analysed = vec![Vec::new(); cameras.len()];
        for now in 0..duration_ms {
            for (index, (_, period)) in cameras.iter().enumerate() {
                // Cameras' clocks are offset so that frames do not all arrive together.
                if (now + index as i64 * 7) % period == 0 {
                    scheduler.offer(&index, now, now);
                }
            }
            if now % take_every == 0 {
                if let Some(taken) = scheduler.take(now) {
                    analysed[taken.camera].push(taken.frame);
                }
            }
        }
        analysed
    }

    fn worst_gap(times: &[i64]) -> i64 {
        times.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(i64::MAX)
    }

    #[test]
    fn keeps_one_frame_per_camera_and_the_newest() {
        let mut scheduler: Scheduler<&str, &str> = Scheduler::default();
        scheduler.add("a", cadence(2000));
        assert_eq!(scheduler.offer(&"a", "first", 0), Offer::Queued);
        // A fresher frame replaces the waiting one only once it has waited 200 ms (late).
        assert_eq!(scheduler.offer(&"a", "second", 40), Offer::NotDue);
        assert!(!scheduler.is_due(&"a", 199));
        // Not late: the camera still gets its frame within its interval.
        assert_eq!(scheduler.offer(&"a", "third", 220), Offer::Replaced { dropped: "first", late: false });
        assert_eq!(scheduler.waiting(), 1);
        let taken = scheduler.take(550).unwrap();
        assert_eq!((taken.frame, taken.revisit_ms, taken.waited_ms), ("third", None, 550));
        let revisit = 2330 - 220;
        assert_eq!(scheduler.waiting(), 0);
        // Not due again until the next slot (2000 from the frame's arrival, 10% early is fine).
        assert_eq!(scheduler.offer(&"a", "early", 2000), Offer::NotDue);
        assert_eq!(scheduler.offer(&"a", "due", 2330), Offer::Queued);
        assert_eq!(scheduler.take(2400).unwrap().revisit_ms, Some(revisit));
        assert_eq!(scheduler.offer(&"b", "unknown", 0), Offer::Unknown);
    }

    #[test]
    fn fixed_schedule_keeps_the_average_rate() {
        // 10 fps, frames at 0..=59.9 s, 1 s interval, always capacity: the slots at 0, 1, …,
        // 60 s (the last one taken 100 ms early, within its slack) = 61 frames. Restarting the
        // interval from each taken frame (10% early each time) gave 67.
        let mut scheduler: Scheduler<(), i64> = Scheduler::default();
        scheduler.add((), cadence(1000));
        let mut taken = 0;
        for t in (0..600).map(|frame| frame * 100) {
            scheduler.offer(&(), t, t);
            taken += usize::from(scheduler.take(t).is_some());
        }
        assert_eq!(taken, 61);
    }

    #[test]
    fn earliest_deadline_first() {
        let mut scheduler: Scheduler<&str, i64> = Scheduler::default();
        for camera in ["a", "b", "c"] {
            scheduler.add(camera, cadence(1000));
        }
        scheduler.offer(&"b", 10, 10);
        scheduler.offer(&"c", 20, 20);
        scheduler.offer(&"a", 30, 30);
        // b's newer frame (its old one waited the 200 ms) replaces it but keeps b's place.
        scheduler.offer(&"b", 210, 210);
        let order: Vec<_> = std::iter::from_fn(|| scheduler.take(220)).map(|t| (t.camera, t.frame)).collect();
        assert_eq!(order, [("b", 210), ("c", 20), ("a", 30)]);
    }

    #[test]
    fn under_capacity_every_camera_gets_its_interval() {
        // 20 cameras at 2 s GOP keyframes, 10 s interval = 2 frames/s asked, 5 available.
        let cameras = vec![(cadence(10_000), 2000); 20];
        let analysed = simulate(&cameras, 5, 120_000);
        for times in &analysed {
            assert!(worst_gap(times) <= 10_000, "{times:?}");
            assert!(times.len() >= 11, "{times:?}");
        }
    }

    #[test]
    fn over_capacity_every_camera_is_served_and_none_starves() {
        // 30 cameras at 1 s asked = 30 frames/s against 10: each gets about a third, nobody 0.
        let cameras = vec![(cadence(1000), 40); 30];
        let analysed = simulate(&cameras, 10, 60_000);
        let counts: Vec<usize> = analysed.iter().map(Vec::len).collect();
        let (min, max) = (*counts.iter().min().unwrap(), *counts.iter().max().unwrap());
        assert!(min >= 18 && max <= 22, "{counts:?}");
        for times in &analysed {
            assert!(worst_gap(times) <= 3_200, "{times:?}");
        }
    }

    #[test]
    fn a_busy_camera_cannot_starve_the_others() {
        // One camera asks for 25 frames/s, nine for one frame per 2 s; capacity 10/s. The nine
        // keep their interval; the busy one gets what is left.
        let mut cameras = vec![(cadence(40), 40)];
        cameras.extend(vec![(cadence(2000), 40); 9]);
        let analysed = simulate(&cameras, 10, 60_000);
        for times in &analysed[1..] {
            // After the start-up burst (all ten due at once).
            let settled: Vec<i64> = times.iter().copied().filter(|&t| t >= 5_000).collect();
            assert!(worst_gap(&settled) <= 2_100, "{times:?}");
        }
        let busy = analysed[0].len();
        assert!((280..=400).contains(&busy), "busy camera got {busy}");
    }

    #[test]
    fn people_in_view_shorten_the_interval_for_the_hold() {
        let mut scheduler: Scheduler<&str, i64> = Scheduler::default();
        scheduler
            .add("fall", Cadence { interval_ms: 10_000, active_interval_ms: Some(1000), priority: Priority::Normal });
        assert_eq!(scheduler.priority(&"fall", 0), Some(Priority::High), "not looked at yet: served first");
        let mut taken = Vec::new();
        for now in (0..45_000).step_by(40) {
            scheduler.offer(&"fall", now, now);
            if let Some(t) = scheduler.take(now) {
                taken.push(t.frame);
                // Each look tells whether people are in view: on the frames of 9–12 s.
                scheduler.people_in_view(&"fall", (9_000..12_000).contains(&t.frame), now);
            }
        }
        // First look at once (nobody): idle, 10 s later (10% early); people seen at 9 s and on
        // the looks up to 12 s: once a second (10% early) until a look comes 10 s after the
        // last sighting (11.9 s → 21.9 s); then idle again.
        let expected = [
            0, 9_000, 9_920, 10_920, 11_920, 12_920, 13_920, 14_920, 15_920, 16_920, 17_920, 18_920, 19_920, 20_920,
            21_920, 30_920, 40_920,
        ];
        assert_eq!(taken, expected);
        assert_eq!(scheduler.active_cameras(), 0);
        assert_eq!(scheduler.priority(&"fall", 45_000), Some(Priority::Normal));
    }

    #[test]
    fn a_fall_watch_camera_kept_waiting_keeps_its_priority_until_a_look_says_nobody() {
        let mut scheduler: Scheduler<&str, i64> = Scheduler::default();
        scheduler
            .add("fall", Cadence { interval_ms: 1000, active_interval_ms: Some(1000), priority: Priority::Normal });
        scheduler.people_in_view(&"fall", true, 0);
        // Not looked at for a minute (no capacity): still high, not dropped to normal.
        assert_eq!(scheduler.priority(&"fall", 60_000), Some(Priority::High));
        scheduler.people_in_view(&"fall", false, 60_000);
        assert_eq!(scheduler.priority(&"fall", 60_000), Some(Priority::Normal));
        // A plain camera never looked at is normal.
        scheduler.add("plain", cadence(1000));
        assert_eq!(scheduler.priority(&"plain", 0), Some(Priority::Normal));
    }

    #[test]
    fn the_cost_of_a_frame_is_weighed_by_what_each_camera_asks_for() {
        let camera = |demand_per_second: f64, analysed: u64, decode_ms: f64, inference_ms: f64| CameraCost {
            demand_per_second,
            analysed,
            decode_ms: decode_ms * analysed as f64,
            inference_ms: inference_ms * analysed as f64,
        };
        // One fall-watch camera at 1 frame/s on the square model (25 ms), ten plain cameras at
        // one frame per 10 s on the wide one (16 ms): half the demand each, so 20.5 ms, even
        // though the plain cameras were analysed twice as often so far.
        let mut cameras = vec![camera(1.0, 100, 4.0, 25.0)];
        cameras.extend((0..10).map(|_| camera(0.1, 20, 4.0, 16.0)));
        let (decode_ms, inference_ms) = cost_at_demand(&cameras);
        assert!((decode_ms - 4.0).abs() < 1e-9, "{decode_ms}");
        assert!((inference_ms - 20.5).abs() < 1e-9, "{inference_ms}");
        // A camera not analysed yet does not count; none measured gives nothing.
        cameras.push(camera(5.0, 0, 0.0, 0.0));
        assert!((cost_at_demand(&cameras).1 - 20.5).abs() < 1e-9);
        assert_eq!(cost_at_demand(&[camera(1.0, 0, 0.0, 0.0)]), (0.0, 0.0));
        assert_eq!(cost_at_demand(&[]), (0.0, 0.0));
    }

    #[test]
    fn capacity_is_bounded_by_cpus_and_detector_threads() {
        // 2 CPUs, 24.4 ms a frame: 82/s; one detector thread at 16.1 ms caps it at 62/s.
        assert!((capacity_per_second(2.0, 1.0, 8.3, 16.1) - 62.11).abs() < 0.01);
        assert!((capacity_per_second(2.0, 2.0, 8.3, 16.1) - 81.97).abs() < 0.01);
        assert_eq!(capacity_per_second(2.0, 1.0, 0.0, 0.0), 0.0);
    }

    #[test]
    fn phases_spread_cameras_that_start_together() {
        // 50 cameras whose keyframes all arrive at the same instants (every 2 s), 10 s interval.
        let run = |phased: bool| {
            let mut scheduler: Scheduler<usize, i64> = Scheduler::default();
            for camera in 0..50 {
                let phase = if phased { camera as f64 / 50.0 } else { 1.0 };
                scheduler.add_with_phase(camera, cadence(10_000), phase);
            }
            let mut busiest = 0;
            for now in (0..60_000).step_by(2000) {
                for camera in 0..50 {
                    scheduler.offer(&camera, now, now);
                }
                let taken = std::iter::from_fn(|| scheduler.take(now)).count();
                if now >= 20_000 {
                    busiest = busiest.max(taken);
                }
            }
            busiest
        };
        assert_eq!(run(false), 50, "without phases every camera is due at once");
        assert_eq!(run(true), 10, "with phases a fifth of them at each keyframe");
    }

    /// A 25 fps camera with a 2 s GOP decoding its own stream, with capacity (a worker takes
    /// an offered frame when the next one arrives, 40 ms later): (frames decoded, frames
    /// analysed) over 60 s.
    fn decode_every_frame(cadence: Cadence, people: bool) -> (usize, Vec<i64>) {
        let mut scheduler: Scheduler<(), i64> = Scheduler::default();
        scheduler.add((), cadence);
        let (mut decoded, mut analysed, mut synced) = (0, Vec::new(), false);
        for frame in 0..1500 {
            let now = frame * 40;
            if let Some(taken) = scheduler.take(now) {
                analysed.push(taken.frame);
                // Each look tells the scheduler (as the run loop does for fall-watch cameras).
                scheduler.people_in_view(&(), people, now);
            }
            let keyframe = frame % 50 == 0;
            let next_keyframe =
                (frame > 50).then_some(KeyframeTiming { next_ms: (frame / 50 + 1) * 2000, gap_ms: 2000 });
            if !scheduler.needs_decoding(&(), now, keyframe, next_keyframe) || !(keyframe || synced) {
                synced = false;
                continue;
            }
            synced = true;
            decoded += 1;
            scheduler.offer(&(), now, now);
        }
        (decoded, analysed)
    }

    #[test]
    fn a_camera_decoding_its_stream_decodes_only_up_to_its_next_due_frame() {
        // Every second: the keyframe and the frame 920 ms after it (its slot, 10% early), so
        // about half of each GOP is decoded; 60 analysed in 60 s.
        let (decoded, analysed) = decode_every_frame(cadence(1000), false);
        assert_eq!(analysed.len(), 60);
        assert!(worst_gap(&analysed) <= 1100);
        assert!(decoded < 800, "decoded {decoded} of 1500");
        // Idle at 10 s (people never in view): only the keyframes it analyses, after the first GOP.
        let idle = Cadence { interval_ms: 10_000, active_interval_ms: Some(1000), priority: Priority::Normal };
        let (decoded, analysed) = decode_every_frame(idle, false);
        assert_eq!(analysed.len(), 6);
        assert!(decoded < 60, "decoded {decoded} of 1500");
        // People in view: back to once a second.
        let (_, analysed) = decode_every_frame(idle, true);
        assert_eq!(analysed.len(), 60);
        // Every 400 ms: all of each GOP but its last 400 ms, where the keyframe is due anyway.
        let (decoded, analysed) = decode_every_frame(cadence(400), false);
        assert_eq!(analysed.len(), 150);
        assert!(worst_gap(&analysed) <= 440);
        assert!((1100..1500).contains(&decoded), "decoded {decoded} of 1500");
    }

    #[test]
    fn a_camera_waiting_long_for_capacity_decodes_keyframes_only() {
        let mut scheduler: Scheduler<(), i64> = Scheduler::default();
        scheduler.add((), cadence(1000));
        let gop = |next_ms| Some(KeyframeTiming { next_ms, gap_ms: 2000 });
        assert!(scheduler.needs_decoding(&(), 0, true, gop(2000)));
        scheduler.offer(&(), 0, 0);
        // Not taken yet: the decoder keeps in step while the wait is under half the interval...
        assert!(scheduler.needs_decoding(&(), 40, false, gop(2000)));
        assert!(scheduler.needs_decoding(&(), 460, false, gop(2000)));
        // ...and then decodes keyframes only...
        assert!(!scheduler.needs_decoding(&(), 500, false, gop(2000)));
        assert!(scheduler.needs_decoding(&(), 2000, true, gop(4000)));
        // ...unless keyframes alone are far too rare for the camera (every frame asked for).
        scheduler.add((), cadence(100));
        assert!(scheduler.needs_decoding(&(), 520, false, gop(2000)));
    }

    #[test]
    fn capacity_is_the_better_of_the_estimate_and_the_throughput_at_saturation() {
        let mut meter = CapacityMeter::default();
        // Idle: the estimate.
        assert_eq!(meter.update(0, 0, 0, 40.0), 40.0);
        assert_eq!(meter.update(1000, 20, 0, 40.0), 40.0);
        // Saturated (frames waiting at both ends of a second) at 30/s while contention drags
        // the estimate down to 12: 30.
        assert_eq!(meter.update(2000, 50, 300, 12.0), 12.0);
        assert_eq!(meter.update(3000, 80, 310, 12.0), 30.0);
        assert!((meter.update(4000, 120, 305, 12.0) - 32.0).abs() < 1e-9);
        // A minute after the last saturated second, the estimate alone again.
        assert!((meter.update(60_000, 200, 0, 12.0) - 32.0).abs() < 1e-9);
        assert_eq!(meter.update(64_001, 300, 0, 12.0), 12.0);
    }

    #[test]
    fn removing_a_camera_returns_its_frame() {
        let mut scheduler: Scheduler<&str, i64> = Scheduler::default();
        scheduler.add("a", cadence(1000));
        scheduler.offer(&"a", 1, 0);
        assert_eq!(scheduler.remove(&"a"), Some(1));
        assert_eq!(scheduler.waiting(), 0);
        assert!(scheduler.take(10).is_none());
    }

    #[test]
    fn demand_follows_the_current_intervals() {
        let mut scheduler: Scheduler<&str, i64> = Scheduler::default();
        scheduler.add("a", cadence(10_000));
        scheduler.add("b", Cadence { interval_ms: 10_000, active_interval_ms: Some(1000), priority: Priority::Normal });
        assert!((scheduler.demand_per_second() - 0.2).abs() < 1e-9);
        scheduler.people_in_view(&"b", true, 0);
        assert!((scheduler.demand_per_second() - 1.1).abs() < 1e-9);
    }

    /// `plain` cameras and `fall` fall-watch cameras (people in view when `people`), all asking
    /// one frame a second (frames every 40 ms), `capacity_per_s` frames a second taken evenly,
    /// for 60 s: frames analysed per camera, fall-watch ones first.
    fn prioritised(fall: usize, plain: usize, people: bool, capacity_per_s: i64) -> Vec<usize> {
        let mut scheduler: Scheduler<usize, i64> = Scheduler::default();
        let fall_cadence = Cadence { interval_ms: 1000, active_interval_ms: Some(1000), priority: Priority::Normal };
        for camera in 0..fall + plain {
            let cadence = if camera < fall { fall_cadence } else { cadence(1000) };
            scheduler.add_with_phase(camera, cadence, camera as f64 / (fall + plain) as f64);
        }
        let mut analysed = vec![0; fall + plain];
        let take_every = 1000 / capacity_per_s;
        for now in 0..60_000 {
            for camera in 0..fall + plain {
                if (now + camera as i64 * 7) % 40 == 0 {
                    scheduler.offer(&camera, now, now);
                }
            }
            if now % take_every == 0 {
                if let Some(taken) = scheduler.take(now) {
                    analysed[taken.camera] += 1;
                    if taken.camera < fall {
                        scheduler.people_in_view(&taken.camera, people, now);
                    }
                }
            }
        }
        analysed
    }

    #[test]
    fn over_capacity_fall_watch_cameras_with_people_go_first_and_plain_cameras_wait() {
        // 5 fall-watch + 25 plain cameras at 1 frame/s = 30/s asked; 10/s available.
        let analysed = prioritised(5, 25, true, 10);
        for (camera, &count) in analysed[..5].iter().enumerate() {
            assert!(count >= 57, "fall-watch camera {camera} got {count} frames in 60 s: {analysed:?}");
        }
        // The plain cameras absorb the shortfall (the 5 frames/s left: 12 each), evenly, and
        // none starves.
        let plain = &analysed[5..];
        let (min, max) = (*plain.iter().min().unwrap(), *plain.iter().max().unwrap());
        assert!(min >= 9 && max <= 15, "{plain:?}");
        // Nobody in view: the fall-watch cameras are plain cameras like the others.
        let analysed = prioritised(5, 25, false, 10);
        assert!(analysed.iter().all(|&count| (15..=25).contains(&count)), "{analysed:?}");
    }

    #[test]
    fn far_over_capacity_aged_cameras_share_a_tenth_and_fall_watch_keeps_its_rate() {
        // 10 fall-watch cameras with people in view asking 1 frame/s and 600 plain cameras at
        // 10 s (70/s asked), 14 frames/s available, for 5 minutes: the plain cameras age past
        // PRIORITY_AGING_MS and would outrank the fall-watch cameras by their older deadlines.
        let mut scheduler: Scheduler<usize, i64> = Scheduler::default();
        let (fall, plain) = (10, 600);
        let fall_cadence = Cadence { interval_ms: 1000, active_interval_ms: Some(1000), priority: Priority::Normal };
        for camera in 0..fall + plain {
            let cadence = if camera < fall { fall_cadence } else { cadence(10_000) };
            scheduler.add_with_phase(camera, cadence, camera as f64 / (fall + plain) as f64);
            // People in view from the start (otherwise the first frames queue as normal).
            scheduler.people_in_view(&camera, camera < fall, 0);
        }
        let mut analysed = vec![0; fall + plain];
        let (mut plain_takes, mut aged_takes, mut takes) = (0, 0, 0);
        for now in 0..300_000 {
            for camera in 0..fall + plain {
                if (now + camera as i64 * 7) % 40 == 0 {
                    scheduler.offer(&camera, now, now);
                }
            }
            if now % 71 == 0 {
                if let Some(taken) = scheduler.take(now) {
                    analysed[taken.camera] += 1;
                    takes += 1;
                    if taken.camera < fall {
                        scheduler.people_in_view(&taken.camera, true, now);
                    } else {
                        plain_takes += 1;
                        aged_takes += u64::from(taken.aged);
                    }
                }
            }
        }
        // Each fall-watch camera at least 0.9 frames/s.
        for (camera, &count) in analysed[..fall].iter().enumerate() {
            assert!(count >= 270, "fall-watch camera {camera} got {count} frames in 300 s: {:?}", &analysed[..fall]);
        }
        // The plain cameras get what is left (at least their tenth), and every one is served.
        assert!(plain_takes * 10 >= takes, "{plain_takes} of {takes}");
        assert!(aged_takes > 0 && aged_takes <= plain_takes, "{aged_takes} aged of {plain_takes}");
        assert!(analysed[fall..].iter().all(|&count| count >= 1), "{:?}", &analysed[fall..]);
    }

    #[test]
    fn configured_priority_orders_waiting_frames_and_a_long_wait_ages_into_high() {
        let mut scheduler: Scheduler<&str, i64> = Scheduler::default();
        let with = |priority| Cadence { interval_ms: 1000, active_interval_ms: None, priority };
        scheduler.add("bins", with(Priority::Low));
        scheduler.add("bikes", with(Priority::Normal));
        scheduler.add("gate", with(Priority::High));
        // Due in the opposite order: priority first, then the deadline.
        scheduler.offer(&"bins", 1, 0);
        scheduler.offer(&"bikes", 2, 10);
        scheduler.offer(&"gate", 3, 20);
        let order: Vec<_> = std::iter::from_fn(|| scheduler.take(30)).map(|t| t.camera).collect();
        assert_eq!(order, ["gate", "bikes", "bins"]);
        assert_eq!(scheduler.priority(&"bins", 30), Some(Priority::Low));
        // A low camera that has waited a minute goes before a normal one due later.
        scheduler.offer(&"bins", 4, 2_000);
        scheduler.offer(&"bikes", 5, 2_010);
        assert_eq!(scheduler.take(61_000).unwrap().camera, "bikes");
        assert_eq!(scheduler.priority(&"bins", 62_000), Some(Priority::High));
        scheduler.offer(&"bikes", 6, 62_005);
        assert_eq!(scheduler.take(62_010).unwrap().camera, "bins");
        assert_eq!(scheduler.high_priority_cameras(62_010), 1);
    }

    #[test]
    fn a_camera_getting_its_rate_is_never_counted_over_capacity() {
        // Every-frame camera, 1 s interval, frames every 40 ms; the worker takes each due frame
        // 600 ms after it was offered (busy with others): every fresher frame replaces the
        // waiting one, but the camera still gets one frame a second, so none is late.
        let mut scheduler: Scheduler<(), i64> = Scheduler::default();
        scheduler.add((), cadence(1000));
        let (mut late, mut replaced, mut taken, mut due_at) = (0, 0, 0, None);
        for now in (0..60_000).step_by(40) {
            match scheduler.offer(&(), now, now) {
                Offer::Queued => due_at = Some(now),
                Offer::Replaced { late: true, .. } => late += 1,
                Offer::Replaced { late: false, .. } => replaced += 1,
                _ => {}
            }
            if due_at.is_some_and(|due| now >= due + 600) {
                taken += usize::from(scheduler.take(now).is_some());
                due_at = None;
            }
        }
        assert!(replaced > 0 && taken >= 59, "replaced {replaced}, taken {taken}");
        assert_eq!(late, 0);
        // Kept waiting 1.5 s each time: it loses frames it asked for, and that counts.
        let mut scheduler: Scheduler<(), i64> = Scheduler::default();
        scheduler.add((), cadence(1000));
        let (mut late, mut due_at) = (0, None);
        for now in (0..60_000).step_by(40) {
            match scheduler.offer(&(), now, now) {
                Offer::Queued => due_at = Some(now),
                Offer::Replaced { late: true, .. } => late += 1,
                _ => {}
            }
            if due_at.is_some_and(|due| now >= due + 1500) {
                scheduler.take(now);
                due_at = None;
            }
        }
        assert!(late >= 30, "late {late}");
    }
}
