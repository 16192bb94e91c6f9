//! Opening one PostgreSQL connection from a `PgUrl`: TLS through rustls (ring
//! provider, roots from webpki-roots or `sslrootcert`) so the binary stays static and
//! links no OpenSSL (SPEC §1, §10), and the session settings every connection gets.
//!
//! A network cut (packets dropped, no RST) must not hold a worker until the kernel
//! gives up: the session's `statement_timeout` is the server's and cannot help when
//! the server is unreachable, and the blocking client has no per-call timeout. So
//! the socket itself is told (`url::Liveness`): `TCP_USER_TIMEOUT` fails a
//! connection whose data stays unacknowledged, and keepalives probe a connection
//! that waits for an answer. Either way the next read or write fails, the store maps
//! that to `Unavailable` (503 + Retry-After) and the pool drops the connection.

use std::sync::Arc;
use std::time::Duration;

use postgres::config::SslMode as PgSslMode;
use postgres::Client;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::url::{Liveness, PgUrl, SslMode};
use crate::store::{Result, StoreError};

/// Every connection: a lock wait as long as SQLite's busy timeout (then `Busy`), a
/// bound on any one statement, no session left idle inside a transaction, and no JIT:
/// every statement here takes well under a millisecond, and a plan whose cost estimate
/// crosses `jit_above_cost` (as a claim's can on a table not yet analyzed) spent
/// 600 ms compiling before it ran.
const SESSION: &str = "SET lock_timeout = '5s'; SET statement_timeout = '60s'; \
     SET idle_in_transaction_session_timeout = '5s'; SET TIME ZONE 'UTC'; SET jit = off";

/// What `Pool` opens connections with.
pub struct Connector {
    config: postgres::Config,
    tls: MakeRustlsConnect,
}

impl Connector {
    /// Builds the driver config and TLS setup; fails on an unreadable `sslrootcert`.
    pub fn new(url: &PgUrl) -> Result<Connector> {
        let mut config = postgres::Config::new();
        config
            .user(&url.user)
            .dbname(&url.dbname)
            .port(url.port)
            .application_name("dashboard-backend")
            .connect_timeout(Duration::from_secs(url.connect_timeout_secs.max(1)));
        liveness(&mut config, &url.liveness);
        if url.is_socket() {
            config.host_path(&url.host);
        } else {
            config.host(&url.host);
        }
        if let Some(pw) = &url.password {
            config.password(pw);
        }
        config.ssl_mode(match url.sslmode {
            SslMode::Disable => PgSslMode::Disable,
            SslMode::Prefer => PgSslMode::Prefer,
            SslMode::Require | SslMode::VerifyFull => PgSslMode::Require,
        });
        Ok(Connector {
            config,
            tls: MakeRustlsConnect::new(tls_config(url)?),
        })
    }

    /// Opens and sets up one connection. The error names no password: the driver's
    /// messages carry host, user and the server's reason only.
    pub fn connect(&self) -> Result<Client> {
        let mut client = self.config.connect(self.tls.clone()).map_err(|e| {
            // The driver's top line is only "error connecting to server": add the
            // cause (refused, timed out, authentication failed), never the URL.
            let cause = std::error::Error::source(&e)
                .map(|c| format!(" ({c})"))
                .unwrap_or_default();
            StoreError::Unavailable(format!("cannot connect to PostgreSQL: {e}{cause}"))
        })?;
        client.batch_execute(SESSION)?;
        Ok(client)
    }
}

/// The socket options that notice a dead peer (ignored on a Unix socket).
fn liveness(config: &mut postgres::Config, l: &Liveness) {
    if l.tcp_user_timeout_ms > 0 {
        config.tcp_user_timeout(Duration::from_millis(l.tcp_user_timeout_ms));
    }
    config.keepalives(l.keepalives);
    if l.keepalives_idle_secs > 0 {
        config.keepalives_idle(Duration::from_secs(l.keepalives_idle_secs));
    }
    if l.keepalives_interval_secs > 0 {
        config.keepalives_interval(Duration::from_secs(l.keepalives_interval_secs));
    }
    if l.keepalives_count > 0 {
        config.keepalives_retries(l.keepalives_count);
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// verify-full: chain and host name against `sslrootcert` or the web PKI roots.
/// prefer/require: encrypted; verified against `sslrootcert` when one is given (as
/// libpq does), otherwise not verified at all (libpq's meaning of `require`).
fn tls_config(url: &PgUrl) -> Result<ClientConfig> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| StoreError::Other(format!("TLS setup: {e}")))?;
    let roots = match &url.sslrootcert {
        Some(path) => Some(load_roots(path)?),
        None if url.sslmode == SslMode::VerifyFull => {
            let mut roots = RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            Some(roots)
        }
        None => None,
    };
    Ok(match roots {
        Some(roots) => builder.with_root_certificates(roots).with_no_client_auth(),
        None => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider())))
            .with_no_client_auth(),
    })
}

fn load_roots(path: &std::path::Path) -> Result<RootCertStore> {
    use rustls::pki_types::pem::PemObject;
    let bad = |e: String| {
        StoreError::Unavailable(format!("cannot read sslrootcert {}: {e}", path.display()))
    };
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        roots
            .add(cert.map_err(|e| bad(e.to_string()))?)
            .map_err(|e| bad(e.to_string()))?;
    }
    if roots.is_empty() {
        return Err(bad("no certificate in the file".into()));
    }
    Ok(roots)
}

/// `sslmode=require` without `sslrootcert`: encryption without authentication, as
/// libpq does it. Signatures are still checked, so the session key is the server's.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> std::result::Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> std::result::Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_url_s_liveness_reaches_the_driver() {
        let url = PgUrl::parse("postgres://u@h/d?sslmode=disable").expect("url");
        let c = Connector::new(&url).expect("connector");
        assert_eq!(
            c.config.get_tcp_user_timeout(),
            Some(&Duration::from_secs(10))
        );
        assert!(c.config.get_keepalives());
        assert_eq!(c.config.get_keepalives_idle(), Duration::from_secs(5));
        assert_eq!(
            c.config.get_keepalives_interval(),
            Some(Duration::from_secs(2))
        );
        assert_eq!(c.config.get_keepalives_retries(), Some(3));

        let url = PgUrl::parse("postgres://u@h/d?sslmode=disable&tcp_user_timeout=0&keepalives=0")
            .expect("url");
        let c = Connector::new(&url).expect("connector");
        assert_eq!(c.config.get_tcp_user_timeout(), None);
        assert!(!c.config.get_keepalives());
    }
}
