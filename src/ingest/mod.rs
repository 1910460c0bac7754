//! Ingest: one supervised task per camera that turns a source (an RTSP camera or a footage
//! file) into [`EncodedFrame`]s, and never gives up: on any failure the camera is reported
//! offline with the reason and retried after a jittered exponential backoff, until shutdown.
//! One broken camera never affects another: each has its own task, session and backoff.
//!
//! Architecture invariant: ingest does not decode. It hands compressed access units to the
//! [`crate::decode`] stage through a [`FrameSink`] that never blocks.

pub mod backoff;
pub mod file;
pub mod rtsp;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::config::{CameraConfig, IngestConfig, SourceSpec};
use crate::health::{CameraHealth, CameraState};
use backoff::Backoff;

/// The video codecs the gateway ingests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum VideoCodec {
    /// H.264 / AVC.
    H264,
    /// H.265 / HEVC.
    H265,
}

/// One compressed access unit (a whole picture) from a camera.
#[derive(Debug, Clone)]
pub struct EncodedFrame {
    /// The codec of `data`.
    pub codec: VideoCodec,
    /// Out-of-band codec configuration (avcC/hvcC) when the container has it; empty when the
    /// parameter sets travel in-band (RTSP is asked for Annex B with parameter sets on every
    /// keyframe, so each keyframe decodes on its own).
    pub extradata: Arc<[u8]>,
    /// The access unit.
    pub data: Vec<u8>,
    /// A random access point (IDR/IRAP): decodable without earlier frames.
    pub is_keyframe: bool,
    /// Presentation time in ms since the source started; monotonic within one session and
    /// across loops of a footage file. The rules' clock.
    pub media_time_ms: i64,
    /// When the gateway received it.
    pub received_at: Instant,
}

/// Where a camera's frames go. Implemented by the decode stage; must never block.
pub trait FrameSink: Send {
    /// Takes one frame; returns quickly whatever happens downstream.
    fn push(&mut self, frame: EncodedFrame);
}

/// Sessions that stream video for at least this long count as healthy: the backoff resets.
const STABLE_SESSION: Duration = Duration::from_secs(30);

/// Runs one camera until `shutdown`: connect, stream, and on failure report and back off.
pub async fn supervise_camera(
    camera: CameraConfig,
    ingest: IngestConfig,
    health: Arc<CameraHealth>,
    mut sink: Box<dyn FrameSink>,
    shutdown: CancellationToken,
) {
    let span = tracing::info_span!("camera", camera = %camera.id);
    async move {
        let mut backoff = Backoff::new(ingest.reconnect_initial, ingest.reconnect_max);
        let session_group = Arc::new(retina::client::SessionGroup::default().named(camera.id.to_string()));
        info!(source = %camera.source.describe(), "camera starting");
        loop {
            health.set_state(CameraState::Connecting, None);
            let started = Instant::now();
            let result = match &camera.source {
                SourceSpec::Rtsp { url, credentials, transport } => {
                    let target = rtsp::RtspTarget { url, credentials: credentials.as_ref(), transport: *transport };
                    tokio::select! {
                        result = rtsp::stream(&target, &ingest, &session_group, &health, sink.as_mut()) => result,
                        () = shutdown.cancelled() => break,
                    }
                }
                SourceSpec::File { path } => {
                    let (result, returned_sink) =
                        file::stream_blocking(path.clone(), file::Pace::RealTime, health.clone(), sink, shutdown.clone()).await;
                    sink = returned_sink;
                    if shutdown.is_cancelled() {
                        break;
                    }
                    result
                }
            };
            let error = match result {
                Ok(()) => anyhow::anyhow!("source ended"),
                Err(error) => error,
            };
            if started.elapsed() >= STABLE_SESSION && health.frames_since(started) {
                backoff.reset();
            }
            let reason = describe_failure(&error);
            let delay = backoff.next_delay(rand::rng().random::<f64>());
            health.record_reconnect();
            health.set_state(CameraState::Offline, Some(reason.clone()));
            warn!(reason = %reason, error = format!("{error:#}"), retry_in_ms = delay.as_millis() as u64, attempt = backoff.attempt(), "camera offline");
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = shutdown.cancelled() => break,
            }
        }
        health.set_state(CameraState::Stopped, None);
        info!("camera stopped");
    }
    .instrument(span)
    .await
}

/// A one-line reason for ops, from an error chain: names the usual suspects plainly.
pub fn describe_failure(error: &anyhow::Error) -> String {
    let chain = format!("{error:#}");
    let lower = chain.to_ascii_lowercase();
    let hint = if lower.contains("401") || lower.contains("unauthorized") {
        Some("authentication failed (401 Unauthorized): check username and password")
    } else if lower.contains("connection refused") {
        Some("connection refused: camera unreachable or RTSP port closed")
    } else if lower.contains("timed out") || lower.contains("timeout") || lower.contains("deadline") {
        None
    } else if lower.contains("404") || lower.contains("not found") {
        Some("stream not found (404): check the URL path")
    } else {
        None
    };
    match hint {
        Some(hint) => format!("{hint} — {chain}"),
        None => chain,
    }
}
