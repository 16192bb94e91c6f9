//! Operational endpoints (SPEC §4): health, readiness, liveness, metrics, OpenAPI,
//! and `OPTIONS /` for HAProxy's bare `option httpchk`. No auth.

use serde_json::json;

use super::Call;
use crate::error::ApiError;
use crate::health::Status;
use crate::lifecycle::{Phase, WORKERS_DEAD, WORKERS_STALLED};
use crate::metrics::{self, Gauges, SERVICE};
use crate::sys::Process;
use crate::wire::Response;

const VERSION: &str = env!("CARGO_PKG_VERSION");

pub fn health(c: &Call<'_>) -> Result<Response, ApiError> {
    let checks = c.app.health.checks(&**c.app.store);
    let draining = matches!(c.app.life.phase(), Phase::Draining | Phase::Stopping);
    let stalled = c.app.life.workers_quiet() >= WORKERS_STALLED;
    let overall = checks.overall();
    let status = if draining {
        "draining"
    } else if stalled {
        "workers_stalled"
    } else {
        overall.as_str()
    };
    let code = if draining || stalled || overall == Status::Error {
        503
    } else {
        200
    };
    // A typed body, not `json!`: HAProxy asks every few seconds and load tests ask
    // for it by the ten thousand; building a map of values costs more than the rest.
    #[derive(serde::Serialize)]
    struct Body<'a> {
        status: &'a str,
        timestamp: &'a str,
        uptime: u64,
        service: &'a str,
        version: &'a str,
        checks: &'a crate::health::Checks,
    }
    let body = crate::clock::with_rfc3339(crate::clock::now_ms(), |timestamp| {
        Response::json(
            code,
            &Body {
                status,
                timestamp,
                uptime: crate::clock::uptime_secs(),
                service: SERVICE,
                version: VERSION,
                checks: &checks,
            },
        )
    });
    Ok(body)
}

pub fn health_db(c: &Call<'_>) -> Result<Response, ApiError> {
    Ok(match c.app.health.ping_db(&**c.app.store) {
        Ok(d) => Response::json(
            200,
            &json!({
                "status": "ok",
                "database": "connected",
                "backend": c.app.store.backend(),
                "latency_ms": d.as_secs_f64() * 1000.0,
                "timestamp": crate::clock::now_rfc3339(),
            }),
        ),
        Err(reason) => Response::json(
            503,
            &json!({"status": "error", "database": "disconnected",
                "backend": c.app.store.backend(), "error": reason}),
        ),
    })
}

pub fn ready(c: &Call<'_>) -> Result<Response, ApiError> {
    let reason = match c.app.life.phase() {
        Phase::Starting => Some("starting"),
        Phase::Draining | Phase::Stopping => Some("draining"),
        Phase::Ready if c.app.life.workers_quiet() >= WORKERS_STALLED => Some("workers"),
        Phase::Ready if c.app.health.checks(&**c.app.store).database.status == Status::Error => {
            Some("database")
        }
        Phase::Ready => None,
    };
    Ok(match reason {
        None => Response::json(
            200,
            &json!({"status": "ready", "timestamp": crate::clock::now_rfc3339()}),
        ),
        Some(r) => Response::json(503, &json!({"status": "not_ready", "reason": r}))
            .with_header("Retry-After", "1"),
    })
}

pub fn live(c: &Call<'_>) -> Result<Response, ApiError> {
    if c.app.life.workers_quiet() >= WORKERS_DEAD {
        return Err(ApiError::unavailable(
            "no worker has come back to its queue for 30 s",
            1,
        ));
    }
    Ok(Response::json(
        200,
        &json!({"status": "alive", "timestamp": crate::clock::now_rfc3339()}),
    ))
}

pub fn options_root(_: &Call<'_>) -> Result<Response, ApiError> {
    Ok(Response::json(200, &json!({"status": "ok"})).with_header("Allow", "OPTIONS"))
}

fn gauges(c: &Call<'_>) -> Gauges {
    let backup = crate::backup::Record::load(c.app.backup_record).unwrap_or_default();
    let secs = |ms: Option<i64>| ms.map(|ms| ms as f64 / 1000.0);
    Gauges {
        db_size_bytes: c.app.store.size_bytes().unwrap_or(0),
        db_memory_bytes: c.app.store.memory_bytes(),
        backup_last_success_timestamp: secs(backup.last_success_ms),
        backup_last_duration: backup.last_duration_seconds,
        backup_last_size: backup.last_size_bytes,
        backup_last_failure_timestamp: secs(backup.last_failure_ms),
        tasks_by_status: metrics::tasks_by_status(|| {
            c.app
                .store
                .count_by_status()
                .map(|v| v.into_iter().map(|(s, n)| (s.as_str(), n)).collect())
                .unwrap_or_else(|e| {
                    log::warn!(target: "metrics", error:% = e; "cannot count tasks by status");
                    Vec::new()
                })
        }),
    }
}

pub fn metrics(c: &Call<'_>) -> Result<Response, ApiError> {
    let text = metrics::render_text(&gauges(c), &Process::read());
    Ok(Response::raw(
        200,
        "text/plain; version=0.0.4; charset=utf-8",
        text.into_bytes(),
    ))
}

pub fn metrics_json(c: &Call<'_>) -> Result<Response, ApiError> {
    Ok(Response::json(
        200,
        &metrics::render_json(&gauges(c), &Process::read()),
    ))
}

/// The OpenAPI 3.1 document, compiled in.
pub const OPENAPI: &str = include_str!("../openapi.json");

pub fn openapi(_: &Call<'_>) -> Result<Response, ApiError> {
    Ok(Response::raw(
        200,
        crate::wire::response::JSON,
        OPENAPI.as_bytes().to_vec(),
    ))
}
