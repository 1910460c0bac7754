//! The gateway's only `unsafe` code: FFmpeg's C API where ffmpeg-next has no safe wrapper.
//! Out-of-band codec configuration (avcC/hvcC) in and out of FFmpeg's structures (read from
//! a demuxed stream's parameters, written into a decoder context or a muxer's stream), and a
//! `Send` swscale context. Each block carries a SAFETY note.

use ffmpeg_next as ffmpeg;

use super::VideoCodec;

/// Copies out-of-band codec configuration into a context before it is opened.
pub(crate) fn set_extradata(context: &mut ffmpeg::codec::context::Context, extradata: &[u8]) {
    // SAFETY: the context is not open yet; FFmpeg owns and frees `extradata`, which must be
    // allocated with av_malloc and padded with AV_INPUT_BUFFER_PADDING_SIZE zero bytes.
    unsafe {
        let raw = context.as_mut_ptr();
        let padded = extradata.len() + ffmpeg::ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
        let buffer = ffmpeg::ffi::av_mallocz(padded) as *mut u8;
        assert!(!buffer.is_null(), "av_mallocz({padded}) failed");
        std::ptr::copy_nonoverlapping(extradata.as_ptr(), buffer, extradata.len());
        (*raw).extradata = buffer;
        (*raw).extradata_size = extradata.len() as i32;
    }
}

/// The out-of-band configuration of a demuxed stream (empty if none).
pub fn extradata_of(parameters: &ffmpeg::codec::Parameters) -> Vec<u8> {
    // SAFETY: reads the parameters' own buffer, which lives as long as `parameters`.
    unsafe {
        let raw = parameters.as_ptr();
        if (*raw).extradata.is_null() || (*raw).extradata_size <= 0 {
            Vec::new()
        } else {
            std::slice::from_raw_parts((*raw).extradata, (*raw).extradata_size as usize).to_vec()
        }
    }
}

/// Fills the codec parameters of a muxer's freshly added video stream (no encoder: the
/// packets are copied as they came): codec, size and out-of-band configuration. H.265 is
/// tagged `hvc1` (parameter sets in the sample entry), which browsers and QuickTime accept;
/// FFmpeg's default `hev1` is not. Call before the header is written.
pub(crate) fn set_stream_video_parameters(
    stream: &mut ffmpeg::format::stream::StreamMut<'_>,
    codec: VideoCodec,
    (width, height): (u32, u32),
    extradata: &[u8],
) -> anyhow::Result<()> {
    // SAFETY: the stream was just created and the header is not written yet, so its codec
    // parameters are ours to fill; `extradata` is allocated with av_mallocz, padded as
    // FFmpeg requires, and freed by FFmpeg with the parameters.
    unsafe {
        let parameters = (*stream.as_mut_ptr()).codecpar;
        (*parameters).codec_type = ffmpeg::ffi::AVMediaType::AVMEDIA_TYPE_VIDEO;
        (*parameters).codec_id = match codec {
            VideoCodec::H264 => ffmpeg::ffi::AVCodecID::AV_CODEC_ID_H264,
            VideoCodec::H265 => ffmpeg::ffi::AVCodecID::AV_CODEC_ID_HEVC,
        };
        (*parameters).width = width as i32;
        (*parameters).height = height as i32;
        let padded = extradata.len() + ffmpeg::ffi::AV_INPUT_BUFFER_PADDING_SIZE as usize;
        let buffer = ffmpeg::ffi::av_mallocz(padded) as *mut u8;
        anyhow::ensure!(!buffer.is_null(), "av_mallocz({padded}) failed");
        std::ptr::copy_nonoverlapping(extradata.as_ptr(), buffer, extradata.len());
        (*parameters).extradata = buffer;
        (*parameters).extradata_size = extradata.len() as i32;
        if codec == VideoCodec::H265 {
            (*parameters).codec_tag = u32::from_le_bytes(*b"hvc1");
        }
    }
    Ok(())
}

/// A swscale context that may move between threads (ffmpeg-next's is not `Send`).
pub(crate) struct SendScaler(pub(crate) ffmpeg::software::scaling::Context);

// SAFETY: the swscale context is owned exclusively and used by one thread at a time; FFmpeg's
// scaler has no thread affinity.
unsafe impl Send for SendScaler {}
