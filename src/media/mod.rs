//! Media: what ingest hands to decode — compressed access units ([`EncodedFrame`]) and the
//! [`FrameSink`] they go through — and the FFmpeg set-up both sides share (initialisation,
//! out-of-band codec configuration). Owning them here keeps `ingest` and `decode` apart:
//! neither imports the other.
//!
//! Architecture invariant: no decoding, no I/O; types and FFmpeg's process-wide set-up only.

// FFmpeg's C API where ffmpeg-next has no safe wrapper: the one module where `unsafe` is
// allowed (Cargo.toml denies it everywhere else); each block carries a SAFETY note.
#[allow(unsafe_code)]
mod ffi;

use std::sync::{Arc, Once};
use std::time::Instant;

pub use ffi::extradata_of;
pub(crate) use ffi::{set_extradata, set_stream_video_parameters, SendScaler};

/// Initialises FFmpeg once per process and quiets its logging to errors.
pub fn init_ffmpeg() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        ffmpeg_next::init().expect("FFmpeg initialisation failed");
        ffmpeg_next::util::log::set_level(ffmpeg_next::util::log::Level::Error);
    });
}

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
