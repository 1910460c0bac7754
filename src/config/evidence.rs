//! `[evidence]`: event clips (packet rings, pre- and post-roll per zone kind), privacy of the
//! snapshots that leave the gateway (bystanders blurred per zone kind) and the clips'
//! retention (issue 16). Raw section and its validation, kept apart from the rest of the
//! config so the section reads as one piece.

use serde::Deserialize;

use super::validate::Problems;
use crate::evidence::retention::RetentionPolicy;
use crate::rules::IncidentKind;
use crate::zones::ZoneKind;

/// `[evidence]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvidence {
    /// All cameras' packet rings together may hold at most this many MiB of encoded video.
    /// Default 640 (600 substreams at 512 kbit/s keep their 10 s of pre-roll in ~510), 1–65536.
    pub ring_memory_mib: Option<u64>,
    /// One camera's ring may hold at most this many KiB (its share; the pre-roll is cut short,
    /// and counted, when a camera's bitrate needs more). Default 2048, 64–262144.
    pub ring_camera_share_kib: Option<u64>,
    /// Clips older than this many days are deleted, except an open incident's. Default 7,
    /// 1–3650.
    pub clip_max_age_days: Option<u32>,
    /// Above this many MiB of clips the oldest are deleted, except an open incident's.
    /// Default 20480 (20 GiB), 16–100000000.
    pub clip_max_mib: Option<u64>,
    /// The console's address as stewards' phones reach it, for the `clip_url` of incident
    /// payloads (`https://gateway.example:8443`). Default `http://<console.bind>`.
    pub public_console_url: Option<String>,
    /// Clips and privacy for fall-watch zones' incidents.
    pub fall_watch: Option<RawKindEvidence>,
    /// Clips and privacy for no-parking zones' incidents (misparked bikes).
    pub no_parking: Option<RawKindEvidence>,
    /// Clips and privacy for bin areas' incidents (trash overflow).
    pub bin_area: Option<RawKindEvidence>,
}

/// `[evidence.<zone kind>]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawKindEvidence {
    /// Write a clip when an incident opens. Default true for `fall_watch`, false otherwise.
    pub clip: Option<bool>,
    /// Seconds of video before the incident opened (from the keyframe before). Default 10,
    /// 0–60.
    pub pre_roll_secs: Option<u64>,
    /// Seconds of video after it opened. Default 20, 1–120.
    pub post_roll_secs: Option<u64>,
    /// Blur the people who are not the incident's subject in snapshots that leave the gateway
    /// (MQTT, console): everyone for bikes and bins, everyone but the fallen person for falls.
    /// The unblurred original stays on the gateway's disk. Default true.
    pub blur_bystanders: Option<bool>,
}

/// What one zone kind's incidents get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KindEvidence {
    /// Write a clip when an incident opens.
    pub clip: bool,
    /// Video before the incident opened, ms.
    pub pre_roll_ms: u64,
    /// Video after it opened, ms.
    pub post_roll_ms: u64,
    /// Blur bystanders in snapshots that leave the gateway.
    pub blur_bystanders: bool,
}

/// `[evidence]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceConfig {
    /// Cap of all packet rings together, bytes.
    pub ring_memory_bytes: u64,
    /// Cap of one camera's ring, bytes.
    pub ring_camera_share_bytes: u64,
    /// How long and how much of the clips is kept.
    pub clip_retention: RetentionPolicy,
    /// Base of `clip_url` (no trailing slash); `None` when there is no console.
    pub public_console_url: Option<String>,
    /// Fall-watch zones.
    pub fall_watch: KindEvidence,
    /// No-parking zones.
    pub no_parking: KindEvidence,
    /// Bin areas.
    pub bin_area: KindEvidence,
}

impl Default for EvidenceConfig {
    fn default() -> Self {
        let mut problems = Problems::default();
        validate(&RawEvidence::default(), None, &mut problems)
    }
}

impl EvidenceConfig {
    /// The policy of a zone kind (masks get none: no clip, no blur).
    pub fn for_zone(&self, kind: ZoneKind) -> Option<&KindEvidence> {
        match kind {
            ZoneKind::FallWatch => Some(&self.fall_watch),
            ZoneKind::NoParking => Some(&self.no_parking),
            ZoneKind::BinArea => Some(&self.bin_area),
            ZoneKind::Mask => None,
        }
    }

    /// The policy of an incident kind (each comes from one zone kind).
    pub fn for_incident(&self, kind: IncidentKind) -> &KindEvidence {
        match kind {
            IncidentKind::FallenPerson => &self.fall_watch,
            IncidentKind::MisparkedBike => &self.no_parking,
            IncidentKind::TrashOverflow => &self.bin_area,
        }
    }
}

/// Validates `[evidence]`; `console_bind` is where the console listens, if it does.
pub(super) fn validate(
    raw: &RawEvidence,
    console_bind: Option<std::net::SocketAddr>,
    problems: &mut Problems,
) -> EvidenceConfig {
    let ring_memory_mib = raw.ring_memory_mib.unwrap_or(640);
    if !(1..=65_536).contains(&ring_memory_mib) {
        problems.push("evidence.ring_memory_mib", format!("{ring_memory_mib} is out of range 1..=65536"));
    }
    let share_kib = raw.ring_camera_share_kib.unwrap_or(2048);
    if !(64..=262_144).contains(&share_kib) {
        problems.push("evidence.ring_camera_share_kib", format!("{share_kib} is out of range 64..=262144"));
    }
    let max_age_days = raw.clip_max_age_days.unwrap_or(7);
    if !(1..=3650).contains(&max_age_days) {
        problems.push("evidence.clip_max_age_days", format!("{max_age_days} is out of range 1..=3650"));
    }
    let max_mib = raw.clip_max_mib.unwrap_or(20_480);
    if !(16..=100_000_000).contains(&max_mib) {
        problems.push("evidence.clip_max_mib", format!("{max_mib} is out of range 16..=100000000"));
    }
    let public_console_url = match (&raw.public_console_url, console_bind) {
        (Some(text), _) => match url::Url::parse(text) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                Some(text.trim_end_matches('/').to_string())
            }
            _ => {
                problems.push("evidence.public_console_url", format!("{text:?} is not an http(s) URL with a host"));
                None
            }
        },
        (None, Some(bind)) => Some(format!("http://{bind}")),
        (None, None) => None,
    };
    let kind = |key: &str, raw: Option<&RawKindEvidence>, clip_default: bool, problems: &mut Problems| {
        let default = RawKindEvidence::default();
        let raw = raw.unwrap_or(&default);
        let pre_roll_secs = raw.pre_roll_secs.unwrap_or(10);
        if pre_roll_secs > 60 {
            problems.push(format!("evidence.{key}.pre_roll_secs"), format!("{pre_roll_secs} is out of range 0..=60"));
        }
        let post_roll_secs = raw.post_roll_secs.unwrap_or(20);
        if !(1..=120).contains(&post_roll_secs) {
            problems
                .push(format!("evidence.{key}.post_roll_secs"), format!("{post_roll_secs} is out of range 1..=120"));
        }
        KindEvidence {
            clip: raw.clip.unwrap_or(clip_default),
            pre_roll_ms: pre_roll_secs * 1000,
            post_roll_ms: post_roll_secs * 1000,
            blur_bystanders: raw.blur_bystanders.unwrap_or(true),
        }
    };
    EvidenceConfig {
        ring_memory_bytes: ring_memory_mib.saturating_mul(1 << 20),
        ring_camera_share_bytes: share_kib.saturating_mul(1 << 10),
        clip_retention: RetentionPolicy {
            max_age_ms: i64::from(max_age_days) * 86_400_000,
            max_bytes: max_mib.saturating_mul(1 << 20),
        },
        public_console_url,
        fall_watch: kind("fall_watch", raw.fall_watch.as_ref(), true, problems),
        no_parking: kind("no_parking", raw.no_parking.as_ref(), false, problems),
        bin_area: kind("bin_area", raw.bin_area.as_ref(), false, problems),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (EvidenceConfig, Vec<String>) {
        let raw: RawEvidence = toml::from_str(text).unwrap();
        let mut problems = Problems::default();
        let config = validate(&raw, Some("127.0.0.1:8080".parse().unwrap()), &mut problems);
        (config, problems.0.into_iter().map(|p| format!("{}: {}", p.path, p.message)).collect())
    }

    #[test]
    fn defaults_clip_falls_only_and_blur_everywhere() {
        let (config, problems) = parse("");
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            config.fall_watch,
            KindEvidence { clip: true, pre_roll_ms: 10_000, post_roll_ms: 20_000, blur_bystanders: true }
        );
        assert!(!config.no_parking.clip && !config.bin_area.clip);
        assert!(config.no_parking.blur_bystanders && config.bin_area.blur_bystanders);
        assert_eq!(config.public_console_url.as_deref(), Some("http://127.0.0.1:8080"));
        assert_eq!(config.ring_camera_share_bytes, 2 << 20);
        assert_eq!(config.for_incident(IncidentKind::MisparkedBike), &config.no_parking);
    }

    #[test]
    fn every_bad_value_is_reported_with_its_key() {
        let (config, problems) = parse(
            "ring_memory_mib = 0\nring_camera_share_kib = 1\nclip_max_age_days = 0\nclip_max_mib = 1\n\
             public_console_url = \"ftp://x\"\n[no_parking]\nclip = true\npre_roll_secs = 61\npost_roll_secs = 0\n",
        );
        assert!(config.no_parking.clip);
        let keys: Vec<&str> = problems.iter().map(|p| p.split(':').next().unwrap()).collect();
        assert_eq!(
            keys,
            [
                "evidence.ring_memory_mib",
                "evidence.ring_camera_share_kib",
                "evidence.clip_max_age_days",
                "evidence.clip_max_mib",
                "evidence.public_console_url",
                "evidence.no_parking.pre_roll_secs",
                "evidence.no_parking.post_roll_secs",
            ]
        );
        assert!(toml::from_str::<RawEvidence>("[fall_watch]\nclips = true\n").is_err(), "unknown keys refused");
    }
}
