//! `App`: the server's state, which the pipeline reaches — configuration, store, lifecycle,
//! health cache and access log. Built once by `server`, shared read-only by workers.

use super::cors::Cors;
use super::ratelimit::RateLimiter;
use crate::config::Config;
use crate::health::Health;
use crate::lifecycle::Lifecycle;
use crate::logging::AccessLog;
use crate::store::Store;

pub struct App {
    pub config: Config,
    pub store: std::sync::Arc<dyn Store>,
    pub life: Lifecycle,
    pub health: Health,
    pub access_log: AccessLog,
    /// `None` when `RATE_LIMIT_PER_MINUTE=0`.
    pub limiter: Option<RateLimiter>,
    /// `None` when `CORS_ORIGINS` is unset.
    pub cors: Option<Cors>,
    /// `DASHBOARD_BACKEND_TEST_HOOKS=1`: enables `/_test/sleep` and `/_test/panic`, in
    /// builds with the `test-hooks` feature only (the tests'; never a release build).
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    pub test_hooks: bool,
    /// `Config::backup_record_base()`, computed once.
    pub backup_record: std::path::PathBuf,
}

impl App {
    /// The part of the state a handler sees (issue #14: not the whole `App`).
    pub fn handler_ctx(&self) -> crate::api::Ctx<'_> {
        crate::api::Ctx {
            store: &self.store,
            health: &self.health,
            life: &self.life,
            backup_record: &self.backup_record,
        }
    }
}

/// Live (parked claims, event streams) answers requests after their worker moved on,
/// and counts them as the pipeline does.
impl crate::live::Host for App {
    fn record(
        &self,
        req: &crate::wire::Request,
        route: Option<usize>,
        status: u16,
        busy: std::time::Duration,
    ) {
        super::pipeline::record(self, req, route, status, busy);
    }

    fn ready(&self) -> bool {
        self.life.phase() == crate::lifecycle::Phase::Ready
    }
}
