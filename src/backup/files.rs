//! File plumbing shared by `backup` and `restore`: temporary files created exclusively,
//! never through a link planted at their predictable names, directory fsync (a rename
//! is durable only once its directory is synced), temporary files removed on every exit
//! path, writes and deletes paced so the disk never queues a burst in front of the
//! server's commits, and I/O errors as one sentence + code.

use std::fs::File;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::BackupError;
use crate::exit::EX_IOERR;

/// The directory holding `path` (`.` for a bare file name).
pub fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// fsyncs a directory, so the renames and unlinks in it survive a power cut.
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` (and parents) with mode 0700 when missing: backups hold key hashes.
pub fn ensure_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    if dir.exists() {
        return Err(ErrorKind::NotADirectory.into());
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// Creates the temporary file `path`, mode 0600, as a new inode of our own. The temp
/// names are predictable (stamp and pid), so something may already sit there: a stale
/// file of a crashed run, or a symlink or hard link planted to make us write (or our
/// cleanup truncate) another file. `O_EXCL|O_NOFOLLOW` never opens what exists; it is
/// unlinked (the link, never its target) and creation retried (issue #13 item 10a).
pub fn create_temp(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let mut tries = 0;
    let file = loop {
        let opened = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(path);
        match opened {
            Err(e) if e.kind() == ErrorKind::AlreadyExists && tries < 3 => {
                tries += 1;
                log::warn!(target: "backup", file:% = path.display(); "replacing a file left at a temporary name");
                std::fs::remove_file(path)?;
            }
            other => break other?,
        }
    };
    // A hard link to the new inode made in between would let our writes reach a name
    // we do not own.
    let m = file.metadata()?;
    if !m.file_type().is_file() || m.nlink() != 1 {
        let _ = std::fs::remove_file(path);
        return Err(std::io::Error::other(format!(
            "{} was linked to another name while being created",
            path.display()
        )));
    }
    Ok(file)
}

/// `path` with `suffix` appended to its file name (`x.db` + `-wal` → `x.db-wal`).
pub fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(suffix);
    PathBuf::from(p)
}

/// Flushes a file that is being written every `every` bytes, so the kernel never writes
/// back hundreds of megabytes at once: such a burst queues in front of the server's
/// commit fsyncs and stalls its writers for tens of milliseconds.
pub struct Trickle {
    file: File,
    every: u64,
    synced: u64,
}

impl Trickle {
    /// Flushes `file` (any handle on the inode will do) every `every` bytes.
    pub fn new(file: File, every: u64) -> Trickle {
        Trickle {
            file,
            every,
            synced: 0,
        }
    }

    /// Reports that `total` bytes have been written so far.
    pub fn wrote(&mut self, total: u64) -> std::io::Result<()> {
        if total >= self.synced + self.every {
            self.file.sync_data()?;
            self.synced = total;
        }
        Ok(())
    }
}

/// SQLite's side files of a database file.
const SIDE_FILES: [&str; 3] = ["-journal", "-wal", "-shm"];

/// Temporary files removed when dropped, whichever way the operation ends; SQLite's
/// side files (`-journal`, `-wal`, `-shm`) of each go too.
#[derive(Default)]
pub struct Temps(Vec<PathBuf>);

impl Temps {
    /// Registers `path` and returns it. SQLite side files already at its names are
    /// unlinked now: SQLite would open (and follow) them, e.g. roll back a "hot journal".
    pub fn add(&mut self, path: PathBuf) -> PathBuf {
        for suffix in SIDE_FILES {
            let _ = std::fs::remove_file(with_suffix(&path, suffix));
        }
        self.0.push(path.clone());
        path
    }
}

impl Drop for Temps {
    fn drop(&mut self) {
        for p in &self.0 {
            remove_gradually(p);
            for suffix in SIDE_FILES {
                let _ = std::fs::remove_file(with_suffix(p, suffix));
            }
        }
    }
}

/// Removes a file, a large one a slice at a time. Freeing hundreds of megabytes in one
/// unlink lands in one filesystem journal commit (with online discard, one long TRIM),
/// and the server's next commit fsync waits behind it; slices keep each wait short.
/// Only a regular file with no other name is sliced: a symlink or a hard link at a temp
/// name is just unlinked, so a file behind it is never truncated.
pub fn remove_gradually(path: &Path) {
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    const SLICE: u64 = 32 << 20;
    let opened = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path);
    if let Ok(f) = opened {
        let mut len = match f.metadata() {
            Ok(m) if m.file_type().is_file() && m.nlink() == 1 => m.len(),
            _ => 0,
        };
        while len > SLICE {
            len -= SLICE;
            if f.set_len(len).and_then(|()| f.sync_all()).is_err() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
    let _ = std::fs::remove_file(path);
}

/// A failed write as one sentence: a full filesystem and an unwritable directory are
/// named as such, since those are what the operator has to fix (exit 74, EX_IOERR).
pub fn write_error(doing: &str, dir: &Path, e: &std::io::Error) -> BackupError {
    let why = match e.kind() {
        ErrorKind::StorageFull | ErrorKind::QuotaExceeded => {
            format!("the filesystem holding {} is full ({e})", dir.display())
        }
        ErrorKind::ReadOnlyFilesystem | ErrorKind::PermissionDenied => {
            format!("{} is not writable ({e})", dir.display())
        }
        ErrorKind::NotADirectory => format!("{} is not a directory", dir.display()),
        _ => format!("{e} (in {})", dir.display()),
    };
    BackupError::new(EX_IOERR, format!("{doing} failed: {why}"))
}
