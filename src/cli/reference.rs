//! `gateway reference --config FILE --camera ID --output IMAGE [--from FOOTAGE] [--at-secs N]`:
//! captures a clean reference picture of a camera's view for its bin areas — from the camera
//! itself (its first keyframe), or from footage (the first keyframe at or after `--at-secs`).
//! Ops then set the bin zone's `reference` to the file. The picture is saved at full
//! resolution; the rule scales it to what it compares.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::Context;

use super::EXIT_CONFIG;
use crate::config::{self, SourceSpec};
use crate::ingest::file::{play, Pace};
use crate::media::{EncodedFrame, FrameSink};

/// Keeps the first keyframe at or after `from_ms`, then asks the reader to stop.
struct FirstKeyframe<'a> {
    from_ms: i64,
    found: Option<EncodedFrame>,
    done: &'a AtomicBool,
}

impl FrameSink for FirstKeyframe<'_> {
    fn push(&mut self, frame: EncodedFrame) {
        if frame.is_keyframe && frame.media_time_ms >= self.from_ms && self.found.is_none() {
            self.found = Some(frame);
            self.done.store(true, Ordering::Relaxed);
        }
    }
}

/// The first keyframe of a footage file at or after `from_ms`.
fn first_keyframe_in(path: &Path, from_ms: i64) -> anyhow::Result<EncodedFrame> {
    let done = AtomicBool::new(false);
    let mut sink = FirstKeyframe { from_ms, found: None, done: &done };
    play(path, Pace::AsFastAsPossible, None, &mut sink, &|| done.load(Ordering::Relaxed))?;
    sink.found.context("no keyframe found (footage shorter than --at-secs?)")
}

/// Runs the subcommand.
pub fn main(config_path: &Path, camera_id: &str, output: &Path, from: Option<&Path>, at_secs: f64) -> i32 {
    let config = match config::load(config_path) {
        Ok(config) => config,
        Err(problems) => {
            super::print_problems(config_path, &problems);
            return EXIT_CONFIG;
        }
    };
    let Some(camera) = config.cameras.iter().find(|c| c.id.as_str() == camera_id) else {
        eprintln!("--camera: no enabled camera {camera_id:?} in {}", config_path.display());
        return EXIT_CONFIG;
    };
    let from_ms = (at_secs * 1000.0) as i64;
    let frame = match (from, &camera.source) {
        (Some(footage), _) => first_keyframe_in(footage, from_ms),
        (None, SourceSpec::File { path }) => first_keyframe_in(path, from_ms),
        (None, SourceSpec::Rtsp { url, credentials, transport }) => {
            let target =
                crate::ingest::rtsp::RtspTarget { url, credentials: credentials.as_ref(), transport: *transport };
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .context("tokio runtime")
                .and_then(|runtime| runtime.block_on(crate::ingest::rtsp::first_keyframe(&target, &config.ingest)))
        }
    };
    let result = frame.and_then(|frame| {
        let image = crate::decode::picture_rgb(&frame)?;
        image.save(output).with_context(|| format!("write {}", output.display()))
    });
    match result {
        Ok(()) => {
            println!(
                "{}: reference for camera {camera_id} written; set `reference = {:?}` on its bin_area zones",
                output.display(),
                output.display().to_string()
            );
            0
        }
        Err(error) => {
            eprintln!("{error:#}");
            1
        }
    }
}
