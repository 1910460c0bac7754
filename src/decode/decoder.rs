//! A thin, safe wrapper over an FFmpeg video decoder: open for a codec (and optional
//! out-of-band configuration), decode one self-contained keyframe, or decode a stream.

use std::sync::Arc;

use anyhow::{bail, Context};
use ffmpeg_next as ffmpeg;

use crate::media::{set_extradata, VideoCodec};

/// What a decoder was opened for; a pool worker reopens only when this changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecoderKey {
    /// Codec.
    pub codec: VideoCodec,
    /// Out-of-band configuration (avcC/hvcC), empty for in-band Annex B.
    pub extradata: Arc<[u8]>,
}

/// One FFmpeg decoder, single-threaded: parallelism comes from the pool, not from FFmpeg's
/// own threads (frame threads would add a frame of delay and a copy of state per thread).
pub struct Decoder {
    key: DecoderKey,
    inner: ffmpeg::decoder::Video,
}

impl Decoder {
    /// Opens a decoder for `key`.
    pub fn open(key: DecoderKey) -> anyhow::Result<Self> {
        crate::media::init_ffmpeg();
        let id = match key.codec {
            VideoCodec::H264 => ffmpeg::codec::Id::H264,
            VideoCodec::H265 => ffmpeg::codec::Id::HEVC,
        };
        let codec = ffmpeg::decoder::find(id).with_context(|| format!("FFmpeg has no {id:?} decoder"))?;
        let mut context = ffmpeg::codec::context::Context::new_with_codec(codec);
        if !key.extradata.is_empty() {
            set_extradata(&mut context, &key.extradata);
        }
        context.set_threading(ffmpeg::threading::Config {
            kind: ffmpeg::threading::Type::None,
            count: 1,
            ..Default::default()
        });
        let inner = context.decoder().video().with_context(|| format!("open {id:?} decoder"))?;
        Ok(Decoder { key, inner })
    }

    /// What this decoder was opened for.
    pub fn key(&self) -> &DecoderKey {
        &self.key
    }

    /// Decodes one keyframe that carries its own parameter sets (or whose configuration is in
    /// the key), leaving the decoder clean for an unrelated keyframe from another camera.
    pub fn decode_keyframe(&mut self, data: &[u8]) -> anyhow::Result<ffmpeg::frame::Video> {
        let result = self.decode_keyframe_inner(data);
        // Draining leaves the decoder at end of stream; flushing resets it for the next job,
        // and drops anything half-done after an error.
        self.inner.flush();
        result
    }

    fn decode_keyframe_inner(&mut self, data: &[u8]) -> anyhow::Result<ffmpeg::frame::Video> {
        let packet = ffmpeg::Packet::copy(data);
        self.inner.send_packet(&packet).context("send keyframe to decoder")?;
        self.inner.send_eof().context("drain decoder")?;
        let mut frame = ffmpeg::frame::Video::empty();
        match self.inner.receive_frame(&mut frame) {
            Ok(()) => Ok(frame),
            Err(error) => bail!("keyframe produced no picture: {error}"),
        }
    }

    /// Decodes the next frame of a stream (every-frame mode): `Ok(None)` while the decoder
    /// needs more input.
    pub fn decode_next(&mut self, data: &[u8]) -> anyhow::Result<Option<ffmpeg::frame::Video>> {
        let packet = ffmpeg::Packet::copy(data);
        self.inner.send_packet(&packet).context("send frame to decoder")?;
        let mut frame = ffmpeg::frame::Video::empty();
        match self.inner.receive_frame(&mut frame) {
            Ok(()) => Ok(Some(frame)),
            Err(ffmpeg::Error::Other { errno }) if errno == ffmpeg::util::error::EAGAIN => Ok(None),
            Err(error) => bail!("decode failed: {error}"),
        }
    }

    /// Drops all decoder state (after a gap in the stream).
    pub fn reset(&mut self) {
        self.inner.flush();
    }
}
