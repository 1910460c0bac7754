//! Matching PUBACKs to outbox records, pure. rumqttc's `publish()` returns no packet id; it
//! reports `Outgoing::Publish(pkid)` when it writes a publish, in the order publishes were
//! requested, as long as no packet id collides. A [`Window`] lives for one connection (the
//! event loop is rebuilt on every reconnect, so nothing queued in an old one is sent again
//! behind our back) and holds fewer requests than rumqttc's packet-id range, so ids never
//! collide and the FIFO match is exact. Time is passed in.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// What a publish carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Carried {
    /// An outbox record: removed from the outbox on its PUBACK.
    Record(u64),
    /// A retained status message: nothing to remove.
    Status,
}

/// The broker acknowledged a packet id we have no publish for: the match is lost and the
/// connection must be rebuilt (everything unacknowledged is sent again).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Desync(pub u16);

/// Publishes requested from, written by and awaiting acknowledgement on one connection.
#[derive(Debug)]
pub struct Window {
    capacity: usize,
    requested: VecDeque<Carried>,
    in_flight: HashMap<u16, (Carried, Instant)>,
}

impl Window {
    /// A window of `capacity` publishes (must stay below rumqttc's `inflight` setting).
    pub fn new(capacity: usize) -> Self {
        Window { capacity, requested: VecDeque::new(), in_flight: HashMap::new() }
    }

    /// Changes how many publishes may be outstanding (the broker's Receive Maximum, learnt
    /// from its CONNACK, may be lower than ours). Already outstanding ones stay.
    pub fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity;
    }

    /// How many publishes may be outstanding.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// How many more publishes may be requested now.
    pub fn free(&self) -> usize {
        self.capacity.saturating_sub(self.requested.len() + self.in_flight.len())
    }

    /// Publishes requested or in flight.
    pub fn len(&self) -> usize {
        self.requested.len() + self.in_flight.len()
    }

    /// Whether nothing is outstanding.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A publish was handed to the client.
    pub fn requested(&mut self, carried: Carried) {
        self.requested.push_back(carried);
    }

    /// The client wrote the oldest requested publish with `pkid`.
    pub fn written(&mut self, pkid: u16, now: Instant) -> Result<(), Desync> {
        let carried = self.requested.pop_front().ok_or(Desync(pkid))?;
        if self.in_flight.insert(pkid, (carried, now)).is_some() {
            return Err(Desync(pkid));
        }
        Ok(())
    }

    /// The broker acknowledged `pkid`.
    pub fn acknowledged(&mut self, pkid: u16) -> Result<Carried, Desync> {
        self.in_flight.remove(&pkid).map(|(carried, _)| carried).ok_or(Desync(pkid))
    }

    /// How long the oldest written publish has waited for its PUBACK.
    pub fn oldest_wait(&self, now: Instant) -> Option<Duration> {
        self.in_flight.values().map(|(_, at)| now.saturating_duration_since(*at)).max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_match_publishes_in_request_order_whatever_the_ack_order() {
        let now = Instant::now();
        let mut window = Window::new(3);
        for id in [7, 8] {
            window.requested(Carried::Record(id));
        }
        window.requested(Carried::Status);
        assert_eq!(window.free(), 0);
        window.written(1, now).unwrap();
        window.written(2, now).unwrap();
        window.written(3, now).unwrap();
        assert_eq!(window.acknowledged(2), Ok(Carried::Record(8)));
        assert_eq!(window.acknowledged(3), Ok(Carried::Status));
        assert_eq!(window.acknowledged(1), Ok(Carried::Record(7)));
        assert!(window.is_empty());
    }

    #[test]
    fn unknown_or_unrequested_packet_ids_are_a_desync() {
        let now = Instant::now();
        let mut window = Window::new(2);
        assert_eq!(window.written(1, now), Err(Desync(1)), "written but never requested");
        assert_eq!(window.acknowledged(9), Err(Desync(9)));
        window.requested(Carried::Record(1));
        window.requested(Carried::Record(2));
        window.written(4, now).unwrap();
        assert_eq!(window.written(4, now), Err(Desync(4)), "a packet id reused while in flight");
    }

    #[test]
    fn the_oldest_wait_is_what_a_hung_broker_is_judged_by() {
        let start = Instant::now();
        let mut window = Window::new(2);
        window.requested(Carried::Record(1));
        window.written(1, start).unwrap();
        assert_eq!(window.oldest_wait(start + Duration::from_secs(31)), Some(Duration::from_secs(31)));
        window.acknowledged(1).unwrap();
        assert_eq!(window.oldest_wait(start + Duration::from_secs(40)), None);
    }
}
