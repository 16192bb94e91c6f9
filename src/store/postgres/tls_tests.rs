//! TLS against a real server (issue #14): a throwaway cluster with `ssl = on` and a
//! certificate from a throwaway CA made with `openssl`, for `127.0.0.1` only. Each
//! `sslmode` must do what libpq's does: `disable` talks in the clear, `require`
//! encrypts without verifying, `verify-full` encrypts and checks the chain against
//! `sslrootcert` and the host name against the certificate, refusing otherwise.

use std::path::Path;
use std::process::Command;

use super::connect::Connector;
use super::tests::Cluster;
use super::url::PgUrl;

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl (the package openssl)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (`name.crt`, `name.key`) in `dir`.
fn make_ca(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name}"),
            "-keyout",
            &format!("{name}.key"),
            "-out",
            &format!("{name}.crt"),
        ],
    );
}

/// Whether the session `c` reaches the server over TLS (`pg_stat_ssl`).
fn encrypted(url: &str) -> Result<bool, String> {
    let url = PgUrl::parse(url).map_err(|e| format!("parse: {e}"))?;
    let mut c = Connector::new(&url)
        .and_then(|c| c.connect())
        .map_err(|e| e.to_string())?;
    let row = c
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[test]
fn each_sslmode_does_what_libpq_does_against_a_server_with_tls() {
    let Some(c) = Cluster::start() else { return };
    let dir = c.dir().join("tls");
    std::fs::create_dir_all(&dir).expect("mkdir");
    make_ca(&dir, "ca");
    make_ca(&dir, "other");
    // The server's certificate, signed by "ca", names 127.0.0.1 and nothing else.
    std::fs::write(dir.join("san.cnf"), "subjectAltName = IP:127.0.0.1\n").expect("cnf");
    openssl(
        &dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
    );
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "san.cnf",
            "-out",
            "server.crt",
        ],
    );
    c.enable_ssl(&dir.join("server.crt"), &dir.join("server.key"));
    let port = c.port();
    let url =
        |host: &str, query: &str| format!("postgres://postgres@{host}:{port}/postgres?{query}");
    let ca = dir.join("ca.crt");
    let other = dir.join("other.crt");
    let (ca, other) = (ca.display(), other.display());

    assert_eq!(encrypted(&url("127.0.0.1", "sslmode=disable")), Ok(false));
    assert_eq!(encrypted(&url("127.0.0.1", "sslmode=require")), Ok(true));
    // require checks nothing without a root: a certificate for another name is fine.
    assert_eq!(encrypted(&url("localhost", "sslmode=require")), Ok(true));
    assert_eq!(
        encrypted(&url(
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={ca}")
        )),
        Ok(true)
    );
    // verify-full refuses a chain from another CA, a name the certificate lacks, and
    // (with no sslrootcert) a CA outside the web PKI.
    for (host, query, why) in [
        (
            "127.0.0.1",
            format!("sslmode=verify-full&sslrootcert={other}"),
            "another CA",
        ),
        (
            "localhost",
            format!("sslmode=verify-full&sslrootcert={ca}"),
            "another name",
        ),
        (
            "127.0.0.1",
            "sslmode=verify-full".to_string(),
            "no root given",
        ),
    ] {
        let got = encrypted(&url(host, &query));
        assert!(got.is_err(), "verify-full accepted {why}: {got:?}");
    }
}
