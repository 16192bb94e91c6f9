//! Long-poll claims (SPEC §9): a claim with `wait_seconds` that finds nothing is
//! parked here, the tiny_http request with it, in its project's FIFO. No worker and
//! no thread of ours waits for it; its connection's thread (vendor/tiny_http
//! conn.rs, one per open connection) sleeps until the answer is handed over.
//!
//! When work may have become available (`wake`), one pass per project at a time runs
//! on a live thread: it walks the project's waiters oldest first and lets each try
//! its claim again, so a task goes to the oldest waiter that wants it, and — the
//! store's claim being atomic — to exactly one. A waiter whose filter (labels) found
//! nothing spares the others with the same filter a try in that pass. Wake-ups that
//! come during a pass make it run again, so none is lost. Every `RECHECK` the timer
//! thread also wakes every project with waiters (work from other instances whose
//! notification was lost, leases that ran out); otherwise it sleeps until the next
//! deadline, which it answers 204. Idle waiters cost no CPU.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use super::Host;
use super::RECHECK;
use crate::error::ApiError;
use crate::wire::{Request, Response};

/// Threads that run claim passes (each pass is one project's; a claim is a write
/// through the store's single writer, so more would only queue there).
const PASS_THREADS: usize = 4;

/// One claim attempt: the answer when it got something, `None` when nothing is
/// claimable for it.
pub type Attempt = Box<dyn FnMut() -> Result<Option<Response>, ApiError> + Send>;

/// What a claim handler hands over to be parked.
pub struct Park {
    pid: i64,
    key: String,
    wait: Duration,
    attempt: Attempt,
    /// `work_generation` before the handler's own attempt: if it moved before the
    /// waiter is parked, a pass runs at once (the wake-up came in between).
    gen: u64,
    place: Place,
}

/// A place under `MAX_STREAMS`, given back when the waiter is answered.
struct Place;

impl Drop for Place {
    fn drop(&mut self) {
        waiters().count.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Waiter {
    id: u64,
    key: String,
    deadline: Instant,
    /// When a pass that skips this waiter looks again whether its client hung up.
    look_at: Instant,
    attempt: Attempt,
    reply: Reply,
    _place: Place,
}

impl Waiter {
    /// Gives the waiter's place back, then answers: a client that claims again the
    /// moment it has its answer finds the place free, and `claim_waiters` no longer
    /// counts it (before, the place went after the answer was sent).
    fn answer(self, app: &dyn Host, resp: Response) {
        let Waiter { reply, _place, .. } = self;
        drop(_place);
        reply.answer(app, resp);
    }
}

/// How to answer a parked request: the request, what the pipeline said about it and
/// the headers of the answer it would have got at once.
struct Reply {
    rq: tiny_http::Request,
    req: Request,
    template: Response,
    route: Option<usize>,
    started: Instant,
    parked: Instant,
}

impl Reply {
    fn answer(self, app: &dyn Host, mut resp: Response) {
        // The template's headers: X-Request-ID, X-Correlation-ID, CORS.
        resp.headers.extend(self.template.headers);
        let close = !app.ready();
        // The request's latency is the work done for it, not the time it chose to
        // wait: a 60 s long poll must not look like a slow request in the histogram.
        let busy = self.started.elapsed().saturating_sub(self.parked.elapsed());
        app.record(&self.req, self.route, resp.status, busy);
        crate::wire::response::send(self.rq, resp, close);
    }
}

#[derive(Default)]
struct Queue {
    waiting: VecDeque<Waiter>,
    /// A pass of this project is running (its waiters are out of `waiting`).
    running: bool,
    /// A wake-up came during the pass: run again.
    dirty: bool,
}

#[derive(Default)]
struct State {
    projects: HashMap<i64, Queue>,
    /// (deadline, waiter id, project); entries of waiters answered otherwise stay
    /// until their deadline (or until nobody waits) and are skipped.
    deadlines: BTreeSet<(Instant, u64, i64)>,
    closing: bool,
    next_id: u64,
    passes: Option<Sender<i64>>,
}

pub struct Waiters {
    state: Mutex<State>,
    timer: Condvar,
    count: AtomicUsize,
    max: AtomicUsize,
    gen: AtomicU64,
    app: OnceLock<Arc<dyn Host>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn waiters() -> &'static Waiters {
    static W: OnceLock<Waiters> = OnceLock::new();
    W.get_or_init(|| Waiters {
        state: Mutex::new(State::default()),
        timer: Condvar::new(),
        count: AtomicUsize::new(0),
        max: AtomicUsize::new(1024),
        gen: AtomicU64::new(0),
        app: OnceLock::new(),
    })
}

/// The claim handler's long-poll step: tries `attempt` now; when it finds nothing and
/// `wait` is not zero, parks the request (answered later, by a live thread) and
/// returns the 204 it would give now as the template. `key` names the claim's filter
/// (waiters with equal keys want the same tasks).
pub fn claim_or_park(
    pid: i64,
    serving: bool,
    wait: Duration,
    key: String,
    mut attempt: Attempt,
) -> Result<Response, ApiError> {
    let w = waiters();
    let gen = w.gen.load(Ordering::Acquire);
    if let Some(resp) = attempt()? {
        return Ok(resp);
    }
    let none = Response::empty(204);
    if wait.is_zero() || w.closing() || !serving {
        return Ok(none);
    }
    let max = w.max.load(Ordering::Relaxed);
    if w.count
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < max).then_some(n + 1)
        })
        .is_err()
    {
        return Err(ApiError::unavailable(
            "too many claims are waiting (MAX_STREAMS); retry shortly",
            1,
        ));
    }
    super::defer(super::Deferred::Claim(Park {
        pid,
        key,
        wait,
        attempt,
        gen,
        place: Place,
    }));
    Ok(none)
}

/// Parks a deferred claim (`serve_one`, on the worker, which then moves on).
pub fn park(
    app: &dyn Host,
    rq: tiny_http::Request,
    mut req: Request,
    template: Response,
    route: Option<usize>,
    started: Instant,
    p: Park,
) {
    let w = waiters();
    // The body is not needed any more (the claim is in `attempt`).
    req.body = Vec::new();
    let reply = Reply {
        rq,
        req,
        template,
        route,
        started,
        parked: Instant::now(),
    };
    let mut s = lock(&w.state);
    if s.closing || s.passes.is_none() {
        drop(s);
        let resp = Response::empty(204);
        return reply.answer(app, resp);
    }
    s.next_id += 1;
    let id = s.next_id;
    let deadline = Instant::now() + p.wait;
    let first = s.deadlines.first().map(|d| d.0);
    s.deadlines.insert((deadline, id, p.pid));
    s.projects
        .entry(p.pid)
        .or_default()
        .waiting
        .push_back(Waiter {
            id,
            key: p.key,
            deadline,
            look_at: Instant::now(),
            attempt: p.attempt,
            reply,
            _place: p.place,
        });
    if first.is_none_or(|f| deadline < f) {
        w.timer.notify_one();
    }
    if w.gen.load(Ordering::Acquire) != p.gen {
        w.schedule(&mut s, p.pid);
    }
}

impl Waiters {
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    fn closing(&self) -> bool {
        lock(&self.state).closing
    }

    fn app(&self) -> Option<&Arc<dyn Host>> {
        self.app.get()
    }

    /// Starts the pass threads and the timer (once per process).
    pub fn start(&'static self, app: Arc<dyn Host>, max: usize) {
        self.max.store(max, Ordering::Relaxed);
        if self.app.set(app).is_err() {
            return;
        }
        let (tx, rx) = channel::<i64>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..PASS_THREADS {
            let rx = rx.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("live-claim-{i}"))
                .spawn(move || self.pass_thread(&rx));
            if let Err(e) = spawned {
                log::error!(target: "live", error:% = e; "cannot start a claim thread");
            }
        }
        lock(&self.state).passes = Some(tx);
        if let Err(e) = std::thread::Builder::new()
            .name("live-timer".into())
            .spawn(move || self.timer_thread())
        {
            log::error!(target: "live", error:% = e; "cannot start the long-poll timer");
        }
    }

    /// Work may be available in `pid`: its waiters try again (see the module doc).
    pub fn wake(&self, pid: i64) {
        self.gen.fetch_add(1, Ordering::AcqRel);
        let mut s = lock(&self.state);
        self.schedule(&mut s, pid);
    }

    fn schedule(&self, s: &mut State, pid: i64) {
        let Some(q) = s.projects.get_mut(&pid) else {
            return;
        };
        if q.running {
            q.dirty = true;
        } else if !q.waiting.is_empty() {
            q.running = true;
            if let Some(tx) = &s.passes {
                let _ = tx.send(pid);
            }
        }
    }

    /// SIGTERM: every waiter is answered 204 (those in a pass by the pass).
    pub fn close(&self) {
        let mut s = lock(&self.state);
        s.closing = true;
        s.passes = None; // the pass threads leave once the queue is empty
        let all: Vec<Waiter> = s
            .projects
            .values_mut()
            .flat_map(|q| q.waiting.drain(..))
            .collect();
        s.deadlines.clear();
        drop(s);
        self.timer.notify_all();
        self.answer_none(all);
    }

    fn answer_none(&self, all: Vec<Waiter>) {
        let Some(app) = self.app() else { return };
        for w in all {
            w.answer(&**app, Response::empty(204));
        }
    }

    fn pass_thread(&self, rx: &Mutex<Receiver<i64>>) {
        loop {
            let next = lock(rx).recv();
            match next {
                Ok(pid) => self.pass(pid),
                Err(_) => return,
            }
        }
    }

    /// One project's pass (see the module doc).
    fn pass(&self, pid: i64) {
        let Some(app) = self.app().cloned() else {
            return;
        };
        loop {
            let mut batch = {
                let mut s = lock(&self.state);
                let Some(q) = s.projects.get_mut(&pid) else {
                    return;
                };
                q.dirty = false;
                std::mem::take(&mut q.waiting)
            };
            let mut kept: VecDeque<Waiter> = VecDeque::with_capacity(batch.len());
            let mut found_nothing: HashSet<String> = HashSet::new();
            for mut w in batch.drain(..) {
                if self.closing() || Instant::now() >= w.deadline {
                    w.answer(&*app, Response::empty(204));
                    continue;
                }
                if found_nothing.contains(&w.key) {
                    // Not tried in this pass; still, one that hung up gives back its
                    // place (looked at once a RECHECK at most: passes run at writes).
                    let now = Instant::now();
                    if now >= w.look_at {
                        w.look_at = now + RECHECK;
                        if w.reply.rq.client_gone() {
                            w.answer(&*app, Response::empty(204));
                            continue;
                        }
                    }
                    kept.push_back(w);
                    continue;
                }
                // A client that hung up must not be given a task nobody will work on.
                if w.reply.rq.client_gone() {
                    w.answer(&*app, Response::empty(204));
                    continue;
                }
                let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| (w.attempt)()));
                match got {
                    Ok(Ok(Some(resp))) => w.answer(&*app, resp),
                    Ok(Ok(None)) => {
                        found_nothing.insert(w.key.clone());
                        kept.push_back(w);
                    }
                    Ok(Err(e)) => {
                        let resp = Response::error(&e, &w.reply.req.request_id);
                        w.answer(&*app, resp);
                    }
                    Err(_) => {
                        log::error!(target: "live", project = pid; "a parked claim panicked");
                        let resp = Response::error(&ApiError::internal(), &w.reply.req.request_id);
                        w.answer(&*app, resp);
                    }
                }
            }
            let mut s = lock(&self.state);
            // The timer may have passed their deadlines while they were out here.
            for w in &kept {
                s.deadlines.insert((w.deadline, w.id, pid));
            }
            self.timer.notify_one();
            let closing = s.closing;
            let Some(q) = s.projects.get_mut(&pid) else {
                return;
            };
            // Kept waiters first: they are older than any parked during the pass.
            let newer = std::mem::take(&mut q.waiting);
            kept.extend(newer);
            q.waiting = kept;
            if closing {
                let all: Vec<Waiter> = q.waiting.drain(..).collect();
                q.running = false;
                drop(s);
                return self.answer_none(all);
            }
            if q.dirty && !q.waiting.is_empty() {
                continue;
            }
            q.running = false;
            if q.waiting.is_empty() {
                s.projects.remove(&pid);
            }
            return;
        }
    }

    /// Answers waiters at their deadline, and wakes every project with waiters every
    /// `RECHECK`; sleeps otherwise.
    fn timer_thread(&self) {
        let mut recheck_at = Instant::now() + RECHECK;
        let mut s = lock(&self.state);
        loop {
            if s.closing {
                return;
            }
            let now = Instant::now();
            let mut due = Vec::new();
            while let Some(&(deadline, id, pid)) = s.deadlines.first() {
                if deadline > now {
                    break;
                }
                s.deadlines.pop_first();
                if let Some(q) = s.projects.get_mut(&pid) {
                    if let Some(i) = q.waiting.iter().position(|w| w.id == id) {
                        if let Some(w) = q.waiting.remove(i) {
                            due.push(w);
                        }
                        if q.waiting.is_empty() && !q.running {
                            s.projects.remove(&pid);
                        }
                    }
                }
            }
            if now >= recheck_at {
                recheck_at = now + RECHECK;
                let pids: Vec<i64> = s.projects.keys().copied().collect();
                for pid in pids {
                    self.schedule(&mut s, pid);
                }
            }
            if !due.is_empty() {
                drop(s);
                self.answer_none(due);
                s = lock(&self.state);
                continue;
            }
            // Nobody waits: every deadline left is stale (of a waiter answered before
            // it), and sleeping until one would also stop the re-checks for waiters
            // parked meanwhile (their later deadlines do not wake the timer). Drop
            // them: the next park finds no deadline and wakes the timer.
            if s.projects.is_empty() {
                s.deadlines.clear();
            }
            let next = match s.deadlines.first() {
                Some(d) => d.0.min(recheck_at),
                None => now + Duration::from_secs(3600),
            };
            let wait = next
                .saturating_duration_since(now)
                .max(Duration::from_millis(1));
            s = self
                .timer
                .wait_timeout(s, wait)
                .map(|(g, _)| g)
                .unwrap_or_else(|e| e.into_inner().0);
            if s.projects.is_empty() {
                recheck_at = Instant::now() + RECHECK;
            }
        }
    }
}
