//! Whole-database maintenance SQL for the CLI, `backup` and `restore`: integrity
//! check, VACUUM, ANALYZE and WAL checkpoints. Kept apart from the table modules
//! because none of it knows a table; it works on any SQLite file.

use rusqlite::Connection;

use super::Result;

/// Problems `PRAGMA integrity_check` reports, at most `max`; empty means "ok".
pub fn integrity_check(conn: &Connection, max: u32) -> Result<Vec<String>> {
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
pub fn page_count(conn: &Connection) -> Result<i64> {
    Ok(conn.query_row("PRAGMA page_count", [], |r| r.get(0))?)
}

/// Rows in `tasks`, or `None` when the file has no such table.
pub fn task_count(conn: &Connection) -> Option<i64> {
    conn.query_row("SELECT count(*) FROM tasks", [], |r| r.get(0))
        .ok()
}

/// Copies the WAL into the database file and truncates it to zero bytes.
pub fn checkpoint(conn: &Connection) -> Result<()> {
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    Ok(())
}

/// Rebuilds the file without free pages, then checkpoints so the WAL does not keep a
/// second copy of the whole database.
pub fn vacuum(conn: &Connection) -> Result<()> {
    conn.execute_batch("VACUUM")?;
    checkpoint(conn)
}

/// Refreshes the query planner's statistics. With `limit`, each index is sampled
/// (`PRAGMA analysis_limit`) so the write lock is held for milliseconds, not a scan of
/// every index: that is the mode to use while a server is writing.
pub fn analyze(conn: &Connection, limit: Option<u32>) -> Result<()> {
    if let Some(n) = limit {
        conn.execute_batch(&format!("PRAGMA analysis_limit={n}"))?;
    }
    conn.execute_batch("ANALYZE; PRAGMA optimize;")?;
    Ok(())
}
