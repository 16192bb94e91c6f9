//! dashboard-backend as a library: the binary (`main.rs`) and the fuzz targets
//! (`fuzz/`) both drive it through these modules. Only what they use is `pub`; the
//! rest is `pub(crate)`, so the dead-code lint sees what nothing calls.
//!
//! Calls go one way (issue #14; `scripts/layering-check.sh` enforces it in CI):
//! main → cli → server → watchdog → restore → http → router → api → wire →
//! lifecycle → validate → error → health → backup → logging → config → store → model,
//! and below them the leaves anyone may import: metrics, sys, cache, net, auth,
//! systemd, exit, clock. `error` and `validate` are not leaves: `ApiError` is built
//! from `StoreError`, and validation builds `ApiError`s and model values, so both sit
//! between the handlers and the store.
#![deny(unsafe_code)]
#![deny(clippy::unwrap_used, clippy::expect_used)]
// ApiError carries its headers and details inline (~136 bytes); boxing it would cost an
// allocation per error to save a memcpy per request. Measured choice, not an oversight.
#![allow(clippy::result_large_err)]

pub mod api;
pub(crate) mod auth;
pub(crate) mod backup;
pub(crate) mod cache;
pub(crate) mod changes;
pub mod cli;
pub mod clock;
pub(crate) mod config;
pub mod error;
pub(crate) mod exit;
pub(crate) mod health;
pub mod http;
pub(crate) mod lifecycle;
pub(crate) mod live;
pub(crate) mod logging;
pub(crate) mod metrics;
pub(crate) mod model;
pub(crate) mod net;
pub(crate) mod pruner;
pub(crate) mod restore;
pub mod router;
pub(crate) mod server;
pub(crate) mod store;
pub(crate) mod sweeper;
pub(crate) mod sys;
pub(crate) mod systemd;
pub mod validate;
pub(crate) mod watchdog;
pub mod wire;
