//! Integration tests against real things: GStreamer's RTSP server, mosquitto, the real model,
//! the `gateway` binary. One test binary, a module per area.

mod abuse;
mod app;
mod bin_learning;
mod bins;
mod broker;
mod capacity;
mod classifier;
mod clips;
mod cli;
mod console;
mod disk_full;
#[path = "../support/fixtures.rs"]
mod fixtures;
mod gating;
mod models;
mod mqtt;
mod outbox;
mod replay;
mod rtsp;
mod scenarios;
mod support;
mod systemd;
