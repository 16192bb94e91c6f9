//! The writer thread: group commit.
//!
//! Every write is a closure sent to one thread that owns the only read-write
//! connection. The thread takes everything queued (up to `MAX_BATCH`), runs it inside
//! one `BEGIN IMMEDIATE` transaction, commits once, and only then answers each caller;
//! a job that fails without writing leaves its neighbours alone (`commit_batch` says
//! what happens to the rare one that fails after writing). With
//! `synchronous=FULL` one fsync covers the whole batch: a 2xx means on disk, yet
//! throughput grows with concurrency instead of collapsing.
//!
//! The writer also counts its progress (SQLite steps and commits) so the watchdog can
//! tell a long job that is moving from a writer that is stuck (`alive`).
//!
//! **Pipelined commit** (`Durability::Pipelined`, what `synchronous=FULL` becomes):
//! the writer connection runs `synchronous=NORMAL`, so COMMIT writes the batch's WAL
//! frames without waiting for the disk, and hands the batch to the `db-sync` thread,
//! which makes it durable with one `fdatasync` of the WAL file and only then answers
//! its callers. Meanwhile the writer runs the jobs that arrive in a new transaction,
//! and commits that one as soon as the flush is done (or it is full): the disk's flush
//! and the next batch's work overlap instead of taking turns, and a batch is still as
//! big as one flush lets it grow. A 2xx still means on disk. The trade-off: another request may read a committed write for the
//! length of one flush before it is durable (as with PostgreSQL's synchronous
//! standbys); a power loss in that window loses it, and nobody was told it succeeded
//! — but a reader may have seen it. Checkpoints stay safe: with NORMAL, SQLite syncs
//! the WAL before a checkpoint and the database file after it. An fdatasync that
//! fails leaves the kernel's copy of the file in doubt (PostgreSQL's "fsyncgate"), so
//! from then on every write is refused until a restart.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

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
    /// From the sync thread: the batches it was given are durable and answered.
    Synced,
    Stop,
}

/// SQLite virtual-machine steps between two progress counts: a few hundred
/// microseconds of work, so a long job shows progress many times a second at the
/// cost of one atomic add per count.
const PROGRESS_STEPS: i32 = 10_000;

/// How often `alive` looks at the progress count while it waits.
const ALIVE_POLL: Duration = Duration::from_millis(10);

/// Counts progress on `conn` into `progress`: SQLite calls the handler every
/// `PROGRESS_STEPS` steps of any statement, a migration's as well as a job's.
/// Keeps `c` busy until `until`: computing (SQLite steps, as a long delete makes) or
/// sleeping outside SQLite (a writer stuck without progress). For the watchdog's tests.
#[cfg(any(test, feature = "test-hooks"))]
pub(crate) fn hold(c: &Connection, until: Instant, progressing: bool) -> Result<()> {
    while Instant::now() < until {
        if progressing {
            c.query_row(
                "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n \
                 LIMIT 100000) SELECT count(*) FROM n",
                [],
                |_| Ok(()),
            )?;
        } else {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    Ok(())
}

pub fn count_progress(conn: &Connection, progress: Arc<AtomicU64>) {
    conn.progress_handler(
        PROGRESS_STEPS,
        Some(move || {
            progress.fetch_add(1, Ordering::Relaxed);
            false // never interrupt
        }),
    );
}

impl Drop for Writer {
    /// A writer dropped without `stop` still finishes its queue and its thread (the
    /// sync thread holds a sender of the queue, so the channel alone would not end it).
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Where a committed batch becomes durable before its callers are answered.
pub enum Durability {
    /// Inside COMMIT, by SQLite (whatever the connection's `synchronous` says).
    #[cfg(test)]
    Inline,
    /// By the sync thread, one `fdatasync` of this WAL file for every batch
    /// committed since the last one (see the module doc). The connection must run
    /// `synchronous=NORMAL`.
    Pipelined(PathBuf),
}

/// Committed batches on their way to the sync thread.
type Synced = Sender<Vec<Box<dyn Job>>>;

/// Handle to the writer thread.
pub struct Writer {
    queue: Sender<Msg>,
    thread: Mutex<Option<JoinHandle<Result<()>>>>,
    /// Bumped by SQLite while the writer computes and after each transaction.
    progress: Arc<AtomicU64>,
}

impl Writer {
    /// Starts the writer thread on `conn`, whose progress `count_progress` counts
    /// into `progress`.
    pub fn start(
        conn: Connection,
        progress: Arc<AtomicU64>,
        durability: Durability,
    ) -> Result<Writer> {
        let (tx, rx) = mpsc::channel();
        let counted = progress.clone();
        let thread = std::thread::Builder::new()
            .name("db-writer".into())
            .spawn({
                let queue = tx.clone();
                move || run(conn, rx, queue, &counted, durability)
            })
            .map_err(|e| StoreError::Unavailable(format!("cannot start writer: {e}")))?;
        Ok(Writer {
            queue: tx,
            thread: Mutex::new(Some(thread)),
            progress,
        })
    }

    /// Queues `work` and waits until the batch holding it has committed.
    pub fn submit<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        self.enqueue(work)?
            .recv()
            .map_err(|_| StoreError::Unavailable("writer stopped".into()))?
    }

    /// Queues `work`; its answer arrives on the returned channel.
    fn enqueue<T, F>(&self, work: F) -> Result<Receiver<Result<T>>>
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
        Ok(answer)
    }

    /// Is the writer making progress? Waits at most `budget`: `Ok` once an empty job
    /// is answered, or as soon as the writer is seen working (SQLite steps, commits)
    /// while a long job holds it — a delete of millions of rows is slow, not dead.
    /// A writer that neither answers nor moves (waiting on a lock, a hung disk, a
    /// job blocked outside SQLite) is not alive. SPEC §6, issue #13.
    pub fn alive(&self, budget: Duration) -> Result<()> {
        let seen = self.progress.load(Ordering::Relaxed);
        let answer = self.enqueue(|_| Ok(()))?;
        let deadline = Instant::now() + budget;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match answer.recv_timeout(left.min(ALIVE_POLL)) {
                Ok(result) => return result,
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(StoreError::Unavailable("writer stopped".into()))
                }
                Err(RecvTimeoutError::Timeout) => {
                    if self.progress.load(Ordering::Relaxed) != seen {
                        return Ok(());
                    }
                    if left.is_zero() {
                        return Err(StoreError::Unavailable(format!(
                            "the writer neither answered nor made progress in {} ms",
                            budget.as_millis()
                        )));
                    }
                }
            }
        }
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

fn run(
    conn: Connection,
    rx: Receiver<Msg>,
    queue: Sender<Msg>,
    progress: &AtomicU64,
    durability: Durability,
) -> Result<()> {
    let (synced, syncer) = match durability {
        #[cfg(test)]
        Durability::Inline => {
            drop(queue);
            (None, None)
        }
        Durability::Pipelined(wal) => {
            let (tx, rx) = mpsc::channel();
            let thread = std::thread::Builder::new()
                .name("db-sync".into())
                .spawn(move || sync_loop(&wal, rx, queue))
                .map_err(|e| StoreError::Unavailable(format!("cannot start db-sync: {e}")))?;
            (Some(tx), Some(thread))
        }
    };
    let mut w = Batcher {
        conn: &conn,
        pending: Vec::new(),
        batch: Vec::with_capacity(MAX_BATCH),
        open: false,
        in_flight: false,
        stop: false,
    };
    loop {
        // Wait only when there is nothing to do now: no job to run, and no batch to
        // commit (none, or the last one is still being synced).
        if w.pending.is_empty() && (w.batch.is_empty() || w.in_flight) && !w.stop {
            match rx.recv() {
                Ok(m) => w.take(m),
                Err(_) => w.stop = true,
            }
        }
        while w.pending.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(m) => w.take(m),
                Err(_) => break,
            }
        }
        w.run_pending();
        // Commit when the disk is free (nothing being synced), when the batch is
        // full, or at the end; until then jobs keep joining the open transaction.
        if !w.batch.is_empty() && (!w.in_flight || w.batch.len() >= MAX_BATCH || w.stop) {
            w.commit(synced.as_ref());
        }
        // A batch of short jobs may finish without SQLite counting a step.
        progress.fetch_add(1, Ordering::Relaxed);
        if w.stop && w.pending.is_empty() && w.batch.is_empty() {
            break;
        }
    }
    // Jobs queued after Stop (none in practice: workers are joined first) are refused.
    while let Ok(m) = rx.try_recv() {
        if let Msg::Job(j) = m {
            j.finish(Err(StoreError::Unavailable("shutting down".into())));
        }
    }
    // The last batches are answered once durable.
    drop(synced);
    if let Some(t) = syncer {
        let _ = t.join();
    }
    // SPEC §6: checkpoint the WAL so the database file alone is complete.
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
    conn.close().map_err(|(_, e)| StoreError::from(e))
}

/// The writer's state between messages.
///
/// Jobs run as they arrive, inside one open transaction, with no savepoint between
/// them. A savepoint per job made SQLite copy every page a job touched into a
/// statement journal (about 40 000 instructions a create, 15 % of it), only to undo
/// jobs that fail after writing — which ours do not do: they refuse (not found,
/// conflict, validation) before their first write, and each SQL statement is atomic
/// on its own. The writer checks that promise with `total_changes`: a job that fails
/// after changing rows rolls the whole transaction back; the jobs that ran before it
/// are answered 503 (retry: nothing was written), and the jobs after it go on in a
/// fresh transaction.
struct Batcher<'c> {
    conn: &'c Connection,
    /// Received, not run yet.
    pending: Vec<Box<dyn Job>>,
    /// Run in the open transaction, waiting for its commit.
    batch: Vec<Box<dyn Job>>,
    open: bool,
    /// A committed batch is with the sync thread.
    in_flight: bool,
    stop: bool,
}

impl Batcher<'_> {
    fn take(&mut self, m: Msg) {
        match m {
            // Jobs queued after Stop (none in practice: workers are joined first).
            Msg::Job(j) if self.stop => {
                j.finish(Err(StoreError::Unavailable("shutting down".into())))
            }
            Msg::Job(j) => self.pending.push(j),
            Msg::Synced => self.in_flight = false,
            Msg::Stop => self.stop = true,
        }
    }

    /// Runs the pending jobs into the open transaction, up to `MAX_BATCH` in it.
    fn run_pending(&mut self) {
        let mut jobs = std::mem::take(&mut self.pending).into_iter();
        for mut j in jobs.by_ref() {
            if !self.open {
                // Events noted by a transaction that did not commit are forgotten
                // (live, SPEC §9).
                crate::changes::after_commit(false);
                if let Err(e) = control(self.conn, "BEGIN IMMEDIATE") {
                    j.finish(Err(StoreError::from(e)));
                    continue;
                }
                self.open = true;
            }
            let before = self.conn.total_changes();
            // Dirty: it changed rows, or its error ended the transaction (SQLite rolls
            // back by itself on a full disk or an I/O error; what ran after would
            // commit on its own in autocommit mode).
            if !j.run(self.conn)
                && (self.conn.total_changes() != before || self.conn.is_autocommit())
            {
                self.roll_back(j);
            } else {
                self.batch.push(j);
            }
            if self.batch.len() >= MAX_BATCH {
                break;
            }
        }
        self.pending.extend(jobs);
    }

    /// `failed` wrote and failed: nothing of the open transaction is kept.
    fn roll_back(&mut self, failed: Box<dyn Job>) {
        let _ = self.conn.execute_batch("ROLLBACK");
        self.open = false;
        if !self.batch.is_empty() {
            log::warn!(target: "store", batch = self.batch.len() + 1, position = self.batch.len();
                "a write failed after changing rows; its batch was rolled back");
        }
        for j in self.batch.drain(..) {
            j.finish(Err(StoreError::Unavailable(
                "a write committed together with this one failed; nothing was written, retry"
                    .into(),
            )));
        }
        // Its own error wins over the commit's (`finish`).
        failed.finish(Err(StoreError::Other("rolled back".into())));
    }

    /// Commits the open transaction; its jobs are answered now, or by the sync
    /// thread once the WAL is on disk.
    fn commit(&mut self, synced: Option<&Synced>) {
        self.open = false;
        let outcome = commit(self.conn);
        // Streams and waiting claims hear of the committed events before the callers
        // get their answers (live, SPEC §9).
        crate::changes::after_commit(outcome.is_ok());
        match &outcome {
            Ok(()) => crate::metrics::db_commit(self.batch.len()),
            Err(e) => {
                log::error!(target: "store", error:% = e, batch = self.batch.len(); "commit failed; batch rolled back")
            }
        }
        if let (Ok(()), Some(synced)) = (&outcome, synced) {
            self.in_flight = true;
            if let Err(mpsc::SendError(jobs)) = synced.send(std::mem::take(&mut self.batch)) {
                self.in_flight = false;
                for j in jobs {
                    j.finish(Err(StoreError::Unavailable(
                        "the sync thread stopped".into(),
                    )));
                }
            }
            return;
        }
        for j in self.batch.drain(..) {
            j.finish(outcome.clone());
        }
    }
}

/// The sync thread: answers committed batches once an `fdatasync` of the WAL file
/// that began after their COMMIT has returned. Batches that arrive while it syncs
/// share the next one.
fn sync_loop(wal: &std::path::Path, rx: Receiver<Vec<Box<dyn Job>>>, writer: Sender<Msg>) {
    let mut file: Option<std::fs::File> = None;
    let mut failed: Option<String> = None;
    while let Ok(mut jobs) = rx.recv() {
        while let Ok(more) = rx.try_recv() {
            jobs.extend(more);
        }
        let outcome = match &failed {
            Some(e) => Err(e.clone()),
            None => sync_data(wal, &mut file).map_err(|e| {
                let e = format!("could not make the write durable: {}: {e}", wal.display());
                log::error!(target: "store", error:% = e;
                    "fdatasync of the WAL failed; every write is refused until a restart");
                failed = Some(e.clone());
                e
            }),
        };
        for j in jobs {
            j.finish(outcome.clone().map_err(StoreError::Unavailable));
        }
        // The writer may commit the batch it has been building meanwhile.
        let _ = writer.send(Msg::Synced);
    }
}

fn sync_data(wal: &std::path::Path, file: &mut Option<std::fs::File>) -> std::io::Result<()> {
    #[cfg(test)]
    tests::sync_hook(wal)?;
    let f = match file {
        Some(f) => f,
        None => file.insert(std::fs::File::open(wal)?),
    };
    f.sync_data()
}

/// Runs one of the few fixed transaction-control statements through the statement
/// cache: the writer runs several per batch, so parsing them each time shows up.
fn control(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

fn commit(conn: &Connection) -> Result<()> {
    control(conn, "COMMIT").map_err(|e| {
        let _ = conn.execute_batch("ROLLBACK");
        StoreError::from(e)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    /// What the sync thread of a writer on one WAL file does before its fdatasync:
    /// wait, or fail. Keyed by path: other tests' writers are left alone.
    static SYNC_HOOK: Mutex<Vec<(PathBuf, Duration, bool)>> = Mutex::new(Vec::new());
    static SYNCS: AtomicU64 = AtomicU64::new(0);

    pub(super) fn sync_hook(wal: &std::path::Path) -> std::io::Result<()> {
        let hook = SYNC_HOOK
            .lock()
            .expect("hook")
            .iter()
            .find(|h| h.0 == wal)
            .cloned();
        if let Some((_, wait, fail)) = hook {
            SYNCS.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(wait);
            if fail {
                return Err(std::io::Error::other("injected EIO"));
            }
        }
        Ok(())
    }

    /// A pipelined writer on a fresh database file whose syncs wait `wait` (and
    /// fail, with `fail`); the database's and the WAL's paths.
    fn pipelined(tag: &str, wait: Duration, fail: bool) -> (Arc<Writer>, PathBuf, PathBuf) {
        let dir = std::env::temp_dir().join(format!("writer-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let db = dir.join("db");
        let conn = Connection::open(&db).expect("open");
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;
             CREATE TABLE t (v INTEGER NOT NULL)",
        )
        .expect("schema");
        let wal = dir.join("db-wal");
        SYNC_HOOK
            .lock()
            .expect("hook")
            .push((wal.clone(), wait, fail));
        let progress = Arc::new(AtomicU64::new(0));
        let w = Writer::start(conn, progress, Durability::Pipelined(wal.clone())).expect("start");
        (Arc::new(w), db, wal)
    }

    #[test]
    fn a_write_is_answered_only_after_its_wal_is_flushed_yet_readable_before() {
        // Issue #17's pipelined commit: the 2xx waits for the fdatasync; a reader may
        // see the row during it (the documented trade-off).
        let before = SYNCS.load(Ordering::SeqCst);
        let (w, db, _) = pipelined("flushed", Duration::from_millis(400), false);
        let answered = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let t0 = Instant::now();
        let submit = {
            let (w, answered) = (w.clone(), answered.clone());
            std::thread::spawn(move || {
                let r = w.submit(insert(1, None));
                answered.store(true, Ordering::SeqCst);
                r
            })
        };
        let reader = Connection::open(&db).expect("reader");
        let seen_at = loop {
            let n: i64 = reader
                .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
                .expect("count");
            if n == 1 {
                break t0.elapsed();
            }
            assert!(
                t0.elapsed() < Duration::from_secs(5),
                "the row never showed"
            );
            std::thread::sleep(Duration::from_millis(5));
        };
        let answered_when_seen = answered.load(Ordering::SeqCst);
        assert_eq!(submit.join().expect("join").ok(), Some(1));
        let took = t0.elapsed();
        assert!(
            !answered_when_seen,
            "the write was answered before its row was readable ({seen_at:?})"
        );
        assert!(
            took >= Duration::from_millis(400),
            "answered after {took:?}, before the 400 ms flush ended"
        );
        assert!(SYNCS.load(Ordering::SeqCst) > before, "no fdatasync ran");
        w.stop().expect("stop");
    }

    #[test]
    fn writes_arriving_during_a_flush_wait_in_the_open_batch_for_the_next_one() {
        // The batch built while the last one syncs commits when the disk is free,
        // as one transaction: not readable before, answered after its own flush.
        let (w, db, _) = pipelined("building", Duration::from_millis(1000), false);
        let t0 = Instant::now();
        let first = {
            let w = w.clone();
            std::thread::spawn(move || w.submit(insert(1, None)))
        };
        std::thread::sleep(Duration::from_millis(100));
        let second: Vec<_> = [2, 3]
            .into_iter()
            .map(|v| {
                let w = w.clone();
                std::thread::spawn(move || w.submit(insert(v, None)))
            })
            .collect();
        std::thread::sleep(Duration::from_millis(150));
        let reader = Connection::open(&db).expect("reader");
        let rows = |r: &Connection| -> Vec<i64> {
            let mut st = r.prepare("SELECT v FROM t ORDER BY v").expect("prepare");
            let rows = st.query_map([], |r| r.get(0)).expect("query");
            rows.collect::<rusqlite::Result<Vec<i64>>>().expect("rows")
        };
        assert!(
            t0.elapsed() < Duration::from_millis(400),
            "the machine is too slow"
        );
        assert_eq!(rows(&reader), vec![1], "2 and 3 wait in the open batch");
        assert_eq!(first.join().expect("join").ok(), Some(1));
        for t in second {
            assert!(t.join().expect("join").is_ok());
        }
        let took = t0.elapsed();
        assert!(
            took >= Duration::from_millis(2000),
            "2 and 3 answered after {took:?}: before their own flush"
        );
        assert_eq!(rows(&reader), vec![1, 2, 3]);
        w.stop().expect("stop");
    }

    #[test]
    fn a_failed_flush_refuses_that_write_and_every_later_one() {
        let (w, _, wal) = pipelined("failed", Duration::ZERO, true);
        assert!(matches!(
            w.submit(insert(1, None)),
            Err(StoreError::Unavailable(_))
        ));
        SYNC_HOOK.lock().expect("hook").retain(|h| h.0 != wal);
        assert!(matches!(
            w.submit(insert(2, None)),
            Err(StoreError::Unavailable(_))
        ));
        w.stop().expect("stop");
    }

    fn writer() -> Arc<Writer> {
        let conn = Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE t (v INTEGER NOT NULL)")
            .expect("schema");
        let progress = Arc::new(AtomicU64::new(0));
        count_progress(&conn, progress.clone());
        Arc::new(Writer::start(conn, progress, Durability::Inline).expect("start"))
    }

    fn insert(v: i64, fail: Option<&'static str>) -> impl FnOnce(&Connection) -> Result<i64> {
        move |c: &Connection| {
            match fail {
                Some("before") => return Err(StoreError::NotFound("row")),
                Some("aborts") => {
                    // What SQLite does to the transaction on a full disk.
                    c.execute_batch("ROLLBACK")?;
                    return Err(StoreError::Full);
                }
                _ => c.execute("INSERT INTO t (v) VALUES (?1)", [v])?,
            };
            match fail {
                Some("after") => Err(StoreError::Conflict("failed after writing".into())),
                _ => Ok(v),
            }
        }
    }

    /// Queues `jobs` behind a job that holds the writer, so they share one batch;
    /// returns each job's answer in order and the rows then in the table.
    fn one_batch(jobs: Vec<(i64, Option<&'static str>)>) -> (Vec<Result<i64>>, Vec<i64>) {
        let w = writer();
        let hold = {
            let w = w.clone();
            std::thread::spawn(move || {
                w.submit(|_| {
                    std::thread::sleep(Duration::from_millis(300));
                    Ok(())
                })
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        let mut threads = Vec::new();
        for (v, fail) in jobs {
            let w = w.clone();
            threads.push(std::thread::spawn(move || w.submit(insert(v, fail))));
            std::thread::sleep(Duration::from_millis(20)); // queue in order
        }
        hold.join().expect("hold").expect("hold job");
        let answers = threads
            .into_iter()
            .map(|t| t.join().expect("join"))
            .collect();
        let rows = w
            .submit(|c| {
                let mut st = c.prepare("SELECT v FROM t ORDER BY v")?;
                let rows = st.query_map([], |r| r.get(0))?;
                Ok(rows.collect::<rusqlite::Result<Vec<i64>>>()?)
            })
            .expect("read back");
        w.stop().expect("stop");
        (answers, rows)
    }

    #[test]
    fn a_refused_job_leaves_its_batch_alone() {
        let (answers, rows) = one_batch(vec![(1, None), (2, Some("before")), (3, None)]);
        assert_eq!(answers[0].as_ref().ok(), Some(&1));
        assert!(matches!(answers[1], Err(StoreError::NotFound(_))));
        assert_eq!(answers[2].as_ref().ok(), Some(&3));
        assert_eq!(rows, vec![1, 3]);
    }

    /// A job that fails after writing, and one whose error ends the transaction
    /// (as SQLite does on a full disk), are both dirty: the job before it is rolled
    /// back and told to retry, the failing job gets its own error and leaves no row,
    /// and the job queued after it commits in a fresh transaction (not in
    /// autocommit mode after the abort).
    #[test]
    fn a_dirty_failure_rolls_back_the_jobs_before_it_only() {
        for (mode, own_error) in [
            (
                "after",
                (|e| matches!(e, StoreError::Conflict(_))) as fn(&StoreError) -> bool,
            ),
            ("aborts", |e| matches!(e, StoreError::Full)),
        ] {
            let (answers, rows) = one_batch(vec![(1, None), (2, Some(mode)), (3, None)]);
            let ok = matches!(answers[0], Err(StoreError::Unavailable(_)))
                && answers[1].as_ref().err().is_some_and(own_error)
                && answers[2].as_ref().ok() == Some(&3)
                && rows == vec![3];
            assert!(ok, "{mode}: {answers:?}, rows {rows:?}");
        }
    }

    /// A job that keeps SQLite busy counts as alive; one that waits outside SQLite
    /// does not; an idle writer answers.
    #[test]
    fn alive_means_answering_or_making_progress() {
        let w = writer();
        let budget = Duration::from_millis(200);
        assert!(w.alive(budget).is_ok(), "idle");
        let hold = |progressing: bool| {
            let w = w.clone();
            std::thread::spawn(move || {
                w.submit(move |c| hold(c, Instant::now() + Duration::from_millis(600), progressing))
            })
        };
        let busy = hold(true);
        std::thread::sleep(Duration::from_millis(100));
        assert!(w.alive(budget).is_ok(), "a long job making progress");
        busy.join().expect("join").expect("busy job");
        let stuck = hold(false);
        std::thread::sleep(Duration::from_millis(100));
        assert!(w.alive(budget).is_err(), "a job stuck outside SQLite");
        stuck.join().expect("join").expect("stuck job");
    }

    #[test]
    fn a_lone_job_failing_after_writing_leaves_nothing() {
        let (answers, rows) = one_batch(vec![(7, Some("after"))]);
        assert!(matches!(answers[0], Err(StoreError::Conflict(_))));
        assert!(rows.is_empty());
    }
}
