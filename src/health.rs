//! Health probes: database latency, free disk on the database's filesystem and
//! resident memory, cached for at most one second so `/health` answers in
//! microseconds and never queues behind writes (SPEC §4).

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::store::Store;

/// Resident memory above this makes health `degraded` (the seed's alert threshold).
const MEMORY_HIGH_BYTES: u64 = 512 * 1024 * 1024;
const CACHE_FOR: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Serialize)]
pub struct DbCheck {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiskCheck {
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_bytes: Option<u64>,
    pub min_free_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct MemoryCheck {
    pub status: &'static str,
    pub rss_bytes: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Checks {
    pub database: DbCheck,
    pub disk: DiskCheck,
    pub memory: MemoryCheck,
}

impl Checks {
    /// "ok", "degraded" or "error" (database unusable).
    pub fn overall(&self) -> &'static str {
        if self.database.status == "error" {
            "error"
        } else if self.database.status != "ok"
            || self.disk.status != "ok"
            || self.memory.status != "ok"
        {
            "degraded"
        } else {
            "ok"
        }
    }
}

pub struct Health {
    db_threshold: Duration,
    min_free: u64,
    dir: PathBuf,
    cache: Mutex<Option<(Instant, Checks)>>,
    /// Whether the last probe found the database usable (logs on change only).
    db_ok: std::sync::atomic::AtomicBool,
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
            cache: Mutex::new(None),
            db_ok: std::sync::atomic::AtomicBool::new(true),
        }
    }

    /// The checks, at most one second old.
    pub fn checks(&self, store: &Store) -> Checks {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((at, c)) = cache.as_ref() {
            if at.elapsed() < CACHE_FOR {
                return c.clone();
            }
        }
        let c = self.probe(store);
        *cache = Some((Instant::now(), c.clone()));
        c
    }

    fn probe(&self, store: &Store) -> Checks {
        let database = match store.ping() {
            Ok(d) => DbCheck {
                status: if d > self.db_threshold {
                    "degraded"
                } else {
                    "ok"
                },
                latency_ms: Some(d.as_secs_f64() * 1000.0),
                error: None,
            },
            Err(e) => DbCheck {
                status: "error",
                latency_ms: None,
                error: Some(e.to_string()),
            },
        };
        let ok = database.error.is_none();
        if self.db_ok.swap(ok, std::sync::atomic::Ordering::Relaxed) != ok {
            match &database.error {
                Some(e) => {
                    log::error!(target: "health", error = e.as_str(); "database unusable: health and readiness now answer 503")
                }
                None => log::info!(target: "health", "database usable again"),
            }
        }
        let free = crate::sys::free_bytes(&self.dir);
        let disk = DiskCheck {
            status: match free {
                Some(f) if f >= self.min_free => "ok",
                _ => "degraded",
            },
            free_bytes: free,
            min_free_bytes: self.min_free,
        };
        let rss = crate::metrics::Process::read().rss_bytes;
        let memory = MemoryCheck {
            status: if rss > MEMORY_HIGH_BYTES {
                "degraded"
            } else {
                "ok"
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
