//! Misparked shared bikes: a bike (or a configured class such as motorcycle, for e-bikes)
//! that stays stationary in a no-parking zone for the dwell time, or a pile-up of K bikes.
//! A rider passing through never stays stationary; a bike stopping briefly never reaches the
//! dwell. Any bike still in the zone keeps an open incident open (it clears once the zone is
//! clear for the lifecycle's `clear_after_ms`).

use super::{describe_ms, ObjectRef, ZoneSignal};
use crate::track::Track;
use crate::zones::{MisparkedParams, Zone};

/// Evaluates one no-parking zone.
pub fn evaluate(zone: &Zone, class_ids: &[u16], params: &MisparkedParams, tracks: &[Track], now_ms: i64) -> ZoneSignal {
    let in_zone: Vec<&Track> =
        tracks.iter().filter(|t| t.confirmed && zone.admits(class_ids, t.class_id, t.score, &t.bbox)).collect();
    let dwelling: Vec<&Track> =
        in_zone.iter().copied().filter(|t| t.stationary_ms(now_ms) >= params.dwell_ms).collect();
    let piled = in_zone.iter().filter(|t| t.stationary_ms(now_ms) >= params.pile_up_dwell_ms).count();
    let pile_up = piled >= params.pile_up_count;
    let longest = in_zone.iter().map(|t| t.stationary_ms(now_ms)).max().unwrap_or(0);
    let supporting: &[&Track] = if pile_up || dwelling.is_empty() { &in_zone } else { &dwelling };
    ZoneSignal {
        raise: !dwelling.is_empty() || pile_up,
        present: !in_zone.is_empty(),
        score: supporting.iter().map(|t| t.score).fold(0.0, f32::max),
        count: in_zone.len(),
        detail: match (in_zone.len(), pile_up) {
            (0, _) => "zone clear".to_string(),
            (count, true) => format!("pile-up: {count} bikes, longest stationary {}", describe_ms(longest)),
            (1, false) => format!("1 bike stationary {}", describe_ms(longest)),
            (count, false) => format!("{count} bikes, longest stationary {}", describe_ms(longest)),
        },
        objects: supporting
            .iter()
            .map(|t| ObjectRef { track_id: t.id, class_id: t.class_id, bbox: t.bbox, score: t.score })
            .collect(),
    }
}
