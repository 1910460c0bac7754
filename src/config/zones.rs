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
        update_min_interval_ms: millis(
            problems,
            "update_min_interval_ms",
            raw.update_min_interval_ms,
            if kind == ZoneKind::Mask { 0 } else { 60_000 },
        ),
    };
    let rule = match kind {
        ZoneKind::NoParking => ZoneRule::Misparked(MisparkedParams {
            dwell_ms: millis(problems, "dwell_ms", raw.dwell_ms, 300_000),
            pile_up_count: problems.count(&format!("{path}.pile_up_count"), raw.pile_up_count, 5, 1, 1000),
            pile_up_dwell_ms: millis(problems, "pile_up_dwell_ms", raw.pile_up_dwell_ms, 60_000),
        }),
        ZoneKind::BinArea => {
            let source_kind = match raw.source.as_deref() {
                Some(kind @ ("model" | "reference" | "classifier")) => kind,
                Some(other) => {
                    problems.push(
                        format!("{path}.source"),
                        format!("unknown source {other:?}; expected \"model\", \"reference\" or \"classifier\""),
                    );
                    "model"
                }
                None if raw.classifier.is_some() => "classifier",
                None if raw.reference.is_some() => "reference",
                None => "model",
            };
            for (key, set, belongs_to) in [
                ("classifier", raw.classifier.is_some(), "classifier"),
                ("reference", raw.reference.is_some(), "reference"),
                ("model", raw.model.is_some(), "model"),
            ] {
                if set && source_kind != belongs_to {
                    problems.push(
                        format!("{path}.{key}"),
                        format!("applies to source = \"{belongs_to}\", this zone's source is \"{source_kind}\""),
                    );
                }
            }
            let (overflow_default, normal_default) = if source_kind == "reference" { (0.15, 0.06) } else { (0.6, 0.4) };
            let overflow_share = fraction(problems, "overflow_share", raw.overflow_share, overflow_default);
            let normal_share = fraction(problems, "normal_share", raw.normal_share, normal_default);
            if normal_share >= overflow_share {
                problems
                    .push(format!("{path}.normal_share"), "must be below overflow_share (the gap is the hysteresis)");
            }
            let existing = |problems: &mut Problems, key: &str, file: &str, hint: &str| {
                let resolved = resolve(base_dir, file);
                if !resolved.is_file() {
                    problems.push(format!("{path}.{key}"), format!("{} does not exist{hint}", resolved.display()));
                }
                resolved
            };
            let source = match source_kind {
                "classifier" => match raw.classifier.as_deref() {
                    Some(classifier) => {
                        TrashSource::Classifier { manifest: existing(problems, "classifier", classifier, "") }
                    }
                    None => {
                        problems.push(format!("{path}.classifier"), "is required with source = \"classifier\"");
                        TrashSource::Model { model: None }
                    }
                },
                "reference" => TrashSource::ReferenceDiff {
                    reference: raw.reference.as_deref().map(|file| {
                        let reference = resolve(base_dir, file);
                        if !is_picture(&reference) {
                            // One message whatever the cause (missing, unreadable, not a
                            // picture), so a zone edit cannot be used to learn which files
                            // exist (issue 11).
                            problems.push(
                                format!("{path}.reference"),
                                format!(
                                    "{} is not a readable PNG or JPEG picture (capture one with `gateway reference`)",
                                    reference.display()
                                ),
                            );
                        }
                        reference
                    }),
                },
                _ => {
                    TrashSource::Model { model: raw.model.as_deref().map(|file| existing(problems, "model", file, "")) }
                }
            };
            ZoneRule::Trash(TrashParams {
                raise_after_ms: millis(problems, "raise_after_ms", raw.raise_after_ms, 600_000),
                overflow_share,
                normal_share,
                source,
            })
        }
        ZoneKind::FallWatch => ZoneRule::Fall(FallParams {
            down_ms: millis(problems, "down_ms", raw.down_ms, 5_000),
            lying_aspect: raw.lying_aspect.unwrap_or(1.0),
            collapse_ratio: fraction(problems, "collapse_ratio", raw.collapse_ratio, 0.5),
            vanish_hold_ms: millis(problems, "vanish_hold_ms", raw.vanish_hold_ms, 30_000),
            fall_window_ms: millis(problems, "fall_window_ms", raw.fall_window_ms, 3_000),
            unwitnessed_down_ms: millis(problems, "unwitnessed_down_ms", raw.unwitnessed_down_ms, 120_000),
            rotated_pass: raw.rotated_pass.unwrap_or(false),
            pose: raw.pose.unwrap_or(false),
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

/// Whether `path` is a picture `gateway run` will load ([`crate::evidence::read_picture`]:
/// a bounded, complete PNG or JPEG). A reference that is not would make `run` exit 64 at its
/// next start (and the unit's `RestartPreventExitStatus=64` leave it down), so the config is
/// refused now.
fn is_picture(path: &Path) -> bool {
    crate::evidence::read_picture(path).is_ok()
}

/// Whether every point lies on one line (within 1e-6 of the frame), a polygon with no area.
fn on_one_line(points: &[[f32; 2]]) -> bool {
    let origin = points[0];
    let distance = |p: &[f32; 2]| (p[0] - origin[0]).hypot(p[1] - origin[1]);
    let Some(far) = points.iter().max_by(|a, b| distance(a).total_cmp(&distance(b))) else { return true };
    let length = distance(far);
    if length < 1e-6 {
        return true;
    }
    points.iter().all(|p| {
        let cross = (far[0] - origin[0]) * (p[1] - origin[1]) - (far[1] - origin[1]) * (p[0] - origin[0]);
        (cross / length).abs() < 1e-6
    })
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
    if on_one_line(points) {
        problems.push(path, "has no area (all points on a line)");
        return None;
    }
    // Crossing before area: a symmetric bow tie's signed area is zero, and "no area" would
    // mislead.
    if let Some((first, second)) = polygon.self_intersection() {
        let n = points.len();
        problems.push(
            path,
            format!(
                "crosses itself: the edge from point {first} to {} meets the edge from point {second} to {} \
                 (draw the outline without crossing lines)",
                (first + 1) % n,
                (second + 1) % n
            ),
        );
        return None;
    }
    if polygon.doubled_area().abs() < 1e-6 {
        problems.push(path, "has no area (all points on a line)");
        return None;
    }
    Some(polygon)
}

/// The parameter keys of a zone, the kinds they apply to, and what they mean (for
/// [`refuse_foreign_keys`] and the zone editor).
const ZONE_KEYS: [(&str, &[ZoneKind], &str); 26] = [
    ("classes", &[ZoneKind::NoParking, ZoneKind::FallWatch], "Detector classes considered."),
    ("min_score", &[ZoneKind::NoParking, ZoneKind::FallWatch], "Minimum detection score, 0–1."),
    ("min_area", &[ZoneKind::NoParking, ZoneKind::FallWatch], "Minimum box area, share of the frame."),
    ("max_area", &[ZoneKind::NoParking, ZoneKind::FallWatch], "Maximum box area, share of the frame."),
    ("dwell_ms", &[ZoneKind::NoParking], "A bike stationary this long in the zone is misparked."),
    ("pile_up_count", &[ZoneKind::NoParking], "This many bikes at once is a pile-up…"),
    ("pile_up_dwell_ms", &[ZoneKind::NoParking], "…once they have all stood this long."),
    ("raise_after_ms", &[ZoneKind::BinArea], "Overflowing this long raises an incident."),
    (
        "overflow_share",
        &[ZoneKind::BinArea],
        "Model score (or, with source = reference, share of the area changed) that counts as overflowing.",
    ),
    ("normal_share", &[ZoneKind::BinArea], "Below this it is back to normal (the gap is the hysteresis)."),
    ("reference", &[ZoneKind::BinArea], "Clean reference image (from `gateway reference`), relative to the config."),
    ("classifier", &[ZoneKind::BinArea], "Bin-state classifier manifest instead of a reference image."),
    (
        "source",
        &[ZoneKind::BinArea],
        "Where the reading comes from: \"model\" (default), \"reference\" or \"classifier\".",
    ),
    ("model", &[ZoneKind::BinArea], "Bin-state model file for source = \"model\" (default: the generic one)."),
    ("down_ms", &[ZoneKind::FallWatch], "A person seen to fall who stays down this long raises an incident."),
    ("lying_aspect", &[ZoneKind::FallWatch], "Box width ÷ height above which a person counts as lying."),
    ("collapse_ratio", &[ZoneKind::FallWatch], "Box height falling to this share of standing height counts as down."),
    ("vanish_hold_ms", &[ZoneKind::FallWatch], "Keep a person down this long after the detector loses them."),
    ("fall_window_ms", &[ZoneKind::FallWatch], "Upright, then down, within this long is a fall (not a slow lowering)."),
    ("unwitnessed_down_ms", &[ZoneKind::FallWatch], "A person down without a witnessed fall raises after this long."),
    (
        "rotated_pass",
        &[ZoneKind::FallWatch],
        "Run the detector on the frame turned 90° (finds people lying) on every frame, not only when the rule asks.",
    ),
    (
        "pose",
        &[ZoneKind::FallWatch],
        "Pose model on tipped, dropped or just-lost people: body axis and head below hips.",
    ),
    (
        "clear_after_ms",
        &[ZoneKind::NoParking, ZoneKind::BinArea, ZoneKind::FallWatch],
        "Clear the incident once the problem has been gone this long.",
    ),
    (
        "cooldown_ms",
        &[ZoneKind::NoParking, ZoneKind::BinArea, ZoneKind::FallWatch],
        "After clearing, no new incident in this zone for this long.",
    ),
    (
        "heartbeat_ms",
        &[ZoneKind::NoParking, ZoneKind::BinArea, ZoneKind::FallWatch],
        "Send an unchanged open incident again this often.",
    ),
    (
        "update_min_interval_ms",
        &[ZoneKind::NoParking, ZoneKind::BinArea, ZoneKind::FallWatch],
        "Send a changed count at most this often, once the new count held for 3 analyses.",
    ),
];

fn is_set(raw: &RawZone, key: &str) -> bool {
    match key {
        "classes" => raw.classes.is_some(),
        "min_score" => raw.min_score.is_some(),
        "min_area" => raw.min_area.is_some(),
        "max_area" => raw.max_area.is_some(),
        "dwell_ms" => raw.dwell_ms.is_some(),
        "pile_up_count" => raw.pile_up_count.is_some(),
        "pile_up_dwell_ms" => raw.pile_up_dwell_ms.is_some(),
        "raise_after_ms" => raw.raise_after_ms.is_some(),
        "overflow_share" => raw.overflow_share.is_some(),
        "normal_share" => raw.normal_share.is_some(),
        "reference" => raw.reference.is_some(),
        "classifier" => raw.classifier.is_some(),
        "source" => raw.source.is_some(),
        "model" => raw.model.is_some(),
        "down_ms" => raw.down_ms.is_some(),
        "lying_aspect" => raw.lying_aspect.is_some(),
        "collapse_ratio" => raw.collapse_ratio.is_some(),
        "vanish_hold_ms" => raw.vanish_hold_ms.is_some(),
        "fall_window_ms" => raw.fall_window_ms.is_some(),
        "unwitnessed_down_ms" => raw.unwitnessed_down_ms.is_some(),
        "rotated_pass" => raw.rotated_pass.is_some(),
        "pose" => raw.pose.is_some(),
        "clear_after_ms" => raw.clear_after_ms.is_some(),
        "cooldown_ms" => raw.cooldown_ms.is_some(),
        "heartbeat_ms" => raw.heartbeat_ms.is_some(),
        "update_min_interval_ms" => raw.update_min_interval_ms.is_some(),
        _ => false,
    }
}

/// Refuses keys that belong to another kind of zone, so a typo'd kind never silently ignores
/// the parameters an ops person set.
fn refuse_foreign_keys(raw: &RawZone, kind: ZoneKind, path: &str, problems: &mut Problems) {
    for (key, kinds, _) in ZONE_KEYS {
        if is_set(raw, key) && !kinds.contains(&kind) {
            problems.push(format!("{path}.{key}"), format!("does not apply to {} zones", kind.as_str()));
        }
    }
}

/// The zone kinds with their keys, defaults and help, for the zone editor. Defaults come
/// from validating a zone that sets nothing, so they cannot drift from the validation.
pub fn zone_kinds() -> serde_json::Value {
    let kinds = [
        (ZoneKind::NoParking, "Bikes left here for minutes, or piling up, are misparked."),
        (ZoneKind::BinArea, "A trash point whose area stays overflowing."),
        (ZoneKind::FallWatch, "A person lying down here who does not get up."),
        (ZoneKind::Mask, "Detections inside are ignored (trees, a bike shop's stand)."),
    ];
    let described: Vec<serde_json::Value> = kinds
        .iter()
        .map(|(kind, help)| {
            let raw = RawZone {
                id: Some("z".into()),
                kind: Some(kind.as_str().into()),
                polygon: Some(vec![[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]),
                ..RawZone::default()
            };
            let mut problems = Problems::default();
            let defaults = validate_zone(&raw, "z", Path::new("."), &mut problems).map(|zone| defaults_of(&zone));
            let keys: Vec<serde_json::Value> = ZONE_KEYS
                .iter()
                .filter(|(_, kinds, _)| kinds.contains(kind))
                .map(|(key, _, help)| {
                    let default =
                        defaults.as_ref().and_then(|d| d.get(*key).cloned()).unwrap_or(serde_json::Value::Null);
                    serde_json::json!({ "key": key, "default": default, "help": help })
                })
                .collect();
            serde_json::json!({ "kind": kind.as_str(), "help": help, "keys": keys })
        })
        .collect();
    serde_json::Value::Array(described)
}

fn defaults_of(zone: &Zone) -> serde_json::Map<String, serde_json::Value> {
    let round = |value: f32| serde_json::json!((value as f64 * 1e6).round() / 1e6);
    let mut map = serde_json::Map::new();
    map.insert("classes".into(), serde_json::json!(zone.classes));
    map.insert("min_score".into(), round(zone.min_score));
    map.insert("min_area".into(), round(zone.min_area));
    map.insert("max_area".into(), round(zone.max_area));
    map.insert("clear_after_ms".into(), serde_json::json!(zone.lifecycle.clear_after_ms));
    map.insert("cooldown_ms".into(), serde_json::json!(zone.lifecycle.cooldown_ms));
    map.insert("heartbeat_ms".into(), serde_json::json!(zone.lifecycle.heartbeat_ms));
    map.insert("update_min_interval_ms".into(), serde_json::json!(zone.lifecycle.update_min_interval_ms));
    match &zone.rule {
        ZoneRule::Misparked(p) => {
            map.insert("dwell_ms".into(), serde_json::json!(p.dwell_ms));
            map.insert("pile_up_count".into(), serde_json::json!(p.pile_up_count));
            map.insert("pile_up_dwell_ms".into(), serde_json::json!(p.pile_up_dwell_ms));
        }
        ZoneRule::Trash(p) => {
            map.insert("raise_after_ms".into(), serde_json::json!(p.raise_after_ms));
            map.insert("overflow_share".into(), round(p.overflow_share));
            map.insert("normal_share".into(), round(p.normal_share));
            map.insert("source".into(), serde_json::json!("model"));
        }
        ZoneRule::Fall(p) => {
            map.insert("down_ms".into(), serde_json::json!(p.down_ms));
            map.insert("lying_aspect".into(), round(p.lying_aspect));
            map.insert("collapse_ratio".into(), round(p.collapse_ratio));
            map.insert("vanish_hold_ms".into(), serde_json::json!(p.vanish_hold_ms));
            map.insert("fall_window_ms".into(), serde_json::json!(p.fall_window_ms));
            map.insert("unwitnessed_down_ms".into(), serde_json::json!(p.unwitnessed_down_ms));
            map.insert("rotated_pass".into(), serde_json::json!(p.rotated_pass));
            map.insert("pose".into(), serde_json::json!(p.pose));
        }
        ZoneRule::Mask => {}
    }
    map
}

#[cfg(test)]
mod tests {
    use super::super::validate::problems_of;
    use crate::zones::{TrashSource, ZoneRule};

    fn bin_zone(extra: &str) -> String {
        format!(
            "[cameras.a]\nurl = \"rtsp://h/\"\n[[cameras.a.zones]]\nid = \"bins\"\nkind = \"bin_area\"\n\
             polygon = [[0.0, 0.0], [1.0, 0.0], [1.0, 1.0]]\n{extra}"
        )
    }

    fn source_of(extra: &str) -> (TrashSource, f32, f32) {
        let dir = tempfile::tempdir().unwrap();
        image::RgbImage::new(8, 8).save(dir.path().join("ref.png")).unwrap(); // references must decode
        std::fs::write(dir.path().join("own.json"), b"{}").unwrap();
        let config = crate::config::parse(&bin_zone(extra), dir.path()).unwrap_or_else(|p| panic!("{p}"));
        let ZoneRule::Trash(params) = &config.cameras[0].zones[0].rule else { panic!("not a bin zone") };
        let source = match &params.source {
            TrashSource::ReferenceDiff { reference } => {
                TrashSource::ReferenceDiff { reference: reference.as_ref().map(|p| p.file_name().unwrap().into()) }
            }
            TrashSource::Model { model } => {
                TrashSource::Model { model: model.as_ref().map(|p| p.file_name().unwrap().into()) }
            }
            other => other.clone(),
        };
        (source, params.overflow_share, params.normal_share)
    }

    #[test]
    fn a_bin_area_reads_the_model_by_default_and_the_reference_when_asked() {
        assert_eq!(source_of(""), (TrashSource::Model { model: None }, 0.6, 0.4));
        assert_eq!(
            source_of("model = \"own.json\"\n"),
            (TrashSource::Model { model: Some("own.json".into()) }, 0.6, 0.4)
        );
        assert_eq!(source_of("source = \"reference\"\n"), (TrashSource::ReferenceDiff { reference: None }, 0.15, 0.06));
        // A reference picture alone still means the reference difference (configs from before).
        assert_eq!(
            source_of("reference = \"ref.png\"\n"),
            (TrashSource::ReferenceDiff { reference: Some("ref.png".into()) }, 0.15, 0.06)
        );
    }

    #[test]
    fn source_keys_that_do_not_fit_are_refused_with_their_path() {
        for (extra, expected) in [
            ("source = \"magic\"\n", "cameras.a.zones[0].source: unknown source \"magic\""),
            (
                "source = \"reference\"\nmodel = \"own.json\"\n",
                "cameras.a.zones[0].model: applies to source = \"model\"",
            ),
            (
                "reference = \"ref.png\"\nsource = \"model\"\n",
                "cameras.a.zones[0].reference: applies to source = \"reference\"",
            ),
            ("source = \"classifier\"\n", "cameras.a.zones[0].classifier: is required"),
            ("model = \"missing.json\"\n", "cameras.a.zones[0].model:"),
        ] {
            let problems = problems_of(&bin_zone(extra));
            assert!(problems.iter().any(|p| p.starts_with(expected)), "{extra:?}: {problems:?}");
        }
    }
}
