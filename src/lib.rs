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
//! Modules are declared in data-flow order; each stage's `//!` says what it deliberately does
//! not do. `ARCHITECTURE.md` is the one-page map.
//! - [`config`]: TOML → validated domain types, every problem with its key path.
//! - [`ingest`]: one supervised task per camera (RTSP via retina, or a footage file).
//! - [`schedule`]: which camera's frame is analysed next (one waiting frame per camera,
//!   earliest deadline first): how the capacity is shared out.
//! - [`decode`]: keyframes (or every frame) → the detector's letterboxed input tensor.
//! - [`detect`]: ONNX Runtime sessions, YOLOX decode, class-wise NMS.
//! - [`bin_state`]: a bin area's state from a frozen backbone's embedding and a small
//!   logistic regression (the generic default, or a zone's own).
//! - [`health`]: per-camera state and counters shared by the stages.
//! - [`pipeline`]: wires the stages for `gateway run`.
//! - [`outbox`]: incident events on disk (redb) until the broker acknowledges them, with the
//!   follow-up timers of [`followup`] (the pure reminder/escalation core).
//! - [`deliver`]: outbox → MQTT (QoS 1, PUBACK-matched), stewards' answers back.

pub mod bin_state;
pub mod cli;
pub mod config;
pub mod console;
pub mod decode;
pub mod deliver;
pub mod detect;
pub mod engine;
pub mod evidence;
pub mod followup;
pub mod geometry;
pub mod health;
pub mod incident;
pub mod ingest;
pub mod logging;
pub mod notify;
pub mod outbox;
pub mod pipeline;
pub mod pose;
pub mod rules;
pub mod schedule;
pub mod track;
pub mod zones;
