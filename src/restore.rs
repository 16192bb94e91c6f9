//! `restore FILE [--force]` (SPEC §7): unpack FILE (`.db.gz` or `.db`, told apart by
//! its first bytes) beside the database, refuse it unless it is an SQLite database of a
//! schema version this binary knows that passes `integrity_check`, keep the current
//! database as `<database>.pre-restore-<time>` (with its -wal/-shm), then rename the
//! restored file into place. Nothing is touched until the new file has passed every
//! check, and nothing is swapped while a server holds the database (see
//! `store::lock`), `--force` or not: a server keeps its writer connection on the old
//! inode while new readers open the new one, so it would serve one database and
//! write another (issue #13 item 10c).

use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use crate::backup::BackupError;
use crate::backup::{create_temp, parent, sync_dir, with_suffix, write_error, Temps};
use crate::exit::{command_error, EX_DATAERR, EX_IOERR, EX_NOINPUT, EX_UNAVAILABLE};
use crate::store::sqlite::lock::{self, ServerLock};
use crate::store::sqlite::maintenance::{self, DbFile};
use crate::store::sqlite::migrate;

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// What a restore did.
#[derive(Debug)]
pub struct Restored {
    pub version: i64,
    pub tasks: Option<i64>,
    /// Where the replaced database went (None when there was none).
    pub previous: Option<PathBuf>,
}

command_error!(
    /// Why `restore` failed (nothing was changed unless it says so).
    RestoreError,
    from BackupError
);

/// Restores `file` as the database `db`; refuses while a server runs on `db`.
pub fn run(db: &Path, file: &Path) -> Result<Restored, RestoreError> {
    // Fail fast, before unpacking a large file, when a server runs on the database.
    if !free_of_servers(db)? {
        return Err(server_running(db));
    }
    let dir = parent(db);
    let mut temps = Temps::default();
    let tmp = temps.add(dir.join(format!(
        ".{}.restore-{}",
        db.file_name().map(|n| n.to_string_lossy()).unwrap_or_default(),
        std::process::id()
    )));
    unpack(file, &tmp, dir)?;
    let (version, tasks) = verify(file, &tmp)?;
    copy_owner(db, &tmp);
    // Held while the files move, so a server that starts now waits and then opens the
    // restored database, never a half-swapped one.
    let Some(held) = ServerLock::try_exclusive(db).map_err(|e| lock_error(db, &e))? else {
        return Err(server_running(db));
    };
    let previous = swap(db, &tmp)?;
    drop(held);
    Ok(Restored {
        version,
        tasks,
        previous,
    })
}

/// True when no server holds the database right now.
fn free_of_servers(db: &Path) -> Result<bool, RestoreError> {
    Ok(ServerLock::try_exclusive(db)
        .map_err(|e| lock_error(db, &e))?
        .is_some())
}

fn server_running(db: &Path) -> RestoreError {
    RestoreError::new(
        EX_UNAVAILABLE,
        format!(
            "a dashboard-backend server is running on {}; stop it first (systemctl stop dashboard-backend), restore, then start it again (--force does not override this)",
            db.display()
        ),
    )
}

/// The lock file next to `db` could not be opened (shared with `db vacuum`).
pub(crate) fn lock_error(db: &Path, e: &std::io::Error) -> RestoreError {
    RestoreError::new(
        EX_IOERR,
        format!(
            "cannot open the lock file {}: {e}",
            lock::path_for(db).display()
        ),
    )
}

/// Copies `file` into the new file `tmp`, gunzipping it when it starts like gzip.
fn unpack(file: &Path, tmp: &Path, dir: &Path) -> Result<(), RestoreError> {
    let unreadable = |e: &dyn std::fmt::Display| {
        RestoreError::new(EX_NOINPUT, format!("cannot read {}: {e}", file.display()))
    };
    let mut input = File::open(file).map_err(|e| unreadable(&e))?;
    let mut magic = [0u8; 2];
    let n = read_up_to(&mut input, &mut magic).map_err(|e| unreadable(&e))?;
    input.seek(SeekFrom::Start(0)).map_err(|e| unreadable(&e))?;
    let gzipped = n == 2 && magic == GZIP_MAGIC;
    let mut reader: Box<dyn Read> = if gzipped {
        Box::new(MultiGzDecoder::new(BufReader::new(input)))
    } else {
        Box::new(BufReader::new(input))
    };
    let mut out = create_temp(tmp).map_err(|e| write_error("unpacking", dir, &e))?;
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if gzipped => {
                return Err(RestoreError::new(
                    EX_DATAERR,
                    format!(
                        "{} is not a valid gzip file: it is truncated or corrupt ({e}); nothing was changed",
                        file.display()
                    ),
                ))
            }
            Err(e) => return Err(unreadable(&e)),
        };
        out.write_all(&buf[..n])
            .map_err(|e| write_error("unpacking", dir, &e))?;
    }
    out.sync_all()
        .map_err(|e| write_error("unpacking", dir, &e).into())
}

/// Reads until `buf` is full or the input ends; returns the bytes read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..])? {
            0 => break,
            k => n += k,
        }
    }
    Ok(n)
}

/// Refuses anything but an intact database of a known schema; returns its schema
/// version and task count.
fn verify(file: &Path, tmp: &Path) -> Result<(i64, Option<i64>), RestoreError> {
    let refuse = |why: String| {
        RestoreError::new(
            EX_DATAERR,
            format!("{} {why}; nothing was changed", file.display()),
        )
    };
    if !maintenance::looks_like_sqlite(tmp) {
        return Err(refuse(
            "is not an SQLite database (nor a gzip of one)".into(),
        ));
    }
    let candidate = DbFile::open_candidate(tmp)
        .map_err(|e| refuse(format!("cannot be opened as an SQLite database ({e})")))?;
    let version = candidate
        .schema_version()
        .map_err(|e| refuse(format!("cannot be read as an SQLite database ({e})")))?;
    if version > migrate::latest() {
        return Err(refuse(format!(
            "has schema version {version}, newer than this binary knows ({}): restore it with the dashboard-backend release that wrote it",
            migrate::latest()
        )));
    }
    if version < 1 {
        return Err(refuse(
            "is an SQLite database but not a dashboard-backend one (schema version 0)".into(),
        ));
    }
    let problems = candidate
        .integrity_check(10)
        .map_err(|e| refuse(format!("cannot be checked ({e})")))?;
    if let Some(first) = problems.first() {
        return Err(refuse(format!("fails integrity_check ({first})")));
    }
    Ok((version, candidate.task_count()))
}

/// Gives the restored file the current database's owner and mode (restore usually runs
/// as root; the server runs as the service user and must be able to write the file).
fn copy_owner(db: &Path, tmp: &Path) {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let reference = std::fs::metadata(db).or_else(|_| std::fs::metadata(parent(db)));
    if let Ok(m) = reference {
        // Fails harmlessly when not root: then the file is already ours.
        let _ = std::os::unix::fs::chown(tmp, Some(m.uid()), Some(m.gid()));
    }
    if let Ok(m) = std::fs::metadata(db) {
        let _ = std::fs::set_permissions(tmp, std::fs::Permissions::from_mode(m.mode() & 0o777));
    }
}

/// SQLite's side files of a database, moved together with it.
const SIDE_FILES: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Moves the current database (if any) aside, then renames `tmp` into its place.
fn swap(db: &Path, tmp: &Path) -> Result<Option<PathBuf>, RestoreError> {
    let dir = parent(db);
    let io = |e: std::io::Error| write_error("replacing the database", dir, &e);
    let previous = if db.exists() {
        checkpoint(db);
        let pre = pre_restore_name(db);
        std::fs::rename(db, &pre).map_err(io)?;
        for sfx in SIDE_FILES {
            let side = with_suffix(db, sfx);
            if side.exists() {
                std::fs::rename(&side, with_suffix(&pre, sfx)).map_err(io)?;
            }
        }
        Some(pre)
    } else {
        None
    };
    if let Err(e) = std::fs::rename(tmp, db) {
        // Put the old database back rather than leave none.
        if let Some(pre) = &previous {
            let _ = std::fs::rename(pre, db);
            for sfx in SIDE_FILES {
                let _ = std::fs::rename(with_suffix(pre, sfx), with_suffix(db, sfx));
            }
        }
        return Err(io(e).into());
    }
    sync_dir(dir).map_err(io)?;
    Ok(previous)
}

/// Folds the WAL into the database file, so the kept copy is one self-contained file.
/// Best effort: a damaged current database is kept as it is, side files and all.
fn checkpoint(db: &Path) {
    match DbFile::open(db) {
        Ok(file) => {
            if let Err(e) = file.checkpoint() {
                log::warn!(target: "restore", error:% = e; "cannot checkpoint the current database; keeping its WAL beside it");
            }
        }
        Err(e) => {
            log::warn!(target: "restore", error:% = e; "cannot open the current database to checkpoint it")
        }
    }
}

/// `<db>.pre-restore-YYYYMMDD-HHMMSS`, with `.1`, `.2`… if that is taken.
fn pre_restore_name(db: &Path) -> PathBuf {
    let base = with_suffix(
        db,
        &format!(
            ".pre-restore-{}",
            crate::clock::file_stamp(crate::clock::now_ms())
        ),
    );
    let taken = |p: &Path| p.exists() || SIDE_FILES.iter().any(|s| with_suffix(p, s).exists());
    if !taken(&base) {
        return base;
    }
    (1..)
        .map(|i| with_suffix(&base, &format!(".{i}")))
        .find(|p| !taken(p))
        .unwrap_or(base)
}
