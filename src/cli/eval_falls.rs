//! `gateway eval-falls --config FILE [--camera ID] [--pad-secs S] [--json] DIR`: how the fall
//! rule does on a folder of real clips with a hand-made ground truth. Every clip listed in
//! `DIR/truth.csv` is replayed through the camera's full pipeline (as `gateway replay` does),
//! padded with its last picture for `--pad-secs` of footage time (default 40: the person
//! stays down), and its `fallen_person` incidents are scored against the truth:
//!
//! - a fall clip counts as raised when an incident opens at or after `fall_start_s` − 1 s; its
//!   delay is measured from `down_from_s`; "within 15 s" is the target figure;
//! - every incident on a negative clip, and every one opened before `fall_start_s` − 1 s on a
//!   fall clip, is a false incident.
//!
//! `truth.csv`: a header, then `file,falls,fall_start_s,down_from_s,up_at_s,note` (`falls` is
//! `yes` or `no`; times in seconds from the start of the file; the note may hold commas).
//!
//! Output: a table, or with `--json` one JSON document (shape in the README's command table).
//! Exit 0 when every clip was replayed, 64 for a bad config or truth file, 1 if a clip cannot
//! be read. The scoring ([`score`], [`totals`]) is pure.

use std::path::Path;

use serde::Serialize;

use super::replay::{run_clip, ClipError};
use super::{load_and_check, print_problems, EXIT_CONFIG};
use crate::incident::EventKind;
use crate::rules::IncidentKind;

/// An incident opened this long before `fall_start_s` still counts for the fall (the truth is
/// accurate to about ±0.25 s, and the rule may see the stagger).
pub const FALL_SLACK_MS: i64 = 1_000;

/// A fall counts as caught in time when raised within this long of the person being down.
pub const TARGET_DELAY_MS: i64 = 15_000;

/// One row of `truth.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct Truth {
    /// Clip file name, in the same folder.
    pub file: String,
    /// Whether someone falls in it.
    pub fall: bool,
    /// When the (first) fall starts, ms.
    pub fall_start_ms: Option<i64>,
    /// When the person is first clearly down, ms.
    pub down_from_ms: Option<i64>,
}

/// Parses `truth.csv`; problems name the line.
pub fn parse_truth(text: &str) -> Result<Vec<Truth>, String> {
    let mut rows = Vec::new();
    for (index, line) in text.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let fields: Vec<&str> = line.splitn(6, ',').collect();
        if fields.len() < 5 {
            return Err(format!("line {}: expected file,falls,fall_start_s,down_from_s,up_at_s,…", index + 1));
        }
        let seconds = |field: &str, name: &str| -> Result<Option<i64>, String> {
            let field = field.trim();
            if field.is_empty() {
                return Ok(None);
            }
            field
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite() && *s >= 0.0)
                .map(|s| Some((s * 1000.0).round() as i64))
                .ok_or_else(|| format!("line {}: {name} {field:?} is not a time in seconds", index + 1))
        };
        let fall = match fields[1].trim() {
            "yes" => true,
            "no" => false,
            other => return Err(format!("line {}: falls must be yes or no, not {other:?}", index + 1)),
        };
        let row = Truth {
            file: fields[0].trim().to_string(),
            fall,
            fall_start_ms: seconds(fields[2], "fall_start_s")?,
            down_from_ms: seconds(fields[3], "down_from_s")?,
        };
        if row.fall && (row.fall_start_ms.is_none() || row.down_from_ms.is_none()) {
            return Err(format!("line {}: a fall needs fall_start_s and down_from_s", index + 1));
        }
        rows.push(row);
    }
    Ok(rows)
}

/// An opened `fallen_person` incident seen in a clip.
#[derive(Debug, Clone, PartialEq)]
pub struct Opened {
    /// Footage time it opened, ms.
    pub t_ms: i64,
    /// The rule's line (which cue raised it).
    pub detail: String,
}

/// The verdict on one clip.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClipResult {
    /// Clip file name.
    pub file: String,
    /// Whether the truth has a fall.
    pub fall: bool,
    /// Truth, seconds.
    pub fall_start_s: Option<f64>,
    /// Truth, seconds.
    pub down_from_s: Option<f64>,
    /// When the fall's incident opened (footage seconds), if it did.
    pub opened_s: Option<f64>,
    /// `opened_s − down_from_s`, seconds (negative: raised before the person was down).
    pub delay_s: Option<f64>,
    /// The opening incident's detail (the cue that raised it).
    pub cue: Option<String>,
    /// Incidents that contradict the truth.
    pub false_incidents: usize,
}

/// Scores one clip's opened incidents against its truth. Pure.
pub fn score(truth: &Truth, opened: &[Opened]) -> ClipResult {
    let seconds = |ms: i64| ms as f64 / 1000.0;
    let (hit, false_incidents) = match (truth.fall, truth.fall_start_ms) {
        (true, Some(start)) => {
            let hit = opened.iter().find(|o| o.t_ms >= start - FALL_SLACK_MS);
            (hit, opened.iter().filter(|o| o.t_ms < start - FALL_SLACK_MS).count())
        }
        _ => (None, opened.len()),
    };
    ClipResult {
        file: truth.file.clone(),
        fall: truth.fall,
        fall_start_s: truth.fall_start_ms.map(seconds),
        down_from_s: truth.down_from_ms.map(seconds),
        opened_s: hit.map(|o| seconds(o.t_ms)),
        delay_s: match (hit, truth.down_from_ms) {
            (Some(o), Some(down)) if truth.fall => Some(seconds(o.t_ms - down)),
            _ => None,
        },
        cue: hit.map(|o| o.detail.clone()),
        false_incidents,
    }
}

/// The figures over all clips.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Totals {
    /// Clips with a fall.
    pub falls: usize,
    /// Falls raised at all.
    pub raised: usize,
    /// Falls raised within [`TARGET_DELAY_MS`] of the person being down.
    pub raised_within_15_s: usize,
    /// Median delay over **all** falls, a fall never raised counting as infinitely late
    /// (none when half or more were never raised).
    pub median_delay_s: Option<f64>,
    /// Clips without a fall.
    pub negatives: usize,
    /// False incidents over all clips.
    pub false_incidents: usize,
}

/// Sums the clips' results. Pure.
pub fn totals(results: &[ClipResult]) -> Totals {
    let falls: Vec<&ClipResult> = results.iter().filter(|r| r.fall).collect();
    let mut delays: Vec<f64> = falls.iter().map(|r| r.delay_s.unwrap_or(f64::INFINITY)).collect();
    delays.sort_by(f64::total_cmp);
    let median = match delays.len() {
        0 => None,
        n if n % 2 == 1 => Some(delays[n / 2]),
        n => Some((delays[n / 2 - 1] + delays[n / 2]) / 2.0),
    };
    Totals {
        falls: falls.len(),
        raised: falls.iter().filter(|r| r.opened_s.is_some()).count(),
        raised_within_15_s: falls
            .iter()
            .filter(|r| r.delay_s.is_some_and(|d| d <= TARGET_DELAY_MS as f64 / 1000.0))
            .count(),
        median_delay_s: median.filter(|m| m.is_finite()).map(|m| (m * 10.0).round() / 10.0),
        negatives: results.len() - falls.len(),
        false_incidents: results.iter().map(|r| r.false_incidents).sum(),
    }
}

#[derive(Serialize)]
struct Report<'a> {
    pad_secs: u32,
    clips: &'a [ClipResult],
    totals: Totals,
}

/// Runs the subcommand.
pub fn main(config_path: &Path, camera_id: Option<&str>, pad_secs: u32, json: bool, dir: &Path) -> i32 {
    let (config, mut detectors) = match load_and_check(config_path) {
        Ok(loaded) => loaded,
        Err(problems) => {
            print_problems(config_path, &problems);
            return EXIT_CONFIG;
        }
    };
    let is_fall_camera =
        |c: &&crate::config::CameraConfig| c.zones.iter().any(|z| matches!(z.rule, crate::zones::ZoneRule::Fall(_)));
    let camera = match camera_id {
        Some(id) => config.cameras.iter().find(|c| c.id.as_str() == id),
        None => config.cameras.iter().find(is_fall_camera),
    };
    let Some(camera) = camera else {
        let known: Vec<&str> = config.cameras.iter().map(|c| c.id.as_str()).collect();
        eprintln!(
            "{}: no such camera with a fall_watch zone ({camera_id:?}; cameras: {known:?})",
            config_path.display()
        );
        return EXIT_CONFIG;
    };
    let truth_path = dir.join("truth.csv");
    let truth = match std::fs::read_to_string(&truth_path).map_err(|e| e.to_string()).and_then(|t| parse_truth(&t)) {
        Ok(truth) => truth,
        Err(error) => {
            eprintln!("{}: {error}", truth_path.display());
            return EXIT_CONFIG;
        }
    };
    let references = match super::load_references(camera) {
        Ok(references) => references,
        Err(error) => {
            eprintln!("{error:#}");
            return EXIT_CONFIG;
        }
    };
    let mut results = Vec::new();
    for row in &truth {
        let footage = dir.join(&row.file);
        let mut opened = Vec::new();
        let mut collect = |event: &crate::incident::IncidentEvent| {
            if event.event == EventKind::Opened && event.kind == IncidentKind::FallenPerson {
                opened.push(Opened { t_ms: event.t_ms, detail: event.detail.clone() });
            }
        };
        let pad_ms = i64::from(pad_secs) * 1000;
        match run_clip(camera, &references, &mut detectors, &config.detector, &footage, pad_ms, &mut collect) {
            Ok(()) => {}
            Err(ClipError::Config(error)) => {
                eprintln!("{error:#}");
                return EXIT_CONFIG;
            }
            Err(ClipError::Footage(error)) => {
                eprintln!("{}: {error:#}", footage.display());
                return 1;
            }
        }
        let result = score(row, &opened);
        if !json {
            print_row(&result);
        }
        results.push(result);
    }
    let totals = totals(&results);
    if json {
        let report = Report { pad_secs, clips: &results, totals };
        println!("{}", serde_json::to_string_pretty(&report).expect("report serialises"));
    } else {
        println!(
            "falls raised within 15 s of down: {} of {} (raised at all: {}); median delay: {}; \
             false incidents: {} ({} negative clips); padded {pad_secs} s",
            totals.raised_within_15_s,
            totals.falls,
            totals.raised,
            totals.median_delay_s.map_or("never (half or more not raised)".to_string(), |m| format!("{m:.1} s")),
            totals.false_incidents,
            totals.negatives,
        );
    }
    0
}

fn print_row(result: &ClipResult) {
    let time = |s: Option<f64>| s.map_or("-".to_string(), |s| format!("{s:.1}"));
    println!(
        "{:<52} {:<4} down {:>5}  opened {:>5}  delay {:>5}  false {}  {}",
        result.file,
        if result.fall { "fall" } else { "neg" },
        time(result.down_from_s),
        time(result.opened_s),
        time(result.delay_s),
        result.false_incidents,
        result.cue.as_deref().unwrap_or(""),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRUTH: &str = "file,falls,fall_start_s,down_from_s,up_at_s,note\n\
        a.mp4,yes,3.3,4.0,,\"fell, then lay\"\n\
        b.mp4,no,,21.0,,hard negative\n\
        c.mp4,yes,6.8,7.4,9.8,\n\
        d.mp4,yes,2.0,2.6,,\n";

    fn opened(t_ms: i64) -> Opened {
        Opened { t_ms, detail: "cue".to_string() }
    }

    #[test]
    fn truth_parses_and_refuses_what_it_cannot_read() {
        let rows = parse_truth(TRUTH).unwrap();
        assert_eq!(rows.len(), 4);
        assert_eq!(
            rows[0],
            Truth { file: "a.mp4".into(), fall: true, fall_start_ms: Some(3300), down_from_ms: Some(4000) }
        );
        assert_eq!((rows[1].fall, rows[1].down_from_ms), (false, Some(21_000)));
        assert!(parse_truth("h\nx.mp4,maybe,,,,").unwrap_err().contains("line 2"));
        assert!(parse_truth("h\nx.mp4,yes,,,,").unwrap_err().contains("needs fall_start_s"));
        assert!(parse_truth("h\nx.mp4,yes,abc,1,,").unwrap_err().contains("fall_start_s"));
    }

    #[test]
    fn clips_score_hits_delays_and_false_incidents() {
        let rows = parse_truth(TRUTH).unwrap();
        // Raised 6 s after down; one incident 2 s before the fall started is false.
        let a = score(&rows[0], &[opened(1000), opened(10_000)]);
        assert_eq!((a.opened_s, a.delay_s, a.false_incidents), (Some(10.0), Some(6.0), 1));
        // Within the slack before the fall start: still the fall.
        let c = score(&rows[2], &[opened(5_900)]);
        assert_eq!((c.opened_s, c.false_incidents), (Some(5.9), 0));
        // Any incident on a negative is false.
        let b = score(&rows[1], &[opened(30_000)]);
        assert_eq!((b.opened_s, b.delay_s, b.false_incidents), (None, None, 1));
        // Never raised; raised 20 s late.
        let d = score(&rows[3], &[opened(22_600)]);
        assert_eq!(d.delay_s, Some(20.0));
        let never = score(&rows[3], &[]);
        let t = totals(&[a.clone(), b.clone(), c.clone(), d.clone()]);
        assert_eq!((t.falls, t.raised, t.raised_within_15_s, t.negatives, t.false_incidents), (3, 3, 2, 1, 2));
        // Delays 6, -1.5, 20: median 6.
        assert_eq!(t.median_delay_s, Some(6.0));
        // Two of three never raised: no median.
        let t = totals(&[a, b, never.clone(), score(&rows[3], &[])]);
        assert_eq!((t.raised, t.median_delay_s), (1, None));
    }
}
