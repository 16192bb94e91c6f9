//! Whole-database maintenance SQL for the CLI, `backup` and `restore`: integrity
//! check, VACUUM, ANALYZE, WAL checkpoints, the schema version of a file. Kept apart
//! from the table modules because none of it knows a table; it works on any SQLite
//! file. Callers outside the store hold a `DbFile`, never a connection.

use std::path::Path;

use rusqlite::{Connection, OpenFlags};

use super::migrate::{self, MigrationStatus};
use super::Result;

/// An SQLite database file opened for one administrative command (`db`, `migrate`,
/// `restore`), without the server's writer thread or read pool.
pub struct DbFile {
    conn: Connection,
}

/// A file that SQLite would not open; the text is SQLite's own message.
#[derive(Debug)]
pub struct OpenError(String);

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OpenError {}

impl DbFile {
    /// Opens the database at `path` read-write, waiting for locks like the server does.
    pub fn open(path: &Path) -> Result<DbFile> {
        super::open_plain(path).map(|conn| DbFile { conn })
    }

    /// Opens a file that is not trusted yet (a backup about to be restored): never
    /// through a symbolic link, never created.
    pub fn open_candidate(path: &Path) -> std::result::Result<DbFile, OpenError> {
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NOFOLLOW;
        Connection::open_with_flags(path, flags)
            .map(|conn| DbFile { conn })
            .map_err(|e| OpenError(e.to_string()))
    }

    /// The schema version (0 for a new, empty file).
    pub fn schema_version(&self) -> Result<i64> {
        migrate::current_version(&self.conn)
    }

    /// Every known migration with when it was applied (None = pending).
    pub fn migration_status(&self) -> Result<Vec<MigrationStatus>> {
        migrate::status(&self.conn)
    }

    /// Problems `PRAGMA integrity_check` reports, at most `max`; empty means "ok".
    pub fn integrity_check(&self, max: u32) -> Result<Vec<String>> {
        integrity_check(&self.conn, max)
    }

    /// Pages in the database (for progress and reports).
    pub fn page_count(&self) -> Result<i64> {
        page_count(&self.conn)
    }

    /// Rows in `tasks`, or `None` when the file has no such table.
    pub fn task_count(&self) -> Option<i64> {
        task_count(&self.conn)
    }

    /// Copies the WAL into the database file and truncates it to zero bytes.
    pub fn checkpoint(&self) -> Result<()> {
        checkpoint(&self.conn)
    }

    /// VACUUM, then a checkpoint (see `vacuum`).
    pub fn vacuum(&self) -> Result<()> {
        vacuum(&self.conn)
    }

    /// ANALYZE, sampled with `limit` (see `analyze`).
    pub fn analyze(&self, limit: Option<u32>) -> Result<()> {
        analyze(&self.conn, limit)
    }
}

/// Problems `PRAGMA integrity_check` reports, at most `max`; empty means "ok".
pub(super) fn integrity_check(conn: &Connection, max: u32) -> Result<Vec<String>> {
    let mut stmt = conn.prepare(&format!("PRAGMA integrity_check({})", max.max(1)))?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut problems = Vec::new();
    for row in rows {
        let line = row?;
        if line != "ok" {
            problems.push(line);
        }
    }
    Ok(problems)
}

/// True when `path` starts with SQLite's 16-byte header string.
pub fn looks_like_sqlite(path: &std::path::Path) -> bool {
    use std::io::Read;
    let mut head = [0u8; 16];
    std::fs::File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok_and(|()| &head == b"SQLite format 3\0")
}

/// Pages in the database (for progress and reports).
pub(super) fn page_count(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA page_count", [], |r| r.get(0))?)
}

/// Rows in `tasks`, or `None` when the file has no such table.
pub(super) fn task_count(conn: &Connection) -> Option<i64> {
    conn.query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
        .ok()
}

/// Copies the WAL into the database file and truncates it to zero bytes.
pub(super) fn checkpoint(conn: &Connection) -> Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}

/// Rebuilds the file without free pages, then checkpoints so the WAL does not keep a
/// second copy of the whole database.
pub(super) fn vacuum(conn: &Connection) -> Result<()> {
    conn.execute_batch("VACUUM")?;
    checkpoint(conn)
}

/// Refreshes the query planner's statistics. With `limit`, each index is sampled
/// (`PRAGMA analysis_limit`) so the write lock is held for milliseconds, not a scan of
/// every index: that is the mode to use while a server is writing.
pub(super) fn analyze(conn: &Connection, limit: Option<u32>) -> Result<()> {
    if let Some(n) = limit {
        conn.execute_batch(&format!("PRAGMA analysis_limit={n}"))?;
    }
    conn.execute_batch("ANALYZE; PRAGMA optimize;")?;
    Ok(())
}
