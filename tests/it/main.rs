//! Integration tests against real things: GStreamer's RTSP server, the real model, the
//! `gateway` binary. One test binary, a module per area.

mod classifier;
mod cli;
mod outbox;
mod replay;
mod rtsp;
mod scenarios;
mod support;
