//! Exit codes, defined once: sysexits(3) plus `check`'s plain 1, and the macro that
//! makes each command's error type (`ServeError`, `BackupError`, …): one sentence for
//! the operator and the code the process exits with. A leaf: commands, the store's
//! backend administration and the CLI all use it; the CLI turns any of them into the
//! process's exit status.

/// `check`: the server answered, but is not ready (or did not answer).
pub const EX_NOT_READY: i32 = 1;
/// The command line is wrong.
pub const EX_USAGE: i32 = 64;
/// The input data is wrong (a backup that is not one, an unknown key id).
pub const EX_DATAERR: i32 = 65;
/// An input file does not exist or cannot be read.
pub const EX_NOINPUT: i32 = 66;
/// A service is unavailable (database, address, a running server in the way).
pub const EX_UNAVAILABLE: i32 = 69;
/// An operating-system error (threads, signals, random source).
pub const EX_OSERR: i32 = 71;
/// An output file cannot be created.
pub const EX_CANTCREAT: i32 = 73;
/// An input/output error.
pub const EX_IOERR: i32 = 74;
/// The configuration is wrong.
pub const EX_CONFIG: i32 = 78;

/// An error that ends a command: its sentence and its exit code.
pub trait Failure: std::fmt::Display {
    fn exit_code(&self) -> i32;
}

/// Defines a command's error type: `new(code, sentence)` with a code from this
/// module, `Failure::exit_code()`, `Display` (the sentence), and `From` each listed error of
/// a command it calls into (keeping that error's code and sentence).
macro_rules! command_error {
    ($(#[$doc:meta])* $name:ident $(, from $($from:ty),+)?) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name {
            code: i32,
            message: String,
        }

        impl $name {
            pub(crate) fn new(code: i32, message: impl Into<String>) -> Self {
                $name {
                    code,
                    message: message.into(),
                }
            }

            /// A wrong command line (`EX_USAGE`), pointing at `--help`.
            #[allow(dead_code)]
            pub(crate) fn usage(message: impl std::fmt::Display) -> Self {
                $name::new($crate::exit::EX_USAGE, format!("{message} (see --help)"))
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(&self.message)
            }
        }

        impl std::error::Error for $name {}

        impl $crate::exit::Failure for $name {
            fn exit_code(&self) -> i32 {
                self.code
            }
        }

        $($(
            impl From<$from> for $name {
                fn from(e: $from) -> Self {
                    $name::new($crate::exit::Failure::exit_code(&e), e.to_string())
                }
            }
        )+)?
    };
}
pub(crate) use command_error;
