//! Event clips by remux, no re-encode (issue 16): the gateway receives every encoded packet of
//! every camera anyway, so a clip costs a copy of bytes, not a decode.
//!
//! ```text
//! ingest task ──push──▶ ClipTap ──▶ decode sink (unchanged)
//!                          │ Arc copy of the packet
//!                          ▼
//!                   PacketRing (per camera: from the last keyframe before pre-roll to now,
//!                          │    at most the camera's share of the global cap)
//!   incident opened ──▶ Capture (pre-roll taken from the ring, post-roll added as it arrives)
//!                          │ complete (or the camera went quiet)
//!                          ▼
//!                   `clip-writer` thread ──▶ <evidence>/<incident>-1-clip.mp4 (mux::write_mp4)
//! ```
//!
//! Only cameras with a zone whose kind records clips (`[evidence.<kind>] clip`) keep a ring, of
//! their longest pre-roll plus [`ANALYSIS_SLACK`] (the time from a frame's arrival to its
//! incident).
//! Bounded everywhere: the rings by `[evidence] ring_memory_mib` shared out among the cameras
//! that keep one (never more than `ring_camera_share_kib` each; a camera whose pre-roll needs
//! more loses the oldest GOPs, counted), captures at [`MAX_CAPTURES`] at once, clips waiting
//! for the writer at [`WRITER_QUEUE`]. What is refused is counted in `/metrics` and logged once
//! a minute. Nothing here blocks an ingest task: a push takes one per-camera lock for
//! microseconds; the MP4 is written on the writer thread.
//!
//! [`PacketRing`] is the pure core (frames with their arrival times in, what it keeps out).

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::{info, warn};

use crate::config::evidence::EvidenceConfig;
use crate::config::{CameraConfig, CameraId};
use crate::ingest::{EncodedFrame, FrameSink};

/// Captures (clips being gathered) at once, all cameras together.
pub const MAX_CAPTURES: u64 = 16;
/// Finished captures waiting for the writer thread before more are refused.
pub const WRITER_QUEUE: usize = 8;
/// A capture whose camera sent nothing this long after its end is written with what it has.
pub const QUIET_GRACE: Duration = Duration::from_secs(5);
/// A capture goes on this long past its post-roll: with B-frames, frames arrive in decode
/// order, and the ones shown just before the post-roll's end come after a later keyframe
/// (x265's open GOPs at 5 fps: up to 0.8 s late); cut at the end itself, the clip lost them.
pub const REORDER_GRACE: Duration = Duration::from_secs(1);
/// A ring keeps this much more than the pre-roll: an incident opens a moment after the frame
/// that opened it arrived (decode, detection, the run loop), and its pre-roll counts back from
/// that frame, not from when the run loop got to it.
pub const ANALYSIS_SLACK: Duration = Duration::from_secs(2);

/// One camera's packets: from the last keyframe at or before `pre_roll` ago until the newest,
/// at most `share_bytes`. Pure: the time is each frame's arrival.
#[derive(Debug)]
pub struct PacketRing {
    packets: VecDeque<Arc<EncodedFrame>>,
    bytes: u64,
    pre_roll: Duration,
    share_bytes: u64,
    /// Bytes dropped before their pre-roll ended because the share was full.
    pub dropped_bytes: u64,
}

impl PacketRing {
    /// An empty ring keeping `pre_roll` (plus the GOP it starts in) within `share_bytes`.
    pub fn new(pre_roll: Duration, share_bytes: u64) -> Self {
        PacketRing { packets: VecDeque::new(), bytes: 0, pre_roll, share_bytes, dropped_bytes: 0 }
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Packets held.
    pub fn len(&self) -> usize {
        self.packets.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.packets.is_empty()
    }

    /// Changes the share (cameras were added or removed); trims at the next push.
    pub fn set_share(&mut self, share_bytes: u64) {
        self.share_bytes = share_bytes;
    }

    /// Adds a frame and drops what is no longer needed: whole GOPs that end before the
    /// pre-roll, then, over the share, the oldest GOPs (counted in `dropped_bytes`). A ring
    /// starts at a keyframe: frames before the first one are not kept.
    pub fn push(&mut self, frame: Arc<EncodedFrame>) {
        if self.packets.is_empty() && !frame.is_keyframe {
            return;
        }
        self.bytes += frame.data.len() as u64;
        let newest = frame.received_at;
        self.packets.push_back(frame);
        // The last keyframe at or before the pre-roll's start: everything before it goes.
        if let Some(cutoff) = newest.checked_sub(self.pre_roll) {
            let start = self.packets.iter().rposition(|p| p.is_keyframe && p.received_at <= cutoff).unwrap_or(0);
            self.drop_front(start, false);
        }
        while self.bytes > self.share_bytes {
            let next_keyframe = self.packets.iter().skip(1).position(|p| p.is_keyframe).map(|i| i + 1);
            self.drop_front(next_keyframe.unwrap_or(self.packets.len()), true);
        }
    }

    fn drop_front(&mut self, count: usize, counted: bool) {
        for packet in self.packets.drain(..count) {
            self.bytes -= packet.data.len() as u64;
            if counted {
                self.dropped_bytes += packet.data.len() as u64;
            }
        }
    }

    /// The packets from the last keyframe at or before `from` (or the oldest held, when the
    /// ring does not reach back that far) to the newest.
    pub fn since(&self, from: Instant) -> Vec<Arc<EncodedFrame>> {
        let start = self.packets.iter().rposition(|p| p.is_keyframe && p.received_at <= from).unwrap_or(0);
        self.packets.iter().skip(start).cloned().collect()
    }
}

/// A clip being gathered: the pre-roll taken from the ring, the post-roll added as it arrives.
struct Capture {
    path: PathBuf,
    incident_id: String,
    until: Instant,
    opened_at: Instant,
    packets: Vec<Arc<EncodedFrame>>,
}

/// One camera's ring and captures, behind one lock.
struct CameraClips {
    ring: PacketRing,
    captures: Vec<Capture>,
}

/// A finished capture on its way to the writer.
struct ClipJob {
    capture: Capture,
    camera: CameraId,
}

/// Counters for `/metrics`.
#[derive(Debug, Default)]
pub struct ClipStats {
    /// Clips written.
    pub written: AtomicU64,
    /// Bytes of clips written.
    pub written_bytes: AtomicU64,
    /// Clips that could not be written (no keyframe, mux or disk error).
    pub failed: AtomicU64,
    /// Clips refused: too many captures at once, or the writer's queue full.
    pub refused: AtomicU64,
    /// Captures in progress.
    pub capturing: AtomicU64,
    /// Sum of incident opened → clip on disk, ms.
    pub latency_ms_sum: AtomicU64,
    /// The longest incident opened → clip on disk, ms.
    pub latency_ms_max: AtomicU64,
    /// Last time a refusal was logged, ms since the epoch.
    last_refusal_log_ms: AtomicI64,
}

/// The rings of every camera that records clips, the captures and the writer thread.
pub struct ClipRecorder {
    config: EvidenceConfig,
    evidence_dir: PathBuf,
    cameras: Mutex<HashMap<CameraId, Arc<Mutex<CameraClips>>>>,
    /// The counters.
    pub stats: ClipStats,
    writer: crossbeam_channel::Sender<ClipJob>,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The clip file of an incident (the stem of its `opened` event, seq 1).
pub fn clip_path(state_dir: &Path, incident_id: &str) -> PathBuf {
    state_dir.join("evidence").join(clip_file_name(incident_id))
}

/// The clip's file name, as the sidecar lists it.
pub fn clip_file_name(incident_id: &str) -> String {
    format!("{}-1-clip.mp4", super::retention::sanitised(incident_id))
}

/// The pre-roll a camera's ring must keep: the longest of its clip-recording zones' kinds;
/// `None` when none of its zones records clips.
pub fn ring_pre_roll(config: &EvidenceConfig, camera: &CameraConfig) -> Option<Duration> {
    camera
        .zones
        .iter()
        .filter_map(|zone| config.for_zone(zone.kind))
        .filter(|kind| kind.clip)
        .map(|kind| Duration::from_millis(kind.pre_roll_ms))
        .max()
}

impl ClipRecorder {
    /// A recorder writing into `<state_dir>/evidence`, with its writer thread.
    pub fn start(config: EvidenceConfig, state_dir: &Path) -> Arc<Self> {
        let (writer, jobs) = crossbeam_channel::bounded::<ClipJob>(WRITER_QUEUE);
        let recorder = Arc::new(ClipRecorder {
            config,
            evidence_dir: state_dir.join("evidence"),
            cameras: Mutex::default(),
            stats: ClipStats::default(),
            writer,
        });
        let weak = Arc::downgrade(&recorder);
        std::thread::Builder::new()
            .name("clip-writer".to_string())
            .spawn(move || {
                for job in jobs {
                    let Some(recorder) = weak.upgrade() else { return };
                    recorder.write(job);
                }
            })
            .expect("spawn clip writer");
        recorder
    }

    /// Wraps a camera's sink so its packets also go to its ring, when one of its zones records
    /// clips; otherwise returns the sink as it is.
    pub fn tap(self: &Arc<Self>, camera: &CameraConfig, sink: Box<dyn FrameSink>) -> Box<dyn FrameSink> {
        let Some(pre_roll) = ring_pre_roll(&self.config, camera) else { return sink };
        let clips = Arc::new(Mutex::new(CameraClips {
            ring: PacketRing::new(pre_roll + ANALYSIS_SLACK, self.config.ring_camera_share_bytes),
            captures: Vec::new(),
        }));
        lock(&self.cameras).insert(camera.id.clone(), clips.clone());
        self.reshare();
        Box::new(ClipTap { inner: sink, clips, recorder: self.clone(), camera: camera.id.clone() })
    }

    /// Each ring's share: the configured share, or an equal part of the global cap when the
    /// cameras together would exceed it.
    pub fn share_bytes(&self) -> u64 {
        let cameras = lock(&self.cameras).len().max(1) as u64;
        self.config.ring_camera_share_bytes.min(self.config.ring_memory_bytes / cameras)
    }

    fn reshare(&self) {
        let share = self.share_bytes();
        for clips in lock(&self.cameras).values() {
            lock(clips).ring.set_share(share);
        }
    }

    /// Starts the clip of an incident that opened at `opened_at` (the arrival of the frame
    /// that opened it), if its kind records clips and its camera keeps a ring. Returns the
    /// clip's file name, which the sidecar lists. Takes the camera's lock briefly.
    pub fn start_capture(
        &self,
        camera: &CameraId,
        event: &crate::incident::IncidentEvent,
        opened_at: Instant,
    ) -> Option<String> {
        let policy = self.config.for_incident(event.kind);
        if !policy.clip {
            return None;
        }
        let clips = lock(&self.cameras).get(camera).cloned()?;
        if self.stats.capturing.load(Relaxed) >= MAX_CAPTURES {
            self.refused("too many clips are being recorded at once");
            return None;
        }
        let from = opened_at.checked_sub(Duration::from_millis(policy.pre_roll_ms)).unwrap_or(opened_at);
        let file_name = clip_file_name(&event.incident_id);
        let mut clips = lock(&clips);
        let packets = clips.ring.since(from);
        clips.captures.push(Capture {
            path: self.evidence_dir.join(&file_name),
            incident_id: event.incident_id.clone(),
            until: opened_at + Duration::from_millis(policy.post_roll_ms) + REORDER_GRACE,
            opened_at,
            packets,
        });
        self.stats.capturing.fetch_add(1, Relaxed);
        Some(file_name)
    }

    /// Hands captures whose camera went quiet past their end to the writer (the run loop
    /// calls this every second).
    pub fn tick(&self, now: Instant) {
        if self.stats.capturing.load(Relaxed) == 0 {
            return;
        }
        let cameras: Vec<(CameraId, Arc<Mutex<CameraClips>>)> =
            lock(&self.cameras).iter().map(|(id, clips)| (id.clone(), clips.clone())).collect();
        for (camera, clips) in cameras {
            let done = take_finished(&mut lock(&clips).captures, |capture| now > capture.until + QUIET_GRACE);
            for capture in done {
                self.finish(&camera, capture);
            }
        }
    }

    fn finish(&self, camera: &CameraId, capture: Capture) {
        self.stats.capturing.fetch_sub(1, Relaxed);
        if self.writer.try_send(ClipJob { capture, camera: camera.clone() }).is_err() {
            self.refused("the clip writer is behind");
        }
    }

    fn refused(&self, why: &str) {
        self.stats.refused.fetch_add(1, Relaxed);
        let now_ms = crate::console::wall_now_ms();
        let last = self.stats.last_refusal_log_ms.load(Relaxed);
        if now_ms - last >= 60_000
            && self.stats.last_refusal_log_ms.compare_exchange(last, now_ms, Relaxed, Relaxed).is_ok()
        {
            warn!(
                why,
                refused_total = self.stats.refused.load(Relaxed),
                "clip refused (counted in /metrics; logged once a minute)"
            );
        }
    }

    /// Writes one clip (on the writer thread).
    fn write(&self, job: ClipJob) {
        let ClipJob { capture, camera } = job;
        let started = Instant::now();
        let _span = tracing::info_span!("camera", camera = %camera).entered();
        let written = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            super::mux::write_mp4(&capture.path, &capture.packets)
        }))
        .unwrap_or_else(|payload| Err(crate::ingest::Panicked::from_payload(payload.as_ref()).into()));
        match written {
            Ok(clip) => {
                let latency_ms = capture.opened_at.elapsed().as_millis() as u64;
                self.stats.written.fetch_add(1, Relaxed);
                self.stats.written_bytes.fetch_add(clip.bytes, Relaxed);
                self.stats.latency_ms_sum.fetch_add(latency_ms, Relaxed);
                self.stats.latency_ms_max.fetch_max(latency_ms, Relaxed);
                info!(
                    incident_id = %capture.incident_id,
                    clip = %capture.path.display(),
                    bytes = clip.bytes,
                    duration_ms = clip.duration_ms,
                    packets = clip.packets,
                    opened_to_disk_ms = latency_ms,
                    write_ms = started.elapsed().as_millis() as u64,
                    "clip written"
                );
            }
            Err(error) => {
                self.stats.failed.fetch_add(1, Relaxed);
                warn!(incident_id = %capture.incident_id, error = format!("{error:#}"), "clip not written");
            }
        }
    }

    /// Bytes held by all rings now.
    pub fn ring_bytes(&self) -> u64 {
        lock(&self.cameras).values().map(|clips| lock(clips).ring.bytes()).sum()
    }

    /// The Prometheus text of the rings and clips.
    pub fn render(&self) -> String {
        let (cameras, ring_bytes, dropped): (u64, u64, u64) = {
            let all = lock(&self.cameras);
            let (bytes, dropped) = all.values().fold((0, 0), |(bytes, dropped), clips| {
                let clips = lock(clips);
                (bytes + clips.ring.bytes(), dropped + clips.ring.dropped_bytes)
            });
            (all.len() as u64, bytes, dropped)
        };
        let s = &self.stats;
        let written = s.written.load(Relaxed);
        let series = [
            ("gateway_clip_ring_cameras", "gauge", "Cameras keeping a packet ring for clips.", cameras),
            ("gateway_clip_ring_bytes", "gauge", "Bytes of encoded video held by all packet rings.", ring_bytes),
            (
                "gateway_clip_ring_limit_bytes",
                "gauge",
                "Cap of all packet rings together.",
                self.config.ring_memory_bytes,
            ),
            ("gateway_clip_ring_share_bytes", "gauge", "Cap of one camera's packet ring now.", self.share_bytes()),
            (
                "gateway_clip_ring_dropped_bytes_total",
                "counter",
                "Bytes dropped from packet rings before their pre-roll ended (share full).",
                dropped,
            ),
            ("gateway_clips_capturing", "gauge", "Clips being gathered now.", s.capturing.load(Relaxed)),
            ("gateway_clips_written_total", "counter", "Clips written.", written),
            ("gateway_clips_written_bytes_total", "counter", "Bytes of clips written.", s.written_bytes.load(Relaxed)),
            ("gateway_clips_failed_total", "counter", "Clips that could not be written.", s.failed.load(Relaxed)),
            (
                "gateway_clips_refused_total",
                "counter",
                "Clips refused: too many at once, or the writer behind.",
                s.refused.load(Relaxed),
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in series {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
        }
        let name = "gateway_clip_opened_to_disk_seconds";
        out.push_str(&format!(
            "# HELP {name} Incident opened to its clip on disk (post-roll included).\n# TYPE {name} summary\n\
             {name}_sum {}\n{name}_count {written}\n",
            s.latency_ms_sum.load(Relaxed) as f64 / 1000.0
        ));
        out
    }
}

/// Removes and returns the captures `done` says are finished.
fn take_finished(captures: &mut Vec<Capture>, done: impl Fn(&Capture) -> bool) -> Vec<Capture> {
    let mut finished = Vec::new();
    let mut index = 0;
    while index < captures.len() {
        if done(&captures[index]) {
            finished.push(captures.swap_remove(index));
        } else {
            index += 1;
        }
    }
    finished
}

/// A camera's sink with its packets copied into its ring on the way.
struct ClipTap {
    inner: Box<dyn FrameSink>,
    clips: Arc<Mutex<CameraClips>>,
    recorder: Arc<ClipRecorder>,
    camera: CameraId,
}

impl FrameSink for ClipTap {
    fn push(&mut self, frame: EncodedFrame) {
        let copy = Arc::new(frame.clone());
        let finished = {
            let mut clips = lock(&self.clips);
            clips.ring.push(copy.clone());
            let arrived = copy.received_at;
            let finished = take_finished(&mut clips.captures, |capture| arrived > capture.until);
            for capture in &mut clips.captures {
                capture.packets.push(copy.clone());
            }
            finished
        };
        for capture in finished {
            self.recorder.finish(&self.camera, capture);
        }
        self.inner.push(frame);
    }
}

impl Drop for ClipTap {
    fn drop(&mut self) {
        // The camera stopped: what was gathered is written, and its ring is forgotten (unless
        // a restarted camera's tap already took its place).
        let captures = std::mem::take(&mut lock(&self.clips).captures);
        for capture in captures {
            self.recorder.finish(&self.camera, capture);
        }
        {
            let mut cameras = lock(&self.recorder.cameras);
            if cameras.get(&self.camera).is_some_and(|clips| Arc::ptr_eq(clips, &self.clips)) {
                cameras.remove(&self.camera);
            }
        }
        self.recorder.reshare();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::VideoCodec;

    fn frame(epoch: Instant, at_ms: u64, keyframe: bool, bytes: usize) -> Arc<EncodedFrame> {
        Arc::new(EncodedFrame {
            codec: VideoCodec::H264,
            extradata: Arc::from(&[][..]),
            data: vec![0; bytes],
            is_keyframe: keyframe,
            media_time_ms: at_ms as i64,
            received_at: epoch + Duration::from_millis(at_ms),
        })
    }

    /// 10 fps, a keyframe every 2 s, 1000 bytes a frame.
    fn fill(ring: &mut PacketRing, epoch: Instant, until_ms: u64) {
        for at_ms in (0..=until_ms).step_by(100) {
            ring.push(frame(epoch, at_ms, at_ms % 2000 == 0, 1000));
        }
    }

    #[test]
    fn the_ring_keeps_the_gop_the_pre_roll_starts_in_and_nothing_older() {
        let epoch = Instant::now();
        let mut ring = PacketRing::new(Duration::from_secs(5), 1 << 20);
        ring.push(frame(epoch, 0, false, 1000));
        assert!(ring.is_empty(), "a ring starts at a keyframe");
        fill(&mut ring, epoch, 30_000);
        // Newest at 30.0 s; the pre-roll starts at 25.0 s; the keyframe before it is at 24 s.
        let first = ring.since(epoch);
        assert_eq!(first[0].media_time_ms, 24_000);
        assert!(first[0].is_keyframe);
        assert_eq!(ring.len(), 61);
        assert_eq!(ring.bytes(), 61_000);
        assert_eq!(ring.dropped_bytes, 0);
        // A capture from 27.5 s starts at the keyframe at 26 s.
        assert_eq!(ring.since(epoch + Duration::from_millis(27_500))[0].media_time_ms, 26_000);
    }

    #[test]
    fn over_its_share_the_ring_drops_whole_gops_and_counts_them() {
        let epoch = Instant::now();
        let mut ring = PacketRing::new(Duration::from_secs(10), 45_000);
        fill(&mut ring, epoch, 30_000);
        assert!(ring.bytes() <= 45_000, "{}", ring.bytes());
        let oldest = ring.since(epoch)[0].clone();
        assert!(oldest.is_keyframe, "the ring still starts at a keyframe");
        assert_eq!(oldest.media_time_ms, 26_000, "only the GOPs that fit");
        assert!(ring.dropped_bytes > 0);
        // A GOP larger than the whole share: nothing kept until the next keyframe.
        let mut tiny = PacketRing::new(Duration::from_secs(10), 5_000);
        fill(&mut tiny, epoch, 1_900);
        assert!(tiny.bytes() <= 5_000);
    }

    #[test]
    fn the_share_is_an_equal_part_of_the_cap_when_cameras_would_exceed_it() {
        let config = EvidenceConfig {
            ring_memory_bytes: 4 << 20,
            ring_camera_share_bytes: 2 << 20,
            ..EvidenceConfig::default()
        };
        let state = tempfile::tempdir().unwrap();
        let recorder = ClipRecorder::start(config, state.path());
        assert_eq!(recorder.share_bytes(), 2 << 20);
        let camera = |id: &str| {
            let text = format!(
                "[cameras.{id}]\nurl = \"rtsp://10.0.0.3/s\"\n[[cameras.{id}.zones]]\nid = \"door\"\n\
                 kind = \"fall_watch\"\npolygon = [[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]]\n"
            );
            crate::config::parse(&text, Path::new(".")).unwrap().cameras.remove(0)
        };
        struct Nothing;
        impl FrameSink for Nothing {
            fn push(&mut self, _: EncodedFrame) {}
        }
        let taps: Vec<_> = ["a", "b", "c", "d"].iter().map(|id| recorder.tap(&camera(id), Box::new(Nothing))).collect();
        assert_eq!(recorder.share_bytes(), 1 << 20);
        drop(taps);
        assert_eq!(recorder.share_bytes(), 2 << 20);
        assert_eq!(lock(&recorder.cameras).len(), 0);
    }
}
