//! Instances wake each other (SPEC §9, §10): every transaction that appends events
//! also runs `pg_notify('dashboard', '<project id> <event types>')` (events.rs), which
//! PostgreSQL delivers at commit to every listener — this instance's too. One
//! dedicated connection per instance `LISTEN`s and hands each notification to
//! src/live. A notification is only a hint: streams and waiting claims also look at
//! the store every second by themselves, so one that is lost delays, never loses.

use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;

use super::connect::Connector;
use super::url::PgUrl;

/// The channel every instance listens on.
pub const CHANNEL: &str = "dashboard";

/// `"<pid> <type>,<type>"` → the project and its event types.
pub fn parse(payload: &str) -> Option<(i64, Vec<&str>)> {
    let (pid, kinds) = payload.split_once(' ').unwrap_or((payload, ""));
    let pid = pid.parse().ok()?;
    Some((pid, kinds.split(',').filter(|k| !k.is_empty()).collect()))
}

/// The payload for project `pid`'s events of these types (deduplicated; a
/// notification's payload is short).
pub fn payload<'a>(pid: i64, kinds: impl IntoIterator<Item = &'a str>) -> String {
    let mut seen: Vec<&str> = Vec::new();
    for k in kinds {
        if !seen.contains(&k) {
            seen.push(k);
        }
    }
    format!("{pid} {}", seen.join(","))
}

/// Starts the listener thread; it reconnects (with a pause) whenever its connection
/// fails, for as long as the process runs.
pub fn spawn(url: &PgUrl) {
    let connector = match Connector::new(url) {
        Ok(c) => c,
        Err(e) => {
            log::error!(target: "live", error:% = e; "cannot set up the LISTEN connection; instances wake each other only by polling");
            return;
        }
    };
    let started = std::thread::Builder::new()
        .name("pg-listen".into())
        .spawn(move || listen_forever(&connector));
    if let Err(e) = started {
        log::error!(target: "live", error:% = e; "cannot start the LISTEN thread");
    }
}

fn listen_forever(connector: &Connector) {
    let mut pause = Duration::from_millis(100);
    loop {
        if crate::changes::closing() {
            return;
        }
        match listen(connector) {
            Ok(()) => return,
            Err(e) => {
                log::warn!(target: "live", error:% = e; "LISTEN connection lost; reconnecting");
                std::thread::sleep(pause);
                pause = (pause * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// One connection's life: `LISTEN`, then hand every notification to src/live.
/// `Ok` when the server shuts down.
fn listen(connector: &Connector) -> Result<(), String> {
    let mut client = connector.connect().map_err(|e| e.to_string())?;
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .map_err(|e| e.to_string())?;
    // Whatever was notified while we were not listening: everyone looks again.
    crate::changes::everything();
    loop {
        if crate::changes::closing() {
            return Ok(());
        }
        {
            let mut notes = client.notifications();
            let mut it = notes.timeout_iter(Duration::from_secs(1));
            loop {
                match it.next() {
                    Ok(Some(n)) => {
                        if let Some((pid, kinds)) = parse(n.payload()) {
                            crate::changes::events_committed(pid, kinds);
                        }
                    }
                    Ok(None) => break,
                    Err(e) => return Err(e.to_string()),
                }
            }
        }
        if client.is_closed() {
            return Err("the connection closed".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_round_trip() {
        let p = payload(42, ["created", "claimed", "created"]);
        assert_eq!(p, "42 created,claimed");
        assert_eq!(parse(&p), Some((42, vec!["created", "claimed"])));
        assert_eq!(parse("7"), Some((7, vec![])));
        assert_eq!(parse("x y"), None);
    }
}
