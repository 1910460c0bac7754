//! Footage-file source: H.264/H.265 in MP4, MKV or Annex B, demuxed with FFmpeg. Live cameras
//! are played at the footage's own pace and looped (the demo, tuning zones on recorded
//! footage, tests); `replay` reads it once as fast as the CPU allows, footage time being the
//! clock either way.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use ffmpeg_next as ffmpeg;
use tokio_util::sync::CancellationToken;

use super::{EncodedFrame, FrameSink, VideoCodec};
use crate::health::CameraHealth;

/// How fast footage is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// At the footage's own pace, looping forever: a stand-in for a live camera.
    RealTime,
    /// Once, as fast as the consumer takes it: replay and evaluation.
    AsFastAsPossible,
}

/// Runs [`play`] on a blocking thread; gives the sink back for the next attempt.
pub async fn stream_blocking(
    path: PathBuf,
    pace: Pace,
    health: Arc<CameraHealth>,
    mut sink: Box<dyn FrameSink>,
    shutdown: CancellationToken,
) -> (anyhow::Result<()>, Box<dyn FrameSink>) {
    let joined = tokio::task::spawn_blocking(move || {
        // A panic (in FFmpeg's wrapper, say, on a broken file) is this attempt's error: the
        // sink stays here, so the supervisor can retry with it.
        let played = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            play(&path, pace, Some(&health), sink.as_mut(), &|| shutdown.is_cancelled())
        }));
        let result = played.unwrap_or_else(|payload| Err(super::Panicked::from_payload(payload.as_ref()).into()));
        (result, sink)
    })
    .await;
    match joined {
        Ok(done) => done,
        // Panics are caught above; a blocking task is only cancelled when the runtime shuts
        // down, and then nobody awaits this.
        Err(error) => unreachable!("footage reader cancelled: {error}"),
    }
}

/// Plays `path` into `sink` until it ends (`AsFastAsPossible`), fails, or `stop()` is true.
pub fn play(
    path: &Path,
    pace: Pace,
    health: Option<&CameraHealth>,
    sink: &mut dyn FrameSink,
    stop: &dyn Fn() -> bool,
) -> anyhow::Result<()> {
    crate::media::init_ffmpeg();
    let mut input = ffmpeg::format::input(path).with_context(|| format!("open footage {}", path.display()))?;
    let stream = input
        .streams()
        .best(ffmpeg::media::Type::Video)
        .with_context(|| format!("{} has no video stream", path.display()))?;
    let stream_index = stream.index();
    let time_base = stream.time_base();
    let parameters = stream.parameters();
    let codec = match parameters.id() {
        ffmpeg::codec::Id::H264 => VideoCodec::H264,
        ffmpeg::codec::Id::HEVC => VideoCodec::H265,
        other => bail!("{}: unsupported codec {other:?}; expected H.264 or H.265", path.display()),
    };
    let extradata: Arc<[u8]> = Arc::from(crate::media::extradata_of(&parameters));
    let frame_rate = stream.avg_frame_rate();
    let frame_duration_ms = if frame_rate.numerator() > 0 && frame_rate.denominator() > 0 {
        1000.0 * f64::from(frame_rate.denominator()) / f64::from(frame_rate.numerator())
    } else {
        40.0
    };
    // A broken container can declare a zero (or negative) time base: its timestamps then mean
    // nothing, and dividing by it gave infinite times (a panic in `Duration::from_secs_f64`).
    // Such footage is timed by frame count instead, like raw Annex B.
    let time_base_valid = time_base.numerator() > 0 && time_base.denominator() > 0;
    let to_ms = |timestamp: i64| -> Option<f64> {
        let ms = timestamp as f64 * f64::from(time_base.numerator()) * 1000.0 / f64::from(time_base.denominator());
        (time_base_valid && ms.is_finite()).then_some(ms)
    };

    let started = Instant::now();
    let mut loop_offset_ms = 0.0_f64;
    let mut first_ms: Option<f64> = None;
    let mut last_ms = 0.0_f64;
    let mut index_in_loop = 0_u64;
    loop {
        let mut packets_this_loop = 0_u64;
        for (packet_stream, packet) in input.packets() {
            if stop() {
                return Ok(());
            }
            if packet_stream.index() != stream_index {
                continue;
            }
            let Some(data) = packet.data() else { continue };
            // Raw Annex B files carry no timestamps; count frames instead.
            let in_loop_ms =
                packet.pts().or(packet.dts()).and_then(to_ms).unwrap_or(index_in_loop as f64 * frame_duration_ms);
            index_in_loop += 1;
            packets_this_loop += 1;
            let first = *first_ms.get_or_insert(in_loop_ms);
            let media_ms = loop_offset_ms + (in_loop_ms - first);
            last_ms = last_ms.max(media_ms);
            if pace == Pace::RealTime {
                // `try_from`: never a panic on a time no clock can reach.
                let offset = Duration::try_from_secs_f64(media_ms.max(0.0) / 1000.0).unwrap_or(Duration::MAX);
                let Some(due) = started.checked_add(offset) else {
                    bail!("footage time {media_ms} ms is out of range")
                };
                while let Some(wait) = due.checked_duration_since(Instant::now()) {
                    if stop() {
                        return Ok(());
                    }
                    std::thread::sleep(wait.min(Duration::from_millis(100)));
                }
            }
            if let Some(health) = health {
                health.mark_streaming();
            }
            sink.push(EncodedFrame {
                codec,
                extradata: extradata.clone(),
                data: data.to_vec(),
                is_keyframe: packet.is_key(),
                media_time_ms: media_ms.round() as i64,
                received_at: Instant::now(),
            });
        }
        if pace == Pace::AsFastAsPossible {
            return Ok(());
        }
        if packets_this_loop == 0 {
            bail!("{}: no video packets", path.display());
        }
        // Next loop continues the timeline one frame after the last one.
        loop_offset_ms = last_ms + frame_duration_ms;
        first_ms = None;
        index_in_loop = 0;
        // Reopen rather than seek: raw Annex B demuxers do not all seek.
        input = ffmpeg::format::input(path).with_context(|| format!("reopen footage {}", path.display()))?;
    }
}

/// Bytes FFmpeg may read to find a footage file's streams when config is checked.
const PROBE_BYTES: &str = "2000000";
/// Footage time, in µs, FFmpeg may analyse to find them.
const PROBE_MICROS: &str = "2000000";

/// Checks that `path` is footage [`play`] can read: FFmpeg opens it, it has a video stream and
/// that stream is H.264 or H.265. Bounded: a regular file only (no device or FIFO) and at
/// most [`PROBE_BYTES`] read (issue 11: a `file:` URL to a text file passed check-config and
/// the camera failed only once running).
pub fn probe(path: &Path) -> anyhow::Result<()> {
    let metadata = std::fs::metadata(path).with_context(|| format!("cannot read {}", path.display()))?;
    anyhow::ensure!(metadata.is_file(), "{} is not a regular file", path.display());
    crate::media::init_ffmpeg();
    let mut options = ffmpeg::Dictionary::new();
    options.set("probesize", PROBE_BYTES);
    options.set("analyzeduration", PROBE_MICROS);
    options.set("protocol_whitelist", "file");
    let input = ffmpeg::format::input_with_dictionary(path, options)
        .map_err(|error| anyhow::anyhow!("FFmpeg cannot open it as video ({error})"))?;
    let stream = input.streams().best(ffmpeg::media::Type::Video).context("it has no video stream")?;
    match stream.parameters().id() {
        ffmpeg::codec::Id::H264 | ffmpeg::codec::Id::HEVC => Ok(()),
        other => bail!("its video is {other:?}; expected H.264 or H.265"),
    }
}
