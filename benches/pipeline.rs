//! Per-stage costs of the analysis path, on one thread:
//! keyframe decode (720p, 1080p; H.264 and H.265), preprocess (YUV → letterboxed BGR tensor),
//! inference (YOLOX-Nano, 1 intra-op thread), postprocess (box decode + NMS).
//!
//! Footage is made from the plaza clip in ../shared/media with ffmpeg, at camera-like
//! settings (25 fps, GOP 2 s, no B-frames; 2 Mbps at 720p, 4 Mbps at 1080p).
//! Run: `scripts/setup && ORT_DYLIB_PATH=$PWD/.cache/onnxruntime/1.31.1/libonnxruntime.so cargo bench --bench pipeline`

// criterion_group! defines an undocumented `pub fn`; the crate's lints ask for docs.
#![allow(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

use criterion::{criterion_group, criterion_main, Criterion};
use gateway::config::DetectorConfig;
use gateway::decode::letterbox::VideoLetterboxer;
use gateway::decode::{Decoder, DecoderKey};
use gateway::detect::Detector;
use gateway::ingest::file::{play, Pace};
use gateway::ingest::{EncodedFrame, FrameSink};

struct Collect(Vec<EncodedFrame>);

impl FrameSink for Collect {
    fn push(&mut self, frame: EncodedFrame) {
        self.0.push(frame);
    }
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Makes (once) a clip of the plaza footage at `height` lines and returns its first keyframe.
fn keyframe(height: u32, bitrate: &str, codec: &str) -> EncodedFrame {
    let directory = root().join("target/bench-footage");
    std::fs::create_dir_all(&directory).unwrap();
    let path = directory.join(format!("plaza_{height}p_{codec}.mkv"));
    if !path.is_file() {
        let source = root().join("../shared/media/vtest_plaza_768x576_10fps_gop20.mp4");
        let encoder: &[&str] = match codec {
            "h264" => &["-c:v", "libx264", "-preset", "veryfast", "-g", "50", "-bf", "0"],
            _ => &[
                "-c:v",
                "libx265",
                "-preset",
                "veryfast",
                "-x265-params",
                "keyint=50:min-keyint=50:bframes=0:log-level=error",
            ],
        };
        let status = Command::new("ffmpeg")
            .args(["-loglevel", "error", "-y", "-i"])
            .arg(&source)
            .args([
                "-t",
                "4",
                "-an",
                "-r",
                "25",
                "-vf",
                &format!("scale=-2:{height}"),
                "-b:v",
                bitrate,
                "-pix_fmt",
                "yuv420p",
            ])
            .args(encoder)
            .arg(&path)
            .status()
            .expect("ffmpeg");
        assert!(status.success());
    }
    let mut frames = Collect(Vec::new());
    play(Path::new(&path), Pace::AsFastAsPossible, None, &mut frames, &|| false).unwrap();
    frames.0.into_iter().find(|frame| frame.is_keyframe).expect("a keyframe")
}

fn stages(c: &mut Criterion) {
    let mut detector =
        Detector::load(&DetectorConfig::default_in(&root())).expect("detector (run scripts/setup, set ORT_DYLIB_PATH)");
    let (input_width, input_height) = detector.input_size();
    for (label, height, bitrate, codec) in
        [("720p_h264", 720, "2M", "h264"), ("1080p_h264", 1080, "4M", "h264"), ("720p_h265", 720, "2M", "h265")]
    {
        let frame = keyframe(height, bitrate, codec);
        let mut decoder = Decoder::open(DecoderKey { codec: frame.codec, extradata: frame.extradata.clone() }).unwrap();
        c.bench_function(&format!("keyframe_decode/{label}"), |b| {
            b.iter(|| decoder.decode_keyframe(&frame.data).unwrap())
        });
        let picture = decoder.decode_keyframe(&frame.data).unwrap();
        let mut letterboxer = VideoLetterboxer::new(input_width, input_height);
        let mut tensor = Vec::new();
        c.bench_function(&format!("preprocess/{label}"), |b| {
            b.iter(|| letterboxer.run(&picture, &mut tensor).unwrap())
        });
    }
    let frame = keyframe(720, "2M", "h264");
    let mut decoder = Decoder::open(DecoderKey { codec: frame.codec, extradata: frame.extradata.clone() }).unwrap();
    let picture = decoder.decode_keyframe(&frame.data).unwrap();
    let mut tensor = Vec::new();
    let letterbox = VideoLetterboxer::new(input_width, input_height).run(&picture, &mut tensor).unwrap();
    c.bench_function("inference/yolox_nano_416", |b| b.iter(|| detector.infer(&tensor).unwrap()));
    let rows = detector.infer(&tensor).unwrap();
    let detections = detector.postprocess(&rows, &letterbox);
    assert!(!detections.is_empty(), "the plaza keyframe should show people");
    c.bench_function("postprocess/decode_nms", |b| b.iter(|| detector.postprocess(&rows, &letterbox)));
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(4));
    targets = stages
}
criterion_main!(benches);
