//! The writer thread: group commit.
//!
//! Every write is a closure sent to one thread that owns the only read-write
//! connection. The thread takes everything queued (up to `MAX_BATCH`), runs it inside
//! one `BEGIN IMMEDIATE` transaction — each job in its own savepoint, so a failing job
//! rolls back alone — commits once, and only then answers each caller. With
//! `synchronous=FULL` one fsync covers the whole batch: a 2xx means on disk, yet
//! throughput grows with concurrency instead of collapsing.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Mutex;
use std::thread::JoinHandle;

use rusqlite::Connection;

use super::{Result, StoreError};

/// Most jobs committed in one transaction; bounds a batch's latency.
const MAX_BATCH: usize = 256;

/// A queued write, type-erased.
trait Job: Send {
    /// Runs the job on the writer connection; `true` if it succeeded.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers the caller once the batch's fate (`commit`) is known.
    fn finish(self: Box<Self>, commit: Result<()>);
}

struct Pending<T, F> {
    work: Option<F>,
    out: Option<Result<T>>,
    reply: SyncSender<Result<T>>,
}

impl<T, F> Job for Pending<T, F>
where
    T: Send,
    F: FnOnce(&Connection) -> Result<T> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let Some(work) = self.work.take() else {
            return false;
        };
        // A panic inside one job must not kill the only writer.
        let out = catch_unwind(AssertUnwindSafe(|| work(conn)))
            .unwrap_or_else(|_| Err(StoreError::Other("write job panicked".into())));
        let ok = out.is_ok();
        self.out = Some(out);
        ok
    }

    fn finish(self: Box<Self>, commit: Result<()>) {
        let answer = match (self.out, commit) {
            (Some(Err(e)), _) => Err(e),
            (Some(Ok(v)), Ok(())) => Ok(v),
            (Some(Ok(_)), Err(e)) => Err(e),
            (None, Err(e)) => Err(e),
            (None, Ok(())) => Err(StoreError::Other("write job did not run".into())),
        };
        // The caller may have gone away (it never does today); nothing to do then.
        let _ = self.reply.send(answer);
    }
}

enum Msg {
    Job(Box<dyn Job>),
    Stop,
}

/// Handle to the writer thread.
pub struct Writer {
    queue: Sender<Msg>,
    thread: Mutex<Option<JoinHandle<Result<()>>>>,
}

impl Writer {
    /// Starts the writer thread on `conn`.
    pub fn start(conn: Connection) -> Result<Writer> {
        let (tx, rx) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("db-writer".into())
            .spawn(move || run(conn, rx))
            .map_err(|e| StoreError::Unavailable(format!("cannot start writer: {e}")))?;
        Ok(Writer {
            queue: tx,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Queues `work` and waits until the batch holding it has committed.
    pub fn submit<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = mpsc::sync_channel(1);
        let job = Box::new(Pending {
            work: Some(work),
            out: None,
            reply,
        });
        self.queue
            .send(Msg::Job(job))
            .map_err(|_| StoreError::Unavailable("writer stopped".into()))?;
        answer
            .recv()
            .map_err(|_| StoreError::Unavailable("writer stopped".into()))?
    }

    /// Finishes the queued writes, checkpoints the WAL and closes the connection.
    pub fn stop(&self) -> Result<()> {
        let handle = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(handle) = handle else {
            return Ok(());
        };
        let _ = self.queue.send(Msg::Stop);
        handle
            .join()
            .map_err(|_| StoreError::Other("writer thread panicked".into()))?
    }
}

fn run(conn: Connection, rx: Receiver<Msg>) -> Result<()> {
    let mut batch: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_BATCH);
    let mut stop = false;
    while !stop {
        match rx.recv() {
            Ok(Msg::Job(j)) => batch.push(j),
            Ok(Msg::Stop) | Err(_) => break,
        }
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Job(j)) => batch.push(j),
                Ok(Msg::Stop) => {
                    stop = true;
                    break;
                }
                Err(_) => break,
            }
        }
        commit_batch(&conn, &mut batch);
    }
    // Jobs queued after Stop (none in practice: workers are joined first) are refused.
    while let Ok(Msg::Job(j)) = rx.try_recv() {
        j.finish(Err(StoreError::Unavailable("shutting down".into())));
    }
    // SPEC §6: checkpoint the WAL so the database file alone is complete.
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    conn.close().map_err(|(_, e)| StoreError::from(e))
}

/// Runs a batch in one transaction and answers every job.
fn commit_batch(conn: &Connection, batch: &mut Vec<Box<dyn Job>>) {
    if let Err(e) = control(conn, "BEGIN IMMEDIATE") {
        let e = StoreError::from(e);
        for j in batch.drain(..) {
            j.finish(Err(e.clone()));
        }
        return;
    }
    let outcome = if batch.len() == 1 {
        // One job: no savepoint needed, its failure rolls back the transaction.
        if batch[0].run(conn) {
            commit(conn)
        } else {
            let _ = conn.execute_batch("ROLLBACK");
            Ok(())
        }
    } else {
        for j in batch.iter_mut() {
            run_in_savepoint(conn, j.as_mut());
        }
        commit(conn)
    };
    match &outcome {
        Ok(()) => crate::metrics::db_commit(batch.len()),
        Err(e) => {
            log::error!(target: "store", error:% = e, batch = batch.len(); "commit failed; batch rolled back")
        }
    }
    for j in batch.drain(..) {
        j.finish(outcome.clone());
    }
}

/// Runs one of the few fixed transaction-control statements through the statement
/// cache: the writer runs several per batch, so parsing them each time shows up.
fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn run_in_savepoint(conn: &Connection, job: &mut dyn Job) {
    if control(conn, "SAVEPOINT job").is_err() {
        // Left un-run: `finish` reports it as failed.
        return;
    }
    let ok = job.run(conn);
    let end = if ok {
        control(conn, "RELEASE job")
    } else {
        control(conn, "ROLLBACK TO job").and_then(|()| control(conn, "RELEASE job"))
    };
    if let Err(e) = end {
        log::error!(target: "store", error:% = e; "savepoint end failed");
    }
}

fn commit(conn: &Connection) -> Result<()> {
    control(conn, "COMMIT").map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        StoreError::from(e)
    })
}
