//! The incident lifecycle: one incident per real-world problem. Per (zone, kind) a slot opens
//! an incident when its rule raises (and no cool-down is running), sends `updated` only when
//! the number of objects changed meaningfully (the new count held for
//! [`COUNT_HELD_ANALYSES`] analyses in a row, and at least `update_min_interval_ms` after the
//! last event) or a heartbeat is due, and clears once the problem has been
//! absent for `clear_after_ms`; a cool-down then keeps the same zone from flapping. Ids are
//! stable: `camera:zone:kind:start_ms`, with a sequence number per event so consumers can
//! de-duplicate by (incident_id, seq). The whole book serialises, so incidents survive a
//! restart. Pure: time is passed in.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::rules::{IncidentKind, ObjectRef, ZoneSignal};
use crate::zones::LifecycleParams;

/// A new count is news only once it was seen in this many analyses in a row: one frame of
/// detector flicker or a rider passing through the zone is not (issue 11: 5 open incidents
/// sent 917 updates in 8 minutes, one per analysed frame, each with two JPEGs).
pub const COUNT_HELD_ANALYSES: u32 = 3;

/// What happened to an incident.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A new incident.
    Opened,
    /// Still there; significantly changed, or a heartbeat.
    Updated,
    /// Gone.
    Cleared,
}

/// One incident event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IncidentEvent {
    /// Stable id: `camera:zone:kind:start_ms`.
    pub incident_id: String,
    /// 1 for `opened`, then +1 per event.
    pub seq: u32,
    /// What happened.
    pub event: EventKind,
    /// Kind of incident.
    pub kind: IncidentKind,
    /// Camera id.
    pub camera: String,
    /// Zone id.
    pub zone: String,
    /// Time of the event on the camera's clock (wall-clock ms live, footage ms in replay).
    pub t_ms: i64,
    /// When the incident opened, same clock.
    pub started_ms: i64,
    /// Confidence, 0–1.
    pub score: f32,
    /// Objects supporting it.
    pub count: usize,
    /// One line for people.
    pub detail: String,
    /// The supporting objects (boxes normalised).
    pub objects: Vec<ObjectRef>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OpenIncident {
    id: String,
    started_ms: i64,
    seq: u32,
    last_present_ms: i64,
    last_sent_ms: i64,
    last_count: usize,
    /// A count other than `last_count` and in how many analyses in a row it was seen.
    /// Defaulted so books saved before it existed still load.
    #[serde(default)]
    pending_count: Option<(usize, u32)>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Slot {
    open: Option<OpenIncident>,
    cooldown_until_ms: i64,
}

/// All incident slots of one camera.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct IncidentBook {
    camera: String,
    slots: BTreeMap<String, Slot>,
}

impl IncidentBook {
    /// An empty book for `camera`.
    pub fn new(camera: &str) -> Self {
        IncidentBook { camera: camera.to_string(), slots: BTreeMap::new() }
    }

    /// Ids of the open incidents.
    pub fn open_incidents(&self) -> Vec<&str> {
        self.slots.values().filter_map(|slot| slot.open.as_ref().map(|open| open.id.as_str())).collect()
    }

    /// Clears the open incidents of zones that are gone (removed from the config, or given
    /// another kind): `keep(zone, kind)` says which still exist. Their slots are forgotten, so
    /// a zone re-added later starts afresh.
    pub fn retire(&mut self, now_ms: i64, keep: &dyn Fn(&str, IncidentKind) -> bool) -> Vec<IncidentEvent> {
        let mut events = Vec::new();
        let camera = self.camera.clone();
        self.slots.retain(|key, slot| {
            let Some((zone, kind)) = key
                .rsplit_once('/')
                .and_then(|(zone, kind)| IncidentKind::from_name(kind).map(|kind| (zone.to_string(), kind)))
            else {
                return false;
            };
            if keep(&zone, kind) {
                return true;
            }
            if let Some(open) = slot.open.take() {
                events.push(IncidentEvent {
                    incident_id: open.id,
                    seq: open.seq + 1,
                    event: EventKind::Cleared,
                    kind,
                    camera: camera.clone(),
                    zone,
                    t_ms: now_ms,
                    started_ms: open.started_ms,
                    score: 0.0,
                    count: 0,
                    detail: "zone removed from the config".to_string(),
                    objects: Vec::new(),
                });
            }
            false
        });
        events
    }

    /// Applies a zone's signal at `now_ms`; returns the event it causes, if any.
    pub fn update(
        &mut self,
        now_ms: i64,
        zone: &str,
        kind: IncidentKind,
        signal: &ZoneSignal,
        params: &LifecycleParams,
    ) -> Option<IncidentEvent> {
        let camera = self.camera.clone();
        let slot = self.slots.entry(format!("{zone}/{}", kind.as_str())).or_default();
        let event = |open: &OpenIncident, event: EventKind| IncidentEvent {
            incident_id: open.id.clone(),
            seq: open.seq,
            event,
            kind,
            camera: camera.clone(),
            zone: zone.to_string(),
            t_ms: now_ms,
            started_ms: open.started_ms,
            score: signal.score,
            count: signal.count,
            detail: signal.detail.clone(),
            objects: signal.objects.clone(),
        };
        match slot.open.as_mut() {
            None => {
                if !signal.raise || now_ms < slot.cooldown_until_ms {
                    return None;
                }
                let open = OpenIncident {
                    id: format!("{camera}:{zone}:{}:{now_ms}", kind.as_str()),
                    started_ms: now_ms,
                    seq: 1,
                    last_present_ms: now_ms,
                    last_sent_ms: now_ms,
                    last_count: signal.count,
                    pending_count: None,
                };
                let opened = event(&open, EventKind::Opened);
                slot.open = Some(open);
                Some(opened)
            }
            Some(open) if signal.present || signal.raise => {
                open.last_present_ms = now_ms;
                open.pending_count = match open.pending_count {
                    _ if signal.count == open.last_count => None,
                    Some((count, seen)) if count == signal.count => Some((count, seen.saturating_add(1))),
                    _ => Some((signal.count, 1)),
                };
                let since_sent_ms = now_ms - open.last_sent_ms;
                let held = open.pending_count.is_some_and(|(_, seen)| seen >= COUNT_HELD_ANALYSES);
                let changed = held && since_sent_ms >= params.update_min_interval_ms;
                let heartbeat = since_sent_ms >= params.heartbeat_ms;
                if !changed && !heartbeat {
                    return None;
                }
                open.seq += 1;
                open.last_sent_ms = now_ms;
                open.last_count = signal.count;
                open.pending_count = None;
                Some(event(open, EventKind::Updated))
            }
            Some(open) => {
                if now_ms - open.last_present_ms < params.clear_after_ms {
                    return None;
                }
                open.seq += 1;
                let cleared = event(open, EventKind::Cleared);
                slot.open = None;
                slot.cooldown_until_ms = now_ms + params.cooldown_ms;
                Some(cleared)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARAMS: LifecycleParams = LifecycleParams {
        clear_after_ms: 60_000,
        cooldown_ms: 300_000,
        heartbeat_ms: 600_000,
        update_min_interval_ms: 60_000,
    };

    fn signal(raise: bool, present: bool, count: usize) -> ZoneSignal {
        ZoneSignal { raise, present, score: 0.8, count, ..ZoneSignal::default() }
    }

    #[test]
    #[allow(clippy::type_complexity)] // a table of steps reads best inline
    fn one_incident_per_problem_with_hysteresis_heartbeat_and_cooldown() {
        let mut book = IncidentBook::new("gate-3");
        // (t, raise, present, count, expected event and seq)
        let table: &[(i64, bool, bool, usize, Option<(EventKind, u32)>)] = &[
            (0, false, true, 1, None), // present but not yet raised (dwell running)
            (10_000, true, true, 1, Some((EventKind::Opened, 1))),
            (20_000, true, true, 1, None),                            // unchanged: silence
            (70_000, true, true, 2, None),                            // a second bike: seen once
            (72_000, true, true, 2, None),                            // twice
            (74_000, true, true, 2, Some((EventKind::Updated, 2))),   // held 3 analyses, 60 s after opening
            (80_000, false, false, 0, None),                          // gone, but not for long
            (90_000, false, true, 2, None),                           // back (detector flicker)
            (674_000, false, true, 2, Some((EventKind::Updated, 3))), // heartbeat after 10 min
            (680_000, false, false, 0, None),
            (733_999, false, false, 0, None),
            (734_000, false, false, 0, Some((EventKind::Cleared, 4))), // absent 60 s since last seen at 674 s
            (750_000, true, true, 1, None),                            // cool-down
            (1_100_000, true, true, 1, Some((EventKind::Opened, 1))),  // a new incident
        ];
        let mut ids = Vec::new();
        for &(t, raise, present, count, expected) in table {
            let event =
                book.update(t, "pavement", IncidentKind::MisparkedBike, &signal(raise, present, count), &PARAMS);
            assert_eq!(event.as_ref().map(|e| (e.event, e.seq)), expected, "at {t} ms");
            if let Some(event) = event {
                ids.push(event.incident_id);
            }
        }
        assert_eq!(ids[0], "gate-3:pavement:misparked_bike:10000");
        assert!(ids[..4].iter().all(|id| *id == ids[0]), "one id for the whole incident: {ids:?}");
        assert_eq!(ids[4], "gate-3:pavement:misparked_bike:1100000");
    }

    /// Updates of one open incident for a sequence of counts, one analysis every 2 s from
    /// t = 2 s (the incident opened at 0 with a count of 1): (t, count, seq) per update.
    fn updates_for(counts: &[usize]) -> Vec<(i64, usize, u32)> {
        let mut book = IncidentBook::new("gate-3");
        book.update(0, "pavement", IncidentKind::MisparkedBike, &signal(true, true, 1), &PARAMS).unwrap();
        let mut sent = Vec::new();
        for (i, &count) in counts.iter().enumerate() {
            let t = 2_000 * (i as i64 + 1);
            if let Some(event) =
                book.update(t, "pavement", IncidentKind::MisparkedBike, &signal(true, true, count), &PARAMS)
            {
                assert_eq!(event.event, EventKind::Updated);
                sent.push((t, event.count, event.seq));
            }
        }
        sent
    }

    #[test]
    fn count_changes_are_rate_limited_and_must_hold() {
        // (what, counts per analysis, expected updates)
        let flicker: Vec<usize> = (0..200).map(|i| 1 + i % 2).collect();
        let rider: Vec<usize> = (0..200).map(|i| if i % 20 < 2 { 2 } else { 1 }).collect();
        let second_bike: Vec<usize> = [vec![1; 10], vec![2; 190]].concat();
        let third_soon_after: Vec<usize> = [vec![2; 40], vec![3; 160]].concat();
        type Sent = (i64, usize, u32);
        let table: &[(&str, &[usize], &[Sent])] = &[
            ("every frame 1↔2 (flicker): never held, silent until the heartbeat", &flicker, &[]),
            ("a rider passing for 2 frames every 40 s: never held", &rider, &[]),
            // Seen at 22, 24, 26 s (held), but the last event (opened) is under 60 s old.
            ("a second bike stays: one update, once 60 s passed", &second_bike, &[(60_000, 2, 2)]),
            // 2 held at 6 s, sent at 60 s; 3 held at 86 s, but 60 s after the last update.
            (
                "changes in quick succession: at most one a minute",
                &third_soon_after,
                &[(60_000, 2, 2), (120_000, 3, 3)],
            ),
        ];
        for (what, counts, expected) in table {
            assert_eq!(updates_for(counts), *expected, "{what}");
        }
        // 200 analyses of flicker for 20 minutes at one per 6 s: only heartbeats.
        let mut book = IncidentBook::new("gate-3");
        book.update(0, "pavement", IncidentKind::MisparkedBike, &signal(true, true, 1), &PARAMS).unwrap();
        let updates = (1..=200)
            .filter_map(|i| {
                let count = 1 + (i % 2) as usize;
                book.update(i * 6_000, "pavement", IncidentKind::MisparkedBike, &signal(true, true, count), &PARAMS)
            })
            .map(|event| event.t_ms)
            .collect::<Vec<_>>();
        assert_eq!(updates, vec![600_000, 1_200_000], "heartbeats only");
    }

    #[test]
    fn a_book_saved_before_the_rate_limit_still_loads() {
        let old = r#"{"camera":"yard","slots":{"bins/trash_overflow":{"open":{"id":"yard:bins:trash_overflow:0",
            "started_ms":0,"seq":1,"last_present_ms":0,"last_sent_ms":0,"last_count":0},"cooldown_until_ms":0}}}"#;
        let book: IncidentBook = serde_json::from_str(old).unwrap();
        assert_eq!(book.open_incidents(), vec!["yard:bins:trash_overflow:0"]);
    }

    #[test]
    fn incidents_of_removed_zones_are_cleared_and_forgotten() {
        let mut book = IncidentBook::new("gate-3");
        let raise = signal(true, true, 1);
        book.update(0, "pavement", IncidentKind::MisparkedBike, &raise, &PARAMS).unwrap();
        book.update(0, "door", IncidentKind::MisparkedBike, &raise, &PARAMS).unwrap();
        let events = book.retire(5_000, &|zone, _| zone == "door");
        assert_eq!(events.len(), 1);
        let cleared = &events[0];
        assert_eq!(
            (cleared.event, cleared.seq, cleared.zone.as_str(), cleared.incident_id.as_str(), cleared.t_ms),
            (EventKind::Cleared, 2, "pavement", "gate-3:pavement:misparked_bike:0", 5_000)
        );
        assert_eq!(book.open_incidents(), vec!["gate-3:door:misparked_bike:0"]);
        // Re-added, the zone has no cool-down left over: it starts afresh.
        let reopened = book.update(6_000, "pavement", IncidentKind::MisparkedBike, &raise, &PARAMS).unwrap();
        assert_eq!((reopened.event, reopened.seq), (EventKind::Opened, 1));
        assert!(book.retire(7_000, &|_, _| true).is_empty());
    }

    #[test]
    fn survives_a_restart_through_serialisation() {
        let mut book = IncidentBook::new("yard");
        book.update(0, "bins", IncidentKind::TrashOverflow, &signal(true, true, 0), &PARAMS).unwrap();
        let saved = serde_json::to_string(&book).unwrap();
        let mut restored: IncidentBook = serde_json::from_str(&saved).unwrap();
        assert_eq!(restored, book);
        assert_eq!(restored.update(5_000, "bins", IncidentKind::TrashOverflow, &signal(true, true, 0), &PARAMS), None);
        let cleared = restored.update(70_000, "bins", IncidentKind::TrashOverflow, &signal(false, false, 0), &PARAMS);
        let cleared = cleared.unwrap();
        assert_eq!(
            (cleared.event, cleared.seq, cleared.incident_id.as_str()),
            (EventKind::Cleared, 2, "yard:bins:trash_overflow:0")
        );
    }
}
