//! The last resort for incident events the outbox would not take: a gateway stopped while
//! its disk refuses commits (full, failing) writes the commits it holds in memory to a
//! *spill file* in another directory — by default `$RUNTIME_DIRECTORY`, which systemd's
//! `RuntimeDirectory=` puts on a RAM file system (`/run/street-gateway`, kept across restarts
//! with `RuntimeDirectoryPreserve=yes`), so a full data disk does not stop it — and the next
//! start puts them back in front of everything else: into the outbox in one transaction, or,
//! while the disk still refuses, into the commits held in memory (retried first, in order).
//! The file goes once its commits are in the outbox, or once a newer spill file holds them.
//!
//! Format: one JSON object per line (`camera`, `book`, `records`, `now_ms`), written to a
//! `.tmp` file, fsynced and renamed to `held-<wall ms>-<pid>.jsonl`, so a reader sees a whole
//! file or none; files are read oldest first (by name).
//!
//! A spill file that cannot be read (not JSON, wrong schema) is left where it is and logged at
//! every start: it is evidence, not something to delete.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::commits::Commit;
use crate::incident::IncidentBook;
use crate::outbox::OutboxRecord;

/// Spill files' name prefix and extension.
const PREFIX: &str = "held-";
const EXTENSION: &str = "jsonl";

/// One held commit as the spill file keeps it.
#[derive(Debug, Serialize, Deserialize)]
struct Line {
    camera: String,
    book: IncidentBook,
    records: Vec<OutboxRecord>,
    now_ms: i64,
}

/// Commits read back from spill files, oldest first, and the files they came from.
#[derive(Debug, Default)]
pub(super) struct Spilled {
    /// The commits, in the order they were made.
    pub commits: Vec<Commit>,
    /// The files that hold them (to delete once they are safe elsewhere).
    pub files: Vec<PathBuf>,
}

/// Writes `commits` to a new spill file in `dir` (created if missing); returns its path.
pub(super) fn write<'a>(
    dir: &Path,
    commits: impl IntoIterator<Item = &'a Commit>,
    wall_ms: i64,
) -> anyhow::Result<PathBuf> {
    fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = dir.join(format!("{PREFIX}{wall_ms:013}-{}.{EXTENSION}", std::process::id()));
    let temporary = path.with_extension("tmp");
    let mut text = Vec::new();
    for commit in commits {
        let line = Line {
            camera: commit.camera.clone(),
            book: commit.book.clone(),
            records: commit.records.clone(),
            now_ms: commit.now_ms,
        };
        serde_json::to_writer(&mut text, &line)?;
        text.push(b'\n');
    }
    let mut file = fs::File::create(&temporary).with_context(|| format!("cannot create {}", temporary.display()))?;
    let written = file.write_all(&text).and_then(|()| file.sync_all());
    if let Err(err) = written {
        let _ = fs::remove_file(&temporary);
        return Err(err).with_context(|| format!("cannot write {}", temporary.display()));
    }
    fs::rename(&temporary, &path).with_context(|| format!("cannot rename {}", temporary.display()))?;
    sync_dir(dir);
    Ok(path)
}

/// Reads every spill file in `dir`, oldest first. Unreadable files are left out (and named in
/// the error list, the second value), as is a missing `dir`.
pub(super) fn read(dir: &Path) -> (Spilled, Vec<(PathBuf, anyhow::Error)>) {
    let mut spilled = Spilled::default();
    let mut problems = Vec::new();
    let Ok(entries) = fs::read_dir(dir) else {
        return (spilled, problems);
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| {
            let name = path.file_name().and_then(|name| name.to_str()).unwrap_or("");
            name.starts_with(PREFIX) && path.extension().is_some_and(|ext| ext == EXTENSION)
        })
        .collect();
    files.sort();
    for path in files {
        match read_file(&path) {
            Ok(commits) => {
                spilled.commits.extend(commits);
                spilled.files.push(path);
            }
            Err(err) => problems.push((path, err)),
        }
    }
    (spilled, problems)
}

fn read_file(path: &Path) -> anyhow::Result<Vec<Commit>> {
    let text = fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .enumerate()
        .map(|(number, line)| {
            let line: Line = serde_json::from_str(line).with_context(|| format!("line {}", number + 1))?;
            Ok(Commit {
                camera: line.camera,
                book: line.book,
                records: line.records,
                now_ms: line.now_ms,
                received_at: None,
            })
        })
        .collect()
}

/// Deletes spill files whose commits are safe elsewhere; returns what could not be deleted.
pub(super) fn remove(files: &[PathBuf]) -> Vec<(PathBuf, std::io::Error)> {
    let mut failed = Vec::new();
    for file in files {
        if let Err(err) = fs::remove_file(file) {
            if err.kind() != std::io::ErrorKind::NotFound {
                failed.push((file.clone(), err));
            }
        }
    }
    if let Some(dir) = files.first().and_then(|file| file.parent()) {
        sync_dir(dir);
    }
    failed
}

/// [`remove`], each file that could not be deleted logged (its events are safe elsewhere).
pub(super) fn remove_logged(files: &[PathBuf]) {
    for (file, err) in remove(files) {
        tracing::error!(file = %file.display(), error = %err, "cannot delete a spill file whose events are safe: delete it by hand");
    }
}

/// Whether `dir` (or, while it does not exist, its nearest existing parent) is on the same
/// file system as `file`.
pub(super) fn same_file_system(dir: &Path, file: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let existing = dir.ancestors().find_map(|path| fs::metadata(path).ok());
    match (existing, fs::metadata(file)) {
        (Some(dir), Ok(file)) => dir.dev() == file.dev(),
        _ => false,
    }
}

/// Makes a rename or delete in `dir` durable (best effort: a RAM file system has nothing to sync).
fn sync_dir(dir: &Path) {
    if let Ok(dir) = fs::File::open(dir) {
        let _ = dir.sync_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spilled_commits_read_back_in_order_and_bad_files_are_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let commits: Vec<Commit> = (1..=3).map(super::super::commits::tests::commit).collect();
        let first = write(dir.path(), &commits[..2], 1_000).unwrap();
        let second = write(dir.path(), &commits[2..], 2_000).unwrap();
        fs::write(dir.path().join("held-0000000000500-1.jsonl"), "not json\n").unwrap();
        fs::write(dir.path().join("notes.txt"), "not a spill file").unwrap();

        let (spilled, problems) = read(dir.path());
        let seqs: Vec<u32> = spilled.commits.iter().map(|c| c.records[0].event.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        assert_eq!(spilled.commits[2].book, commits[2].book);
        assert_eq!(spilled.files, vec![first.clone(), second.clone()]);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].0.ends_with("held-0000000000500-1.jsonl"));

        assert!(remove(&spilled.files).is_empty());
        assert!(!first.exists() && !second.exists());
        assert!(dir.path().join("held-0000000000500-1.jsonl").exists(), "an unreadable file is kept");
        // Nothing left but the bad file: reading again finds no commits.
        assert!(read(dir.path()).0.commits.is_empty());
        // A missing directory is no spill.
        assert!(read(&dir.path().join("missing")).0.commits.is_empty());
    }

    #[test]
    fn at_start_spilled_commits_go_into_the_outbox_in_one_transaction_with_the_newest_books() {
        use crate::outbox::testing::Disk;
        use std::sync::atomic::Ordering;
        let dir = tempfile::tempdir().unwrap();
        let spill_dir = dir.path().join("run");
        let commits: Vec<Commit> = (1..=3).map(super::super::commits::tests::commit).collect();
        write(&spill_dir, &commits, 3).unwrap();
        let disk = Disk::default();
        let outbox = disk.outbox(&dir.path().join("outbox.redb"), 100);

        // The disk refuses: everything comes back to be held, the file stays.
        disk.full.store(true, Ordering::SeqCst);
        let held = super::super::import_spill(Some(&spill_dir), &outbox);
        assert_eq!(held.commits.len(), 3);
        assert_eq!(read(&spill_dir).0.files.len(), 1);

        disk.full.store(false, Ordering::SeqCst);
        let held = super::super::import_spill(Some(&spill_dir), &outbox);
        assert!(held.commits.is_empty() && held.files.is_empty());
        let seqs: Vec<u32> = outbox.pending(0, 10).unwrap().iter().map(|(_, r)| r.event.seq).collect();
        assert_eq!(seqs, vec![1, 2, 3]);
        match outbox.book("gate-3", 0).unwrap() {
            crate::outbox::StoredBook::Restored(book) => assert_eq!(book, commits[2].book),
            other => panic!("{other:?}"),
        }
        assert!(read(&spill_dir).0.files.is_empty(), "imported: the file is gone");
        // No spill directory: nothing to do.
        assert!(super::super::import_spill(None, &outbox).commits.is_empty());
        // A spill directory beside the outbox is on its file system (and so warned about).
        assert!(same_file_system(&spill_dir, &dir.path().join("outbox.redb")));
        assert!(same_file_system(&spill_dir.join("not yet"), &dir.path().join("outbox.redb")));
        assert!(!same_file_system(&spill_dir, &dir.path().join("missing.redb")));
    }
}
