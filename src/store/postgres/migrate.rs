//! Embedded PostgreSQL migrations (SPEC §10): append-only `.sql` files compiled into
//! the binary, applied at start inside one transaction under a transaction-level
//! advisory lock, so instances starting together migrate once (the others wait, then
//! find nothing to do). `schema_migrations` holds the version; a database newer than
//! this binary is refused untouched, as on SQLite.

use super::{Result, StoreError, Tx};

/// (version, name, SQL), in order. Append only.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("migrations/0001_init.sql")),
    (
        2,
        "task_counts",
        include_str!("migrations/0002_task_counts.sql"),
    ),
    (3, "queue", include_str!("migrations/0003_queue.sql")),
    (
        4,
        "retention",
        include_str!("migrations/0004_retention.sql"),
    ),
    (
        5,
        "count_shards",
        include_str!("migrations/0005_count_shards.sql"),
    ),
    (
        6,
        "substate_counts",
        include_str!("migrations/0006_substate_counts.sql"),
    ),
];

/// Advisory lock key of migrations ("dashmigr").
const MIGRATE_LOCK: i64 = 0x6461_7368_6d69_6772;

/// The newest schema version this binary knows.
pub fn latest() -> i64 {
    MIGRATIONS.last().map(|m| m.0).unwrap_or(0)
}

fn has_table(tx: &mut Tx<'_>) -> Result<bool> {
    Ok(tx
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])?
        .get(0))
}

/// The database's schema version (0 for an empty database).
pub fn current_version(tx: &mut Tx<'_>) -> Result<i64> {
    if !has_table(tx)? {
        return Ok(0);
    }
    Ok(tx
        .query_one(
            "SELECT coalesce(max(version), 0)::bigint FROM schema_migrations",
            &[],
        )?
        .get(0))
}

/// Refuses a database from a newer schema.
pub fn check_version(tx: &mut Tx<'_>) -> Result<i64> {
    let v = current_version(tx)?;
    if v > latest() {
        return Err(StoreError::Unavailable(format!(
            "the database has schema version {v} but this binary knows only up to {}; \
             upgrade dashboard-backend",
            latest()
        )));
    }
    Ok(v)
}

/// Applies every pending migration in the caller's transaction, under the migration
/// lock. Returns the versions applied.
pub fn apply(tx: &mut Tx<'_>) -> Result<Vec<i64>> {
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATE_LOCK])?;
    let current = check_version(tx)?;
    let mut applied = Vec::new();
    for &(version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
        tx.batch(
            "CREATE TABLE IF NOT EXISTS schema_migrations (
               version BIGINT PRIMARY KEY, name TEXT NOT NULL, applied_at BIGINT NOT NULL)",
        )?;
        tx.batch(sql)?;
        tx.execute(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
            &[&version, &name, &crate::clock::now_ms()],
        )?;
        log::info!(target: "store", version = version, name = name; "applied PostgreSQL migration");
        applied.push(version);
    }
    Ok(applied)
}

/// Every known migration with when it was applied (None = pending).
pub fn status(tx: &mut Tx<'_>) -> Result<Vec<crate::store::sqlite::migrate::MigrationStatus>> {
    check_version(tx)?;
    let exists = has_table(tx)?;
    let mut out = Vec::new();
    for &(version, name, _) in MIGRATIONS {
        let applied_at = if exists {
            tx.query_opt(
                "SELECT applied_at FROM schema_migrations WHERE version = $1",
                &[&version],
            )?
            .map(|r| r.get(0))
        } else {
            None
        };
        out.push(crate::store::sqlite::migrate::MigrationStatus {
            version,
            name,
            applied_at,
        });
    }
    Ok(out)
}
