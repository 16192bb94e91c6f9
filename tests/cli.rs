use crate::harness::{self, cli, cli_env, temp_dir, TestServer};

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn version_and_help() {
    let out = cli_env(&["--version"], &[]);
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout).trim(),
        format!("dashboard-backend {}", env!("CARGO_PKG_VERSION"))
    );
    let help = text(&cli_env(&["--help"], &[]).stdout);
    for word in [
        "migrate",
        "apikey",
        "PORT",
        "DATABASE_PATH",
        "HEALTH_DB_RESPONSE_TIME_THRESHOLD",
    ] {
        assert!(help.contains(word), "{word} missing from --help");
    }
}

#[test]
fn usage_and_config_errors_have_sysexits_codes() {
    let out = cli_env(&["frobnicate"], &[]);
    assert_eq!(out.status.code(), Some(64));
    assert!(text(&out.stderr).starts_with("dashboard-backend: unknown command"));
    let out = cli_env(&["serve"], &[("PORT", "eighty")]);
    assert_eq!(out.status.code(), Some(78));
    assert_eq!(
        text(&out.stderr).trim(),
        "dashboard-backend: invalid PORT value \"eighty\": expected an integer from 0 to 65535"
    );
    let dir = temp_dir("cfg");
    let db = dir.join("never.db");
    let out = cli_env(
        &["--log-level", "loud"],
        &[("DATABASE_PATH", db.to_str().expect("p"))],
    );
    assert_eq!(out.status.code(), Some(78));
    assert!(
        !db.exists(),
        "nothing is opened before the configuration is valid"
    );
    assert_eq!(cli_env(&["apikey", "create"], &[]).status.code(), Some(64));
}

#[test]
fn config_prints_values_and_their_sources() {
    let out = cli_env(&["config", "--port", "9001"], &[("LOG_LEVEL", "debug")]);
    assert!(out.status.success());
    let t = text(&out.stdout);
    let line = |name: &str| {
        t.lines()
            .find(|l| l.starts_with(name))
            .unwrap_or("")
            .to_string()
    };
    assert!(
        line("PORT").contains("9001") && line("PORT").contains("flag"),
        "{t}"
    );
    assert!(line("LOG_LEVEL").contains("debug") && line("LOG_LEVEL").contains("environment"));
    assert!(line("HOST").contains("0.0.0.0") && line("HOST").contains("default"));
}

#[test]
fn migrate_and_status() {
    let dir = temp_dir("mig");
    let db = dir.join("m.db");
    let st = text(&cli(&db, &["migrate", "status"]).stdout);
    assert!(st.contains("pending"), "{st}");
    let out = cli(&db, &["migrate"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Each engine has its own migrations (store/sqlite/, store/postgres/).
    let (version, names): (&str, &[&str]) = if harness::postgres() {
        (
            "schema version 6",
            &[
                "init",
                "task_counts",
                "queue",
                "retention",
                "count_shards",
                "substate_counts",
            ],
        )
    } else {
        (
            "schema version 7",
            &[
                "init",
                "partial_indexes",
                "task_counts",
                "completion_buckets",
                "queue",
                "prune_indexes",
                "substate_counts",
            ],
        )
    };
    assert!(text(&out.stdout).contains(version), "{}", text(&out.stdout));
    let st = text(&cli(&db, &["migrate", "status"]).stdout);
    assert!(!st.contains("pending"), "{st}");
    for name in names {
        assert!(st.contains(name), "{name}: {st}");
    }
}

#[test]
fn a_newer_schema_or_a_foreign_file_is_refused_untouched() {
    if harness::sqlite_only("plants SQLite files (user_version 99, not a database)") {
        return;
    }
    let dir = temp_dir("future");
    let db = dir.join("f.db");
    {
        let c = rusqlite::Connection::open(&db).expect("open");
        c.execute_batch("CREATE TABLE x(a); PRAGMA user_version = 99;")
            .expect("setup");
    }
    let before = std::fs::read(&db).expect("read");
    let out = cli(&db, &["migrate"]);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("schema version 99"),
        "{}",
        text(&out.stderr)
    );
    let serve = crate::harness::cli_env(
        &["serve"],
        &[("DATABASE_PATH", db.to_str().expect("p")), ("PORT", "0")],
    );
    assert_eq!(serve.status.code(), Some(69));
    assert_eq!(
        std::fs::read(&db).expect("read"),
        before,
        "the file was not touched"
    );
    assert!(!dir.join("f.db-wal").exists());

    let junk = dir.join("junk.db");
    std::fs::write(
        &junk,
        b"this is not a database at all, just text that is long enough to be a header",
    )
    .expect("w");
    let out = cli(&junk, &["migrate"]);
    assert_eq!(out.status.code(), Some(69));
    assert!(
        text(&out.stderr).contains("not an SQLite database"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn server_exits_zero_on_sigterm_and_leaves_a_checkpointed_database() {
    if harness::sqlite_only("checks the WAL is checkpointed and reads the SQLite file") {
        return;
    }
    let s = TestServer::start();
    s.project("persist");
    let db = s.db.clone();
    let status = s.stop();
    assert!(status.success(), "{status:?}");
    let wal = std::path::PathBuf::from(format!("{}-wal", db.display()));
    assert!(
        std::fs::metadata(&wal)
            .map(|m| m.len() == 0)
            .unwrap_or(true),
        "WAL truncated"
    );
    let c = rusqlite::Connection::open(&db).expect("open");
    let n: i64 = c
        .query_row("SELECT count(*) FROM projects", [], |r| r.get(0))
        .expect("q");
    assert_eq!(n, 1);
}

/// SPEC §7, §10: with DATABASE_URL set, `restore` and `db` refuse with EX_USAGE and
/// name the PostgreSQL tool to use instead, before connecting; and no command that
/// fails to reach the database prints its password (issue #14).
#[test]
fn postgres_refuses_sqlite_maintenance_and_never_prints_the_password() {
    let secret = "s3cret-Pa55word";
    // Port 1 on loopback: nothing listens, so every connection attempt fails fast.
    let url = format!("postgres://app:{secret}@127.0.0.1:1/dashboard?connect_timeout=2");
    let dir = temp_dir("pgrefuse");
    let backups = dir.join("backups");
    let env = [
        ("DATABASE_URL", url.as_str()),
        ("BACKUP_DIR", backups.to_str().expect("utf-8")),
    ];
    for (args, tool) in [
        (&["restore", "some.db"][..], "pg_restore"),
        (&["restore", "some.db", "--force"][..], "pg_restore"),
        (&["db", "integrity"][..], "amcheck"),
        (&["db", "vacuum"][..], "vacuumdb"),
        (&["db", "analyze"][..], "ANALYZE"),
    ] {
        let out = cli_env(args, &env);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert!(
            err.contains("SQLite database only") && err.contains(tool),
            "{args:?}: {err}"
        );
        assert!(
            !err.contains(secret) && !text(&out.stdout).contains(secret),
            "{args:?}: {err}"
        );
    }
    for args in [
        &["migrate", "status"][..],
        &["migrate"][..],
        &["backup"][..],
    ] {
        let out = cli_env(args, &env);
        let (o, e) = (text(&out.stdout), text(&out.stderr));
        assert!(
            !out.status.success(),
            "{args:?} reached no database: {o}{e}"
        );
        assert!(!e.is_empty(), "{args:?} says why it failed");
        assert!(
            !o.contains(secret) && !e.contains(secret),
            "{args:?}: {o}{e}"
        );
    }
    // A server whose database is down keeps retrying and logs why, without it.
    let child = std::process::Command::new(harness::BIN)
        .env_clear()
        .envs(env)
        .env("PORT", "0")
        .env("HOST", "127.0.0.1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(std::time::Duration::from_secs(3));
    harness::signal(child.id(), "KILL");
    let out = child.wait_with_output().expect("output");
    let (o, e) = (text(&out.stdout), text(&out.stderr));
    assert!(
        e.contains("cannot connect to PostgreSQL"),
        "the server says why: {e}"
    );
    assert!(!o.contains(secret) && !e.contains(secret), "serve: {o}{e}");
}
