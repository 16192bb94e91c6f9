//! A one-line progress bar on stderr for long backups: only when stderr is a terminal
//! (never in the journal or a pipe) and only for databases big enough to take a while.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Below this size a backup takes about a second; no bar.
const MIN_BYTES: u64 = 64 << 20;
/// Redraw at most this often.
const EVERY: Duration = Duration::from_millis(100);
const WIDTH: u64 = 30;

/// The bar; a no-op when disabled.
pub struct Progress {
    enabled: bool,
    drawn: Option<Instant>,
    phase: &'static str,
}

impl Progress {
    /// A bar for a database of `bytes`, shown only on a terminal.
    pub fn for_size(bytes: u64) -> Progress {
        Progress {
            enabled: bytes >= MIN_BYTES && std::io::stderr().is_terminal(),
            drawn: None,
            phase: "",
        }
    }

    /// Shows `phase` at `done` of `total`.
    pub fn update(&mut self, phase: &'static str, done: u64, total: u64) {
        let recent = self.drawn.is_some_and(|t| t.elapsed() < EVERY);
        if !self.enabled || (recent && phase == self.phase) {
            return;
        }
        self.drawn = Some(Instant::now());
        self.phase = phase;
        let total = total.max(1);
        let done = done.min(total);
        let fill = (done * WIDTH / total) as usize;
        let bar = format!("{}{}", "#".repeat(fill), "-".repeat(WIDTH as usize - fill));
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r{phase:<11} [{bar}] {:>3}%", done * 100 / total);
        let _ = err.flush();
    }

    /// Clears the line before anything else is printed.
    pub fn finish(&mut self) {
        if self.enabled && self.drawn.take().is_some() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r{:width$}\r", "", width = 50);
            let _ = err.flush();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
