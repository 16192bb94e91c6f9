//! `serve`, in SPEC §6 order: open store → migrate → bind (or adopt the socket systemd
//! passed) → workers → READY=1 → wait for signals → drain → stop accepting → finish
//! in-flight requests (bounded) → checkpoint WAL → exit 0.

use std::net::{TcpListener, ToSocketAddrs};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sd_notify::NotifyState;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};

use crate::config::Config;
use crate::exit::{command_error, EX_CANTCREAT, EX_CONFIG, EX_IOERR, EX_OSERR, EX_UNAVAILABLE};
use crate::health::Health;
use crate::http::App;
use crate::lifecycle::{Lifecycle, Phase};
use crate::logging::AccessLog;
use crate::store::postgres::PgStore;
use crate::store::sqlite::lock::ServerLock;
use crate::store::sqlite::SqliteStore;
use crate::store::{Options, Store, StoreError};
use crate::systemd::notify;

command_error!(
    /// Why `serve` (or opening the store for another command) failed.
    ServeError
);

/// Opens the store the configuration names: PostgreSQL when `DATABASE_URL` is set
/// (SPEC §10), else the SQLite file with `readers` read connections. Both migrate.
pub fn open_store(config: &Config, readers: usize) -> Result<Arc<dyn Store>, ServeError> {
    let store: Arc<dyn Store> = match &config.database_url {
        Some(url) => Arc::new(
            PgStore::open(url, config.database_pool_size)
                .map_err(|e| config_store_error(e, config))?,
        ),
        None => Arc::new(
            SqliteStore::open(
                &config.database_path,
                &Options {
                    readers,
                    ..Options::default()
                },
            )
            .map_err(|e| store_error(e, &config.database_path))?,
        ),
    };
    Ok(store)
}

/// Like `store_error`, naming the database the configuration selects (a URL never
/// with its password).
pub fn config_store_error(e: StoreError, config: &Config) -> ServeError {
    let code = match e {
        StoreError::Unavailable(_) | StoreError::Busy => EX_UNAVAILABLE,
        _ => EX_IOERR,
    };
    ServeError::new(
        code,
        format!("cannot open database {}: {e}", config.database_label()),
    )
}

/// Maps a store error at start-up to an exit code and sentence.
pub fn store_error(e: StoreError, path: &std::path::Path) -> ServeError {
    let code = match e {
        StoreError::Unavailable(_) | StoreError::Busy => EX_UNAVAILABLE,
        _ => EX_IOERR,
    };
    ServeError::new(
        code,
        format!("cannot open database {}: {e}", path.display()),
    )
}

fn bind(config: &Config) -> Result<TcpListener, ServeError> {
    // SPEC §6: take the socket systemd passes, but only a listening TCP one.
    match crate::sys::listen_fd() {
        Ok(Some(l)) => {
            log::info!(target: "server", "using the listening socket passed by systemd (LISTEN_FDS)");
            return Ok(l);
        }
        Ok(None) => {}
        Err(why) => {
            return Err(ServeError::new(
                EX_CONFIG,
                format!("the socket systemd passed (LISTEN_FDS, fd 3) {why}; give dashboard-backend.socket a ListenStream= with a TCP port or address"),
            ))
        }
    }
    let addr = format!("{}:{}", config.host, config.port);
    let host = config.host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<_> = (host, config.port)
        .to_socket_addrs()
        .map_err(|e| {
            ServeError::new(
                EX_UNAVAILABLE,
                format!("cannot resolve HOST {:?}: {e}", config.host),
            )
        })?
        .collect();
    TcpListener::bind(&addrs[..])
        .map_err(|e| ServeError::new(EX_UNAVAILABLE, format!("cannot listen on {addr}: {e}")))
}

/// Whose filesystem the disk health check watches: the SQLite file's, or on
/// PostgreSQL (whose disk is not ours to see) the working directory's.
fn health_dir(config: &Config) -> std::path::PathBuf {
    match config.is_postgres() {
        true => std::path::PathBuf::from("postgres"),
        false => config.database_path.clone(),
    }
}

/// Read/idle timeouts, the connection cap (kept inside the open-files limit) and the
/// head bound for the connection layer in front of the workers.
fn connection_limits(config: &Config) -> tiny_http::ConnectionLimits {
    // A connection holds one descriptor (conn.rs keeps no clone of its socket) and one
    // thread. Two descriptors are budgeted a connection, plus 128, so the cap leaves
    // as many again for sockets accepted only to be refused, the database, logs and
    // backups: the default 4096 needs 8320, well inside the unit's LimitNOFILE=65536.
    let max_connections = match crate::sys::raise_nofile_limit() {
        Ok(nofile) => {
            let fit = (nofile.saturating_sub(128) / 2).max(16) as usize;
            if fit < config.max_connections {
                log::warn!(target: "server", nofile = nofile, max_connections = fit;
                    "MAX_CONNECTIONS={} does not fit the open-files limit; using {fit} (raise LimitNOFILE)",
                    config.max_connections);
            }
            config.max_connections.min(fit)
        }
        Err(e) => {
            log::warn!(target: "server", error:% = e; "cannot read the open-files limit");
            config.max_connections
        }
    };
    tiny_http::ConnectionLimits {
        read_timeout: config.read_timeout,
        idle_timeout: config.idle_timeout,
        max_connections,
        max_head_bytes: MAX_HEAD_BYTES,
        max_body_bytes: config.max_body_bytes,
        error_body: crate::http::pipeline::connection_error_body,
        priority: crate::http::is_probe,
    }
}

/// Request line plus headers; more is answered 431 (nginx's default is 8 KiB a line
/// and 32 KiB in all; HAProxy's tune.bufsize is 16 KiB).
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Runs the server until SIGTERM/SIGINT.
pub fn serve(config: Config) -> Result<(), ServeError> {
    // Before any thread exists, where resizing costs nothing (see there).
    crate::live::widen_futex_hash(config.max_streams);
    crate::sys::tune_allocator();
    if config.auth_disabled {
        log::warn!(target: "server", "AUTH_DISABLED=true: every endpoint is open to anyone who can connect");
    }
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .map_err(|e| ServeError::new(EX_OSERR, format!("cannot install signal handlers: {e}")))?;
    // Held until serve returns: restore and db vacuum refuse to run under it.
    // SQLite only: on PostgreSQL there is no local file to guard (SPEC §10).
    let _lock = match config.is_postgres() {
        true => None,
        false => Some(
            ServerLock::shared(&config.database_path)
                .map_err(|e| store_error(e, &config.database_path))?,
        ),
    };
    // Every handler that reads gets a connection without waiting: those on the
    // workers, on the write threads (which look up API keys before their write), on
    // the probe threads, and as many again on connections' own threads.
    let store = open_store(&config, crate::http::max_handlers(config.workers))?;
    let access_log = AccessLog::open(config.access_log.clone()).map_err(|e| {
        ServeError::new(
            EX_CANTCREAT,
            format!("cannot open ACCESS_LOG {:?}: {e}", config.access_log),
        )
    })?;
    let listener = bind(&config)?;
    if let Err(e) = crate::sys::tune_listener(&listener) {
        log::warn!(target: "server", error:% = e; "cannot set socket options (TCP_NODELAY, backlog)");
    }
    let local = listener.local_addr().map_err(|e| {
        ServeError::new(EX_OSERR, format!("cannot read the listening address: {e}"))
    })?;
    let server = Arc::new(
        tiny_http::Server::from_listener_with_limits(listener, connection_limits(&config))
            .map_err(|e| ServeError::new(EX_OSERR, format!("cannot start the HTTP server: {e}")))?,
    );
    let _ = crate::metrics::CONNECTIONS.set(server.connection_stats());
    crate::metrics::register_routes(crate::router::ROUTES.iter().map(|r| r.template).collect());
    let workers = config.workers;
    let limiter = crate::http::ratelimit::RateLimiter::new(config.rate_limit_per_minute);
    let cors = crate::http::cors::Cors::new(&config.cors_origins);
    let backup_record = config.backup_record_base();
    let app = Arc::new(App {
        backup_record,
        health: Health::new(
            &health_dir(&config),
            config.health_db_threshold,
            config.health_disk_min_free_bytes,
        ),
        config,
        store,
        life: Lifecycle::default(),
        access_log,
        limiter,
        cors,
        test_hooks: std::env::var("DASHBOARD_BACKEND_TEST_HOOKS").is_ok_and(|v| v == "1"),
    });
    // The health cache holds a value before the first probe: otherwise the first
    // probes would all wait on one database ping, and they share two threads.
    app.health.checks(&*app.store);
    // Ready before the workers start: with socket activation the first request is
    // already waiting, and it must not be told "starting".
    app.life.set(Phase::Ready);
    crate::live::start(
        app.clone(),
        app.config.max_streams,
        app.config.database_url.as_ref(),
    );
    let handles = crate::http::spawn_workers(server.clone(), app.clone(), workers)
        .map_err(|e| ServeError::new(EX_OSERR, format!("cannot start worker threads: {e}")))?;
    log::info!(target: "server", addr:% = local, workers = workers, version = env!("CARGO_PKG_VERSION"); "listening on {local}");
    let status = format!("listening on {local}, {workers} workers");
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
    let watchdog = crate::watchdog::start(app.clone(), local);
    let sweeper = crate::sweeper::Sweeper::start(app.store.clone())
        .map_err(|e| ServeError::new(EX_OSERR, format!("cannot start the lease sweeper: {e}")))?;
    let windows = crate::pruner::Windows {
        tasks: app.config.task_retention,
        events: app.config.event_retention,
    };
    if !app.config.is_postgres() {
        let dir = app
            .config
            .database_path
            .parent()
            .filter(|d| !d.as_os_str().is_empty());
        let _ = crate::metrics::DISK_DIR.set(dir.unwrap_or(std::path::Path::new(".")).into());
    }
    let pruner = crate::pruner::start(app.store.clone(), windows)
        .map_err(|e| ServeError::new(EX_OSERR, format!("cannot start the pruner thread: {e}")))?;

    for sig in signals.forever() {
        match sig {
            SIGHUP => reload(&app, local),
            _ => break,
        }
    }
    shutdown(&app, server, handles, watchdog, sweeper, pruner)
}

/// SIGHUP: reopen the access log and re-read the log level (SPEC §6).
fn reload(app: &App, local: std::net::SocketAddr) {
    notify(&[NotifyState::Reloading]);
    if let Err(e) = app.access_log.reopen() {
        log::error!(target: "server", error:% = e; "cannot reopen the access log");
    }
    match crate::config::reread_log_level() {
        Ok(Some(level)) => log::set_max_level(level),
        Ok(None) => {}
        Err(e) => {
            log::error!(target: "server", error = e.0.as_str(); "keeping the current log level")
        }
    }
    log::info!(target: "server", "reloaded: access log reopened, log level {}", log::max_level());
    let status = format!(
        "listening on {local}, {} requests served",
        app.life.served()
    );
    notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
}

fn shutdown(
    app: &Arc<App>,
    server: Arc<tiny_http::Server>,
    handles: Vec<std::thread::JoinHandle<()>>,
    watchdog: Option<std::thread::JoinHandle<()>>,
    sweeper: crate::sweeper::Sweeper,
    pruner: crate::pruner::Pruner,
) -> Result<(), ServeError> {
    let drain = app.config.shutdown_drain;
    log::info!(target: "server", drain_seconds = drain.as_secs(); "shutdown requested: draining");
    notify(&[NotifyState::Stopping, NotifyState::Status("draining")]);
    app.life.set(Phase::Draining);
    // SPEC §9: streams end and waiting claims are answered 204 now, within the drain.
    crate::live::shutdown();
    std::thread::sleep(drain);

    // Stop taking new work: the listener closes first (with socket activation the
    // kernel keeps new connections for the next process), open connections close
    // once idle or after their reply, and the workers leave when all are gone.
    app.life.set(Phase::Stopping);
    server.stop_accepting();
    let deadline = Instant::now() + app.config.shutdown_timeout;
    for h in handles {
        while !h.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        if h.is_finished() {
            let _ = h.join();
        }
    }
    if let Some(w) = watchdog {
        let _ = w.join();
    }
    let left = app.life.inflight();
    if left > 0 {
        log::warn!(target: "server", inflight = left; "shutdown timeout reached with requests still running");
    }
    drop(server);
    sweeper.stop();
    pruner.stop();
    app.store
        .close()
        .map_err(|e| ServeError::new(EX_IOERR, format!("closing the database failed: {e}")))?;
    log::info!(target: "server", served = app.life.served(); "stopped cleanly");
    Ok(())
}
