//! SQLite administration the common interface does not carry: the online backup that
//! `backup` (SPEC §7) snapshots a live database with. Its PostgreSQL counterpart is
//! `store::postgres::admin` (`pg_dump`). File naming, pacing, flushing, compression
//! and every message stay with the `backup` command; this module only speaks SQLite
//! and says what went wrong as a `SnapshotError`.
//!
//! The source holds one read transaction for the whole copy, so it sees a single
//! consistent snapshot while the server keeps committing (a WAL reader never blocks
//! the writer), and the copy moves a few pages at a time with a pause between steps.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, ErrorCode, OpenFlags};

/// Why a snapshot failed, in terms the `backup` command words its messages in.
#[derive(Debug)]
pub enum SnapshotError {
    /// The live database cannot be opened or read (the reason, as text).
    Unreadable(String),
    /// The live file is not an SQLite database.
    NotADatabase,
    /// Creating or writing the snapshot file failed; the kind says why (full, not
    /// writable), else the message does.
    Write(std::io::Error),
    /// The copy failed for another reason (SQLite's message).
    Copy(String),
    /// The source stayed locked for longer than `Pace::busy_limit`.
    Locked,
}

/// How a copy moves through the database.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Pages copied per step.
    pub pages_per_step: i32,
    /// Pause between steps: gives the disk back to the server's commits.
    pub pause: Duration,
    /// How long a step may keep answering "busy" before the copy gives up.
    pub busy_limit: Duration,
}

/// How far a copy is, reported after each step.
#[derive(Debug, Clone, Copy)]
pub struct Copied {
    pub pages: u64,
    pub total_pages: u64,
    /// Bytes of the snapshot written so far (`pages` × page size).
    pub bytes: u64,
}

/// The live database, with one read snapshot of it pinned until `release`.
pub struct Source {
    conn: Connection,
}

/// The scratch copy being written: a new file, no journal, no fsync of its own.
pub struct Snapshot {
    conn: Connection,
}

impl Source {
    /// Opens the live database `db` and pins one read snapshot of it.
    pub fn open(db: &Path) -> Result<Source, SnapshotError> {
        let conn = super::open_plain(db).map_err(|e| SnapshotError::Unreadable(e.to_string()))?;
        // Without this read transaction every commit by the server would restart the
        // copy from page 1 (SQLite restarts a backup whose source changed), and a busy
        // database would never finish. Held, it pins one WAL snapshot without blocking
        // the writer.
        conn.execute_batch("BEGIN DEFERRED")
            .map_err(|e| SnapshotError::Unreadable(e.to_string()))?;
        match conn.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(())) {
            Ok(()) => Ok(Source { conn }),
            Err(e) if e.sqlite_error_code() == Some(ErrorCode::NotADatabase) => {
                Err(SnapshotError::NotADatabase)
            }
            Err(e) => Err(SnapshotError::Unreadable(e.to_string())),
        }
    }

    /// The backup API loop: `pace.pages_per_step` pages per step, `pace.pause` between
    /// steps, `step` told the progress after each (its error ends the copy as a
    /// `Write`).
    pub fn copy_into(
        &self,
        dst: &mut Snapshot,
        pace: &Pace,
        mut step: impl FnMut(Copied) -> std::io::Result<()>,
    ) -> Result<(), SnapshotError> {
        let fail = |e: rusqlite::Error| match e.sqlite_error_code() {
            Some(ErrorCode::DiskFull) | Some(ErrorCode::ReadOnly) | Some(ErrorCode::CannotOpen) => {
                SnapshotError::Write(write_io_error(e))
            }
            _ => SnapshotError::Copy(e.to_string()),
        };
        let page_size: u64 = self
            .conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(fail)?;
        let backup = Backup::new(&self.conn, &mut dst.conn).map_err(fail)?;
        let mut busy_since: Option<Instant> = None;
        loop {
            match backup.step(pace.pages_per_step).map_err(fail)? {
                StepResult::Done => return Ok(()),
                StepResult::More => busy_since = None,
                // Busy/Locked: someone holds a lock we need for a moment; wait, bounded.
                _ => {
                    let since = *busy_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > pace.busy_limit {
                        return Err(SnapshotError::Locked);
                    }
                }
            }
            let p = backup.progress();
            let total = p.pagecount.max(1) as u64;
            let done = total.saturating_sub(p.remaining.max(0) as u64);
            step(Copied {
                pages: done,
                total_pages: total,
                bytes: done * page_size,
            })
            .map_err(SnapshotError::Write)?;
            std::thread::sleep(pace.pause);
        }
    }

    /// Ends the read transaction: the server may checkpoint past the snapshot again.
    pub fn release(self) {
        let _ = self.conn.execute_batch("COMMIT");
    }
}

impl Snapshot {
    /// Opens the new, empty file `dest` (just created by the caller) as the copy.
    pub fn create(dest: &Path) -> Result<Snapshot, SnapshotError> {
        let write = |e| SnapshotError::Write(write_io_error(e));
        // NOFOLLOW: the name must still be the file just created, not a link to another.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        let conn = Connection::open_with_flags(dest, flags).map_err(write)?;
        // A scratch copy: no journal, and no fsync of SQLite's own (the caller paces it).
        conn.execute_batch("PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;")
            .map_err(write)?;
        Ok(Snapshot { conn })
    }

    /// Makes the copy a plain rollback-journal file: opening a restored copy needs no
    /// -wal/-shm.
    pub fn seal(&self) -> Result<(), SnapshotError> {
        self.conn
            .execute_batch("PRAGMA journal_mode=DELETE")
            .map_err(|e| SnapshotError::Write(write_io_error(e)))
    }

    /// Problems `PRAGMA integrity_check` finds in the copy, at most `max`.
    pub fn integrity_check(&self, max: u32) -> super::Result<Vec<String>> {
        super::maintenance::integrity_check(&self.conn, max)
    }
}

/// A failed SQLite write into the snapshot as an I/O error of the matching kind.
fn write_io_error(e: rusqlite::Error) -> std::io::Error {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => std::io::Error::from(std::io::ErrorKind::StorageFull),
        Some(ErrorCode::ReadOnly) | Some(ErrorCode::CannotOpen) => {
            std::io::Error::from(std::io::ErrorKind::PermissionDenied)
        }
        _ => std::io::Error::other(e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory under the system's temporary directory.
    fn scratch(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("admin-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    /// The copy reports its progress step by step, and the sealed snapshot is a
    /// checked, self-contained copy of what the source held when it was opened, even
    /// though the source keeps changing during the copy.
    #[test]
    fn snapshot_copies_the_pinned_state_page_by_page() {
        let dir = scratch("copy");
        let db = dir.join("live.db");
        let live = Connection::open(&db).expect("live");
        live.execute_batch(
            "PRAGMA journal_mode=WAL;
             CREATE TABLE t (x TEXT);
             WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 500)
             INSERT INTO t SELECT printf('%0200d', i) FROM n;",
        )
        .expect("fill");
        let src = Source::open(&db).expect("source");
        // Committed after the snapshot was pinned: not in the copy.
        live.execute_batch("INSERT INTO t VALUES ('late')")
            .expect("late row");
        let dest = dir.join("copy.db");
        std::fs::File::create(&dest).expect("create");
        let mut dst = Snapshot::create(&dest).expect("snapshot");
        let pace = Pace {
            pages_per_step: 4,
            pause: Duration::ZERO,
            busy_limit: Duration::from_secs(5),
        };
        let mut steps = Vec::new();
        src.copy_into(&mut dst, &pace, |c| {
            steps.push(c);
            Ok(())
        })
        .expect("copy");
        src.release();
        dst.seal().expect("seal");
        assert_eq!(
            dst.integrity_check(10).expect("check"),
            Vec::<String>::new()
        );
        drop(dst);

        assert!(steps.len() > 1, "{} steps", steps.len());
        let last = steps.last().expect("a step");
        // Reported after each step that leaves more to copy: the last one is at most
        // one step short of the end.
        assert!(last.pages < last.total_pages, "{last:?}");
        assert!(last.total_pages - last.pages <= 4, "{last:?}");
        assert!(steps.windows(2).all(|w| w[0].pages <= w[1].pages));
        let page_size: u64 = live
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .expect("page size");
        assert_eq!(last.bytes, last.pages * page_size);

        let copy = Connection::open(&dest).expect("open copy");
        let rows: i64 = copy
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        assert_eq!(rows, 500);
        let mode: String = copy
            .query_row("PRAGMA journal_mode", [], |r| r.get(0))
            .expect("journal mode");
        assert_eq!(mode, "delete");
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// The caller's step error stops the copy as a write failure, kind kept.
    #[test]
    fn a_failing_step_ends_the_copy_as_a_write_error() {
        let dir = scratch("step");
        let db = dir.join("live.db");
        Connection::open(&db)
            .expect("live")
            .execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (zeroblob(100000));")
            .expect("fill");
        let src = Source::open(&db).expect("source");
        let dest = dir.join("copy.db");
        std::fs::File::create(&dest).expect("create");
        let mut dst = Snapshot::create(&dest).expect("snapshot");
        let pace = Pace {
            pages_per_step: 1,
            pause: Duration::ZERO,
            busy_limit: Duration::from_secs(5),
        };
        let err = src
            .copy_into(&mut dst, &pace, |_| {
                Err(std::io::Error::from(std::io::ErrorKind::StorageFull))
            })
            .expect_err("the step fails");
        assert!(
            matches!(&err, SnapshotError::Write(e) if e.kind() == std::io::ErrorKind::StorageFull),
            "{err:?}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    /// A file that is not SQLite is told apart from one that cannot be read.
    #[test]
    fn a_source_that_is_not_sqlite_or_missing_is_refused() {
        let dir = scratch("junk");
        let junk = dir.join("junk.db");
        std::fs::write(
            &junk,
            b"this is not a database at all, just text that is long enough to be a header",
        )
        .expect("junk");
        assert!(matches!(
            Source::open(&junk),
            Err(SnapshotError::NotADatabase)
        ));
        let missing = dir.join("missing/nothing.db");
        assert!(matches!(
            Source::open(&missing),
            Err(SnapshotError::Unreadable(_))
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
