//! `backup` (SPEC §7): online snapshot with SQLite's backup API → `integrity_check` on
//! the snapshot → gzip → fsync → rename to `dashboard-YYYYMMDD-HHMMSS.db.gz` →
//! retention → record the outcome for the server's `backup_last_*` metrics.
//!
//! Never a file copy: a copy of a live WAL database can be torn and misses the WAL.
//! The copy holds one read transaction for its whole run, so it sees a single
//! consistent snapshot while the server keeps committing (a WAL reader never blocks the
//! writer). What can still stall the server's commits is the disk: so pages move a few
//! at a time with a pause between steps, every file written is flushed in 8 MiB slices
//! and the scratch copy is freed in slices (`files`), never in one burst that the
//! server's next fsync would queue behind. `scripts/backup-bench.sh` measures it.
//!
//! The SQLite side (the pinned source, the paced backup-API loop, the check) is
//! `store::sqlite::admin`, as `pg_dump` is `store::postgres::admin`; this module names
//! the files, paces the disk, compresses, and words every message.

mod files;
mod progress;
mod record;
mod retention;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use flate2::write::GzEncoder;
use flate2::Compression;

use crate::exit::{command_error, EX_DATAERR, EX_IOERR, EX_NOINPUT, EX_UNAVAILABLE};
use crate::store::postgres::admin::DumpError;
use crate::store::sqlite::admin::{self, SnapshotError};
use progress::Progress;

use files::Trickle;
pub use files::{create_temp, parent, sync_dir, with_suffix, write_error, Temps};
pub use record::{path_for as record_path, Record};

/// Pages copied per backup step (1 MiB at 4 KiB pages).
const PAGES_PER_STEP: i32 = 256;
/// Pause between steps: gives the disk back to the server's commits.
const STEP_PAUSE: Duration = Duration::from_millis(1);
/// How long a step may keep answering "busy" before the backup gives up.
const BUSY_LIMIT: Duration = Duration::from_secs(60);
/// gzip level: 3 is several times faster than the default 6 for a few % more bytes,
/// and the backup's run time is what the operator waits for.
const GZIP_LEVEL: u32 = 3;
/// Bytes written between flushes to disk (see `files::Trickle`).
const FLUSH_EVERY: u64 = 8 << 20;
/// Problems listed when the snapshot fails its check.
const MAX_PROBLEMS: u32 = 10;
/// How the snapshot moves through the live database.
const PACE: admin::Pace = admin::Pace {
    pages_per_step: PAGES_PER_STEP,
    pause: STEP_PAUSE,
    busy_limit: BUSY_LIMIT,
};

command_error!(
    /// Why `backup` failed.
    BackupError,
    from DumpError
);

/// What a successful backup wrote.
#[derive(Debug)]
pub struct Written {
    pub path: PathBuf,
    pub size: u64,
    pub took: Duration,
    /// Old backups retention deleted.
    pub deleted: Vec<PathBuf>,
    /// Set when the outcome could not be recorded for the metrics.
    pub record_error: Option<String>,
}

/// Backs up `db` into `dir`, applies retention (`days`, 0 = keep all) and records the
/// outcome; a failure is recorded too, and leaves nothing under a final name.
pub fn run(db: &Path, dir: &Path, days: u32) -> Result<Written, BackupError> {
    let t0 = Instant::now();
    let written = write(db, dir);
    record(db, dir, days, t0, written)
}

/// On PostgreSQL (SPEC §7, §10): `pg_dump --format=custom` into
/// `dir/dashboard-YYYYMMDD-HHMMSS.dump`, with the same retention and record (kept
/// beside `record_base`, since there is no local database file).
pub fn run_postgres(
    url: &crate::store::postgres::PgUrl,
    record_base: &Path,
    dir: &Path,
    days: u32,
) -> Result<Written, BackupError> {
    let t0 = Instant::now();
    let written = write_dump(url, dir);
    record(record_base, dir, days, t0, written)
}

/// Applies retention and records the outcome of a backup that took since `t0`.
fn record(
    db: &Path,
    dir: &Path,
    days: u32,
    t0: Instant,
    written: Result<(PathBuf, u64), BackupError>,
) -> Result<Written, BackupError> {
    match written {
        Ok((path, size)) => {
            let took = t0.elapsed();
            let record_error = Record::success(db, crate::clock::now_ms(), took, size, &path)
                .err()
                .map(|e| e.to_string());
            let deleted = retention::prune(dir, days, &path);
            Ok(Written {
                path,
                size,
                took,
                deleted,
                record_error,
            })
        }
        Err(e) => {
            if let Err(re) = Record::failure(db, crate::clock::now_ms(), &e.message) {
                log::warn!(target: "backup", file:% = record::path_for(db).display(), error:% = re; "cannot record the failed backup");
            }
            Err(e)
        }
    }
}

/// pg_dump into a temporary file, fsync, publish under the next free name.
fn write_dump(
    url: &crate::store::postgres::PgUrl,
    dir: &Path,
) -> Result<(PathBuf, u64), BackupError> {
    files::ensure_dir(dir).map_err(|e| write_error("creating the backup directory", dir, &e))?;
    let start_ms = crate::clock::now_ms();
    let stamp = crate::clock::file_stamp(start_ms);
    let mut temps = Temps::default();
    let tmp = temps.add(dir.join(format!(
        ".dashboard-{stamp}.dump.partial-{}",
        std::process::id()
    )));
    crate::store::postgres::admin::dump(url, &tmp)?;
    // Like the SQLite backups: owner only, the dump holds key hashes.
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| write_error("writing the backup", dir, &e))?;
    }
    let size = std::fs::File::open(&tmp)
        .and_then(|f| {
            f.sync_all()?;
            f.metadata()
        })
        .map_err(|e| write_error("writing the backup", dir, &e))?
        .len();
    let path = publish(&tmp, dir, start_ms, retention::dump_name)
        .map_err(|e| write_error("naming the backup", dir, &e))?;
    drop(temps);
    Ok((path, size))
}

/// Snapshot, check, compress, publish. Returns the final path and its size.
fn write(db: &Path, dir: &Path) -> Result<(PathBuf, u64), BackupError> {
    let db_bytes = match std::fs::metadata(db) {
        Ok(m) if m.is_file() => m.len(),
        _ => {
            return Err(BackupError::new(
                EX_NOINPUT,
                format!(
                    "database {} does not exist; nothing to back up",
                    db.display()
                ),
            ))
        }
    };
    files::ensure_dir(dir).map_err(|e| write_error("creating the backup directory", dir, &e))?;
    let start_ms = crate::clock::now_ms();
    let stamp = crate::clock::file_stamp(start_ms);
    let pid = std::process::id();
    let mut temps = Temps::default();
    let raw = temps.add(dir.join(format!(".dashboard-{stamp}.db.partial-{pid}")));
    let gz = temps.add(dir.join(format!(".dashboard-{stamp}.db.gz.partial-{pid}")));
    let mut bar = Progress::for_size(db_bytes);
    snapshot(db, &raw, dir, &mut bar)?;
    let t = Instant::now();
    let size = compress(&raw, &gz, &mut bar)
        .map_err(|e| write_error("compressing the backup", dir, &e))?;
    log::debug!(target: "backup", seconds = t.elapsed().as_secs_f64(); "snapshot compressed");
    bar.finish();
    let path = publish(&gz, dir, start_ms, retention::file_name)
        .map_err(|e| write_error("naming the backup", dir, &e))?;
    drop(temps);
    Ok((path, size))
}

/// Copies `db` page by page into the new file `dest` and checks the copy.
fn snapshot(db: &Path, dest: &Path, dir: &Path, bar: &mut Progress) -> Result<(), BackupError> {
    let fail = |e| snapshot_error(e, db, dir);
    let src = admin::Source::open(db).map_err(fail)?;
    let file = files::create_temp(dest)
        .map_err(|e| write_error("creating the backup snapshot", dir, &e))?;
    let mut flush = Trickle::new(file, FLUSH_EVERY);
    let mut dst = admin::Snapshot::create(dest).map_err(fail)?;
    let t = Instant::now();
    src.copy_into(&mut dst, &PACE, |c| {
        bar.update("copying", c.pages, c.total_pages);
        flush.wrote(c.bytes)
    })
    .map_err(fail)?;
    log::debug!(target: "backup", seconds = t.elapsed().as_secs_f64(); "snapshot copied");
    // The snapshot is over: let the server checkpoint past it again.
    src.release();
    dst.seal().map_err(fail)?;
    bar.update("checking", 0, 1);
    let t = Instant::now();
    check_snapshot(&dst, db)?;
    log::debug!(target: "backup", seconds = t.elapsed().as_secs_f64(); "snapshot checked");
    Ok(())
}

/// `integrity_check` on the snapshot: a damaged copy means a damaged source.
fn check_snapshot(dst: &admin::Snapshot, db: &Path) -> Result<(), BackupError> {
    let damaged = |why: String| {
        BackupError::new(
            EX_DATAERR,
            format!(
                "the snapshot of {} {why}; the live database may be damaged: run `dashboard-backend db integrity`",
                db.display()
            ),
        )
    };
    match dst.integrity_check(MAX_PROBLEMS) {
        Ok(problems) => match problems.first() {
            None => Ok(()),
            Some(first) => Err(damaged(format!("fails integrity_check ({first})"))),
        },
        Err(e) => Err(damaged(format!("cannot be checked ({e})"))),
    }
}

/// A failed snapshot of `db` into `dir` as one sentence and its exit code.
fn snapshot_error(e: SnapshotError, db: &Path, dir: &Path) -> BackupError {
    match e {
        SnapshotError::Unreadable(why) => BackupError::new(
            EX_UNAVAILABLE,
            format!("cannot read database {}: {why}", db.display()),
        ),
        SnapshotError::NotADatabase => BackupError::new(
            EX_DATAERR,
            format!("{} is not an SQLite database", db.display()),
        ),
        SnapshotError::Write(e) => write_error("writing the backup snapshot", dir, &e),
        SnapshotError::Copy(why) => BackupError::new(
            EX_IOERR,
            format!(
                "copying {} into {} failed: {why}",
                db.display(),
                dir.display()
            ),
        ),
        SnapshotError::Locked => BackupError::new(
            EX_UNAVAILABLE,
            format!(
                "database {} stayed locked for {}s; try again",
                db.display(),
                BUSY_LIMIT.as_secs()
            ),
        ),
    }
}

/// gzips `src` into the new file `dest`, fsyncs it, returns its size.
fn compress(src: &Path, dest: &Path, bar: &mut Progress) -> std::io::Result<u64> {
    let mut input = std::fs::File::open(src)?;
    let total = input.metadata()?.len();
    let out = files::create_temp(dest)?;
    let mut flush = Trickle::new(out.try_clone()?, FLUSH_EVERY);
    let mut gz = GzEncoder::new(
        std::io::BufWriter::with_capacity(1 << 20, out),
        Compression::new(GZIP_LEVEL),
    );
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0u64;
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        gz.write_all(&buf[..n])?;
        done += n as u64;
        bar.update("compressing", done, total);
        // Counted in input bytes: at most FLUSH_EVERY of output is ever unflushed.
        flush.wrote(done)?;
    }
    let out = gz.finish()?.into_inner().map_err(|e| e.into_error())?;
    out.sync_all()?;
    Ok(out.metadata()?.len())
}

/// Gives the finished file its final name — the snapshot's start time — without ever
/// replacing another backup (a hard link fails if the name exists; then the next
/// second's name is tried), drops the temporary name and fsyncs the directory.
fn publish(
    tmp: &Path,
    dir: &Path,
    start_ms: i64,
    name: fn(&str) -> String,
) -> std::io::Result<PathBuf> {
    for i in 0..60 {
        let stamp = crate::clock::file_stamp(start_ms + i * 1000);
        let path = dir.join(name(&stamp));
        match std::fs::hard_link(tmp, &path) {
            Ok(()) => {
                std::fs::remove_file(tmp)?;
                sync_dir(dir)?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            // A filesystem without hard links: rename, after checking the name is free.
            Err(_) if !path.exists() => {
                std::fs::rename(tmp, &path)?;
                sync_dir(dir)?;
                return Ok(path);
            }
            Err(_) => {}
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AlreadyExists,
        "no free backup name in the next minute",
    ))
}
