//! Logging: one JSON object a line on stderr (or `pretty` for humans), the optional
//! access log file, and the SIGHUP reload of both (level re-read, file reopened).
//!
//! env_logger does the plumbing; this file only owns the line format. Structured
//! fields travel as `log` key-values, so a request line is real JSON, not a message
//! with JSON inside.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

use log::kv::{Key, Value as KvValue, VisitSource};
use serde_json::{Map, Value};

use crate::config::LogFormat;

struct Collect<'a>(&'a mut Map<String, Value>);

impl<'kvs> VisitSource<'kvs> for Collect<'_> {
    fn visit_pair(&mut self, key: Key<'kvs>, value: KvValue<'kvs>) -> Result<(), log::kv::Error> {
        let v = if let Some(n) = value.to_u64() {
            Value::from(n)
        } else if let Some(n) = value.to_i64() {
            Value::from(n)
        } else if let Some(f) = value.to_f64() {
            Value::from(f)
        } else if let Some(b) = value.to_bool() {
            Value::from(b)
        } else {
            Value::from(value.to_string())
        };
        self.0.insert(key.as_str().to_string(), v);
        Ok(())
    }
}

/// Installs the logger. The env_logger filter lets everything through; the level is
/// `log::set_max_level`, so SIGHUP can change it without rebuilding the logger.
pub fn init(format: LogFormat, level: log::LevelFilter) {
    let mut b = env_logger::Builder::new();
    b.filter_level(log::LevelFilter::Trace);
    b.target(env_logger::Target::Stderr);
    match format {
        LogFormat::Json => b.format(|buf, record| {
            let mut m = Map::new();
            m.insert("ts".into(), crate::clock::now_rfc3339().into());
            m.insert(
                "level".into(),
                record.level().as_str().to_ascii_lowercase().into(),
            );
            m.insert("target".into(), record.target().into());
            m.insert("msg".into(), record.args().to_string().into());
            let _ = record.key_values().visit(&mut Collect(&mut m));
            writeln!(buf, "{}", Value::Object(m))
        }),
        LogFormat::Pretty => b.format(|buf, record| {
            let mut m = Map::new();
            let _ = record.key_values().visit(&mut Collect(&mut m));
            let kv: String = m.iter().map(|(k, v)| format!(" {k}={v}")).collect();
            writeln!(
                buf,
                "{} {:<5} {}: {}{}",
                crate::clock::now_rfc3339(),
                record.level(),
                record.target(),
                record.args(),
                kv
            )
        }),
    };
    // A second init (tests calling twice) is harmless.
    let _ = b.try_init();
    log::set_max_level(level);
}

/// The access log: one JSON line per request, reopened on SIGHUP for logrotate.
pub struct AccessLog {
    path: Option<PathBuf>,
    file: Mutex<Option<File>>,
}

impl AccessLog {
    /// Opens `path` for appending (creating it 0640); `None` disables the log.
    pub fn open(path: Option<PathBuf>) -> std::io::Result<AccessLog> {
        let file = match &path {
            Some(p) => Some(open_append(p)?),
            None => None,
        };
        Ok(AccessLog {
            path,
            file: Mutex::new(file),
        })
    }

    pub fn enabled(&self) -> bool {
        self.path.is_some()
    }

    /// Writes one line (the caller builds it); errors are ignored so logging never
    /// fails a request.
    pub fn write(&self, line: &Value) {
        let mut guard = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(f) = guard.as_mut() {
            let mut buf = line.to_string();
            buf.push('\n');
            let _ = f.write_all(buf.as_bytes());
        }
    }

    /// Reopens the file at its path (after logrotate renamed it).
    pub fn reopen(&self) -> std::io::Result<()> {
        let Some(p) = &self.path else {
            return Ok(());
        };
        let f = open_append(p)?;
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = Some(f);
        Ok(())
    }
}

fn open_append(p: &PathBuf) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o640)
        .open(p)
}
