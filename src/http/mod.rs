//! The worker pool: `WORKERS` threads block on tiny_http's queue (`recv_timeout`, so
//! each wakes now and then to see the stop flag), read the request, run the pipeline
//! inside `catch_unwind`, and write the response — always our own envelope, even
//! after a panic (a request dropped unanswered would get tiny_http's bare 500).

pub mod pipeline;
pub mod request;
pub mod response;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::app::App;
use crate::error::ApiError;
use request::Request;
use response::Response;

/// How often an idle worker looks at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// Starts `n` workers serving `server`.
pub fn spawn_workers(
    server: Arc<tiny_http::Server>,
    app: Arc<App>,
    n: usize,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    (0..n)
        .map(|i| {
            let (server, app) = (server.clone(), app.clone());
            std::thread::Builder::new()
                .name(format!("http-{i}"))
                .spawn(move || worker(&server, &app))
        })
        .collect()
}

fn worker(server: &tiny_http::Server, app: &App) {
    loop {
        if app.life.stopping() {
            // Shutting down: finish what is already queued, then leave.
            match server.try_recv() {
                Ok(Some(rq)) => serve_one(app, rq),
                _ => return,
            }
            continue;
        }
        match server.recv_timeout(POLL) {
            Ok(Some(rq)) => serve_one(app, rq),
            Ok(None) => {}
            Err(e) => {
                log::warn!(target: "http", error:% = e; "receive failed");
                std::thread::sleep(POLL);
            }
        }
    }
}

/// Serves one request start to finish.
pub fn serve_one(app: &App, mut rq: tiny_http::Request) {
    let _inflight = app.life.begin_request();
    let started = Instant::now();
    let mut req = Request::read(&mut rq, app.config.max_body_bytes);
    req.request_id = pipeline::request_id(req.header("x-request-id"));
    let outcome = catch_unwind(AssertUnwindSafe(|| pipeline::handle(app, &req)));
    let (mut resp, route) = outcome.unwrap_or_else(|_| {
        log::error!(target: "http", request_id = req.request_id.as_str(), path = req.path.as_str(); "handler panicked");
        (Response::error(&ApiError::internal(), &req.request_id), None)
    });
    resp.headers.push(("X-Request-ID", req.request_id.clone()));
    if let Some(c) = req
        .header("x-correlation-id")
        .filter(|c| pipeline::sane_id(c))
    {
        resp.headers.push(("X-Correlation-ID", c.to_string()));
    }
    if app.life.phase() != crate::lifecycle::Phase::Ready {
        // Draining: ask keep-alive clients (HAProxy) to reconnect elsewhere.
        resp.headers.push(("Connection", "close".into()));
    }
    let status = resp.status;
    response::send(rq, resp);
    pipeline::record(app, &req, route, status, started.elapsed());
}
