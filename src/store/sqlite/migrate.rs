//! Embedded, versioned schema migrations.
//!
//! Each migration is an append-only `.sql` file compiled into the binary. The schema
//! version is SQLite's `PRAGMA user_version`; `schema_migrations` records when each
//! step was applied, for `migrate status`. A database whose version is newer than
//! this binary knows is refused before anything touches it.

use rusqlite::Connection;

use super::{Result, StoreError};

/// (version, name, SQL), in order. Append only.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("migrations/0001_init.sql")),
    (
        2,
        "partial_indexes",
        include_str!("migrations/0002_partial_indexes.sql"),
    ),
    (
        3,
        "task_counts",
        include_str!("migrations/0003_task_counts.sql"),
    ),
    (
        4,
        "completion_buckets",
        include_str!("migrations/0004_completion_buckets.sql"),
    ),
    (5, "queue", include_str!("migrations/0005_queue.sql")),
    (
        6,
        "prune_indexes",
        include_str!("migrations/0006_prune_indexes.sql"),
    ),
    (
        7,
        "substate_counts",
        include_str!("migrations/0007_substate_counts.sql"),
    ),
];

/// The newest schema version this binary knows.
pub fn latest() -> i64 {
    MIGRATIONS.last().map(|m| m.0).unwrap_or(0)
}

/// The database's schema version (0 for a new, empty file).
pub fn current_version(conn: &Connection) -> Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase) => {
                StoreError::Unavailable("the file is not an SQLite database".into())
            }
            _ => e.into(),
        })
}

/// Refuses a database from a newer schema (or a file that is not SQLite at all).
pub fn check_version(conn: &Connection) -> Result<i64> {
    let v = current_version(conn)?;
    if v > latest() {
        return Err(StoreError::Unavailable(format!(
            "the database has schema version {v} but this binary knows only up to {}; \
             upgrade dashboard-backend or restore an older backup",
            latest()
        )));
    }
    Ok(v)
}

/// Whether the database is older than this binary (a migration will run).
pub fn pending(conn: &Connection) -> Result<bool> {
    Ok(check_version(conn)? < latest())
}

/// Applies every pending migration, each in its own immediate transaction.
/// Returns the versions applied.
pub fn apply(conn: &Connection) -> Result<Vec<i64>> {
    let mut applied = Vec::new();
    let current = check_version(conn)?;
    for &(version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        let step = (|| -> Result<()> {
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                   version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL)",
            )?;
            conn.execute_batch(sql)?;
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                rusqlite::params![version, name, crate::clock::now_ms()],
            )?;
            conn.execute_batch(&format!("PRAGMA user_version = {version}"))?;
            Ok(())
        })();
        match step {
            Ok(()) => conn.execute_batch("COMMIT")?,
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(e);
            }
        }
        log::info!(target: "store", version = version, name = name; "applied migration");
        applied.push(version);
    }
    Ok(applied)
}

/// One line of `migrate status`.
pub struct MigrationStatus {
    pub version: i64,
    pub name: &'static str,
    pub applied_at: Option<i64>,
}

/// `status` of a database that does not exist yet: every migration pending.
pub fn all_pending() -> Vec<MigrationStatus> {
    MIGRATIONS
        .iter()
        .map(|&(version, name, _)| MigrationStatus {
            version,
            name,
            applied_at: None,
        })
        .collect()
}

/// Every known migration with when it was applied (None = pending).
pub fn status(conn: &Connection) -> Result<Vec<MigrationStatus>> {
    let current = check_version(conn)?;
    let has_table: bool = conn.query_row(
        "SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'schema_migrations'",
        [],
        |r| r.get(0),
    )?;
    let mut out = Vec::new();
    for &(version, name, _) in MIGRATIONS {
        let applied_at = if has_table && version <= current {
            super::optional(conn.query_row(
                "SELECT applied_at FROM schema_migrations WHERE version = ?1",
                [version],
                |r| r.get(0),
            ))?
        } else {
            None
        };
        out.push(MigrationStatus {
            version,
            name,
            applied_at,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `migrate status` prints for a missing database is what `status` finds in
    /// a new, empty one.
    #[test]
    fn all_pending_is_the_status_of_an_empty_database() {
        let conn = Connection::open_in_memory().expect("open");
        let lines = |rows: Vec<MigrationStatus>| -> Vec<(i64, &'static str, Option<i64>)> {
            rows.into_iter()
                .map(|m| (m.version, m.name, m.applied_at))
                .collect()
        };
        let want = lines(status(&conn).expect("status"));
        assert_eq!(want.len(), MIGRATIONS.len());
        assert_eq!(lines(all_pending()), want);
    }

    /// A database made by a binary that knew only 0001, with tasks in every state
    /// the partial indexes split on, upgrades in place and keeps every row.
    #[test]
    fn upgrades_a_version_1_database() {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch(MIGRATIONS[0].2).expect("0001");
        conn.execute_batch(
            "PRAGMA user_version = 1;
             INSERT INTO projects (name, created_at, updated_at) VALUES ('p', 1, 1);
             INSERT INTO tasks (project_id, title, status, created_at, updated_at,
                                lease_expires_at, completed_at) VALUES
               (1, 'a', 'pending', 1, 1, NULL, NULL),
               (1, 'b', 'in_progress', 2, 2, 5, NULL),
               (1, 'c', 'completed', 3, 3, NULL, 9);",
        )
        .expect("old rows");
        let after_1: Vec<i64> = MIGRATIONS.iter().map(|m| m.0).filter(|v| *v > 1).collect();
        assert_eq!(apply(&conn).expect("migrate"), after_1);
        assert_eq!(current_version(&conn).expect("version"), latest());
        let count = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).expect(sql) };
        assert_eq!(count("SELECT count(*) FROM tasks"), 3);
        // Each partial index holds exactly the rows of its state.
        for (index, want) in [
            ("tasks_claim", 1),
            ("tasks_lease", 1),
            ("tasks_completed", 1),
        ] {
            let sql: String = conn
                .query_row(
                    "SELECT sql FROM sqlite_schema WHERE name = ?1",
                    [index],
                    |r| r.get(0),
                )
                .expect(index);
            assert!(sql.contains("WHERE status"), "{index}: {sql}");
            let n = count(&format!(
                "SELECT count(*) FROM tasks INDEXED BY {index} WHERE project_id = 1 AND {}",
                sql.split_once("WHERE ").expect("where").1
            ));
            assert_eq!(n, want, "{index}");
        }
        // 0003 fills the counts from the rows that were already there.
        for (status, want) in [("pending", 1), ("in_progress", 1), ("completed", 1)] {
            let n = count(&format!(
                "SELECT n FROM task_counts WHERE project_id = 1 AND status = '{status}'"
            ));
            assert_eq!(n, want, "{status}");
        }
        // 0005 gives old tasks the queue's defaults without rewriting them.
        let queue = count(
            "SELECT count(*) FROM tasks WHERE attempt = 0 AND max_attempts = 3
               AND not_before IS NULL AND depends_on = '[]' AND deps_waiting = 0 AND dead = 0",
        );
        assert_eq!(queue, 3);
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("integrity_check");
        assert_eq!(check, "ok");
    }
}
