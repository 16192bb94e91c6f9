//! Metrics: lock-free atomics on the hot path, rendered by hand in Prometheus text
//! format 0.0.4 and as JSON (SPEC §4). Every metric name is spelled here and only here.
//!
//! Per-request series are labelled by route template (from the static route table)
//! and method, never by raw path, so a scanner cannot create series without limit:
//! every unknown path is `route="unmatched"`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::Duration;

use serde_json::{json, Map, Value};

use crate::sys::Process;

pub const SERVICE: &str = "dashboard-backend";

static HTTP_REQUESTS: AtomicU64 = AtomicU64::new(0);
static HTTP_ERRORS: AtomicU64 = AtomicU64::new(0);
static TASKS_CREATED: AtomicU64 = AtomicU64::new(0);
static TASKS_UPDATED: AtomicU64 = AtomicU64::new(0);
static DB_QUERIES: AtomicU64 = AtomicU64::new(0);
static AUTH_FAILURES: AtomicU64 = AtomicU64::new(0);
static DB_COMMITS: AtomicU64 = AtomicU64::new(0);
static DB_COMMITTED_WRITES: AtomicU64 = AtomicU64::new(0);
static TASKS_PRUNED: AtomicU64 = AtomicU64::new(0);
static EVENTS_PRUNED: AtomicU64 = AtomicU64::new(0);
static PRUNE_RUNS: AtomicU64 = AtomicU64::new(0);
/// The pruner's last space figures (`store::Space`), set after each run.
static SPACE: std::sync::Mutex<Option<Space>> = std::sync::Mutex::new(None);

/// Reusable and reclaimable space, as each engine can tell it cheaply.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Space {
    /// SQLite: pages on the free list (reused before the file grows).
    pub free_pages: Option<i64>,
    /// SQLite: bytes a page.
    pub page_size: Option<i64>,
    /// PostgreSQL: (table, dead tuples, live tuples) from `pg_stat_user_tables`.
    pub tuples: Vec<(&'static str, i64, i64)>,
}

/// Histogram bucket upper bounds, seconds.
const BUCKETS: [f64; 13] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Status codes counted apart; anything else is counted as `other`.
const CODES: [u16; 18] = [
    200, 201, 204, 304, 400, 401, 403, 404, 405, 409, 412, 413, 415, 422, 429, 500, 503, 504,
];
/// Method labels; anything else is `OTHER`.
const METHODS: [&str; 8] = [
    "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "OTHER",
];

/// The route templates, in the router's order (`register_routes`): metrics is a
/// leaf and takes them as plain values instead of importing the router.
static ROUTES: OnceLock<Vec<&'static str>> = OnceLock::new();

/// Names the routes whose indices `observe` will be given; called once at start.
pub fn register_routes(templates: Vec<&'static str>) {
    let _ = ROUTES.set(templates);
}

fn routes() -> &'static [&'static str] {
    ROUTES.get().map(Vec::as_slice).unwrap_or(&[])
}

/// Counters of one (route, method) pair.
struct Slot {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
    codes: [AtomicU64; CODES.len() + 1],
}

impl Slot {
    fn new() -> Slot {
        Slot {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
            codes: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// (routes + 1 for "unmatched") × methods slots, allocated once.
fn slots() -> &'static [Slot] {
    static SLOTS: OnceLock<Vec<Slot>> = OnceLock::new();
    SLOTS.get_or_init(|| {
        (0..(routes().len() + 1) * METHODS.len())
            .map(|_| Slot::new())
            .collect()
    })
}

fn method_index(m: &str) -> usize {
    METHODS
        .iter()
        .position(|x| *x == m)
        .unwrap_or(METHODS.len() - 1)
}

fn route_name(i: usize) -> &'static str {
    routes().get(i).copied().unwrap_or("unmatched")
}

/// Records one answered request. `route` is the index among the registered
/// routes, or `None` (unmatched); `method` its name.
pub fn observe(route: Option<usize>, method: &str, status: u16, elapsed: Duration) {
    HTTP_REQUESTS.fetch_add(1, Relaxed);
    if status >= 400 {
        HTTP_ERRORS.fetch_add(1, Relaxed);
    }
    let n = routes().len();
    let r = route.map_or(n, |r| r.min(n));
    let slot = &slots()[r * METHODS.len() + method_index(method)];
    let secs = elapsed.as_secs_f64();
    if let Some(b) = BUCKETS.iter().position(|le| secs <= *le) {
        slot.buckets[b].fetch_add(1, Relaxed);
    }
    slot.count.fetch_add(1, Relaxed);
    slot.sum_micros
        .fetch_add(elapsed.as_micros() as u64, Relaxed);
    let c = CODES
        .iter()
        .position(|c| *c == status)
        .unwrap_or(CODES.len());
    slot.codes[c].fetch_add(1, Relaxed);
}

/// A request refused by authentication or authorization (401/403).
pub fn auth_failure() {
    AUTH_FAILURES.fetch_add(1, Relaxed);
}
pub fn db_query() {
    DB_QUERIES.fetch_add(1, Relaxed);
}
/// One group commit of `writes` write requests (their ratio is the batch size).
pub fn db_commit(writes: usize) {
    DB_COMMITS.fetch_add(1, Relaxed);
    DB_COMMITTED_WRITES.fetch_add(writes as u64, Relaxed);
}
/// One pruner run deleted `tasks` tasks and `events` events (SPEC §5c).
pub fn pruned(tasks: u64, events: u64) {
    PRUNE_RUNS.fetch_add(1, Relaxed);
    TASKS_PRUNED.fetch_add(tasks, Relaxed);
    EVENTS_PRUNED.fetch_add(events, Relaxed);
}
/// The directory whose filesystem holds the SQLite database (`serve` sets it; not on
/// PostgreSQL, whose disk is not ours to see): `db_filesystem_avail_bytes`.
pub static DISK_DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
/// The pruner's latest space figures.
pub fn set_space(s: Space) {
    *SPACE.lock().unwrap_or_else(|e| e.into_inner()) = Some(s);
}
pub fn tasks_created(n: usize) {
    TASKS_CREATED.fetch_add(n as u64, Relaxed);
}
pub fn tasks_updated(n: usize) {
    TASKS_UPDATED.fetch_add(n as u64, Relaxed);
}

/// Task counts by status, as the `tasks{status}` gauge shows them.
pub type TaskCounts = Vec<(&'static str, i64)>;

/// How old the `tasks{status}` gauge may be (SPEC §5b: ≤ 5 s).
const TASKS_CACHE_FOR: Duration = Duration::from_secs(5);

/// The `tasks{status}` gauge: a count over every task, so a scrape costs O(1) in the
/// number of tasks only if that count is taken at most once per `TASKS_CACHE_FOR`,
/// by one scrape at a time, while the others answer the last counts (SPEC §5b).
pub fn tasks_by_status(count: impl FnOnce() -> TaskCounts) -> std::sync::Arc<TaskCounts> {
    static TASKS: crate::cache::Cached<TaskCounts> = crate::cache::Cached::new(TASKS_CACHE_FOR);
    TASKS.get(count).value
}

/// Gauges read at scrape time (from the store, /proc and the backup record).
#[derive(Debug, Default)]
pub struct Gauges {
    pub db_size_bytes: u64,
    pub db_memory_bytes: Option<u64>,
    pub tasks_by_status: std::sync::Arc<TaskCounts>,
    pub backup_last_success_timestamp: Option<f64>,
    pub backup_last_duration: Option<f64>,
    pub backup_last_size: Option<u64>,
    pub backup_last_failure_timestamp: Option<f64>,
}

struct Text(String);

impl Text {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }
    fn line(&mut self, name: &str, labels: &str, v: impl std::fmt::Display) {
        let _ = writeln!(self.0, "{name}{{service=\"{SERVICE}\"{labels}}} {v}");
    }
    fn single(&mut self, name: &str, kind: &str, help: &str, v: impl std::fmt::Display) {
        self.head(name, kind, help);
        self.line(name, "", v);
    }
}

/// The connection layer's counters, registered once by `serve`.
pub static CONNECTIONS: std::sync::OnceLock<std::sync::Arc<tiny_http::ConnectionStats>> =
    std::sync::OnceLock::new();

/// Prometheus text format 0.0.4.
pub fn render_text(g: &Gauges, p: &Process) -> String {
    let mut t = Text(String::with_capacity(16 * 1024));
    t.single(
        "http_requests_total",
        "counter",
        "Total HTTP requests",
        HTTP_REQUESTS.load(Relaxed),
    );
    t.single(
        "http_errors_total",
        "counter",
        "Total HTTP errors (4xx and 5xx)",
        HTTP_ERRORS.load(Relaxed),
    );
    t.single(
        "tasks_created_total",
        "counter",
        "Total tasks created",
        TASKS_CREATED.load(Relaxed),
    );
    t.single(
        "tasks_updated_total",
        "counter",
        "Total task updates (patch and claim)",
        TASKS_UPDATED.load(Relaxed),
    );
    t.single(
        "db_queries_total",
        "counter",
        "Total database operations",
        DB_QUERIES.load(Relaxed),
    );
    t.single(
        "db_commits_total",
        "counter",
        "Transactions committed by the writer (each one fsync with synchronous=FULL)",
        DB_COMMITS.load(Relaxed),
    );
    t.single(
        "db_committed_writes_total",
        "counter",
        "Write requests those commits carried; divided by db_commits_total, the group-commit batch size",
        DB_COMMITTED_WRITES.load(Relaxed),
    );
    t.single(
        "uptime_seconds",
        "gauge",
        "Service uptime in seconds",
        crate::clock::uptime_secs(),
    );
    // SPEC §9: open event streams and parked long-poll claims (src/live).
    let live = crate::changes::gauges();
    t.single(
        "http_streams_open",
        "gauge",
        "Event streams open now",
        live.streams_open,
    );
    t.single(
        "claim_waiters",
        "gauge",
        "Long-poll claims waiting for a task now",
        live.claim_waiters,
    );
    t.single(
        "http_streams_buffered_bytes",
        "gauge",
        "Bytes of event-stream output held for connections, not yet written to their sockets",
        live.stream_buffered_bytes,
    );

    t.head(
        "http_request_duration_seconds",
        "histogram",
        "Request duration by method and route template",
    );
    for_each_slot(|route, method, s| {
        let labels = format!(",method=\"{method}\",route=\"{route}\"");
        let mut cum = 0;
        for (i, le) in BUCKETS.iter().enumerate() {
            cum += s.buckets[i].load(Relaxed);
            t.line(
                "http_request_duration_seconds_bucket",
                &format!("{labels},le=\"{le}\""),
                cum,
            );
        }
        let count = s.count.load(Relaxed);
        t.line(
            "http_request_duration_seconds_bucket",
            &format!("{labels},le=\"+Inf\""),
            count,
        );
        t.line(
            "http_request_duration_seconds_sum",
            &labels,
            s.sum_micros.load(Relaxed) as f64 / 1e6,
        );
        t.line("http_request_duration_seconds_count", &labels, count);
    });
    t.head(
        "http_responses_total",
        "counter",
        "HTTP responses by route template, method and status code",
    );
    for_each_slot(|route, method, s| {
        for (i, c) in s.codes.iter().enumerate() {
            let n = c.load(Relaxed);
            if n > 0 {
                let code = CODES
                    .get(i)
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "other".into());
                t.line(
                    "http_responses_total",
                    &format!(",route=\"{route}\",method=\"{method}\",code=\"{code}\""),
                    n,
                );
            }
        }
    });

    if let Some(c) = CONNECTIONS.get() {
        t.single(
            "http_connections_open",
            "gauge",
            "Client connections open now",
            c.open(),
        );
        t.single(
            "http_connections_accepted_total",
            "counter",
            "Client connections accepted",
            c.accepted(),
        );
        t.single(
            "http_connections_rejected_total",
            "counter",
            "Connections answered 503 and closed because MAX_CONNECTIONS were open",
            c.rejected(),
        );
        t.single(
            "http_connections_timed_out_total",
            "counter",
            "Connections closed by READ_TIMEOUT_SECONDS or IDLE_TIMEOUT_SECONDS",
            c.timed_out(),
        );
        t.single(
            "http_accept_errors_total",
            "counter",
            "accept(2) failures survived (e.g. out of file descriptors)",
            c.accept_errors(),
        );
    }
    t.single(
        "process_resident_memory_bytes",
        "gauge",
        "Resident memory size in bytes",
        p.rss_bytes,
    );
    t.single(
        "http_auth_failures_total",
        "counter",
        "Requests refused for a missing, unknown or insufficient API key",
        AUTH_FAILURES.load(Relaxed),
    );
    t.single(
        "process_cpu_seconds_total",
        "counter",
        "User and system CPU time in seconds",
        p.cpu_seconds,
    );
    t.single(
        "process_open_fds",
        "gauge",
        "Open file descriptors",
        p.open_fds,
    );
    t.single(
        "process_start_time_seconds",
        "gauge",
        "Start time since the Unix epoch in seconds",
        p.start_time,
    );
    t.single(
        "db_size_bytes",
        "gauge",
        "Database size in bytes (main file and WAL)",
        g.db_size_bytes,
    );
    if let Some(n) = g.db_memory_bytes {
        t.single(
            "db_memory_bytes",
            "gauge",
            "Heap the embedded database holds in this process (SQLite page caches, statements)",
            n,
        );
    }
    render_retention(&mut t);
    t.head("tasks", "gauge", "Tasks by status");
    for (status, n) in g.tasks_by_status.iter() {
        t.line("tasks", &format!(",status=\"{status}\""), n);
    }
    let opt = |v: Option<f64>| v.unwrap_or(0.0);
    t.single(
        "backup_last_success_timestamp_seconds",
        "gauge",
        "Time of the last successful backup (0 = never)",
        opt(g.backup_last_success_timestamp),
    );
    t.single(
        "backup_last_failure_timestamp_seconds",
        "gauge",
        "Time of the last failed backup (0 = never)",
        opt(g.backup_last_failure_timestamp),
    );
    t.single(
        "backup_last_duration_seconds",
        "gauge",
        "Duration of the last successful backup",
        opt(g.backup_last_duration),
    );
    t.single(
        "backup_last_size_bytes",
        "gauge",
        "Size of the last successful backup file",
        g.backup_last_size.unwrap_or(0),
    );
    t.head("dashboard_backend_build_info", "gauge", "Build information");
    t.line(
        "dashboard_backend_build_info",
        &format!(",version=\"{}\"", env!("CARGO_PKG_VERSION")),
        1,
    );
    t.0
}

/// The pruner's counters and the space gauges of the engine in use (SPEC §5c).
fn render_retention(t: &mut Text) {
    t.single(
        "tasks_pruned_total",
        "counter",
        "Finished tasks deleted by the retention pruner (TASK_RETENTION)",
        TASKS_PRUNED.load(Relaxed),
    );
    t.single(
        "events_pruned_total",
        "counter",
        "Events deleted by the retention pruner (EVENT_RETENTION, and with pruned tasks)",
        EVENTS_PRUNED.load(Relaxed),
    );
    t.single(
        "prune_runs_total",
        "counter",
        "Runs of the retention pruner",
        PRUNE_RUNS.load(Relaxed),
    );
    if let Some(free) = DISK_DIR.get().and_then(|d| crate::sys::free_bytes(d)) {
        t.single(
            "db_filesystem_avail_bytes",
            "gauge",
            "Bytes available on the filesystem holding the SQLite database",
            free,
        );
    }
    let space = SPACE.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let Some(space) = space else { return };
    if let Some(free) = space.free_pages {
        t.single(
            "db_free_pages",
            "gauge",
            "SQLite pages on the free list, reused before the file grows",
            free,
        );
    }
    if let (Some(free), Some(size)) = (space.free_pages, space.page_size) {
        t.single(
            "db_free_bytes",
            "gauge",
            "Bytes of the SQLite file on the free list (db_free_pages times the page size)",
            free * size,
        );
    }
    if !space.tuples.is_empty() {
        t.head(
            "db_dead_tuples",
            "gauge",
            "Dead tuples of a hot PostgreSQL table (pg_stat_user_tables.n_dead_tup), left for autovacuum",
        );
        for (table, dead, _) in &space.tuples {
            t.line("db_dead_tuples", &format!(",table=\"{table}\""), dead);
        }
        t.head(
            "db_live_tuples",
            "gauge",
            "Live tuples of a hot PostgreSQL table (pg_stat_user_tables.n_live_tup)",
        );
        for (table, _, live) in &space.tuples {
            t.line("db_live_tuples", &format!(",table=\"{table}\""), live);
        }
    }
}

fn for_each_slot(mut f: impl FnMut(&'static str, &'static str, &Slot)) {
    for (i, s) in slots().iter().enumerate() {
        if s.count.load(Relaxed) == 0 {
            continue;
        }
        let (r, m) = (i / METHODS.len(), i % METHODS.len());
        f(route_name(r), METHODS[m], s);
    }
}

/// The same numbers as JSON (`/metrics/json`).
pub fn render_json(g: &Gauges, p: &Process) -> Value {
    let live = crate::changes::gauges();
    let mut routes = Vec::new();
    for_each_slot(|route, method, s| {
        let mut codes = Map::new();
        for (i, c) in s.codes.iter().enumerate() {
            let n = c.load(Relaxed);
            if n > 0 {
                codes.insert(
                    CODES
                        .get(i)
                        .map(|c| c.to_string())
                        .unwrap_or_else(|| "other".into()),
                    n.into(),
                );
            }
        }
        // Per bucket of `http_request_duration_buckets_le`, not cumulative; the rest
        // of `count` took longer than the last bound (the dashboard's p99 reads these).
        let buckets: Vec<u64> = s.buckets.iter().map(|b| b.load(Relaxed)).collect();
        routes.push(json!({
            "route": route, "method": method, "count": s.count.load(Relaxed),
            "sum_seconds": s.sum_micros.load(Relaxed) as f64 / 1e6, "codes": codes,
            "buckets": buckets,
        }));
    });
    let tasks: Map<String, Value> = g
        .tasks_by_status
        .iter()
        .map(|(s, n)| (s.to_string(), (*n).into()))
        .collect();
    json!({
        "service": SERVICE,
        "timestamp": crate::clock::now_rfc3339(),
        "uptime_seconds": crate::clock::uptime_secs(),
        "metrics": {
            "http_requests_total": HTTP_REQUESTS.load(Relaxed),
            "http_errors_total": HTTP_ERRORS.load(Relaxed),
            "tasks_created_total": TASKS_CREATED.load(Relaxed),
            "tasks_updated_total": TASKS_UPDATED.load(Relaxed),
            "db_queries_total": DB_QUERIES.load(Relaxed),
            "db_commits_total": DB_COMMITS.load(Relaxed),
            "db_committed_writes_total": DB_COMMITTED_WRITES.load(Relaxed),
            "http_auth_failures_total": AUTH_FAILURES.load(Relaxed),
            "http_streams_open": live.streams_open,
            "claim_waiters": live.claim_waiters,
            "http_streams_buffered_bytes": live.stream_buffered_bytes,
            "process_resident_memory_bytes": p.rss_bytes,
            "process_cpu_seconds_total": p.cpu_seconds,
            "process_open_fds": p.open_fds,
            "process_start_time_seconds": p.start_time,
            "db_size_bytes": g.db_size_bytes,
            "db_memory_bytes": g.db_memory_bytes,
            "tasks_pruned_total": TASKS_PRUNED.load(Relaxed),
            "events_pruned_total": EVENTS_PRUNED.load(Relaxed),
            "tasks": tasks,
            "backup_last_success_timestamp_seconds": g.backup_last_success_timestamp,
            "backup_last_failure_timestamp_seconds": g.backup_last_failure_timestamp,
            "backup_last_duration_seconds": g.backup_last_duration,
            "backup_last_size_bytes": g.backup_last_size,
            "http_requests_by_route": routes,
            "http_request_duration_buckets_le": BUCKETS,
        }
    })
}
