//! dashboard-backend as a library: the binary (`main.rs`) and the fuzz targets
//! (`fuzz/`) both drive it through these modules.
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]
// ApiError carries its headers and details inline (~136 bytes); boxing it would cost an
// allocation per error to save a memcpy per request. Measured choice, not an oversight.
#![allow(clippy::result_large_err)]

pub mod api;
pub mod app;
pub mod auth;
pub mod backup;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod config;
pub mod error;
pub mod health;
pub mod http;
pub mod lifecycle;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod net;
pub mod restore;
pub mod router;
pub mod server;
pub mod store;
pub mod sys;
pub mod validate;
pub mod watchdog;
