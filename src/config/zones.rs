//! Validation of `[[cameras.<id>.zones]]` into [`crate::zones::Zone`]: per-kind defaults, keys
//! that do not apply to a kind refused, polygons checked.

use std::path::Path;
use std::time::Duration;

use super::raw::RawZone;
use super::validate::{resolve, Problems};
use crate::geometry::{PointNorm, Polygon};
use crate::zones::{FallParams, LifecycleParams, MisparkedParams, TrashParams, TrashSource, Zone, ZoneKind, ZoneRule};

/// Validates a camera's zones; invalid zones are left out (their problems recorded).
pub(super) fn validate_zones(
    raw_zones: &[RawZone],
    camera_path: &str,
    base_dir: &Path,
    problems: &mut Problems,
) -> Vec<Zone> {
    let mut zones: Vec<Zone> = Vec::new();
    for (index, raw) in raw_zones.iter().enumerate() {
        let path = format!("{camera_path}.zones[{index}]");
        if let Some(zone) = validate_zone(raw, &path, base_dir, problems) {
            if zones.iter().any(|z| z.id == zone.id) {
                problems.push(format!("{path}.id"), format!("duplicate zone id {:?}", zone.id));
            } else {
                zones.push(zone);
            }
        }
    }
    zones
}

fn validate_zone(raw: &RawZone, path: &str, base_dir: &Path, problems: &mut Problems) -> Option<Zone> {
    let before = problems.0.len();
    let id = match raw.id.as_deref() {
        None => {
            problems.push(format!("{path}.id"), "is required");
            String::new()
        }
        Some(id)
            if id.is_empty()
                || id.len() > 64
                || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') =>
        {
            problems.push(
                format!("{path}.id"),
                format!("zone id {id:?} must be 1-64 characters of A-Z, a-z, 0-9, '-' and '_'"),
            );
            String::new()
        }
        Some(id) => id.to_string(),
    };
    let kind = match raw.kind.as_deref() {
        Some("no_parking") => ZoneKind::NoParking,
        Some("bin_area") => ZoneKind::BinArea,
        Some("fall_watch") => ZoneKind::FallWatch,
        Some("mask") => ZoneKind::Mask,
        Some(other) => {
            problems.push(
                format!("{path}.kind"),
                format!("unknown kind {other:?}; expected \"no_parking\", \"bin_area\", \"fall_watch\" or \"mask\""),
            );
            return None;
        }
        None => {
            problems.push(format!("{path}.kind"), "is required");
            return None;
        }
    };
    let polygon = validate_polygon(raw.polygon.as_deref(), &format!("{path}.polygon"), problems);
    refuse_foreign_keys(raw, kind, path, problems);

    let fraction = |problems: &mut Problems, key: &str, value: Option<f32>, default: f32| -> f32 {
        let value = value.unwrap_or(default);
        if !(0.0..=1.0).contains(&value) {
            problems.push(format!("{path}.{key}"), format!("{value} must be in [0, 1]"));
        }
        value
    };
    let millis = |problems: &mut Problems, key: &str, value: Option<i64>, default: i64| -> i64 {
        let value = value.unwrap_or(default);
        let max = Duration::from_secs(7 * 24 * 3600).as_millis() as i64;
        if !(0..=max).contains(&value) {
            problems.push(format!("{path}.{key}"), format!("{value} is out of range 0..={max} (milliseconds)"));
        }
        value
    };
    let (default_classes, default_min_area, default_max_area, lifecycle_defaults): (
        &[&str],
        f32,
        f32,
        (i64, i64, i64),
    ) = match kind {
        ZoneKind::NoParking => (&["bicycle", "motorcycle"], 0.0003, 0.25, (120_000, 600_000, 1_800_000)),
        ZoneKind::BinArea => (&[], 0.0, 1.0, (600_000, 1_800_000, 3_600_000)),
        ZoneKind::FallWatch => (&["person"], 0.001, 0.6, (30_000, 300_000, 300_000)),
        ZoneKind::Mask => (&[], 0.0, 1.0, (0, 0, 0)),
    };
    let classes = raw.classes.clone().unwrap_or_else(|| default_classes.iter().map(|c| c.to_string()).collect());
    let min_score = fraction(problems, "min_score", raw.min_score, 0.4);
    let min_area = fraction(problems, "min_area", raw.min_area, default_min_area);
    let max_area = fraction(problems, "max_area", raw.max_area, default_max_area);
    if min_area > max_area {
        problems.push(format!("{path}.max_area"), "must not be less than min_area");
    }
    let lifecycle = LifecycleParams {
        clear_after_ms: millis(problems, "clear_after_ms", raw.clear_after_ms, lifecycle_defaults.0),
        cooldown_ms: millis(problems, "cooldown_ms", raw.cooldown_ms, lifecycle_defaults.1),
        heartbeat_ms: millis(problems, "heartbeat_ms", raw.heartbeat_ms, lifecycle_defaults.2).max(1000),
    };
    let rule = match kind {
        ZoneKind::NoParking => ZoneRule::Misparked(MisparkedParams {
            dwell_ms: millis(problems, "dwell_ms", raw.dwell_ms, 300_000),
            pile_up_count: problems.count(&format!("{path}.pile_up_count"), raw.pile_up_count, 5, 1, 1000),
            pile_up_dwell_ms: millis(problems, "pile_up_dwell_ms", raw.pile_up_dwell_ms, 60_000),
        }),
        ZoneKind::BinArea => {
            let (overflow_default, normal_default) = if raw.classifier.is_some() { (0.6, 0.4) } else { (0.15, 0.06) };
            let overflow_share = fraction(problems, "overflow_share", raw.overflow_share, overflow_default);
            let normal_share = fraction(problems, "normal_share", raw.normal_share, normal_default);
            if normal_share >= overflow_share {
                problems
                    .push(format!("{path}.normal_share"), "must be below overflow_share (the gap is the hysteresis)");
            }
            let reference = raw.reference.as_deref().map(|file| resolve(base_dir, file));
            if let Some(reference) = &reference {
                if !reference.is_file() {
                    problems.push(
                        format!("{path}.reference"),
                        format!("{} does not exist (capture it with `gateway reference`)", reference.display()),
                    );
                }
            }
            let source = match (&raw.classifier, reference) {
                (Some(_), Some(_)) => {
                    problems.push(format!("{path}.classifier"), "set either classifier or reference, not both");
                    TrashSource::ReferenceDiff { reference: None }
                }
                (Some(classifier), None) => {
                    let manifest = resolve(base_dir, classifier);
                    if !manifest.is_file() {
                        problems.push(format!("{path}.classifier"), format!("{} does not exist", manifest.display()));
                    }
                    TrashSource::Classifier { manifest }
                }
                (None, reference) => TrashSource::ReferenceDiff { reference },
            };
            ZoneRule::Trash(TrashParams {
                raise_after_ms: millis(problems, "raise_after_ms", raw.raise_after_ms, 600_000),
                overflow_share,
                normal_share,
                source,
            })
        }
        ZoneKind::FallWatch => ZoneRule::Fall(FallParams {
            down_ms: millis(problems, "down_ms", raw.down_ms, 20_000),
            lying_aspect: raw.lying_aspect.unwrap_or(1.0),
            collapse_ratio: fraction(problems, "collapse_ratio", raw.collapse_ratio, 0.5),
            vanish_hold_ms: millis(problems, "vanish_hold_ms", raw.vanish_hold_ms, 30_000),
            rotated_pass: raw.rotated_pass.unwrap_or(false),
        }),
        ZoneKind::Mask => ZoneRule::Mask,
    };
    if let ZoneRule::Fall(params) = &rule {
        if !(0.3..=5.0).contains(&params.lying_aspect) {
            problems.push(format!("{path}.lying_aspect"), format!("{} is out of range 0.3..=5.0", params.lying_aspect));
        }
    }
    if problems.0.len() > before {
        return None;
    }
    Some(Zone { id, kind, polygon: polygon?, classes, min_score, min_area, max_area, rule, lifecycle })
}

fn validate_polygon(points: Option<&[[f32; 2]]>, path: &str, problems: &mut Problems) -> Option<Polygon> {
    let Some(points) = points else {
        problems.push(path, "is required");
        return None;
    };
    if points.len() < 3 {
        problems.push(path, format!("needs at least 3 points, has {}", points.len()));
        return None;
    }
    if let Some((index, point)) = points.iter().enumerate().find(|(_, p)| !p.iter().all(|v| (0.0..=1.0).contains(v))) {
        problems.push(
            format!("{path}[{index}]"),
            format!("{point:?} is outside the frame: coordinates are normalised to 0–1"),
        );
        return None;
    }
    let polygon = Polygon { points: points.iter().map(|&[x, y]| PointNorm { x, y }).collect() };
    if polygon.doubled_area().abs() < 1e-6 {
        problems.push(path, "has no area (all points on a line)");
        return None;
    }
    Some(polygon)
}

/// Refuses keys that belong to another kind of zone, so a typo'd kind never silently ignores
/// the parameters an ops person set.
fn refuse_foreign_keys(raw: &RawZone, kind: ZoneKind, path: &str, problems: &mut Problems) {
    let keys: [(&str, bool, &[ZoneKind]); 17] = [
        ("classifier", raw.classifier.is_some(), &[ZoneKind::BinArea]),
        ("classes", raw.classes.is_some(), &[ZoneKind::NoParking, ZoneKind::FallWatch]),
        ("min_score", raw.min_score.is_some(), &[ZoneKind::NoParking, ZoneKind::FallWatch]),
        ("min_area", raw.min_area.is_some(), &[ZoneKind::NoParking, ZoneKind::FallWatch]),
        ("max_area", raw.max_area.is_some(), &[ZoneKind::NoParking, ZoneKind::FallWatch]),
        (
            "clear_after_ms",
            raw.clear_after_ms.is_some(),
            &[ZoneKind::NoParking, ZoneKind::BinArea, ZoneKind::FallWatch],
        ),
        ("cooldown_ms", raw.cooldown_ms.is_some(), &[ZoneKind::NoParking, ZoneKind::BinArea, ZoneKind::FallWatch]),
        ("dwell_ms", raw.dwell_ms.is_some(), &[ZoneKind::NoParking]),
        ("pile_up_count", raw.pile_up_count.is_some(), &[ZoneKind::NoParking]),
        ("pile_up_dwell_ms", raw.pile_up_dwell_ms.is_some(), &[ZoneKind::NoParking]),
        ("raise_after_ms", raw.raise_after_ms.is_some(), &[ZoneKind::BinArea]),
        ("overflow_share", raw.overflow_share.is_some(), &[ZoneKind::BinArea]),
        ("normal_share", raw.normal_share.is_some(), &[ZoneKind::BinArea]),
        ("reference", raw.reference.is_some(), &[ZoneKind::BinArea]),
        ("down_ms", raw.down_ms.is_some(), &[ZoneKind::FallWatch]),
        ("lying_aspect", raw.lying_aspect.is_some() || raw.collapse_ratio.is_some(), &[ZoneKind::FallWatch]),
        ("vanish_hold_ms", raw.vanish_hold_ms.is_some() || raw.rotated_pass.is_some(), &[ZoneKind::FallWatch]),
    ];
    for (key, set, kinds) in keys {
        if set && !kinds.contains(&kind) {
            problems.push(format!("{path}.{key}"), format!("does not apply to {} zones", kind.as_str()));
        }
    }
}
