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

    let mut cameras = Vec::with_capacity(raw.cameras.len());
    for (id, raw_camera) in &raw.cameras {
        let path = format!("cameras.{id}");
        if let Some(camera) = validate_camera(id, raw_camera, &path, base_dir, env, &mut problems) {
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

    let outbox_max_entries = raw.outbox.max_entries.unwrap_or(100_000);
    if !(100..=100_000_000).contains(&outbox_max_entries) {
        problems.push("outbox.max_entries", format!("{outbox_max_entries} is out of range 100..=100000000"));
    }

    let mqtt = raw.mqtt.as_ref().and_then(|mqtt| super::delivery::validate_mqtt(mqtt, base_dir, env, &mut problems));
    let escalation = super::delivery::validate_escalation(&raw.escalation, &mut problems);
    let console = raw.console.as_ref().map(|console| validate_console(console, base_dir, env, &mut problems));

    if problems.0.is_empty() {
        Ok(Config {
            base_dir: base_dir.to_path_buf(),
            ingest,
            decode,
            detector,
            state_dir,
            outbox_max_entries,
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
    super::ConsoleConfig { bind, token }
}

/// Validates one camera; `None` if it is disabled or has problems (recorded in `problems`).
fn validate_camera(
    id: &str,
    raw: &RawCamera,
    path: &str,
    base_dir: &Path,
    env: &dyn Fn(&str) -> Option<String>,
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
            match std::fs::read_to_string(&file_path) {
                Ok(text) => Some(text.lines().next().unwrap_or("").to_string()),
                Err(error) => {
                    problems
                        .push(format!("{path}.{file_key}"), format!("cannot read {}: {error}", file_path.display()));
                    None
                }
            }
        }
        (None, None) => None,
    }
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
    fn disabled_cameras_are_validated_but_not_run() {
        let dir = tempfile::tempdir().unwrap();
        let config = parse("[cameras.a]\nurl = \"rtsp://h/\"\nenabled = false\n", dir.path()).unwrap();
        assert!(config.cameras.is_empty());
    }
}
