//! argv → `Command`, the `--help`/`--version` text, and `CliError` (an exit code from
//! sysexits plus one sentence). Configuration flags (`--port`, `--database-path`, …)
//! are accepted anywhere on the line and override the environment.

mod apikey;
mod backup;
mod check;
mod db;
mod migrate;
mod restore;

pub(crate) use db::DbTask;

use crate::config::{self, Config, VARIABLES};
use crate::exit::{Failure, EX_CONFIG, EX_USAGE};

/// What the process exits with: a command line that does not parse (`EX_USAGE`), a
/// configuration that does not load (`EX_CONFIG`), or the error of the command that
/// ran (each command has its own type; `exit::command_error!`).
#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub message: String,
}

impl CliError {
    fn new(code: i32, message: impl Into<String>) -> CliError {
        CliError {
            code,
            message: message.into(),
        }
    }
    fn usage(message: impl Into<String>) -> CliError {
        CliError::new(EX_USAGE, format!("{} (see --help)", message.into()))
    }
}

impl<E: Failure> From<E> for CliError {
    fn from(e: E) -> CliError {
        CliError::new(e.exit_code(), e.to_string())
    }
}

/// What to do.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Command {
    Serve,
    Migrate { status: bool },
    Backup { dir: Option<String> },
    Restore { file: String, force: bool },
    ApiKeyCreate { name: String, role: String },
    ApiKeyList,
    ApiKeyRevoke { id: i64 },
    Check { url: Option<String> },
    Db { task: DbTask },
    Config,
    Help,
    Version,
}

/// A parsed command line.
#[derive(Debug)]
pub(crate) struct Args {
    pub command: Command,
    pub flags: Vec<(&'static str, String)>,
}

/// `restore` and `db` on PostgreSQL: the one sentence naming the tool to use; the
/// command exits `EX_USAGE` with it (SPEC §7, §10).
fn postgres_refusal(command: &str, instead: &str) -> String {
    format!(
        "{command} works on the SQLite database only; with DATABASE_URL set, use {instead} instead"
    )
}

/// Parses argv (without the program name).
pub(crate) fn parse(argv: &[String]) -> Result<Args, CliError> {
    let mut words = Vec::new();
    let mut flags = Vec::new();
    let mut opts: Vec<(String, String)> = Vec::new();
    let mut force = false;
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "-h" | "--help" => {
                return Ok(Args {
                    command: Command::Help,
                    flags,
                })
            }
            "-V" | "--version" => {
                return Ok(Args {
                    command: Command::Version,
                    flags,
                })
            }
            // The one option without a value.
            "--force" => force = true,
            f if f.starts_with("--") => {
                let (name, inline) = match f.split_once('=') {
                    Some((n, v)) => (n.to_string(), Some(v.to_string())),
                    None => (f.to_string(), None),
                };
                let value = match inline {
                    Some(v) => v,
                    None => it
                        .next()
                        .cloned()
                        .ok_or_else(|| CliError::usage(format!("{name} needs a value")))?,
                };
                match config::var_for_flag(&name) {
                    Some("DATABASE_URL") if url_has_password(&value) => {
                        return Err(CliError::usage(format!(
                            "{name} must not carry a password: every local user can read a \
                             command line (ps); set DATABASE_URL in the environment \
                             (/etc/default/dashboard-backend) instead"
                        )))
                    }
                    Some(var) => flags.push((var, value)),
                    None if OPTIONS.iter().any(|(o, _)| *o == name) => opts.push((name, value)),
                    None => return Err(CliError::usage(format!("unknown option {name}"))),
                }
            }
            w => words.push(w.to_string()),
        }
    }
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let command = command(&words, &opts, force)?;
    Ok(Args { command, flags })
}

/// Whether a `DATABASE_URL` value holds a password (an unparseable one is refused
/// later, without repeating it).
fn url_has_password(url: &str) -> bool {
    crate::store::postgres::PgUrl::parse(url).is_ok_and(|u| u.password.is_some())
}

/// Options that take a value, and the command (first words) each belongs to.
const OPTIONS: &[(&str, &str)] = &[
    ("--name", "apikey create"),
    ("--role", "apikey create"),
    ("--url", "check"),
    ("--dir", "backup"),
];

/// The command the words name, with its options.
fn command(words: &[&str], opts: &[(String, String)], force: bool) -> Result<Command, CliError> {
    let opt = |n: &str| {
        opts.iter()
            .rev()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    let command = match words {
        [] | ["serve"] => Command::Serve,
        ["migrate"] => Command::Migrate { status: false },
        ["migrate", "status"] => Command::Migrate { status: true },
        ["apikey", "create"] => Command::ApiKeyCreate {
            name: opt("--name")
                .ok_or_else(|| CliError::usage("apikey create needs --name NAME"))?,
            role: opt("--role").unwrap_or_else(|| "write".into()),
        },
        ["apikey", "list"] => Command::ApiKeyList,
        ["apikey", "revoke", id] => Command::ApiKeyRevoke {
            id: id.parse().map_err(|_| {
                CliError::usage(format!("apikey revoke needs a numeric key id, not {id:?}"))
            })?,
        },
        ["apikey", "revoke"] => return Err(CliError::usage("apikey revoke needs a key id")),
        ["check"] => Command::Check { url: opt("--url") },
        ["backup"] => Command::Backup { dir: opt("--dir") },
        ["restore", file] => Command::Restore {
            file: file.to_string(),
            force,
        },
        ["restore"] => {
            return Err(CliError::usage(
                "restore needs a FILE (a .db.gz written by backup, or a .db)",
            ))
        }
        ["db", "integrity"] => Command::Db {
            task: DbTask::Integrity,
        },
        ["db", "vacuum"] => Command::Db {
            task: DbTask::Vacuum,
        },
        ["db", "analyze"] => Command::Db {
            task: DbTask::Analyze,
        },
        ["db", ..] => return Err(CliError::usage("db needs integrity, vacuum or analyze")),
        ["config"] => Command::Config,
        ["help"] => Command::Help,
        other => {
            return Err(CliError::usage(format!(
                "unknown command {:?}",
                other.join(" ")
            )))
        }
    };
    check_options(&words.join(" "), opts, force, &command)?;
    Ok(command)
}

/// Refuses an option given to a command it does not belong to.
fn check_options(
    name: &str,
    opts: &[(String, String)],
    force: bool,
    command: &Command,
) -> Result<(), CliError> {
    if let Some((o, _)) = opts.iter().find(|(o, _)| {
        !OPTIONS
            .iter()
            .any(|(k, cmd)| k == o && name.starts_with(cmd))
    }) {
        return Err(CliError::usage(format!("{o} is not an option of {name:?}")));
    }
    if force && !matches!(command, Command::Restore { .. }) {
        return Err(CliError::usage("--force is only for restore"));
    }
    Ok(())
}

/// The `--help` text; the man page is generated from the same text.
pub(crate) fn help() -> String {
    let mut s = String::from(
        "dashboard-backend — task and project management API for multi-agent systems\n\n\
USAGE:\n\
  dashboard-backend [serve]                 run the server (the default command)\n\
  dashboard-backend migrate [status]        apply / list embedded schema migrations\n\
  dashboard-backend backup [--dir DIR]      consistent online backup; prints the file path\n\
  dashboard-backend restore FILE [--force]  verify FILE, then replace the database with it\n\
  dashboard-backend apikey create --name NAME [--role read|write]   prints the key once\n\
  dashboard-backend apikey list | revoke ID\n\
  dashboard-backend db integrity|vacuum|analyze   check, compact or re-analyze the database\n\
  dashboard-backend check [--url URL]       HTTP probe of /health/ready; exit 0 healthy, 1 not\n\
  dashboard-backend config                  print effective configuration\n\
  dashboard-backend --help | --version\n\n\
CONFIGURATION (environment variable, or the flag of the same name, e.g. --port 8080):\n",
    );
    for (name, default, meaning) in VARIABLES {
        let d = if default.is_empty() {
            String::new()
        } else {
            format!(" [default: {default}]")
        };
        s.push_str(&format!("  {:<34} {meaning}{d}\n", name));
    }
    s.push_str(
        "\nEXIT CODES: 0 ok, 64 usage, 65 bad input file, 66 input file missing, 69 unavailable, 74 I/O error, 78 configuration error\n",
    );
    s
}

/// Runs the command line; the caller turns the error into an exit code.
pub fn run(argv: &[String]) -> Result<(), CliError> {
    let args = parse(argv)?;
    match args.command {
        Command::Help => {
            print!("{}", help());
            return Ok(());
        }
        Command::Version => {
            println!("dashboard-backend {}", env!("CARGO_PKG_VERSION"));
            return Ok(());
        }
        _ => {}
    }
    let settings = config::gather(|k| std::env::var(k).ok(), &args.flags);
    let config = Config::from_settings(settings).map_err(|e| CliError::new(EX_CONFIG, e.0))?;
    crate::logging::init(config.log_format, config.log_level);
    match args.command {
        Command::Serve => Ok(crate::server::serve(config)?),
        Command::Migrate { status } => Ok(migrate::run(&config, status)?),
        Command::ApiKeyCreate { name, role } => Ok(apikey::create(&config, &name, &role)?),
        Command::ApiKeyList => Ok(apikey::list(&config)?),
        Command::ApiKeyRevoke { id } => Ok(apikey::revoke(&config, id)?),
        Command::Check { url } => Ok(check::run(&config, url.as_deref())?),
        Command::Backup { dir } => Ok(backup::run(&config, dir.as_deref())?),
        Command::Restore { file, force: _ } => Ok(restore::run(&config, &file)?),
        Command::Db { task } => Ok(db::run(&config, task)?),
        Command::Config => {
            print!("{}", config.render());
            Ok(())
        }
        Command::Help | Command::Version => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<Args, CliError> {
        parse(&s.split_whitespace().map(String::from).collect::<Vec<_>>())
    }

    #[test]
    fn parses_commands_and_flags() {
        let a = p("--port 9000 apikey create --name ci --role read").expect("ok");
        assert_eq!(
            a.command,
            Command::ApiKeyCreate {
                name: "ci".into(),
                role: "read".into()
            }
        );
        assert_eq!(a.flags, vec![("PORT", "9000".to_string())]);
        assert_eq!(p("").expect("ok").command, Command::Serve);
        assert_eq!(
            p("migrate status").expect("ok").command,
            Command::Migrate { status: true }
        );
        assert_eq!(p("--host=::1 serve").expect("ok").flags[0].1, "::1");
        assert_eq!(p("frobnicate").unwrap_err().code, EX_USAGE);
        assert_eq!(p("--bogus 1").unwrap_err().code, EX_USAGE);
        assert_eq!(p("apikey revoke x").unwrap_err().code, EX_USAGE);
        assert_eq!(p("serve --name x").unwrap_err().code, EX_USAGE);
    }

    /// A command line is readable by every local user (ps, /proc/PID/cmdline): a
    /// password there is refused, and the refusal does not repeat it.
    #[test]
    fn a_database_url_flag_with_a_password_is_refused() {
        for args in [
            "serve --database-url postgres://u:Secret123@h/d",
            "--database-url=postgres://u:Secret123@h/d migrate",
        ] {
            let e = p(args).unwrap_err();
            assert_eq!(e.code, EX_USAGE, "{args}");
            assert!(!e.message.contains("Secret123"), "{}", e.message);
            assert!(e.message.contains("DATABASE_URL"), "{}", e.message);
        }
        let ok = p("serve --database-url postgres://u@h/d").expect("no password");
        assert_eq!(ok.flags[0].0, "DATABASE_URL");
    }

    #[test]
    fn parses_backup_restore_and_db() {
        assert_eq!(
            p("backup --dir /b").expect("ok").command,
            Command::Backup {
                dir: Some("/b".into())
            }
        );
        assert_eq!(
            p("restore --force f.db.gz").expect("ok").command,
            Command::Restore {
                file: "f.db.gz".into(),
                force: true
            }
        );
        assert_eq!(
            p("db vacuum").expect("ok").command,
            Command::Db {
                task: DbTask::Vacuum
            }
        );
        for bad in [
            "restore",
            "db",
            "db shrink",
            "backup --force",
            "restore f --dir d",
        ] {
            assert_eq!(p(bad).unwrap_err().code, EX_USAGE, "{bad}");
        }
    }
}
