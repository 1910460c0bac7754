//! Out-of-band codec configuration (avcC/hvcC) in and out of FFmpeg's structures: read from
//! a demuxed stream's parameters (footage files), written into a decoder context.

use ffmpeg_next as ffmpeg;

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
