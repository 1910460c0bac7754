//! Raw config → domain types. Collects every problem instead of stopping at the first, so an
//! ops person fixes a config in one round.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::raw::{RawCamera, RawConfig};
use super::{
    CameraConfig, CameraId, Config, ConfigProblem, ConfigProblems, DecodeConfig, DecodeMode, DetectorConfig,
    IngestConfig, PlaceLabels, RtspCredentials, RtspTransport, Secret, SourceSpec,
};

/// Collects problems with their key paths.
#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<ConfigProblem>);

impl Problems {
    pub(super) fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(ConfigProblem { path: path.into(), message: message.into() });
    }

    /// A `u64` millisecond value within `min..=max`, or the default.
    pub(super) fn millis(&mut self, path: &str, value: Option<u64>, default: u64, min: u64, max: u64) -> Duration {
        let millis = value.unwrap_or(default);
        if !(min..=max).contains(&millis) {
            self.push(path, format!("{millis} is out of range {min}..={max} (milliseconds)"));
        }
        Duration::from_millis(millis)
    }

    /// A `u64` second value within `min..=max`, or the default.
    pub(super) fn secs(&mut self, path: &str, value: Option<u64>, default: u64, min: u64, max: u64) -> Duration {
        let secs = value.unwrap_or(default);
        if !(min..=max).contains(&secs) {
            self.push(path, format!("{secs} is out of range {min}..={max} (seconds)"));
        }
        Duration::from_secs(secs)
    }

    /// A count within `min..=max`, or the default.
    pub(super) fn count(&mut self, path: &str, value: Option<usize>, default: usize, min: usize, max: usize) -> usize {
        let count = value.unwrap_or(default);
        if !(min..=max).contains(&count) {
            self.push(path, format!("{count} is out of range {min}..={max}"));
        }
        count
    }

    /// A fraction in the open-closed interval (0, 1], or the default.
    pub(super) fn fraction(&mut self, path: &str, value: Option<f32>, default: f32) -> f32 {
        let fraction = value.unwrap_or(default);
        if !(fraction > 0.0 && fraction <= 1.0) {
            self.push(path, format!("{fraction} must be in (0, 1]"));
        }
        fraction
    }
}

/// Validates a raw config. `env` looks up environment variables (injected for tests).
pub fn validate(
    raw: RawConfig,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ConfigProblems> {
    let mut problems = Problems::default();
    let ingest_defaults = IngestConfig::default();
    let ingest = IngestConfig {
        reconnect_initial: problems.millis(
            "ingest.reconnect_initial_ms",
            raw.ingest.reconnect_initial_ms,
            ingest_defaults.reconnect_initial.as_millis() as u64,
            10,
            600_000,
        ),
        reconnect_max: problems.millis(
            "ingest.reconnect_max_ms",
            raw.ingest.reconnect_max_ms,
            ingest_defaults.reconnect_max.as_millis() as u64,
            10,
            3_600_000,
        ),
        no_frame_timeout: problems.millis(
            "ingest.no_frame_timeout_ms",
            raw.ingest.no_frame_timeout_ms,
            ingest_defaults.no_frame_timeout.as_millis() as u64,
            100,
            600_000,
        ),
        connect_timeout: problems.millis(
            "ingest.connect_timeout_ms",
            raw.ingest.connect_timeout_ms,
            ingest_defaults.connect_timeout.as_millis() as u64,
            100,
            600_000,
        ),
    };
    if ingest.reconnect_max < ingest.reconnect_initial {
        problems.push("ingest.reconnect_max_ms", "must not be less than ingest.reconnect_initial_ms");
    }

    let decode_defaults = DecodeConfig::default();
    let decode =
        DecodeConfig { workers: problems.count("decode.workers", raw.decode.workers, decode_defaults.workers, 1, 64) };

    let detector_defaults = DetectorConfig::default_in(base_dir);
    let detector = DetectorConfig {
        model_manifest: match raw.detector.model.as_deref() {
            Some("") => {
                problems.push("detector.model", "must not be empty");
                PathBuf::new()
            }
            Some(model) => resolve(base_dir, model),
            None => detector_defaults.model_manifest,
        },
        wide_model_manifest: match raw.detector.wide_model.as_deref() {
            Some("") => {
                problems.push("detector.wide_model", "must not be empty (leave it out for one model)");
                None
            }
            Some(model) => Some(resolve(base_dir, model)),
            None => None,
        },
        onnxruntime_library: match raw.detector.onnxruntime_library.as_deref() {
            Some("") | None => env("ORT_DYLIB_PATH").filter(|v| !v.is_empty()).map(PathBuf::from),
            Some(library) => Some(resolve(base_dir, library)),
        },
        sessions: problems.count("detector.sessions", raw.detector.sessions, detector_defaults.sessions, 1, 64),
        intra_op_threads: problems.count(
            "detector.intra_op_threads",
            raw.detector.intra_op_threads,
            detector_defaults.intra_op_threads,
            1,
            64,
        ),
        score_threshold: problems.fraction(
            "detector.score_threshold",
            raw.detector.score_threshold,
            detector_defaults.score_threshold,
        ),
        nms_iou_threshold: problems.fraction(
            "detector.nms_iou_threshold",
            raw.detector.nms_iou_threshold,
            detector_defaults.nms_iou_threshold,
        ),
        queue_capacity: problems.count(
            "detector.queue_capacity",
            raw.detector.queue_capacity,
            detector_defaults.queue_capacity,
            1,
            64,
        ),
    };

    let max_cameras = problems.count("limits.max_cameras", raw.limits.max_cameras, 1000, 1, 100_000);
    if raw.cameras.len() > max_cameras {
        problems.push(
            "cameras",
            format!("{} cameras configured but limits.max_cameras is {max_cameras}", raw.cameras.len()),
        );
    }

    let gate_default = gate_max_stale(&mut problems, "detector.gate_max_stale_ms", raw.detector.gate_max_stale_ms)
        .unwrap_or(Some(Duration::from_millis(DEFAULT_GATE_MAX_STALE_MS)));
    let mut cameras = Vec::with_capacity(raw.cameras.len());
    for (id, raw_camera) in &raw.cameras {
        let path = format!("cameras.{id}");
        if let Some(camera) = validate_camera(id, raw_camera, &path, base_dir, env, gate_default, &mut problems) {
            if camera.detector_model == super::ModelChoice::Fixed(super::ModelVariant::Wide)
                && detector.wide_model_manifest.is_none()
            {
                problems.push(
                    format!("{path}.detector_model"),
                    "\"wide\" needs [detector] wide_model (a manifest such as \"models/yolox_nano_416x256.toml\")",
                );
                continue;
            }
            cameras.push(camera);
        }
    }

    let state_dir = match raw.storage.state_dir.as_deref() {
        Some("") => {
            problems.push("storage.state_dir", "must not be empty");
            PathBuf::new()
        }
        Some(dir) => resolve(base_dir, dir),
        None => env("STATE_DIRECTORY")
            .filter(|dir| !dir.is_empty())
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/lib/street-gateway")),
    };

    let evidence_max_age_days = raw.storage.evidence_max_age_days.unwrap_or(30);
    if !(1..=3650).contains(&evidence_max_age_days) {
        problems.push("storage.evidence_max_age_days", format!("{evidence_max_age_days} is out of range 1..=3650"));
    }
    let evidence_max_mib = raw.storage.evidence_max_mib.unwrap_or(10_240);
    if !(16..=100_000_000).contains(&evidence_max_mib) {
        problems.push("storage.evidence_max_mib", format!("{evidence_max_mib} is out of range 16..=100000000"));
    }
    let evidence_retention = crate::evidence::retention::RetentionPolicy {
        max_age_ms: i64::from(evidence_max_age_days) * 86_400_000,
        max_bytes: evidence_max_mib.saturating_mul(1 << 20),
    };

    let outbox_max_entries = raw.outbox.max_entries.unwrap_or(100_000);
    if !(100..=100_000_000).contains(&outbox_max_entries) {
        problems.push("outbox.max_entries", format!("{outbox_max_entries} is out of range 100..=100000000"));
    }

    let outbox_spill_dir = match raw.outbox.spill_dir.as_deref() {
        Some("") => {
            problems.push("outbox.spill_dir", "must not be empty (leave it out for the default)");
            None
        }
        Some(dir) => Some(resolve(base_dir, dir)),
        None => env("RUNTIME_DIRECTORY").filter(|dir| !dir.is_empty()).map(PathBuf::from),
    };

    let mqtt = raw.mqtt.as_ref().and_then(|mqtt| super::delivery::validate_mqtt(mqtt, base_dir, env, &mut problems));
    let escalation = super::delivery::validate_escalation(&raw.escalation, &mut problems);
    let console = raw.console.as_ref().map(|console| validate_console(console, base_dir, env, &mut problems));

    let evidence = super::evidence::validate(&raw.evidence, console.as_ref().map(|c| c.bind), &mut problems);

    if problems.0.is_empty() {
        Ok(Config {
            base_dir: base_dir.to_path_buf(),
            ingest,
            decode,
            detector,
            state_dir,
            evidence_retention,
            evidence,
            outbox_max_entries,
            outbox_spill_dir,
            mqtt,
            escalation,
            console,
            cameras,
        })
    } else {
        Err(ConfigProblems(problems.0))
    }
}

/// Validates `[console]`.
fn validate_console(
    raw: &super::raw::RawConsole,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> super::ConsoleConfig {
    let bind = raw.bind.as_deref().unwrap_or("127.0.0.1:8080");
    let bind = bind.parse::<std::net::SocketAddr>().unwrap_or_else(|_| {
        problems.push("console.bind", format!("{bind:?} is not an address:port such as \"127.0.0.1:8080\""));
        std::net::SocketAddr::from(([127, 0, 0, 1], 8080))
    });
    let token = named_secret(
        "console",
        ("token_env", raw.token_env.as_deref()),
        ("token_file", raw.token_file.as_deref()),
        base_dir,
        env,
        problems,
    );
    let token = match token {
        Some(token) if token.trim().len() < 16 => {
            let key = if raw.token_env.is_some() { "console.token_env" } else { "console.token_file" };
            problems.push(key, "the token must be at least 16 characters (e.g. `openssl rand -hex 24`)");
            None
        }
        token => token.map(|token| Secret::new(token.trim().to_string())),
    };
    let max_connections = problems.count("console.max_connections", raw.max_connections, 64, 1, 4096);
    let mut allowed_hosts = Vec::new();
    for (index, host) in raw.allowed_hosts.iter().flatten().enumerate() {
        let valid = !host.is_empty()
            && host.len() <= 253
            && host.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        if valid {
            allowed_hosts.push(host.to_ascii_lowercase());
        } else {
            problems.push(
                format!("console.allowed_hosts[{index}]"),
                format!("{host:?} is not a host name (letters, digits, '-' and '.', no port)"),
            );
        }
    }
    super::ConsoleConfig { bind, token, max_connections, allowed_hosts }
}

/// Change gating's default maximum staleness, ms.
const DEFAULT_GATE_MAX_STALE_MS: u64 = 60_000;

/// A `gate_max_stale_ms` value: `Some(None)` for 0 (gating off), `Some(Some(d))` for a
/// staleness in range, `None` when absent (or out of range, recorded in `problems`).
fn gate_max_stale(problems: &mut Problems, path: &str, value: Option<u64>) -> Option<Option<Duration>> {
    match value? {
        0 => Some(None),
        millis if (1_000..=3_600_000).contains(&millis) => Some(Some(Duration::from_millis(millis))),
        millis => {
            problems.push(path, format!("{millis} must be 0 (gating off) or in 1000..=3600000 (milliseconds)"));
            None
        }
    }
}

/// Validates one camera; `None` if it is disabled or has problems (recorded in `problems`).
/// `gate_default` is `[detector] gate_max_stale_ms`, validated.
fn validate_camera(
    id: &str,
    raw: &RawCamera,
    path: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    gate_default: Option<Duration>,
    problems: &mut Problems,
) -> Option<CameraConfig> {
    let before = problems.0.len();
    let camera_id = CameraId::try_new(id).map_err(|message| problems.push(path, message)).ok();
    let source = match raw.url.as_deref() {
        None => {
            problems.push(format!("{path}.url"), "is required");
            None
        }
        Some(url) => validate_source(url, raw, path, base_dir, env, problems),
    };
    let zones = super::zones::validate_zones(&raw.zones, path, base_dir, problems);
    // Fall-watch cameras are sampled at least once a second, which needs every frame decoded.
    let fall_watch = zones.iter().any(|zone| zone.kind == crate::zones::ZoneKind::FallWatch);
    let default_interval_ms = if fall_watch { 1000 } else { 2000 };
    let analysis_interval = problems.millis(
        &format!("{path}.analysis_interval_ms"),
        raw.analysis_interval_ms,
        default_interval_ms,
        40,
        3_600_000,
    );
    // Fall-watch cameras are analysed at least once a second while people are in view
    // (`active_interval_ms`); with nobody there, every `analysis_interval_ms`.
    let active_interval = match (fall_watch, raw.active_interval_ms) {
        (false, None) => None,
        (false, Some(_)) => {
            problems.push(format!("{path}.active_interval_ms"), "applies only to cameras with fall_watch zones");
            None
        }
        (true, value) => {
            let default_ms = (analysis_interval.as_millis() as u64).min(1000);
            let active = problems.millis(&format!("{path}.active_interval_ms"), value, default_ms, 40, 3_600_000);
            if active > Duration::from_millis(1000) {
                problems.push(
                    format!("{path}.active_interval_ms"),
                    "cameras with fall_watch zones need at most 1000 (one analysed frame per second while people are in view)",
                );
            }
            if active > analysis_interval {
                problems.push(
                    format!("{path}.active_interval_ms"),
                    format!("must not be longer than analysis_interval_ms ({})", analysis_interval.as_millis()),
                );
            }
            Some(active)
        }
    };
    let decode_mode = match raw.decode.as_deref() {
        None if fall_watch => DecodeMode::EveryFrame,
        None | Some("keyframes") => DecodeMode::Keyframes,
        Some("every_frame") => DecodeMode::EveryFrame,
        Some(other) => {
            problems.push(
                format!("{path}.decode"),
                format!("unknown mode {other:?}; expected \"keyframes\" or \"every_frame\""),
            );
            DecodeMode::Keyframes
        }
    };
    let place = PlaceLabels {
        street: raw.street.clone().unwrap_or_default(),
        community: raw.community.clone().unwrap_or_default(),
        grid: raw.grid.clone().unwrap_or_default(),
        steward: raw.steward.clone().unwrap_or_default(),
    };
    for (key, label) in
        [("street", &place.street), ("community", &place.community), ("grid", &place.grid), ("steward", &place.steward)]
    {
        if !label.is_empty() && !super::delivery::is_topic_level(label) {
            problems
                .push(format!("{path}.{key}"), format!("{label:?} cannot be an MQTT topic level (no '/', '+', '#')"));
        }
    }
    let snapshot_url = raw.snapshot_url.as_deref().and_then(|text| {
        let key = format!("{path}.snapshot_url");
        if !matches!(source, Some(SourceSpec::Rtsp { .. })) {
            problems.push(key, "applies only to rtsp:// cameras");
            return None;
        }
        match url::Url::parse(text) {
            Ok(url) if url.scheme() != "rtsp" => {
                problems.push(key, format!("unsupported scheme {:?}; expected \"rtsp\"", url.scheme()));
                None
            }
            Ok(url) if !url.username().is_empty() || url.password().is_some() => {
                problems.push(key, "must not contain credentials; the camera's username and password are used");
                None
            }
            Ok(url) => Some(url),
            Err(error) => {
                problems.push(key, format!("not a URL ({error})"));
                None
            }
        }
    });
    let priority = match raw.priority.as_deref() {
        None => crate::schedule::Priority::Normal,
        Some(name) => crate::schedule::Priority::from_name(name).unwrap_or_else(|| {
            problems.push(
                format!("{path}.priority"),
                format!("unknown priority {name:?}; expected \"low\", \"normal\" or \"high\""),
            );
            crate::schedule::Priority::Normal
        }),
    };
    let gate_max_stale =
        gate_max_stale(problems, &format!("{path}.gate_max_stale_ms"), raw.gate_max_stale_ms).unwrap_or(gate_default);
    let detector_model = match raw.detector_model.as_deref() {
        None => super::ModelChoice::Auto,
        Some(name) => super::ModelChoice::from_name(name).unwrap_or_else(|| {
            problems.push(
                format!("{path}.detector_model"),
                format!("unknown model {name:?}; expected \"auto\", \"square\" ([detector] model) or \"wide\" ([detector] wide_model)"),
            );
            super::ModelChoice::Auto
        }),
    };
    if problems.0.len() > before || raw.enabled == Some(false) {
        return None;
    }
    Some(CameraConfig {
        id: camera_id?,
        source: source?,
        place,
        analysis_interval,
        active_interval,
        decode_mode,
        zones,
        snapshot_url,
        priority,
        gate_max_stale,
        detector_model,
    })
}

/// Validates a camera's `url` and the credential and transport keys that go with it.
fn validate_source(
    url_text: &str,
    raw: &RawCamera,
    path: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> Option<SourceSpec> {
    let url_path = format!("{path}.url");
    if let Some(file) = url_text.strip_prefix("file:") {
        let file = file.strip_prefix("//").unwrap_or(file);
        if file.is_empty() {
            problems.push(url_path, "file: URL names no file");
            return None;
        }
        let file_path = resolve(base_dir, file);
        if !file_path.is_file() {
            problems.push(url_path, format!("footage file {} does not exist", file_path.display()));
            return None;
        }
        if let Err(problem) = crate::ingest::file::probe(&file_path) {
            problems.push(url_path, format!("footage file {}: {problem:#}", file_path.display()));
            return None;
        }
        for (key, set) in [
            ("username", raw.username.is_some()),
            ("password_env", raw.password_env.is_some()),
            ("password_file", raw.password_file.is_some()),
            ("transport", raw.transport.is_some()),
        ] {
            if set {
                problems.push(format!("{path}.{key}"), "applies only to rtsp:// cameras");
            }
        }
        return Some(SourceSpec::File { path: file_path });
    }

    let url = match url::Url::parse(url_text) {
        Ok(url) => url,
        Err(error) => {
            problems.push(url_path, format!("not a URL ({error})"));
            return None;
        }
    };
    if url.scheme() != "rtsp" {
        problems.push(url_path, format!("unsupported scheme {:?}; expected \"rtsp\" or \"file\"", url.scheme()));
        return None;
    }
    if url.host_str().is_none_or(str::is_empty) {
        problems.push(url_path, "has no host");
        return None;
    }
    if !url.username().is_empty() || url.password().is_some() {
        // Said without echoing the URL: it holds a password.
        problems.push(url_path, "must not contain credentials; use username and password_env or password_file");
        return None;
    }
    let transport = match raw.transport.as_deref() {
        None | Some("tcp") => RtspTransport::Tcp,
        Some("udp") => RtspTransport::Udp,
        Some(other) => {
            problems
                .push(format!("{path}.transport"), format!("unknown transport {other:?}; expected \"tcp\" or \"udp\""));
            RtspTransport::Tcp
        }
    };
    let password = secret(path, raw.password_env.as_deref(), raw.password_file.as_deref(), base_dir, env, problems);
    let credentials = match (&raw.username, password) {
        (Some(username), Some(password)) => {
            Some(RtspCredentials { username: username.clone(), password: Secret::new(password) })
        }
        (Some(_), None) if raw.password_env.is_none() && raw.password_file.is_none() => {
            problems.push(format!("{path}.username"), "needs password_env or password_file");
            None
        }
        (None, Some(_)) => {
            problems.push(format!("{path}.username"), "is required when a password is configured");
            None
        }
        _ => None,
    };
    Some(SourceSpec::Rtsp { url, credentials, transport })
}

/// A password from `<path>.password_env` or `<path>.password_file` (first line), if set.
pub(super) fn secret(
    path: &str,
    password_env: Option<&str>,
    password_file: Option<&str>,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> Option<String> {
    named_secret(path, ("password_env", password_env), ("password_file", password_file), base_dir, env, problems)
}

/// A secret from an environment variable or a file (first line), under the given key names.
pub(super) fn named_secret(
    path: &str,
    (env_key, variable): (&str, Option<&str>),
    (file_key, file): (&str, Option<&str>),
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &mut Problems,
) -> Option<String> {
    match (variable, file) {
        (Some(_), Some(_)) => {
            problems.push(format!("{path}.{env_key}"), format!("set either {env_key} or {file_key}, not both"));
            None
        }
        (Some(variable), None) => match env(variable) {
            Some(value) => Some(value),
            None => {
                problems.push(format!("{path}.{env_key}"), format!("environment variable {variable} is not set"));
                None
            }
        },
        (None, Some(file)) => {
            let file_path = resolve(base_dir, file);
            match read_secret_file(&file_path) {
                Ok(secret) => Some(secret),
                Err(problem) => {
                    problems.push(format!("{path}.{file_key}"), format!("{}: {problem}", file_path.display()));
                    None
                }
            }
        }
        (None, None) => None,
    }
}

/// Largest secret (first line of a password or token file) read, in bytes.
pub const MAX_SECRET_BYTES: usize = 4096;

/// The first line of a secret file, read safely (issue 11: `password_file = "/dev/zero"` made
/// check-config hang at 19.7 GB): regular files only (no device, FIFO or directory, which
/// could block or never end), at most [`MAX_SECRET_BYTES`] read, valid UTF-8. A file that
/// others may read or write, or its group may write, is accepted with a warning (refusing it
/// would stop a running service at its next restart): the secret may already be known to
/// other local users. Group read is fine: the documented layout is root:street-gateway 0640
/// (docs/operations.md); `scripts/demo` makes its token 0600.
pub fn read_secret_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    // `metadata` first: opening a FIFO for reading would block until a writer comes.
    let metadata = std::fs::metadata(path).map_err(|error| format!("cannot read: {error}"))?;
    if !metadata.is_file() {
        return Err("is not a regular file (a secret file holds one line of text)".into());
    }
    let file = std::fs::File::open(path).map_err(|error| format!("cannot read: {error}"))?;
    let mut bytes = Vec::with_capacity(256);
    file.take(MAX_SECRET_BYTES as u64 + 1).read_to_end(&mut bytes).map_err(|error| format!("cannot read: {error}"))?;
    let line_end = bytes.iter().position(|&b| b == b'\n');
    let line = match line_end {
        Some(end) => &bytes[..end],
        None if bytes.len() > MAX_SECRET_BYTES => {
            return Err(format!("its first line is longer than {MAX_SECRET_BYTES} bytes; a secret file holds one line"))
        }
        None => &bytes[..],
    };
    let line = std::str::from_utf8(line).map_err(|_| "its first line is not UTF-8 text".to_string())?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = metadata.permissions().mode();
        if mode & 0o027 != 0 {
            tracing::warn!(
                file = %path.display(),
                mode = format!("{:o}", mode & 0o777),
                "secret file is readable or writable by other users (or writable by its group); chmod 640 or 600 it"
            );
        }
    }
    Ok(line.to_string())
}

/// Resolves a config path against the config file's directory.
pub(super) fn resolve(base_dir: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base_dir.join(path)
    }
}

/// Every problem `text` has, as printed; empty when it validates (for the config tests).
#[cfg(test)]
pub(super) fn problems_of(text: &str) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    match super::parse(text, dir.path()) {
        Ok(_) => vec![],
        Err(problems) => problems.0.iter().map(ToString::to_string).collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::parse;

    #[test]
    fn reports_every_problem_with_its_key_path() {
        let problems = problems_of(
            r#"
            [detector]
            score_threshold = 1.5
            [cameras.gate-3]
            url = "http://10.0.0.3/stream"
            [cameras."bad id"]
            url = "rtsp://10.0.0.4/"
            [cameras.yard]
            url = "rtsp://admin:secret@10.0.0.5/"
            [cameras.lobby]
            url = "rtsp://10.0.0.6/"
            username = "admin"
            password_env = "SURELY_UNSET_VARIABLE_4711"
            decode = "sometimes"
            "#,
        );
        let expected = [
            "detector.score_threshold: 1.5 must be in (0, 1]",
            "cameras.bad id: camera id \"bad id\" must be 1-64 characters of A-Z, a-z, 0-9, '-' and '_'",
            "cameras.gate-3.url: unsupported scheme \"http\"; expected \"rtsp\" or \"file\"",
            "cameras.lobby.password_env: environment variable SURELY_UNSET_VARIABLE_4711 is not set",
            "cameras.lobby.decode: unknown mode \"sometimes\"; expected \"keyframes\" or \"every_frame\"",
            "cameras.yard.url: must not contain credentials; use username and password_env or password_file",
        ];
        assert_eq!(problems, expected);
        assert!(!problems.iter().any(|p| p.contains("secret")), "a password leaked into {problems:?}");
    }

    #[test]
    fn detector_model_choices_are_validated_with_their_key_path() {
        let problems = problems_of(
            r#"
            [detector]
            wide_model = ""
            [cameras.a]
            url = "rtsp://10.0.0.1/"
            detector_model = "416x256"
            [cameras.b]
            url = "rtsp://10.0.0.2/"
            detector_model = "wide"
            "#,
        );
        assert_eq!(
            problems,
            [
                "detector.wide_model: must not be empty (leave it out for one model)",
                "cameras.a.detector_model: unknown model \"416x256\"; expected \"auto\", \"square\" ([detector] model) or \"wide\" ([detector] wide_model)",
                "cameras.b.detector_model: \"wide\" needs [detector] wide_model (a manifest such as \"models/yolox_nano_416x256.toml\")",
            ]
        );
        let dir = tempfile::tempdir().unwrap();
        let config = parse(
            r#"
            [detector]
            wide_model = "models/yolox_nano_416x256.toml"
            [cameras.a]
            url = "rtsp://10.0.0.1/"
            [cameras.b]
            url = "rtsp://10.0.0.2/"
            detector_model = "square"
            [cameras.c]
            url = "rtsp://10.0.0.3/"
            detector_model = "wide"
            "#,
            dir.path(),
        )
        .unwrap();
        assert_eq!(config.detector.wide_model_manifest, Some(dir.path().join("models/yolox_nano_416x256.toml")));
        let choices: Vec<_> = config.cameras.iter().map(|c| c.detector_model).collect();
        use crate::config::{ModelChoice, ModelVariant};
        assert_eq!(
            choices,
            [ModelChoice::Auto, ModelChoice::Fixed(ModelVariant::Square), ModelChoice::Fixed(ModelVariant::Wide)]
        );
        assert_eq!(parse("[cameras.a]\nurl = \"rtsp://h/\"\n", dir.path()).unwrap().detector.wide_model_manifest, None);
    }

    #[test]
    fn unknown_keys_are_refused_with_their_path() {
        let problems = problems_of("[cameras.gate-3]\nurl = \"rtsp://h/\"\nurll = 1\n");
        assert_eq!(problems.len(), 1);
        assert!(
            problems[0].starts_with("cameras.gate-3.urll: unknown field `urll`, expected one of `url`"),
            "{problems:?}"
        );
    }

    #[test]
    fn defaults_apply_and_credentials_come_from_env() {
        let dir = tempfile::tempdir().unwrap();
        let raw: RawConfig = toml::from_str(
            "[cameras.gate-3]\nurl = \"rtsp://10.0.0.3:554/s1\"\nusername = \"admin\"\npassword_env = \"PW\"\n",
        )
        .unwrap();
        let config = validate(raw, dir.path(), &|name| (name == "PW").then(|| "pa55".to_string())).unwrap();
        let camera = &config.cameras[0];
        assert_eq!(camera.analysis_interval, Duration::from_secs(2));
        assert_eq!(camera.decode_mode, DecodeMode::Keyframes);
        let SourceSpec::Rtsp { credentials: Some(credentials), transport, .. } = &camera.source else {
            panic!("expected rtsp source with credentials: {:?}", camera.source)
        };
        assert_eq!(credentials.password.expose(), "pa55");
        assert_eq!(*transport, RtspTransport::Tcp);
        assert!(!format!("{config:?}").contains("pa55"), "Debug output leaks the password");
        assert_eq!(config.ingest, IngestConfig::default());
        assert_eq!(config.detector.model_manifest, dir.path().join("models/yolox_nano.toml"));
    }

    #[test]
    fn change_gating_defaults_to_a_minute_and_cameras_override_or_turn_it_off() {
        let config = |text: &str| {
            parse(text, Path::new("/")).map(|c| c.cameras.iter().map(|c| c.gate_max_stale).collect::<Vec<_>>())
        };
        let cameras = "[cameras.a]\nurl = \"rtsp://h/a\"\n[cameras.b]\nurl = \"rtsp://h/b\"\ngate_max_stale_ms = 0\n\
                       [cameras.c]\nurl = \"rtsp://h/c\"\ngate_max_stale_ms = 5000\n";
        let minute = Some(Duration::from_secs(60));
        let five = Some(Duration::from_secs(5));
        assert_eq!(config(cameras).unwrap(), vec![minute, None, five]);
        let off = format!("[detector]\ngate_max_stale_ms = 0\n{cameras}");
        assert_eq!(config(&off).unwrap(), vec![None, None, five]);
        let problems = problems_of(&format!(
            "[detector]\ngate_max_stale_ms = 10\n{cameras}[cameras.d]\nurl = \"rtsp://h/d\"\ngate_max_stale_ms = 999\n"
        ));
        assert_eq!(
            problems,
            [
                "detector.gate_max_stale_ms: 10 must be 0 (gating off) or in 1000..=3600000 (milliseconds)",
                "cameras.d.gate_max_stale_ms: 999 must be 0 (gating off) or in 1000..=3600000 (milliseconds)",
            ]
        );
    }

    /// Issue 11: a secret file that is not a small regular file is refused, never read whole.
    #[test]
    fn secret_files_are_regular_small_files_read_to_their_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            path
        };
        let fifo = dir.path().join("fifo");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let big_one_line = write("big-one-line", &vec![b'x'; 10 * 1024 * 1024]);
        let mut big_with_newline = b"s3cret-first-line\n".to_vec();
        big_with_newline.extend(std::iter::repeat_n(b'y', 10 * 1024 * 1024));
        let big_with_newline = write("big-with-newline", &big_with_newline);
        // (path, Ok(secret) or Err(part of the message))
        let table: Vec<(std::path::PathBuf, Result<&str, &str>)> = vec![
            (write("good", b"pa55word\nsecond line\n"), Ok("pa55word")),
            (write("crlf", b"pa55word\r\n"), Ok("pa55word")),
            (write("no-newline", b"pa55word"), Ok("pa55word")),
            (write("empty", b""), Ok("")),
            (big_with_newline, Ok("s3cret-first-line")),
            (big_one_line, Err("longer than 4096 bytes")),
            (write("binary", b"\xff\xfe\n"), Err("not UTF-8")),
            (std::path::PathBuf::from("/dev/zero"), Err("not a regular file")),
            (fifo, Err("not a regular file")),
            (dir.path().to_path_buf(), Err("not a regular file")),
            (dir.path().join("missing"), Err("cannot read")),
        ];
        for (path, expected) in table {
            match (read_secret_file(&path), expected) {
                (Ok(secret), Ok(expected)) => assert_eq!(secret, expected, "{}", path.display()),
                (Err(problem), Err(expected)) => assert!(problem.contains(expected), "{}: {problem}", path.display()),
                (got, expected) => panic!("{}: got {got:?}, expected {expected:?}", path.display()),
            }
        }
    }

    #[test]
    fn a_camera_password_file_that_is_a_device_is_a_problem_with_its_key_path() {
        let problems = problems_of(
            "[cameras.gate-3]\nurl = \"rtsp://10.0.0.3/\"\nusername = \"admin\"\npassword_file = \"/dev/zero\"\n",
        );
        assert_eq!(
            problems,
            ["cameras.gate-3.password_file: /dev/zero: is not a regular file (a secret file holds one line of text)"]
        );
        let problems = problems_of("[console]\ntoken_file = \"/dev/zero\"\n");
        assert_eq!(problems.len(), 1);
        assert!(problems[0].starts_with("console.token_file: /dev/zero: is not a regular file"), "{problems:?}");
    }

    /// Issue 11: a zone outline that crosses itself has no clear inside.
    #[test]
    fn self_intersecting_polygons_are_refused_with_their_key_path() {
        let zone = |polygon: &str| {
            format!("[cameras.gate-3]\nurl = \"rtsp://h/\"\n[[cameras.gate-3.zones]]\nid = \"z\"\nkind = \"no_parking\"\npolygon = {polygon}\n")
        };
        let problems = problems_of(&zone("[[0.1, 0.1], [0.9, 0.9], [0.9, 0.1], [0.1, 0.9]]"));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("cameras.gate-3.zones[0].polygon: crosses itself: the edge from point 0 to 1 meets the edge from point 2 to 3"),
            "{problems:?}"
        );
        assert_eq!(problems_of(&zone("[[0.1, 0.1], [0.9, 0.1], [0.9, 0.9], [0.1, 0.9]]")), Vec::<String>::new());
    }

    /// Issue 11: a `file:` camera must be video FFmpeg can read, and a reference a picture; the
    /// reference's refusal reads the same whether the file exists or not.
    #[test]
    fn file_cameras_must_be_video_and_references_pictures() {
        let dir = tempfile::tempdir().unwrap();
        let text_file = dir.path().join("notes.mp4");
        std::fs::write(&text_file, "this is not video\n".repeat(100)).unwrap();
        let problems = problems_of(&format!("[cameras.gate-3]\nurl = \"file:{}\"\n", text_file.display()));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("cameras.gate-3.url: footage file"), "{problems:?}");
        let fifo = dir.path().join("fifo.mp4");
        assert!(std::process::Command::new("mkfifo").arg(&fifo).status().unwrap().success());
        let problems = problems_of(&format!("[cameras.gate-3]\nurl = \"file:{}\"\n", fifo.display()));
        assert_eq!(problems.len(), 1, "a FIFO is refused without being opened: {problems:?}");

        let zone = |reference: &str| {
            format!(
                "[cameras.gate-3]\nurl = \"rtsp://h/\"\n[[cameras.gate-3.zones]]\nid = \"bins\"\nkind = \"bin_area\"\n\
                 polygon = [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5]]\nreference = \"{reference}\"\n"
            )
        };
        let messages: Vec<String> =
            [text_file.display().to_string(), "/nonexistent/ref.png".into(), "/dev/zero".into()]
                .iter()
                .map(|reference| {
                    let problems = problems_of(&zone(reference));
                    assert_eq!(problems.len(), 1, "{problems:?}");
                    assert!(problems[0].starts_with("cameras.gate-3.zones[0].reference: "), "{problems:?}");
                    problems[0].replace(reference.as_str(), "<file>")
                })
                .collect();
        assert!(messages.iter().all(|m| *m == messages[0]), "{messages:#?}");
        assert!(!messages[0].contains("exist"), "{}", messages[0]);
    }

    #[test]
    fn console_limits_and_host_names_are_validated() {
        let dir = tempfile::tempdir().unwrap();
        let config = parse("[console]\nallowed_hosts = [\"Gateway.LAN\"]\n", dir.path()).unwrap();
        let console = config.console.unwrap();
        assert_eq!((console.max_connections, console.allowed_hosts), (64, vec!["gateway.lan".to_string()]));
        let problems = problems_of("[console]\nmax_connections = 0\nallowed_hosts = [\"evil.example:80\", \"\"]\n");
        assert_eq!(
            problems,
            [
                "console.max_connections: 0 is out of range 1..=4096",
                "console.allowed_hosts[0]: \"evil.example:80\" is not a host name (letters, digits, '-' and '.', no port)",
                "console.allowed_hosts[1]: \"\" is not a host name (letters, digits, '-' and '.', no port)",
            ]
        );
    }

    #[test]
    fn disabled_cameras_are_validated_but_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let config = parse("[cameras.a]\nurl = \"rtsp://h/\"\nenabled = false\n", dir.path()).unwrap();
        assert!(config.cameras.is_empty());
    }
}
