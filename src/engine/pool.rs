//! A small persistent thread pool: workers are spawned once per engine; [`Pool::run`] hands them a
//! borrowed closure and returns when every task is done, so no thread is spawned and nothing is
//! allocated per call.
//!
//! A forward pass runs ~60 short parallel regions per frame (row blocks of each linear layer,
//! attention heads), so hand-off latency matters: workers and the caller first spin on atomics for
//! a short while (`SPIN`), and only then sleep on a condition variable. A frame's regions follow each
//! other within microseconds, so workers stay hot during a frame and go to sleep between frames.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How long a worker (or the caller) busy-waits for the next job (or for the workers) before
/// sleeping.
const SPIN: Duration = Duration::from_micros(300);

/// A borrowed task function, type-erased to a raw pointer while a `run` call is in flight.
#[derive(Clone, Copy)]
struct Job {
    f: *const (dyn Fn(usize) + Sync),
    tasks: usize,
}

// SAFETY: the pointee is `Sync` and `Pool::run` keeps it alive until every worker has finished
// with it, so sending the pointer to worker threads is sound.
unsafe impl Send for Job {}

struct State {
    job: Option<Job>,
    shutdown: bool,
    /// Workers asleep on `start`.
    sleepers: usize,
}

struct Shared {
    state: Mutex<State>,
    /// Bumped (under the lock) for every job; workers spin on it.
    generation: AtomicU64,
    /// Workers that have not yet checked out of the current job.
    busy: AtomicUsize,
    start: Condvar,
    done: Condvar,
    next: AtomicUsize,
    /// Set when a task panicked on a worker; `run` re-raises it on the caller's thread.
    panicked: AtomicBool,
    /// Set while a `run` call hands out a job: a second caller (another thread sharing the pool, or
    /// a task calling `run`) runs its tasks itself instead of replacing the job in flight.
    running: AtomicBool,
    shutdown: AtomicBool,
}

/// Spins until `ready()` holds or `SPIN` has passed; returns whether it holds. After the first few
/// microseconds each round also yields the core, so an oversubscribed machine (more runnable
/// threads than cores) loses little to the waiting.
fn spin_until(ready: impl Fn() -> bool) -> bool {
    let t0 = Instant::now();
    let mut rounds = 0u32;
    loop {
        for _ in 0..64 {
            if ready() {
                return true;
            }
            std::hint::spin_loop();
        }
        rounds += 1;
        if rounds > 16 {
            if t0.elapsed() > SPIN {
                return ready();
            }
            std::thread::yield_now();
        }
    }
}

/// Waits until every worker has checked out of the current job, also while the caller unwinds, so
/// the borrowed closure outlives every use.
struct WaitForWorkers<'a>(&'a Shared);

impl Drop for WaitForWorkers<'_> {
    fn drop(&mut self) {
        let shared = self.0;
        let idle = || shared.busy.load(Ordering::Acquire) == 0;
        let mut st = if spin_until(idle) {
            shared.state.lock().unwrap_or_else(|e| e.into_inner())
        } else {
            let mut st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            // A worker decrements `busy` before taking the lock to notify, so checking under the
            // lock cannot miss the last notification.
            while !idle() {
                st = shared.done.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            st
        };
        st.job = None;
    }
}

/// Clears `Shared::running` when a `run` call ends (after its `WaitForWorkers`), also on unwinding.
struct Running<'a>(&'a AtomicBool);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

/// Persistent worker threads.
pub struct Pool {
    shared: Arc<Shared>,
    workers: Vec<JoinHandle<()>>,
}

impl Pool {
    /// A pool that runs tasks on `threads` threads in total (the caller's thread included).
    pub fn new(threads: usize) -> Pool {
        let shared = Arc::new(Shared {
            state: Mutex::new(State { job: None, shutdown: false, sleepers: 0 }),
            generation: AtomicU64::new(0),
            busy: AtomicUsize::new(0),
            start: Condvar::new(),
            done: Condvar::new(),
            next: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            running: AtomicBool::new(false),
            shutdown: AtomicBool::new(false),
        });
        let workers = (1..threads.max(1))
            .map(|i| {
                let s = shared.clone();
                std::thread::Builder::new().name(format!("vitedge-worker-{i}")).spawn(move || worker(&s)).expect("spawn worker thread")
            })
            .collect();
        Pool { shared, workers }
    }

    /// Threads that execute tasks, the caller included.
    pub fn threads(&self) -> usize {
        self.workers.len() + 1
    }

    /// Calls `f(i)` for every `i < tasks`, spread over the pool; returns when all calls are done.
    /// A panic in any task is re-raised here after every worker has stopped using `f`. While
    /// another `run` is in flight (a second thread sharing the pool, or a task calling `run`), the
    /// calling thread runs all of its tasks itself.
    pub fn run(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        let shared = &*self.shared;
        if self.workers.is_empty() || tasks <= 1 || shared.running.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed).is_err() {
            (0..tasks).for_each(f);
            return;
        }
        let _running = Running(&shared.running);
        // SAFETY: only the lifetime is erased; workers use the pointer strictly before this
        // function returns or unwinds (`WaitForWorkers` waits for `busy == 0` in both cases), while
        // `f` is still borrowed.
        let f_static: *const (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(f) };
        shared.next.store(0, Ordering::SeqCst);
        shared.panicked.store(false, Ordering::SeqCst);
        {
            let mut st = shared.state.lock().expect("pool lock");
            st.job = Some(Job { f: f_static, tasks });
            shared.busy.store(self.workers.len(), Ordering::SeqCst);
            shared.generation.fetch_add(1, Ordering::SeqCst);
            if st.sleepers > 0 {
                shared.start.notify_all();
            }
        }
        {
            let _wait = WaitForWorkers(shared);
            drain(shared, f, tasks);
        }
        if shared.panicked.swap(false, Ordering::SeqCst) {
            panic!("a task panicked on a vitedge worker thread");
        }
    }
}

fn drain(shared: &Shared, f: &(dyn Fn(usize) + Sync), tasks: usize) {
    loop {
        let i = shared.next.fetch_add(1, Ordering::SeqCst);
        if i >= tasks {
            break;
        }
        f(i);
    }
}

fn worker(shared: &Shared) {
    let mut seen = 0u64;
    loop {
        let fresh = || shared.generation.load(Ordering::Acquire) != seen || shared.shutdown.load(Ordering::Acquire);
        spin_until(fresh);
        let job = {
            let mut st = shared.state.lock().expect("pool lock");
            while shared.generation.load(Ordering::Acquire) == seen && !st.shutdown {
                st.sleepers += 1;
                st = shared.start.wait(st).expect("pool lock");
                st.sleepers -= 1;
            }
            if st.shutdown {
                return;
            }
            seen = shared.generation.load(Ordering::Acquire);
            st.job
        };
        if let Some(job) = job {
            // SAFETY: `run` keeps the closure alive until this worker decrements `busy`.
            let f = unsafe { &*job.f };
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| drain(shared, f, job.tasks)));
            if ran.is_err() {
                shared.panicked.store(true, Ordering::SeqCst);
            }
        }
        if shared.busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _st = shared.state.lock().unwrap_or_else(|e| e.into_inner());
            shared.done.notify_all();
        }
    }
}

/// Preprocessing's row blocks run on the engine's pool.
impl crate::preprocess::Workers for Pool {
    fn threads(&self) -> usize {
        Pool::threads(self)
    }

    fn run_tasks(&self, tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        self.run(tasks, f)
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        if let Ok(mut st) = self.shared.state.lock() {
            st.shutdown = true;
        }
        self.shared.shutdown.store(true, Ordering::SeqCst);
        self.shared.start.notify_all();
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panicking_task_is_reraised_and_the_pool_stays_usable() {
        let pool = Pool::new(2);
        for _ in 0..20 {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                pool.run(8, &|i| {
                    if i % 3 == 1 {
                        panic!("task {i} fails");
                    }
                })
            }));
            assert!(r.is_err());
        }
        let count = AtomicUsize::new(0);
        pool.run(10, &|_| {
            count.fetch_add(1, Ordering::SeqCst);
        });
        assert_eq!(count.load(Ordering::SeqCst), 10);
    }

    #[test]
    fn concurrent_and_nested_runs_each_run_every_task_once() {
        let pool = Pool::new(3);
        std::thread::scope(|s| {
            for caller in 0..3 {
                let pool = &pool;
                s.spawn(move || {
                    for round in 0..300 {
                        let n = 5 + (round + caller) % 13;
                        let hits: Vec<AtomicUsize> = (0..n * 4).map(|_| AtomicUsize::new(0)).collect();
                        pool.run(n, &|i| {
                            // Every few tasks start a nested run of their own.
                            if i % 4 == 0 {
                                pool.run(4, &|j| {
                                    hits[i * 4 + j].fetch_add(1, Ordering::SeqCst);
                                });
                            } else {
                                (0..4).for_each(|j| {
                                    hits[i * 4 + j].fetch_add(1, Ordering::SeqCst);
                                });
                            }
                        });
                        assert!(hits.iter().all(|h| h.load(Ordering::SeqCst) == 1), "caller {caller}, round {round}");
                    }
                });
            }
        });
    }

    #[test]
    fn runs_every_task_exactly_once_many_times() {
        for threads in [1, 2, 4] {
            let pool = Pool::new(threads);
            assert_eq!(pool.threads(), threads);
            for round in 0..200 {
                let n = 35 + round % 3;
                let hits: Vec<AtomicUsize> = (0..37).map(|_| AtomicUsize::new(0)).collect();
                pool.run(n, &|i| {
                    hits[i].fetch_add(1, Ordering::SeqCst);
                });
                assert!(hits.iter().take(n).all(|h| h.load(Ordering::SeqCst) == 1));
                assert!(hits.iter().skip(n).all(|h| h.load(Ordering::SeqCst) == 0));
            }
        }
    }
}
