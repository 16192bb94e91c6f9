//! Integration tests: each module starts the real binary (see `harness`) and checks
//! one behaviour of SPEC.md from the outside.

mod harness;

/// Attacks on the live features (SPEC §9): hang-ups, races, resume points, drains.
mod attack_live;
/// Attacks on the work-queue semantics (SPEC §5a): races, fencing, idempotency,
/// dependencies; a failing test is a bug (see the attack report).
mod attack_queue;

/// API keys and roles.
mod auth;
/// Backup, restore and `db` maintenance: consistency under load, refusals, retention.
mod backup_restore;
/// Claim, leases, heartbeats: the concurrency-critical path.
mod claim;
/// The command line: config, migrate, apikey, exit codes.
mod cli;
/// Many writers at once: group commit under contention.
mod concurrency;
/// Stats and counts stay equal to the rows under a concurrent random mix.
mod counts;
/// Every error code and its status; malformed input.
mod errors;
/// Faults under a running server: a full disk, a deleted database.
mod faults;
/// The front door (SPEC §5b): what one client can make the server hold is bounded.
mod frontdoor;
/// Hostile clients: slowloris, floods, CORS, panics.
mod hardening;
/// A table of hostile requests and random payloads on raw sockets.
mod hostile;
/// systemd integration: notify socket, watchdog, signals, socket activation, check.
mod lifecycle;
/// SPEC §9: long-poll claims and the event stream.
mod live;
/// PostgreSQL behind a link that is cut (packets dropped, no RST) and healed.
mod netcut;
/// promtool on real metrics; HAProxy health checks and a drain without errors.
mod observability;
/// Health, readiness, liveness, metrics, OPTIONS /, HEAD and HTTP/1.0.
mod ops;
/// Projects: create, list with cursor, get, patch, delete with cascade.
mod projects;
/// Work-queue semantics: fencing, retries, dead letters, schedules, dependencies,
/// batch claims, idempotency keys.
mod queue;
/// Rate limiting: keyed on the authenticated key or the client address; TRUSTED_PROXIES.
mod ratelimit;
/// Retention: the pruner deletes old finished tasks and events, and nothing else.
mod retention;
/// Tasks: create (single, bulk), get, list filters/sort/paging, patch, delete, events, stats.
mod tasks;
/// The dashboard page: embedded files, security headers, `GET /` for browsers.
mod ui;
/// A database made before the work queue migrates in place and keeps every row.
mod upgrade;
/// The watchdog: what counts as progress, which requests it leaves out of metrics
/// and logs, and the start timeout it extends during migrations.
mod watchdog;
