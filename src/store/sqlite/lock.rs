//! The server lock: how `restore` and `db vacuum` know a server holds the database.
//!
//! Every `serve` holds a shared `flock(2)` on `<database>.lock` for its whole life;
//! `restore` swaps the file only under the exclusive lock. SQLite's own locks cannot
//! answer "is a server running?" (an idle server holds none), and a lock file beats a
//! PID file: the kernel drops the lock when the process dies, so it is never stale.
//! A separate file, not the database: SQLite's POSIX locks and flock must not meet
//! (on NFS flock is emulated with them), and `restore` replaces the database inode.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::StoreError;
use crate::sys::{try_flock, Lock};

/// How long a starting server waits for a restore (or vacuum) to let go of the lock.
const SHARED_WAIT: Duration = Duration::from_secs(30);

/// A held lock; dropping it (closing the file) releases it.
#[derive(Debug)]
pub struct ServerLock {
    _file: File,
}

/// `<database>.lock`, beside the database.
pub fn path_for(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".lock");
    PathBuf::from(p)
}

/// Opens (creating, mode 0644, and the directory if missing) the lock file. Read-only
/// is enough for flock, so a lock file created by root still works for the service user.
fn open(db: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = db.parent().filter(|d| !d.as_os_str().is_empty()) {
        super::create_private_dir(dir)?;
    }
    let path = path_for(db);
    match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o644)
        .open(&path)
    {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => File::open(&path),
        other => other,
    }
}

impl ServerLock {
    /// The lock a server holds while it runs. Many servers may share it; it waits
    /// (bounded) while a restore holds it exclusively, so a server never opens a
    /// database that is being swapped.
    pub fn shared(db: &Path) -> Result<ServerLock, StoreError> {
        let err = |e: std::io::Error| {
            StoreError::Unavailable(format!("cannot lock {}: {e}", path_for(db).display()))
        };
        let file = open(db).map_err(err)?;
        let deadline = Instant::now() + SHARED_WAIT;
        loop {
            if try_flock(&file, Lock::Shared).map_err(err)? {
                return Ok(ServerLock { _file: file });
            }
            if Instant::now() >= deadline {
                return Err(StoreError::Unavailable(format!(
                    "restore or db vacuum has held {} for {}s; start the server again when it has finished",
                    path_for(db).display(),
                    SHARED_WAIT.as_secs()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The exclusive lock, without waiting: `None` while any server holds the database.
    pub fn try_exclusive(db: &Path) -> std::io::Result<Option<ServerLock>> {
        let file = open(db)?;
        Ok(try_flock(&file, Lock::Exclusive)?.then_some(ServerLock { _file: file }))
    }
}
