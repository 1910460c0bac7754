//! Who looked at which incident's pictures or clip, and when (issue 16: snapshots and clips
//! show residents; every read through the console is on record).
//!
//! One JSON object per line in `<state_dir>/evidence-access.jsonl`: the time, the operator's
//! name as the console knows it (the name the page was given, sent with each read; `unnamed`
//! when none), how the request was authenticated, the peer's address, the incident, what was
//! read (`snapshot`, `main`, `clip`), the answer's status and bytes, and the range asked for.
//! Bounded: past [`MAX_LOG_BYTES`] the file is renamed to `.1` (replacing the previous one)
//! and a new one started, so at most twice that is kept. Private file mode, like evidence.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use serde::Serialize;

/// The log is rotated past this size.
pub const MAX_LOG_BYTES: u64 = 8 * 1024 * 1024;
/// Longest operator name recorded, characters (as for answers).
pub const OPERATOR_MAX_CHARS: usize = 64;

/// One read of an incident's evidence.
#[derive(Debug, Clone, Serialize)]
pub struct AccessEntry {
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// The operator's name as the page sent it (`unnamed` if none, `invalid` if unusable).
    pub operator: String,
    /// `bearer`, `cookie` or `none` (a loopback read without a configured token).
    pub auth: &'static str,
    /// The peer's address.
    pub peer: String,
    /// The incident whose evidence was read.
    pub incident_id: String,
    /// `snapshot`, `main` or `clip`.
    pub what: &'static str,
    /// The HTTP status answered.
    pub status: u16,
    /// Body bytes sent.
    pub bytes: u64,
    /// The `Range` asked for, if any (at most 64 characters).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub range: Option<String>,
}

/// The access log file.
#[derive(Debug)]
pub struct AccessLog {
    path: PathBuf,
    max_bytes: u64,
    lock: Mutex<()>,
    /// Entries written.
    pub written: AtomicU64,
    /// Entries that could not be written.
    pub errors: AtomicU64,
}

impl AccessLog {
    /// The log in `state_dir`.
    pub fn new(state_dir: &Path) -> Self {
        Self::with_limit(state_dir, MAX_LOG_BYTES)
    }

    /// The log in `state_dir`, rotated past `max_bytes`.
    pub fn with_limit(state_dir: &Path, max_bytes: u64) -> Self {
        AccessLog {
            path: state_dir.join("evidence-access.jsonl"),
            max_bytes,
            lock: Mutex::new(()),
            written: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        }
    }

    /// The file written to.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one entry (blocking I/O: call it off the runtime). A failure is counted.
    pub fn record(&self, entry: &AccessEntry) {
        match self.append(entry) {
            Ok(()) => self.written.fetch_add(1, Relaxed),
            Err(error) => {
                tracing::warn!(error = %error, path = %self.path.display(), "cannot write the evidence access log");
                self.errors.fetch_add(1, Relaxed)
            }
        };
    }

    fn append(&self, entry: &AccessEntry) -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut line = serde_json::to_vec(entry).expect("entry serialises");
        line.push(b'\n');
        let _guard = self.lock.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(directory) = self.path.parent() {
            crate::evidence::create_private_dir(directory)?;
        }
        let size = std::fs::metadata(&self.path).map_or(0, |m| m.len());
        if size + line.len() as u64 > self.max_bytes && size > 0 {
            std::fs::rename(&self.path, self.path.with_extension("jsonl.1"))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(crate::evidence::PRIVATE_FILE_MODE)
            .open(&self.path)?;
        file.write_all(&line)
    }

    /// The Prometheus text of its counters.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (name, help, value) in [
            (
                "gateway_console_evidence_reads_total",
                "Reads of incidents' snapshots and clips through the console, written to the access log.",
                self.written.load(Relaxed),
            ),
            (
                "gateway_console_access_log_errors_total",
                "Evidence reads that could not be written to the access log.",
                self.errors.load(Relaxed),
            ),
        ] {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}\n"));
        }
        out
    }
}

/// The operator name a request carries (`X-Operator` header, else `operator` query
/// parameter), bounded and free of control characters.
pub fn operator_name(header: Option<&str>, query: Option<&str>) -> String {
    match header.or(query).map(str::trim) {
        None | Some("") => "unnamed".to_string(),
        Some(name) if name.chars().count() > OPERATOR_MAX_CHARS || name.chars().any(char::is_control) => {
            "invalid".to_string()
        }
        Some(name) => name.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(operator: &str) -> AccessEntry {
        AccessEntry {
            at_ms: 1,
            operator: operator.to_string(),
            auth: "cookie",
            peer: "127.0.0.1:5000".into(),
            incident_id: "gate-3:door:fallen_person:1".into(),
            what: "clip",
            status: 206,
            bytes: 1024,
            range: Some("bytes=0-1023".into()),
        }
    }

    #[test]
    fn entries_are_json_lines_and_the_file_is_rotated_when_full() {
        let state = tempfile::tempdir().unwrap();
        let log = AccessLog::with_limit(state.path(), 600);
        for index in 0..5 {
            log.record(&entry(&format!("operator {index}")));
        }
        let current = std::fs::read_to_string(log.path()).unwrap();
        let previous = std::fs::read_to_string(log.path().with_extension("jsonl.1")).unwrap();
        assert!(current.len() <= 600 && previous.len() <= 600);
        let lines: Vec<serde_json::Value> =
            previous.lines().chain(current.lines()).map(|l| serde_json::from_str(l).unwrap()).collect();
        assert!(lines.len() >= 2);
        let last = lines.last().unwrap();
        assert_eq!((last["operator"].as_str(), last["what"].as_str()), (Some("operator 4"), Some("clip")));
        assert_eq!(log.written.load(Relaxed), 5);
    }

    #[test]
    fn operator_names_are_bounded() {
        // (header, query, recorded)
        let long = "x".repeat(65);
        let table = [
            (Some("li"), Some("wang"), "li"),
            (None, Some(" wang "), "wang"),
            (None, None, "unnamed"),
            (Some(""), None, "unnamed"),
            (Some(long.as_str()), None, "invalid"),
            (Some("li\nforged"), None, "invalid"),
        ];
        for (header, query, recorded) in table {
            assert_eq!(operator_name(header, query), recorded, "{header:?} {query:?}");
        }
    }
}
