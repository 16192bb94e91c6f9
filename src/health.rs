//! Health probes: database latency, free disk on the database's filesystem and
//! resident memory, cached for at most one second so `/health` answers in
//! microseconds and never queues behind writes (SPEC §4). One request at a time
//! runs the probe; the others answer the cached checks meanwhile.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::cache::Cached;
use crate::store::{Store, StoreError};

/// Resident memory above this makes health `degraded` (the seed's alert threshold).
const MEMORY_HIGH_BYTES: u64 = 512 * 1024 * 1024;
const CACHE_FOR: Duration = Duration::from_secs(1);

/// The state of one check, and of all of them together (`overall`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Ok,
    /// Usable, but slow or short of room.
    Degraded,
    /// Unusable (only the database check says this).
    Error,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Degraded => "degraded",
            Status::Error => "error",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct DbCheck {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    /// A fixed phrase (`reason`), never the raw store error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'static str>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiskCheck {
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
    pub min_free_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemoryCheck {
    pub status: Status,
    pub rss_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Checks {
    pub database: DbCheck,
    pub disk: DiskCheck,
    pub memory: MemoryCheck,
}

impl Checks {
    /// `Error` when the database is unusable, `Degraded` when any check is not ok.
    pub fn overall(&self) -> Status {
        if self.database.status == Status::Error {
            Status::Error
        } else if self.database.status != Status::Ok
            || self.disk.status != Status::Ok
            || self.memory.status != Status::Ok
        {
            Status::Degraded
        } else {
            Status::Ok
        }
    }
}

pub struct Health {
    db_threshold: Duration,
    min_free: u64,
    dir: PathBuf,
    cache: Cached<Checks>,
    /// Whether the last probe found the database usable (logs on change only).
    db_ok: std::sync::atomic::AtomicBool,
    /// Test hook (`/_test/slow-health-probe`): the next probe waits this long first.
    probe_delay_ms: AtomicU64,
}

impl Health {
    pub fn new(db_path: &std::path::Path, db_threshold: Duration, min_free: u64) -> Health {
        let dir = db_path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(|d| d.to_path_buf())
            .unwrap_or_else(|| PathBuf::from("."));
        Health {
            db_threshold,
            min_free,
            dir,
            cache: Cached::new(CACHE_FOR),
            db_ok: std::sync::atomic::AtomicBool::new(true),
            probe_delay_ms: AtomicU64::new(0),
        }
    }

    /// The checks, at most one second old. When they are older because the probe
    /// under way is slow, a database last seen "ok" is reported "degraded" with the
    /// time the probe has taken so far: a database that hangs must not look healthy
    /// for as long as it hangs.
    pub fn checks(&self, store: &dyn Store) -> Arc<Checks> {
        let snap = self.cache.get(|| self.probe(store));
        match snap.refresh_running {
            Some(running) if running >= CACHE_FOR && snap.value.database.status == Status::Ok => {
                let mut late = Checks::clone(&snap.value);
                late.database = DbCheck {
                    status: Status::Degraded,
                    latency_ms: Some(running.as_secs_f64() * 1000.0),
                    error: None,
                };
                Arc::new(late)
            }
            _ => snap.value,
        }
    }

    /// Pings the database (for `/health` and `/health/db`). The cause of a failure
    /// is logged when the database turns unusable (once, not once a probe); the
    /// caller gets only a fixed phrase for the unauthenticated body.
    pub fn ping_db(&self, store: &dyn Store) -> Result<Duration, &'static str> {
        let result = store.ping();
        let ok = result.is_ok();
        if self.db_ok.swap(ok, Ordering::Relaxed) != ok {
            match &result {
                Err(e) => {
                    log::error!(target: "health", error:% = e; "database unusable: health and readiness now answer 503")
                }
                Ok(_) => log::info!(target: "health", "database usable again"),
            }
        }
        result.map_err(|e| reason(&e))
    }

    /// Test hook: makes the next probe take `delay` longer (a slow database).
    #[cfg(feature = "test-hooks")]
    pub fn slow_next_probe(&self, delay: Duration) {
        self.probe_delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    fn probe(&self, store: &dyn Store) -> Checks {
        let delay = self.probe_delay_ms.swap(0, Ordering::Relaxed);
        if delay > 0 {
            log::warn!(target: "health", delay_ms = delay; "test hook: slow health probe started");
            std::thread::sleep(Duration::from_millis(delay));
        }
        let database = match self.ping_db(store) {
            Ok(d) => DbCheck {
                status: if d > self.db_threshold {
                    Status::Degraded
                } else {
                    Status::Ok
                },
                latency_ms: Some(d.as_secs_f64() * 1000.0),
                error: None,
            },
            Err(reason) => DbCheck {
                status: Status::Error,
                latency_ms: None,
                error: Some(reason),
            },
        };
        let free = crate::sys::free_bytes(&self.dir);
        let disk = DiskCheck {
            status: match free {
                Some(f) if f >= self.min_free => Status::Ok,
                _ => Status::Degraded,
            },
            free_bytes: free,
            min_free_bytes: self.min_free,
        };
        let rss = crate::sys::Process::read().rss_bytes;
        let memory = MemoryCheck {
            status: if rss > MEMORY_HIGH_BYTES {
                Status::Degraded
            } else {
                Status::Ok
            },
            rss_bytes: rss,
        };
        Checks {
            database,
            disk,
            memory,
        }
    }
}

/// What an unauthenticated health body may say about a store error: a fixed phrase.
/// The error itself can name the database file (SPEC §5b: health bodies name no file
/// paths, issue #13); it goes to the log.
pub fn reason(e: &StoreError) -> &'static str {
    match e {
        StoreError::Busy => "database busy",
        StoreError::Full => "disk full",
        StoreError::Unavailable(_) => "database unavailable",
        _ => "database error",
    }
}
