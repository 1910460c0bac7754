//! Ingest: one supervised task per camera that turns a source (an RTSP camera or a footage
//! file) into [`EncodedFrame`]s, and never gives up: on any failure the camera is reported
//! offline with the reason and retried after a jittered exponential backoff, until shutdown.
//! One broken camera never affects another: each has its own task, session and backoff.
//!
//! Architecture invariant: ingest does not decode. It hands compressed access units
//! ([`crate::media`]'s types, re-exported here) to the [`crate::decode`] stage through a
//! [`FrameSink`] that never blocks.

pub mod file;
pub mod relay;
pub mod rtsp;

use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::Rng;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn, Instrument};

use crate::backoff::Backoff;
use crate::config::{CameraConfig, IngestConfig, SourceSpec};
use crate::health::{CameraErrorKind, CameraHealth, CameraState};
pub use crate::media::{EncodedFrame, FrameSink, VideoCodec};

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
        // Started on the first attempt and kept for the camera's life (see `relay`).
        let mut relay: Option<relay::Relay> = None;
        info!(source = %camera.source.describe(), "camera starting");
        loop {
            // A retry stays "offline" with the last failure's reason until video flows: flipping
            // to "connecting" and back on every attempt republished the retained status twice
            // per attempt and hid the reason half of the time.
            if health.state() != CameraState::Offline {
                health.set_state(CameraState::Connecting, None);
            }
            let started = Instant::now();
            let result = match &camera.source {
                SourceSpec::Rtsp { url, credentials, transport } => {
                    let target = rtsp::RtspTarget { url, credentials: credentials.as_ref(), transport: *transport };
                    let attempt = rtsp::stream_relayed(&target, &ingest, &session_group, &mut relay, &health, sink.as_mut());
                    tokio::select! {
                        result = catch_panic(attempt) => result,
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
            let kind = classify_failure(&error);
            let delay = backoff.next_delay(rand::rng().random::<f64>());
            health.record_reconnect();
            health.record_error(kind);
            let reason = health.set_offline(describe_failure(&error));
            if let Some(suppressed) = health.allow_log(kind.as_str()) {
                warn!(kind = kind.as_str(), reason = %reason, retry_in_ms = delay.as_millis() as u64, attempt = backoff.attempt(), suppressed, "camera offline");
            }
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

/// A camera's attempt panicked (a bug, in the gateway or a library it uses on the camera's
/// data). The attempt's error: the camera is shown offline with it and retried with backoff
/// like any failure, and the other cameras are not touched.
#[derive(Debug)]
pub struct Panicked(pub String);

impl std::fmt::Display for Panicked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "panicked (a bug; restarted with backoff): {}", self.0)
    }
}

impl std::error::Error for Panicked {}

impl Panicked {
    /// From a caught panic's payload.
    pub fn from_payload(payload: &(dyn std::any::Any + Send)) -> Self {
        let message = payload
            .downcast_ref::<&str>()
            .map(|text| (*text).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "non-text panic payload".to_string());
        Panicked(message)
    }
}

/// Runs one attempt, turning a panic into its error. Unwind safety: after a panic the
/// attempt's session is dropped and the sink is only pushed to again (a sink's state is a
/// slot in the scheduler, replaced by the next frame).
pub async fn catch_panic(attempt: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    use futures::FutureExt;
    match std::panic::AssertUnwindSafe(attempt).catch_unwind().await {
        Ok(result) => result,
        Err(payload) => Err(Panicked::from_payload(payload.as_ref()).into()),
    }
}

/// A one-line reason for ops, from an error chain: names the usual suspects plainly. The
/// whole chain, which may quote what the camera sent: it is capped where it is shown
/// ([`crate::health::cap_reason`], applied by [`CameraHealth::set_offline`]).
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

/// What kind of failure ended a session, for metrics and the log's rate limit.
pub fn classify_failure(error: &anyhow::Error) -> CameraErrorKind {
    for cause in error.chain() {
        if cause.is::<Panicked>() {
            return CameraErrorKind::Panic;
        }
        match cause.downcast_ref::<relay::RelayFailure>() {
            Some(relay::RelayFailure::Refused(_)) => return CameraErrorKind::ResponseRefused,
            Some(relay::RelayFailure::Connect(error)) if error.kind() == std::io::ErrorKind::TimedOut => {
                return CameraErrorKind::Timeout
            }
            Some(relay::RelayFailure::Connect(_)) => return CameraErrorKind::Connect,
            None => {}
        }
        if cause.is::<relay::Refusal>() {
            return CameraErrorKind::ResponseRefused;
        }
    }
    let chain = format!("{error:#}");
    // Only the start matters for the kind, and the chain may be long.
    let lower: String = chain.chars().take(4096).collect::<String>().to_ascii_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|needle| lower.contains(needle));
    if has(&["401", "unauthorized"]) {
        CameraErrorKind::Auth
    } else if has(&["no video frame", "no-frame timeout", "ended the session", "source ended"]) {
        CameraErrorKind::NoVideo
    } else if has(&["connection refused", "unreachable", "failed to lookup", "name or service", "connect to camera"]) {
        CameraErrorKind::Connect
    } else if has(&["timed out", "timeout", "deadline"]) {
        CameraErrorKind::Timeout
    } else if has(&["404", "not found"]) {
        CameraErrorKind::NotFound
    } else if has(&["rtsp", "describe", "setup", "play", "sdp", "h.264 or h.265"]) {
        CameraErrorKind::Protocol
    } else {
        CameraErrorKind::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_attempt_becomes_an_error_of_kind_panic() {
        let error = catch_panic(async { panic!("index out of bounds in the SDP") }).await.unwrap_err();
        assert_eq!(classify_failure(&error), CameraErrorKind::Panic);
        assert!(describe_failure(&error).contains("index out of bounds in the SDP"), "{error:#}");
        assert!(catch_panic(async { Ok(()) }).await.is_ok());
    }

    #[test]
    fn failures_are_classified_by_what_ended_them() {
        let refused = relay::RelayFailure::Refused(relay::Refusal::BodyTooLarge { content_length: 1 << 26 });
        // (error, kind)
        let table = [
            (anyhow::Error::new(refused).context("RTSP session"), CameraErrorKind::ResponseRefused),
            (
                anyhow::anyhow!("Connection refused (os error 111)").context("DESCRIBE rtsp://cam/"),
                CameraErrorKind::Connect,
            ),
            (anyhow::anyhow!("401 Unauthorized").context("DESCRIBE rtsp://cam/"), CameraErrorKind::Auth),
            (anyhow::anyhow!("no video frame for 10s (no-frame timeout)"), CameraErrorKind::NoVideo),
            (anyhow::anyhow!("connect to rtsp://cam/ timed out after 10s"), CameraErrorKind::Timeout),
            (anyhow::anyhow!("404 Not Found").context("DESCRIBE rtsp://cam/"), CameraErrorKind::NotFound),
            (anyhow::anyhow!("bad SDP").context("DESCRIBE rtsp://cam/"), CameraErrorKind::Protocol),
            (anyhow::anyhow!("disk on fire"), CameraErrorKind::Other),
        ];
        for (error, kind) in table {
            assert_eq!(classify_failure(&error), kind, "{error:#}");
        }
    }
}
