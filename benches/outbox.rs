//! The durable outbox with fsync on every commit (redb's default durability): one incident
//! event per transaction, as the live service commits them, and a full enqueue +
//! acknowledge cycle. Also reports the file size after 20 000 cycles (it must not grow).
//! Run: `cargo bench --bench outbox`. Figures depend on the disk's fsync latency.

// criterion_group! defines an undocumented `pub fn`; the crate's lints ask for docs.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, Criterion};
use gateway::incident::EventKind;
use gateway::outbox::{Outbox, OutboxRecord};

#[path = "../tests/support/fixtures.rs"]
mod fixtures;

fn record() -> OutboxRecord {
    fixtures::record("gate-3", 1_795_630_318_785, 2, EventKind::Updated)
}

fn outbox(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("outbox.redb");
    let outbox = Outbox::open(&path, u64::MAX).unwrap();
    let one = [record()];
    c.bench_function("outbox/enqueue_one_event_fsync", |b| b.iter(|| outbox.enqueue(&one, 0).unwrap()));
    c.bench_function("outbox/enqueue_and_acknowledge", |b| {
        b.iter(|| {
            let id = outbox.enqueue(&one, 0).unwrap().ids[0];
            outbox.acknowledge(id).unwrap()
        })
    });
    // Issue 12: the incident book moved into the outbox, committed with the events. Before,
    // the run loop enqueued, then wrote the book as a JSON file (temporary, fsync, rename,
    // directory fsync); now both go in one transaction.
    let book: gateway::incident::IncidentBook = serde_json::from_value(serde_json::json!({
        "camera": "gate-3",
        "slots": { "pavement": { "open": {
            "id": "gate-3:pavement:misparked_bike:1795630618785", "started_ms": 1_795_630_318_785_i64,
            "seq": 2, "last_present_ms": 1_795_630_618_785_i64, "last_sent_ms": 1_795_630_618_785_i64,
            "last_count": 2 }, "cooldown_until_ms": 0 },
          "bins": { "open": null, "cooldown_until_ms": 1_795_630_000_000_i64 } }
    }))
    .unwrap();
    let book_file = dir.path().join("incidents/gate-3.json");
    c.bench_function("outbox/enqueue_then_book_file_before_issue_12", |b| {
        b.iter(|| {
            outbox.enqueue(&one, 0).unwrap();
            gateway::evidence::write_atomically(&book_file, &serde_json::to_vec_pretty(&book).unwrap()).unwrap()
        })
    });
    c.bench_function("outbox/commit_event_with_book_one_transaction", |b| {
        b.iter(|| outbox.commit(&one, &[("gate-3", &book)], 0).unwrap())
    });
    // On a fresh file (the benches above leave a high-water mark of undelivered events):
    // steady enqueue/acknowledge cycling must not grow it.
    let path = dir.path().join("cycled.redb");
    let outbox = Outbox::open(&path, u64::MAX).unwrap();
    for _ in 0..20_000 {
        let id = outbox.enqueue(&one, 0).unwrap().ids[0];
        outbox.acknowledge(id).unwrap();
    }
    let bytes = std::fs::metadata(&path).unwrap().len();
    eprintln!("outbox file after 20000 enqueue/acknowledge cycles: {bytes} bytes, depth {}", outbox.depth().unwrap());
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).measurement_time(std::time::Duration::from_secs(4));
    targets = outbox
}
criterion_main!(benches);
