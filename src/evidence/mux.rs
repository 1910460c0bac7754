//! Encoded packets → an MP4 file with FFmpeg's muxer, no re-encode: the camera's own H.264 or
//! H.265 stream, its codec configuration from the stream (the container's avcC/hvcC for
//! footage; for RTSP, the parameter sets that precede every keyframe, in Annex B, which the
//! MP4 muxer turns into avcC/hvcC and length-prefixed samples). `+faststart` puts the index
//! first, so a browser plays the clip while it loads.
//!
//! The codec parameters of a stream without an encoder need FFmpeg's C API: that part lives in
//! `media` (the one module allowed `unsafe`).

use std::path::Path;
use std::sync::Arc;

use anyhow::{ensure, Context};
use ffmpeg_next as ffmpeg;

use crate::ingest::{EncodedFrame, VideoCodec};

/// What was written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClipInfo {
    /// File size.
    pub bytes: u64,
    /// Packets written.
    pub packets: usize,
    /// From the first packet's presentation time to the last one's end, ms.
    pub duration_ms: i64,
}

/// Writes `packets` (the first a keyframe) to `path` as MP4, atomically (a temporary file
/// renamed), with the evidence files' private mode. Packets after a change of codec
/// configuration or a jump back in media time (a reconnect) are left out: the clip ends there.
pub fn write_mp4(path: &Path, packets: &[Arc<EncodedFrame>]) -> anyhow::Result<ClipInfo> {
    let first = packets.iter().position(|p| p.is_keyframe).context("no keyframe to start the clip at")?;
    let start = &packets[first];
    let mut run: Vec<&EncodedFrame> = vec![start];
    for packet in &packets[first + 1..] {
        let previous = run.last().expect("not empty");
        if packet.codec != start.codec
            || packet.extradata != start.extradata
            || packet.media_time_ms < previous.media_time_ms - 10_000
        {
            break;
        }
        // Leading pictures of an open-GOP keyframe (H.265 CRA: RASL pictures shown before it)
        // reference the GOP before the clip: they cannot be decoded, so they are left out.
        if packet.media_time_ms < start.media_time_ms {
            continue;
        }
        run.push(packet);
    }
    // Presentation times from the clip's start; a repeated time (a camera's clock) is nudged
    // so that every sample has its own.
    let mut pts_ms: Vec<i64> = Vec::with_capacity(run.len());
    for packet in &run {
        let mut pts = packet.media_time_ms - start.media_time_ms;
        if pts_ms.contains(&pts) {
            pts = pts_ms.iter().max().copied().unwrap_or(0) + 1;
        }
        pts_ms.push(pts);
    }
    let dts_ms = decode_times(&pts_ms);
    let extradata: Vec<u8> =
        if start.extradata.is_empty() { parameter_sets(start.codec, &start.data) } else { start.extradata.to_vec() };
    ensure!(!extradata.is_empty(), "the first keyframe carries no parameter sets");
    let (width, height) = picture_size(start)?;

    crate::media::init_ffmpeg();
    let temporary = path.with_extension("mp4.tmp");
    let directory = path.parent().context("clip path has no directory")?;
    super::create_private_dir(directory).with_context(|| format!("create {}", directory.display()))?;
    let written = mux(&temporary, start.codec, &extradata, (width, height), &run, &pts_ms, &dts_ms);
    if let Err(error) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(error);
    }
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&temporary, std::fs::Permissions::from_mode(super::PRIVATE_FILE_MODE))
            .with_context(|| format!("chmod {}", temporary.display()))?;
        std::fs::File::open(&temporary).and_then(|f| f.sync_all()).context("sync the clip")?;
    }
    std::fs::rename(&temporary, path).with_context(|| format!("rename to {}", path.display()))?;
    let bytes = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let frame_ms = pts_ms.windows(2).map(|w| w[1] - w[0]).filter(|gap| *gap > 0).min().unwrap_or(40);
    let duration_ms = pts_ms.iter().max().copied().unwrap_or(0) + frame_ms;
    Ok(ClipInfo { bytes, packets: run.len(), duration_ms })
}

/// Decode times for presentation times that may be reordered (B-frames): the sorted times,
/// shifted back by the largest reorder, so each is ≤ its packet's presentation time and they
/// increase. Without reordering they equal the presentation times.
pub fn decode_times(pts_ms: &[i64]) -> Vec<i64> {
    let mut sorted = pts_ms.to_vec();
    sorted.sort_unstable();
    let shift = sorted.iter().zip(pts_ms).map(|(dts, pts)| dts - pts).max().unwrap_or(0).max(0);
    sorted.iter().map(|dts| dts - shift).collect()
}

/// The parameter sets (H.264 SPS/PPS, H.265 VPS/SPS/PPS) of an Annex B access unit, in
/// Annex B: what the MP4 muxer turns into avcC/hvcC.
pub fn parameter_sets(codec: VideoCodec, annex_b: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    for nal in nal_units(annex_b) {
        let Some(&header) = nal.first() else { continue };
        let wanted = match codec {
            VideoCodec::H264 => matches!(header & 0x1f, 7 | 8),
            VideoCodec::H265 => matches!((header >> 1) & 0x3f, 32..=34),
        };
        if wanted {
            out.extend_from_slice(&[0, 0, 0, 1]);
            out.extend_from_slice(nal);
        }
    }
    out
}

/// The NAL units of an Annex B byte stream (without start codes).
fn nal_units(annex_b: &[u8]) -> Vec<&[u8]> {
    let mut starts = Vec::new();
    let mut index = 0;
    while index + 3 <= annex_b.len() {
        if annex_b[index..index + 3] == [0, 0, 1] {
            starts.push(index + 3);
            index += 3;
        } else {
            index += 1;
        }
    }
    starts
        .iter()
        .enumerate()
        .map(|(i, &begin)| {
            let mut end = starts.get(i + 1).map_or(annex_b.len(), |next| next - 3);
            // A 4-byte start code's leading zero (and trailing zero bytes) are not the unit's.
            while end > begin && annex_b[end - 1] == 0 {
                end -= 1;
            }
            &annex_b[begin..end]
        })
        .collect()
}

/// The keyframe's picture size (a decode of that one frame: the writer thread's time, once a
/// clip).
fn picture_size(keyframe: &EncodedFrame) -> anyhow::Result<(u32, u32)> {
    let mut decoder = crate::decode::Decoder::open(crate::decode::DecoderKey {
        codec: keyframe.codec,
        extradata: keyframe.extradata.clone(),
    })?;
    let picture = decoder.decode_keyframe(&keyframe.data).context("decode the clip's first keyframe")?;
    Ok((picture.width(), picture.height()))
}

fn mux(
    temporary: &Path,
    codec: VideoCodec,
    extradata: &[u8],
    (width, height): (u32, u32),
    packets: &[&EncodedFrame],
    pts_ms: &[i64],
    dts_ms: &[i64],
) -> anyhow::Result<()> {
    let mut output =
        ffmpeg::format::output_as(temporary, "mp4").with_context(|| format!("create {}", temporary.display()))?;
    {
        let mut stream = output.add_stream(None::<ffmpeg::Codec>).context("add the video stream")?;
        stream.set_time_base(ffmpeg::Rational(1, 1000));
        crate::media::set_stream_video_parameters(&mut stream, codec, (width, height), extradata)?;
    }
    let mut options = ffmpeg::Dictionary::new();
    options.set("movflags", "+faststart");
    output.write_header_with(options).context("write the MP4 header")?;
    let time_base = output.stream(0).context("the video stream")?.time_base();
    for (index, packet) in packets.iter().enumerate() {
        let mut out = ffmpeg::Packet::copy(&packet.data);
        out.set_stream(0);
        out.set_pts(Some(pts_ms[index]));
        out.set_dts(Some(dts_ms[index]));
        if packet.is_keyframe {
            out.set_flags(ffmpeg::packet::Flags::KEY);
        }
        out.rescale_ts(ffmpeg::Rational(1, 1000), time_base);
        out.write_interleaved(&mut output).with_context(|| format!("write packet {index}"))?;
    }
    output.write_trailer().context("write the MP4 index")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_times_increase_and_never_pass_presentation() {
        // (presentation times, decode times)
        let table: [(&[i64], &[i64]); 3] = [
            (&[0, 40, 80, 120], &[0, 40, 80, 120]),
            // I P B B (display order I B B P): P shown after the two B-frames.
            (&[0, 120, 40, 80], &[-40, 0, 40, 80]),
            (&[], &[]),
        ];
        for (pts, dts) in table {
            let got = decode_times(pts);
            assert_eq!(got, dts, "{pts:?}");
            assert!(got.iter().zip(pts).all(|(d, p)| d <= p));
            assert!(got.windows(2).all(|w| w[0] < w[1]));
        }
    }

    #[test]
    fn parameter_sets_are_picked_from_an_annex_b_keyframe() {
        // H.264: SPS (7), PPS (8), SEI (6), IDR slice (5); 4- and 3-byte start codes.
        let h264 = [&[0, 0, 0, 1, 0x67, 1, 2][..], &[0, 0, 1, 0x68, 3], &[0, 0, 1, 0x06, 9], &[0, 0, 0, 1, 0x65, 7, 7]]
            .concat();
        assert_eq!(parameter_sets(VideoCodec::H264, &h264), [0, 0, 0, 1, 0x67, 1, 2, 0, 0, 0, 1, 0x68, 3]);
        // H.265: VPS 32, SPS 33, PPS 34, IDR 19 (type << 1 in the first header byte).
        let nal = |kind: u8| vec![0u8, 0, 0, 1, kind << 1, 1, 0xAA];
        let h265 = [nal(32), nal(33), nal(34), nal(19)].concat();
        assert_eq!(parameter_sets(VideoCodec::H265, &h265), [nal(32), nal(33), nal(34)].concat());
        assert!(parameter_sets(VideoCodec::H264, &[]).is_empty());
    }
}
