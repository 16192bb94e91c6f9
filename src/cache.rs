//! `Cached`: a value that is costly to compute (a database probe, a count over every
//! task) and may be a little old. One caller at a time refreshes it while every other
//! caller answers the last value at once, so a health check or a scrape never queues
//! behind the database (SPEC §4, §5b). The lock guards only reading and swapping the
//! value, never the computation.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A value refreshed at most every `max_age`, by a single caller at a time.
pub struct Cached<T> {
    max_age: Duration,
    state: Mutex<State<T>>,
    /// Signalled when a refresh ends (only callers with no value at all wait on it).
    refreshed: Condvar,
}

struct State<T> {
    value: Option<(Instant, Arc<T>)>,
    /// When the refresh under way began; `None` when no one is refreshing.
    refreshing: Option<Instant>,
}

/// What `Cached::get` answered.
pub struct Snapshot<T> {
    pub value: Arc<T>,
    /// Set when the value is older than `max_age` because another caller's refresh
    /// is still running: how long it has been running.
    pub refresh_running: Option<Duration>,
}

/// Survives poisoning: the state is two plain fields, valid whatever a panic did.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl<T> Cached<T> {
    pub const fn new(max_age: Duration) -> Cached<T> {
        Cached {
            max_age,
            state: Mutex::new(State {
                value: None,
                refreshing: None,
            }),
            refreshed: Condvar::new(),
        }
    }

    /// The value, computing it with `refresh` if it is older than `max_age` and no
    /// one else is. While another caller refreshes, the old value is answered at
    /// once; only the very first callers, with nothing to answer, wait for it.
    pub fn get(&self, refresh: impl FnOnce() -> T) -> Snapshot<T> {
        let mut st = lock(&self.state);
        loop {
            match (&st.value, st.refreshing) {
                (Some((at, v)), _) if at.elapsed() < self.max_age => {
                    return Snapshot {
                        value: v.clone(),
                        refresh_running: None,
                    }
                }
                (Some((_, v)), Some(since)) => {
                    return Snapshot {
                        value: v.clone(),
                        refresh_running: Some(since.elapsed()),
                    }
                }
                (None, Some(_)) => {
                    st = self.refreshed.wait(st).unwrap_or_else(|e| e.into_inner());
                }
                (_, None) => break,
            }
        }
        st.refreshing = Some(Instant::now());
        drop(st);
        let mut publish = Publish {
            cache: self,
            value: None,
        };
        let value = Arc::new(refresh());
        publish.value = Some(value.clone());
        drop(publish);
        Snapshot {
            value,
            refresh_running: None,
        }
    }
}

/// Ends a refresh in `Drop`, so a panicking `refresh` cannot leave the cache marked
/// as refreshing for ever (nobody would refresh it again).
struct Publish<'a, T> {
    cache: &'a Cached<T>,
    value: Option<Arc<T>>,
}

impl<T> Drop for Publish<'_, T> {
    fn drop(&mut self) {
        let mut st = lock(&self.cache.state);
        if let Some(v) = self.value.take() {
            st.value = Some((Instant::now(), v));
        }
        st.refreshing = None;
        drop(st);
        self.cache.refreshed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn answers_the_cached_value_until_it_is_too_old() {
        let c = Cached::new(Duration::from_millis(100));
        let runs = AtomicUsize::new(0);
        let count = || runs.fetch_add(1, Ordering::SeqCst) + 1;
        assert_eq!(*c.get(count).value, 1);
        assert_eq!(*c.get(count).value, 1);
        std::thread::sleep(Duration::from_millis(120));
        assert_eq!(*c.get(count).value, 2);
    }

    /// While one caller's refresh is slow, the others answer the old value without
    /// waiting and without starting a refresh of their own.
    #[test]
    fn one_refresh_at_a_time_and_no_one_waits_for_it() {
        let c = Arc::new(Cached::new(Duration::from_millis(10)));
        let runs = Arc::new(AtomicUsize::new(0));
        c.get(|| 0usize);
        std::thread::sleep(Duration::from_millis(20));
        let (started, begun) = std::sync::mpsc::channel();
        let slow = {
            let (c, runs) = (c.clone(), runs.clone());
            std::thread::spawn(move || {
                *c.get(|| {
                    runs.fetch_add(1, Ordering::SeqCst);
                    let _ = started.send(());
                    std::thread::sleep(Duration::from_millis(800));
                    1
                })
                .value
            })
        };
        begun.recv().expect("the slow refresh started");
        let others: Vec<_> = (0..8)
            .map(|_| {
                let (c, runs) = (c.clone(), runs.clone());
                std::thread::spawn(move || {
                    let s = c.get(|| {
                        runs.fetch_add(1, Ordering::SeqCst);
                        2
                    });
                    (*s.value, s.refresh_running.is_some())
                })
            })
            .collect();
        for o in others {
            assert_eq!(o.join().expect("join"), (0, true), "old value, no wait");
        }
        assert!(
            !slow.is_finished(),
            "the others did not wait for the refresh"
        );
        assert_eq!(slow.join().expect("join"), 1);
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert_eq!(*c.get(|| 3).value, 1);
    }

    #[test]
    fn a_panicking_refresh_lets_the_next_caller_refresh() {
        let c = Cached::new(Duration::from_secs(60));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            c.get(|| -> u8 { panic!("refresh failed") })
        }));
        assert!(r.is_err());
        assert_eq!(*c.get(|| 7u8).value, 7);
    }
}
