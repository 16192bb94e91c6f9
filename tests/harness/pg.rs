//! `TEST_BACKEND=postgres`: a throwaway PostgreSQL cluster for one run of the test
//! binary (issue #14), and one database in it per test database path.
//!
//! Lifecycle: the first test that needs a database starts the cluster (`initdb` and
//! `pg_ctl start`, as the `postgres` user when we are root, since initdb refuses root)
//! in `target/tmp/pg-<pid>/` (`/tmp/dashboard-pg-<pid>/` when the postgres user cannot
//! reach that), on a free loopback port and a Unix socket in that directory. Beside it runs a watcher, `sh` in its own session, blocked reading a pipe
//! whose only writer is this process: when the pipe closes it stops the cluster with
//! `pg_ctl -m immediate stop` and deletes the data directory. The pipe closes at a
//! normal exit (an `atexit` hook closes it and waits for the watcher, so no postmaster
//! outlives `cargo test`) and equally when the process dies of a signal or a panic
//! the hook never sees (the kernel closes it).

use std::collections::HashMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// True with `TEST_BACKEND=postgres`; unset (or `sqlite`) is the SQLite default, and
/// anything else is a typo that must not silently run the SQLite suite.
pub fn enabled() -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    *ON.get_or_init(|| match std::env::var("TEST_BACKEND").as_deref() {
        Err(_) | Ok("") | Ok("sqlite") => false,
        Ok("postgres") => true,
        Ok(other) => panic!("TEST_BACKEND={other:?}: expected \"sqlite\" or \"postgres\""),
    })
}

struct Cluster {
    port: u16,
    /// Test database path → the PostgreSQL database standing in for it.
    dbs: Mutex<HashMap<PathBuf, String>>,
}

/// The cluster, started at first use; a failed start is remembered (every test then
/// fails with the same message instead of each trying initdb again).
static CLUSTER: OnceLock<Result<Cluster, String>> = OnceLock::new();
/// The watcher that stops the cluster when its stdin (our pipe) closes.
static WATCHER: Mutex<Option<Child>> = Mutex::new(None);

/// `postgres://…` for the test database at `db`: the database is created on first use
/// of that path and reused after (a restart on the same data finds the same rows).
pub fn database_url(db: &Path) -> String {
    let c = match CLUSTER.get_or_init(start) {
        Ok(c) => c,
        Err(e) => panic!("TEST_BACKEND=postgres: {e}"),
    };
    let mut dbs = c.dbs.lock().unwrap_or_else(|p| p.into_inner());
    let n = dbs.len();
    let name = match dbs.get(db) {
        Some(name) => name.clone(),
        None => {
            let name = format!("t_{n}");
            create_database(c.port, &name);
            dbs.insert(db.to_path_buf(), name.clone());
            name
        }
    };
    format!(
        "postgres://postgres@127.0.0.1:{}/{name}?sslmode=disable",
        c.port
    )
}

fn create_database(port: u16, name: &str) {
    psql(port, &format!("CREATE DATABASE {name}"));
}

/// The name of the PostgreSQL database standing in for the test database at `db`
/// (created on first use, as `database_url`).
pub fn database_name(db: &Path) -> String {
    let url = database_url(db);
    let tail = url.rsplit('/').next().unwrap_or_default();
    tail.split('?').next().unwrap_or_default().to_string()
}

/// Runs `sql` as the superuser on the cluster's `postgres` database (the tests'
/// administration: take a database away, give it back).
pub fn admin(sql: &str) {
    let c = match CLUSTER.get_or_init(start) {
        Ok(c) => c,
        Err(e) => panic!("TEST_BACKEND=postgres: {e}"),
    };
    psql(c.port, sql);
}

fn psql(port: u16, sql: &str) {
    let out = Command::new(bindir().join("psql"))
        .env_clear()
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1"])
        .args(["-p", &port.to_string(), "-U", "postgres", "-d", "postgres"])
        .args(["-c", sql])
        .stdin(Stdio::null())
        .output()
        .expect("run psql");
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `PG_BINDIR`, or the newest `/usr/lib/postgresql/<major>/bin` (Debian's layout).
fn bindir() -> PathBuf {
    if let Some(d) = std::env::var_os("PG_BINDIR") {
        return d.into();
    }
    let majors = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten();
    majors
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .max()
        .map(|m| PathBuf::from(format!("/usr/lib/postgresql/{m}/bin")))
        .unwrap_or_default()
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// A command run as the cluster's owner: `postgres` via runuser when we are root.
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(what: &str, cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

fn start() -> Result<Cluster, String> {
    let bin = bindir();
    if !bin.join("initdb").is_file() {
        return Err(format!(
            "no PostgreSQL server binaries in {bin:?} (apt-get install postgresql, or set \
             PG_BINDIR)"
        ));
    }
    let pid = std::process::id();
    let mut root = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("pg-{pid}"));
    make_owned_dir(&root)?;
    // The socket path is at most 107 bytes, and the postgres user must reach the
    // directory (a checkout under /root is closed to it): else the cluster goes to /tmp.
    let short = root.as_os_str().len() + "/.s.PGSQL.65535".len() < 100;
    if !short || !owner_can_write(&root) {
        let _ = std::fs::remove_dir_all(&root);
        root = std::env::temp_dir().join(format!("dashboard-pg-{pid}"));
        make_owned_dir(&root)?;
    }
    let data = root.join("data");
    let log = root.join("postgres.log");
    run(
        "initdb",
        as_owner(&bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-A", "trust", "-U", "postgres", "--no-sync"])
            .args(["-E", "UTF8", "--locale=C.UTF-8"]),
    )?;
    let mut last = String::new();
    for _ in 0..3 {
        let port = super::free_port();
        let opts = format!(
            "-k {} -c listen_addresses=127.0.0.1 -p {port} -c max_connections=500 -c fsync=on",
            root.display()
        );
        let started = run(
            "pg_ctl start",
            as_owner(&bin.join("pg_ctl"))
                .arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(&log)
                .args(["-w", "-t", "60", "-o", &opts, "start"]),
        );
        match started {
            Ok(()) => {
                watch(&bin, &data)?;
                eprintln!("postgres: a cluster for this test run on 127.0.0.1:{port}, {root:?}");
                return Ok(Cluster {
                    port,
                    dbs: Mutex::new(HashMap::new()),
                });
            }
            // Most likely the port was taken between free_port and the bind: retry.
            Err(e) => last = format!("{e}; log: {}", tail(&log)),
        }
    }
    Err(last)
}

/// A fresh directory owned by the cluster's owner.
fn make_owned_dir(dir: &Path) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).map_err(|e| format!("create {dir:?}: {e}"))?;
    if is_root() {
        run("chown", Command::new("chown").arg("postgres:").arg(dir))?;
    }
    Ok(())
}

fn owner_can_write(dir: &Path) -> bool {
    let mut test = as_owner(Path::new("test"));
    test.arg("-w")
        .arg(dir)
        .stdin(Stdio::null())
        .stderr(Stdio::null());
    test.status().is_ok_and(|s| s.success())
}

fn tail(log: &Path) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(10)..].join("\n")
}

/// Stops the cluster once stdin reaches EOF, whoever closes it.
const WATCH: &str = r#"
cat >/dev/null
$RUNAS "$PG_CTL" -D "$PG_DATA" -m immediate -w -t 30 stop >/dev/null 2>&1
rm -rf "$PG_DATA"
"#;

fn watch(bin: &Path, data: &Path) -> Result<(), String> {
    let mut cmd = Command::new("sh");
    cmd.args(["-c", WATCH])
        .env(
            "RUNAS",
            if is_root() {
                "runuser -u postgres --"
            } else {
                ""
            },
        )
        .env("PG_CTL", bin.join("pg_ctl"))
        .env("PG_DATA", data)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Its own session: a Ctrl-C (or a kill of our process group) must not take the
    // watcher down before it has stopped the postmaster, which pg_ctl put in a session
    // of its own too.
    // SAFETY: setsid is async-signal-safe and touches only the forked child.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| format!("start the watcher: {e}"))?;
    *WATCHER.lock().unwrap_or_else(|p| p.into_inner()) = Some(child);
    // SAFETY: registers a plain function, once (start runs once per process).
    if unsafe { libc::atexit(stop_at_exit) } != 0 {
        return Err("atexit failed".into());
    }
    Ok(())
}

/// At exit: close the watcher's pipe and wait (bounded) until it has stopped the cluster.
extern "C" fn stop_at_exit() {
    let Some(mut child) = WATCHER.lock().ok().and_then(|mut w| w.take()) else {
        return;
    };
    drop(child.stdin.take());
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if !matches!(child.try_wait(), Ok(None)) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}
