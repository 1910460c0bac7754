//! RTSP source on `retina`: DESCRIBE/SETUP/PLAY with a connect timeout, then demuxed video
//! frames until the session fails or goes quiet. Returns only with an error; the supervisor in
//! [`super`] reports it and retries.
//!
//! Choices, and why:
//! - TCP interleaved transport by default: cameras behind NAT and lossy links keep working.
//! - Frames are asked for in Annex B with parameter sets before every keyframe
//!   (`FrameFormat::SIMPLE`), so any keyframe decodes on its own on the shared decoder pool.
//! - `InitialSequenceNumberPolicy::Ignore` and a permissive initial timestamp: some cameras'
//!   `RTP-Info` disagrees with their first packet, which was seen as spurious out-of-order
//!   errors on about 1% of sessions under the default policy.
//! - A no-frame timeout (retina has none): a session that delivers no *video* for
//!   `ingest.no_frame_timeout_ms` is torn down, even if RTCP keeps flowing.
//! - Every byte the camera sends on a TCP session passes a bounded relay (`super::relay`):
//!   `retina` has no size limit on RTSP messages, and a camera's 50 MB answer was buffered whole.
//! - Stale sessions: after a failure the camera may still hold our previous session (many
//!   cameras allow few sessions); the per-camera `SessionGroup` lets us wait them out first.

use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use futures::StreamExt;
use retina::client::{
    InitialSequenceNumberPolicy, InitialTimestampPolicy, PlayOptions, SessionGroup, SessionOptions, SetupOptions,
    TcpTransportOptions, TeardownPolicy, Transport, UdpTransportOptions,
};
use retina::codec::{CodecItem, FrameFormat};
use tracing::{debug, info};

use super::relay::Relay;
use super::{EncodedFrame, FrameSink, VideoCodec};
use crate::config::{IngestConfig, RtspCredentials, RtspTransport};
use crate::health::CameraHealth;

/// What to connect to.
pub struct RtspTarget<'a> {
    /// URL without credentials.
    pub url: &'a url::Url,
    /// Optional credentials (Basic or Digest, as the camera asks).
    pub credentials: Option<&'a RtspCredentials>,
    /// RTP transport.
    pub transport: RtspTransport,
}

/// Streams one RTSP session into `sink` until it fails, through the camera's bounded relay
/// ([`super::relay`]; started on first use and kept in `relay` for the camera's life) when
/// the transport is TCP.
pub async fn stream_relayed(
    target: &RtspTarget<'_>,
    ingest: &IngestConfig,
    session_group: &Arc<SessionGroup>,
    relay: &mut Option<Relay>,
    health: &CameraHealth,
    sink: &mut dyn FrameSink,
) -> anyhow::Result<()> {
    if target.transport == RtspTransport::Tcp && relay.is_none() {
        *relay = Some(Relay::start(target.url, ingest.connect_timeout).await.context("start the bounded RTSP relay")?);
    }
    stream(target, ingest, session_group, relay.as_ref(), health, sink).await
}

/// Streams one RTSP session into `sink` until it fails; through `relay` if given.
pub async fn stream(
    target: &RtspTarget<'_>,
    ingest: &IngestConfig,
    session_group: &Arc<SessionGroup>,
    relay: Option<&Relay>,
    health: &CameraHealth,
    sink: &mut dyn FrameSink,
) -> anyhow::Result<()> {
    // A failure left from an earlier session (or its TEARDOWN) is not this session's.
    let _ = relay.and_then(Relay::take_failure);
    let result = stream_session(target, ingest, session_group, relay, health, sink).await;
    match (result, relay.and_then(Relay::take_failure)) {
        // What `retina` saw was the relay cutting the connection: say why it was cut.
        (Err(_), Some(failure)) => {
            Err(anyhow::Error::new(failure).context(format!("RTSP session with {}", target.url)))
        }
        (result, _) => result,
    }
}

async fn stream_session(
    target: &RtspTarget<'_>,
    ingest: &IngestConfig,
    session_group: &Arc<SessionGroup>,
    relay: Option<&Relay>,
    health: &CameraHealth,
    sink: &mut dyn FrameSink,
) -> anyhow::Result<()> {
    let stale = session_group.stale_sessions();
    if stale.num_sessions > 0 {
        if let Some(suppressed) = health.allow_log("stale_sessions") {
            info!(sessions = stale.num_sessions, suppressed, "waiting out stale sessions before reconnecting");
        }
        session_group.await_stale_sessions(&stale).await;
    }
    let (mut session, codec) = tokio::time::timeout(ingest.connect_timeout, connect(target, relay, session_group))
        .await
        .with_context(|| format!("connect to {} timed out after {:?}", target.url, ingest.connect_timeout))??;
    if let Some(suppressed) = health.allow_log("streaming") {
        info!(url = %target.url, codec = ?codec, suppressed, "streaming");
    }

    let mut last_video = tokio::time::Instant::now();
    loop {
        let item = tokio::time::timeout_at(last_video + ingest.no_frame_timeout, session.next())
            .await
            .map_err(|_| anyhow::anyhow!("no video frame for {:?} (no-frame timeout)", ingest.no_frame_timeout))?;
        let item = match item {
            None => bail!("server ended the session"),
            Some(item) => item.context("RTSP session failed")?,
        };
        let CodecItem::VideoFrame(frame) = item else {
            continue;
        };
        last_video = tokio::time::Instant::now();
        health.mark_streaming();
        if frame.loss() > 0 {
            debug!(lost_packets = frame.loss(), "RTP packet loss before this frame");
        }
        let timestamp = frame.timestamp();
        let media_time_ms = timestamp.elapsed() * 1000 / i64::from(timestamp.clock_rate().get());
        // retina flags H.265 IDR pictures only; open-GOP encoders start GOPs with CRA pictures.
        let is_keyframe = frame.is_random_access_point() || (codec == VideoCodec::H265 && h265_has_irap(frame.data()));
        sink.push(EncodedFrame {
            codec,
            extradata: Arc::from(&[][..]),
            data: frame.into_data(),
            is_keyframe,
            media_time_ms,
            received_at: Instant::now(),
        });
    }
}

/// Whether an H.265 access unit (Annex B) holds an IRAP picture (BLA, IDR or CRA: NAL unit
/// types 16–23), which decodes without earlier pictures. Looks at NAL headers up to the first
/// slice only (parameter sets and SEI come first), not through the slice data: this runs on
/// every frame of every H.265 camera, and a full scan showed in the profile.
pub fn h265_has_irap(annex_b: &[u8]) -> bool {
    let mut rest = annex_b;
    while let Some(start) = rest.windows(3).position(|w| w == [0, 0, 1]) {
        rest = &rest[start + 3..];
        let Some(&header) = rest.first() else { return false };
        let kind = (header >> 1) & 0x3f;
        if kind < 32 {
            // The first slice (VCL NAL unit) tells the picture's type.
            return (16..=23).contains(&kind);
        }
    }
    false
}

/// DESCRIBE, SETUP of the first H.264/H.265 video stream, PLAY.
async fn connect(
    target: &RtspTarget<'_>,
    relay: Option<&Relay>,
    session_group: &Arc<SessionGroup>,
) -> anyhow::Result<(retina::client::Demuxed, VideoCodec)> {
    let credentials = target.credentials.map(|credentials| retina::client::Credentials {
        username: credentials.username.clone(),
        password: credentials.password.expose().to_string(),
    });
    let options = SessionOptions::default()
        .creds(credentials)
        .user_agent(format!("street-gateway/{}", env!("CARGO_PKG_VERSION")))
        .session_group(session_group.clone())
        .teardown(TeardownPolicy::Auto);
    let url = relay.map_or_else(|| target.url.clone(), |relay| relay.url_for(target.url));
    let mut session =
        retina::client::Session::describe(url, options).await.with_context(|| format!("DESCRIBE {}", target.url))?;
    let (stream_index, codec) = session
        .streams()
        .iter()
        .enumerate()
        .find_map(|(index, stream)| match (stream.media(), stream.encoding_name()) {
            ("video", "h264") => Some((index, VideoCodec::H264)),
            ("video", "h265") => Some((index, VideoCodec::H265)),
            _ => None,
        })
        .with_context(|| {
            let offered: Vec<String> =
                session.streams().iter().map(|s| format!("{}/{}", s.media(), s.encoding_name())).collect();
            format!("no H.264 or H.265 video stream offered (streams: {})", offered.join(", "))
        })?;
    let transport = match target.transport {
        RtspTransport::Tcp => Transport::Tcp(TcpTransportOptions::default()),
        RtspTransport::Udp => Transport::Udp(UdpTransportOptions::default()),
    };
    session
        .setup(stream_index, SetupOptions::default().transport(transport).frame_format(FrameFormat::SIMPLE))
        .await
        .context("SETUP")?;
    let playing = session
        .play(
            PlayOptions::default()
                .initial_seq(InitialSequenceNumberPolicy::Ignore)
                .initial_timestamp(InitialTimestampPolicy::Permissive),
        )
        .await
        .context("PLAY")?
        .demuxed()
        .context("demuxing")?;
    Ok((playing, codec))
}

/// Connects, waits for the first keyframe, and disconnects: for main-stream snapshots and
/// reference captures. Bounded by `connect_timeout + no_frame_timeout`.
pub async fn first_keyframe(target: &RtspTarget<'_>, ingest: &IngestConfig) -> anyhow::Result<EncodedFrame> {
    struct First(Option<tokio::sync::oneshot::Sender<EncodedFrame>>);
    impl FrameSink for First {
        fn push(&mut self, frame: EncodedFrame) {
            if frame.is_keyframe {
                if let Some(sender) = self.0.take() {
                    let _ = sender.send(frame);
                }
            }
        }
    }
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let mut sink = First(Some(sender));
    let group = Arc::new(SessionGroup::default());
    let health = crate::health::HealthRegistry::default()
        .camera(&crate::config::CameraId::try_new("snapshot").expect("valid id"));
    let limit = ingest.connect_timeout + ingest.no_frame_timeout;
    let mut relay = None;
    let streaming = stream_relayed(target, ingest, &group, &mut relay, &health, &mut sink);
    tokio::select! {
        result = streaming => Err(result.err().unwrap_or_else(|| anyhow::anyhow!("session ended"))),
        frame = receiver => frame.context("no keyframe"),
        () = tokio::time::sleep(limit) => bail!("no keyframe from {} within {limit:?}", target.url),
    }
}

#[cfg(test)]
mod tests {
    use super::h265_has_irap;
    use proptest::prelude::*;

    /// One NAL unit: its type, the layer id's high bit (in the first header byte, must be
    /// ignored), a 4-byte start code or a 3-byte one, and payload bytes that cannot form a
    /// start code (real streams guarantee that with emulation prevention).
    fn nal_unit(kinds: std::ops::RangeInclusive<u8>) -> impl Strategy<Value = (u8, Vec<u8>)> {
        (kinds, any::<bool>(), any::<bool>(), 1u8..=7, proptest::collection::vec(1u8..=255, 0..40)).prop_map(
            |(kind, layer_high, long_start, temporal_id_plus_1, payload)| {
                let mut bytes = if long_start { vec![0, 0, 0, 1] } else { vec![0, 0, 1] };
                bytes.push(kind << 1 | u8::from(layer_high));
                bytes.push(temporal_id_plus_1);
                bytes.extend(payload);
                (kind, bytes)
            },
        )
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
            let _ = h265_has_irap(&bytes);
        }

        #[test]
        fn an_access_unit_is_irap_exactly_when_its_first_slice_is_bla_idr_or_cra(
            parameter_sets in proptest::collection::vec(nal_unit(32..=63), 0..6),
            first_slice in nal_unit(0..=31),
            later in proptest::collection::vec(nal_unit(0..=63), 0..6),
        ) {
            let mut access_unit: Vec<u8> = parameter_sets.iter().flat_map(|(_, bytes)| bytes.clone()).collect();
            access_unit.extend(&first_slice.1);
            access_unit.extend(later.iter().flat_map(|(_, bytes)| bytes.clone()));
            prop_assert_eq!(h265_has_irap(&access_unit), (16..=23).contains(&first_slice.0));
            // Without any slice, nothing is a random access point.
            let only_parameter_sets: Vec<u8> = parameter_sets.iter().flat_map(|(_, bytes)| bytes.clone()).collect();
            prop_assert!(!h265_has_irap(&only_parameter_sets));
        }
    }

    #[test]
    fn finds_cra_and_idr_pictures_in_h265_access_units() {
        // NAL header byte = type << 1 (layer 0): VPS 32, CRA 21, IDR_W_RADL 19, TRAIL_R 1.
        let nal = |kind: u8| [0u8, 0, 0, 1, kind << 1, 1, 0xAA];
        let cra: Vec<u8> = [nal(32), nal(21)].concat();
        assert!(h265_has_irap(&cra));
        assert!(h265_has_irap(&nal(19)));
        assert!(!h265_has_irap(&[nal(32), nal(1)].concat()));
        assert!(!h265_has_irap(&[]));
    }
}
