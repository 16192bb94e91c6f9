//! dashboard-backend: argv → `cli::run` → exit code (sysexits). Nothing else lives here.
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]

use dashboard_backend::{cli, clock};

fn main() {
    clock::init();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = cli::run(&argv) {
        eprintln!("dashboard-backend: {}", e.message);
        std::process::exit(e.code);
    }
}
