//! PostgreSQL administration the common interface does not carry: `backup` runs
//! `pg_dump --format=custom` (SPEC §7, §10). The connection travels in `PG*`
//! environment variables, never on the command line, so the password is not visible
//! in `ps` and never lands in our messages.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::url::{PgUrl, SslMode};
use crate::exit::{command_error, EX_UNAVAILABLE};

command_error!(
    /// `pg_dump` could not run or failed.
    DumpError
);

/// `pg_dump` from PATH, else the newest `/usr/lib/postgresql/*/bin/pg_dump` (Debian
/// installs versioned binaries there; pg_dump must be at least the server's version).
fn pg_dump() -> PathBuf {
    let on_path = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("pg_dump"))
            .find(|f| f.is_file())
    });
    if let Some(p) = on_path {
        return p;
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin/pg_dump");
            bin.is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, p)| p)
        .unwrap_or_else(|| PathBuf::from("pg_dump"))
}

/// Dumps the database of `url` into the new file `out`.
pub fn dump(url: &PgUrl, out: &Path) -> Result<(), DumpError> {
    let mut cmd = Command::new(pg_dump());
    cmd.arg("--format=custom")
        .arg("--no-password")
        .arg("--file")
        .arg(out)
        .env("PGHOST", &url.host)
        .env("PGPORT", url.port.to_string())
        .env("PGUSER", &url.user)
        .env("PGDATABASE", &url.dbname)
        .env("PGAPPNAME", "dashboard-backend backup")
        .env(
            "PGSSLMODE",
            match url.sslmode {
                SslMode::Disable => "disable",
                SslMode::Prefer => "prefer",
                SslMode::Require => "require",
                SslMode::VerifyFull => "verify-full",
            },
        )
        .env_remove("PGPASSWORD");
    if let Some(pw) = &url.password {
        cmd.env("PGPASSWORD", pw);
    }
    if let Some(ca) = &url.sslrootcert {
        cmd.env("PGSSLROOTCERT", ca);
    }
    let output = cmd.output().map_err(|e| {
        DumpError::new(
            EX_UNAVAILABLE,
            format!(
                "cannot run pg_dump ({e}); install the PostgreSQL client tools (postgresql-client)"
            ),
        )
    })?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let why = stderr.lines().next().unwrap_or("no message").trim();
        let _ = std::fs::remove_file(out);
        return Err(DumpError::new(
            EX_UNAVAILABLE,
            format!("pg_dump of {} failed: {why}", url.redacted()),
        ));
    }
    Ok(())
}
