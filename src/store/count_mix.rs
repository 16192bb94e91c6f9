//! A random mix of every write the queue makes through the store's API, from several
//! threads at once, for the count drift tests of both backends (issue #19): creates
//! with dependencies and schedules, claims with long and short leases, completions
//! (which release dependents), failures with and without retry (retries and dead
//! letters), lease-expiry sweeps, PATCHes (cancellations that block dependents,
//! re-arms of failed and blocked tasks) and deletes. Each backend's test then
//! compares its counters with a full count of the rows.

use std::sync::Mutex;
use std::time::Duration;

use super::{ProjectStore, StoreError, TaskStore};
use crate::model::*;

/// A small xorshift, seeded per thread: a failure can be replayed.
struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Creates `n` projects (retry backoff 1 s, two attempts by default).
pub fn projects<S: ProjectStore>(store: &S, n: usize) -> Vec<i64> {
    (0..n)
        .map(|i| {
            let p = NewProject {
                name: format!("mix{i}"),
                description: String::new(),
                status: ProjectStatus::Active,
                default_max_attempts: 2,
                retry_backoff_seconds: 1,
            };
            let made = store.create_project(p, None, None).expect("project");
            made.done().expect("ran").id
        })
        .collect()
}

/// What a racing client can be told; anything else (a deadlock shows as Busy) fails.
fn expected<T>(r: Result<T, StoreError>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(
            StoreError::NotFound(_)
            | StoreError::Conflict(_)
            | StoreError::LeaseLost(_)
            | StoreError::LeaseHeld
            | StoreError::Invalid(..)
            | StoreError::VersionMismatch(_),
        ) => None,
        Err(e) => panic!("an unexpected error: {e:?}"),
    }
}

/// `steps` random writes on each of `threads` threads over `pids`, then a sweep of
/// every lease left to expire.
pub fn run<S: TaskStore + Sync>(store: &S, pids: &[i64], threads: u64, steps: usize) {
    // (project, task) of every task made, shared: dependencies cross threads.
    let known: Mutex<Vec<(i64, i64)>> = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for t in 0..threads {
            let known = &known;
            scope.spawn(move || {
                let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ (t + 1));
                let mut held: Vec<(i64, String)> = Vec::new();
                for _ in 0..steps {
                    let pid = pids[rng.below(pids.len() as u64) as usize];
                    let pick = |rng: &mut Rng| -> Option<i64> {
                        let k = known.lock().expect("known");
                        let mine: Vec<i64> =
                            k.iter().filter(|(p, _)| *p == pid).map(|x| x.1).collect();
                        (!mine.is_empty()).then(|| mine[rng.below(mine.len() as u64) as usize])
                    };
                    match rng.below(12) {
                        0..=2 => {
                            let batch = (0..1 + rng.below(3))
                                .map(|_| NewTask {
                                    title: "t".into(),
                                    description: String::new(),
                                    status: TaskStatus::Pending,
                                    priority: rng.below(3) as i64,
                                    assignee: None,
                                    labels: vec![],
                                    metadata: "{}".into(),
                                    result: None,
                                    max_attempts: [None, Some(1), Some(3)][rng.below(3) as usize],
                                    not_before: (rng.below(6) == 0)
                                        .then(|| crate::clock::now_ms() + 3_600_000),
                                    depends_on: (0..rng.below(3))
                                        .filter_map(|_| pick(&mut rng))
                                        .collect(),
                                })
                                .collect();
                            if let Some(made) = expected(store.create_tasks(pid, batch, None, None))
                            {
                                let made = made.done().expect("ran");
                                known
                                    .lock()
                                    .expect("known")
                                    .extend(made.iter().map(|m| (pid, m.id)));
                            }
                        }
                        3 | 4 => {
                            let claim = Claim {
                                agent: format!("a{t}"),
                                lease_seconds: if rng.below(3) == 0 { 1 } else { 60 },
                                labels: vec![],
                                limit: 2,
                            };
                            if let Some(got) = expected(store.claim(pid, claim, None)) {
                                held.extend(
                                    got.done()
                                        .expect("ran")
                                        .into_iter()
                                        .map(|g| (g.id, g.lease_token.expect("a claim's token"))),
                                );
                            }
                        }
                        5 if !held.is_empty() => {
                            let (id, token) =
                                held.swap_remove(rng.below(held.len() as u64) as usize);
                            expected(store.complete(id, None, token, None, None));
                        }
                        6 | 7 if !held.is_empty() => {
                            let (id, token) =
                                held.swap_remove(rng.below(held.len() as u64) as usize);
                            let f = Failure {
                                token,
                                error: None,
                                retry: rng.below(4) != 0,
                            };
                            expected(store.fail(id, None, f, None));
                        }
                        8 => {
                            std::thread::sleep(Duration::from_millis(50));
                            store.sweep_leases(100).expect("sweep");
                        }
                        9 | 10 => {
                            let Some(id) = pick(&mut rng) else { continue };
                            let Some(task) = expected(store.get_task(id, None)) else {
                                continue;
                            };
                            let to = [
                                TaskStatus::Pending,
                                TaskStatus::Cancelled,
                                TaskStatus::Failed,
                                TaskStatus::Blocked,
                                TaskStatus::Completed,
                            ][rng.below(5) as usize];
                            let patch = TaskPatch {
                                status: Some(to),
                                ..Default::default()
                            };
                            let v = Some(task.version);
                            expected(store.update_task(id, None, patch, v, None, None));
                        }
                        _ => {
                            let Some(id) = pick(&mut rng) else { continue };
                            if rng.below(2) == 0 {
                                let Some(task) = expected(store.get_task(id, None)) else {
                                    continue;
                                };
                                let v = Some(task.version);
                                expected(store.delete_task(id, None, v, None, None));
                            }
                        }
                    }
                }
            });
        }
    });
    // The short leases left run out and are swept: retries, and dead letters at the
    // last attempt.
    std::thread::sleep(Duration::from_millis(1100));
    while store.sweep_leases(1000).expect("sweep") > 0 {}
}
