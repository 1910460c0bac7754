//! `gateway reference --config FILE --camera ID --output IMAGE [--from FOOTAGE] [--at-secs N]`:
//! captures a clean reference picture of a camera's view for its bin areas — from the camera
//! itself (its first keyframe), or from footage (the first keyframe at or after `--at-secs`).
//! Ops then set the bin zone's `reference` to the file. The picture is saved at full
//! resolution; the rule scales it to what it compares.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::Context;

use super::EXIT_CONFIG;
use crate::config::{self, SourceSpec};
use crate::ingest::file::{play, Pace};
use crate::ingest::{EncodedFrame, FrameSink};

/// Keeps the first keyframe at or after `from_ms`.
struct FirstKeyframe {
    from_ms: i64,
    found: Arc<Mutex<Option<EncodedFrame>>>,
    done: Arc<AtomicBool>,
}

impl FrameSink for FirstKeyframe {
    fn push(&mut self, frame: EncodedFrame) {
        if frame.is_keyframe && frame.media_time_ms >= self.from_ms && !self.done.load(Ordering::Relaxed) {
            *self.found.lock().unwrap() = Some(frame);
            self.done.store(true, Ordering::Relaxed);
        }
    }
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
    let found = Arc::new(Mutex::new(None));
    let done = Arc::new(AtomicBool::new(false));
    let mut sink = FirstKeyframe { from_ms: (at_secs * 1000.0) as i64, found: found.clone(), done: done.clone() };
    let captured = match (from, &camera.source) {
        (Some(footage), _) => play(footage, Pace::AsFastAsPossible, None, &mut sink, &|| done.load(Ordering::Relaxed)),
        (None, SourceSpec::File { path }) => {
            play(path, Pace::AsFastAsPossible, None, &mut sink, &|| done.load(Ordering::Relaxed))
        }
        (None, SourceSpec::Rtsp { url, credentials, transport }) => {
            capture_rtsp(&config.ingest, url, credentials.as_ref(), *transport, sink)
        }
    };
    let result = captured.and_then(|()| {
        let frame = found.lock().unwrap().take().context("no keyframe found (footage shorter than --at-secs?)")?;
        save(&frame, output)
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

fn capture_rtsp(
    ingest: &config::IngestConfig,
    url: &url::Url,
    credentials: Option<&config::RtspCredentials>,
    transport: config::RtspTransport,
    sink: FirstKeyframe,
) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let target = crate::ingest::rtsp::RtspTarget { url, credentials, transport };
    let frame = runtime.block_on(crate::ingest::rtsp::first_keyframe(&target, ingest))?;
    *sink.found.lock().unwrap() = Some(frame);
    Ok(())
}

fn save(frame: &EncodedFrame, output: &Path) -> anyhow::Result<()> {
    let image = crate::decode::picture_rgb(frame)?;
    image.save(output).with_context(|| format!("write {}", output.display()))
}
