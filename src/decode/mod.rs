//! Decode: compressed access units → the detector's input tensor.
//!
//! By default only the keyframes a camera's analysis interval needs are decoded, on a small
//! **shared** pool of decoders: with parameter sets in front of every keyframe, any keyframe
//! decodes on its own, so 600 cameras need a handful of decoders rather than 600 (600
//! persistent decoders held 3.3 GB in a trial). Cameras that must be sampled faster than
//! their GOP (`decode = "every_frame"`) get a dedicated decoder thread instead.
//!
//! Channel policies (where the rate changes):
//! - keyframes to the pool: bounded; when full the keyframe is skipped and counted
//!   (`skipped_decoder_busy`), the next due keyframe is tried;
//! - every-frame cameras: bounded; when full, frames are dropped **up to the next keyframe**
//!   (a P-frame without its references is useless) and counted;
//! - prepared frames to the detector: bounded; when full the frame is skipped and counted
//!   (`skipped_detector_busy`).
//!
//! Architecture invariant: nothing here blocks an ingest task, and nothing here knows about
//! the model beyond its input size.

mod decoder;
pub mod letterbox;

use std::sync::atomic::Ordering;
use std::sync::{Arc, Once};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tracing::{debug, warn};

pub use decoder::{extradata_of, Decoder, DecoderKey};
use letterbox::{Letterbox, VideoLetterboxer};

use crate::config::{CameraConfig, DecodeMode};
use crate::health::{CameraHealth, SkipReason};
use crate::ingest::{EncodedFrame, FrameSink};

/// Initialises FFmpeg once per process and quiets its logging to errors.
pub fn init_ffmpeg() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        ffmpeg_next::init().expect("FFmpeg initialisation failed");
        ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Error);
    });
}

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
    /// Also detect on the picture rotated ±90° (fall-watch cameras that ask for it).
    pub rotated_pass: bool,
}

/// Decides which frames are analysed: one per interval of footage time, on average exactly.
/// Pure.
///
/// Frames are taken on a fixed schedule (`next_due` advances by the interval), and a frame
/// up to 10% of the interval early still counts: that absorbs keyframe jitter (a 2 s GOP with
/// a 2 s interval analyses every keyframe, not every other one) without letting the rate drift.
#[derive(Debug, Clone)]
pub struct Sampler {
    interval_ms: i64,
    slack_ms: i64,
    next_due_ms: Option<i64>,
    last_taken_ms: Option<i64>,
}

impl Sampler {
    /// A sampler for one frame per `interval`.
    pub fn new(interval: Duration) -> Self {
        let interval_ms = interval.as_millis() as i64;
        Sampler { interval_ms, slack_ms: interval_ms / 10, next_due_ms: None, last_taken_ms: None }
    }

    /// Whether a frame at `media_time_ms` should be analysed.
    pub fn is_due(&self, media_time_ms: i64) -> bool {
        match (self.next_due_ms, self.last_taken_ms) {
            (None, _) | (_, None) => true,
            // Time went backwards: a new session restarted the timeline.
            (_, Some(last)) if media_time_ms < last => true,
            (Some(next_due), _) => media_time_ms >= next_due - self.slack_ms,
        }
    }

    /// Records that the frame at `media_time_ms` was taken.
    pub fn mark_taken(&mut self, media_time_ms: i64) {
        self.next_due_ms = Some(match (self.next_due_ms, self.last_taken_ms) {
            (Some(next_due), Some(last)) if media_time_ms >= last && media_time_ms < next_due + self.interval_ms => {
                next_due + self.interval_ms
            }
            // Behind schedule (a gap in the stream) or a new timeline: restart the schedule here.
            _ => media_time_ms + self.interval_ms,
        });
        self.last_taken_ms = Some(media_time_ms);
    }
}

struct KeyframeJob {
    camera: Arc<CameraHealth>,
    frame: EncodedFrame,
    rotated_pass: bool,
}

/// The shared keyframe decoder pool.
pub struct DecodePool {
    jobs: Option<Sender<KeyframeJob>>,
    threads: Vec<JoinHandle<()>>,
    prepared: Sender<PreparedFrame>,
    input_size: (u32, u32),
}

impl DecodePool {
    /// Starts `workers` decoder threads feeding `prepared`, for a model input of `input_size`.
    pub fn start(
        workers: usize,
        queue_capacity: usize,
        input_size: (u32, u32),
        prepared: Sender<PreparedFrame>,
    ) -> Self {
        init_ffmpeg();
        let (jobs, receiver) = crossbeam_channel::bounded::<KeyframeJob>(queue_capacity);
        let threads = (0..workers)
            .map(|index| {
                let receiver = receiver.clone();
                let prepared = prepared.clone();
                std::thread::Builder::new()
                    .name(format!("decode-{index}"))
                    .spawn(move || keyframe_worker(receiver, prepared, input_size))
                    .expect("spawn decoder thread")
            })
            .collect();
        DecodePool { jobs: Some(jobs), threads, prepared, input_size }
    }

    /// The sink a camera's ingest task pushes into.
    pub fn sink_for(&self, camera: &CameraConfig, health: Arc<CameraHealth>) -> Box<dyn FrameSink> {
        let sampler = Sampler::new(camera.analysis_interval);
        let rotated_pass = camera.rotated_pass();
        match camera.decode_mode {
            DecodeMode::Keyframes => Box::new(KeyframeRouter {
                jobs: self.jobs.clone().expect("pool is running"),
                camera: health,
                sampler,
                rotated_pass,
            }),
            DecodeMode::EveryFrame => {
                Box::new(EveryFrameRouter::start(health, sampler, rotated_pass, self.prepared.clone(), self.input_size))
            }
        }
    }

    /// Keyframes waiting for a decoder.
    pub fn queue_depth(&self) -> usize {
        self.jobs.as_ref().map_or(0, Sender::len)
    }

    /// Prepared frames waiting for a detector session.
    pub fn detector_queue_depth(&self) -> usize {
        self.prepared.len()
    }

    /// Stops accepting work and waits for the workers once every camera's sink is gone.
    pub fn shutdown(mut self) {
        self.jobs = None;
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Keyframe mode: due keyframes go to the shared pool.
struct KeyframeRouter {
    jobs: Sender<KeyframeJob>,
    camera: Arc<CameraHealth>,
    sampler: Sampler,
    rotated_pass: bool,
}

impl FrameSink for KeyframeRouter {
    fn push(&mut self, frame: EncodedFrame) {
        self.camera.record_frame(frame.is_keyframe, frame.received_at);
        if !frame.is_keyframe || !self.sampler.is_due(frame.media_time_ms) {
            return;
        }
        let media_time_ms = frame.media_time_ms;
        match self.jobs.try_send(KeyframeJob { camera: self.camera.clone(), frame, rotated_pass: self.rotated_pass }) {
            Ok(()) => self.sampler.mark_taken(media_time_ms),
            Err(TrySendError::Full(_)) => {
                self.camera.record_skip(SkipReason::DecoderBusy);
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

fn keyframe_worker(jobs: Receiver<KeyframeJob>, prepared: Sender<PreparedFrame>, input_size: (u32, u32)) {
    let mut decoder: Option<Decoder> = None;
    let mut letterboxer = VideoLetterboxer::new(input_size.0, input_size.1);
    for job in jobs {
        let _span = tracing::debug_span!("camera", camera = %job.camera.id).entered();
        let started = Instant::now();
        let key = DecoderKey { codec: job.frame.codec, extradata: job.frame.extradata.clone() };
        if decoder.as_ref().is_none_or(|d| *d.key() != key) {
            decoder = match Decoder::open(key) {
                Ok(opened) => Some(opened),
                Err(error) => {
                    warn!(error = format!("{error:#}"), "cannot open decoder");
                    job.camera.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            };
        }
        let decoded = decoder.as_mut().expect("opened above").decode_keyframe(&job.frame.data);
        let picture = match decoded {
            Ok(picture) => picture,
            Err(error) => {
                debug!(error = format!("{error:#}"), "keyframe did not decode");
                job.camera.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        job.camera.counters.frames_decoded.fetch_add(1, Ordering::Relaxed);
        offer_prepared(job.rotated_pass, &prepared, &mut letterboxer, &picture, &job.camera, &job.frame, started);
    }
}

/// Letterboxes a decoded picture and offers it to the detector queue (skip when full).
#[allow(clippy::too_many_arguments)]
fn offer_prepared(
    rotated_pass: bool,
    prepared: &Sender<PreparedFrame>,
    letterboxer: &mut VideoLetterboxer,
    picture: &ffmpeg_next::frame::Video,
    camera: &Arc<CameraHealth>,
    frame: &EncodedFrame,
    started: Instant,
) {
    let mut tensor = Vec::new();
    let letterbox = match letterboxer.run(picture, &mut tensor) {
        Ok(letterbox) => letterbox,
        Err(error) => {
            warn!(error = format!("{error:#}"), "preprocessing failed");
            camera.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    let picture = Arc::new(letterboxer.scaled_picture());
    let decode_time = started.elapsed();
    camera.counters.decode_us_total.fetch_add(decode_time.as_micros() as u64, Ordering::Relaxed);
    let frame = PreparedFrame {
        camera: camera.clone(),
        media_time_ms: frame.media_time_ms,
        received_at: frame.received_at,
        letterbox,
        tensor,
        decode_time,
        picture,
        rotated_pass,
    };
    if let Err(TrySendError::Full(_)) = prepared.try_send(frame) {
        camera.record_skip(SkipReason::DetectorBusy);
    }
}

/// Frames queued for one every-frame camera's decoder before frames are dropped.
const EVERY_FRAME_QUEUE: usize = 64;

/// Every-frame mode: all frames go to a decoder thread dedicated to the camera.
struct EveryFrameRouter {
    frames: Sender<(EncodedFrame, bool)>,
    camera: Arc<CameraHealth>,
    awaiting_keyframe: bool,
}

impl EveryFrameRouter {
    fn start(
        camera: Arc<CameraHealth>,
        sampler: Sampler,
        rotated_pass: bool,
        prepared: Sender<PreparedFrame>,
        input_size: (u32, u32),
    ) -> Self {
        let (frames, receiver) = crossbeam_channel::bounded(EVERY_FRAME_QUEUE);
        let worker_camera = camera.clone();
        std::thread::Builder::new()
            .name(format!("decode-{}", camera.id))
            .spawn(move || every_frame_worker(receiver, worker_camera, sampler, rotated_pass, prepared, input_size))
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

fn every_frame_worker(
    frames: Receiver<(EncodedFrame, bool)>,
    camera: Arc<CameraHealth>,
    mut sampler: Sampler,
    rotated_pass: bool,
    prepared: Sender<PreparedFrame>,
    input_size: (u32, u32),
) {
    let _span = tracing::info_span!("camera", camera = %camera.id).entered();
    let mut decoder: Option<Decoder> = None;
    let mut letterboxer = VideoLetterboxer::new(input_size.0, input_size.1);
    for (frame, after_gap) in frames {
        let started = Instant::now();
        let key = DecoderKey { codec: frame.codec, extradata: frame.extradata.clone() };
        if decoder.as_ref().is_none_or(|d| *d.key() != key) {
            decoder =
                Decoder::open(key).map_err(|error| warn!(error = format!("{error:#}"), "cannot open decoder")).ok();
        }
        let Some(decoder) = decoder.as_mut() else {
            camera.counters.decode_errors.fetch_add(1, Ordering::Relaxed);
            continue;
        };
        if after_gap {
            decoder.reset();
        }
        match decoder.decode_next(&frame.data) {
            Ok(Some(picture)) => {
                camera.counters.frames_decoded.fetch_add(1, Ordering::Relaxed);
                if sampler.is_due(frame.media_time_ms) {
                    sampler.mark_taken(frame.media_time_ms);
                    offer_prepared(rotated_pass, &prepared, &mut letterboxer, &picture, &camera, &frame, started);
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
mod tests {
    use super::*;

    #[test]
    fn sampler_takes_one_frame_per_interval_on_a_fixed_schedule() {
        // (media time ms, due?) for a 2000 ms interval; frames marked taken when due.
        let table = [
            (0, true),
            (1000, false),
            (1850, true), // 150 ms early: within the 10% slack; next due stays at 4000
            (3000, false),
            (3850, true), // no drift: still due at 4000 − 200
            (9000, true), // after a gap the schedule restarts from here
            (10_900, true),
            (12_000, false),
            (100, true), // a new session restarted the timeline
        ];
        let mut sampler = Sampler::new(Duration::from_millis(2000));
        for (time_ms, expected) in table {
            let due = sampler.is_due(time_ms);
            assert_eq!(due, expected, "at {time_ms} ms");
            if due {
                sampler.mark_taken(time_ms);
            }
        }
    }

    #[test]
    fn every_frame_sampling_keeps_the_average_rate() {
        // 10 fps, frames at 0..=59.9 s, 1 s interval: the slots at 0, 1, …, 60 s (the last one
        // taken 100 ms early, within its slack) = 61 frames. Slack that drifted gave 67.
        let mut sampler = Sampler::new(Duration::from_millis(1000));
        let taken = (0..600)
            .map(|frame| frame * 100)
            .filter(|&t| {
                let due = sampler.is_due(t);
                if due {
                    sampler.mark_taken(t);
                }
                due
            })
            .count();
        assert_eq!(taken, 61);
    }
}
