//! Events per second through the whole delivery path: each event committed in its own fsync'd
//! transaction (as `gateway run` commits them), published QoS 1 to a real mosquitto on
//! loopback, and removed from the outbox on its PUBACK. Reports the commit-only rate and the
//! end-to-end rate (first commit → last PUBACK). Needs mosquitto (scripts/setup installs it).
//! Run: `cargo bench --bench delivery`. Figures depend on the disk's fsync latency.

use std::sync::Arc;
use std::time::{Duration, Instant};

use gateway::deliver::{Delivery, DeliverySettings, SystemClock};
use gateway::incident::EventKind;
use gateway::outbox::{Outbox, OutboxRecord};
use tokio_util::sync::CancellationToken;

#[path = "../tests/support/fixtures.rs"]
mod fixtures;

const EVENTS: u32 = 5000;

/// Events of 50 cameras, round robin.
fn record(seq: u32) -> OutboxRecord {
    fixtures::record(&format!("gate-{}", seq % 50), 0, seq, EventKind::Updated)
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let broker = fixtures::Mosquitto::start_ephemeral();
    let port = broker.port;

    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let text = format!("[mqtt]\nurl = \"mqtt://127.0.0.1:{port}\"\nclient_id = \"bench\"\n");
        let config = gateway::config::parse(&text, std::path::Path::new("/")).unwrap();
        let settings = DeliverySettings { mqtt: config.mqtt.unwrap(), escalation: config.escalation, health: None };
        let outbox = Arc::new(Outbox::open(&dir.path().join("outbox.redb"), 1_000_000).unwrap());

        // Commit only (no delivery running).
        let started = Instant::now();
        for seq in 0..EVENTS {
            outbox.enqueue(&[record(seq)], 0).unwrap();
        }
        let commit_only = started.elapsed();
        println!(
            "delivery/commit_only: {EVENTS} events in {:.2} s = {:.0} events/s ({:.0} µs per fsync'd commit)",
            commit_only.as_secs_f64(),
            f64::from(EVENTS) / commit_only.as_secs_f64(),
            commit_only.as_secs_f64() * 1e6 / f64::from(EVENTS)
        );
        // Drain that backlog: what a gateway does after a broker outage.
        let shutdown = CancellationToken::new();
        let started = Instant::now();
        let delivery = Delivery::start(settings, outbox.clone(), Arc::new(SystemClock), shutdown.clone()).unwrap();
        while outbox.depth().unwrap() > 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let backlog = started.elapsed();
        println!(
            "delivery/backlog_drain: {EVENTS} queued events published and acknowledged in {:.2} s = {:.0} events/s",
            backlog.as_secs_f64(),
            f64::from(EVENTS) / backlog.as_secs_f64()
        );
        // Live: commit one by one while delivering.
        let started = Instant::now();
        for seq in EVENTS..2 * EVENTS {
            outbox.enqueue(&[record(seq)], 0).unwrap();
            delivery.wake();
            tokio::task::yield_now().await;
        }
        while outbox.depth().unwrap() > 0 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let live = started.elapsed();
        println!(
            "delivery/commit_publish_ack: {EVENTS} events committed, published and acknowledged in {:.2} s = {:.0} events/s",
            live.as_secs_f64(),
            f64::from(EVENTS) / live.as_secs_f64()
        );
        shutdown.cancel();
        delivery.stopped().await;
    });
    drop(broker);
}
