//! # Street-camera event gateway
//!
//! Watches a district's street cameras for the property stewards who act on what they show.
//!
//! ```text
//! RTSP cameras ─▶ ingest ─▶ decode ─▶ detect ─▶ (track ─▶ rules ─▶ incident ─▶ outbox ─▶ mqtt)
//!   retina/file    one task   shared     ONNX Runtime
//!                  per camera keyframe   sessions fed
//!                             pool       by one queue
//! ```
//!
//! # Layout
//! Modules are declared in data-flow order (rustfmt.toml keeps it); each stage's `//!` says
//! what it deliberately does not do. `ARCHITECTURE.md` is the one-page map.
//! - [`config`]: TOML → validated domain types, every problem with its key path.
//! - [`backoff`]: jittered, capped exponential backoff (cameras, the broker, outbox commits).
//! - [`media`]: the encoded frames ingest hands to decode, and FFmpeg's shared set-up.
//! - [`ingest`]: one supervised task per camera (RTSP via retina behind a size-bounded relay,
//!   or a footage file).
//! - [`schedule`]: which camera's frame is analysed next (one waiting frame per camera,
//!   fall-watch cameras with people in view first, then earliest deadline).
//! - [`decode`]: keyframes (or every frame) → the detector's letterboxed input tensor.
//! - [`gate`]: change gating (pure): reuse the last inference's detections while nothing
//!   changed in the camera's zones.
//! - [`detect`]: ONNX Runtime sessions, YOLOX decode, class-wise NMS.
//! - [`bin_state`]: a bin area's state from a frozen backbone's embedding and a small
//!   logistic regression (the generic default, or a zone's own).
//! - [`geometry`]: normalised points, boxes and polygons.
//! - [`track`]: detections → tracks with stable ids.
//! - [`pose`]: keypoints of a person crop → body axis, head below hips (pure).
//! - [`zones`]: zone kinds and their rule parameters.
//! - [`rules`]: per zone, whether a condition holds now (bikes, bins, falls).
//! - [`incident`]: the lifecycle: open, update, clear, cool down.
//! - [`engine`]: one camera's pure core, detections → observations → incident events (owns
//!   the `Detection` type, so the core does not depend on the ONNX shell).
//! - [`evidence`]: snapshots, sidecars and incident books on disk.
//! - [`recorder`]: one named thread that writes evidence and commits incidents, behind a
//!   bounded queue that never drops (the run loop waits when it is full).
//! - [`followup`]: the pure reminder/escalation core.
//! - [`outbox`]: incident events on disk (redb) until the broker acknowledges them.
//! - [`deliver`]: outbox → MQTT 5 (QoS 1, PUBACK-matched), stewards' answers back.
//! - [`health`]: per-camera state and counters shared by the stages.
//! - [`logging`]: tracing set-up and the rate limit for lines outsiders can make repeat.
//! - [`pipeline`]: wires the stages for `gateway run`.
//! - [`console`]: the operator console, zone editor, JSON API, `/metrics`.
//! - [`notify`]: systemd's notify protocol.
//! - [`app`]: the service behind `gateway run`: the run loop (engines, incidents, outbox
//!   commits, reloads, watchdog), run as `app::run(config, world, shutdown)` with its world
//!   (console listener, notifier, wall clock) passed in.
//! - [`cli`]: the subcommands (`run` builds the real world for [`app`]; `check-config`,
//!   `replay`, `eval-falls`, `bin-state`, …).

pub mod config;
pub mod backoff;
pub mod media;
pub mod ingest;
pub mod schedule;
pub mod decode;
pub mod gate;
pub mod detect;
pub mod bin_state;
pub mod geometry;
pub mod track;
pub mod pose;
pub mod zones;
pub mod rules;
pub mod incident;
pub mod engine;
pub mod evidence;
pub mod recorder;
pub mod followup;
pub mod outbox;
pub mod deliver;
pub mod health;
pub mod logging;
pub mod pipeline;
pub mod console;
pub mod notify;
pub mod app;
pub mod cli;
