//! The outbox under `kill -9`: a child process (this test binary, re-executed) commits events
//! one transaction at a time and prints each id once its commit returned; the parent kills it
//! with SIGKILL mid-stream, reopens the store and checks that every printed id is there.
//! Five rounds on the same file, so recovery after a crash is exercised too.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use gateway::incident::EventKind;
use gateway::outbox::{Outbox, OutboxRecord};

fn record(seq: u32) -> OutboxRecord {
    super::fixtures::record("gate-3", 0, seq, EventKind::Updated)
}

/// The child: runs only when re-executed by the crash test (ignored on its own, so it is not
/// counted as a passing test that checks nothing).
#[test]
#[ignore = "a child process of no_committed_event_is_lost_when_the_process_is_killed"]
fn crash_child() {
    let Some(path) = std::env::var_os("OUTBOX_CRASH_CHILD") else { return };
    let outbox = Outbox::open(path.as_ref(), u64::MAX).unwrap();
    for seq in 0.. {
        let enqueued = outbox.enqueue(&[record(seq)], 0).unwrap();
        println!("committed {}", enqueued.ids[0]);
    }
}

#[test]
fn no_committed_event_is_lost_when_the_process_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("outbox.redb");
    let mut committed: Vec<u64> = Vec::new();
    for round in 0..5u64 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["outbox::crash_child", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env("OUTBOX_CRASH_CHILD", &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        // Kill at a different point each round.
        let kill_after = 150 + round * 97;
        let mut seen = 0;
        while seen < kill_after {
            let line = lines.next().expect("child stopped early").unwrap();
            if let Some(id) = line.strip_prefix("committed ") {
                committed.push(id.parse().unwrap());
                seen += 1;
            }
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // Lines printed before the kill but not yet read were committed too.
        for line in lines.map_while(Result::ok) {
            if let Some(id) = line.strip_prefix("committed ") {
                committed.push(id.parse().unwrap());
            }
        }
    }
    let outbox = Outbox::open(&path, u64::MAX).unwrap();
    let stored: std::collections::HashSet<u64> =
        outbox.pending(0, usize::MAX).unwrap().into_iter().map(|(id, _)| id).collect();
    let lost: Vec<&u64> = committed.iter().filter(|id| !stored.contains(id)).collect();
    assert!(committed.len() >= 1235, "{} commits observed", committed.len());
    assert!(lost.is_empty(), "{} of {} committed events lost after kill -9: {lost:?}", lost.len(), committed.len());
    eprintln!("outbox crash test: {} committed events over 5 kills, 0 lost, {} stored", committed.len(), stored.len());
}
