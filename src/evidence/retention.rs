//! Evidence retention: what `<state_dir>/evidence/` may keep, so that the gateway's own
//! evidence can never fill its disk (issue 12).
//!
//! Files older than `max_age` go first, then the oldest ones until the directory is under
//! `max_bytes`. The files of an open incident are never deleted, whatever their age or size:
//! a steward may still be looking at them. An incident's files are named after it
//! (`<camera>_<zone>_<kind>_<start_ms>-<seq>[...].{jpg,json}`), so the incident a file belongs
//! to is the part of its name before the last `-<seq>`.
//!
//! Clips (`…-clip.mp4`, issue 16) have their own budget (`[evidence] clip_max_age_days`,
//! `clip_max_mib`): they are larger and kept for less time, and a burst of clips must not push
//! the snapshots of older incidents out (nor the reverse). The same rules apply to them.
//!
//! [`plan`] is pure (files, open incidents and time in, the files to delete out); [`prune`]
//! is the shell that lists the directory and deletes.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

/// How long and how much evidence is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Files older than this are deleted (unless an open incident's).
    pub max_age_ms: i64,
    /// Above this many bytes in all, the oldest files are deleted (unless an open incident's).
    pub max_bytes: u64,
}

/// One evidence file as found on disk.
#[derive(Debug, Clone, PartialEq)]
pub struct EvidenceFile {
    /// Its path.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Its modification time, ms since the Unix epoch.
    pub modified_ms: i64,
}

/// The incident a file name belongs to, as its evidence names it (sanitised id).
pub fn incident_of(file_name: &str) -> &str {
    let stem = file_name.split('.').next().unwrap_or(file_name);
    // `<incident>-<seq>` or `<incident>-<seq>-crop` / `-main`: the incident ends before the
    // first `-<digits>` part after which only a known suffix may follow.
    let mut end = stem.len();
    for (index, _) in stem.match_indices('-') {
        let rest = &stem[index + 1..];
        let seq = rest.split('-').next().unwrap_or("");
        if !seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()) {
            end = index;
        }
    }
    &stem[..end]
}

/// The evidence name of an incident id (as [`crate::evidence`] writes it).
pub fn sanitised(incident_id: &str) -> String {
    incident_id.replace([':', '/'], "_")
}

/// Whether a file of the evidence directory is a clip (or a clip being written), which has
/// its own budget.
pub fn is_clip(file_name: &str) -> bool {
    file_name.ends_with("-clip.mp4") || file_name.ends_with("-clip.mp4.tmp")
}

/// Which files to delete: indices into `files`. `open` holds the sanitised ids of open
/// incidents. Pure.
pub fn plan(files: &[EvidenceFile], open: &HashSet<String>, now_ms: i64, policy: RetentionPolicy) -> Vec<usize> {
    let deletable = |file: &EvidenceFile| {
        let name = file.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        !open.contains(incident_of(&name))
    };
    let mut order: Vec<usize> = (0..files.len()).collect();
    order.sort_by_key(|&index| (files[index].modified_ms, files[index].path.clone()));
    let mut total: u64 = files.iter().map(|file| file.bytes).sum();
    let mut delete = Vec::new();
    for index in order {
        let file = &files[index];
        if !deletable(file) {
            continue;
        }
        let too_old = now_ms.saturating_sub(file.modified_ms) > policy.max_age_ms;
        if too_old || total > policy.max_bytes {
            total = total.saturating_sub(file.bytes);
            delete.push(index);
        }
    }
    delete
}

/// What one pruning pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    /// Files deleted.
    pub files: u64,
    /// Bytes freed.
    pub bytes: u64,
    /// Bytes left in the directory.
    pub kept_bytes: u64,
    /// Of `kept_bytes`, the clips'.
    pub clip_kept_bytes: u64,
}

/// Counters of the retention passes, for `/metrics`.
#[derive(Debug, Default)]
pub struct RetentionStats {
    /// Bytes of evidence on disk after the last pass.
    pub bytes: std::sync::atomic::AtomicU64,
    /// Of those, the clips'.
    pub clip_bytes: std::sync::atomic::AtomicU64,
    /// Files deleted by retention.
    pub deleted_files: std::sync::atomic::AtomicU64,
    /// Bytes freed by retention.
    pub deleted_bytes: std::sync::atomic::AtomicU64,
    /// Passes that could not list the directory.
    pub errors: std::sync::atomic::AtomicU64,
}

impl RetentionStats {
    /// Records one pass.
    pub fn record(&self, result: &std::io::Result<Pruned>) {
        use std::sync::atomic::Ordering::Relaxed;
        match result {
            Ok(pruned) => {
                self.bytes.store(pruned.kept_bytes, Relaxed);
                self.clip_bytes.store(pruned.clip_kept_bytes, Relaxed);
                self.deleted_files.fetch_add(pruned.files, Relaxed);
                self.deleted_bytes.fetch_add(pruned.bytes, Relaxed);
            }
            Err(_) => {
                self.errors.fetch_add(1, Relaxed);
            }
        }
    }

    /// The Prometheus text of these counters.
    pub fn render(&self) -> String {
        use std::sync::atomic::Ordering::Relaxed;
        let series = [
            (
                "gateway_evidence_bytes",
                "gauge",
                "Bytes of evidence on disk after the last retention pass.",
                self.bytes.load(Relaxed),
            ),
            (
                "gateway_evidence_clip_bytes",
                "gauge",
                "Bytes of event clips on disk after the last retention pass (their own budget).",
                self.clip_bytes.load(Relaxed),
            ),
            (
                "gateway_evidence_deleted_files_total",
                "counter",
                "Evidence files deleted by retention (age or size).",
                self.deleted_files.load(Relaxed),
            ),
            (
                "gateway_evidence_deleted_bytes_total",
                "counter",
                "Bytes freed by evidence retention.",
                self.deleted_bytes.load(Relaxed),
            ),
            (
                "gateway_evidence_retention_errors_total",
                "counter",
                "Retention passes that could not list the evidence directory.",
                self.errors.load(Relaxed),
            ),
        ];
        let mut out = String::new();
        for (name, kind, help, value) in series {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
        }
        out
    }
}

/// Lists `<state_dir>/evidence` and deletes what [`plan`] says: clips under `clip_policy`,
/// the other files under `policy`. A file that cannot be read or deleted is left (and logged
/// by the caller through the error count).
pub fn prune(
    state_dir: &Path,
    open: &HashSet<String>,
    now_ms: i64,
    policy: RetentionPolicy,
    clip_policy: RetentionPolicy,
) -> std::io::Result<Pruned> {
    let directory = state_dir.join("evidence");
    let entries = match std::fs::read_dir(&directory) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Pruned::default()),
        Err(error) => return Err(error),
    };
    let mut files = Vec::new();
    for entry in entries.flatten() {
        let Ok(metadata) = entry.metadata() else { continue };
        if !metadata.is_file() {
            continue;
        }
        let modified_ms = metadata
            .modified()
            .ok()
            .and_then(|time| time.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |since| since.as_millis() as i64);
        files.push(EvidenceFile { path: entry.path(), bytes: metadata.len(), modified_ms });
    }
    let clip = |file: &EvidenceFile| file.path.file_name().is_some_and(|name| is_clip(&name.to_string_lossy()));
    let (clips, others): (Vec<EvidenceFile>, Vec<EvidenceFile>) = files.into_iter().partition(clip);
    let mut pruned = Pruned {
        kept_bytes: clips.iter().chain(&others).map(|file| file.bytes).sum(),
        clip_kept_bytes: clips.iter().map(|file| file.bytes).sum(),
        ..Pruned::default()
    };
    for (files, policy, is_clips) in [(&others, policy, false), (&clips, clip_policy, true)] {
        for index in plan(files, open, now_ms, policy) {
            let file = &files[index];
            if std::fs::remove_file(&file.path).is_ok() {
                pruned.files += 1;
                pruned.bytes += file.bytes;
                pruned.kept_bytes -= file.bytes;
                if is_clips {
                    pruned.clip_kept_bytes -= file.bytes;
                }
            }
        }
    }
    Ok(pruned)
}

#[cfg(test)]
// Files are aged against the real clock, as the file system stamps them.
#[allow(clippy::disallowed_methods)]
mod tests {
    use super::*;

    const DAY_MS: i64 = 86_400_000;

    fn file(name: &str, bytes: u64, modified_ms: i64) -> EvidenceFile {
        EvidenceFile { path: PathBuf::from(format!("/state/evidence/{name}")), bytes, modified_ms }
    }

    #[test]
    fn file_names_map_to_their_incident() {
        // (file name, incident)
        let table = [
            ("gate-3_pavement_misparked_bike_1700000000000-1.jpg", "gate-3_pavement_misparked_bike_1700000000000"),
            (
                "gate-3_pavement_misparked_bike_1700000000000-12-crop.jpg",
                "gate-3_pavement_misparked_bike_1700000000000",
            ),
            ("gate-3_pavement_misparked_bike_1700000000000-2-main.jpg", "gate-3_pavement_misparked_bike_1700000000000"),
            ("gate-3_pavement_misparked_bike_1700000000000-2.json", "gate-3_pavement_misparked_bike_1700000000000"),
            ("cam-7-east_bins_trash_overflow_5-3.jpg", "cam-7-east_bins_trash_overflow_5"),
        ];
        for (name, incident) in table {
            assert_eq!(incident_of(name), incident, "{name}");
        }
        assert_eq!(
            sanitised("gate-3:pavement:misparked_bike:1700000000000"),
            "gate-3_pavement_misparked_bike_1700000000000"
        );
    }

    #[test]
    fn old_files_then_the_oldest_over_the_budget_go_and_an_open_incident_keeps_everything() {
        let policy = RetentionPolicy { max_age_ms: 30 * DAY_MS, max_bytes: 250 };
        let now = 100 * DAY_MS;
        let files = [
            file("a_z_k_1-1.jpg", 100, now - 40 * DAY_MS),    // 0: too old
            file("open_z_k_2-1.jpg", 100, now - 50 * DAY_MS), // 1: too old, but open
            file("b_z_k_3-1.jpg", 100, now - 3 * DAY_MS),     // 2: oldest young one, over budget
            file("c_z_k_4-1.jpg", 100, now - 2 * DAY_MS),     // 3
            file("d_z_k_5-1.jpg", 50, now - DAY_MS),          // 4
        ];
        let open: HashSet<String> = ["open_z_k_2".to_string()].into();
        // 450 bytes: a goes (age) → 350; open stays; b goes (budget) → 250; the rest fit.
        assert_eq!(plan(&files, &open, now, policy), vec![0, 2]);
        // Nothing over age or budget: nothing goes.
        let roomy = RetentionPolicy { max_age_ms: 60 * DAY_MS, max_bytes: 1_000 };
        assert!(plan(&files, &open, now, roomy).is_empty());
        // An open incident over the budget on its own is still kept.
        let tiny = RetentionPolicy { max_age_ms: 60 * DAY_MS, max_bytes: 0 };
        assert_eq!(plan(&files, &open, now, tiny), vec![0, 2, 3, 4]);
    }

    #[test]
    fn prune_deletes_on_disk_and_reports() {
        let state = tempfile::tempdir().unwrap();
        let evidence = state.path().join("evidence");
        std::fs::create_dir_all(&evidence).unwrap();
        std::fs::write(evidence.join("gone_z_k_1-1.jpg"), vec![0u8; 300]).unwrap();
        std::fs::write(evidence.join("open_z_k_2-1.jpg"), vec![0u8; 300]).unwrap();
        let open: HashSet<String> = ["open_z_k_2".to_string()].into();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        let policy = RetentionPolicy { max_age_ms: DAY_MS, max_bytes: 100 };
        let roomy = RetentionPolicy { max_age_ms: DAY_MS, max_bytes: 1 << 30 };
        let pruned = prune(state.path(), &open, now, policy, roomy).unwrap();
        assert_eq!(pruned, Pruned { files: 1, bytes: 300, kept_bytes: 300, clip_kept_bytes: 0 });
        assert!(!evidence.join("gone_z_k_1-1.jpg").exists());
        assert!(evidence.join("open_z_k_2-1.jpg").exists());
        assert_eq!(prune(&state.path().join("none"), &open, now, policy, roomy).unwrap(), Pruned::default());
    }

    #[test]
    fn clips_have_their_own_budget_and_an_open_incidents_clip_is_kept() {
        let state = tempfile::tempdir().unwrap();
        let evidence = state.path().join("evidence");
        std::fs::create_dir_all(&evidence).unwrap();
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
        // (file, bytes)
        let files = [
            ("old_z_k_1-1.jpg", 100),
            ("old_z_k_1-1-clip.mp4", 1000),
            ("new_z_k_2-1-clip.mp4", 1000),
            ("open_z_k_3-1-clip.mp4", 1000),
        ];
        for (name, bytes) in files {
            std::fs::write(evidence.join(name), vec![0u8; bytes]).unwrap();
        }
        // Make the first clip the oldest.
        let old = std::fs::File::options().write(true).open(evidence.join("old_z_k_1-1-clip.mp4")).unwrap();
        old.set_modified(std::time::SystemTime::now() - std::time::Duration::from_secs(3600)).unwrap();
        assert!(is_clip("a_b_c_1-1-clip.mp4") && is_clip("a_b_c_1-1-clip.mp4.tmp") && !is_clip("a_b_c_1-1.jpg"));
        let open: HashSet<String> = ["open_z_k_3".to_string()].into();
        let snapshots = RetentionPolicy { max_age_ms: DAY_MS, max_bytes: 1 << 20 };
        // Clips over their 1500-byte budget: the oldest deletable ones go until the rest fit;
        // the open incident's stays; the snapshot (under its own budget) is not touched.
        let clips = RetentionPolicy { max_age_ms: DAY_MS, max_bytes: 1500 };
        let pruned = prune(state.path(), &open, now, snapshots, clips).unwrap();
        assert_eq!(pruned, Pruned { files: 2, bytes: 2000, kept_bytes: 1100, clip_kept_bytes: 1000 });
        assert!(evidence.join("old_z_k_1-1.jpg").exists());
        assert!(evidence.join("open_z_k_3-1-clip.mp4").exists());
        assert!(!evidence.join("old_z_k_1-1-clip.mp4").exists());
    }
}
