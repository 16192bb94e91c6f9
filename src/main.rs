//! dashboard-backend: argv → `cli::run` → exit code (sysexits). Nothing else lives here.
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]
// ApiError carries its headers and details inline (~136 bytes); boxing it would cost an
// allocation per error to save a memcpy per request. Measured choice, not an oversight.
#![allow(clippy::result_large_err)]

mod api;
mod app;
mod auth;
mod backup;
mod cli;
mod clock;
mod config;
mod error;
mod health;
mod http;
mod lifecycle;
mod logging;
mod metrics;
mod model;
mod restore;
mod router;
mod server;
mod store;
mod sys;
mod validate;
mod watchdog;

fn main() {
    clock::init();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = cli::run(&argv) {
        eprintln!("dashboard-backend: {}", e.message);
        std::process::exit(e.code);
    }
}
