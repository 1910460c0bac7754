//! `gateway calibrate [--config FILE] [--model MANIFEST] [--frames N] [--json] FOOTAGE...`: the isolated cost of
//! one analysed frame on this machine — keyframe decode, preprocessing (swscale + letterbox)
//! and inference (with postprocessing) — measured on one thread over the footage's first
//! `N` keyframes, in CPU time of that thread (so a busy machine does not inflate it). What
//! the capacity benchmark compares the running gateway against. Each model in use is
//! measured: with `--config`, `[detector] model` and, when set, `wide_model` (cameras use one
//! or the other, `cameras.<id>.detector_model`); with `--model`, that manifest alone; else the
//! bundled one. With `--json`, one line per footage file and model:
//! `{"footage":…,"codec":"h264","width":1280,"height":720,"frames":50,"decode_ms":…,"preprocess_ms":…,"inference_ms":…,"total_ms":…,"model":"yolox_nano","model_input":"416x416","variant":"square"}`
//! (means over the frames; `model` is the manifest's name: which model was measured;
//! `variant` which key named it: `square` for `[detector] model` or `--model`, `wide` for
//! `[detector] wide_model`).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use serde::Serialize;

use super::EXIT_CONFIG;
use crate::decode::letterbox::VideoLetterboxer;
use crate::decode::{Decoder, DecoderKey};
use crate::detect::Detector;
use crate::ingest::file::{play, Pace};
use crate::media::{EncodedFrame, FrameSink, VideoCodec};

/// One footage file's figures.
#[derive(Debug, Serialize)]
struct Cost {
    footage: String,
    codec: &'static str,
    width: u32,
    height: u32,
    frames: usize,
    decode_ms: f64,
    preprocess_ms: f64,
    inference_ms: f64,
    total_ms: f64,
    /// The model variant measured (its manifest's `name`).
    model: String,
    /// Its input size, `WxH`.
    model_input: String,
    /// `square` (`[detector] model` or `--model`) or `wide` (`[detector] wide_model`).
    variant: &'static str,
}

/// Runs the subcommand: 0 on success, 64 for a bad config, 1 if a footage file fails.
pub fn main(config_path: Option<&Path>, model: Option<&Path>, frames: usize, json: bool, footage: &[PathBuf]) -> i32 {
    let Some(mut detectors) = super::detect::detectors_for(config_path, model) else {
        return EXIT_CONFIG;
    };
    let mut failed = false;
    for path in footage {
        for (variant, detector) in detectors.each_mut() {
            match measure(detector, path, frames.max(1)).map(|cost| Cost { variant: variant.as_str(), ..cost }) {
                Ok(cost) if json => println!("{}", serde_json::to_string(&cost).expect("serialisable")),
                Ok(cost) => println!(
                    "{}: {} {}×{}, {} keyframes, model {} ({}, {}): decode {:.2} ms + preprocess {:.2} ms + inference {:.2} ms = {:.2} ms CPU per analysed frame",
                    cost.footage, cost.codec, cost.width, cost.height, cost.frames, cost.model, cost.model_input, cost.variant, cost.decode_ms, cost.preprocess_ms, cost.inference_ms, cost.total_ms
                ),
                Err(error) => {
                    eprintln!("{}: {error:#}", path.display());
                    failed = true;
                }
            }
        }
    }
    i32::from(failed)
}

/// Collects keyframes from a footage file.
struct Keyframes {
    frames: Vec<EncodedFrame>,
    wanted: usize,
}

impl FrameSink for Keyframes {
    fn push(&mut self, frame: EncodedFrame) {
        if frame.is_keyframe && self.frames.len() < self.wanted {
            self.frames.push(frame);
        }
    }
}

fn measure(detector: &mut Detector, path: &Path, wanted: usize) -> anyhow::Result<Cost> {
    let mut keyframes = Keyframes { frames: Vec::with_capacity(wanted), wanted };
    // Reads the whole file (demuxing only; benchmark clips are short).
    play(path, Pace::AsFastAsPossible, None, &mut keyframes, &|| false)
        .with_context(|| format!("read {}", path.display()))?;
    let frames = keyframes.frames;
    let Some(first) = frames.first() else { bail!("no keyframe in the footage") };
    let (width, height) = detector.input_size();
    let mut letterboxer = VideoLetterboxer::new(width, height);
    let mut decoder = Decoder::open(DecoderKey { codec: first.codec, extradata: first.extradata.clone() })?;
    // One untimed round: page in the model's arena and the decoder's tables.
    let picture = decoder.decode_keyframe(&first.data)?;
    let mut tensor = Vec::new();
    let letterbox = letterboxer.run(&picture, &mut tensor)?;
    detector.detect(&tensor, &letterbox)?;
    let (mut decode, mut preprocess, mut inference) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let mut size = (0, 0);
    for frame in &frames {
        let clock = ThreadClock::start();
        let picture = decoder.decode_keyframe(&frame.data)?;
        decode += clock.lap();
        let letterbox = letterboxer.run(&picture, &mut tensor)?;
        preprocess += clock.lap();
        detector.detect(&tensor, &letterbox)?;
        inference += clock.lap();
        size = (picture.width(), picture.height());
    }
    let per_frame = |total: Duration| total.as_secs_f64() * 1e3 / frames.len() as f64;
    let round = |ms: f64| (ms * 1000.0).round() / 1000.0;
    let (decode_ms, preprocess_ms, inference_ms) = (per_frame(decode), per_frame(preprocess), per_frame(inference));
    Ok(Cost {
        footage: path.display().to_string(),
        codec: match first.codec {
            VideoCodec::H264 => "h264",
            VideoCodec::H265 => "h265",
        },
        width: size.0,
        height: size.1,
        frames: frames.len(),
        decode_ms: round(decode_ms),
        preprocess_ms: round(preprocess_ms),
        inference_ms: round(inference_ms),
        total_ms: round(decode_ms + preprocess_ms + inference_ms),
        model: detector.model().manifest.name.clone(),
        model_input: format!("{width}x{height}"),
        variant: "square",
    })
}

/// CPU time of the calling thread (Linux `/proc/thread-self/schedstat`), falling back to wall
/// time where that is not readable.
struct ThreadClock {
    last: std::cell::Cell<(Duration, Instant)>,
}

impl ThreadClock {
    fn start() -> Self {
        ThreadClock { last: std::cell::Cell::new((thread_cpu_time().unwrap_or_default(), Instant::now())) }
    }

    /// Time since the previous lap (or the start).
    fn lap(&self) -> Duration {
        let (cpu_before, wall_before) = self.last.get();
        let (cpu, wall) = (thread_cpu_time(), Instant::now());
        self.last.set((cpu.unwrap_or_default(), wall));
        match cpu {
            Some(cpu) => cpu.saturating_sub(cpu_before),
            None => wall - wall_before,
        }
    }
}

fn thread_cpu_time() -> Option<Duration> {
    let text = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let nanos: u64 = text.split_whitespace().next()?.parse().ok()?;
    Some(Duration::from_nanos(nanos))
}
