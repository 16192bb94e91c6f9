//! argv → `Command`, the `--help`/`--version` text, and `CliError` (an exit code from
//! sysexits plus one sentence). Configuration flags (`--port`, `--database-path`, …)
//! are accepted anywhere on the line and override the environment.

mod apikey;
mod check;
mod migrate;

use crate::config::{self, Config, VARIABLES};

/// An error for the user: one sentence and a sysexits code.
#[derive(Debug)]
pub struct CliError {
    pub code: i32,
    pub message: String,
}

impl CliError {
    pub fn new(code: i32, message: impl Into<String>) -> CliError {
        CliError {
            code,
            message: message.into(),
        }
    }
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError::new(64, format!("{} (see --help)", message.into()))
    }
}

/// What to do.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Serve,
    Migrate { status: bool },
    ApiKeyCreate { name: String, role: String },
    ApiKeyList,
    ApiKeyRevoke { id: i64 },
    Check { url: Option<String> },
    Config,
    Help,
    Version,
}

/// A parsed command line.
#[derive(Debug)]
pub struct Args {
    pub command: Command,
    pub flags: Vec<(&'static str, String)>,
}

/// Parses argv (without the program name).
pub fn parse(argv: &[String]) -> Result<Args, CliError> {
    let mut words = Vec::new();
    let mut flags = Vec::new();
    let mut opts: Vec<(String, String)> = Vec::new();
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
                    Some(var) => flags.push((var, value)),
                    None if ["--name", "--role", "--url"].contains(&name.as_str()) => {
                        opts.push((name, value))
                    }
                    None => return Err(CliError::usage(format!("unknown option {name}"))),
                }
            }
            w => words.push(w.to_string()),
        }
    }
    let opt = |n: &str| {
        opts.iter()
            .rev()
            .find(|(k, _)| k == n)
            .map(|(_, v)| v.clone())
    };
    let words: Vec<&str> = words.iter().map(String::as_str).collect();
    let command = match words.as_slice() {
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
        ["config"] => Command::Config,
        ["help"] => Command::Help,
        other => {
            return Err(CliError::usage(format!(
                "unknown command {:?}",
                other.join(" ")
            )))
        }
    };
    let takes_opts = matches!(
        command,
        Command::ApiKeyCreate { .. } | Command::Check { .. }
    );
    if !takes_opts && !opts.is_empty() {
        return Err(CliError::usage(format!(
            "{} is only for apikey create",
            opts[0].0
        )));
    }
    Ok(Args { command, flags })
}

/// The `--help` text; the man page is generated from the same text.
pub fn help() -> String {
    let mut s = String::from(
        "dashboard-backend — task and project management API for multi-agent systems\n\n\
USAGE:\n\
  dashboard-backend [serve]                 run the server (the default command)\n\
  dashboard-backend migrate [status]        apply / list embedded schema migrations\n\
  dashboard-backend apikey create --name NAME [--role read|write]   prints the key once\n\
  dashboard-backend apikey list | revoke ID\n\
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
        "\nEXIT CODES: 0 ok, 64 usage, 65 bad input file, 69 unavailable, 74 I/O error, 78 configuration error\n",
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
    let config = Config::from_settings(settings).map_err(|e| CliError::new(78, e.0))?;
    crate::logging::init(config.log_format, config.log_level);
    match args.command {
        Command::Serve => crate::server::serve(config),
        Command::Migrate { status } => migrate::run(&config, status),
        Command::ApiKeyCreate { name, role } => apikey::create(&config, &name, &role),
        Command::ApiKeyList => apikey::list(&config),
        Command::ApiKeyRevoke { id } => apikey::revoke(&config, id),
        Command::Check { url } => check::run(&config, url.as_deref()),
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
        assert_eq!(p("frobnicate").unwrap_err().code, 64);
        assert_eq!(p("--bogus 1").unwrap_err().code, 64);
        assert_eq!(p("apikey revoke x").unwrap_err().code, 64);
        assert_eq!(p("serve --name x").unwrap_err().code, 64);
    }
}
