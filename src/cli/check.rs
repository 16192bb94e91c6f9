//! `check [--url URL]`: an HTTP probe of `/health/ready` for scripts and container
//! health checks. One line of output; exit 0 when ready, 1 when not.

use std::net::ToSocketAddrs;
use std::time::Duration;

use crate::config::Config;
use crate::exit::{command_error, EX_NOT_READY};

command_error!(
    /// Why `check` failed.
    CheckError
);

const TIMEOUT: Duration = Duration::from_secs(5);

/// `http://host:port[/path]` → (host, port, path); the path defaults to /health/ready.
fn split_url(url: &str) -> Option<(String, u16, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], rest[i..].to_string()),
        None => (rest, "/health/ready".to_string()),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => (h, p.parse().ok()?),
        _ => (authority, 80),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    (!host.is_empty()).then(|| (host.to_string(), port, path))
}

/// The URL of our own readiness endpoint from HOST and PORT.
fn default_url(config: &Config) -> String {
    let host = match config.host.as_str() {
        "0.0.0.0" => "127.0.0.1".to_string(),
        "::" | "[::]" => "[::1]".to_string(),
        h if h.contains(':') && !h.starts_with('[') => format!("[{h}]"),
        h => h.to_string(),
    };
    format!("http://{host}:{}/health/ready", config.port)
}

fn probe(host: &str, port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let addr = (host, port)
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| std::io::Error::other("no address"))?;
    crate::http::probe::get(
        addr,
        host,
        path,
        &[("User-Agent", "dashboard-backend-check")],
        TIMEOUT,
    )
}

pub fn run(config: &Config, url: Option<&str>) -> Result<(), CheckError> {
    let url = url
        .map(str::to_string)
        .unwrap_or_else(|| default_url(config));
    let (host, port, path) = split_url(&url).ok_or_else(|| {
        CheckError::usage(format!(
            "--url must look like http://host:port/path, not {url:?}"
        ))
    })?;
    match probe(&host, port, &path) {
        Ok((200, _)) => {
            println!("ready: {url} answered 200");
            Ok(())
        }
        Ok((code, body)) => Err(CheckError::new(
            EX_NOT_READY,
            format!("not ready: {url} answered {code} {body}"),
        )),
        Err(e) => Err(CheckError::new(
            EX_NOT_READY,
            format!("not ready: {url}: {e}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::split_url;

    #[test]
    fn urls() {
        assert_eq!(
            split_url("http://127.0.0.1:3000"),
            Some(("127.0.0.1".into(), 3000, "/health/ready".into()))
        );
        assert_eq!(
            split_url("http://[::1]:8080/health"),
            Some(("::1".into(), 8080, "/health".into()))
        );
        assert_eq!(
            split_url("http://example"),
            Some(("example".into(), 80, "/health/ready".into()))
        );
        assert_eq!(split_url("ftp://x"), None);
    }
}
