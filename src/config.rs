//! Configuration (SPEC §2) in two stages, as ripgrep does with its flags: raw values
//! with where each came from (default, environment, flag), then a validated `Config`.
//! Every variable name is spelled here and only here. A bad value is one sentence
//! naming the variable and the value, and exit code 78, before anything is opened.

use std::path::PathBuf;
use std::time::Duration;

use crate::net::Cidr;

/// Where a value came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Default,
    Env,
    Flag,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Default => "default",
            Source::Env => "environment",
            Source::Flag => "flag",
        }
    }
}

/// Every variable, its default and a one-line meaning (also used by `--help`).
pub const VARIABLES: &[(&str, &str, &str)] = &[
    ("PORT", "3000", "TCP port"),
    (
        "HOST",
        "0.0.0.0",
        "bind address (IPv4 or IPv6 literal, or a name)",
    ),
    (
        "DATABASE_PATH",
        "./data/dashboard.db",
        "SQLite file; parent directory created if missing",
    ),
    (
        "DATABASE_URL",
        "",
        "postgres://user[:password]@host[:port]/db[?sslmode=…]: PostgreSQL instead of SQLite",
    ),
    (
        "DATABASE_POOL_SIZE",
        "16",
        "PostgreSQL connections per instance",
    ),
    ("LOG_LEVEL", "info", "error, warn, info, debug or trace"),
    ("LOG_FORMAT", "json", "json (one object a line) or pretty"),
    (
        "ACCESS_LOG",
        "",
        "path of an access log file (JSON lines), reopened on SIGHUP",
    ),
    (
        "WORKERS",
        "",
        "request worker threads (default 2 x cores, at least 4)",
    ),
    ("AUTH_DISABLED", "false", "true turns API-key auth off"),
    ("CORS_ORIGINS", "", "comma list of allowed origins, or *"),
    (
        "RATE_LIMIT_PER_MINUTE",
        "6000",
        "requests per minute per API key or client address; 0 = off",
    ),
    (
        "TRUSTED_PROXIES",
        "",
        "comma list of proxy addresses or CIDRs whose X-Forwarded-For names the client",
    ),
    ("MAX_BODY_BYTES", "1048576", "larger request bodies get 413"),
    (
        "READ_TIMEOUT_SECONDS",
        "10",
        "a request must arrive whole within this of its first byte (else 408 and close)",
    ),
    (
        "IDLE_TIMEOUT_SECONDS",
        "60",
        "an idle keep-alive connection is closed after this",
    ),
    (
        "MAX_CONNECTIONS",
        "4096",
        "open client connections (each a thread); more are answered 503 and closed",
    ),
    (
        "MAX_STREAMS",
        "1024",
        "open event streams, and long-poll claim waiters, each capped at this (503 beyond)",
    ),
    (
        "SHUTDOWN_DRAIN_SECONDS",
        "5",
        "on SIGTERM: time readiness reports 503 before the listener closes",
    ),
    (
        "SHUTDOWN_TIMEOUT_SECONDS",
        "25",
        "hard bound for in-flight requests to finish",
    ),
    ("BACKUP_DIR", "./data/backups", "where backup writes"),
    (
        "BACKUP_RETENTION_DAYS",
        "30",
        "backups older than this are deleted by backup; 0 keeps all",
    ),
    (
        "HEALTH_DISK_MIN_FREE_BYTES",
        "104857600",
        "below this free space health is degraded",
    ),
    (
        "HEALTH_DB_RESPONSE_TIME_THRESHOLD",
        "500",
        "slower DB probe (ms) means degraded",
    ),
    (
        "TASK_RETENTION",
        "90d",
        "finished tasks older than this are pruned with their events: 90d, 12h, 30m, 45s; 0 keeps all",
    ),
    (
        "EVENT_RETENTION",
        "90d",
        "events older than this are pruned: 90d, 12h, 30m, 45s; 0 keeps all",
    ),
    (
        "ENV_FILE",
        "",
        "KEY=VALUE file whose LOG_LEVEL is re-read on SIGHUP (the unit's EnvironmentFile)",
    ),
];

/// One raw value and its source.
#[derive(Debug, Clone)]
pub struct Setting {
    pub name: &'static str,
    pub value: String,
    pub source: Source,
}

/// `LOG_FORMAT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Json,
    Pretty,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    pub host: String,
    pub database_path: PathBuf,
    /// `DATABASE_URL`: when set, PostgreSQL instead of the SQLite file (SPEC §10).
    pub database_url: Option<crate::store::postgres::PgUrl>,
    /// `DATABASE_POOL_SIZE`: PostgreSQL connections per instance.
    pub database_pool_size: usize,
    pub log_level: log::LevelFilter,
    pub log_format: LogFormat,
    pub access_log: Option<PathBuf>,
    pub workers: usize,
    pub auth_disabled: bool,
    pub cors_origins: Vec<String>,
    pub rate_limit_per_minute: u32,
    /// Peers whose `X-Forwarded-For` is believed (SPEC §5b); empty: nobody's.
    pub trusted_proxies: Vec<Cidr>,
    pub max_body_bytes: usize,
    pub read_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_connections: usize,
    /// Open event streams, and parked long-poll claims, each at most this (SPEC §9).
    pub max_streams: usize,
    pub shutdown_drain: Duration,
    pub shutdown_timeout: Duration,
    pub backup_dir: PathBuf,
    /// 0 keeps every backup.
    pub backup_retention_days: u32,
    pub health_disk_min_free_bytes: u64,
    pub health_db_threshold: Duration,
    /// `TASK_RETENTION`: finished tasks older than this are pruned (SPEC §5c);
    /// `None` (`0`) keeps them forever.
    pub task_retention: Option<Duration>,
    /// `EVENT_RETENTION`: events older than this are pruned; `None` keeps them.
    pub event_retention: Option<Duration>,
    /// The raw values with their sources, for `dashboard-backend config`.
    pub settings: Vec<Setting>,
}

/// A value that cannot be used: names the variable, the value and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl std::fmt::Display for ConfigError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

/// The flag spelling of a variable: `DATABASE_PATH` → `--database-path`.
pub fn flag_name(var: &str) -> String {
    format!("--{}", var.to_ascii_lowercase().replace('_', "-"))
}

/// The variable a flag names, if any.
pub fn var_for_flag(flag: &str) -> Option<&'static str> {
    VARIABLES.iter().map(|v| v.0).find(|v| flag_name(v) == flag)
}

/// Collects raw values: flags override the environment, which overrides defaults.
pub fn gather(
    env: impl Fn(&str) -> Option<String>,
    flags: &[(&'static str, String)],
) -> Vec<Setting> {
    VARIABLES
        .iter()
        .map(|&(name, default, _)| {
            if let Some((_, v)) = flags.iter().rev().find(|(n, _)| *n == name) {
                Setting {
                    name,
                    value: v.clone(),
                    source: Source::Flag,
                }
            } else if let Some(v) = env(name) {
                Setting {
                    name,
                    value: v,
                    source: Source::Env,
                }
            } else {
                Setting {
                    name,
                    value: default.to_string(),
                    source: Source::Default,
                }
            }
        })
        .collect()
}

fn bad(name: &str, value: &str, expected: &str) -> ConfigError {
    ConfigError(format!(
        "invalid {name} value {value:?}: expected {expected}"
    ))
}

fn int<T: std::str::FromStr + PartialOrd + std::fmt::Display>(
    name: &str,
    value: &str,
    min: T,
    max: T,
) -> Result<T, ConfigError> {
    let expected = format!("an integer from {min} to {max}");
    let v: T = value
        .trim()
        .parse()
        .map_err(|_| bad(name, value, &expected))?;
    if v < min || v > max {
        return Err(bad(name, value, &expected));
    }
    Ok(v)
}

fn boolean(name: &str, value: &str) -> Result<bool, ConfigError> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Ok(true),
        "false" | "0" | "no" | "off" | "" => Ok(false),
        _ => Err(bad(name, value, "true or false")),
    }
}

fn default_workers() -> usize {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    (2 * cores).max(4)
}

impl Config {
    /// Validates raw settings into a `Config`.
    pub fn from_settings(settings: Vec<Setting>) -> Result<Config, ConfigError> {
        let get = |name: &str| -> &str {
            settings
                .iter()
                .find(|s| s.name == name)
                .map(|s| s.value.as_str())
                .unwrap_or("")
        };
        let non_empty = |name: &str| -> Result<String, ConfigError> {
            let v = get(name).trim();
            if v.is_empty() {
                return Err(bad(name, v, "a non-empty value"));
            }
            Ok(v.to_string())
        };
        let level = get("LOG_LEVEL");
        let log_level = match level.trim().to_ascii_lowercase().as_str() {
            "error" => log::LevelFilter::Error,
            "warn" | "warning" => log::LevelFilter::Warn,
            "info" => log::LevelFilter::Info,
            "debug" => log::LevelFilter::Debug,
            "trace" => log::LevelFilter::Trace,
            _ => {
                return Err(bad(
                    "LOG_LEVEL",
                    level,
                    "one of error, warn, info, debug, trace",
                ))
            }
        };
        let format = get("LOG_FORMAT");
        let log_format = match format.trim().to_ascii_lowercase().as_str() {
            "json" => LogFormat::Json,
            "pretty" => LogFormat::Pretty,
            _ => return Err(bad("LOG_FORMAT", format, "json or pretty")),
        };
        let workers = match get("WORKERS").trim() {
            "" => default_workers(),
            w => int("WORKERS", w, 1usize, 1024)?,
        };
        let host = non_empty("HOST")?;
        if host.contains(['/', ' ']) {
            return Err(bad("HOST", &host, "an IP address or host name"));
        }
        let cors_origins = get("CORS_ORIGINS")
            .split(',')
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
            .collect();
        let proxies = get("TRUSTED_PROXIES");
        let trusted_proxies = Cidr::parse_list(proxies).map_err(|why| {
            let expected =
                format!("a comma list of IP addresses or CIDRs, e.g. 10.0.0.0/8, ::1 ({why})");
            bad("TRUSTED_PROXIES", proxies, &expected)
        })?;
        let opt_path = |name: &str| {
            let v = get(name).trim();
            (!v.is_empty()).then(|| PathBuf::from(v))
        };
        Ok(Config {
            port: int("PORT", get("PORT"), 0u16, 65535)?,
            host,
            database_path: PathBuf::from(non_empty("DATABASE_PATH")?),
            database_url: database_url(get("DATABASE_URL"))?,
            database_pool_size: int(
                "DATABASE_POOL_SIZE",
                get("DATABASE_POOL_SIZE"),
                1usize,
                10_000,
            )?,
            log_level,
            log_format,
            access_log: opt_path("ACCESS_LOG"),
            workers,
            auth_disabled: boolean("AUTH_DISABLED", get("AUTH_DISABLED"))?,
            cors_origins,
            rate_limit_per_minute: int(
                "RATE_LIMIT_PER_MINUTE",
                get("RATE_LIMIT_PER_MINUTE"),
                0u32,
                100_000_000,
            )?,
            trusted_proxies,
            max_body_bytes: int("MAX_BODY_BYTES", get("MAX_BODY_BYTES"), 1024usize, 1 << 30)?,
            read_timeout: Duration::from_secs(int(
                "READ_TIMEOUT_SECONDS",
                get("READ_TIMEOUT_SECONDS"),
                1u64,
                3600,
            )?),
            idle_timeout: Duration::from_secs(int(
                "IDLE_TIMEOUT_SECONDS",
                get("IDLE_TIMEOUT_SECONDS"),
                1u64,
                86_400,
            )?),
            max_connections: int("MAX_CONNECTIONS", get("MAX_CONNECTIONS"), 1usize, 1_000_000)?,
            max_streams: int("MAX_STREAMS", get("MAX_STREAMS"), 1usize, 1_000_000)?,
            shutdown_drain: Duration::from_secs(int(
                "SHUTDOWN_DRAIN_SECONDS",
                get("SHUTDOWN_DRAIN_SECONDS"),
                0u64,
                3600,
            )?),
            shutdown_timeout: Duration::from_secs(int(
                "SHUTDOWN_TIMEOUT_SECONDS",
                get("SHUTDOWN_TIMEOUT_SECONDS"),
                0u64,
                3600,
            )?),
            backup_dir: PathBuf::from(non_empty("BACKUP_DIR")?),
            backup_retention_days: int(
                "BACKUP_RETENTION_DAYS",
                get("BACKUP_RETENTION_DAYS"),
                0u32,
                36_500,
            )?,
            health_disk_min_free_bytes: int(
                "HEALTH_DISK_MIN_FREE_BYTES",
                get("HEALTH_DISK_MIN_FREE_BYTES"),
                0u64,
                u64::MAX,
            )?,
            health_db_threshold: Duration::from_millis(int(
                "HEALTH_DB_RESPONSE_TIME_THRESHOLD",
                get("HEALTH_DB_RESPONSE_TIME_THRESHOLD"),
                1u64,
                600_000,
            )?),
            task_retention: retention("TASK_RETENTION", get("TASK_RETENTION"))?,
            event_retention: retention("EVENT_RETENTION", get("EVENT_RETENTION"))?,
            settings,
        })
    }

    /// `dashboard-backend config`: every variable, its effective value and its source.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for s in &self.settings {
            let value = if s.value.is_empty() {
                match s.name {
                    "WORKERS" => self.workers.to_string(),
                    _ => "(unset)".to_string(),
                }
            } else if is_secret(s.name) {
                "(redacted)".to_string()
            } else if s.name == "DATABASE_URL" {
                crate::store::postgres::url::redact_raw(&s.value)
            } else {
                s.value.clone()
            };
            out.push_str(&format!(
                "{:<34} {:<28} # {}\n",
                s.name,
                value,
                s.source.as_str()
            ));
        }
        out
    }
}

impl Config {
    /// Whether the store is PostgreSQL (`DATABASE_URL` set) rather than SQLite.
    pub fn is_postgres(&self) -> bool {
        self.database_url.is_some()
    }

    /// The database as messages name it: the SQLite path, or the URL without its
    /// password.
    pub fn database_label(&self) -> String {
        match &self.database_url {
            Some(u) => u.redacted(),
            None => self.database_path.display().to_string(),
        }
    }

    /// What the backup record is kept beside (`<this>.backup-state.json`): the SQLite
    /// file, or on PostgreSQL `BACKUP_DIR/dashboard` (there is no local database file).
    pub fn backup_record_base(&self) -> PathBuf {
        // Beside DATABASE_PATH on either engine: the state directory exists whatever
        // BACKUP_DIR is, so a backup that fails because BACKUP_DIR is broken is still
        // recorded (and BackupFailing fires), and the CLI and the server agree.
        self.database_path.clone()
    }
}

/// Longest retention accepted: 100 years (a bigger number is a typo, not a policy).
const MAX_RETENTION_SECS: u64 = 100 * 365 * 86_400;

/// `TASK_RETENTION` / `EVENT_RETENTION` (SPEC §2, §5c): a whole number with one unit,
/// `90d`, `12h`, `30m` or `45s`, or `0` to keep forever (`None`).
pub fn parse_retention(value: &str) -> Option<Option<Duration>> {
    let v = value.trim();
    if v == "0" {
        return Some(None);
    }
    let unit = v.chars().last()?;
    let mult: u64 = match unit {
        'd' => 86_400,
        'h' => 3_600,
        'm' => 60,
        's' => 1,
        _ => return None,
    };
    let digits = &v[..v.len() - 1];
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs = digits.parse::<u64>().ok()?.checked_mul(mult)?;
    match secs {
        0 => Some(None),
        s if s > MAX_RETENTION_SECS => None,
        s => Some(Some(Duration::from_secs(s))),
    }
}

fn retention(name: &str, value: &str) -> Result<Option<Duration>, ConfigError> {
    parse_retention(value).ok_or_else(|| {
        bad(
            name,
            value,
            "a duration such as 90d, 12h, 30m or 45s (at most 36500d), or 0 to keep forever",
        )
    })
}

/// `DATABASE_URL`: unset or a `postgres://` URL. The error never repeats a password.
fn database_url(v: &str) -> Result<Option<crate::store::postgres::PgUrl>, ConfigError> {
    let v = v.trim();
    if v.is_empty() {
        return Ok(None);
    }
    crate::store::postgres::PgUrl::parse(v)
        .map(Some)
        .map_err(|why| {
            ConfigError(format!(
                "invalid DATABASE_URL value {:?}: expected {why}",
                crate::store::postgres::url::redact_raw(v)
            ))
        })
}

/// The level SIGHUP should switch to: `LOG_LEVEL` from the file named by `ENV_FILE`
/// (what `systemctl reload` after editing /etc/default/dashboard-backend expects),
/// `None` when there is no such file or it does not set `LOG_LEVEL`.
pub fn reread_log_level() -> Result<Option<log::LevelFilter>, ConfigError> {
    let Some(path) = std::env::var_os("ENV_FILE").filter(|p| !p.is_empty()) else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ConfigError(format!("cannot read ENV_FILE {:?}: {e}", path)))?;
    let value = text.lines().rev().find_map(|line| {
        let line = line.trim().strip_prefix("export ").unwrap_or(line.trim());
        let (k, v) = line.split_once('=')?;
        (k.trim() == "LOG_LEVEL").then(|| v.trim().trim_matches(['"', '\'']).to_string())
    });
    match value {
        None => Ok(None),
        Some(v) => parse_level(&v).map(Some),
    }
}

fn parse_level(level: &str) -> Result<log::LevelFilter, ConfigError> {
    match level.trim().to_ascii_lowercase().as_str() {
        "error" => Ok(log::LevelFilter::Error),
        "warn" | "warning" => Ok(log::LevelFilter::Warn),
        "info" => Ok(log::LevelFilter::Info),
        "debug" => Ok(log::LevelFilter::Debug),
        "trace" => Ok(log::LevelFilter::Trace),
        _ => Err(bad(
            "LOG_LEVEL",
            level,
            "one of error, warn, info, debug, trace",
        )),
    }
}

/// Variables whose values are never printed.
fn is_secret(name: &str) -> bool {
    ["KEY", "SECRET", "TOKEN", "PASSWORD"]
        .iter()
        .any(|w| name.contains(w))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(env: &[(&str, &str)], flags: &[(&'static str, String)]) -> Result<Config, ConfigError> {
        let env: Vec<(String, String)> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_settings(gather(
            |n| env.iter().find(|(k, _)| k == n).map(|(_, v)| v.clone()),
            flags,
        ))
    }

    #[test]
    fn defaults_env_and_flags() {
        let c = cfg(&[], &[]).expect("defaults");
        assert_eq!(c.port, 3000);
        assert!(c.workers >= 4);
        let c = cfg(&[("PORT", "8080")], &[("PORT", "9090".into())]).expect("flag wins");
        assert_eq!(c.port, 9090);
        assert_eq!(c.settings[0].source, Source::Flag);
    }

    #[test]
    fn bad_values_name_variable_and_value() {
        let e = cfg(&[("PORT", "eighty")], &[]).unwrap_err();
        assert_eq!(
            e.0,
            "invalid PORT value \"eighty\": expected an integer from 0 to 65535"
        );
        let e = cfg(&[("AUTH_DISABLED", "maybe")], &[]).unwrap_err();
        assert!(e.0.contains("AUTH_DISABLED"));
        let e = cfg(&[("TRUSTED_PROXIES", "10.0.0.0/8, 10.0.0.1/8")], &[]).unwrap_err();
        assert_eq!(
            e.0,
            "invalid TRUSTED_PROXIES value \"10.0.0.0/8, 10.0.0.1/8\": expected a comma list of \
             IP addresses or CIDRs, e.g. 10.0.0.0/8, ::1 (\"10.0.0.1/8\" has bits set after the /8 prefix)"
        );
        let e = cfg(
            &[("DATABASE_URL", "postgres://u:hunter2@h/d?sslmode=bogus")],
            &[],
        )
        .unwrap_err();
        assert!(
            e.0.contains("DATABASE_URL") && !e.0.contains("hunter2"),
            "{}",
            e.0
        );
        let c = cfg(&[("DATABASE_URL", "postgres://u:hunter2@h/d")], &[]).expect("url");
        assert!(c.is_postgres() && !c.render().contains("hunter2"));
        assert!(c.render().contains("postgres://u:***@h:5432/d"));
        assert_eq!(flag_name("DATABASE_PATH"), "--database-path");
        assert_eq!(var_for_flag("--max-body-bytes"), Some("MAX_BODY_BYTES"));
    }

    #[test]
    fn retention_forms() {
        let s = |n| Some(Some(Duration::from_secs(n)));
        assert_eq!(parse_retention("90d"), s(90 * 86_400));
        assert_eq!(parse_retention("12h"), s(12 * 3_600));
        assert_eq!(parse_retention("30m"), s(30 * 60));
        assert_eq!(parse_retention("45s"), s(45));
        assert_eq!(parse_retention(" 2s "), s(2));
        assert_eq!(parse_retention("36500d"), s(36_500 * 86_400));
        assert_eq!(parse_retention("0"), Some(None));
        assert_eq!(parse_retention("0d"), Some(None));
        for bad in [
            "",
            "d",
            "90",
            "-1d",
            "1.5h",
            "90 d",
            "1w",
            "90D",
            "+5s",
            "1d2h",
            "36501d",
            "99999999999999999999s",
            "forever",
            "0x10s",
        ] {
            assert_eq!(parse_retention(bad), None, "{bad:?} accepted");
        }
        let c = cfg(&[], &[]).expect("defaults");
        assert_eq!(c.task_retention, s(90 * 86_400).flatten());
        assert_eq!(c.event_retention, s(90 * 86_400).flatten());
        let c = cfg(&[("TASK_RETENTION", "0"), ("EVENT_RETENTION", "12h")], &[]).expect("set");
        assert_eq!(c.task_retention, None);
        assert_eq!(c.event_retention, Some(Duration::from_secs(43_200)));
        assert!(c.render().contains("EVENT_RETENTION"));
        let e = cfg(&[("EVENT_RETENTION", "1w")], &[]).unwrap_err();
        assert!(
            e.0.starts_with("invalid EVENT_RETENTION value \"1w\""),
            "{}",
            e.0
        );
        let e = cfg(&[("TASK_RETENTION", "ninety")], &[]).unwrap_err();
        assert!(
            e.0.starts_with("invalid TASK_RETENTION value \"ninety\""),
            "{}",
            e.0
        );
    }
}
