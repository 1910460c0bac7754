//! `/metrics` in the Prometheus text format (0.0.4), rendered from a snapshot so the
//! renderer is pure and testable. Names follow `gateway_<stage>_<noun>_<unit>`, counters end
//! in `_total`; per-camera series carry a `camera` label (ids are `[A-Za-z0-9_-]`, safe as
//! label values). About 40 series per camera: ~24 600 lines for 600 cameras.
//!
//! Why not `prometheus-client` (0.26, looked at for issue 12): it writes OpenMetrics only,
//! where a counter's samples always get `_total` appended (our `_sum`/`_count` latency
//! counters, which `benches/capacity/run.py` reads, would become `_sum_total`), its registry
//! appends "." to every HELP text, floats are written shortest (`9.8`, not `9.800`) and the
//! exposition must end in `# EOF` and be one registry: the seven other renderers that
//! `/metrics` concatenates (outbox, clips, retention, privacy, bins, HTTP, access log) would
//! have to move with it in one step. Our figures live in atomics the pipeline already owns,
//! so the crate's owned metrics would not replace them, only the formatting below.

use std::fmt::Write;
use std::sync::atomic::Ordering;

use crate::health::{CameraErrorKind, CameraHealth, CameraState, SkipReason, Summary};

/// Everything `/metrics` shows, read at one moment.
pub struct Snapshot<'a> {
    /// Cameras' health.
    pub cameras: &'a [std::sync::Arc<CameraHealth>],
    /// The frame scheduler's figures and the capacity estimate.
    pub schedule: &'a ScheduleView,
    /// Frame arrival → detections in the run loop.
    pub analysis_latency: &'a Summary,
    /// Frame arrival → its opened incident committed to the outbox.
    pub incident_latency: &'a Summary,
    /// Prepared frames waiting for a detector session.
    pub detector_queue: usize,
    /// Analysed frames waiting for the run loop.
    pub analysed_queue: usize,
    /// Records waiting for delivery.
    pub outbox_depth: u64,
    /// Incidents waiting for an answer.
    pub waiting_for_answer: usize,
    /// Delivery counters, when `[mqtt]` is configured.
    pub delivery: Option<&'a crate::deliver::DeliveryStats>,
    /// Incident events committed, by (kind, event).
    pub incident_events: Vec<((&'static str, &'static str), u64)>,
    /// False alarms by `camera/zone/kind`.
    pub false_alarms: Vec<(String, u64)>,
    /// Config reloads by result.
    pub reloads: Vec<(&'static str, u64)>,
    /// Seconds since the run loop last turned.
    pub loop_idle_seconds: f64,
    /// The loaded detector models' manifest names, by variant.
    pub models: &'a [(crate::config::ModelVariant, String)],
}

/// What the scheduler shows, as the run loop last sampled it.
#[derive(Debug, Clone, Default)]
pub struct ScheduleView {
    /// The scheduler's own figures.
    pub stats: crate::decode::ScheduleStats,
    /// Analysed frames per second the gateway can sustain, estimated from the measured cost
    /// of one (0 until a frame was analysed).
    pub capacity_per_second: f64,
}

/// A label value escaped as the text format asks (backslash, double quote, line feed).
fn label_value(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Reads one per-camera counter.
type ReadCounter = fn(&crate::health::CameraCounters) -> u64;

const CAMERA_STATES: [CameraState; 6] = [
    CameraState::Starting,
    CameraState::Connecting,
    CameraState::Online,
    CameraState::Degraded,
    CameraState::Offline,
    CameraState::Stopped,
];

/// Renders the snapshot.
pub fn render(snapshot: &Snapshot<'_>) -> String {
    let mut out = String::with_capacity(256 + snapshot.cameras.len() * 2048);
    let cameras = snapshot.cameras;

    family(&mut out, "gateway_camera_state", "gauge", "1 for the camera's current state, 0 for the others.");
    for camera in cameras {
        let state = camera.state();
        for candidate in &CAMERA_STATES {
            let value = u8::from(*candidate == state);
            let _ = writeln!(
                out,
                "gateway_camera_state{{camera=\"{}\",state=\"{}\"}} {value}",
                camera.id,
                candidate.as_str()
            );
        }
    }
    let counters: [(&str, &str, ReadCounter); 9] = [
        (
            "gateway_detect_rotated_passes_total",
            "Analysed frames the rotated (±90°) person pass also ran on (fall-watch: every frame with rotated_pass = true, else only when the fall rule asks).",
            |c| c.rotated_passes.load(Ordering::Relaxed),
        ),
        (
            "gateway_detect_rotated_inferences_total",
            "Model runs of the rotated pass: one per packed input of turned crops around the people the fall rule asks about, two for the whole picture.",
            |c| c.rotated_inferences.load(Ordering::Relaxed),
        ),
        ("gateway_pose_crops_total", "Person crops the pose second stage ran on (fall-watch zones with pose = true).", |c| {
            c.pose_crops.load(Ordering::Relaxed)
        }),
        ("gateway_ingest_frames_received_total", "Access units received from the camera.", |c| {
            c.frames_received.load(Ordering::Relaxed)
        }),
        ("gateway_ingest_keyframes_received_total", "Keyframes among them.", |c| {
            c.keyframes_received.load(Ordering::Relaxed)
        }),
        (
            "gateway_decode_frames_decoded_total",
            "Frames decoded (keyframes on the shared pool, or every frame).",
            |c| c.frames_decoded.load(Ordering::Relaxed),
        ),
        (
            "gateway_detect_frames_analysed_total",
            "Frames analysed (the model ran, or the change gate reused its last detections).",
            |c| c.frames_analysed.load(Ordering::Relaxed),
        ),
        ("gateway_decode_errors_total", "Frames that failed to decode or preprocess.", |c| {
            c.decode_errors.load(Ordering::Relaxed)
        }),
        ("gateway_ingest_reconnects_total", "Camera sessions that ended in failure.", |c| {
            c.reconnects.load(Ordering::Relaxed)
        }),
    ];
    for (name, help, read) in counters {
        family(&mut out, name, "counter", help);
        for camera in cameras {
            let _ = writeln!(out, "{name}{{camera=\"{}\"}} {}", camera.id, read(&camera.counters));
        }
    }
    family(&mut out, "gateway_frames_skipped_total", "counter", "Frames due for analysis but skipped, by reason.");
    for camera in cameras {
        let c = &camera.counters;
        for reason in SkipReason::ALL {
            let value = match reason {
                SkipReason::OverCapacity => c.skipped_over_capacity.load(Ordering::Relaxed),
                SkipReason::AwaitingKeyframe => c.skipped_awaiting_keyframe.load(Ordering::Relaxed),
            };
            let _ = writeln!(
                out,
                "gateway_frames_skipped_total{{camera=\"{}\",reason=\"{}\"}} {value}",
                camera.id,
                reason.as_str()
            );
        }
    }
    render_camera_errors(&mut out, cameras);
    render_gate(&mut out, cameras);
    let seconds: [(&str, &str, ReadCounter); 3] = [
        (
            "gateway_pose_seconds_total",
            "Time spent in the pose second stage for this camera (rate ÷ crops = s per crop); counted in the capacity estimate.",
            |c| c.pose_us_total.load(Ordering::Relaxed),
        ),
        (
            "gateway_decode_seconds_total",
            "Time spent decoding and preprocessing this camera's frames (rate ÷ frames decoded = ms per frame).",
            |c| c.decode_us_total.load(Ordering::Relaxed),
        ),
        (
            "gateway_detect_inference_seconds_total",
            "Time spent in inference and postprocessing for this camera's frames.",
            |c| c.inference_us_total.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, read) in seconds {
        family(&mut out, name, "counter", help);
        for camera in cameras {
            let _ = writeln!(out, "{name}{{camera=\"{}\"}} {:.6}", camera.id, read(&camera.counters) as f64 / 1e6);
        }
    }
    family(&mut out, "gateway_camera_last_frame_age_seconds", "gauge", "Seconds since the camera's last frame.");
    for camera in cameras {
        if let Some(age) = camera.last_frame_age() {
            let _ = writeln!(
                out,
                "gateway_camera_last_frame_age_seconds{{camera=\"{}\"}} {:.3}",
                camera.id,
                age.as_secs_f64()
            );
        }
    }

    let revisits: [(&str, &str, ReadCounter); 2] = [
        ("gateway_camera_revisit_seconds", "Arrival-time gap between the camera's two latest analysed frames.", |c| {
            c.revisit_last_ms.load(Ordering::Relaxed)
        }),
        ("gateway_camera_revisit_seconds_max", "The longest such gap since start.", |c| {
            c.revisit_max_ms.load(Ordering::Relaxed)
        }),
    ];
    for (name, help, read) in revisits {
        family(&mut out, name, "gauge", help);
        for camera in cameras {
            let _ = writeln!(out, "{name}{{camera=\"{}\"}} {:.3}", camera.id, read(&camera.counters) as f64 / 1e3);
        }
    }
    family(
        &mut out,
        "gateway_camera_priority",
        "gauge",
        "Priority of the camera's latest due frame: 0 low, 1 normal, 2 high (the configured priority; high while people are in view of a fall-watch zone).",
    );
    for camera in cameras {
        let _ = writeln!(
            out,
            "gateway_camera_priority{{camera=\"{}\"}} {}",
            camera.id,
            camera.counters.priority.load(Ordering::Relaxed)
        );
    }
    family(
        &mut out,
        "gateway_camera_model_info",
        "gauge",
        "The detector model the camera's latest frame was prepared for (none before its first decoded frame): variant square ([detector] model) or wide ([detector] wide_model), model its manifest's name.",
    );
    for camera in cameras {
        let Some(variant) = camera.counters.model() else { continue };
        let Some((_, name)) = snapshot.models.iter().find(|(v, _)| *v == variant) else { continue };
        let _ = writeln!(
            out,
            "gateway_camera_model_info{{camera=\"{}\",variant=\"{}\",model=\"{}\"}} 1",
            camera.id,
            variant.as_str(),
            label_value(name)
        );
    }
    render_schedule(&mut out, snapshot.schedule);
    for (name, what, latency) in [
        (
            "gateway_analysis_latency_seconds",
            "a frame's arrival to its detections in the run loop",
            snapshot.analysis_latency,
        ),
        (
            "gateway_incident_latency_seconds",
            "a frame's arrival to the incident it opened committed to the outbox",
            snapshot.incident_latency,
        ),
    ] {
        out.push_str(&summary_families(name, what, latency));
    }
    gauge(
        &mut out,
        "gateway_detect_queue_depth",
        "Prepared frames waiting for a detector session.",
        snapshot.detector_queue,
    );
    gauge(
        &mut out,
        "gateway_analysed_queue_depth",
        "Analysed frames waiting for tracking and rules.",
        snapshot.analysed_queue,
    );
    gauge(
        &mut out,
        "gateway_outbox_depth",
        "Incident records on disk waiting for the broker's PUBACK.",
        snapshot.outbox_depth,
    );
    gauge(
        &mut out,
        "gateway_incidents_waiting_for_answer",
        "Open incidents no steward has answered.",
        snapshot.waiting_for_answer,
    );
    let _ = writeln!(out, "# HELP gateway_loop_idle_seconds Seconds since the run loop last turned.");
    let _ = writeln!(out, "# TYPE gateway_loop_idle_seconds gauge");
    let _ = writeln!(out, "gateway_loop_idle_seconds {:.3}", snapshot.loop_idle_seconds);

    if let Some(delivery) = snapshot.delivery {
        gauge(
            &mut out,
            "gateway_mqtt_connected",
            "1 while a broker session is up.",
            u8::from(delivery.connected.load(Ordering::Relaxed)),
        );
        let delivery_counters = [
            ("gateway_mqtt_connections_total", "Broker sessions established.", &delivery.connections),
            ("gateway_mqtt_published_total", "Records published (re-sends included).", &delivery.published),
            (
                "gateway_mqtt_acknowledged_total",
                "Records acknowledged by the broker and removed.",
                &delivery.acknowledged,
            ),
            ("gateway_mqtt_answers_total", "Answers recorded from stewards over MQTT.", &delivery.answers),
            (
                "gateway_mqtt_answers_ignored_total",
                "Answers dropped for any reason but duplication (by reason: gateway_mqtt_answers_dropped_total).",
                &delivery.answers_ignored,
            ),
            ("gateway_followups_fired_total", "Reminders and escalations sent.", &delivery.followups_fired),
        ];
        for (name, help, counter) in delivery_counters {
            family(&mut out, name, "counter", help);
            let _ = writeln!(out, "{name} {}", counter.load(Ordering::Relaxed));
        }
        family(
            &mut out,
            "gateway_mqtt_answers_dropped_total",
            "counter",
            "Answer messages acknowledged and dropped, by reason (larger than the MQTT 5 Maximum Packet Size, \
             the broker discards them: see its log).",
        );
        for reason in crate::deliver::answers::DropReason::ALL {
            let _ = writeln!(
                out,
                "gateway_mqtt_answers_dropped_total{{reason=\"{}\"}} {}",
                reason.as_str(),
                delivery.answers_dropped.get(reason)
            );
        }
        let answer_gauges = [
            (
                "gateway_mqtt_answer_times_replaced_total",
                "counter",
                "Answers whose at_ms was out of bounds, recorded at their arrival time instead.",
                delivery.answer_times_replaced.load(Ordering::Relaxed),
            ),
            (
                "gateway_outbox_quarantined_total",
                "counter",
                "Unreadable outbox records moved to the dead table so the rest are delivered.",
                delivery.records_quarantined.load(Ordering::Relaxed),
            ),
            (
                "gateway_mqtt_answer_acks_queued",
                "gauge",
                "PUBACKs for answers waiting for room in the request channel (at most the Receive Maximum).",
                delivery.answer_acks_queued.load(Ordering::Relaxed),
            ),
        ];
        for (name, kind, help, value) in answer_gauges {
            family(&mut out, name, kind, help);
            let _ = writeln!(out, "{name} {value}");
        }
    }

    family(
        &mut out,
        "gateway_incident_events_total",
        "counter",
        "Incident events committed, by kind and event (opened, updated, cleared).",
    );
    for ((kind, event), count) in &snapshot.incident_events {
        let _ = writeln!(out, "gateway_incident_events_total{{kind=\"{kind}\",event=\"{event}\"}} {count}");
    }
    family(
        &mut out,
        "gateway_false_alarms_total",
        "counter",
        "Incidents a steward or operator marked as false alarms.",
    );
    for (place, count) in &snapshot.false_alarms {
        let mut parts = place.splitn(3, '/');
        let (camera, zone, kind) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let _ = writeln!(
            out,
            "gateway_false_alarms_total{{camera=\"{}\",zone=\"{}\",kind=\"{}\"}} {count}",
            escape(camera),
            escape(zone),
            escape(kind)
        );
    }
    family(&mut out, "gateway_config_reloads_total", "counter", "Config reloads, by result (applied, rejected).");
    for (result, count) in &snapshot.reloads {
        let _ = writeln!(out, "gateway_config_reloads_total{{result=\"{result}\"}} {count}");
    }
    out
}

fn render_schedule(out: &mut String, schedule: &ScheduleView) {
    let stats = &schedule.stats;
    gauge(
        out,
        "gateway_scheduler_waiting_frames",
        "Due frames waiting for a decoder worker (at most one per camera).",
        stats.waiting,
    );
    gauge(
        out,
        "gateway_scheduler_demand_frames_per_second",
        "Analysed frames per second the cameras ask for at their current intervals.",
        format!("{:.3}", stats.demand_per_second),
    );
    gauge(
        out,
        "gateway_scheduler_capacity_frames_per_second",
        "Analysed frames per second the gateway can sustain, from the measured cost of one (0 until measured).",
        format!("{:.3}", schedule.capacity_per_second),
    );
    gauge(
        out,
        "gateway_scheduler_active_cameras",
        "Fall-watch cameras on their active interval (people in view).",
        stats.active_cameras,
    );
    gauge(
        out,
        "gateway_scheduler_high_priority_cameras",
        "Cameras served first now: configured high, fall-watch with people in view, or waited a minute.",
        stats.high_priority_cameras,
    );
    family(
        out,
        "gateway_scheduler_aged_frames_total",
        "counter",
        "Frames analysed for cameras served first only because their frame waited a minute (one in ten while fall-watch cameras with people wait).",
    );
    let _ = writeln!(out, "gateway_scheduler_aged_frames_total {}", stats.aged_takes);
    family(
        out,
        "gateway_scheduler_revisit_seconds",
        "histogram",
        "Arrival-time gap between a camera's consecutive analysed frames, all cameras.",
    );
    for (bound, count) in crate::decode::REVISIT_BUCKETS.iter().zip(&stats.revisit_buckets) {
        let _ = writeln!(out, "gateway_scheduler_revisit_seconds_bucket{{le=\"{bound}\"}} {count}");
    }
    let total = stats.revisit_buckets.last().copied().unwrap_or(0);
    let _ = writeln!(out, "gateway_scheduler_revisit_seconds_bucket{{le=\"+Inf\"}} {total}");
    let _ = writeln!(out, "gateway_scheduler_revisit_seconds_sum {:.3}", stats.revisit_sum_seconds);
    let _ = writeln!(out, "gateway_scheduler_revisit_seconds_count {total}");
    gauge(
        out,
        "gateway_scheduler_revisit_recent_max_seconds",
        "The longest revisit any camera saw in the last 10-20 s.",
        format!("{:.3}", stats.recent_revisit_max_seconds),
    );
}

/// What a camera's failures cost, and what was refused or held back (issue 11).
fn render_camera_errors(out: &mut String, cameras: &[std::sync::Arc<CameraHealth>]) {
    family(
        out,
        "gateway_camera_errors_total",
        "counter",
        "Camera sessions that failed, by kind; response_refused: an RTSP message over the relay's size limits, connection cut.",
    );
    for camera in cameras {
        for kind in CameraErrorKind::ALL {
            let _ = writeln!(
                out,
                "gateway_camera_errors_total{{camera=\"{}\",kind=\"{}\"}} {}",
                camera.id,
                kind.as_str(),
                camera.errors(kind)
            );
        }
    }
    let counters: [(&str, &str, ReadCounter); 2] = [
        (
            "gateway_camera_log_lines_suppressed_total",
            "Log lines about this camera held back by its log rate limit (each kind once a minute).",
            |c| c.log_lines_suppressed.load(Ordering::Relaxed),
        ),
        (
            "gateway_camera_reasons_capped_total",
            "Failure reasons cut to 512 bytes or escaped before being shown.",
            |c| c.reasons_capped.load(Ordering::Relaxed),
        ),
    ];
    for (name, help, read) in counters {
        family(out, name, "counter", help);
        for camera in cameras {
            let _ = writeln!(out, "{name}{{camera=\"{}\"}} {}", camera.id, read(&camera.counters));
        }
    }
}

/// Change gating: per camera, analysed frames the model ran on and those that reused the last
/// inference, and the gate's own time; in total, why the model ran.
fn render_gate(out: &mut String, cameras: &[std::sync::Arc<CameraHealth>]) {
    family(
        out,
        "gateway_detect_inferences_total",
        "counter",
        "Analysed frames by result: run (the model ran) or reused (the change gate saw nothing change in the camera's zones and reused the last inference's detections).",
    );
    let mut by_reason = [0u64; crate::gate::InferReason::ALL.len() + 1];
    for camera in cameras {
        let c = &camera.counters;
        let run: Vec<u64> = c.inferences_run.iter().map(|counter| counter.load(Ordering::Relaxed)).collect();
        for (total, count) in by_reason.iter_mut().zip(&run) {
            *total += count;
        }
        let reused = c.inferences_reused.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "gateway_detect_inferences_total{{camera=\"{}\",result=\"run\"}} {}",
            camera.id,
            run.iter().sum::<u64>()
        );
        let _ = writeln!(out, "gateway_detect_inferences_total{{camera=\"{}\",result=\"reused\"}} {reused}", camera.id);
    }
    family(
        out,
        "gateway_detect_gate_runs_total",
        "counter",
        "Inferences of all cameras by why the model ran: first (no reference), unsettled (the last two inferences disagreed), stale (the reference reached the maximum staleness), changed (a zone changed), asked (the fall rule asked for the rotated pass on the frame), ungated (gating off).",
    );
    let reasons = crate::gate::InferReason::ALL.iter().map(|reason| reason.as_str()).chain(["ungated"]);
    for (reason, total) in reasons.zip(by_reason) {
        let _ = writeln!(out, "gateway_detect_gate_runs_total{{reason=\"{reason}\"}} {total}");
    }
    family(
        out,
        "gateway_detect_gate_seconds_total",
        "counter",
        "Time the change gate took on this camera's frames (signature and decision).",
    );
    for camera in cameras {
        let seconds = camera.counters.gate_us_total.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "gateway_detect_gate_seconds_total{{camera=\"{}\"}} {seconds:.6}", camera.id);
    }
}

/// The four families of a [`Summary`] of times (`_sum`, `_count`, `_max`, `_recent_max`);
/// `what` completes "the time from …".
pub fn summary_families(name: &str, what: &str, latency: &Summary) -> String {
    let mut out = String::new();
    family(&mut out, &format!("{name}_sum"), "counter", &format!("Sum of the time from {what}."));
    let _ = writeln!(out, "{name}_sum {:.6}", latency.sum);
    family(&mut out, &format!("{name}_count"), "counter", &format!("Observations of the time from {what}."));
    let _ = writeln!(out, "{name}_count {}", latency.count);
    gauge(
        &mut out,
        &format!("{name}_max"),
        &format!("The longest time from {what} since start."),
        format!("{:.6}", latency.max),
    );
    gauge(
        &mut out,
        &format!("{name}_recent_max"),
        &format!("The longest time from {what} in the last 10-20 s."),
        format!("{:.6}", latency.recent_max()),
    );
    out
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn gauge(out: &mut String, name: &str, help: &str, value: impl std::fmt::Display) {
    family(out, name, "gauge", help);
    let _ = writeln!(out, "{name} {value}");
}

/// Escapes a label value (`\`, `"` and newlines), for values read back from disk.
fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::CameraId;
    use crate::health::HealthRegistry;

    #[test]
    fn renders_per_camera_series_and_totals() {
        let registry = HealthRegistry::default();
        let gate = registry.camera(&CameraId::try_new("gate-3").unwrap());
        gate.set_state(CameraState::Online, None);
        gate.record_frame(true, std::time::Instant::now());
        gate.record_skip(SkipReason::OverCapacity);
        gate.record_revisit(12_400);
        gate.record_revisit(9_800);
        gate.counters.decode_us_total.store(7_760, Ordering::Relaxed);
        gate.counters.pose_crops.store(3, Ordering::Relaxed);
        gate.counters.pose_us_total.store(135_000, Ordering::Relaxed);
        gate.counters.rotated_passes.store(2, Ordering::Relaxed);
        gate.counters.rotated_inferences.store(3, Ordering::Relaxed);
        gate.record_error(CameraErrorKind::ResponseRefused);
        gate.counters.log_lines_suppressed.store(4, Ordering::Relaxed);
        gate.counters.inferences_run[3].store(2, Ordering::Relaxed);
        gate.counters.inferences_run[crate::gate::InferReason::ALL.len()].store(1, Ordering::Relaxed);
        gate.counters.inferences_reused.store(5, Ordering::Relaxed);
        gate.counters.set_model(crate::config::ModelVariant::Wide);
        let cameras = registry.cameras();
        let delivery = crate::deliver::DeliveryStats::default();
        delivery.connected.store(true, Ordering::Relaxed);
        delivery.answers_dropped.add(crate::deliver::answers::DropReason::WrongTopic);
        let mut latency = Summary::default();
        latency.record(0.5);
        latency.rotate();
        latency.record(0.25);
        let text = render(&Snapshot {
            cameras: &cameras,
            schedule: &ScheduleView {
                stats: crate::decode::ScheduleStats {
                    waiting: 2,
                    demand_per_second: 60.5,
                    active_cameras: 1,
                    high_priority_cameras: 1,
                    aged_takes: 7,
                    revisit_buckets: vec![0, 0, 0, 1, 1, 1, 2, 2, 2, 2, 2],
                    revisit_sum_seconds: 22.2,
                    recent_revisit_max_seconds: 12.4,
                },
                capacity_per_second: 62.25,
            },
            analysis_latency: &latency,
            incident_latency: &Summary::default(),
            detector_queue: 1,
            analysed_queue: 0,
            outbox_depth: 5,
            waiting_for_answer: 1,
            delivery: Some(&delivery),
            incident_events: vec![(("misparked_bike", "opened"), 3)],
            false_alarms: vec![("gate-3/pavement/misparked_bike".into(), 1)],
            reloads: vec![("rejected", 1)],
            loop_idle_seconds: 0.25,
            models: &[
                (crate::config::ModelVariant::Square, "yolox_nano".into()),
                (crate::config::ModelVariant::Wide, "yolox_nano_416x256".into()),
            ],
        });
        for line in [
            "gateway_camera_state{camera=\"gate-3\",state=\"degraded\"} 1",
            "gateway_camera_state{camera=\"gate-3\",state=\"online\"} 0",
            "gateway_ingest_frames_received_total{camera=\"gate-3\"} 1",
            "gateway_ingest_keyframes_received_total{camera=\"gate-3\"} 1",
            "gateway_frames_skipped_total{camera=\"gate-3\",reason=\"over_capacity\"} 1",
            "gateway_frames_skipped_total{camera=\"gate-3\",reason=\"awaiting_keyframe\"} 0",
            "gateway_camera_revisit_seconds{camera=\"gate-3\"} 9.800",
            "gateway_camera_priority{camera=\"gate-3\"} 0",
            "gateway_camera_model_info{camera=\"gate-3\",variant=\"wide\",model=\"yolox_nano_416x256\"} 1",
            "gateway_scheduler_high_priority_cameras 1",
            "gateway_scheduler_aged_frames_total 7",
            "gateway_camera_revisit_seconds_max{camera=\"gate-3\"} 12.400",
            "gateway_scheduler_waiting_frames 2",
            "gateway_scheduler_capacity_frames_per_second 62.250",
            "gateway_scheduler_revisit_seconds_bucket{le=\"10\"} 1",
            "gateway_scheduler_revisit_seconds_bucket{le=\"+Inf\"} 2",
            "gateway_scheduler_revisit_seconds_count 2",
            "gateway_scheduler_revisit_recent_max_seconds 12.400",
            "gateway_analysis_latency_seconds_count 2",
            "gateway_analysis_latency_seconds_max 0.500000",
            "gateway_analysis_latency_seconds_recent_max 0.500000",
            "gateway_decode_seconds_total{camera=\"gate-3\"} 0.007760",
            "gateway_pose_crops_total{camera=\"gate-3\"} 3",
            "gateway_pose_seconds_total{camera=\"gate-3\"} 0.135000",
            "gateway_detect_rotated_passes_total{camera=\"gate-3\"} 2",
            "gateway_detect_rotated_inferences_total{camera=\"gate-3\"} 3",
            "gateway_detect_queue_depth 1",
            "gateway_outbox_depth 5",
            "gateway_mqtt_connected 1",
            "gateway_mqtt_answers_dropped_total{reason=\"wrong_topic\"} 1",
            "gateway_mqtt_answers_dropped_total{reason=\"oversized\"} 0",
            "gateway_mqtt_answer_acks_queued 0",
            "gateway_incident_events_total{kind=\"misparked_bike\",event=\"opened\"} 3",
            "gateway_false_alarms_total{camera=\"gate-3\",zone=\"pavement\",kind=\"misparked_bike\"} 1",
            "gateway_config_reloads_total{result=\"rejected\"} 1",
            "gateway_camera_errors_total{camera=\"gate-3\",kind=\"response_refused\"} 1",
            "gateway_camera_errors_total{camera=\"gate-3\",kind=\"connect\"} 0",
            "gateway_camera_log_lines_suppressed_total{camera=\"gate-3\"} 4",
            "gateway_camera_reasons_capped_total{camera=\"gate-3\"} 0",
            "gateway_detect_inferences_total{camera=\"gate-3\",result=\"run\"} 3",
            "gateway_detect_inferences_total{camera=\"gate-3\",result=\"reused\"} 5",
            "gateway_detect_gate_runs_total{reason=\"changed\"} 2",
            "gateway_detect_gate_runs_total{reason=\"ungated\"} 1",
            "gateway_detect_gate_runs_total{reason=\"first\"} 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // Every sample line belongs to a family declared with HELP and TYPE.
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            let histogram = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|suffix| name.strip_suffix(suffix))
                .any(|base| text.contains(&format!("# TYPE {base} histogram")));
            assert!(histogram || text.contains(&format!("# TYPE {name} ")), "{name} has no TYPE");
        }
    }
}
