//! Decode: compressed access units → the detector's input tensor.
//!
//! By default only the keyframes a camera's analysis interval needs are decoded, on a small
//! **shared** pool of decoders: with parameter sets in front of every keyframe, any keyframe
//! decodes on its own, so 600 cameras need a handful of decoders rather than 600 (600
//! persistent decoders held 3.3 GB in a trial). Cameras that must be sampled faster than
//! their GOP (`decode = "every_frame"`) get a dedicated decoder thread instead.
//!
//! Which frame is worked on next is the [`crate::schedule`] policy's call: every camera has at
//! most one due frame waiting there (newest wins), and a pool worker takes the one with the
//! earliest deadline when the detector can take another. Where the rate changes:
//! - due keyframes (and every-frame cameras' due, prepared frames) → the scheduler: one per
//!   camera; a newer one replaces the older, counted as `over_capacity`;
//! - every-frame cameras: bounded; when full, frames are dropped **up to the next keyframe**
//!   (a P-frame without its references is useless) and counted;
//! - prepared frames → the detector: bounded and small; pool workers **wait** when it is full,
//!   so the backlog stays in the scheduler, where it is fair and cannot grow.
//!
//! Architecture invariant: nothing here blocks an ingest task, and nothing here knows about
//! the models beyond their input sizes: each decoded frame is letterboxed for the model its
//! camera's [`ModelRule`] picks for the frame's size (`[detector] model`, or `wide_model` for
//! wide frames), and the prepared frame says which.

mod decoder;
pub mod letterbox;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};
use tracing::{debug, warn};

pub use decoder::{Decoder, DecoderKey};
use letterbox::{Letterbox, VideoLetterboxer};

use crate::config::{CameraConfig, CameraId, DecodeMode, ModelRule, ModelVariant};
use crate::detect::RotatedPass;
use crate::health::{CameraHealth, SkipReason, Summary};
use crate::media::{EncodedFrame, FrameSink};
use crate::schedule::{Offer, Scheduler};

/// Decodes a self-contained keyframe to a full-resolution RGB picture (snapshots, references).
pub fn picture_rgb(frame: &EncodedFrame) -> anyhow::Result<image::RgbImage> {
    use anyhow::Context;
    use ffmpeg_next as ffmpeg;
    let mut decoder = Decoder::open(DecoderKey { codec: frame.codec, extradata: frame.extradata.clone() })?;
    let picture = decoder.decode_keyframe(&frame.data)?;
    let (width, height) = (picture.width(), picture.height());
    let mut scaler = ffmpeg::software::scaling::Context::get(
        picture.format(),
        width,
        height,
        ffmpeg::format::Pixel::RGB24,
        width,
        height,
        ffmpeg::software::scaling::Flags::BILINEAR,
    )?;
    let mut rgb = ffmpeg::frame::Video::empty();
    scaler.run(&picture, &mut rgb)?;
    let stride = rgb.stride(0);
    let row = width as usize * 3;
    let pixels: Vec<u8> =
        (0..height as usize).flat_map(|y| rgb.data(0)[y * stride..y * stride + row].iter().copied()).collect();
    image::RgbImage::from_raw(width, height, pixels).context("picture size")
}

/// A frame ready for the detector.
pub struct PreparedFrame {
    /// The camera it came from (id and counters).
    pub camera: Arc<CameraHealth>,
    /// Footage time of the frame, ms.
    pub media_time_ms: i64,
    /// When its access unit arrived.
    pub received_at: Instant,
    /// How frame pixels map to the tensor.
    pub letterbox: Letterbox,
    /// Planar BGR float tensor of the model's input size.
    pub tensor: Vec<f32>,
    /// Decode + preprocess time.
    pub decode_time: Duration,
    /// The scaled picture (the model's view), for bin-area readings and evidence.
    pub picture: Arc<image::RgbImage>,
    /// Also detect on the picture (or crops of it) rotated ±90° (fall-watch cameras that ask
    /// for it).
    pub rotated_pass: RotatedPass,
    /// The model the tensor was made for (and must run on).
    pub variant: ModelVariant,
}

/// The input sizes of the detector's models, `(width, height)`: what the decoders letterbox to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputSizes {
    /// `[detector] model`'s input.
    pub square: (u32, u32),
    /// `[detector] wide_model`'s input, when one is loaded.
    pub wide: Option<(u32, u32)>,
}

/// A decoder's letterboxers, one per model (each keeps its swscale context); `replay` uses
/// them too.
pub struct Letterboxers {
    square: VideoLetterboxer,
    wide: Option<VideoLetterboxer>,
}

impl Letterboxers {
    /// Letterboxers for models of `sizes`.
    pub fn new(sizes: InputSizes) -> Self {
        Letterboxers {
            square: VideoLetterboxer::new(sizes.square.0, sizes.square.1),
            wide: sizes.wide.map(|(width, height)| VideoLetterboxer::new(width, height)),
        }
    }

    /// The letterboxer for `variant` (the square one when no wide model is loaded), and the
    /// variant it serves.
    pub fn get(&mut self, variant: ModelVariant) -> (&mut VideoLetterboxer, ModelVariant) {
        match (variant, self.wide.as_mut()) {
            (ModelVariant::Wide, Some(wide)) => (wide, ModelVariant::Wide),
            _ => (&mut self.square, ModelVariant::Square),
        }
    }
}

/// What waits in the scheduler for a camera.
enum Job {
    /// A keyframe for the pool to decode.
    Keyframe(EncodedFrame),
    /// A frame an every-frame camera's decoder already prepared.
    Prepared(PreparedFrame),
}

/// A job with the camera it belongs to.
struct Waiting {
    camera: Arc<CameraHealth>,
    rotated_pass: bool,
    /// Which model the camera's frames go to, by their size.
    model: ModelRule,
    job: Job,
}

/// Upper bounds of the revisit histogram, seconds.
pub const REVISIT_BUCKETS: [f64; 10] = [1.0, 2.0, 5.0, 10.0, 11.0, 12.0, 15.0, 20.0, 30.0, 60.0];

/// The scheduler's figures, for `/metrics` and the benchmark.
#[derive(Debug, Clone, Default)]
pub struct ScheduleStats {
    /// Frames waiting for a worker (at most one per camera).
    pub waiting: usize,
    /// Frames per second the cameras ask for at their current intervals.
    pub demand_per_second: f64,
    /// Cameras on their active (people in view) interval.
    pub active_cameras: usize,
    /// Cameras served with high priority now.
    pub high_priority_cameras: usize,
    /// Frames taken for cameras served as high only because they waited a minute.
    pub aged_takes: u64,
    /// Revisits observed, cumulative per bucket of [`REVISIT_BUCKETS`] (then +Inf).
    pub revisit_buckets: Vec<u64>,
    /// Sum of revisits, seconds.
    pub revisit_sum_seconds: f64,
    /// The longest revisit in the current and the previous period (see [`FrameScheduler::rotate`]).
    pub recent_revisit_max_seconds: f64,
}

struct SchedulerState {
    scheduler: Scheduler<CameraId, Waiting>,
    /// Which sink owns each camera's place (a restarted camera's old decoder thread may end
    /// after the new sink was made, and must not unschedule it).
    owners: std::collections::HashMap<CameraId, u64>,
    next_owner: u64,
    closed: bool,
    /// Revisit counts per bucket (not cumulative), the last one +Inf.
    revisit_buckets: [u64; REVISIT_BUCKETS.len() + 1],
    /// Revisits' sum and recent maximum, seconds.
    revisits: Summary,
    /// Frames taken for aged cameras ([`crate::schedule::Taken::aged`]).
    aged_takes: u64,
}

/// The shell around [`Scheduler`]: cameras' sinks offer frames, pool workers wait for the
/// next one. One lock, held for microseconds; time is milliseconds since the pool started.
pub struct FrameScheduler {
    state: Mutex<SchedulerState>,
    ready: Condvar,
    epoch: Instant,
}

impl FrameScheduler {
    fn new() -> Self {
        FrameScheduler {
            state: Mutex::new(SchedulerState {
                scheduler: Scheduler::default(),
                owners: std::collections::HashMap::new(),
                next_owner: 0,
                closed: false,
                revisit_buckets: [0; REVISIT_BUCKETS.len() + 1],
                revisits: Summary::default(),
                aged_takes: 0,
            }),
            ready: Condvar::new(),
            epoch: Instant::now(),
        }
    }

    /// The state, even after a thread panicked while holding it: the scheduler's state is
    /// plain data that stays usable, and a poisoned lock would make every camera's sink and
    /// every decoder panic in turn, so one panicking decoder would stop them all.
    fn lock_state(&self) -> MutexGuard<'_, SchedulerState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn ms(&self, at: Instant) -> i64 {
        at.saturating_duration_since(self.epoch).as_millis() as i64
    }

    fn add(self: &Arc<Self>, camera: &CameraConfig) -> Scheduled {
        let mut state = self.lock_state();
        state.scheduler.add_with_phase(camera.id.clone(), camera.cadence(), phase_of(&camera.id));
        state.next_owner += 1;
        let owner = state.next_owner;
        state.owners.insert(camera.id.clone(), owner);
        Scheduled { scheduler: self.clone(), camera: camera.id.clone(), owner }
    }

    fn remove(&self, camera: &CameraId, owner: u64) {
        let mut state = self.lock_state();
        if state.owners.get(camera) == Some(&owner) {
            state.owners.remove(camera);
            state.scheduler.remove(camera);
        }
    }

    /// Whether a frame of the camera arriving at `at` would be taken.
    fn is_due(&self, camera: &CameraId, at: Instant) -> bool {
        let now = self.ms(at);
        self.lock_state().scheduler.is_due(camera, now)
    }

    /// Whether an every-frame camera must decode the frame arriving at `at` (see
    /// [`Scheduler::needs_decoding`]).
    fn needs_decoding(&self, camera: &CameraId, at: Instant, is_keyframe: bool, keyframes: &KeyframeSpacing) -> bool {
        let now = self.ms(at);
        let timing = match (keyframes.last, keyframes.spacing) {
            (Some(last), Some(gap)) => {
                Some(crate::schedule::KeyframeTiming { next_ms: self.ms(last + gap), gap_ms: gap.as_millis() as i64 })
            }
            _ => None,
        };
        self.lock_state().scheduler.needs_decoding(camera, now, is_keyframe, timing)
    }

    /// Offers a frame; counts it if it replaced a due frame the gateway had no capacity for.
    fn offer(&self, waiting: Waiting, at: Instant) {
        let now = self.ms(at);
        let camera = waiting.camera.clone();
        let (offered, priority) = {
            let mut state = self.lock_state();
            let offered = state.scheduler.offer(&camera.id, waiting, now);
            (offered, state.scheduler.priority(&camera.id, now))
        };
        if let Some(priority) = priority {
            camera.counters.priority.store(priority as u64, Ordering::Relaxed);
        }
        match offered {
            Offer::Queued => self.ready.notify_one(),
            // A fresher frame taking the place of one that waited briefly is not a loss.
            Offer::Replaced { late: true, .. } => camera.record_skip(SkipReason::OverCapacity),
            Offer::Replaced { late: false, .. } | Offer::NotDue | Offer::Unknown => {}
        }
    }

    /// People in view of a fall-watch camera's zones on its latest analysed frame.
    pub fn people_in_view(&self, camera: &CameraId, people: bool) {
        let now = self.ms(Instant::now());
        self.lock_state().scheduler.people_in_view(camera, people, now);
    }

    /// The next frame to work on, waiting for one; `None` once closed.
    fn next(&self) -> Option<Waiting> {
        let mut state = self.lock_state();
        loop {
            if state.closed {
                return None;
            }
            let now = self.ms(Instant::now());
            if let Some(taken) = state.scheduler.take(now) {
                state.aged_takes += u64::from(taken.aged);
                if let Some(revisit_ms) = taken.revisit_ms {
                    let bucket = REVISIT_BUCKETS
                        .iter()
                        .position(|&bound| revisit_ms as f64 <= bound * 1000.0)
                        .unwrap_or(REVISIT_BUCKETS.len());
                    state.revisit_buckets[bucket] += 1;
                    state.revisits.record(revisit_ms as f64 / 1000.0);
                    taken.frame.camera.record_revisit(revisit_ms.max(0) as u64);
                }
                return Some(taken.frame);
            }
            state = self.ready.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Frames per second each camera asks for at its current interval.
    pub fn demand_by_camera(&self) -> std::collections::HashMap<CameraId, f64> {
        self.lock_state().scheduler.demand_by_camera().into_iter().collect()
    }

    /// Starts a new period for the recent maximum (the run loop calls this every 10 s).
    pub fn rotate(&self) {
        self.lock_state().revisits.rotate();
    }

    fn close(&self) {
        self.lock_state().closed = true;
        self.ready.notify_all();
    }

    /// The scheduler's figures now.
    pub fn stats(&self) -> ScheduleStats {
        let state = self.lock_state();
        let mut cumulative = 0;
        ScheduleStats {
            waiting: state.scheduler.waiting(),
            demand_per_second: state.scheduler.demand_per_second(),
            active_cameras: state.scheduler.active_cameras(),
            high_priority_cameras: state.scheduler.high_priority_cameras(self.ms(Instant::now())),
            aged_takes: state.aged_takes,
            revisit_buckets: state
                .revisit_buckets
                .iter()
                .map(|count| {
                    cumulative += count;
                    cumulative
                })
                .collect(),
            revisit_sum_seconds: state.revisits.sum,
            recent_revisit_max_seconds: state.revisits.recent_max(),
        }
    }
}

/// The shared decoder pool: workers take the scheduler's next frame, decode it if it is a
/// keyframe, and hand it to the detector, waiting while the detector queue is full (the
/// backlog stays in the scheduler, one frame per camera, newest first).
pub struct DecodePool {
    scheduler: Arc<FrameScheduler>,
    threads: Vec<JoinHandle<()>>,
    prepared: Sender<PreparedFrame>,
    input_sizes: InputSizes,
}

impl DecodePool {
    /// Starts `workers` decoder threads feeding `prepared`, for models of `input_sizes`.
    pub fn start(workers: usize, input_sizes: InputSizes, prepared: Sender<PreparedFrame>) -> Self {
        crate::media::init_ffmpeg();
        let scheduler = Arc::new(FrameScheduler::new());
        let threads = (0..workers)
            .map(|index| {
                let scheduler = scheduler.clone();
                let prepared = prepared.clone();
                std::thread::Builder::new()
                    .name(format!("decode-{index}"))
                    .spawn(move || pool_worker(&scheduler, &prepared, input_sizes))
                    .expect("spawn decoder thread")
            })
            .collect();
        DecodePool { scheduler, threads, prepared, input_sizes }
    }

    /// The sink a camera's ingest task pushes into; the camera is scheduled until it is dropped.
    pub fn sink_for(&self, camera: &CameraConfig, health: Arc<CameraHealth>) -> Box<dyn FrameSink> {
        let scheduled = self.scheduler.add(camera);
        let rotated_pass = camera.rotated_pass();
        let model = camera.model_rule(self.input_sizes.wide.is_some());
        match camera.decode_mode {
            DecodeMode::Keyframes => Box::new(KeyframeRouter { scheduled, camera: health, rotated_pass, model }),
            DecodeMode::EveryFrame => {
                Box::new(EveryFrameRouter::start(health, scheduled, rotated_pass, model, self.input_sizes))
            }
        }
    }

    /// The scheduler (people in view, figures).
    pub fn scheduler(&self) -> &Arc<FrameScheduler> {
        &self.scheduler
    }

    /// Prepared frames waiting for a detector session.
    pub fn detector_queue_depth(&self) -> usize {
        self.prepared.len()
    }

    /// Stops the workers (frames still waiting are dropped) and waits for them.
    pub fn shutdown(mut self) {
        self.scheduler.close();
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// A camera's phase in its interval, from its id: stable across restarts, spread evenly.
fn phase_of(camera: &CameraId) -> f64 {
    use std::hash::{Hash, Hasher};
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    camera.hash(&mut hasher);
    (hasher.finish() % 1000) as f64 / 1000.0
}

/// A camera's place in the scheduler, given up when its sink is dropped (camera stopped).
struct Scheduled {
    scheduler: Arc<FrameScheduler>,
    camera: CameraId,
    owner: u64,
}

impl Drop for Scheduled {
    fn drop(&mut self) {
        self.scheduler.remove(&self.camera, self.owner);
    }
}

/// Keyframe mode: due keyframes are offered to the scheduler, decoded on the shared pool.
struct KeyframeRouter {
    scheduled: Scheduled,
    camera: Arc<CameraHealth>,
    rotated_pass: bool,
    model: ModelRule,
}

impl FrameSink for KeyframeRouter {
    fn push(&mut self, frame: EncodedFrame) {
        self.camera.record_frame(frame.is_keyframe, frame.received_at);
        if !frame.is_keyframe {
            return;
        }
        let at = frame.received_at;
        let waiting = Waiting {
            camera: self.camera.clone(),
            rotated_pass: self.rotated_pass,
            model: self.model,
            job: Job::Keyframe(frame),
        };
        self.scheduled.scheduler.offer(waiting, at);
    }
}

fn pool_worker(scheduler: &FrameScheduler, prepared: &Sender<PreparedFrame>, input_sizes: InputSizes) {
    let mut decoder: Option<Decoder> = None;
    let mut letterboxers = Letterboxers::new(input_sizes);
    while let Some(Waiting { camera, rotated_pass, model, job }) = scheduler.next() {
        let frame = match job {
            Job::Prepared(frame) => frame,
            Job::Keyframe(frame) => {
                let _span = tracing::debug_span!("camera", camera = %camera.id).entered();
                // A panic on one camera's keyframe must not take a pool thread (all cameras'
                // decoding) with it: counted as a decode error, decoder and scaler rebuilt.
                let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    decode_keyframe(&mut decoder, &mut letterboxers, &camera, &frame, rotated_pass, model)
                }));
                match decoded {
                    Ok(Some(prepared)) => prepared,
                    Ok(None) => continue,
                    Err(_) => {
                        camera.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                        decoder = None;
                        letterboxers = Letterboxers::new(input_sizes);
                        continue;
                    }
                }
            }
        };
        // Waits while the detector is busy: the scheduler keeps the backlog, not this queue.
        if prepared.send(frame).is_err() {
            return;
        }
    }
}

/// Decodes a keyframe with the worker's decoder (reopened when the codec configuration
/// changes) and prepares it; `None` (counted) when it does not decode.
fn decode_keyframe(
    decoder: &mut Option<Decoder>,
    letterboxers: &mut Letterboxers,
    camera: &Arc<CameraHealth>,
    frame: &EncodedFrame,
    rotated_pass: bool,
    model: ModelRule,
) -> Option<PreparedFrame> {
    let started = Instant::now();
    let key = DecoderKey { codec: frame.codec, extradata: frame.extradata.clone() };
    if decoder.as_ref().is_none_or(|d| *d.key() != key) {
        *decoder = match Decoder::open(key) {
            Ok(opened) => Some(opened),
            Err(error) => {
                if let Some(suppressed) = camera.allow_log("decoder_open") {
                    warn!(error = format!("{error:#}"), suppressed, "cannot open decoder");
                }
                camera.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                return None;
            }
        };
    }
    let picture = match decoder.as_mut().expect("opened above").decode_keyframe(&frame.data) {
        Ok(picture) => picture,
        Err(error) => {
            debug!(error = format!("{error:#}"), "keyframe did not decode");
            camera.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
            return None;
        }
    };
    camera.counters.frames_decoded.fetch_add(1, Ordering::Relaxed);
    prepare(rotated_pass, model, letterboxers, &picture, camera, frame, started)
}

/// Letterboxes a decoded picture for the model its size picks; `None` (counted) when that
/// fails.
fn prepare(
    rotated_pass: bool,
    model: ModelRule,
    letterboxers: &mut Letterboxers,
    picture: &ffmpeg_next::frame::Video,
    camera: &Arc<CameraHealth>,
    frame: &EncodedFrame,
    started: Instant,
) -> Option<PreparedFrame> {
    let (letterboxer, variant) = letterboxers.get(model.variant(picture.width(), picture.height()));
    camera.counters.set_model(variant);
    let mut tensor = Vec::new();
    let letterbox = match letterboxer.run(picture, &mut tensor) {
        Ok(letterbox) => letterbox,
        Err(error) => {
            if let Some(suppressed) = camera.allow_log("preprocessing") {
                warn!(error = format!("{error:#}"), suppressed, "preprocessing failed");
            }
            camera.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
            return None;
        }
    };
    let picture = Arc::new(letterboxer.scaled_picture());
    let decode_time = started.elapsed();
    camera.counters.decode_us_total.fetch_add(decode_time.as_micros() as u64, Ordering::Relaxed);
    Some(PreparedFrame {
        camera: camera.clone(),
        media_time_ms: frame.media_time_ms,
        received_at: frame.received_at,
        letterbox,
        tensor,
        decode_time,
        picture,
        // The whole picture on every frame when the zone says so, else crops around where the
        // fall rule asked after the last one.
        rotated_pass: if rotated_pass {
            RotatedPass::Whole
        } else {
            let regions = camera.counters.rotated_regions.lock().unwrap_or_else(PoisonError::into_inner);
            if regions.is_empty() {
                RotatedPass::Off
            } else {
                RotatedPass::Regions(regions.clone())
            }
        },
        variant,
    })
}

/// Frames queued for one every-frame camera's decoder before frames are dropped.
const EVERY_FRAME_QUEUE: usize = 64;

/// Every-frame mode: all frames go to a decoder thread dedicated to the camera, which offers
/// the due ones, prepared, to the scheduler.
struct EveryFrameRouter {
    frames: Sender<(EncodedFrame, bool)>,
    camera: Arc<CameraHealth>,
    awaiting_keyframe: bool,
}

impl EveryFrameRouter {
    fn start(
        camera: Arc<CameraHealth>,
        scheduled: Scheduled,
        rotated_pass: bool,
        model: ModelRule,
        input_sizes: InputSizes,
    ) -> Self {
        let (frames, receiver) = crossbeam_channel::bounded(EVERY_FRAME_QUEUE);
        let worker_camera = camera.clone();
        std::thread::Builder::new()
            .name(format!("decode-{}", camera.id))
            .spawn(move || {
                every_frame_worker(&receiver, &worker_camera, &scheduled, (rotated_pass, model), input_sizes)
            })
            .expect("spawn decoder thread");
        EveryFrameRouter { frames, camera, awaiting_keyframe: true }
    }
}

impl FrameSink for EveryFrameRouter {
    fn push(&mut self, frame: EncodedFrame) {
        self.camera.record_frame(frame.is_keyframe, frame.received_at);
        if self.awaiting_keyframe && !frame.is_keyframe {
            self.camera.record_skip(SkipReason::AwaitingKeyframe);
            return;
        }
        // A keyframe after a gap tells the decoder to drop its state first.
        let after_gap = self.awaiting_keyframe;
        match self.frames.try_send((frame, after_gap)) {
            Ok(()) => self.awaiting_keyframe = false,
            Err(_) => {
                self.camera.record_skip(SkipReason::AwaitingKeyframe);
                self.awaiting_keyframe = true;
            }
        }
    }
}

/// When a camera's next keyframe is expected: the last one plus the gap before it.
#[derive(Default)]
struct KeyframeSpacing {
    last: Option<Instant>,
    spacing: Option<Duration>,
}

impl KeyframeSpacing {
    fn record(&mut self, at: Instant) {
        if let Some(last) = self.last {
            self.spacing = Some(at.saturating_duration_since(last));
        }
        self.last = Some(at);
    }
}

fn every_frame_worker(
    frames: &Receiver<(EncodedFrame, bool)>,
    camera: &Arc<CameraHealth>,
    scheduled: &Scheduled,
    (rotated_pass, model): (bool, ModelRule),
    input_sizes: InputSizes,
) {
    let _span = tracing::info_span!("camera", camera = %camera.id).entered();
    let mut decoder: Option<Decoder> = None;
    let mut letterboxers = Letterboxers::new(input_sizes);
    let mut keyframes = KeyframeSpacing::default();
    // Whether the decoder has every frame since the last keyframe.
    let mut synced = false;
    for (frame, after_gap) in frames {
        let started = Instant::now();
        if frame.is_keyframe {
            keyframes.record(frame.received_at);
        }
        // Only the frames up to the camera's next due one: the rest of a GOP, or a whole GOP
        // while a fall-watch camera idles, is skipped; decoding resumes at a keyframe.
        let needed = scheduled.scheduler.needs_decoding(&camera.id, frame.received_at, frame.is_keyframe, &keyframes);
        if !needed || !(frame.is_keyframe || synced) {
            synced = false;
            continue;
        }
        let key = DecoderKey { codec: frame.codec, extradata: frame.extradata.clone() };
        if decoder.as_ref().is_none_or(|d| *d.key() != key) {
            decoder = Decoder::open(key)
                .map_err(|error| {
                    if let Some(suppressed) = camera.allow_log("decoder_open") {
                        warn!(error = format!("{error:#}"), suppressed, "cannot open decoder");
                    }
                })
                .ok();
        }
        let Some(decoder) = decoder.as_mut() else {
            camera.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if after_gap || !synced {
            decoder.reset();
        }
        synced = true;
        match decoder.decode_next(&frame.data) {
            Ok(Some(picture)) => {
                camera.counters.frames_decoded.fetch_add(1, Ordering::Relaxed);
                // Only frames the scheduler would take are letterboxed.
                if scheduled.scheduler.is_due(&camera.id, frame.received_at) {
                    let prepared = prepare(rotated_pass, model, &mut letterboxers, &picture, camera, &frame, started);
                    if let Some(prepared) = prepared {
                        let waiting =
                            Waiting { camera: camera.clone(), rotated_pass, model, job: Job::Prepared(prepared) };
                        scheduled.scheduler.offer(waiting, frame.received_at);
                    }
                }
            }
            Ok(None) => {}
            Err(error) => {
                debug!(error = format!("{error:#}"), "frame did not decode");
                camera.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod poison_tests {
    use super::*;

    #[test]
    fn a_thread_that_panics_holding_the_scheduler_does_not_stop_the_others() {
        let scheduler = Arc::new(FrameScheduler::new());
        let holder = scheduler.clone();
        let panicked = std::thread::spawn(move || {
            let _state = holder.state.lock().unwrap();
            panic!("a decoder panicked while holding the scheduler");
        })
        .join();
        assert!(panicked.is_err());
        assert!(scheduler.state.is_poisoned());
        // Every use still works.
        scheduler.rotate();
        assert_eq!(scheduler.stats().waiting, 0);
        scheduler.close();
        assert!(scheduler.next().is_none());
    }
}
