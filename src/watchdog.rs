//! The systemd watchdog (SPEC §6): `WATCHDOG=1` at half of `WATCHDOG_USEC`, sent only
//! after a real round trip proves progress — an HTTP request through the listener and
//! the worker pool, and a transaction through the writer thread. A wedged pool or a
//! database that does not answer stops the pings, and systemd restarts the service.
//! The same thread keeps the `STATUS=` line of `systemctl status` current.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::http::probe::{probe_token, PROBE_AGENT, PROBE_HEADER};
use crate::http::App;
use crate::systemd::notify;

/// The ping interval systemd asked for, if any (half of `WATCHDOG_USEC`).
fn interval() -> Option<Duration> {
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    if let Some(pid) = std::env::var("WATCHDOG_PID")
        .ok()
        .and_then(|p| p.parse::<u32>().ok())
    {
        if pid != std::process::id() {
            return None;
        }
    }
    (usec > 0).then(|| Duration::from_micros(usec / 2))
}

/// How often `STATUS=` is refreshed when there is no watchdog.
const STATUS_EVERY: Duration = Duration::from_secs(5);

/// Starts the thread when running under systemd (`NOTIFY_SOCKET`): watchdog pings
/// if systemd asked for them, `STATUS=` updates in any case.
pub fn start(app: Arc<App>, local: SocketAddr) -> Option<JoinHandle<()>> {
    std::env::var_os("NOTIFY_SOCKET")?;
    let watchdog = interval();
    if let Some(every) = watchdog {
        log::info!(target: "watchdog", interval_ms = every.as_millis() as u64; "watchdog enabled");
    }
    std::thread::Builder::new()
        .name("watchdog".into())
        .spawn(move || run(&app, local, watchdog))
        .ok()
}

fn run(app: &App, local: SocketAddr, watchdog: Option<Duration>) {
    let target = probe_addr(local);
    let every = watchdog.unwrap_or(STATUS_EVERY);
    while !app.life.stopping() {
        let tick = Instant::now();
        if watchdog.is_some() {
            match progress(app, target, every) {
                Ok(()) => notify(&[sd_notify::NotifyState::Watchdog]),
                Err(why) => {
                    log::error!(target: "watchdog", reason = why.as_str(); "no progress; watchdog ping withheld")
                }
            }
        }
        if app.life.phase() == crate::lifecycle::Phase::Ready {
            let status = format!(
                "listening on {local}, {} requests served",
                app.life.served()
            );
            notify(&[sd_notify::NotifyState::Status(&status)]);
        }
        // Sleep in short steps so shutdown is not held up by a long STATUS interval.
        while tick.elapsed() < every && !app.life.stopping() {
            std::thread::sleep(
                every
                    .saturating_sub(tick.elapsed())
                    .min(Duration::from_millis(100)),
            );
        }
    }
}

/// Where to reach our own listener (a wildcard bind is reached on loopback).
fn probe_addr(local: SocketAddr) -> SocketAddr {
    let ip = match local.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, local.port())
}

fn progress(app: &App, target: SocketAddr, budget: Duration) -> Result<(), String> {
    http_probe(target, budget).map_err(|e| format!("worker pool did not answer: {e}"))?;
    // Bounded: a long write that makes progress counts as alive, and the wait never
    // outlasts the ping interval (issue #13).
    app.store
        .writer_alive(budget / 2)
        .map_err(|e| format!("database writer did not answer: {e}"))?;
    Ok(())
}

fn http_probe(target: SocketAddr, budget: Duration) -> std::io::Result<()> {
    let mut headers = vec![("User-Agent", PROBE_AGENT)];
    if let Some(token) = probe_token() {
        headers.push((PROBE_HEADER, token));
    }
    match crate::http::probe::get(target, "localhost", "/health/live", &headers, budget)? {
        (200, _) => Ok(()),
        (code, _) => Err(std::io::Error::other(format!("answered {code}"))),
    }
}
