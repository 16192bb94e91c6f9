//! The retention pruner (SPEC §5c, issue #20): one background thread per process,
//! started by `serve` with the store and stopped before the store closes.
//!
//! A run deletes finished tasks past `TASK_RETENTION` (with their events and labels),
//! events past `EVENT_RETENTION` and expired idempotency records, in small steps
//! (`Retention::prune_step`): one short transaction each, on SQLite one job of the
//! writer's group commit. The step size adapts so a step stays near the engine's
//! `Pacing::step_target`, and after each step the thread rests `rest_factor` times as
//! long as the step took (SQLite: 1 ms and three times, so pruning never takes more
//! than about a quarter of the writer; PostgreSQL: 4 ms and as long), even with a
//! backlog of millions of rows.
//! A run is logged once with its counts and moves `tasks_pruned_total`,
//! `events_pruned_total` and the space gauges in /metrics. On PostgreSQL, when
//! another instance is pruning (its advisory lock is held), this run ends at once.
//!
//! The §5c dependency rule (a dependency on a pruned task counts as satisfied) lives
//! with `depends_on` in the task store (#15): pruning only ever removes finished tasks.

use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::store::{Pacing, PruneCount, PruneStep, Store, StoreError};

/// Step sizes: starting point and bounds (rows a step). A task costs more than an
/// event (its labels, events, index entries and count triggers go with it), so tasks
/// start small and the step grows while it stays under half the target.
const TASK_STEP: (usize, usize, usize) = (50, 10, 500);
const EVENT_STEP: (usize, usize, usize) = (200, 20, 1000);
/// Runs at most this far apart (a quarter of the shortest retention when smaller).
const MAX_INTERVAL: Duration = Duration::from_secs(60);
const MIN_INTERVAL: Duration = Duration::from_secs(1);

/// The running pruner; `stop` ends it between two steps.
pub struct Pruner {
    stop: Arc<(Mutex<bool>, Condvar)>,
    handle: Option<JoinHandle<()>>,
}

/// Retention windows as the pruner applies them.
#[derive(Debug, Clone, Copy)]
pub struct Windows {
    pub tasks: Option<Duration>,
    pub events: Option<Duration>,
}

impl Windows {
    /// How often to run: a quarter of the shortest window, 1 s to 60 s.
    fn interval(&self) -> Duration {
        [self.tasks, self.events]
            .into_iter()
            .flatten()
            .min()
            .map_or(MAX_INTERVAL, |w| w / 4)
            .clamp(MIN_INTERVAL, MAX_INTERVAL)
    }
}

/// Starts the pruner thread. It runs even when both windows are `0` (keep forever):
/// expired idempotency records still go, and the space gauges stay current.
pub fn start(store: Arc<dyn Store>, windows: Windows) -> std::io::Result<Pruner> {
    let stop = Arc::new((Mutex::new(false), Condvar::new()));
    let flag = stop.clone();
    let handle = std::thread::Builder::new()
        .name("pruner".into())
        .spawn(move || run(&*store, windows, &flag))?;
    log::info!(target: "pruner",
        task_retention_secs = windows.tasks.map_or(0, |d| d.as_secs()),
        event_retention_secs = windows.events.map_or(0, |d| d.as_secs()),
        interval_secs = windows.interval().as_secs();
        "retention pruner started");
    Ok(Pruner {
        stop,
        handle: Some(handle),
    })
}

impl Pruner {
    /// Asks the thread to stop after its current step and waits for it.
    pub fn stop(mut self) {
        let (lock, cv) = &*self.stop;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) = true;
        cv.notify_all();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Sleeps up to `d`; true when asked to stop.
fn rest(stop: &(Mutex<bool>, Condvar), d: Duration) -> bool {
    let (lock, cv) = stop;
    let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
    let (guard, _) = cv
        .wait_timeout_while(guard, d, |stopped| !*stopped)
        .unwrap_or_else(|e| e.into_inner());
    *guard
}

/// Whether a stop was asked (without waiting).
fn stopped(stop: &(Mutex<bool>, Condvar)) -> bool {
    *stop.0.lock().unwrap_or_else(|e| e.into_inner())
}

fn run(store: &dyn Store, windows: Windows, stop: &(Mutex<bool>, Condvar)) {
    let mut sizes = Sizes {
        task: TASK_STEP.0,
        event: EVENT_STEP.0,
    };
    update_space(store);
    while !rest(stop, windows.interval()) {
        let t = Instant::now();
        let mut total = Totals::default();
        match prune_once(store, windows, stop, &mut sizes, &mut total) {
            Ok(()) => {}
            Err(e) => {
                log::warn!(target: "pruner", error:% = e, tasks = total.tasks, events = total.events;
                    "pruning run stopped early; the next run goes on")
            }
        }
        crate::metrics::pruned(total.tasks, total.events);
        update_space(store);
        let deleted = total.tasks + total.events + total.idempotency;
        if deleted > 0 {
            log::info!(target: "pruner",
                tasks = total.tasks, events = total.events, idempotency = total.idempotency,
                steps = total.steps, max_step_ms = total.max_step.as_secs_f64() * 1e3,
                elapsed_ms = t.elapsed().as_millis() as u64;
                "pruned {} tasks and {} events", total.tasks, total.events);
        } else if total.skipped {
            log::debug!(target: "pruner", "another instance is pruning; run skipped");
        }
    }
}

struct Sizes {
    task: usize,
    event: usize,
}

#[derive(Default)]
struct Totals {
    tasks: u64,
    events: u64,
    idempotency: u64,
    steps: u64,
    max_step: Duration,
    skipped: bool,
}

/// How a stretch of steps ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Nothing more to delete.
    Done,
    /// Another instance holds the pruning lock (PostgreSQL): leave the run to it.
    Skipped,
    /// Shutdown asked.
    Stopped,
}

/// One run: every project's finished tasks, then events, then idempotency records.
fn prune_once(
    store: &dyn Store,
    windows: Windows,
    stop: &(Mutex<bool>, Condvar),
    sizes: &mut Sizes,
    total: &mut Totals,
) -> Result<(), StoreError> {
    let now = crate::clock::now_ms();
    let pace = store.pacing();
    let cutoff = |w: Option<Duration>| w.map(|d| now - d.as_millis() as i64);
    let flow = (|| -> Result<Flow, StoreError> {
        if let Some(before) = cutoff(windows.tasks) {
            let mut after = 0;
            loop {
                let page = store.list_projects(None, after, 500)?;
                for p in &page.items {
                    if stopped(stop) {
                        return Ok(Flow::Stopped);
                    }
                    let step = PruneStep::Tasks {
                        project: p.id,
                        before,
                    };
                    let f = drain(store, pace, step, &mut sizes.task, TASK_STEP, stop, total)?;
                    if f != Flow::Done {
                        return Ok(f);
                    }
                }
                match page.items.last() {
                    Some(last) if page.more => after = last.id,
                    _ => break,
                }
            }
        }
        if let Some(before) = cutoff(windows.events) {
            let step = PruneStep::Events { before };
            let f = drain(store, pace, step, &mut sizes.event, EVENT_STEP, stop, total)?;
            if f != Flow::Done {
                return Ok(f);
            }
        }
        let mut n = EVENT_STEP.0;
        drain(
            store,
            pace,
            PruneStep::Idempotency { now },
            &mut n,
            EVENT_STEP,
            stop,
            total,
        )
    })()?;
    total.skipped = flow == Flow::Skipped;
    Ok(())
}

/// Repeats `step` until it reports no more (or a stop is asked), adapting its size.
fn drain(
    store: &dyn Store,
    pace: Pacing,
    step: PruneStep,
    size: &mut usize,
    bounds: (usize, usize, usize),
    stop: &(Mutex<bool>, Condvar),
    total: &mut Totals,
) -> Result<Flow, StoreError> {
    loop {
        let n: PruneCount = store.prune_step(step, *size)?;
        if !n.ran {
            return Ok(Flow::Skipped);
        }
        let took = Duration::from_micros(n.micros);
        total.tasks += n.tasks;
        total.events += n.events;
        total.idempotency += n.idempotency;
        total.steps += 1;
        total.max_step = total.max_step.max(took);
        if took > pace.step_target {
            *size = (*size / 2).max(bounds.1);
        } else if took < pace.step_target / 2 && n.more {
            *size = (*size + *size / 4 + 1).min(bounds.2);
        }
        if !n.more {
            return Ok(Flow::Done);
        }
        // Rest in proportion to the step (at least 1 ms): on SQLite other writers get
        // the writer at least three quarters of the time whatever the backlog.
        if rest(
            stop,
            (took * pace.rest_factor).max(Duration::from_millis(1)),
        ) {
            return Ok(Flow::Stopped);
        }
    }
}

fn update_space(store: &dyn Store) {
    match store.space() {
        Ok(s) => crate::metrics::set_space(s),
        Err(e) => log::debug!(target: "pruner", error:% = e; "cannot read space figures"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_is_a_quarter_of_the_shortest_window_within_bounds() {
        let w = |t: Option<u64>, e: Option<u64>| {
            Windows {
                tasks: t.map(Duration::from_secs),
                events: e.map(Duration::from_secs),
            }
            .interval()
        };
        assert_eq!(w(None, None), MAX_INTERVAL);
        assert_eq!(w(Some(2), Some(2)), MIN_INTERVAL);
        assert_eq!(w(Some(120), None), Duration::from_secs(30));
        assert_eq!(w(Some(90 * 86_400), Some(3600)), MAX_INTERVAL);
    }
}
