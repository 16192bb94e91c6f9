//! `DATABASE_URL` (SPEC §10): `postgres://user[:password]@host[:port]/db[?sslmode=…
//! &sslrootcert=FILE]`, parsed by hand because `sslmode=verify-full` and `sslrootcert`
//! are libpq's words that the `postgres` crate does not know. The dead-peer detection
//! (`tcp_user_timeout`, `keepalives*`, see `Liveness`) takes libpq's names and units
//! too, so the same URL means the same to `psql`. The password is kept
//! only inside `PgUrl` and never printed: `redacted()` is what `config` and errors show.

use std::path::PathBuf;

/// libpq's `sslmode`s that we support.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    /// Plain TCP.
    Disable,
    /// TLS when the server offers it, unverified (libpq's default).
    Prefer,
    /// TLS always; the certificate is verified only against `sslrootcert` if given.
    Require,
    /// TLS with the chain and the host name verified.
    VerifyFull,
}

/// A parsed `DATABASE_URL`.
#[derive(Clone, PartialEq, Eq)]
pub struct PgUrl {
    pub user: String,
    pub password: Option<String>,
    /// A host name, an IP literal, or (from `?host=/dir`) a Unix socket directory.
    pub host: String,
    pub port: u16,
    pub dbname: String,
    pub sslmode: SslMode,
    pub sslrootcert: Option<PathBuf>,
    pub connect_timeout_secs: u64,
    pub liveness: Liveness,
}

/// How soon a TCP connection to a peer that went silent (a network cut: packets
/// dropped, no RST) fails instead of blocking a worker until the kernel gives up
/// (~15 min of retransmissions, or 2 h + 11 min of default keepalives). libpq's
/// parameters, names and units. 0 sets nothing: the kernel's default (for
/// `keepalives_idle` the driver's, 2 h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Liveness {
    /// `tcp_user_timeout` (ms): data sent and not acknowledged for this long fails the
    /// connection; with keepalives on, so do unanswered probes after this long
    /// without hearing from the peer (Linux `TCP_USER_TIMEOUT`).
    pub tcp_user_timeout_ms: u64,
    /// `keepalives` (0 or 1).
    pub keepalives: bool,
    /// `keepalives_idle` (s): silence before the first probe.
    pub keepalives_idle_secs: u64,
    /// `keepalives_interval` (s): between probes.
    pub keepalives_interval_secs: u64,
    /// `keepalives_count`: probes unanswered before the connection fails (where the
    /// kernel has no `TCP_USER_TIMEOUT`; with it, that timeout decides).
    pub keepalives_count: u32,
}

impl Default for Liveness {
    /// A peer gone silent is noticed in about 10 s, whether a statement is on its way
    /// (unacknowledged) or the connection waits for an answer (keepalives after 5 s
    /// of silence, every 2 s; failing once 10 s pass without a word). A server that is
    /// alive but slow (a lock wait, up to `statement_timeout`) answers the probes from
    /// its kernel and is not cut off.
    fn default() -> Liveness {
        Liveness {
            tcp_user_timeout_ms: 10_000,
            keepalives: true,
            keepalives_idle_secs: 5,
            keepalives_interval_secs: 2,
            keepalives_count: 3,
        }
    }
}

/// Never shows the password, not even in `{:?}`.
impl std::fmt::Debug for PgUrl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.redacted())
    }
}

fn decode(s: &str) -> Result<String, String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("a bad %-escape")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a %-escape that is not UTF-8".to_string())
}

impl PgUrl {
    /// Parses a `postgres://` or `postgresql://` URL. The error never holds the password.
    pub fn parse(s: &str) -> Result<PgUrl, String> {
        let rest = s
            .strip_prefix("postgres://")
            .or_else(|| s.strip_prefix("postgresql://"))
            .ok_or("a URL starting with postgres://")?;
        let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
        let (auth_host, db) = main.split_once('/').ok_or("a /database after the host")?;
        let (auth, hostport) = auth_host.rsplit_once('@').unwrap_or(("", auth_host));
        let (user, password) = match auth.split_once(':') {
            Some((u, p)) => (decode(u)?, Some(decode(p)?)),
            None => (decode(auth)?, None),
        };
        let (mut host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or("a closing ] after an IPv6 host")?;
            (h.to_string(), after.strip_prefix(':'))
        } else {
            match hostport.split_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        let port = match port {
            None | Some("") => 5432,
            Some(p) => p.parse().map_err(|_| "a port from 1 to 65535")?,
        };
        let mut url = PgUrl {
            user: if user.is_empty() {
                "postgres".into()
            } else {
                user
            },
            password,
            host: String::new(),
            port,
            dbname: decode(db)?,
            sslmode: SslMode::Prefer,
            sslrootcert: None,
            connect_timeout_secs: 5,
            liveness: Liveness::default(),
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = decode(v)?;
            match k {
                "sslmode" => {
                    url.sslmode = match v.as_str() {
                        "disable" => SslMode::Disable,
                        "prefer" => SslMode::Prefer,
                        "require" => SslMode::Require,
                        "verify-full" => SslMode::VerifyFull,
                        _ => return Err("sslmode disable, prefer, require or verify-full".into()),
                    }
                }
                "sslrootcert" => url.sslrootcert = Some(PathBuf::from(v)),
                "host" => host = v,
                "connect_timeout" => {
                    url.connect_timeout_secs =
                        v.parse().map_err(|_| "connect_timeout in seconds")?
                }
                "tcp_user_timeout" => {
                    url.liveness.tcp_user_timeout_ms =
                        v.parse().map_err(|_| "tcp_user_timeout in milliseconds")?
                }
                "keepalives" => {
                    url.liveness.keepalives = match v.as_str() {
                        "0" => false,
                        "1" => true,
                        _ => return Err("keepalives 0 or 1".into()),
                    }
                }
                "keepalives_idle" => {
                    url.liveness.keepalives_idle_secs =
                        v.parse().map_err(|_| "keepalives_idle in seconds")?
                }
                "keepalives_interval" => {
                    url.liveness.keepalives_interval_secs =
                        v.parse().map_err(|_| "keepalives_interval in seconds")?
                }
                "keepalives_count" => {
                    url.liveness.keepalives_count = v
                        .parse()
                        .map_err(|_| "keepalives_count a number of probes")?
                }
                "application_name" => {}
                _ => {
                    return Err(format!(
                        "only the parameters sslmode, sslrootcert, host, connect_timeout, \
                         tcp_user_timeout, keepalives, keepalives_idle, keepalives_interval, \
                         keepalives_count and application_name (not {k:?})"
                    ))
                }
            }
        }
        if host.is_empty() {
            host = "localhost".into();
        }
        url.host = host;
        if url.dbname.is_empty() {
            return Err("a database name after the /".into());
        }
        Ok(url)
    }

    /// The URL as `config` and logs show it: the password replaced by `***`.
    pub fn redacted(&self) -> String {
        let pw = if self.password.is_some() { ":***" } else { "" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        let mut s = format!(
            "postgres://{}{pw}@{host}:{}/{}",
            self.user, self.port, self.dbname
        );
        let mode = match self.sslmode {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyFull => "verify-full",
        };
        s.push_str("?sslmode=");
        s.push_str(mode);
        if let Some(c) = &self.sslrootcert {
            s.push_str(&format!("&sslrootcert={}", c.display()));
        }
        s
    }

    /// A Unix socket directory rather than a TCP host.
    pub fn is_socket(&self) -> bool {
        self.host.starts_with('/')
    }
}

/// Hides the password of anything that looks like a `DATABASE_URL` (for values that
/// could not be parsed, so `PgUrl::redacted` is not available).
/// Of the query, only the parameters this parser knows show their values: libpq also
/// takes `password=` (and other secrets) as parameters, and such a URL is refused
/// right here, so an unknown parameter shows as `name=***`.
pub fn redact_raw(s: &str) -> String {
    const SHOWN: [&str; 10] = [
        "sslmode",
        "sslrootcert",
        "host",
        "connect_timeout",
        "tcp_user_timeout",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "application_name",
    ];
    let without_query = |part: &str| match part.split_once('?') {
        Some((before, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|p| match p.split_once('=') {
                    Some((k, v)) if SHOWN.contains(&k) => format!("{k}={v}"),
                    Some((k, _)) => format!("{k}=***"),
                    None if SHOWN.contains(&p) => p.to_string(),
                    None => "***".to_string(),
                })
                .collect();
            format!("{before}?{}", params.join("&"))
        }
        None => part.to_string(),
    };
    match PgUrl::parse(s) {
        Ok(u) => u.redacted(),
        Err(_) => match s.split_once("://") {
            Some((scheme, rest)) => match rest.rsplit_once('@') {
                Some((_, host)) => format!("{scheme}://***@{}", without_query(host)),
                None => format!("{scheme}://{}", without_query(rest)),
            },
            None => "(not a URL)".to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_forms_of_spec_10() {
        let u = PgUrl::parse("postgres://app:s%40cret@db.example:6543/dash?sslmode=verify-full&sslrootcert=/etc/ca.pem")
            .expect("parses");
        assert_eq!(u.user, "app");
        assert_eq!(u.password.as_deref(), Some("s@cret"));
        assert_eq!(
            (u.host.as_str(), u.port, u.dbname.as_str()),
            ("db.example", 6543, "dash")
        );
        assert_eq!(u.sslmode, SslMode::VerifyFull);
        assert_eq!(u.sslrootcert, Some(PathBuf::from("/etc/ca.pem")));
        assert!(!u.redacted().contains("cret"));
        assert!(!format!("{u:?}").contains("cret"));
        let u = PgUrl::parse("postgresql://u@[::1]/d?sslmode=disable").expect("v6");
        assert_eq!((u.host.as_str(), u.port), ("::1", 5432));
        assert_eq!(u.redacted(), "postgres://u@[::1]:5432/d?sslmode=disable");
        let u = PgUrl::parse("postgres://u@/d?host=/run/postgresql").expect("socket");
        assert!(u.is_socket());
    }

    #[test]
    fn dead_peer_detection_defaults_to_about_ten_seconds_and_takes_libpqs_names() {
        let u = PgUrl::parse("postgres://u@h/d").expect("defaults");
        assert_eq!(u.liveness, Liveness::default());
        assert_eq!(u.liveness.tcp_user_timeout_ms, 10_000);
        assert!(u.liveness.keepalives);
        let u = PgUrl::parse(
            "postgres://u@h/d?tcp_user_timeout=2500&keepalives_idle=1&keepalives_interval=1\
             &keepalives_count=4&connect_timeout=2",
        )
        .expect("all set");
        assert_eq!(
            u.liveness,
            Liveness {
                tcp_user_timeout_ms: 2500,
                keepalives: true,
                keepalives_idle_secs: 1,
                keepalives_interval_secs: 1,
                keepalives_count: 4,
            }
        );
        assert_eq!(u.connect_timeout_secs, 2);
        let u = PgUrl::parse("postgres://u@h/d?keepalives=0&tcp_user_timeout=0").expect("off");
        assert!(!u.liveness.keepalives);
        assert_eq!(u.liveness.tcp_user_timeout_ms, 0);
        for bad in [
            "postgres://u:pw@h/d?tcp_user_timeout=10s",
            "postgres://u:pw@h/d?keepalives=yes",
            "postgres://u:pw@h/d?keepalives_idle=-1",
            "postgres://u:pw@h/d?keepalives_count=x",
        ] {
            let e = PgUrl::parse(bad).unwrap_err();
            assert!(!e.contains("pw"), "{bad}: {e}");
        }
    }

    #[test]
    fn refuses_with_a_reason_and_no_password() {
        for bad in [
            "mysql://u:pw@h/d",
            "postgres://u:pw@h:99999/d",
            "postgres://u:pw@h/d?sslmode=allow",
            "postgres://u:pw@h",
            "postgres://u:pw@h/d?sslcert=x",
        ] {
            let e = PgUrl::parse(bad).unwrap_err();
            assert!(!e.contains("pw"), "{bad}: {e}");
        }
        assert_eq!(
            redact_raw("postgres://u:pw@h:1/d?sslmode=x"),
            "postgres://***@h:1/d?sslmode=x"
        );
        // A password given as a parameter (libpq's form) is refused, and not shown.
        for url in [
            "postgres://u@h:1/d?password=QueryPW123",
            "postgres://u@h:1/d?sslmode=disable&password=QueryPW123",
            "postgres://h:1/d?password=QueryPW123",
        ] {
            assert!(PgUrl::parse(url).is_err(), "{url}");
            let shown = redact_raw(url);
            assert!(!shown.contains("QueryPW"), "{shown}");
            assert!(shown.ends_with("password=***"), "{shown}");
        }
    }
}
