//! What the delivery task refuses of stewards' answers, and how it says so: every dropped
//! answer is counted by reason (`gateway_mqtt_answers_dropped_total{reason}` in /metrics)
//! and summed up in one log line per [`DropLog::EVERY`], never one line per message: the
//! ack topics are writable by every steward's phone, so a flood must not become a log flood.
//! Redeliveries are recognised by message identity (the same bytes on the same topic) in a
//! bounded memory of recent messages; the outbox then recognises the same person giving the
//! same answer again (after a restart) by content.
//!
//! Architecture invariant: nothing here touches the network or the disk; time is passed in.

use std::collections::hash_map::RandomState;
use std::collections::{HashSet, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Why an answer was dropped (acknowledged to the broker, not recorded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// Payload over [`super::payload::ANSWER_MAX_BYTES`]. Larger packets than the gateway's
    /// MQTT 5 Maximum Packet Size never reach it: the broker discards them.
    Oversized,
    /// Not an ack message (JSON, fields, lengths, control characters).
    Malformed,
    /// Sent on another grid's ack topic than the incident's own.
    WrongTopic,
    /// A redelivery, or the same person giving the same answer again.
    Duplicate,
    /// No such incident (never opened here, or forgotten a week after it ended).
    UnknownIncident,
    /// The incident already holds its [`crate::followup::MAX_ANSWERS`] answers.
    TooMany,
}

impl DropReason {
    /// Every reason, in the order /metrics lists them.
    pub const ALL: [DropReason; 6] = [
        DropReason::Oversized,
        DropReason::Malformed,
        DropReason::WrongTopic,
        DropReason::Duplicate,
        DropReason::UnknownIncident,
        DropReason::TooMany,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::Oversized => "oversized",
            DropReason::Malformed => "malformed",
            DropReason::WrongTopic => "wrong_topic",
            DropReason::Duplicate => "duplicate",
            DropReason::UnknownIncident => "unknown_incident",
            DropReason::TooMany => "too_many",
        }
    }

    fn index(self) -> usize {
        DropReason::ALL.iter().position(|reason| *reason == self).expect("listed")
    }
}

/// Dropped answers by reason, since start.
#[derive(Debug, Default)]
pub struct DropCounters([AtomicU64; DropReason::ALL.len()]);

impl DropCounters {
    /// Counts one drop.
    pub fn add(&self, reason: DropReason) {
        self.0[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Drops for `reason` so far.
    pub fn get(&self, reason: DropReason) -> u64 {
        self.0[reason.index()].load(Ordering::Relaxed)
    }

    /// All drops so far.
    pub fn total(&self) -> u64 {
        DropReason::ALL.iter().map(|reason| self.get(*reason)).sum()
    }
}

/// Drops since the last summary, with one example each, logged at most once per
/// [`DropLog::EVERY`].
#[derive(Debug)]
pub struct DropLog {
    since: Instant,
    counts: [u64; DropReason::ALL.len()],
    examples: [Option<String>; DropReason::ALL.len()],
}

impl DropLog {
    /// The shortest time between two summaries.
    pub const EVERY: Duration = Duration::from_secs(60);

    /// An empty log; the first summary can go out at once.
    pub fn new(now: Instant) -> Self {
        DropLog { since: now.checked_sub(Self::EVERY).unwrap_or(now), counts: [0; 6], examples: Default::default() }
    }

    /// Notes a drop; `example` (already debug-quoted) is kept if it is the first of its kind
    /// since the last summary.
    pub fn note(&mut self, reason: DropReason, example: impl FnOnce() -> String) {
        let index = reason.index();
        self.counts[index] += 1;
        if self.examples[index].is_none() {
            let mut text = example();
            let mut end = text.len().min(300);
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            text.truncate(end);
            self.examples[index] = Some(text);
        }
    }

    /// The summary line's fields (`reason=count` pairs and examples) if one is due at `now`;
    /// counting restarts.
    pub fn take_due(&mut self, now: Instant) -> Option<(String, String)> {
        if self.counts.iter().all(|count| *count == 0) || now.saturating_duration_since(self.since) < Self::EVERY {
            return None;
        }
        self.since = now;
        let mut counts = Vec::new();
        let mut examples = Vec::new();
        for reason in DropReason::ALL {
            let index = reason.index();
            if self.counts[index] > 0 {
                counts.push(format!("{}={}", reason.as_str(), self.counts[index]));
            }
            if let Some(example) = self.examples[index].take() {
                examples.push(format!("{}: {example}", reason.as_str()));
            }
        }
        self.counts = [0; 6];
        Some((counts.join(" "), examples.join("; ")))
    }
}

/// Identities of the most recent answer messages (topic and payload), to recognise the
/// broker's redeliveries without touching the disk. Bounded: the oldest are forgotten.
#[derive(Debug)]
pub struct RecentMessages {
    capacity: usize,
    hasher: RandomState,
    order: VecDeque<u64>,
    seen: HashSet<u64>,
}

impl RecentMessages {
    /// Remembers up to `capacity` messages.
    pub fn new(capacity: usize) -> Self {
        RecentMessages {
            capacity: capacity.max(1),
            // Keyed per process: nobody can craft a message that collides with another's.
            hasher: RandomState::new(),
            order: VecDeque::new(),
            seen: HashSet::new(),
        }
    }

    fn identity(&self, topic: &str, payload: &[u8]) -> u64 {
        self.hasher.hash_one((topic, payload))
    }

    /// Whether this exact message was remembered.
    pub fn contains(&self, topic: &str, payload: &[u8]) -> bool {
        self.seen.contains(&self.identity(topic, payload))
    }

    /// Remembers a message (once it was dealt with).
    pub fn remember(&mut self, topic: &str, payload: &[u8]) {
        let identity = self.identity(topic, payload);
        if !self.seen.insert(identity) {
            return;
        }
        self.order.push_back(identity);
        if self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.seen.remove(&oldest);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drops_are_summed_up_once_per_interval_with_one_example_each() {
        let start = Instant::now();
        let mut log = DropLog::new(start);
        for i in 0..1000 {
            log.note(DropReason::Malformed, || format!("{:?}", format!("bad\nline {i}")));
        }
        log.note(DropReason::WrongTopic, || "\"lixia/a/b/c/ack\"".into());
        let (counts, examples) = log.take_due(start).expect("the first summary goes at once");
        assert_eq!(counts, "malformed=1000 wrong_topic=1");
        assert_eq!(examples, "malformed: \"bad\\nline 0\"; wrong_topic: \"lixia/a/b/c/ack\"");
        assert!(!examples.contains('\n'), "an example never breaks the log line");
        log.note(DropReason::Duplicate, String::new);
        assert_eq!(log.take_due(start + Duration::from_secs(59)), None, "not within the interval");
        let (counts, _) = log.take_due(start + Duration::from_secs(60)).unwrap();
        assert_eq!(counts, "duplicate=1");
        assert_eq!(log.take_due(start + Duration::from_secs(600)), None, "nothing to say");
    }

    #[test]
    fn recent_messages_recognise_redeliveries_and_forget_the_oldest() {
        let mut recent = RecentMessages::new(2);
        recent.remember("t/ack", b"a");
        assert!(recent.contains("t/ack", b"a"));
        assert!(!recent.contains("u/ack", b"a"), "the same bytes on another topic are another message");
        recent.remember("t/ack", b"b");
        recent.remember("t/ack", b"c");
        assert!(!recent.contains("t/ack", b"a") && recent.contains("t/ack", b"c"));
    }

    #[test]
    fn counters_count_by_reason() {
        let counters = DropCounters::default();
        counters.add(DropReason::Oversized);
        counters.add(DropReason::TooMany);
        counters.add(DropReason::TooMany);
        assert_eq!((counters.get(DropReason::TooMany), counters.total()), (2, 3));
    }
}
